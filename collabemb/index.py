"""Similar items, similar users and recommendations by raw ID, searched with FAISS.

FAISS does the search; this module makes it correct and easy to use:

* **Raw IDs in, raw IDs out.** FAISS label ``j`` is registry row ``j + 1`` (row 0, the unknown
  slot, is never indexed, so it is never returned as a neighbour or a recommendation).
* **Metrics said out loud.** Similarity indexes are built with ``METRIC_INNER_PRODUCT`` set
  explicitly (FAISS's HNSW defaults to L2): ``metric="cosine"`` searches L2-normalised vectors
  (a zero vector stays zero and scores 0 against everything), ``metric="dot"`` the raw vectors.
  The HNSW search beam is ``max(ef_search, number fetched)``, never below k.
* **Recommendations in the model's own order.** The predicted rating
  ``lo + (hi - lo) * sigmoid(<p_u, q_i> + b_u + b_i)`` is monotone in ``<[p_u, 1], [q_i, b_i]>``
  for a fixed user, so ``recommend`` searches the item vectors augmented with their bias against
  ``[p_u, 1]`` and reports the predicted rating as the score. Exact search does this by inner
  product; HNSW and IVF through the exact MIPS-to-L2 reduction (see ``_Part``), which they
  search far better, and the candidates are then scored exactly.
* **Exclusions never cost results.** Excluded IDs (the query itself, items a user has seen, an
  ``exclude=`` list) are filtered after an over-fetch of ``k`` plus the number excluded, so a
  query still gets ``k`` results whenever the catalogue has them; approximate searches that come
  back short are repeated with a doubled fetch (and, for IVF, doubled ``nprobe``).
* **Fallbacks are named.** An unseen query ID raises :class:`~collabemb.registry.UnknownIdError`
  unless ``fallback="unknown_slot"`` is asked for; every result row has a ``source`` column
  (``"known"``, ``"unknown_slot"``, ``"fold_in"``, ``"mean_of_items"``) saying which path
  produced it.

A :class:`SimilarityIndex` holds up to three FAISS indexes ("parts"), each built on first use
(or by :meth:`SimilarityIndex.build`): ``"items"`` (item vectors, for :meth:`similar_items`),
``"users"`` (user vectors, for :meth:`similar_users`) and ``"recommend"`` (item vectors plus
bias, inner product, for :meth:`recommend`). :meth:`EmbeddingDotBias.build_index
<collabemb.models.EmbeddingDotBias.build_index>` attaches one to the model as ``model.index``;
``model.save`` then writes the built parts into the artifact with the fingerprint of the
registry and a checksum of the vectors they were built from, and loading refuses an index that
does not match (see :class:`StaleIndexError`).

:class:`SeenItems` keeps which items each user rated in training (a CSR of registry rows), so
that ``recommend(..., exclude_seen=True)`` works from a loaded artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from scipy.special import expit

from collabemb.artifact import ArtifactError
from collabemb.registry import UNKNOWN_ROW, IdRegistry, UnknownIdError, id_kind_of

if TYPE_CHECKING:
    from collabemb.data import Ratings
    from collabemb.models import EmbeddingDotBias

Kind = Literal["exact", "hnsw", "ivf"]
Metric = Literal["cosine", "dot"]
Fallback = Literal["unknown_slot"] | None

KINDS: tuple[str, ...] = ("exact", "hnsw", "ivf")
METRICS: tuple[str, ...] = ("cosine", "dot")
#: The FAISS indexes a SimilarityIndex may hold, and which side of the model each one searches.
PARTS: dict[str, str] = {"items": "item", "users": "user", "recommend": "item"}
#: Parts with at most this many vectors get ``kind="exact"`` by default, larger ones ``"hnsw"``.
#: At 100k x 64 an exact single query takes about 3 ms on one core (measured: 8 ms at 300k) and
#: needs no build; HNSW answers in under 1 ms but takes seconds to minutes to build.
EXACT_MAX_DEFAULT = 100_000
#: HNSW defaults, measured on 1M x 64 vectors with a trained table's spectrum on 2 cores
#: (benchmarks/similarity.py). M=32, efConstruction=40 builds in about 2 minutes; recall@10 of
#: cosine neighbours is 0.92 / 0.95 / 0.97 at efSearch 128 / 192 / 256 (0.7 ms a query at 256).
#: M=16 builds twice as fast but reaches only 0.87 at 256; efConstruction=80 gains 0.015 at 256
#: for three times the build time.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 256
_CHUNK = 1 << 16  # rows per chunk when hashing / normalising big tables


class StaleIndexError(ArtifactError):
    """An index that does not match the model it is used with.

    Raised when IDs were added to the model without extending its index, when an artifact's
    index was built from other vectors or another registry (stale, or copied from another
    artifact), or when the model's weights changed after the index was built.
    """


# --- seen items ------------------------------------------------------------------------------


class SeenItems:
    """Which items each user rated in training: a CSR over registry rows (no raw IDs, no pickle).

    Attributes:
        indptr: (n_user_rows + 1,) int64; user row ``u``'s items are
            ``indices[indptr[u]:indptr[u + 1]]``. Row 0 (unknown users) has none.
        indices: (n_pairs,) int32 item rows (``1..n_items``), sorted within each user.

    Users beyond ``len(indptr) - 1`` (added after the CSR was made) have seen nothing.
    In the artifact: ``seen_indptr.npy`` and ``seen_items.npy``, read with ``allow_pickle=False``.
    """

    INDPTR_FILE = "seen_indptr.npy"
    INDICES_FILE = "seen_items.npy"

    def __init__(self, indptr: np.ndarray, indices: np.ndarray):
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int32)
        if self.indptr.ndim != 1 or len(self.indptr) < 1 or self.indptr[0] != 0 or self.indptr[-1] != len(self.indices):
            raise ValueError("seen items: indptr must start at 0 and end at len(indices)")
        if np.any(np.diff(self.indptr) < 0):
            raise ValueError("seen items: indptr must be non-decreasing")

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
    def from_ratings(cls, model: EmbeddingDotBias, ratings: Ratings | pd.DataFrame | str | os.PathLike) -> SeenItems:
        """The (user, item) pairs of ``ratings`` (Ratings, a DataFrame or a file) as rows of ``model``.

        Pairs with a user or item the model does not know are dropped.
        """
        from collabemb.data import Ratings, read_ratings

        if isinstance(ratings, Ratings):
            frame = ratings.frame
        elif isinstance(ratings, pd.DataFrame):
            frame = ratings  # only the user and item columns are needed
        else:
            frame = read_ratings(ratings).frame
        if "user" not in frame.columns or "item" not in frame.columns:
            raise ValueError(f"seen items need 'user' and 'item' columns, found {', '.join(map(str, frame.columns))}")
        u = _encode_lenient(model.users, frame["user"])
        i = _encode_lenient(model.items, frame["item"])
        return cls.from_rows(u, i, model.users.n_rows)

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"SeenItems(users={len(self.indptr) - 1} rows, pairs={len(self.indices)})"

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

    def add(self, user_rows: np.ndarray, item_rows: np.ndarray, n_user_rows: int) -> SeenItems:
        """A new SeenItems with these pairs added, sized for ``n_user_rows`` user rows."""
        n_old = len(self.indptr) - 1
        old_u = np.repeat(np.arange(n_old, dtype=np.int64), np.diff(self.indptr))
        return SeenItems.from_rows(
            np.concatenate([old_u, np.asarray(user_rows, np.int64)]),
            np.concatenate([self.indices.astype(np.int64), np.asarray(item_rows, np.int64)]),
            max(n_user_rows, n_old),
        )

    def _save(self, directory: Path, n_user_rows: int) -> dict:
        indptr = self.indptr
        if len(indptr) - 1 < n_user_rows:  # users added since: they have seen nothing
            indptr = np.concatenate([indptr, np.full(n_user_rows + 1 - len(indptr), indptr[-1])])
        np.save(directory / self.INDPTR_FILE, indptr, allow_pickle=False)
        np.save(directory / self.INDICES_FILE, self.indices, allow_pickle=False)
        return {"indptr": self.INDPTR_FILE, "indices": self.INDICES_FILE, "n_pairs": int(len(self.indices))}

    @classmethod
    def _load(cls, directory: Path, users: IdRegistry, items: IdRegistry) -> SeenItems:
        try:
            indptr = np.load(directory / cls.INDPTR_FILE, allow_pickle=False)
            indices = np.load(directory / cls.INDICES_FILE, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{directory}: seen items unreadable ({exc})") from None
        if indptr.dtype != np.int64 or indices.dtype != np.int32:
            raise ArtifactError(f"{directory / cls.INDPTR_FILE}: expected int64 indptr and int32 items, found {indptr.dtype} and {indices.dtype}")
        if len(indptr) != users.n_rows + 1:
            raise ArtifactError(f"{directory / cls.INDPTR_FILE}: {len(indptr) - 1} user rows, the registry has {users.n_rows}")
        if len(indices) and (indices.min() < 1 or indices.max() >= items.n_rows):
            raise ArtifactError(f"{directory / cls.INDICES_FILE}: item rows outside 1..{len(items)}")
        try:
            return cls(indptr, indices)
        except ValueError as exc:
            raise ArtifactError(f"{directory / cls.INDPTR_FILE}: {exc}") from None


# --- the index --------------------------------------------------------------------------------


@dataclass
class _Part:
    """One FAISS index over one side of the model.

    ``max_norm2`` is set for an approximate (HNSW or IVF) ``"recommend"`` part, searched by L2
    after the MIPS-to-L2 reduction: every stored vector ``x = [q_i, b_i]`` gets one more coordinate
    ``sqrt(max_norm2 - |x|^2)``, so all have norm ``sqrt(max_norm2)`` and, for a query
    ``[p_u, 1, 0]``, ``|x - q|^2 = max_norm2 + |q|^2 - 2 <x, q>``: nearest in L2 is largest in
    inner product, exactly (Bachrach et al., RecSys 2014). HNSW and IVF find far better
    neighbours in that metric space than by raw inner product, where long vectors dominate.
    """

    name: str
    kind: str
    index: Any  # faiss.Index
    checksum: Any  # running hashlib object over the raw model rows [weight, bias] it holds
    max_norm2: float | None = None

    @property
    def side(self) -> str:
        return PARTS[self.name]


class _RowLookup:
    """Raw ID -> registry row by binary search over the IDs sorted once (valid while the registry
    keeps its length: registries only ever grow by appending)."""

    def __init__(self, registry: IdRegistry):
        ids = registry.ids
        self.registry = registry
        self.n = len(ids)
        self.order = np.argsort(ids, kind="stable")
        self.sorted = ids[self.order]

    def rows(self, arr: np.ndarray) -> np.ndarray:
        """(n,) int64 rows of validated raw IDs of the registry's kind; 0 for unseen ones."""
        if self.n == 0 or len(arr) == 0:
            return np.zeros(len(arr), dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.sorted, arr), self.n - 1)
        hit = self.sorted[pos] == arr
        return np.where(hit, self.order[pos] + 1, 0).astype(np.int64)


