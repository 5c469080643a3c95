"""Reading and validating rating data.

Every reader returns a :class:`Ratings`: a DataFrame with the columns ``user``, ``item``,
``rating`` (float32) and, when the input has one, ``timestamp`` (int64, unix seconds).
Bad input raises :class:`RatingsError` whose message names the file, the line and the column
and says what was expected and what was found.

IDs read from text files are ints when *every* value in the column is a canonical integer
(``0|-?[1-9][0-9]*``), otherwise strings; so ``"007"`` stays the string ``"007"``. Pass
``id_type="str"`` or ``"int"`` to decide explicitly.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from collabemb.registry import id_type_of

Duplicates = Literal["last", "raise", "mean"]
IdType = Literal["int", "str"] | None

#: Built-in file layouts: separator, header, and column names in file order.
LAYOUTS: dict[str, dict] = {
    # ml-100k u.data, u1.base ... ub.test: tab-separated, no header
    "ml-100k": {"sep": "\t", "names": ["user", "item", "rating", "timestamp"]},
    # ml-1m / ml-10m ratings.dat: '::'-separated, no header
    "ml-1m": {"sep": "::", "names": ["user", "item", "rating", "timestamp"]},
    # ml-20m / ml-25m / ml-latest(-small) ratings.csv: comma-separated with header
    "ml-latest": {"sep": ",", "header": {"userId": "user", "movieId": "item", "rating": "rating", "timestamp": "timestamp"}},
}

_CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]*")


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
        user_col, item_col, rating_col: column names in the input.
        timestamp_col: timestamp column (unix seconds or datetimes); default: a column named
            ``timestamp`` is kept when the input has one.
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
            in_file = {v: k for k, v in LAYOUTS["ml-latest"]["header"].items()} if layout == "ml-latest" else {}
            needed = [in_file.get(c, c) for c in (user_col, item_col, rating_col, timestamp_col) if c is not None]
            raw, first_line = _read_parquet(path, needed=needed, optional=[in_file.get("timestamp", "timestamp")]), None
        else:
            fast = _read_text_fast(path, layout, sep, user_col, item_col, rating_col, timestamp_col, id_type)
            if fast is not None:
                frame, first_line = fast
                frame, n_dup = _resolve_duplicates(frame, duplicates, _Locator(label, first_line, path))
                return Ratings(frame, label, n_dup)
            raw, first_line = _read_text(path, layout, sep)
    locate = _Locator(label, first_line, None if first_line is None else Path(source))
    cols = _columns_of(raw, label, first_line, layout, (user_col, item_col, rating_col, timestamp_col))
    if layout == "ml-latest":
        raw = raw.rename(columns=LAYOUTS["ml-latest"]["header"])
    columns = {
        "user": _id_column(_ids(raw[cols["user"]], cols["user"], id_type, locate)),
        "item": _id_column(_ids(raw[cols["item"]], cols["item"], id_type, locate)),
        "rating": _numbers(raw[cols["rating"]], cols["rating"], locate).astype(np.float32),
    }
    if "timestamp" in cols:
        columns["timestamp"] = _timestamps(raw[cols["timestamp"]], cols["timestamp"], locate)
    # arrays from a file are ours: no copy (25M rows: 700 MB less at the peak); a caller's DataFrame is copied
    frame = pd.DataFrame(columns, copy=isinstance(source, pd.DataFrame))
    frame, n_dup = _resolve_duplicates(frame, duplicates, locate)
    return Ratings(frame, label, n_dup)


def _columns_of(raw: pd.DataFrame, label: str, first_line: int | None, layout: str | None, names: tuple) -> dict[str, str]:
    """``{"user": column, "item": ..., "rating": ...[, "timestamp": ...]}`` after the ml-latest renaming;
    a missing column is a RatingsError listing the columns found (by their names in the file)."""
    user_col, item_col, rating_col, timestamp_col = names
    if timestamp_col is None and "timestamp" in raw.columns:
        timestamp_col = "timestamp"
    wanted = {"user": user_col, "item": item_col, "rating": rating_col}
    if timestamp_col is not None:
        wanted["timestamp"] = timestamp_col
    file_names = {v: k for k, v in LAYOUTS["ml-latest"]["header"].items()} if layout == "ml-latest" else {}
    present = {LAYOUTS["ml-latest"]["header"].get(c, c) if layout == "ml-latest" else c for c in raw.columns}
    if len(raw) == 0:
        raise RatingsError(f"{label}: empty input, expected at least one rating")
    for name, col in wanted.items():
        if col not in present:
            found = ", ".join(str(c) for c in raw.columns) or "none"
            where = f"{label}, line 1" if first_line == 2 else label
            raise RatingsError(f"{where}: missing {name} column {file_names.get(col, col)!r} (found columns: {found})")
    return wanted


# --- readers -------------------------------------------------------------------


def _read_parquet(path: Path, needed: list[str] | None = None, optional: list[str] = ()) -> pd.DataFrame:
    """The parquet file as a DataFrame; only the ``needed`` and ``optional`` columns when it has all
    the needed ones (otherwise every column, so that an error can list them)."""
    import pyarrow.parquet as pq

    try:
        columns = None
        if needed is not None:
            names = pq.read_schema(path).names
            if set(needed) <= set(names):
                columns = [c for c in names if c in set(needed) | set(optional)]
        return pq.read_table(path, columns=columns).to_pandas(split_blocks=True, self_destruct=True)
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
        # pandas decodes in chunks, so exc.start is an offset into a chunk: find the real place
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as real:
            line = raw.count(b"\n", 0, real.start) + 1
            raise RatingsError(f"{path}, line {line}: not UTF-8 text ({real.reason} at byte {real.start})") from None
        raise RatingsError(f"{path}: not UTF-8 text ({exc.reason})") from None
    first_line = 1 if names else 2
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas silently turns extra leading fields into an index when every data line has
        # more fields than the header (or names); that would shift every column
        want, found = len(frame.columns), len(frame.columns) + frame.index.nlevels
        line = _line_number(path, 0, first_line)
        raise RatingsError(f"{path}, line {line}: expected {want} fields, found {found}")
    # (short lines cannot be told apart from empty fields here: pandas fills them with "",
    # so they fail later as a missing ID or a non-numeric value on the right line and column)
    return frame, first_line


def _read_text_fast(
    path: Path,
    layout: str | None,
    sep: str | None,
    user_col: str,
    item_col: str,
    rating_col: str,
    timestamp_col: str | None,
    id_type: IdType,
) -> tuple[pd.DataFrame, int] | None:
    """Read a well-formed delimited ratings file with pyarrow: 25M rows in seconds.

    Returns the typed ``user, item, rating[, timestamp]`` frame (before duplicate handling) and
    the line number of its first row, or None whenever anything is unusual (a parse error, a
    missing column, a missing or non-canonical ID where ints are required, a non-finite number,
    a byte-order mark, no rows...). :func:`read_ratings` then takes the careful pandas path,
    which gives the same frame for every file this function accepts and the precise error
    (file, line, column) for the rest. IDs are read dictionary-encoded, so the type rule
    (canonical integers -> int, else str) is decided on the distinct values, with the same
    regular expression; numbers go through float64 exactly as the careful path's.
    """
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        return None
    spec = LAYOUTS.get(layout or "", {})
    sep = spec.get("sep", sep) or _sniff_sep(path)
    names = spec.get("names")
    source: Path | io.BytesIO = path
    file_sep = sep
    if len(sep) > 1:  # as in _read_text: ratings.dat holds numbers, so '::' can become a tab
        source = io.BytesIO(path.read_bytes().replace(sep.encode(), b"\t"))
        sep = "\t"
    header = names if names is not None else _header_of(path, file_sep, sep)
    if header is None:
        return None
    if len(set(header)) != len(header):
        return None
    if layout is not None:
        user_col, item_col, rating_col, timestamp_col, id_type = "user", "item", "rating", "timestamp", "int"
    if timestamp_col is None and "timestamp" in header:
        timestamp_col = "timestamp"
    wanted = {"user": user_col, "item": item_col, "rating": rating_col}
    if timestamp_col is not None:
        wanted["timestamp"] = timestamp_col
    if layout == "ml-latest":
        in_file = {v: k for k, v in LAYOUTS["ml-latest"]["header"].items()}
        wanted = {std: in_file.get(col, col) for std, col in wanted.items()}
    if len(set(wanted.values())) != len(wanted) or not set(wanted.values()) <= set(header):
        return None
    ids = pa.dictionary(pa.int32(), pa.string())
    try:
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(column_names=names, use_threads=True, block_size=16 << 20),
            parse_options=pacsv.ParseOptions(
                delimiter=sep, quote_char='"', double_quote=True, newlines_in_values=False, ignore_empty_lines=True
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={col: ids if std in ("user", "item") else pa.float64() for std, col in wanted.items()},
                include_columns=list(wanted.values()),
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                check_utf8=True,
            ),
        )
        table = table.unify_dictionaries()
    except Exception:  # pyarrow raises several types (ArrowInvalid, ArrowKeyError, ...) for odd files
        return None
    if table.num_rows == 0 or table.column_names != list(wanted.values()):
        return None
    columns = _arrow_columns(table, wanted, id_type)
    return None if columns is None else (pd.DataFrame(columns, copy=False), 1 if names else 2)


def _header_of(path: Path, file_sep: str, sep: str) -> list[str] | None:
    """The header row's fields, or None when it has a byte-order mark or does not decode (pandas' turn)."""
    with open(path, "rb") as fh:
        head = fh.readline()
    if head.startswith(b"\xef\xbb\xbf"):  # a byte-order mark: leave it to pandas
        return None
    try:
        line = head.decode("utf-8").rstrip("\r\n").replace(file_sep, sep)
        return next(csv.reader([line], delimiter=sep))
    except (UnicodeDecodeError, csv.Error, StopIteration):
        return None


def _arrow_columns(table, wanted: dict[str, str], id_type: IdType) -> dict[str, np.ndarray] | None:
    """The table's columns as the typed arrays of a Ratings frame, or None for anything unusual."""
    columns = {}
    for std, col in wanted.items():
        chunked = table.column(col)
        table = table.drop_columns([col])  # each column's arrow memory goes once it is converted
        if chunked.null_count:
            return None
        if std in ("user", "item"):
            values = _fast_ids(chunked, id_type)
            if values is None:
                return None
            columns[std] = _id_column(values)
        else:
            values = chunked.to_numpy()
            if not np.isfinite(values).all():
                return None
            columns[std] = values.astype(np.float32 if std == "rating" else np.int64)
        del chunked, values
    return columns


