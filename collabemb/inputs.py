"""The other inputs: (user, item) pairs to score, ratings to look up in a model, item metadata tables.

All are read with the same rules and errors as ratings (:mod:`collabemb.data`): IDs keep their
type, and a bad value is named by file, line and column.

**One rule for the IDs a model looks up.** Text has no type, so every ID column of a file that a
model answers (pairs to predict, a new user's ratings, seen pairs, test ratings) is read as the
type of the registry it is looked up in: for an ``int`` registry each value must be an integer
written canonically (``050`` is refused with file, line and column: it is not how 50 is written,
and no ID of such a model), for a ``str`` registry the text is the ID. The command line reads the
IDs it is given the same way (:func:`collabemb.registry.ids_from_text`). Python objects (a
DataFrame, a list) are never coerced: the other type raises TypeError when looked up.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from collabemb.data import Ratings, RatingsError, _id_column, _ids, _Locator, _read_parquet, _read_text, _sniff_sep, read_ratings
from collabemb.registry import IdType, ids_from_text


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


def read_ratings_as(
    source: str | os.PathLike | pd.DataFrame | Ratings, *, user_id_type: IdType, item_id_type: IdType, **read_kwargs
) -> Ratings:
    """:func:`~collabemb.data.read_ratings`, each ID column of a file read as the type of the registry it
    is looked up in (the module docstring's rule; a parquet file's typed columns as ``id_type=`` reads
    them). A DataFrame or Ratings is read as it is; ``id_type=`` or ``layout=`` decide for both columns."""
    if isinstance(source, Ratings | pd.DataFrame) or read_kwargs.get("id_type") or read_kwargs.get("layout"):
        return read_ratings(source, **read_kwargs)
    read_kwargs.pop("id_type", None)
    if user_id_type == item_id_type:
        return read_ratings(source, id_type=user_id_type, **read_kwargs)
    path = Path(source)
    parquet = path.suffix.lower() in (".parquet", ".pq")
    ratings = read_ratings(path, id_type=None if parquet else "str", **read_kwargs)
    cols = {"user": read_kwargs.get("user_col", "user"), "item": read_kwargs.get("item_col", "item")}
    for col, id_type in (("user", user_id_type), ("item", item_id_type)):
        if parquet:
            ratings.frame[col] = _id_column(_ids(ratings.frame[col], cols[col], id_type, _Locator(str(path), None)))
        elif id_type == "int":
            try:
                ratings.frame[col] = ids_from_text(ratings.frame[col], "int")
            except ValueError:  # read_pairs names the file, line and column of the first bad value
                read_pairs(path, user_col=cols["user"], item_col=cols["item"], user_id_type=user_id_type, item_id_type=item_id_type)
                raise
    return ratings


def read_ratings_for(model, source: str | os.PathLike | pd.DataFrame | Ratings, **read_kwargs) -> Ratings:
    """:func:`read_ratings_as` with the ID types of ``model``'s registries (a FittedModel or EmbeddingDotBias)."""
    return read_ratings_as(source, user_id_type=model.users.id_type, item_id_type=model.items.id_type, **read_kwargs)


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
