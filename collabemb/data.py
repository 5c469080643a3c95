"""Reading and validating rating data.

Every reader returns a :class:`Ratings`: a DataFrame with the columns ``user``, ``item``,
``rating`` (float32) and, when the input has one, ``timestamp`` (int64, unix seconds).
Bad input raises :class:`RatingsError` whose message names the file, the line and the column
and says what was expected and what was found.

IDs read from text files are ints when *every* value in the column is a canonical integer
(``0|-?[1-9][0-9]*``), otherwise strings; so ``"007"`` stays the string ``"007"``. Pass
``id_type="str"`` or ``"int"`` to decide explicitly.

Text files may be gzip, bz2, xz or zstd compressed whatever their name (the first bytes decide;
see :mod:`collabemb.text_input`). Ratings must be finite and fit in float32; timestamps are unix
seconds that fit in int64 (numbers are truncated toward zero) or datetimes: naive ones are read
as UTC, timezone-aware ones are converted to UTC.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from collabemb.registry import id_type_of
from collabemb.text_input import PARQUET_MAGIC, RatingsError, TextFile, header_fields, header_of, quotes_are_plain, read_delimited, show
from collabemb.text_input import Locator as _Locator
from collabemb.text_input import sniff_sep as _sniff_sep

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
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT64_MIN = -(2**63)
_BLOCK_SIZE = 16 << 20  # bytes per pyarrow parse block


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
        source: a DataFrame, or a path. ``.parquet``/``.pq`` (or a file that starts like one) is
            read with pyarrow; other files are delimited UTF-8 text with a header row, separator
            from ``sep`` or guessed from the first line (tab, ``::``, ``;`` or comma), gzip / bz2 /
            xz / zstd compressed or not (told by their first bytes, not their name).
        user_col, item_col, rating_col: column names in the input.
        timestamp_col: timestamp column (unix seconds or datetimes; naive datetimes are taken as
            UTC, timezone-aware ones converted to UTC); default: a column named ``timestamp`` is
            kept when the input has one.
        layout: ``"ml-100k"``, ``"ml-1m"`` (also ml-10m) or ``"ml-latest"`` (also ml-20m, ml-25m,
            ml-latest-small); the column arguments are then ignored and IDs are ints.
        duplicates: for repeated (user, item) pairs: ``"last"`` keeps the last row in input order
            (default), ``"raise"`` refuses them, ``"mean"`` averages their ratings (latest
            timestamp). The number resolved is in ``Ratings.n_duplicates``.
        id_type: ``"int"``, ``"str"`` or None to infer (see the module docstring).

    Raises:
        RatingsError: missing or repeated column, empty input, non-numeric / NaN / inf rating or one
            beyond float32, timestamp beyond int64 seconds, missing or malformed ID, unparseable
            line, corrupt compressed data, or duplicates with ``duplicates="raise"``.
    """
    if duplicates not in ("last", "raise", "mean"):
        raise ValueError(f"duplicates must be 'last', 'raise' or 'mean', got {duplicates!r}")
    if isinstance(source, Ratings):
        return source
    if layout is not None:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
        user_col, item_col, rating_col, timestamp_col, id_type = "user", "item", "rating", "timestamp", "int"
    names = (user_col, item_col, rating_col, timestamp_col)
    if isinstance(source, pd.DataFrame):
        raw, locate, header = source, _Locator("DataFrame", None), (None, list(source.columns))
    else:
        read = _read_file(Path(source), layout, sep, names, duplicates, id_type)
        if isinstance(read, Ratings):
            return read
        raw, locate, header = read
    cols = _columns_of(raw, locate, layout, names, header)
    if layout == "ml-latest":
        raw = raw.rename(columns=LAYOUTS["ml-latest"]["header"])
    columns = {
        "user": _id_column(_ids(raw[cols["user"]], cols["user"], id_type, locate)),
        "item": _id_column(_ids(raw[cols["item"]], cols["item"], id_type, locate)),
        "rating": _ratings(raw[cols["rating"]], cols["rating"], locate),
    }
    if "timestamp" in cols:
        columns["timestamp"] = _timestamps(raw[cols["timestamp"]], cols["timestamp"], locate)
    # arrays from a file are ours: no copy (25M rows: 700 MB less at the peak); a caller's DataFrame is copied
    frame = pd.DataFrame(columns, copy=isinstance(source, pd.DataFrame))
    frame, n_dup = _resolve_duplicates(frame, duplicates, locate)
    return Ratings(frame, locate.label, n_dup)


