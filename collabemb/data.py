"""Reading and validating rating data.

Every reader returns a :class:`Ratings`: a DataFrame with the columns ``user``, ``item``,
``rating`` (float32) and, when the input has one, ``timestamp`` (int64, unix seconds).
Bad input raises :class:`RatingsError` whose message names the file, the line and the column
and says what was expected and what was found.

IDs read from text files are ints when *every* value in the column is a canonical integer
(``-?(0|[1-9][0-9]*)``), otherwise strings; so ``"007"`` stays the string ``"007"``. Pass
``id_type="str"`` or ``"int"`` to decide explicitly.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from collabemb.registry import id_kind_of

Duplicates = Literal["last", "raise", "mean"]
IdType = Literal["int", "str"] | None

#: Built-in file layouts: separator, header, and column names in file order.
LAYOUTS: dict[str, dict] = {
    # ml-100k u.data, u1.base ... ub.test: tab-separated, no header
    "ml-100k": {"sep": "\t", "names": ["user", "item", "rating", "timestamp"]},
    # ml-1m / ml-10m ratings.dat: '::'-separated, no header
    "ml-1m": {"sep": "::", "names": ["user", "item", "rating", "timestamp"]},
    # ml-20m / ml-25m / ml-latest(-small) ratings.csv: comma-separated with header
    "ml-latest": {
        "sep": ",",
        "header": {"userId": "user", "movieId": "item", "rating": "rating", "timestamp": "timestamp"},
    },
}

_CANONICAL_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")


class RatingsError(ValueError):
    """Malformed rating input. The message names file, line and column where known."""


@dataclass
class Ratings:
    """Validated ratings.

    Attributes:
        frame: columns ``user``, ``item`` (int64, or object of str), ``rating`` (float32) and
            optionally ``timestamp`` (int64 unix seconds); a RangeIndex.
        source: the file the ratings came from, or ``"DataFrame"``.
        n_duplicates: duplicate (user, item) rows resolved while reading.
    """

    frame: pd.DataFrame
    source: str | None = None
    n_duplicates: int = 0
    extra: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def has_timestamp(self) -> bool:
        return "timestamp" in self.frame.columns

    def subset(self, mask_or_index: np.ndarray) -> Ratings:
        """Rows selected by a boolean mask or integer positions, as new Ratings."""
        return Ratings(self.frame.iloc[mask_or_index].reset_index(drop=True), self.source, 0)


def read_ratings(
    source: str | os.PathLike | pd.DataFrame | Ratings,
    *,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: str = "rating",
    timestamp_col: str | None = None,
    layout: str | None = None,
    sep: str | None = None,
    duplicates: Duplicates = "last",
    id_type: IdType = None,
) -> Ratings:
    """Read and validate ratings from a DataFrame or a CSV / TSV / parquet / MovieLens file.

    Args:
        source: a DataFrame, or a path. ``.parquet``/``.pq`` is read with pyarrow; other files
            are delimited text with a header row, separator from ``sep`` or guessed from the
            first line (tab, ``::``, ``;`` or comma).
        user_col, item_col, rating_col, timestamp_col: column names in the input.
        layout: ``"ml-100k"``, ``"ml-1m"`` (also ml-10m) or ``"ml-latest"`` (also ml-20m, ml-25m,
            ml-latest-small); the column arguments are then ignored and IDs are ints.
        duplicates: for repeated (user, item) pairs: ``"last"`` keeps the last row in input order
            (default), ``"raise"`` refuses them, ``"mean"`` averages their ratings (latest
            timestamp). The number resolved is in ``Ratings.n_duplicates``.
        id_type: ``"int"``, ``"str"`` or None to infer (see the module docstring).

    Raises:
        RatingsError: missing column, empty input, non-numeric / NaN / inf rating, missing ID,
            unparseable line, or duplicates with ``duplicates="raise"``.
    """
    if duplicates not in ("last", "raise", "mean"):
        raise ValueError(f"duplicates must be 'last', 'raise' or 'mean', got {duplicates!r}")
    if isinstance(source, Ratings):
        return source
    if layout is not None:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
        user_col, item_col, rating_col, timestamp_col, id_type = "user", "item", "rating", "timestamp", "int"
    if isinstance(source, pd.DataFrame):
        raw, label, first_line = source, "DataFrame", None
    else:
        path = Path(source)
        label = str(path)
        if not path.exists():
            raise RatingsError(f"{label}: no such file")
        if path.is_dir():
            raise RatingsError(f"{label}: is a directory, expected a ratings file")
        if path.suffix.lower() in (".parquet", ".pq"):
            raw, first_line = _read_parquet(path), None
        else:
            raw, first_line = _read_text(path, layout, sep)
    wanted = {"user": user_col, "item": item_col, "rating": rating_col}
    if timestamp_col is not None:
        wanted["timestamp"] = timestamp_col
    if layout == "ml-latest":
        raw = raw.rename(columns=LAYOUTS["ml-latest"]["header"])
    for name, col in wanted.items():
        if col not in raw.columns:
            found = ", ".join(map(str, raw.columns)) or "none"
            where = f"{label}, line 1" if first_line == 2 else label
            raise RatingsError(f"{where}: missing {name} column {col!r} (found columns: {found})")
    if len(raw) == 0:
        raise RatingsError(f"{label}: empty input, expected at least one rating")
    locate = _Locator(label, first_line)
    frame = pd.DataFrame(
        {
            "user": _ids(raw[user_col], user_col, id_type, locate),
            "item": _ids(raw[item_col], item_col, id_type, locate),
            "rating": _numbers(raw[rating_col], rating_col, locate).astype(np.float32),
        }
    )
    if timestamp_col is not None:
        frame["timestamp"] = _timestamps(raw[timestamp_col], timestamp_col, locate)
    frame, n_dup = _resolve_duplicates(frame, duplicates, locate)
    return Ratings(frame, label, n_dup)


# --- readers -------------------------------------------------------------------


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pandas()
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise RatingsError(f"{path}: not a readable parquet file ({exc})") from None


def _sniff_sep(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.readline().decode("utf-8", errors="replace")
    for candidate in ("\t", "::", ";", ","):
        if candidate in head:
            return candidate
    return ","


def _read_text(path: Path, layout: str | None, sep: str | None) -> tuple[pd.DataFrame, int]:
    """Read a delimited file with every field as a string. Returns (frame, line number of row 0)."""
    spec = LAYOUTS.get(layout or "", {})
    sep = spec.get("sep", sep) or _sniff_sep(path)
    names = spec.get("names")
    data: str | io.BytesIO | Path = path
    if len(sep) > 1:
        # pandas' fast C parser takes one-character separators only; ratings.dat holds numbers,
        # so '::' can be swapped for a tab without changing any field or line number.
        data = io.BytesIO(path.read_bytes().replace(sep.encode(), b"\t"))
        sep = "\t"
    try:
        frame = pd.read_csv(
            data,
            sep=sep,
            header=None if names else 0,
            names=names,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            engine="c",
            skip_blank_lines=True,
            encoding="utf-8",
            encoding_errors="strict",
        )
    except pd.errors.EmptyDataError:
        raise RatingsError(f"{path}: empty input, expected {'rows' if names else 'a header row'}") from None
    except pd.errors.ParserError as exc:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if m:
            want, line, saw = m.groups()
            raise RatingsError(f"{path}, line {line}: expected {want} fields, found {saw}") from None
        raise RatingsError(f"{path}: cannot parse ({exc})") from None
    except UnicodeDecodeError as exc:
        raise RatingsError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if names and len(frame.columns) != len(names):
        raise RatingsError(f"{path}, line 1: expected {len(names)} fields, found {len(frame.columns)}")
    if names:
        short = frame[names[-1]].isna().to_numpy()
        if short.any():
            row = int(np.flatnonzero(short)[0])
            raise RatingsError(f"{path}, line {row + 1}: expected {len(names)} fields, found fewer")
    return frame, (1 if names else 2)


# --- validation ----------------------------------------------------------------


@dataclass
class _Locator:
    """Turns a row position into 'file, line N' (text) or 'DataFrame, row N' (tables)."""

    label: str
    first_line: int | None

    def at(self, row: int, col: str) -> str:
        if self.first_line is None:
            return f"{self.label}, row {row}, column {col!r}"
        return f"{self.label}, line {row + self.first_line}, column {col!r}"


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _ids(col: pd.Series, name: str, id_type: IdType, locate: _Locator) -> np.ndarray:
    values = col.to_numpy()
    if values.dtype == object or pd.api.types.is_string_dtype(col.dtype):
        missing = col.isna().to_numpy() | (col.astype(str).str.strip() == "").to_numpy()
    elif pd.api.types.is_float_dtype(col.dtype):
        missing = ~np.isfinite(values)
    else:
        missing = col.isna().to_numpy()
    if missing.any():
        row = _first(missing)
        raise RatingsError(f"{locate.at(row, name)}: missing ID")
    if locate.first_line is not None:  # text input: every field is a string
        if id_type == "str":
            return col.to_numpy(dtype=object)
        canonical = col.str.fullmatch(_CANONICAL_INT.pattern).to_numpy(dtype=bool)
        if id_type == "int" and not canonical.all():
            row = _first(~canonical)
            raise RatingsError(f"{locate.at(row, name)}: expected an integer ID, found {col.iloc[row]!r}")
        if canonical.all():
            try:
                return col.astype(np.int64).to_numpy()
            except (OverflowError, ValueError):
                raise RatingsError(f"{locate.label}, column {name!r}: integer IDs must fit in int64") from None
        return col.to_numpy(dtype=object)
    try:
        arr, kind = id_kind_of(col, what=f"{locate.label}, column {name!r}: IDs")
    except (TypeError, ValueError) as exc:
        raise RatingsError(str(exc)) from None
    if id_type == "int" and kind != "int":
        raise RatingsError(f"{locate.label}, column {name!r}: expected integer IDs, found {kind}")
    if id_type == "str" and kind != "str":
        arr = arr.astype(str).astype(object)
    return arr


def _numbers(col: pd.Series, name: str, locate: _Locator) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        row = _first(bad)
        raise RatingsError(f"{locate.at(row, name)}: expected a finite number, found {col.iloc[row]!r}")
    return values


def _timestamps(col: pd.Series, name: str, locate: _Locator) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        if col.isna().any():
            row = _first(col.isna().to_numpy())
            raise RatingsError(f"{locate.at(row, name)}: expected a timestamp, found a missing value")
        return (col.astype("datetime64[s]").astype(np.int64)).to_numpy()
    values = _numbers(col, name, locate)
    return values.astype(np.int64)


def _resolve_duplicates(frame: pd.DataFrame, how: Duplicates, locate: _Locator) -> tuple[pd.DataFrame, int]:
    dup = frame.duplicated(["user", "item"], keep="last").to_numpy()
    n_dup = int(dup.sum())
    if n_dup == 0:
        return frame, 0
    if how == "raise":
        row = _first(dup)
        pair = (frame["user"].iloc[row], frame["item"].iloc[row])
        raise RatingsError(
            f"{locate.at(row, 'user')}: duplicate (user, item) pair {pair!r}; "
            f"{n_dup} duplicate row(s) in all (use duplicates='last' or 'mean')"
        )
    if how == "last":
        return frame.loc[~dup].reset_index(drop=True), n_dup
    agg = {"rating": "mean"}
    if "timestamp" in frame.columns:
        agg["timestamp"] = "max"
    merged = frame.groupby(["user", "item"], sort=False, as_index=False).agg(agg)
    merged["rating"] = merged["rating"].astype(np.float32)
    return merged, n_dup


def read_pairs(
    source: str | os.PathLike | pd.DataFrame,
    *,
    user_col: str = "user",
    item_col: str = "item",
    user_kind: str = "int",
    item_kind: str = "int",
    sep: str | None = None,
) -> pd.DataFrame:
    """Read (user, item) pairs to score, converting IDs to the kinds a model's registries hold.

    Text IDs become ints when the registry holds ints (every value must then be an integer) and
    stay strings otherwise. Returns a DataFrame with columns ``user`` and ``item``.
    """
    if isinstance(source, pd.DataFrame):
        raw, label, first_line = source, "DataFrame", None
    else:
        path = Path(source)
        if not path.is_file():
            raise RatingsError(f"{path}: no such file")
        raw, first_line = _read_text(path, None, sep)
        label = str(path)
    for col in (user_col, item_col):
        if col not in raw.columns:
            found = ", ".join(map(str, raw.columns)) or "none"
            raise RatingsError(f"{label}{', line 1' if first_line else ''}: missing column {col!r} (found columns: {found})")
    if len(raw) == 0:
        raise RatingsError(f"{label}: empty input, expected at least one (user, item) pair")
    locate = _Locator(label, first_line)
    return pd.DataFrame(
        {
            "user": _ids(raw[user_col], user_col, user_kind, locate),
            "item": _ids(raw[item_col], item_col, item_kind, locate),
        }
    )