def _fast_ids(chunked, id_type: IdType) -> np.ndarray | None:
    """(n,) int64 or object (str) IDs from a dictionary-encoded arrow column; None to fall back.

    Applies :func:`_ids`' rules for text to the distinct values: a blank ID falls back (the
    careful path names its line), canonical integers become int64 unless ``id_type="str"``.
    """
    chunks = [c for c in chunked.chunks if len(c)]
    if not chunks:
        return None
    distinct = chunks[0].dictionary.to_pylist()  # the same dictionary in every chunk (unified)
    codes = np.concatenate([c.indices.to_numpy() for c in chunks])
    if any(not v.strip() for v in distinct):
        return None
    if id_type != "str" and all(_CANONICAL_INT.fullmatch(v) for v in distinct):
        ints = [int(v) for v in distinct]
        if any(not -(2**63) <= v < 2**63 for v in ints):
            return None
        return np.array(ints, dtype=np.int64)[codes]
    if id_type == "int":
        return None
    values = np.empty(len(distinct), dtype=object)
    values[:] = distinct
    return values[codes]


def _line_number(path: Path, row: int, first_line: int) -> int:
    """Physical line number (1-based) of data row ``row``, skipping blank lines as pandas does."""
    want = row + first_line - 1  # index of the row among the non-blank lines
    seen = -1
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip(b" \r\n"):
                seen += 1
                if seen == want:
                    return number
    return row + first_line