class SimilarityIndex:
    """FAISS search over a model's vectors, by raw ID.

    Args:
        model: a fitted :class:`~collabemb.models.EmbeddingDotBias` (or see :meth:`from_vectors`).
        kind: ``"exact"`` (``IndexFlatIP``), ``"hnsw"`` (``IndexHNSWFlat``, inner product) or
            ``"ivf"`` (``IndexIVFFlat``, inner product); default per part: exact up to
            ``exact_max`` vectors, HNSW above.
        metric: ``"cosine"`` or ``"dot"`` for :meth:`similar_items` / :meth:`similar_users`.
            :meth:`recommend` always ranks by the model's predicted rating.
        hnsw_m, ef_construction, ef_search: HNSW graph degree and beam widths; the search beam
            is ``max(ef_search, number fetched)``, so never below k.
        nlist, nprobe: IVF lists (default ``4 * sqrt(n)``, at most ``n / 39``) and lists probed
            per query (default ``max(8, nlist // 16)``).
        threads: FAISS (OpenMP) threads during builds and searches; default: FAISS's own
            setting (all cores). FAISS's thread count is process-wide: it is set for each call
            and restored afterwards.
        seed: IVF k-means seed.
        exact_max: largest part that gets ``kind="exact"`` by default.

    Each part (``"items"``, ``"users"``, ``"recommend"``) is built on first use or by
    :meth:`build`. The index copies the vectors into FAISS: retrain the model and the index is
    stale (saving then refuses it). Fold-ins with ``add=True`` extend ``model.index``.
    """

    def __init__(
        self,
        model: EmbeddingDotBias,
        *,
        kind: Kind | None = None,
        metric: Metric = "cosine",
        hnsw_m: int = HNSW_M,
        ef_construction: int = HNSW_EF_CONSTRUCTION,
        ef_search: int = HNSW_EF_SEARCH,
        nlist: int | None = None,
        nprobe: int | None = None,
        threads: int | None = None,
        seed: int = 0,
        exact_max: int = EXACT_MAX_DEFAULT,
    ):
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)} (or None for a default by size), got {kind!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be 'cosine' or 'dot', got {metric!r}")
        for name, value in (("hnsw_m", hnsw_m), ("ef_construction", ef_construction), ("ef_search", ef_search)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.model = model
        self.kind = kind
        self.metric = metric
        self.hnsw_m = int(hnsw_m)
        self.ef_construction = int(ef_construction)
        self.ef_search = int(ef_search)
        self.nlist = nlist
        self.nprobe = nprobe
        self.threads = threads
        self.seed = int(seed)
        self.exact_max = int(exact_max)
        #: False when built by :meth:`from_vectors`: row 0 is then zeros, not a trained slot.
        self.has_unknown_slot = True
        self._parts: dict[str, _Part] = {}
        self._lookups: dict[str, _RowLookup] = {}
        self._meta_key: tuple | None = None
        self._meta: dict[str, np.ndarray] = {}

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def from_vectors(
        cls,
        item_ids,
        item_vectors: np.ndarray,
        *,
        item_bias: np.ndarray | None = None,
        user_ids=None,
        user_vectors: np.ndarray | None = None,
        user_bias: np.ndarray | None = None,
        y_range: tuple[float, float] | None = None,
        item_metadata: pd.DataFrame | None = None,
        **kwargs,
    ) -> SimilarityIndex:
        """An index over exported vectors instead of a fitted model.

        Args:
            item_ids: (n_items,) raw IDs, aligned with ``item_vectors`` (any order, no repeats).
            item_vectors: (n_items, k) float vectors; ``item_bias`` optional (n_items,).
            user_ids, user_vectors, user_bias: the same for users (needed by :meth:`similar_users`
                and :meth:`recommend`).
            y_range: the model's rating range, for :meth:`recommend` scores to be its predicted
                ratings; default None scores by ``<p_u, q_i> + b_u + b_i``.
            item_metadata: optional DataFrame with an ``item`` column, joined onto results.
            kwargs: as for the constructor.

        There is no trained unknown slot: ``fallback="unknown_slot"`` is refused.
        """
        from collabemb.models import EmbeddingDotBias

        item_ids_arr, item_vectors, item_bias = _check_vectors(item_ids, item_vectors, item_bias, "item")
        if user_ids is None:
            if user_vectors is not None:
                raise ValueError("user_vectors given without user_ids")
            user_ids_arr, user_vectors, user_bias = np.empty(0, np.int64), np.zeros((0, item_vectors.shape[1]), np.float32), np.zeros(0, np.float32)
        else:
            user_ids_arr, user_vectors, user_bias = _check_vectors(user_ids, user_vectors, user_bias, "user")
            if user_vectors.shape[1] != item_vectors.shape[1]:
                raise ValueError(f"user vectors have {user_vectors.shape[1]} columns, item vectors {item_vectors.shape[1]}")
        users = IdRegistry(user_ids_arr, name="user")
        items = IdRegistry(item_ids_arr, name="item")
        model = EmbeddingDotBias(users, items, n_factors=item_vectors.shape[1], y_range=y_range)
        with torch.no_grad():
            for reg, ids, vec, bias, w, b in (
                (users, user_ids_arr, user_vectors, user_bias, model.u_weight, model.u_bias),
                (items, item_ids_arr, item_vectors, item_bias, model.i_weight, model.i_bias),
            ):
                w.weight.zero_()
                b.weight.zero_()
                if len(ids):
                    rows = torch.from_numpy(reg.encode(ids))
                    w.weight[rows] = torch.from_numpy(vec)
                    b.weight[rows, 0] = torch.from_numpy(bias)
        if item_metadata is not None:
            model.set_item_metadata(item_metadata)
        index = cls(model, **kwargs)
        index.has_unknown_slot = False
        return index

    def build(self, *parts: str) -> SimilarityIndex:
        """Build the named parts now (default: ``"items"`` and ``"recommend"``); returns self.

        Parts already built are left as they are.
        """
        for name in parts or ("items", "recommend"):
            self._part(name)
        return self

    @property
    def parts(self) -> dict[str, str]:
        """The parts built so far and their kind, e.g. ``{"items": "hnsw"}``."""
        return {name: part.kind for name, part in self._parts.items()}

    def __repr__(self) -> str:
        built = ", ".join(f"{name}: {part.kind} ({part.index.ntotal})" for name, part in self._parts.items()) or "none yet"
        return f"SimilarityIndex(metric={self.metric!r}, parts built: {built})"

    # --- queries -------------------------------------------------------------------------------
    def similar_items(
        self, ids, k: int = 10, *, exclude_self: bool = True, exclude=None, fallback: Fallback = None, like: Mapping | None = None
    ) -> pd.DataFrame:
        """The k items most similar to each query item, by raw ID, in one batched search.

        Args:
            ids: one raw item ID or a sequence of them.
            k: results per query (fewer only when the catalogue has fewer eligible items).
            exclude_self: leave each query item out of its own results.
            exclude: raw item IDs never to return (for every query); unseen ones are ignored.
            fallback: ``None`` raises :class:`~collabemb.registry.UnknownIdError` for an unseen
                query ID; ``"unknown_slot"`` answers it with the trained unknown item (row 0).
            like: ``{unseen_id: [known item IDs]}``: an unseen query ID listed here is answered
                from the mean of those items' vectors (and, with ``exclude_self``, they are left
                out of its results), before any fallback.

        Returns:
            DataFrame, ``k`` rows per query in query order: ``query`` (raw ID), ``item`` (raw ID),
            ``score`` (float32 cosine similarity or dot product), ``rank`` (1..k), ``source``
            (``"known"``, ``"mean_of_items"`` or ``"unknown_slot"``), then the item metadata
            columns, if any.
        """
        return self._similar("items", ids, k, exclude_self=exclude_self, exclude=exclude, fallback=fallback, like=like)

    def similar_users(self, ids, k: int = 10, *, exclude_self: bool = True, exclude=None, fallback: Fallback = None) -> pd.DataFrame:
        """The k users most similar to each query user; as :meth:`similar_items`, with a ``user`` column."""
        return self._similar("users", ids, k, exclude_self=exclude_self, exclude=exclude, fallback=fallback)

    def recommend(
        self,
        users,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        seen: Ratings | pd.DataFrame | SeenItems | None = None,
        exclude=None,
        fallback: Fallback = None,
    ) -> pd.DataFrame:
        """Top-k items for each user, in the order of the model's predicted rating.

        Args:
            users: one raw user ID or a sequence of them (one batched search); None for one
                anonymous user with no history, answered by the trained unknown user (row 0).
            k: items per user.
            exclude_seen: leave out the items each user rated in training, taken from ``seen``
                or else from ``model.seen_items`` (set by ``model.set_seen_items(train)``, saved
                with the model); without either this raises rather than silently recommending
                items the user already rated.
            seen: the training ratings (or a :class:`SeenItems`) to take seen items from.
            exclude: raw item IDs never to recommend (for every user).
            fallback: ``None`` raises for an unseen user; ``"unknown_slot"`` ranks items for the
                trained unknown user (row 0): the no-history answer.

        Returns:
            DataFrame, ``k`` rows per user: ``user``, ``item``, ``score`` (float32 predicted rating,
            as :meth:`EmbeddingDotBias.predict`), ``rank``, ``source`` (``"known"`` or
            ``"unknown_slot"``), then the item metadata columns, if any. For a model with
            ``y_range=None`` (implicit feedback) the score is ``<p_u, q_i> + b_u + b_i``.
        """
        model = self.model
        if users is None:
            query_ids, rows = np.array([None], dtype=object), np.array([UNKNOWN_ROW])
            fallback = "unknown_slot"
        else:
            query_ids, rows = self._query_ids(model.users, users)
        self._check_unknown(model.users, query_ids, rows == UNKNOWN_ROW, fallback)
        source = np.where(rows == UNKNOWN_ROW, "unknown_slot", "known").astype(object)
        pairs = None
        if exclude_seen and (rows != UNKNOWN_ROW).any():  # the unknown user has seen nothing
            pairs = self._seen(seen).items_of(rows)
        p, bu = _table_rows(model, "user", rows)
        return self._recommend_vectors(p, bu, query_ids, k, source, pairs=pairs, exclude=exclude)

    def recommend_from_ratings(
        self,
        ratings: Ratings | pd.DataFrame | str | os.PathLike,
        k: int = 10,
        *,
        exclude_rated: bool = True,
        exclude=None,
        add: bool = False,
        **fold_kwargs,
    ) -> pd.DataFrame:
        """Recommendations for new users described only by a few ratings (fold-in).

        Each user's vector and bias are solved with the items fixed
        (:func:`collabemb.coldstart.fold_in_users`); a user none of whose items the model knows
        gets the unknown slot. ``ratings`` has ``item`` and ``rating`` columns and, for several
        users (or with ``add=True``), a ``user`` column.

        Returns:
            As :meth:`recommend`; ``source`` is ``"fold_in"`` or ``"unknown_slot"``.
        """
        from collabemb.coldstart import fold_in_users

        fold = fold_in_users(self.model, ratings, add=add, index=self, **fold_kwargs)
        pairs = (fold.rated_query, fold.rated_rows) if exclude_rated else None
        ids = fold.ids if fold.ids is not None else np.array([None], dtype=object)
        return self._recommend_vectors(fold.vectors, fold.biases, ids, k, fold.source.astype(object), pairs=pairs, exclude=exclude)

    # --- internals: queries ---------------------------------------------------------------------
    def _similar(self, part_name: str, ids, k: int, *, exclude_self: bool, exclude, fallback: Fallback, like: Mapping | None = None) -> pd.DataFrame:
        side = PARTS[part_name]
        registry = _registry(self.model, side)
        part = self._part(part_name)
        query_ids, rows = self._query_ids(registry, ids)
        vectors, _ = _table_rows(self.model, side, rows)
        source = np.where(rows == UNKNOWN_ROW, "unknown_slot", "known").astype(object)
        described = np.zeros(len(rows), dtype=bool)
        pairs = None
        if like:  # unseen items described by known ones: the mean of their vectors
            from collabemb.coldstart import fold_in_items_like

            keys = [v.item() if isinstance(v, np.generic) else v for v in query_ids.tolist()]
            wanted = {key: like[key] for key, row in zip(keys, rows, strict=True) if row == UNKNOWN_ROW and key in like}
            if wanted:
                fold = fold_in_items_like(self.model, wanted)
                position = {key: n for n, key in enumerate(wanted)}
                pair_q, pair_rows = [], []
                for j, key in enumerate(keys):
                    if rows[j] == UNKNOWN_ROW and key in position:
                        n = position[key]
                        vectors[j], source[j], described[j] = fold.vectors[n], "mean_of_items", True
                        pair_rows.append(fold.rated_rows[fold.rated_query == n])
                        pair_q.append(np.full(len(pair_rows[-1]), j, dtype=np.int64))
                if exclude_self:  # the describing items are the query's "self"
                    pairs = (np.concatenate(pair_q), np.concatenate(pair_rows))
        self._check_unknown(registry, query_ids, (rows == UNKNOWN_ROW) & ~described, fallback)
        q = self._prepare(vectors)
        self_rows = rows if exclude_self else None
        global_rows = self._global_exclude(exclude, registry)
        found, scores = self._search(part, q, k, self_rows=self_rows, pairs=pairs, global_rows=global_rows)
        return self._frame(query_ids, found, scores, side, source)

    def _recommend_vectors(self, p: np.ndarray, bu: np.ndarray, query_ids: np.ndarray, k: int, source: np.ndarray, *, pairs, exclude) -> pd.DataFrame:
        part = self._part("recommend")
        q = np.zeros((len(p), p.shape[1] + (1 if part.max_norm2 is None else 2)), dtype=np.float32)
        q[:, : p.shape[1]] = p
        q[:, p.shape[1]] = 1.0  # pairs with the item bias; the lifted coordinate (if any) stays 0
        global_rows = self._global_exclude(exclude, self.model.items)
        found, ip = self._search(part, q, k, pairs=pairs, global_rows=global_rows)
        if part.max_norm2 is not None:  # L2 distances came back: score the candidates exactly
            found, ip = self._rescore(p, found)
        logits = ip.astype(np.float64) + np.asarray(bu, np.float64)[:, None]
        if self.model.y_range is None:  # identity link (implicit-feedback models): the score itself
            score = logits.astype(np.float32)
        else:
            lo, hi = self.model.y_range
            score = (lo + (hi - lo) * expit(logits)).astype(np.float32)
        return self._frame(np.asarray(query_ids), found, score, "item", source, query_col="user")

    def _rescore(self, p: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``<p_u, q_i> + b_i`` (float64) of the found rows, each query's results re-sorted by it.

        Empty slots (row 0) get -inf and stay at the end.
        """
        w, b = _table_rows(self.model, "item", found.ravel())
        ip = np.einsum("qkd,qd->qk", w.reshape(*found.shape, -1).astype(np.float64), p.astype(np.float64)) + b.reshape(found.shape)
        ip[found == UNKNOWN_ROW] = -np.inf
        order = np.argsort(-ip, axis=1, kind="stable")
        return np.take_along_axis(found, order, axis=1), np.take_along_axis(ip, order, axis=1)

    def _query_ids(self, registry: IdRegistry, ids) -> tuple[np.ndarray, np.ndarray]:
        """Query raw IDs as an array (one ID or many) and their rows (0 where unseen).

        Validated as :meth:`IdRegistry.encode` does (kinds never coerced); looked up by binary
        search over a sorted copy of the registry's IDs, which keeps a single query cheap.
        """
        if type(ids) is int and registry.kind == "int" and -(2**63) <= ids < 2**63:
            arr = np.array([ids], dtype=np.int64)  # the common single-ID case, without pandas
        elif type(ids) is str and registry.kind == "str":
            arr = np.array([ids], dtype=object)
        else:
            if isinstance(ids, str | bytes | int | np.integer):
                ids = [ids]
            arr, kind = id_kind_of(ids, what=f"query {registry.name} IDs")
            if len(arr) and kind != registry.kind:
                registry.encode(arr)  # raises the registry's own TypeError ('7' and 7 differ)
        return arr, self._lookup(registry).rows(arr)

    def _lookup(self, registry: IdRegistry) -> _RowLookup:
        found = self._lookups.get(registry.name)
        if found is None or found.registry is not registry or found.n != len(registry):
            found = self._lookups[registry.name] = _RowLookup(registry)
        return found

    def _check_unknown(self, registry: IdRegistry, query_ids: np.ndarray, missing: np.ndarray, fallback: Fallback) -> None:
        """Raise for unseen query IDs unless the unknown-slot fallback was asked for (and exists)."""
        if fallback not in (None, "unknown_slot"):
            raise ValueError(f"fallback must be None or 'unknown_slot', got {fallback!r}")
        if not missing.any():
            return
        if fallback is None:
            try:
                registry.encode(query_ids[missing], unknown="raise")
            except UnknownIdError as exc:
                raise UnknownIdError(
                    f"{exc}; the model has no vector for them. Pass fallback='unknown_slot' to answer with the "
                    f"trained unknown {registry.name} (row 0), or fold them in from ratings (collabemb.coldstart)"
                ) from None
        if not self.has_unknown_slot:
            raise ValueError(f"fallback='unknown_slot': this index was built from vectors and has no trained unknown {registry.name}")

    def _seen(self, seen) -> SeenItems:
        if isinstance(seen, SeenItems):
            return seen
        if seen is not None:
            return SeenItems.from_ratings(self.model, seen)
        if getattr(self.model, "seen_items", None) is not None:
            return self.model.seen_items
        raise ValueError(
            "exclude_seen=True needs the items each user rated in training, and the model holds none: "
            "call model.set_seen_items(train) once (it is saved with the model), pass seen=train, "
            "or pass exclude_seen=False"
        )

    def _global_exclude(self, exclude, registry: IdRegistry) -> np.ndarray | None:
        if exclude is None:
            return None
        if isinstance(exclude, str | bytes | int | np.integer):
            exclude = [exclude]
        rows = _encode_lenient(registry, exclude)
        rows = np.unique(rows[rows != UNKNOWN_ROW])
        return rows if len(rows) else None

    def _prepare(self, vectors: np.ndarray) -> np.ndarray:
        """Query vectors for the items/users parts: normalised for cosine."""
        q = np.ascontiguousarray(vectors, dtype=np.float32)
        return _normalised(q) if self.metric == "cosine" else q

    def _search(
        self,
        part: _Part,
        queries: np.ndarray,
        k: int,
        *,
        self_rows: np.ndarray | None = None,
        pairs: tuple[np.ndarray, np.ndarray] | None = None,
        global_rows: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows per query with exclusions filtered out, without losing results.

        Returns ``(rows, scores)``, both (nq, k): int64 registry rows (0 where fewer than k were
        found; results are packed at the front in rank order) and float32 inner products.
        """
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k = int(k)
        self._check_fresh(part)
        nq = len(queries)
        index = part.index
        ntotal = int(index.ntotal)
        out_rows = np.zeros((nq, k), dtype=np.int64)
        out_scores = np.zeros((nq, k), dtype=np.float32)
        if nq == 0 or ntotal == 0:
            return out_rows, out_scores
        need = np.full(nq, k, dtype=np.int64)
        if self_rows is not None:
            need += self_rows != UNKNOWN_ROW
        if global_rows is not None:
            need += len(global_rows)
        pair_keys = None
        stride = np.int64(_registry(self.model, part.side).n_rows + 1)
        if pairs is not None and len(pairs[0]):
            need += np.bincount(pairs[0], minlength=nq)
            pair_keys = np.unique(pairs[0].astype(np.int64) * stride + pairs[1])
        # fetch sizes rounded up to a power of two, so a batch splits into a few searches
        fetch = np.minimum(np.left_shift(1, np.ceil(np.log2(np.maximum(need, 1))).astype(np.int64)), ntotal)
        effort = np.zeros(nq, dtype=np.int64)  # doublings so far (for IVF: also of nprobe)
        pending = np.arange(nq)
        with self._threads():
            while len(pending):
                again = []
                if len(pending) == 1:  # the single-query path, without np.unique
                    groups = [(int(fetch[pending[0]]), int(effort[pending[0]]))]
                else:
                    groups = np.unique(np.stack([fetch[pending], effort[pending]], axis=1), axis=0).tolist()
                for f, e in groups:
                    sel = pending[(fetch[pending] == f) & (effort[pending] == e)]
                    dist, labels = index.search(queries[sel], f, params=self._params(part, f, e))
                    rows = labels.astype(np.int64) + 1  # label -1 (nothing found) becomes row 0
                    bad = rows == UNKNOWN_ROW
                    if self_rows is not None:
                        bad |= rows == self_rows[sel, None]
                    if global_rows is not None:
                        bad |= np.isin(rows, global_rows)
                    if pair_keys is not None:
                        keys = sel[:, None].astype(np.int64) * stride + rows
                        bad |= np.isin(keys, pair_keys)
                    good = ~bad
                    pos = np.cumsum(good, axis=1) - 1
                    take = good & (pos < k)
                    qi, col = np.nonzero(take)
                    out_rows[sel[qi], pos[qi, col]] = rows[qi, col]
                    out_scores[sel[qi], pos[qi, col]] = dist[qi, col]
                    short = good.sum(axis=1) < k
                    if (f < ntotal or self._can_probe_more(part, e)) and short.any():
                        retry = sel[short]
                        out_rows[retry] = 0
                        fetch[retry] = min(2 * f, ntotal)
                        effort[retry] = e + 1
                        again.append(retry)
                pending = np.concatenate(again) if again else np.empty(0, np.int64)
        return out_rows, out_scores

    def _params(self, part: _Part, fetch: int, effort: int):
        import faiss

        if part.kind == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=max(self.ef_search, fetch))
        if part.kind == "ivf":
            return faiss.SearchParametersIVF(nprobe=min(part.index.nlist, self._nprobe(part) << effort))
        return None

    def _nprobe(self, part: _Part) -> int:
        return int(self.nprobe) if self.nprobe else min(int(part.index.nlist), max(8, int(part.index.nlist) // 16))

    def _can_probe_more(self, part: _Part, effort: int) -> bool:
        return part.kind == "ivf" and (self._nprobe(part) << effort) < part.index.nlist

    def _frame(self, query_ids: np.ndarray, rows: np.ndarray, scores: np.ndarray, side: str, source: np.ndarray, *, query_col: str = "query") -> pd.DataFrame:
        registry = _registry(self.model, side)
        valid = rows != UNKNOWN_ROW
        qi, rank = np.nonzero(valid)
        flat = rows[valid]
        out = {
            query_col: query_ids[qi],
            side: registry.decode(flat),
            "score": scores[valid],
            "rank": (rank + 1).astype(np.int64),
            "source": source[qi],
        }
        if side == "item":
            for col, values in self._aligned_metadata().items():
                if col not in out:
                    out[col] = values[flat]
        return pd.DataFrame(out)

    def _aligned_metadata(self) -> dict[str, np.ndarray]:
        """Item metadata columns as arrays indexed by registry row (missing rows: NA), cached."""
        meta = getattr(self.model, "item_metadata", None)
        if meta is None:
            return {}
        key = (meta, len(meta), len(self.model.items))
        if self._meta_key is None or key[0] is not self._meta_key[0] or key[1:] != self._meta_key[1:]:
            items = self.model.items
            pos = np.full(items.n_rows, -1, dtype=np.int64)
            rows = _encode_lenient(items, meta["item"])
            known = rows != UNKNOWN_ROW
            pos[rows[known]] = np.flatnonzero(known)
            self._meta = {
                str(col): pd.api.extensions.take(meta[col].to_numpy(), pos, allow_fill=True)
                for col in meta.columns
                if col != "item"
            }
            self._meta_key = key
        return self._meta

    # --- internals: building ---------------------------------------------------------------------
    def _part(self, name: str) -> _Part:
        if name not in PARTS:
            raise ValueError(f"unknown part {name!r}; expected one of {', '.join(PARTS)}")
        part = self._parts.get(name)
        if part is None:
            part = self._build_part(name)
            self._parts[name] = part
        return part

    def _kind_for(self, n: int) -> str:
        return self.kind or ("exact" if n <= self.exact_max else "hnsw")

    def _faiss_input(self, name: str, rows: np.ndarray, max_norm2: float | None = None) -> np.ndarray:
        """(m, d) float32 contiguous vectors FAISS stores for registry rows ``rows`` of a part."""
        w, b = _table_rows(self.model, PARTS[name], rows)
        if name != "recommend":
            return self._prepare(w)
        extra = 0 if max_norm2 is None else 1
        out = np.zeros((len(w), w.shape[1] + 1 + extra), dtype=np.float32)
        out[:, : w.shape[1]] = w
        out[:, w.shape[1]] = b
        if max_norm2 is not None:
            norm2 = np.einsum("ij,ij->i", out, out, dtype=np.float64)
            out[:, -1] = np.sqrt(np.maximum(max_norm2 - norm2, 0.0))
        return out

    def _recommend_max_norm2(self, n: int) -> float:
        """Squared norm every vector of an approximate recommend part is lifted to: twice the largest
        ``|[q_i, b_i]|^2``, so that items folded in later fit without a rebuild."""
        biggest = 0.0
        for start in range(1, n + 1, _CHUNK):
            w, b = _table_rows(self.model, "item", np.arange(start, min(start + _CHUNK, n + 1)))
            biggest = max(biggest, float(np.max(np.einsum("ij,ij->i", w, w, dtype=np.float64) + b.astype(np.float64) ** 2)))
        return 2.0 * biggest if biggest > 0 else 1.0

    def _build_part(self, name: str) -> _Part:
        import faiss

        side = PARTS[name]
        n = len(_registry(self.model, side))
        if n == 0:
            raise ValueError(f"the model has no {side}s to index")
        kind = self._kind_for(n)
        max_norm2 = self._recommend_max_norm2(n) if name == "recommend" and kind != "exact" else None
        d = self.model.n_factors + (0 if name != "recommend" else 1 if max_norm2 is None else 2)
        # the metric is always explicit (FAISS's HNSW and IVF default to L2): inner product, or
        # L2 for an approximate recommend part after the MIPS-to-L2 lift (see _Part)
        metric = faiss.METRIC_INNER_PRODUCT if max_norm2 is None else faiss.METRIC_L2
        with self._threads():
            if kind == "exact":
                index = faiss.IndexFlatIP(d)
            elif kind == "hnsw":
                index = faiss.IndexHNSWFlat(d, self.hnsw_m, metric)
                index.hnsw.efConstruction = self.ef_construction
                index.hnsw.efSearch = self.ef_search
            else:
                nlist = self.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
                quantizer = faiss.IndexFlatIP(d) if max_norm2 is None else faiss.IndexFlatL2(d)
                index = faiss.IndexIVFFlat(quantizer, d, int(nlist), metric)
                index.cp.seed = self.seed
                sample = np.random.default_rng(self.seed).choice(n, size=min(n, 256 * int(nlist)), replace=False) + 1
                index.train(self._faiss_input(name, np.sort(sample), max_norm2))
            checksum = _new_checksum()
            for start in range(1, n + 1, 4 * _CHUNK):
                stop = min(start + 4 * _CHUNK, n + 1)
                index.add(self._faiss_input(name, np.arange(start, stop), max_norm2))
                _update_checksum(checksum, self.model, side, start, stop)
        return _Part(name, kind, index, checksum, max_norm2)

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        if self.threads is None:
            yield
            return
        import faiss

        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.threads)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(before)

    def _check_fresh(self, part: _Part) -> None:
        n = len(_registry(self.model, part.side))
        if part.index.ntotal != n:
            raise StaleIndexError(
                f"the {part.name!r} index holds {part.index.ntotal} {part.side}s but the model now has {n}: "
                f"IDs were added without extending the index (fold-ins with add=True extend model.index); "
                f"rebuild it with model.build_index()"
            )

    def _append(self, side: str, rows: np.ndarray) -> None:
        """Add the model's rows ``rows`` (just appended to its registry and tables) to the built parts."""
        rows = np.asarray(rows, dtype=np.int64)
        for name, part in list(self._parts.items()):
            if part.side != side:
                continue
            start = int(part.index.ntotal) + 1
            if not np.array_equal(rows, np.arange(start, start + len(rows))):
                raise StaleIndexError(f"the {name!r} index holds {part.index.ntotal} {side}s; cannot append rows {rows[:3].tolist()}")
            new = self._faiss_input(name, rows, part.max_norm2)
            if part.max_norm2 is not None:
                w, b = _table_rows(self.model, side, rows)
                if np.max(np.einsum("ij,ij->i", w, w, dtype=np.float64) + b.astype(np.float64) ** 2) > part.max_norm2:
                    # longer than the lifted norm: the reduction would be wrong for it, so rebuild
                    warnings.warn(f"a new item is longer than the {name!r} {part.kind} index allows for; rebuilding it", stacklevel=3)
                    self._parts[name] = self._build_part(name)
                    continue
            with self._threads():
                part.index.add(new)
            _update_checksum(part.checksum, self.model, side, start, start + len(rows))

    # --- persistence -------------------------------------------------------------------------------
    def _save(self, directory: Path) -> dict:
        """Write the built parts into an artifact directory; returns the config entry."""
        import faiss

        parts = {}
        model_sums: dict[str, str] = {}
        fingerprints: dict[str, str] = {}
        for name, part in self._parts.items():
            self._check_fresh(part)
            side = part.side
            if side not in model_sums:
                model_sums[side] = _model_checksum(self.model, side)
            if part.checksum.hexdigest() != model_sums[side]:
                raise StaleIndexError(
                    f"the model's {side} vectors changed after its {name!r} index was built; "
                    f"rebuild it (model.build_index()) or drop it (model.index = None) before saving"
                )
            file = f"index-{name}.faiss"
            faiss.write_index(part.index, str(directory / file))
            parts[name] = {
                "file": file,
                "kind": part.kind,
                "ntotal": int(part.index.ntotal),
                "dim": int(part.index.d),
                "registry_fingerprint": fingerprints.setdefault(side, _registry(self.model, side).fingerprint()),
                "vector_checksum": model_sums[side],
                "max_norm2": part.max_norm2,
            }
        return {
            "metric": self.metric,
            "params": {
                "kind": self.kind, "hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction,
                "ef_search": self.ef_search, "nlist": self.nlist, "nprobe": self.nprobe, "seed": self.seed,
                "exact_max": self.exact_max,
            },
            "has_unknown_slot": self.has_unknown_slot,
            "parts": parts,
        }

    @classmethod
    def _load(cls, model: EmbeddingDotBias, directory: Path, config: dict) -> SimilarityIndex:
        """Read the parts saved by :meth:`_save`, refusing any that do not match ``model``."""
        import faiss

        try:
            index = cls(model, metric=config["metric"], **config.get("params", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{directory / 'config.json'}: bad index entry ({exc})") from None
        index.has_unknown_slot = bool(config.get("has_unknown_slot", True))
        hashers: dict[str, Any] = {}  # per side: the running checksum of the model's rows
        fingerprints: dict[str, str] = {}
        for name, entry in config.get("parts", {}).items():
            if name not in PARTS:
                raise ArtifactError(f"{directory / 'config.json'}: unknown index part {name!r}")
            side = PARTS[name]
            registry = _registry(model, side)
            path = directory / f"index-{name}.faiss"  # never a path taken from the config
            fingerprint = fingerprints.setdefault(side, registry.fingerprint())
            if entry.get("registry_fingerprint") != fingerprint:
                raise StaleIndexError(
                    f"{path}: built for another {side} registry (fingerprint {entry.get('registry_fingerprint')}, "
                    f"this artifact's is {fingerprint}); the index is stale or was copied from another "
                    f"artifact: rebuild it with model.build_index()"
                )
            if side not in hashers:
                hashers[side] = _new_checksum()
                _update_checksum(hashers[side], model, side, 1, len(registry) + 1)
            if entry.get("vector_checksum") != hashers[side].hexdigest():
                raise StaleIndexError(
                    f"{path}: built from other {side} vectors than this artifact's (checksum differs); the index is "
                    f"stale or was copied from another artifact: rebuild it with model.build_index()"
                )
            if not path.is_file():
                raise ArtifactError(f"{path}: missing")
            try:
                faiss_index = faiss.read_index(str(path))
            except RuntimeError as exc:
                raise ArtifactError(f"{path}: unreadable FAISS index ({str(exc).splitlines()[0]})") from None
            kind = entry.get("kind")
            expected_type = {"exact": faiss.IndexFlatIP, "hnsw": faiss.IndexHNSWFlat, "ivf": faiss.IndexIVFFlat}.get(kind)
            if expected_type is None or not isinstance(faiss_index, expected_type):
                raise ArtifactError(f"{path}: a {type(faiss_index).__name__}, expected kind {kind!r}")
            lifted = name == "recommend" and kind != "exact"
            max_norm2 = entry.get("max_norm2")
            if lifted != isinstance(max_norm2, float):
                raise ArtifactError(f"{path}: max_norm2 {max_norm2!r} does not fit a {kind} {name!r} index")
            metric = faiss.METRIC_L2 if lifted else faiss.METRIC_INNER_PRODUCT
            if faiss_index.metric_type != metric:
                raise ArtifactError(f"{path}: FAISS metric {faiss_index.metric_type}, expected {'L2' if lifted else 'inner product'}")
            dim = model.n_factors + (0 if name != "recommend" else 2 if lifted else 1)
            if faiss_index.d != dim or faiss_index.ntotal != len(registry):
                raise StaleIndexError(
                    f"{path}: holds {faiss_index.ntotal} vectors of dimension {faiss_index.d}, expected "
                    f"{len(registry)} of dimension {dim}: rebuild it with model.build_index()"
                )
            index._parts[name] = _Part(name, kind, faiss_index, hashers[side].copy(), max_norm2)
        return index


# --- helpers ------------------------------------------------------------------------------------


def _registry(model: EmbeddingDotBias, side: str) -> IdRegistry:
    return model.items if side == "item" else model.users


def _table_rows(model: EmbeddingDotBias, side: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) float32 vectors and (n,) float32 biases of registry rows (row 0: the unknown slot)."""
    w = (model.i_weight if side == "item" else model.u_weight).weight
    b = (model.i_bias if side == "item" else model.u_bias).weight
    idx = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=w.device)
    with torch.no_grad():
        vec = w.detach().index_select(0, idx).to("cpu", torch.float32).numpy()
        bias = b.detach().index_select(0, idx)[:, 0].to("cpu", torch.float32).numpy()
    return vec, bias


def _normalised(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; zero rows stay zero. float32, a new array."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x, dtype=np.float32), where=norms > 0).astype(np.float32, copy=False)


def _new_checksum():
    return hashlib.blake2b(digest_size=16)


def _update_checksum(h, model: EmbeddingDotBias, side: str, start: int, stop: int) -> None:
    """Feed rows ``start..stop-1`` of the side's [weight, bias] table (float32, row by row) to ``h``."""
    for s in range(start, stop, _CHUNK):
        w, b = _table_rows(model, side, np.arange(s, min(s + _CHUNK, stop)))
        h.update(np.ascontiguousarray(np.hstack([w, b[:, None]]), dtype=np.float32))


def _model_checksum(model: EmbeddingDotBias, side: str) -> str:
    h = _new_checksum()
    _update_checksum(h, model, side, 1, len(_registry(model, side)) + 1)
    return h.hexdigest()


def _encode_lenient(registry: IdRegistry, ids) -> np.ndarray:
    """Rows of IDs, 0 for unseen ones and for IDs of the other kind (e.g. str IDs in an int registry)."""
    arr, kind = id_kind_of(ids, what=f"{registry.name} IDs")
    if len(arr) and kind != registry.kind:
        if registry.kind == "str":
            arr = np.array([str(v) for v in arr.tolist()], dtype=object)
        else:
            return np.zeros(len(arr), dtype=np.int64)
    return registry.encode(arr)


def _check_vectors(ids, vectors, bias, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arr, _ = id_kind_of(ids, what=f"{side} IDs")
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(arr):
        raise ValueError(f"{side} vectors must be (n, k) with n = {len(arr)} {side} IDs, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError(f"{side} vectors hold a NaN or an infinity")
    if pd.Index(arr).has_duplicates:
        raise ValueError(f"{side} IDs repeat an ID")
    bias = np.zeros(len(arr), np.float32) if bias is None else np.asarray(bias, dtype=np.float32).reshape(-1)
    if len(bias) != len(arr):
        raise ValueError(f"{side} bias must have one value per ID ({len(arr)}), got {len(bias)}")
    return arr, vectors, bias


__all__ = ["SeenItems", "SimilarityIndex", "StaleIndexError"]