def _read_file(path: Path, layout: str | None, sep: str | None, names: tuple, duplicates: Duplicates, id_type: IdType):
    """Ratings straight from the fast path, or (raw frame, locator, (header line, header names))."""
    label = str(path)
    if not path.exists():
        raise RatingsError(f"{label}: no such file")
    if path.is_dir():
        raise RatingsError(f"{label}: is a directory, expected a ratings file")
    try:
        with open(path, "rb") as fh:
            parquet = fh.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC
        text = None if parquet or path.suffix.lower() in (".parquet", ".pq") else TextFile.of(path)
    except OSError as exc:
        raise RatingsError(f"{label}: cannot read the file ({exc.strerror or exc})") from None
    if text is None:
        in_file = {v: k for k, v in LAYOUTS["ml-latest"]["header"].items()} if layout == "ml-latest" else {}
        needed = [in_file.get(c, c) for c in names if c is not None]
        raw = _read_parquet(path, needed=needed, optional=[in_file.get("timestamp", "timestamp")])
        return raw, _Locator(label, None), (None, list(raw.columns))
    file_sep = _file_sep(text, layout, sep)
    fast = _read_text_fast(text, layout, sep, *names, id_type)
    if fast is not None:
        frame, first_line = fast
        frame, n_dup = _resolve_duplicates(frame, duplicates, _Locator(label, first_line, text, file_sep))
        return Ratings(frame, label, n_dup)
    raw, first_line = _read_text(text, layout, sep)
    header = (None, list(raw.columns)) if first_line == 1 else header_fields(text, file_sep) or (1, list(raw.columns))
    return raw, _Locator(label, first_line, text, file_sep), header


def _columns_of(raw: pd.DataFrame, locate: _Locator, layout: str | None, names: tuple, header: tuple) -> dict[str, str]:
    """``{"user": column, "item": ..., "rating": ...[, "timestamp": ...]}`` after the ml-latest renaming.

    A missing column is a RatingsError listing the columns found (by their names in the file), and
    so is a column the input names twice. ``header``: (its line in a file or None, the names).
    """
    user_col, item_col, rating_col, timestamp_col = names
    if timestamp_col is None and "timestamp" in raw.columns:
        timestamp_col = "timestamp"
    wanted = {"user": user_col, "item": item_col, "rating": rating_col}
    if timestamp_col is not None:
        wanted["timestamp"] = timestamp_col
    file_names = {v: k for k, v in LAYOUTS["ml-latest"]["header"].items()} if layout == "ml-latest" else {}
    present = {LAYOUTS["ml-latest"]["header"].get(c, c) if layout == "ml-latest" else c for c in raw.columns}
    if len(raw) == 0:
        raise RatingsError(f"{locate.label}: empty input, expected at least one rating")
    line, header_names = header
    where = locate.label if line is None else f"{locate.label}, line {line}"
    for name, col in wanted.items():
        if col not in present:
            found = ", ".join(c if isinstance(c, str) and c.isprintable() else repr(c) for c in raw.columns) or "none"
            raise RatingsError(f"{where}: missing {name} column {file_names.get(col, col)!r} (found columns: {found})")
        at = [i for i, c in enumerate(header_names) if c == file_names.get(col, col)]
        if len(at) > 1:
            kind, numbers = ("fields", [i + 1 for i in at]) if line is not None else ("positions", at)
            raise RatingsError(
                f"{where}: {name} column {file_names.get(col, col)!r} appears {len(at)} times "
                f"({kind} {', '.join(map(str, numbers[:-1]))} and {numbers[-1]}); expected each column name once"
            )
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
            if set(needed) <= set(names) and all(names.count(c) == 1 for c in needed):
                columns = [c for c in names if c in set(needed) | set(optional)]
        # ParquetFile.read, unlike read_table, takes repeated column names (the check names them)
        return pq.ParquetFile(path).read(columns=columns).to_pandas(split_blocks=True, self_destruct=True)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise RatingsError(f"{path}: not a readable parquet file ({exc})") from None


