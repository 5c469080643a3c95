"""The other inputs: (user, item) pairs to score, and item metadata tables.

Both are read with the same rules and errors as ratings (:mod:`collabemb.data`): IDs keep their
type, and a bad value is named by file, line and column.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from collabemb.data import IdType, RatingsError, _id_column, _ids, _Locator, _read_parquet, _read_text, _sniff_sep


def read_pairs(
    source: str | os.PathLike | pd.DataFrame,
    *,
    user_col: str = "user",
    item_col: str = "item",
    user_id_type: IdType = "int",
    item_id_type: IdType = "int",
    sep: str | None = None,
) -> pd.DataFrame:
    """Read (user, item) pairs to score, converting IDs to the types a model's registries hold.

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
    locate = _Locator(label, first_line, None if first_line is None else Path(source))
    return pd.DataFrame(
        {
            "user": _id_column(_ids(raw[user_col], user_col, user_id_type, locate)),
            "item": _id_column(_ids(raw[item_col], item_col, item_id_type, locate)),
        }
    )


def read_item_metadata(source: str | os.PathLike, *, id_col: str = "item", id_type: IdType = None, sep: str | None = None) -> pd.DataFrame:
    """Read an item metadata file (CSV/TSV/parquet: an ID column plus titles, genres, ...).

    The ID column follows the same type rule as :func:`read_ratings`; other columns are read
    as pandas infers them. Returns a DataFrame whose ID column is named ``item``.
    """
    path = Path(source)
    if not path.is_file():
        raise RatingsError(f"{path}: no such file")
    if path.suffix.lower() in (".parquet", ".pq"):
        raw, first_line = _read_parquet(path), None
    else:
        sep = sep or _sniff_sep(path)
        try:
            raw = pd.read_csv(path, sep=sep, dtype={id_col: str}, keep_default_na=False, engine="python" if len(sep) > 1 else "c")
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
            raise RatingsError(f"{path}: cannot parse item metadata ({exc})") from None
        first_line = 2
    if id_col not in raw.columns:
        found = ", ".join(map(str, raw.columns)) or "none"
        raise RatingsError(f"{path}: missing item ID column {id_col!r} (found columns: {found})")
    ids = _ids(raw[id_col], id_col, id_type, _Locator(str(path), first_line))
    meta = raw.drop(columns=[id_col])
    meta.insert(0, "item", ids)
    return meta
