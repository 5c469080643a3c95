"""A catalogue index across shards: several FAISS indexes over one table, searched as one part.

For a table whose FAISS index does not fit one process's memory (or one build), its rows are
split into shards, one FAISS index each, behind the same :class:`~collabemb.faiss_parts.Part`
interface, so :meth:`SimilarityIndex.similar_items <collabemb.index.SimilarityIndex.similar_items>`,
``recommend`` and ``similar_users`` (and the module functions on ``fitted.index``) answer through
them unchanged:

* :func:`shard_index` (:meth:`ShardedPart.build`): S HNSW, IVF or exact indexes over S contiguous
  row ranges of the model's table, built one after another with faiss_parts' own builders (the
  same metric, normalisation and MIPS-to-L2 lift as a single part), so a build's transient memory
  is one shard's. Shards that separate processes build from their own slice of the vectors:
  :func:`build_shard` (and :func:`write_shard`) on each, :meth:`ShardedPart.from_shards` to join
  them, which checks that the shards hold exactly the table's rows 1..n and spot-checks one vector
  of each against the model.
* :func:`build_ondisk_ivf` / :func:`open_ondisk_ivf`: one IVF whose inverted lists live in a file
  and are memory-mapped read-only, for a catalogue larger than RAM. One quantizer is trained on a
  sample, each row range is added to its own IVF file with it, and the lists are merged on disk
  (``faiss.OnDiskInvertedLists.merge_from_multiple``, what ``faiss.contrib.ondisk.merge_ondisk``
  calls, here with the shard indexes kept alive during the merge and freed after).

Search: a :class:`ShardedPart` is a ``Part`` whose ``index`` is a :class:`ShardSet`. Its
``search(x, k, params)`` asks every non-empty shard for its top ``min(k, shard size)`` with the same
FAISS search parameters, turns shard labels into table rows and merges by exact score (inner
product descending, L2 ascending for the lifted recommend part; ties by row). ``Part.search``'s
exclusions and re-fetching run over the merged lists unchanged: a query still short of k after
filtering is searched again with twice the fetch (and nprobe) in every shard, so no eligible row
is lost. ``faiss.IndexShards`` is not used: it refuses an empty (untrained) IVF shard, maps labels
only by successive offsets (not the row lists of shards built from files) and cannot hold the
exact growth shard next to IVF shards.

Growth: rows appended to the model (fold-ins with ``add=True``) go to an exact growth shard at the
end; an on-disk IVF is never written to after it is built. Sharded and on-disk parts are not
stored in artifacts (saving a model whose index holds one is refused); an on-disk index's own
directory holds its files and a JSON manifest binding them to the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from collabemb.atomic import atomic_file, write_json
from collabemb.faiss_files import check_structure, check_type, table_hasher
from collabemb.faiss_parts import (
    _CHUNK,
    INDEX_TYPES,
    PARTS,
    IndexSettings,
    Part,
    StaleIndexError,
    _empty_index,
    _faiss_threads,
    new_checksum,
    part_dim,
    update_checksum,
)
from collabemb.fitted import FittedModel
from collabemb.index import SimilarityIndex, index_of
from collabemb.models import EmbeddingDotBias
from collabemb.schema import ArtifactError

#: ``format`` of an on-disk IVF manifest (``{part}.ivf.json``).
ONDISK_FORMAT = "collabemb-ondisk-ivf/1"
_ADD_ROWS = 4 * _CHUNK  # rows per add call: bounds the float32 copy FAISS is handed


@dataclass
class Shard:
    """One FAISS index over some rows of a table.

    Its FAISS label ``j`` is table row ``first_row + j`` (``rows`` None: a contiguous range; also an
    index whose labels are global, ``row - 1``, with ``first_row=1``) or ``rows[j]``. ``grows``
    marks the exact shard rows appended to the model are added to.
    """

    index: Any  # faiss.Index
    first_row: int = 1
    rows: np.ndarray | None = None
    grows: bool = False

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def global_labels(self, labels: np.ndarray) -> np.ndarray:
        """(nq, f) shard labels -> labels of the whole table (``row - 1``, as a single part's); -1 stays -1."""
        if self.rows is None:
            return np.where(labels >= 0, labels + (self.first_row - 1), -1)
        return np.where(labels >= 0, self.rows[np.maximum(labels, 0)] - 1, -1)


class ShardSet:
    """The FAISS-index face of a list of shards: ``ntotal``, ``d``, ``nlist`` and ``search``.

    Args:
        shards: the shards, whose row sets together are the table's rows 1..ntotal.
        dim: the vectors' dimension; l2: True when distances are L2 (smaller is better), False
            for inner products (larger is better).
    """

    def __init__(self, shards: list[Shard], dim: int, l2: bool):
        self.shards, self.d, self.l2 = shards, int(dim), bool(l2)

    @property
    def ntotal(self) -> int:
        return sum(shard.size for shard in self.shards)

    @property
    def nlist(self) -> int:
        """The largest IVF shard's number of lists (1 without IVF shards): ``Part``'s nprobe ceiling."""
        import faiss

        return max((int(s.index.nlist) for s in self.shards if isinstance(s.index, faiss.IndexIVF)), default=1)

    def search(self, x: np.ndarray, k: int, params=None) -> tuple[np.ndarray, np.ndarray]:
        """``(distances, labels)``, both (nq, k), as ``faiss.Index.search`` returns them for the whole table.

        ``x`` is (nq, d) float32; labels are ``row - 1`` (-1 where fewer than k were found, at the
        end); ``params`` (HNSW or IVF search parameters) go to the shards of that kind.
        """
        nq, k = len(x), int(k)
        dists, labels = [], []
        for shard in self.shards:
            if shard.size:
                d, lab = shard.index.search(x, min(k, shard.size), params=params if _takes(shard.index, params) else None)
                dists.append(d)
                labels.append(shard.global_labels(lab))
        worst = np.float32(np.inf if self.l2 else -np.inf)
        dist = np.hstack([*dists, np.full((nq, k), worst, np.float32)])  # the padding sorts last
        label = np.hstack([*labels, np.full((nq, k), -1, np.int64)])
        dist[label < 0] = worst
        order = np.lexsort((label, dist if self.l2 else -dist), axis=-1)[:, :k]
        return np.take_along_axis(dist, order, axis=1), np.take_along_axis(label, order, axis=1)

    def add_rows(self, vectors: np.ndarray, first_row: int) -> None:
        """Add (m, d) FAISS-ready vectors of rows ``first_row..`` (following on from all others) to the growth shard."""
        import faiss

        if not (self.shards and self.shards[-1].grows):
            self.shards.append(Shard(faiss.IndexFlatL2(self.d) if self.l2 else faiss.IndexFlatIP(self.d), int(first_row), grows=True))
        self.shards[-1].index.add(vectors)


@dataclass
class ShardedPart(Part):
    """A :class:`~collabemb.faiss_parts.Part` over several FAISS indexes (its ``index`` is a :class:`ShardSet`).

    ``index_type`` is the shards' type; ``directory`` is where an on-disk part's files live (None
    in memory). Searching, rescoring, freshness and checksums are ``Part``'s own.
    """

    directory: Path | None = None

    @property
    def n_shards(self) -> int:
        """Shards built (the growth shard of appended rows not counted)."""
        return sum(not shard.grows for shard in self.index.shards)

    @classmethod
    def build(cls, name: str, module: EmbeddingDotBias, settings: IndexSettings, n_shards: int = 2, index_type: str | None = None):
        """Part ``name`` over the module's table as ``n_shards`` shards of contiguous, equal row ranges.

        ``index_type``: the shards' type (default: ``settings``' choice for the whole table). Shards
        are built one after another; more shards than rows leaves some empty.
        """
        table = _table_of(name)
        if int(n_shards) < 1:
            raise ValueError(f"n_shards must be >= 1, got {n_shards}")
        n = len(module.registry(table))
        if n == 0:
            raise ValueError(f"the model has no {table}s to index")
        index_type = _check_index_type(index_type or settings.index_type_for(n))
        weights, biases = module.tables(table)
        lifted = name == "recommend" and index_type != "exact"
        max_norm2 = lift_norm2(weights[1 : n + 1], biases[1 : n + 1]) if lifted else None
        bounds = row_ranges(n, int(n_shards))
        shards = [
            Shard(build_shard(name, weights[a:b], biases[a:b], settings, index_type=index_type, max_norm2=max_norm2), first_row=a)
            for a, b in bounds
        ]
        checksum = new_checksum()
        update_checksum(checksum, weights, biases, 1, n + 1)
        return cls(name, index_type, ShardSet(shards, part_dim(name, module.n_factors, lifted), lifted), checksum, settings, max_norm2)

    @classmethod
    def from_shards(
        cls, name: str, module: EmbeddingDotBias, shards: Sequence[tuple], settings: IndexSettings, *, max_norm2: float | None = None
    ) -> ShardedPart:
        """Join shards built apart (:func:`build_shard`) into part ``name`` of ``module``.

        Args:
            shards: ``(rows, index)`` per shard: ``rows`` a ``range`` or (m,) int array of the
                table rows the shard holds, in its label order; ``index`` a FAISS index or the path
                of a file :func:`write_shard` wrote (read memory-mapped). Together the shards hold
                every row 1..n exactly once; all are of one type.
            max_norm2: for approximate recommend shards, the lift they were all built with (the
                largest :func:`lift_norm2` over the shards), no less than any row's ``|[q_i, b_i]|^2``.

        Raises ``ValueError`` for rows that do not cover the table once, ``StaleIndexError`` for a
        shard whose stored vectors are not the model's rows, ``ArtifactError`` for a shard of
        another type, metric or dimension, or inconsistent inside.
        """
        table = _table_of(name)
        n = len(module.registry(table))
        weights, biases = module.tables(table)
        loaded = [(rows, read_shard(index, mmap=True) if isinstance(index, str | os.PathLike) else index) for rows, index in shards]
        types = {_index_type_of(index) for _, index in loaded}
        if len(types) != 1:
            raise ValueError(f"shards must all be of one index type, got {sorted(types)}")
        index_type = types.pop()
        lifted = name == "recommend" and index_type != "exact"
        max_norm2 = _check_lift(max_norm2, lifted, weights[1 : n + 1], biases[1 : n + 1])
        dim = part_dim(name, module.n_factors, lifted)
        built = [_shard_of(rows, index, s, n) for s, (rows, index) in enumerate(loaded)]
        _check_cover(built, n)
        part = cls(name, index_type, ShardSet(built, dim, lifted), new_checksum(), settings, max_norm2)
        for s, shard in enumerate(built):
            label = f"shard {s}"
            check_type(shard.index, name, index_type, max_norm2, label)
            check_structure(shard.index, label)
            if shard.index.d != dim:
                raise ArtifactError(f"{label}: vectors of dimension {shard.index.d}, expected {dim}")
            _spot_check(part, shard, weights, biases, label)
        update_checksum(part.checksum, weights, biases, 1, n + 1)
        return part

    def extended(self, module: EmbeddingDotBias, rows: np.ndarray) -> ShardedPart:
        """This part with the module's rows ``rows`` (just appended to its table) added to the exact growth shard.

        An in-memory approximate recommend part is rebuilt (with a warning) when a new item is
        longer than its lift allows for; an on-disk one then raises ``StaleIndexError``.
        """
        rows = np.sort(np.asarray(rows, dtype=np.int64))
        checksum = self.running_checksum(module)
        start = self.index.ntotal + 1
        if not np.array_equal(rows, np.arange(start, start + len(rows))):
            raise StaleIndexError(f"the {self.name!r} index holds {start - 1} {self.table}s; cannot append rows {rows[:3].tolist()}")
        weights, biases = module.tables(self.table)
        if self.lifted and len(rows) and 0.5 * lift_norm2(weights[rows], biases[rows]) > self.max_norm2:
            if self.directory is not None:
                raise StaleIndexError(
                    f"a new item is longer than the on-disk {self.name!r} index in {self.directory} allows for: "
                    f"rebuild it with collabemb.faiss_shards.build_ondisk_ivf"
                )
            warnings.warn(f"a new item is longer than the sharded {self.name!r} index allows for; rebuilding it", stacklevel=4)
            return ShardedPart.build(self.name, module, self.settings, self.n_shards, self.index_type)
        with _faiss_threads(self.settings.threads):
            self.index.add_rows(self.faiss_input(weights, biases, rows), start)
        update_checksum(checksum, weights, biases, start, start + len(rows))
        return self

    def to_bytes(self) -> np.ndarray:
        """Refused: sharded and on-disk parts are not stored in artifacts."""
        where = f"on disk in {self.directory}" if self.directory is not None else f"{self.n_shards} {self.index_type} shards"
        raise ArtifactError(
            f"the {self.name!r} index is sharded ({where}) and is not stored in artifacts: save the model with "
            f"a single index (collabemb.build_index(fitted)) or none (fitted.index = None)"
        )


# --- building shards ------------------------------------------------------------------------------


def build_shard(
    name: str, vectors: np.ndarray, biases: np.ndarray | None, settings: IndexSettings, *, index_type: str, max_norm2: float | None = None
):
    """One shard's FAISS index over (m, k) table vectors (a slice of the table, or one file's rows).

    Args:
        name: the part (``"items"``, ``"users"``, ``"recommend"``): how the vectors are stored,
            as :class:`~collabemb.faiss_parts.Part` stores them (normalised for cosine;
            ``[q_i, b_i]`` for recommend, lifted for an approximate one).
        vectors: (m, k) float vectors; biases: (m,) item biases (used by recommend only).
        settings: metric, HNSW / IVF parameters (``nlist`` None: by the shard's size), seed, threads.
        index_type: ``"hnsw"``, ``"ivf"`` or ``"exact"``.
        max_norm2: the lift of an approximate recommend shard, the same for every shard of a
            part: the largest :func:`lift_norm2` of all shards' rows.

    Returns the FAISS index; label ``j`` is the shard's vector ``j``. An empty shard gets an empty
    (for IVF: untrained) index, which is never searched.
    """
    _table_of(name)
    index_type = _check_index_type(index_type)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be (m, k), got shape {vectors.shape}")
    m = len(vectors)
    biases = np.zeros(m, np.float32) if biases is None else np.asarray(biases, dtype=np.float32).reshape(-1)
    if len(biases) != m:
        raise ValueError(f"biases must have one value per vector ({m}), got {len(biases)}")
    lifted = name == "recommend" and index_type != "exact"
    if lifted and max_norm2 is None:
        raise ValueError("an approximate recommend shard needs max_norm2: the largest lift_norm2(...) over all shards' rows")
    template = Part(name, index_type, None, None, settings, float(max_norm2) if lifted else None)
    with _faiss_threads(settings.threads):
        index = _empty_index(index_type, part_dim(name, vectors.shape[1], lifted), lifted, settings, max(m, 1))
        if m == 0:
            return index
        if index_type == "ivf":
            sample = np.random.default_rng(settings.seed).choice(m, size=min(m, 256 * int(index.nlist)), replace=False)
            index.train(template.faiss_input(vectors, biases, np.sort(sample)))
        for start in range(0, m, _ADD_ROWS):
            index.add(template.faiss_input(vectors, biases, np.arange(start, min(start + _ADD_ROWS, m))))
    return index


def lift_norm2(vectors: np.ndarray, biases: np.ndarray) -> float:
    """Twice the largest ``|[q_i, b_i]|^2`` of these (m, k) vectors and (m,) biases (1.0 when there is none):
    the squared norm an approximate recommend part lifts its vectors to (as faiss_parts does for rows 1..n)."""
    biggest = 0.0
    for start in range(0, len(vectors), _CHUNK):
        w, b = vectors[start : start + _CHUNK], biases[start : start + _CHUNK]
        biggest = max(biggest, float(np.max(np.einsum("ij,ij->i", w, w, dtype=np.float64) + np.asarray(b, np.float64) ** 2)))
    return 2.0 * biggest if biggest > 0 else 1.0


def row_ranges(n: int, n_shards: int) -> list[tuple[int, int]]:
    """``n_shards`` contiguous ``(start, stop)`` table-row ranges covering rows 1..n, sizes differing by at most one."""
    bounds = 1 + (np.arange(n_shards + 1, dtype=np.int64) * n) // n_shards
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def write_shard(index, path: str | os.PathLike) -> Path:
    """Write a FAISS index to ``path`` atomically (a temporary name beside it, then renamed); returns the path."""
    import faiss

    path = Path(path)
    with atomic_file(path) as tmp:
        faiss.write_index(index, str(tmp))
    return path


def read_shard(path: str | os.PathLike, *, mmap: bool = False):
    """A FAISS index read with FAISS's own reader; ``mmap``: its vectors (flat, HNSW) or lists (IVF) memory-mapped read-only."""
    import faiss

    path = Path(path)
    flags = 0
    if mmap:
        with open(path, "rb") as fh:
            ivf = fh.read(2) == b"Iw"  # the fourcc of IVF indexes; their lists are mapped by another flag
        flags = faiss.IO_FLAG_MMAP if ivf else faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError as exc:
        raise ArtifactError(f"{path}: unreadable FAISS index ({str(exc).splitlines()[0] if str(exc) else 'RuntimeError'})") from None


def shard_index(
    target: SimilarityIndex | FittedModel, n_shards: int, *, parts: Sequence[str] = ("items", "recommend"), index_type: str = "hnsw"
) -> SimilarityIndex:
    """Replace parts of an index by sharded ones: ``n_shards`` ``index_type`` shards each, built now.

    ``target``: a :class:`~collabemb.index.SimilarityIndex`, or a fitted model (its
    ``fitted.index``, made if missing, so ``collabemb.similar_items(fitted, ...)`` answers through
    the shards). The shards take the index's settings (metric, HNSW and IVF parameters, threads;
    ``nlist`` None: by each shard's size). Returns the index.
    """
    index = _similarity_index(target)
    for name in parts:
        index._parts[name] = ShardedPart.build(name, index.fitted.module, index.settings, int(n_shards), index_type)
    return index