def _file_sep(text: TextFile, layout: str | None, sep: str | None) -> str:
    """The separator as written in the file: the layout's, ``sep``, or guessed from the first line."""
    if sep and any(c in sep for c in '\r\n"'):
        raise ValueError(f"sep cannot hold a line break or a quote, got {sep!r}")
    return LAYOUTS.get(layout or "", {}).get("sep", sep) or _sniff_sep(text)


def _read_text(path: Path | TextFile, layout: str | None, sep: str | None) -> tuple[pd.DataFrame, int]:
    """Read a delimited file with every field as a string. Returns (frame, line number of row 0)."""
    text = TextFile.of(path)
    return read_delimited(text, _file_sep(text, layout, sep), LAYOUTS.get(layout or "", {}).get("names"))


def _read_text_fast(
    path: Path | TextFile,
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
    missing or repeated column, a missing or non-canonical ID where ints are required, a
    non-finite number, a rating beyond float32, a timestamp beyond int64, a byte-order mark, a NUL
    byte, no rows...). :func:`read_ratings` then takes the careful pandas path, which gives the
    same frame for every file this function accepts and the precise error (file, line, column) for
    the rest. IDs are read dictionary-encoded, so the type rule (canonical integers -> int, else
    str) is decided on the distinct values, with the same regular expression; numbers go through
    float64 exactly as the careful path's.
    """
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        return None
    text = TextFile.of(path)
    if text.find(b"\x00") >= 0:
        return None
    sep = file_sep = _file_sep(text, layout, sep)
    names = LAYOUTS.get(layout or "", {}).get("names")
    parsed = text
    if len(sep.encode()) > 1:  # as in _read_text: ratings.dat holds numbers, so '::' can become a tab
        parsed, sep = TextFile(text.path, text.read_bytes().replace(sep.encode(), b"\t")), "\t"
    quoted = text.find(b'"') >= 0  # then a value may hold a newline; without quotes blocks split faster
    if quoted and not quotes_are_plain(parsed, sep):
        return None  # odd quoting (a quote left open, text after a closing quote...): pandas decides
    header = names if names is not None else header_of(text, file_sep, sep)
    wanted = _fast_wanted(header, layout, (user_col, item_col, rating_col, timestamp_col))
    if wanted is None:
        return None
    if layout is not None:
        id_type = "int"
    ids = pa.dictionary(pa.int32(), pa.string())
    source = pa.input_stream(str(parsed.path), compression=None) if parsed.data is None else pa.BufferReader(parsed.data)
    try:
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(column_names=names, use_threads=True, block_size=_BLOCK_SIZE),
            parse_options=pacsv.ParseOptions(
                delimiter=sep, quote_char='"', double_quote=True, newlines_in_values=quoted, ignore_empty_lines=True
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
    finally:
        source.close()
    if table.num_rows == 0 or table.column_names != list(wanted.values()):
        return None
    columns = _arrow_columns(table, wanted, id_type)
    return None if columns is None else (pd.DataFrame(columns, copy=False), 1 if names else 2)


def _fast_wanted(header: list[str] | None, layout: str | None, names: tuple) -> dict[str, str] | None:
    """``{"user": column in the file, ...}`` for the fast path; None when a column is missing or repeated."""
    if header is None or len(set(header)) != len(header):
        return None
    user_col, item_col, rating_col, timestamp_col = ("user", "item", "rating", "timestamp") if layout is not None else names
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
    return wanted


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
            if std == "rating":
                with np.errstate(over="ignore"):
                    columns[std] = values.astype(np.float32)
                if np.isinf(columns[std]).any():  # beyond float32: the careful path names it
                    return None
            elif not (np.abs(values) < 2.0**63).all():  # beyond int64 seconds
                return None
            else:
                columns[std] = values.astype(np.int64)
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
        if any(len(v) > 20 for v in distinct):  # surely beyond int64 (and int() of a huge one is slow)
            return None
        ints = [int(v) for v in distinct]
        if any(not _INT64_MIN <= v < 2**63 for v in ints):
            return None
        return np.array(ints, dtype=np.int64)[codes]
    if id_type == "int":
        return None
    values = np.empty(len(distinct), dtype=object)
    values[:] = distinct
    return values[codes]


# --- validation ----------------------------------------------------------------


def _id_column(arr: np.ndarray) -> np.ndarray | pd.Series:
    """String IDs stay an object column of Python str (pandas would convert them to its str dtype)."""
    return pd.Series(arr, dtype=object) if arr.dtype == object else arr


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _ids(col: pd.Series, name: str, id_type: IdType, locate: _Locator) -> np.ndarray:
    missing = _missing_ids(col, name, locate)
    if missing.any():
        row = _first(missing)
        raise RatingsError(f"{locate.at(row, name)}: missing ID")
    if locate.first_line is not None:  # text input: every field is a string
        if id_type == "str":
            return col.to_numpy(dtype=object)
        canonical = col.str.fullmatch(_CANONICAL_INT.pattern).to_numpy(dtype=bool)
        if id_type == "int" and not canonical.all():
            row = _first(~canonical)
            raise RatingsError(f"{locate.at(row, name)}: expected an integer ID, found {show(col.iloc[row])}")
        if canonical.all():
            digits = col.str.lstrip("-").str.len().to_numpy()
            big = digits >= 19  # int64 has 19 digits; check those exactly (and never int() a huge one)
            if big.any():
                too_big = np.array([len(v) > 20 or not _INT64_MIN <= int(v) < 2**63 for v in col[big]])
                if too_big.any():
                    row = int(np.flatnonzero(big)[np.argmax(too_big)])
                    value = col.iloc[row] if len(col.iloc[row]) <= 40 else f"{col.iloc[row][:20]}... ({len(col.iloc[row])} characters)"
                    raise RatingsError(
                        f"{locate.at(row, name)}: integer ID {value} does not fit in int64 (pass id_type='str' to keep IDs as strings)"
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


def _missing_ids(col: pd.Series, name: str, locate: _Locator) -> np.ndarray:
    """Rows whose ID is missing (NA, NaN, blank text); RatingsError for text that is not valid Unicode."""
    if pd.api.types.is_float_dtype(col.dtype):
        return ~np.isfinite(col.to_numpy(dtype=np.float64, na_value=np.nan))
    arrow = isinstance(col.dtype, pd.ArrowDtype) or (isinstance(col.dtype, pd.StringDtype) and col.dtype.storage == "pyarrow")
    if arrow and pd.api.types.is_string_dtype(col.dtype):  # UTF-8 by construction
        return col.isna().to_numpy() | (col.str.strip() == "").to_numpy(dtype=bool, na_value=False)
    values = col.to_numpy()  # categories, Python strings: objects
    if values.dtype != object:
        return col.isna().to_numpy()
    import pyarrow as pa
    import pyarrow.compute as pc

    try:  # one pass in C: Python str to UTF-8, which refuses lone surrogates
        text = pa.array(values, type=pa.string(), from_pandas=True)
    except UnicodeEncodeError:
        for row, value in enumerate(values):
            if isinstance(value, str) and not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise RatingsError(
                        f"{locate.at(row, name)}: ID {show(value)} holds a lone surrogate (U+{ord(value[exc.start]):04X}) "
                        f"at character {exc.start}; expected text that can be written as UTF-8"
                    ) from None
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all text: id_type_of names the types
        return pd.isna(values)
    blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0)
    return pc.or_kleene(pc.is_null(text), blank).to_numpy(zero_copy_only=False)


def _numbers(col: pd.Series, name: str, locate: _Locator) -> np.ndarray:
    """The column as finite float64; RatingsError naming the first value that is not a finite number."""
    dtype = col.dtype
    if dtype.kind in "bcmM" or isinstance(dtype, pd.PeriodDtype | pd.IntervalDtype):
        raise RatingsError(f"{locate.at(0, name)}: expected a finite number, found {show(col.iloc[0])} (the column holds {dtype} values)")
    if pd.api.types.is_numeric_dtype(dtype):
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        try:
            values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        except (OverflowError, TypeError, ValueError):  # e.g. a Python int beyond float64
            values = np.array([_float_or_nan(v) for v in col], dtype=np.float64)
    bad = ~np.isfinite(values)
    if pd.api.types.is_object_dtype(dtype):  # True and False among Python objects are no numbers either
        bad |= np.fromiter((isinstance(v, bool | np.bool_) for v in col.to_numpy()), bool, len(col))
    if bad.any():
        row = _first(bad)
        raise RatingsError(f"{locate.at(row, name)}: expected a finite number, found {show(col.iloc[row])}")
    return values


def _float_or_nan(value) -> float:
    try:
        return float(value)
    except (OverflowError, TypeError, ValueError):
        return np.nan


def _ratings(col: pd.Series, name: str, locate: _Locator) -> np.ndarray:
    """The column as float32; RatingsError for a value that is not finite or beyond float32's range."""
    values = _numbers(col, name, locate)
    with np.errstate(over="ignore"):
        ratings = values.astype(np.float32)
    beyond = np.isinf(ratings)
    if beyond.any():
        row = _first(beyond)
        raise RatingsError(
            f"{locate.at(row, name)}: expected a finite number within float32's range (±{_FLOAT32_MAX:.8g}), found {show(col.iloc[row])}"
        )
    return ratings


