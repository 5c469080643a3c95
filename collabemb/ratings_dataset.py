"""Ratings as a parquet dataset that no process has to hold whole: read in shares and by user.

A dataset is one parquet file or a directory of them (``part-*.parquet``, or hive-style partitions such as
``bucket=3/part-0.parquet``; every file with the same user, item and rating columns). Its files are taken
in sorted path order. Two reads serve a fit across processes (:mod:`collabemb.distributed`):

* :meth:`RatingsDataset.summary` of a *share* of the files (rank r of N reads files r, r + N, ...): the
  distinct user and item IDs, the row count and the rating range, to build the registries once;
* :meth:`RatingsDataset.read_users`: only the rows whose user is in a given set, through pyarrow's
  dataset filter (the rows of other users are dropped batch by batch as the files are scanned).

IDs are 64-bit integers or strings, as in :func:`collabemb.data.read_ratings`; ratings must be finite.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class DatasetSummary:
    """What a share of a dataset holds: distinct (sorted) user and item IDs, rows, rating min and max."""

    users: np.ndarray
    items: np.ndarray
    n_rows: int
    rating_min: float
    rating_max: float


class RatingsDataset:
    """A parquet ratings dataset at ``path`` with columns ``user_col``, ``item_col``, ``rating_col``."""

    def __init__(self, path: str | os.PathLike, *, user_col: str = "user", item_col: str = "item", rating_col: str = "rating"):
        import pyarrow.dataset as ds

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such parquet file or directory")
        self.columns = (user_col, item_col, rating_col)
        try:
            self._dataset = ds.dataset(str(self.path), format="parquet", partitioning="hive", exclude_invalid_files=False)
            self.files = sorted(self._dataset.files)
        except Exception as exc:  # pyarrow: ArrowInvalid and friends, one per malformed file
            raise ValueError(f"{self.path}: not a readable parquet dataset ({str(exc).splitlines()[0]})") from None
        if not self.files:
            raise ValueError(f"{self.path}: no parquet files in it")
        names = set(self._dataset.schema.names)
        missing = [c for c in self.columns if c not in names]
        if missing:
            raise ValueError(f"{self.path}: no column {missing[0]!r} (columns: {', '.join(sorted(names))})")
        self.id_type = {c: self._id_type(c) for c in (user_col, item_col)}

    def _id_type(self, column: str) -> str:
        import pyarrow as pa

        t = self._dataset.schema.field(column).type
        if pa.types.is_integer(t):
            return "int"
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return "str"
        raise ValueError(f"{self.path}: column {column!r} is {t}; IDs must be integers or strings")

    def _table(self, files: list[str], filter=None):
        import pyarrow.dataset as ds

        try:
            part = ds.dataset(files, format="parquet", schema=self._dataset.schema)
            return part.to_table(columns=list(self.columns), filter=filter)
        except Exception as exc:
            raise ValueError(f"{self.path}: cannot read ({str(exc).splitlines()[0]})") from None

    def summary(self, share: int = 0, shares: int = 1) -> DatasetSummary:
        """The summary of files ``share, share + shares, ...`` (all of them by default), one file at a time."""
        users, items, n, lo, hi = [], [], 0, np.inf, -np.inf
        for file in self.files[share::shares]:
            u, i, r = self._arrays(self._table([file]), file)
            users.append(np.unique(u))
            items.append(np.unique(i))
            n += len(r)
            if len(r):
                lo, hi = min(lo, float(r.min())), max(hi, float(r.max()))
        user_col, item_col, _ = self.columns
        return DatasetSummary(_union(users, self.id_type[user_col]), _union(items, self.id_type[item_col]), n, lo, hi)

    def read_users(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(user IDs, item IDs, float32 ratings)`` of every row whose user is in ``user_ids``, in file order."""
        import pyarrow as pa
        import pyarrow.compute as pc

        user_col = self.columns[0]
        values = user_ids.tolist() if self.id_type[user_col] == "str" else np.asarray(user_ids, np.int64)
        wanted = pa.array(values, type=self._dataset.schema.field(user_col).type)
        table = self._table(self.files, filter=pc.field(user_col).isin(wanted))
        return self._arrays(table, str(self.path))

    def _arrays(self, table, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        user_col, item_col, rating_col = self.columns
        out = []
        for col in (user_col, item_col):
            column = table.column(col)
            if column.null_count:
                raise ValueError(f"{where}: column {col!r} has {column.null_count} missing IDs")
            out.append(column.to_numpy(zero_copy_only=False).astype(np.int64 if self.id_type[col] == "int" else object))
        ratings = table.column(rating_col)
        if ratings.null_count:
            raise ValueError(f"{where}: column {rating_col!r} has {ratings.null_count} missing ratings")
        r = ratings.to_numpy(zero_copy_only=False).astype(np.float64)
        if not np.all(np.isfinite(r)) or np.any(np.abs(r) > np.finfo(np.float32).max):
            raise ValueError(f"{where}: column {rating_col!r} holds a rating that is not a finite float32")
        return out[0], out[1], r.astype(np.float32)


def _union(parts: list[np.ndarray], id_type: str) -> np.ndarray:
    """Sorted distinct IDs of several arrays."""
    if not parts:
        return np.empty(0, np.int64 if id_type == "int" else object)
    joined = np.concatenate(parts)
    return np.unique(joined) if id_type == "int" else np.array(sorted(set(joined.tolist())), dtype=object)


def id_bytes(ids: np.ndarray, id_type: str) -> bytes:
    """IDs as bytes, to send between processes without pickling: int64 little-endian, or for strings the
    (n,) int64 UTF-8 lengths then the joined UTF-8 text."""
    if id_type == "int":
        return np.asarray(ids, "<i8").tobytes()
    encoded = [str(x).encode("utf-8") for x in ids]
    return np.int64(len(encoded)).tobytes() + np.array([len(e) for e in encoded], "<i8").tobytes() + b"".join(encoded)


def ids_of_bytes(data: bytes, id_type: str) -> np.ndarray:
    """The inverse of :func:`id_bytes`."""
    if id_type == "int":
        return np.frombuffer(data, "<i8").astype(np.int64)
    if not data:
        return np.empty(0, object)
    n = int(np.frombuffer(data[:8], "<i8")[0])
    lengths = np.frombuffer(data[8 : 8 + 8 * n], "<i8")
    ends = 8 + 8 * n + np.cumsum(lengths)
    starts = ends - lengths
    return np.array([data[a:b].decode("utf-8") for a, b in zip(starts, ends, strict=True)], dtype=object)