# --- validation ----------------------------------------------------------------


@dataclass
class _Locator:
    """Turns a row position into 'file, line N' (text) or 'DataFrame, row N' (tables)."""

    label: str
    first_line: int | None
    path: Path | None = None

    def where(self, row: int) -> str:
        if self.first_line is None:
            return f"{self.label}, row {row}"
        if self.path is None:
            return f"{self.label}, line {row + self.first_line}"
        return f"{self.label}, line {_line_number(self.path, row, self.first_line)}"

    def at(self, row: int, col: str) -> str:
        return f"{self.where(row)}, column {col!r}"


def _show(value) -> str:
    """repr of a value as the user wrote it (numpy scalars as plain Python values)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _id_column(arr: np.ndarray) -> np.ndarray | pd.Series:
    """String IDs stay an object column of Python str (pandas would convert them to its str dtype)."""
    return pd.Series(arr, dtype=object) if arr.dtype == object else arr


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
            digits = col.str.lstrip("-").str.len().to_numpy()
            big = digits >= 19  # int64 has 19 digits; check those exactly
            if big.any():
                too_big = np.array([not -(2**63) <= int(v) < 2**63 for v in col[big]])
                if too_big.any():
                    row = int(np.flatnonzero(big)[np.argmax(too_big)])
                    raise RatingsError(
                        f"{locate.at(row, name)}: integer ID {col.iloc[row]} does not fit in int64 "
                        "(pass id_type='str' to keep IDs as strings)"
                    )
            return col.astype(np.int64).to_numpy()
        return col.to_numpy(dtype=object)
    try:
        arr, kind = id_type_of(col, what=f"{locate.label}, column {name!r}: IDs")
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
        raise RatingsError(f"{locate.at(row, name)}: expected a finite number, found {_show(col.iloc[row])}")
    return values


def _timestamps(col: pd.Series, name: str, locate: _Locator) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        if col.isna().any():
            row = _first(col.isna().to_numpy())
            raise RatingsError(f"{locate.at(row, name)}: expected a timestamp, found a missing value")
        return (col.astype("datetime64[s]").astype(np.int64)).to_numpy()
    values = _numbers(col, name, locate)
    return values.astype(np.int64)


def _surely_no_duplicates(frame: pd.DataFrame) -> bool:
    """True when integer (user, item) pairs are provably all distinct (one sort of a packed key).

    ``frame.duplicated`` hashes pairs: about 5 s for 25M rows, against under 1 s for sorting one
    int64 key. False means "maybe": the caller then does the full check.
    """
    users, items = frame["user"].to_numpy(), frame["item"].to_numpy()
    if len(users) < 2 or users.dtype != np.int64 or items.dtype != np.int64:
        return False
    u_lo, i_lo = int(users.min()), int(items.min())
    i_span = int(items.max()) - i_lo + 1
    if (int(users.max()) - u_lo + 1) * i_span >= 2**63:
        return False
    key = (users - u_lo) * i_span + (items - i_lo)
    key.sort()
    return not bool(np.any(key[1:] == key[:-1]))


def _resolve_duplicates(frame: pd.DataFrame, how: Duplicates, locate: _Locator) -> tuple[pd.DataFrame, int]:
    if _surely_no_duplicates(frame):
        return frame, 0
    dup = frame.duplicated(["user", "item"], keep="last").to_numpy()
    n_dup = int(dup.sum())
    if n_dup == 0:
        return frame, 0
    if how == "raise":
        # name the first row that repeats an earlier one, and where the pair was first seen
        repeat = frame.duplicated(["user", "item"], keep="first").to_numpy()
        row = _first(repeat)
        pair = (frame["user"].iloc[row], frame["item"].iloc[row])
        earlier = _first((frame["user"] == pair[0]).to_numpy() & (frame["item"] == pair[1]).to_numpy())
        pair = tuple(v.item() if isinstance(v, np.generic) else v for v in pair)
        raise RatingsError(
            f"{locate.where(row)}: duplicate (user, item) pair {pair!r}, first at "
            f"{locate.where(earlier).removeprefix(locate.label + ', ')}; "
            f"{n_dup} duplicate row(s) in all (use duplicates='last' or 'mean')"
        )
    if how == "last":
        return frame.loc[~dup].reset_index(drop=True), n_dup
    # mean: one row per pair, in order of first appearance. Factorize instead of groupby, which
    # under pandas 3 would turn object (str) ID columns into pandas' own str dtype.
    users, _ = pd.factorize(frame["user"].to_numpy())
    items, _ = pd.factorize(frame["item"].to_numpy())
    group, _ = pd.factorize(users.astype(np.int64) * (int(items.max()) + 1) + items)
    first = np.unique(group, return_index=True)[1]
    merged = frame.iloc[first].reset_index(drop=True)
    counts = np.bincount(group)
    merged["rating"] = (np.bincount(group, weights=frame["rating"].to_numpy(np.float64)) / counts).astype(np.float32)
    if "timestamp" in frame.columns:
        latest = np.full(len(first), np.iinfo(np.int64).min)
        np.maximum.at(latest, group, frame["timestamp"].to_numpy(np.int64))
        merged["timestamp"] = latest
    return merged, n_dup