def _timestamps(col: pd.Series, name: str, locate: _Locator) -> np.ndarray:
    """Unix seconds as int64 from numbers (truncated toward zero) or datetimes (naive ones read as UTC)."""
    if col.dtype.kind in "bcm" or isinstance(col.dtype, pd.PeriodDtype | pd.IntervalDtype):
        raise RatingsError(
            f"{locate.at(0, name)}: expected unix seconds or datetimes, found {show(col.iloc[0])} (the column holds {col.dtype} values)"
        )
    if col.dtype == object and pd.api.types.infer_dtype(col, skipna=True) in ("datetime", "date"):
        with contextlib.suppress(TypeError, ValueError, OverflowError):  # else the number check names the value
            col = pd.to_datetime(col, utc=True)  # Python datetimes, perhaps in several time zones
    if col.dtype.kind == "M":  # numpy, timezone-aware or arrow datetimes
        if col.dt.tz is not None:  # the same instants, in UTC
            col = col.dt.tz_convert("UTC").dt.tz_localize(None)
        if col.isna().any():
            row = _first(col.isna().to_numpy())
            raise RatingsError(f"{locate.at(row, name)}: expected a timestamp, found a missing value")
        return (col.astype("datetime64[s]").astype(np.int64)).to_numpy()
    if col.dtype.kind in "iu" and not col.hasnans:  # integers stay exact
        values = col.to_numpy(dtype=np.uint64 if col.dtype.kind == "u" else np.int64)
        beyond = values > 2**63 - 1 if col.dtype.kind == "u" else values == _INT64_MIN
        values = values.astype(np.int64)
    else:
        values = _numbers(col, name, locate)
        beyond = ~(np.abs(values) < 2.0**63)
    if beyond.any():
        row = _first(beyond)
        raise RatingsError(
            f"{locate.at(row, name)}: expected a timestamp in unix seconds within int64's range "
            f"(|t| < 9.22e18), found {show(col.iloc[row])}"
        )
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
        here, first = locate.places([row, earlier])  # one pass over a file for both
        raise RatingsError(
            f"{locate.label}, {here}: duplicate (user, item) pair {pair!r}, first at {first}; "
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
