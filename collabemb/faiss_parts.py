"""One FAISS index over one table of a model: build it, search it, extend it, turn it into bytes.

A :class:`Part` is what :class:`collabemb.index.SimilarityIndex` holds up to three of:

* ``"items"``: the item vectors, for similar items;
* ``"users"``: the user vectors, for similar users;
* ``"recommend"``: the item vectors with their bias appended, for recommendations.

FAISS label ``j`` is table row ``j + 1``: row 0, the unknown slot, is never indexed, so it is
never returned. The metric is always set explicitly (FAISS's HNSW and IVF default to L2): inner
product over L2-normalised vectors for ``metric="cosine"``, over the raw vectors for ``"dot"``.
Recommendations (:meth:`Part.recommend`) from an approximate part are what FAISS finds plus the
items of largest bias, scored exactly (see :class:`Part`). A part keeps a running checksum of the table rows it was built from, so a
model whose vectors changed after the build is caught (:class:`StaleIndexError`).

Bytes go through ``faiss.serialize_index`` (:meth:`Part.to_bytes`); :mod:`collabemb.faiss_files`
stores them and checks what it reads back against the model before it is searched.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from collabemb.model_view import TableSource
from collabemb.registry import UNKNOWN_ROW
from collabemb.schema import INDEX_PARAMS, INDEX_TYPES, METRICS, ArtifactError, check_arguments

IndexType = Literal["exact", "hnsw", "ivf"]
Metric = Literal["cosine", "dot"]

#: The parts an index may hold, and which table each one searches.
PARTS: dict[str, str] = {"items": "item", "users": "user", "recommend": "item"}
#: Parts with at most this many vectors get ``index_type="exact"`` by default, larger ones ``"hnsw"``.
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
_CHUNK = 1 << 16  # rows per chunk when hashing / lifting big tables
#: An approximate recommend part's candidates include this many items of largest bias (see :class:`Part`).
BIAS_CANDIDATES = 256


class StaleIndexError(ArtifactError):
    """An index that does not match the model it is used with.

    Raised when IDs were added to the model without extending its index, when a stored index
    was built from other vectors or another registry (stale, or copied from another artifact),
    or when the model's weights changed after the index was built.
    """


@dataclass(frozen=True)
class IndexSettings:
    """How parts are built and searched.

    Attributes:
        index_type: ``"exact"`` (``IndexFlatIP``), ``"hnsw"`` (``IndexHNSWFlat``) or ``"ivf"``
            (``IndexIVFFlat``); None: exact up to ``exact_max`` vectors, HNSW above.
        metric: ``"cosine"`` or ``"dot"`` for the items and users parts (the recommend part
            always ranks by ``<[p_u, 1], [q_i, b_i]>``).
        hnsw_m, ef_construction, ef_search: HNSW graph degree and beam widths; a search's beam
            is ``max(ef_search, number fetched)``, never below k.
        nlist, nprobe: IVF lists (default ``4 * sqrt(n)``, at most ``n / 39``) and lists probed
            per query (default ``max(8, nlist // 16)``).
        threads: FAISS (OpenMP) threads during builds and searches; None: FAISS's own setting.
            FAISS's thread count is process-wide: it is set for each call and restored after.
        seed: IVF k-means seed.
        exact_max: largest part that gets ``index_type="exact"`` by default.
    """

    index_type: IndexType | None = None
    metric: Metric = "cosine"
    hnsw_m: int = HNSW_M
    ef_construction: int = HNSW_EF_CONSTRUCTION
    ef_search: int = HNSW_EF_SEARCH
    nlist: int | None = None
    nprobe: int | None = None
    threads: int | None = None
    seed: int = 0
    exact_max: int = EXACT_MAX_DEFAULT

    def __post_init__(self) -> None:
        if self.index_type is not None and self.index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {', '.join(INDEX_TYPES)} (or None for a default by size), got {self.index_type!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be 'cosine' or 'dot', got {self.metric!r}")
        # the ranges an artifact's index entry may hold, so whatever is built can be stored and read back
        check_arguments({k: v for k, v in asdict(self).items() if k != "metric"}, INDEX_PARAMS)

    def params(self) -> dict:
        """The build and search settings an artifact records (all but ``metric`` and ``threads``)."""
        return {k: v for k, v in asdict(self).items() if k not in ("metric", "threads")}

    def index_type_for(self, n: int) -> str:
        return self.index_type or ("exact" if n <= self.exact_max else "hnsw")


@dataclass
class Part:
    """One FAISS index over one table of the model.

    A ``"recommend"`` part stores ``x = [q_i, b_i]`` and is searched with ``[p_u, 1]``: largest inner
    product, largest predicted rating. An HNSW one searches by that inner product; an IVF one (and an
    HNSW one stored before 2026-12) by L2 after the MIPS-to-L2 reduction, ``max_norm2`` set: every
    ``x`` gets one more coordinate ``sqrt(max_norm2 - |x|^2)``, so all have norm ``sqrt(max_norm2)``
    and, for a query ``[p_u, 1, 0]``, ``|x - q|^2 = max_norm2 + |q|^2 - 2 <x, q>`` (Bachrach et al.,
    RecSys 2014; IVF's k-means clusters need L2). Neither graph finds everything: the lifted one misses
    much when users' tastes, not item biases, decide their lists (the query lies far from every lifted
    vector), the inner-product one misses some of the items of large bias that many lists share.
    So :meth:`recommend` adds the :data:`BIAS_CANDIDATES` items of largest bias to what FAISS finds and
    scores them all exactly. Measured (200k generated items x 64, HNSW M=32, efSearch 256, recall@10):
    users of clustered tastes 0.81 lifted, 0.95 inner product, 0.975 with the bias candidates; users
    unrelated to the clusters 0.23 / 0.44 / 0.82; biases dominating (as after training on MovieLens)
    1.000 / 0.93 / 0.994.
    """

    name: str
    index_type: str
    index: Any  # faiss.Index
    checksum: Any  # running hashlib object over the table rows [weight, bias] it holds; None: see built_from
    settings: IndexSettings
    max_norm2: float | None = None
    built_from: str | None = None  # the checksum an artifact recorded, when ``checksum`` is not computed yet
    by_bias: tuple | None = field(default=None, repr=False, compare=False)  # (ntotal, rows, vectors, biases): see _bias_candidates

    @property
    def table(self) -> str:
        return PARTS[self.name]

    @property
    def lifted(self) -> bool:
        return self.max_norm2 is not None

    # --- building -------------------------------------------------------------------------------
    @classmethod
    def build(cls, name: str, model: TableSource, settings: IndexSettings) -> Part:
        """Build part ``name`` over the model's current table."""
        if name not in PARTS:
            raise ValueError(f"unknown part {name!r}; expected one of {', '.join(PARTS)}")
        table = PARTS[name]
        n = len(model.registry(table))
        if n == 0:
            raise ValueError(f"the model has no {table}s to index")
        weights, biases = model.tables(table)
        index_type = settings.index_type_for(n)
        max_norm2 = lift_norm2(weights[1:], biases[1:]) if lifts(name, index_type) else None
        dim = part_dim(name, model.n_factors, max_norm2 is not None)
        part = cls(name, index_type, None, new_checksum(), settings, max_norm2)
        with _faiss_threads(settings.threads):
            part.index = _empty_index(index_type, dim, max_norm2 is not None, settings, n)
            if index_type == "ivf":
                nlist = int(part.index.nlist)
                sample = np.random.default_rng(settings.seed).choice(n, size=min(n, 256 * nlist), replace=False) + 1
                part.index.train(part.faiss_input(weights, biases, np.sort(sample)))
            for start in range(1, n + 1, 4 * _CHUNK):
                stop = min(start + 4 * _CHUNK, n + 1)
                part.index.add(part.faiss_input(weights, biases, np.arange(start, stop)))
                update_checksum(part.checksum, weights, biases, start, stop)
        return part

    def faiss_input(self, weights: np.ndarray, biases: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(m, d) float32 contiguous vectors FAISS stores for table rows ``rows``."""
        w = weights[rows]
        if self.name != "recommend":
            return self.prepare(w)
        out = np.zeros((len(w), w.shape[1] + 1 + int(self.lifted)), dtype=np.float32)
        out[:, : w.shape[1]] = w
        out[:, w.shape[1]] = biases[rows]
        if self.lifted:
            norm2 = np.einsum("ij,ij->i", out, out, dtype=np.float64)
            out[:, -1] = np.sqrt(np.maximum(self.max_norm2 - norm2, 0.0))
        return out

    def prepare(self, vectors: np.ndarray) -> np.ndarray:
        """Query (or stored) vectors for the items / users parts: L2-normalised for cosine."""
        q = np.ascontiguousarray(vectors, dtype=np.float32)
        return _normalised(q) if self.settings.metric == "cosine" else q

    def recommend_queries(self, user_vectors: np.ndarray) -> np.ndarray:
        """(n, d) queries ``[p_u, 1]`` (and a 0 for the lifted coordinate) for the recommend part."""
        p = np.asarray(user_vectors, dtype=np.float32)
        q = np.zeros((len(p), p.shape[1] + 1 + int(self.lifted)), dtype=np.float32)
        q[:, : p.shape[1]] = p
        q[:, p.shape[1]] = 1.0  # pairs with the item bias
        return q

    # --- freshness and growth -------------------------------------------------------------------
    def check_fresh(self, model: TableSource) -> None:
        """Refuse a part that holds another number of rows than the model's table."""
        n = len(model.registry(self.table))
        if self.index.ntotal != n:
            raise StaleIndexError(
                f"the {self.name!r} index holds {self.index.ntotal} {self.table}s but the model now has {n}: "
                f"IDs were added without extending the index (fold-ins with add=True extend fitted.index); "
                f"rebuild it with collabemb.build_index(fitted)"
            )

    def extended(self, model: TableSource, rows: np.ndarray) -> Part:
        """This part with the model's rows ``rows`` (just appended to its table) added.

        Returns ``self`` grown in place, or a rebuilt part when a new item is longer than the
        lifted norm of an approximate recommend part allows for (the reduction would be wrong).
        """
        rows = np.sort(np.asarray(rows, dtype=np.int64))  # append_rows returns them in the order of the IDs given
        checksum = self.running_checksum(model)
        start = int(self.index.ntotal) + 1
        if not np.array_equal(rows, np.arange(start, start + len(rows))):
            raise StaleIndexError(
                f"the {self.name!r} index holds {self.index.ntotal} {self.table}s; cannot append rows {rows[:3].tolist()}"
            )
        weights, biases = model.tables(self.table)
        if self.lifted and len(rows):
            norm2 = np.einsum("ij,ij->i", weights[rows], weights[rows], dtype=np.float64) + biases[rows].astype(np.float64) ** 2
            if np.max(norm2) > self.max_norm2:
                warnings.warn(
                    f"a new item is longer than the {self.name!r} {self.index_type} index allows for; rebuilding it", stacklevel=4
                )
                return Part.build(self.name, model, self.settings)
        with _faiss_threads(self.settings.threads):
            self.index.add(self.faiss_input(weights, biases, rows))
        update_checksum(checksum, weights, biases, start, start + len(rows))
        return self

    def running_checksum(self, model: TableSource):
        """The checksum of the rows this part holds. A part read from a verified artifact computes it
        only now, from the model's rows, and refuses them if they differ from what was recorded."""
        if self.checksum is None:
            h = new_checksum()
            weights, biases = model.tables(self.table)
            update_checksum(h, weights, biases, 1, int(self.index.ntotal) + 1)
            if h.hexdigest() != self.built_from:
                raise StaleIndexError(
                    f"the model's {self.table} vectors changed after its {self.name!r} index was loaded; "
                    f"rebuild it (collabemb.build_index(fitted)) or drop it (fitted.index = None)"
                )
            self.checksum = h
        return self.checksum

    # --- search ---------------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        stride: int,
        self_rows: np.ndarray | None = None,
        pairs: tuple[np.ndarray, np.ndarray] | None = None,
        global_rows: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows per query with exclusions filtered out, without losing results.

        Exclusions (``self_rows[j]`` for query j, ``pairs`` of (query position, row), and
        ``global_rows`` for every query) are filtered after an over-fetch of k plus the number
        excluded; a query that still comes back short is searched again with a doubled fetch
        (and, for IVF, doubled nprobe). ``stride`` is larger than any row (the table's
        ``n_rows + 1``).

        Returns ``(rows, scores)``, both (nq, k): int64 table rows (0 where fewer than k were
        found; results are packed at the front in rank order) and float32 FAISS scores.
        """
        return self._search(queries, k, _Exclusions.of(len(queries), stride, self_rows, pairs, global_rows))

    def _search(self, queries: np.ndarray, k: int, excluded: _Exclusions) -> tuple[np.ndarray, np.ndarray]:
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k, nq, ntotal = int(k), len(queries), int(self.index.ntotal)
        out_rows = np.zeros((nq, k), dtype=np.int64)
        out_scores = np.zeros((nq, k), dtype=np.float32)
        if nq == 0 or ntotal == 0:
            return out_rows, out_scores
        need = k + excluded.counts(nq)
        # fetch sizes rounded up to a power of two, so a batch splits into a few searches
        fetch = np.minimum(np.left_shift(1, np.ceil(np.log2(np.maximum(need, 1))).astype(np.int64)), ntotal)
        effort = np.zeros(nq, dtype=np.int64)  # doublings so far (for IVF: also of nprobe)
        pending = np.arange(nq)
        with _faiss_threads(self.settings.threads):
            while len(pending):
                again = []
                for f, e in _groups(pending, fetch, effort):
                    sel = pending[(fetch[pending] == f) & (effort[pending] == e)]
                    dist, labels = self.index.search(queries[sel], f, params=self._params(f, e))
                    rows = labels.astype(np.int64) + 1  # label -1 (nothing found) becomes row 0
                    good = ~excluded.mask(sel, rows)
                    pos = np.cumsum(good, axis=1) - 1
                    qi, col = np.nonzero(good & (pos < k))
                    out_rows[sel[qi], pos[qi, col]] = rows[qi, col]
                    out_scores[sel[qi], pos[qi, col]] = dist[qi, col]
                    short = good.sum(axis=1) < k
                    if (f < ntotal or self._can_probe_more(e)) and short.any():
                        retry = sel[short]
                        out_rows[retry] = 0
                        fetch[retry] = min(2 * f, ntotal)
                        effort[retry] = e + 1
                        again.append(retry)
                pending = np.concatenate(again) if again else np.empty(0, np.int64)
        return out_rows, out_scores

    def _params(self, fetch: int, effort: int):
        import faiss

        if self.index_type == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=max(self.settings.ef_search, fetch))
        if self.index_type == "ivf":
            return faiss.SearchParametersIVF(nprobe=min(self.index.nlist, self._nprobe() << effort))
        return None

    def _nprobe(self) -> int:
        nlist = int(self.index.nlist)
        return int(self.settings.nprobe) if self.settings.nprobe else min(nlist, max(8, nlist // 16))

    def _can_probe_more(self, effort: int) -> bool:
        return self.index_type == "ivf" and (self._nprobe() << effort) < self.index.nlist

    def recommend(
        self,
        weights: np.ndarray,
        biases: np.ndarray,
        p: np.ndarray,
        k: int,
        *,
        pairs: tuple[np.ndarray, np.ndarray] | None = None,
        global_rows: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item rows of a recommend part by ``<p_u, q_i> + b_i``, exclusions as :meth:`search`'s.

        ``weights`` (n_item_rows, k) and ``biases`` (n_item_rows,): the item table; ``p`` (nq, k) float32
        user vectors. An approximate part's candidates, what FAISS finds plus the :data:`BIAS_CANDIDATES`
        items of largest bias, are scored exactly (float32, as FAISS's exact index scores). Returns
        ``(rows, scores)``, (nq, k): int64 rows (0 where fewer than k) and float64 inner products
        (-inf where fewer), best first.
        """
        excluded = _Exclusions.of(len(p), len(weights) + 1, None, pairs, global_rows)
        found, scores = self._search(self.recommend_queries(p), k, excluded)
        if self.index_type == "exact":
            return found, np.where(found == UNKNOWN_ROW, -np.inf, scores.astype(np.float64))
        if self.lifted:  # L2 distances came back: score the found items exactly
            w, b = weights[found.ravel()], biases[found.ravel()]
            scores = np.einsum("qkd,qd->qk", w.reshape(*found.shape, -1), p, dtype=np.float32) + b.reshape(found.shape)
        scores = np.where(found == UNKNOWN_ROW, -np.inf, scores)
        top, top_weights, top_biases = self._bias_candidates(weights, biases)
        extra = p @ top_weights.T + top_biases  # (nq, B) by BLAS
        if not (extra > scores[:, -1:]).any():  # none would make a top k: nothing to merge
            return found, scores.astype(np.float64)
        queries = np.arange(len(p))
        drop = excluded.mask(queries, top[None, :]) | (found[:, :, None] == top).any(axis=1)  # left out, or found by FAISS too
        extra[drop] = -np.inf
        scores = np.concatenate([scores, extra], axis=1).astype(np.float64)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        rows, scores = (
            np.concatenate([found, np.broadcast_to(top, extra.shape)], axis=1)[queries[:, None], order],
            scores[queries[:, None], order],
        )
        return np.where(np.isfinite(scores), rows, UNKNOWN_ROW), scores

    def _bias_candidates(self, weights: np.ndarray, biases: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The :data:`BIAS_CANDIDATES` items of largest bias among the rows this part holds: (B,) int64 rows, their
        (B, k) vectors and (B,) biases (float32 copies), cached until the part grows."""
        n = int(self.index.ntotal)
        if self.by_bias is None or self.by_bias[0] != n:
            b = np.asarray(biases[1 : n + 1])
            top = (np.argpartition(-b, BIAS_CANDIDATES)[:BIAS_CANDIDATES] if n > BIAS_CANDIDATES else np.arange(n)) + 1
            top = np.sort(top).astype(np.int64)
            self.by_bias = (n, top, np.ascontiguousarray(weights[top], dtype=np.float32), np.asarray(biases[top], dtype=np.float32))
        return self.by_bias[1:]

    def big_arrays(self) -> list[np.ndarray]:
        """numpy views (no copy) of the buffers a search reads at random: an HNSW part's vectors and graph, an
        exact part's vectors; none for IVF (its lists are many small buffers). For
        :func:`collabemb.huge_pages.use_huge_pages`; valid while this part's index lives."""
        import faiss

        index = faiss.downcast_index(self.index)
        if isinstance(index, faiss.IndexHNSW):
            vectors = [faiss.downcast_index(index.storage).codes, index.hnsw.neighbors]
        elif isinstance(index, faiss.IndexFlatCodes):
            vectors = [index.codes]
        else:
            return []
        return [faiss.rev_swig_ptr(v.data(), v.size()) for v in vectors if v.size()]

    # --- bytes ----------------------------------------------------------------------------------
    def to_bytes(self) -> np.ndarray:
        """The FAISS index as (n,) uint8 bytes (``faiss.serialize_index``)."""
        import faiss

        return faiss.serialize_index(self.index)

    def entry(self, model: TableSource, table_sum: str, fingerprint: str) -> dict:
        """The config entry of this part; refuses it when the model's table is not what it holds.

        ``table_sum`` is :func:`table_checksum` of the model's table, ``fingerprint`` its registry's.
        """
        self.check_fresh(model)
        if self.running_checksum(model).hexdigest() != table_sum:
            raise StaleIndexError(
                f"the model's {self.table} vectors changed after its {self.name!r} index was built; "
                f"rebuild it (collabemb.build_index(fitted)) or drop it (fitted.index = None) before saving"
            )
        return {
            "index_type": self.index_type,
            "ntotal": int(self.index.ntotal),
            "dim": int(self.index.d),
            "registry_fingerprint": fingerprint,
            "vector_checksum": table_sum,
            "max_norm2": self.max_norm2,
        }


# --- helpers ----------------------------------------------------------------------------------


def lifts(name: str, index_type: str) -> bool:
    """Whether a part built now of this name and index type is searched by L2 after the MIPS-to-L2 lift: an
    IVF recommend part (see :class:`Part`)."""
    return name == "recommend" and index_type == "ivf"


def part_dim(name: str, n_factors: int, lifted: bool) -> int:
    """Dimension of a part's vectors: k, or k + 1 (bias) for recommend, + 1 more when lifted."""
    return n_factors + (0 if name != "recommend" else 2 if lifted else 1)


def _normalised(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; zero rows stay zero. float32, a new array."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x, dtype=np.float32), where=norms > 0).astype(np.float32, copy=False)


def new_checksum():
    """The running checksum of a part's rows (BLAKE2b, 16 bytes)."""
    return hashlib.blake2b(digest_size=16)


def update_checksum(h, weights: np.ndarray, biases: np.ndarray, start: int, stop: int) -> None:
    """Feed table rows ``start..stop-1`` as float32 ``[weight, bias]`` rows, in order, to ``h``."""
    for s in range(start, stop, _CHUNK):
        e = min(s + _CHUNK, stop)
        h.update(np.ascontiguousarray(np.hstack([weights[s:e], biases[s:e, None]]), dtype=np.float32))


@contextlib.contextmanager
def _faiss_threads(threads: int | None) -> Iterator[None]:
    """Run FAISS on ``threads`` OpenMP threads inside the block (None: leave FAISS's setting)."""
    if threads is None:
        yield
        return
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def lift_norm2(vectors: np.ndarray, biases: np.ndarray) -> float:
    """Squared norm every vector of a lifted recommend part is lifted to: twice the largest ``|[q_i, b_i]|^2`` of
    (m, k) ``vectors`` and (m,) ``biases`` (a table's rows 1..n; 1.0 for none or all zero), so that items folded in
    later fit without a rebuild."""
    biggest = 0.0
    for start in range(0, len(vectors), _CHUNK):
        w, b = vectors[start : start + _CHUNK], biases[start : start + _CHUNK]
        biggest = max(biggest, float(np.max(np.einsum("ij,ij->i", w, w, dtype=np.float64) + np.asarray(b, np.float64) ** 2)))
    return 2.0 * biggest if biggest > 0 else 1.0


def _empty_index(index_type: str, dim: int, lifted: bool, settings: IndexSettings, n: int):
    """An empty FAISS index with its metric set explicitly: inner product, or L2 after the lift."""
    import faiss

    metric = faiss.METRIC_L2 if lifted else faiss.METRIC_INNER_PRODUCT
    if index_type == "exact":
        return faiss.IndexFlatIP(dim)
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, metric)
        index.hnsw.efConstruction = settings.ef_construction
        index.hnsw.efSearch = settings.ef_search
        return index
    nlist = int(settings.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39)))
    quantizer = faiss.IndexFlatL2(dim) if lifted else faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, metric)  # FAISS's Python wrapper keeps the quantizer alive
    index.cp.seed = settings.seed
    return index


def _groups(pending: np.ndarray, fetch: np.ndarray, effort: np.ndarray) -> list[tuple[int, int]]:
    """The distinct (fetch, effort) pairs of the pending queries."""
    if len(pending) == 1:  # the single-query path, without np.unique
        return [(int(fetch[pending[0]]), int(effort[pending[0]]))]
    return [tuple(g) for g in np.unique(np.stack([fetch[pending], effort[pending]], axis=1), axis=0).tolist()]


@dataclass
class _Exclusions:
    """What a search leaves out: each query's own row, rows for every query, (query, row) pairs."""

    self_rows: np.ndarray | None
    global_rows: np.ndarray | None
    pair_keys: np.ndarray | None
    stride: np.int64

    @classmethod
    def of(cls, nq: int, stride: int, self_rows: np.ndarray | None, pairs: tuple | None, global_rows: np.ndarray | None) -> _Exclusions:
        """From :meth:`Part.search`'s arguments (``pairs`` positions < ``nq``; ``stride`` > any row)."""
        pair_keys = None
        if pairs is not None and len(pairs[0]):
            pair_keys = np.unique(np.asarray(pairs[0], dtype=np.int64) * stride + pairs[1])
        global_rows = None if global_rows is None else np.unique(np.asarray(global_rows, dtype=np.int64))  # sorted: see _in_sorted
        return cls(self_rows, global_rows, pair_keys, np.int64(stride))

    def counts(self, nq: int) -> np.ndarray:
        """(nq,) how many rows each query leaves out at most: a search fetches that many more."""
        need = np.zeros(nq, dtype=np.int64)
        if self.self_rows is not None:
            need += self.self_rows != UNKNOWN_ROW
        if self.global_rows is not None:
            need += len(self.global_rows)
        if self.pair_keys is not None:
            need += np.bincount(self.pair_keys // self.stride, minlength=nq)
        return need

    def mask(self, sel: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(len(sel), f) bool: True where ``rows`` (found for queries ``sel``) must be dropped."""
        bad = rows == UNKNOWN_ROW  # rows may be (1, f), for every query alike: the result is broadcast to (len(sel), f)
        if self.self_rows is not None:
            bad = bad | (rows == self.self_rows[sel, None])
        if self.global_rows is not None:
            bad = bad | _in_sorted(rows, self.global_rows)
        if self.pair_keys is not None:
            bad = bad | _in_sorted(sel[:, None].astype(np.int64) * self.stride + rows, self.pair_keys)
        return bad if bad.shape[0] == len(sel) else np.broadcast_to(bad, (len(sel), rows.shape[1]))


def _in_sorted(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``np.isin(values, keys)`` for sorted unique ``keys``, by binary search (about 10x faster for a
    query's few hundred candidates: no sort of the values)."""
    if len(keys) == 0:
        return np.zeros(values.shape, dtype=bool)
    at = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
    return keys[at] == values


__all__ = ["INDEX_TYPES", "PARTS", "IndexSettings", "Part", "StaleIndexError"]
