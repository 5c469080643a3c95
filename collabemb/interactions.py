"""Encoded interactions: ratings turned into registry rows, once, by one encoder.

:func:`encode` turns :class:`~collabemb.data.Ratings` into :class:`Interactions`: the user and
item registries and aligned (n,) arrays of table rows and values. Training (both engines), the
``implicit`` models, the seen-item store and the ranking metrics all consume this one object,
so an ID means the same row everywhere.

:class:`SeenItems` is the store of training pairs: which items each user rated, as a CSR over
registry rows. It is saved with a fitted model so that ``recommend`` and ``evaluate`` can leave
a user's training items out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from collabemb.data import Ratings
from collabemb.registry import UNKNOWN_ROW, IdRegistry, Unknown

if TYPE_CHECKING:
    import scipy.sparse as sp


@dataclass(frozen=True)
class Interactions:
    """(user, item, value) rows encoded against two registries.

    Attributes:
        users, items: the registries the rows refer to.
        user_rows, item_rows: (n,) int32 table rows (0 where an ID is unknown to the registry).
        values: (n,) float32 ratings (or interaction weights).
    """

    users: IdRegistry
    items: IdRegistry
    user_rows: np.ndarray
    item_rows: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.values)

    def tocsr(self, *, drop_unknown: bool = True) -> sp.csr_matrix:
        """(n_users, n_items) float32 CSR of the values; CSR row/column ``r`` is table row ``r + 1``.

        Pairs on the unknown row 0 are left out (``drop_unknown``); repeated pairs are summed.
        """
        import scipy.sparse as sp  # imported here: training and loading do not need scipy

        keep = (self.user_rows != UNKNOWN_ROW) & (self.item_rows != UNKNOWN_ROW) if drop_unknown else slice(None)
        matrix = sp.csr_matrix(
            (self.values[keep], (self.user_rows[keep].astype(np.int64) - 1, self.item_rows[keep].astype(np.int64) - 1)),
            shape=(len(self.users), len(self.items)),
            dtype=np.float32,
        )
        matrix.sum_duplicates()
        matrix.sort_indices()
        return matrix

    def seen(self) -> SeenItems:
        """The (user, item) pairs as a :class:`SeenItems` store (unknown rows dropped)."""
        return SeenItems.from_rows(self.user_rows, self.item_rows, self.users.n_rows)


def encode(ratings: Ratings, users: IdRegistry | None = None, items: IdRegistry | None = None) -> Interactions:
    """Encode ratings into table rows.

    Args:
        ratings: the ratings (user, item, rating columns).
        users, items: registries to encode against; unknown IDs get row 0, IDs of the other
            type raise ``TypeError``. None builds the registry from the ratings themselves (IDs
            sorted, rows 1..n), in one vectorised pass.
    """
    frame = ratings.frame
    if users is None:
        users, u_rows = _registry_and_rows(frame["user"], "user")
    else:
        u_rows = users.encode(frame["user"]).astype(np.int32)
    if items is None:
        items, i_rows = _registry_and_rows(frame["item"], "item")
    else:
        i_rows = items.encode(frame["item"]).astype(np.int32)
    return Interactions(users, items, u_rows, i_rows, frame["rating"].to_numpy(dtype=np.float32))


def encode_pairs(
    users: IdRegistry, items: IdRegistry, user_ids, item_ids, *, unknown: Unknown = "unknown_slot"
) -> tuple[np.ndarray, np.ndarray]:
    """(n,) int64 user rows and item rows of raw ID pairs (unseen IDs: row 0, or raise)."""
    return users.encode(user_ids, unknown=unknown), items.encode(item_ids, unknown=unknown)


def _registry_and_rows(column: pd.Series, name: str) -> tuple[IdRegistry, np.ndarray]:
    """The registry of a column and its (n,) int32 rows.

    Integer IDs spanning a range not much larger than the data go through a dense lookup table
    (O(n), no hashing: 25M MovieLens IDs in about a second); other IDs through the registry.
    """
    values = column.to_numpy()
    if values.dtype == np.int64 and len(values):
        lo, hi = int(values.min()), int(values.max())
        if hi - lo < max(4 * len(values), 1 << 20):
            offset = values - lo
            present = np.zeros(hi - lo + 1, dtype=bool)
            present[offset] = True
            ids = np.flatnonzero(present) + lo  # sorted unique IDs: the registry's row order
            lookup = np.zeros(hi - lo + 1, dtype=np.int32)
            lookup[ids - lo] = np.arange(1, len(ids) + 1, dtype=np.int32)
            return IdRegistry(ids, name=name), lookup[offset]
    registry = IdRegistry(column, name=name)
    return registry, registry.encode(column).astype(np.int32)


class SeenItems:
    """Which items each user rated in training: a CSR over registry rows (no raw IDs, no pickle).

    Attributes:
        indptr: (n_user_rows + 1,) int64; user row ``u``'s items are
            ``indices[indptr[u]:indptr[u + 1]]``. Row 0 (unknown users) has none.
        indices: (n_pairs,) int32 item rows (``1..n_items``), sorted within each user.

    Users beyond ``len(indptr) - 1`` (added after the CSR was made) have seen nothing.
    """

    def __init__(self, indptr: np.ndarray, indices: np.ndarray):
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int32)
        if self.indptr.ndim != 1 or len(self.indptr) < 1 or self.indptr[0] != 0 or self.indptr[-1] != len(self.indices):
            raise ValueError("seen items: indptr must start at 0 and end at len(indices)")
        if np.any(np.diff(self.indptr) < 0):
            raise ValueError("seen items: indptr must be non-decreasing")

    @classmethod
    def empty(cls, n_user_rows: int = 1) -> SeenItems:
        """No pairs at all (a model that stores no training pairs)."""
        return cls(np.zeros(n_user_rows + 1, dtype=np.int64), np.empty(0, np.int32))

    @classmethod
    def from_rows(cls, user_rows: np.ndarray, item_rows: np.ndarray, n_user_rows: int) -> SeenItems:
        """From aligned (n,) arrays of user rows and item rows; row-0 entries and repeats are dropped."""
        # memory matters at 25M pairs: one int64 key array, sorted in place, no np.unique copies
        u = np.asarray(user_rows, dtype=np.int64)
        i = np.asarray(item_rows, dtype=np.int64)
        stride = int(i.max(initial=0)) + 1
        keys = u * stride
        keys += i
        keep = (u > UNKNOWN_ROW) & (i > UNKNOWN_ROW)
        if not keep.all():
            keys = keys[keep]
        del keep
        keys.sort()  # by user, then item
        if len(keys) > 1:
            first = np.empty(len(keys), dtype=bool)
            first[0] = True
            np.not_equal(keys[1:], keys[:-1], out=first[1:])
            if not first.all():  # repeated pairs
                keys = keys[first]
            del first
        indptr = np.zeros(n_user_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(keys // stride, minlength=n_user_rows), out=indptr[1:])
        np.remainder(keys, stride, out=keys)
        return cls(indptr, keys.astype(np.int32))

    @classmethod
    def from_csr(cls, matrix: sp.csr_matrix) -> SeenItems:
        """From an (n_users, n_items) CSR whose row/column ``r`` is table row ``r + 1`` (no re-encoding)."""
        indptr = np.concatenate([[0], matrix.indptr]).astype(np.int64)  # row 0, the unknown slot, saw nothing
        return cls(indptr, (matrix.indices + 1).astype(np.int32))

    @classmethod
    def from_ratings(cls, ratings: Ratings, users: IdRegistry, items: IdRegistry) -> SeenItems:
        """The (user, item) pairs of ``ratings`` as rows of the registries; unknown IDs are dropped.

        IDs of another type than a registry's raise ``TypeError`` (``"7"`` is not ``7``).
        """
        return encode(ratings, users, items).seen()

    @property
    def n_user_rows(self) -> int:
        return len(self.indptr) - 1

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"SeenItems(users={len(self.indptr) - 1} rows, pairs={len(self.indices)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SeenItems) and np.array_equal(self.indptr, other.indptr) and np.array_equal(self.indices, other.indices)

    __hash__ = None

    def pairs_per_item(self, n_item_rows: int) -> np.ndarray:
        """(n_item_rows - 1,) int64: how many training pairs each known item (rows 1..) has."""
        return np.bincount(self.indices.astype(np.int64), minlength=n_item_rows)[1:n_item_rows].astype(np.int64)

    def items_of(self, user_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs for the given users: ``(query_index, item_rows)`` int64 arrays.

        ``query_index[j]`` is the position in ``user_rows`` whose user saw ``item_rows[j]``.
        """
        rows = np.asarray(user_rows, dtype=np.int64)
        n = len(self.indptr) - 1
        inside = (rows >= 0) & (rows < n)
        start = np.where(inside, self.indptr[np.clip(rows, 0, n - 1)], 0)
        stop = np.where(inside, self.indptr[np.clip(rows, 0, n - 1) + 1], 0)
        counts = stop - start
        total = int(counts.sum())
        if total == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        query = np.repeat(np.arange(len(rows)), counts)
        offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        return query, self.indices[np.repeat(start, counts) + offsets].astype(np.int64)

    def contains(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        """(n,) bool: whether each (user row, item row) pair is stored (one sorted search for all)."""
        u = np.asarray(user_rows, dtype=np.int64)
        i = np.asarray(item_rows, dtype=np.int64)
        stride = int(max(self.indices.max(initial=0), i.max(initial=0))) + 1
        owners = np.repeat(np.arange(self.n_user_rows, dtype=np.int64), np.diff(self.indptr))
        keys = owners * stride + self.indices  # sorted: by user, then item
        query = u * stride + i
        pos = np.minimum(np.searchsorted(keys, query), max(len(keys) - 1, 0))
        return (len(keys) > 0) & (keys[pos] == query) & (i >= 0) if len(keys) else np.zeros(len(u), dtype=bool)

    def with_pairs(self, user_rows: np.ndarray, item_rows: np.ndarray, n_user_rows: int) -> SeenItems:
        """A new SeenItems with these pairs added, sized for ``n_user_rows`` user rows."""
        n_old = len(self.indptr) - 1
        old_u = np.repeat(np.arange(n_old, dtype=np.int64), np.diff(self.indptr))
        return SeenItems.from_rows(
            np.concatenate([old_u, np.asarray(user_rows, np.int64)]),
            np.concatenate([self.indices.astype(np.int64), np.asarray(item_rows, np.int64)]),
            max(n_user_rows, n_old),
        )

    def padded(self, n_user_rows: int) -> SeenItems:
        """This store sized for ``n_user_rows`` user rows (users added since have seen nothing)."""
        if self.n_user_rows >= n_user_rows:
            return self
        extra = np.full(n_user_rows - self.n_user_rows, self.indptr[-1])
        return SeenItems(np.concatenate([self.indptr, extra]), self.indices)
