"""A catalogue index across shards: several FAISS indexes over one table, searched as one part.

For a table whose FAISS index does not fit one process's memory (or one build), the rows are split
into shards, one FAISS index each, behind :class:`~collabemb.faiss_parts.Part`'s interface, so
``SimilarityIndex.similar_items``, ``recommend`` and ``similar_users`` (and the module functions on
``fitted.index``) answer through them unchanged:

* :func:`shard_index` (:meth:`ShardedPart.build`): S HNSW, IVF or exact indexes over S contiguous
  row ranges, built one after another with faiss_parts' builders (the same metric, normalisation
  and, for IVF recommend shards, MIPS-to-L2 lift as one part). Shards built apart, one per process or file:
  :func:`build_shard` and :func:`write_shard` on each, :meth:`ShardedPart.from_shards` to join them.
* :func:`build_ondisk_ivf` / :func:`open_ondisk_ivf`: one IVF whose inverted lists are a file,
  memory-mapped read-only, for a catalogue larger than RAM: one quantizer trained on a sample, each
  row range added to its own IVF file, the lists merged on disk (``OnDiskInvertedLists``, as
  ``faiss.contrib.ondisk.merge_ondisk`` does, with the shards freed after the merge).

Search: a :class:`ShardedPart`'s ``index`` is a :class:`ShardSet`, whose ``search(x, k, params)``
asks each non-empty shard for its top ``min(k, size)`` with the same FAISS parameters, maps labels
to table rows and merges by exact score (inner product descending, L2 ascending for a lifted
recommend part; ties by row). ``Part.search``'s exclusions and re-fetching then run unchanged: a
query short of k after filtering is searched again with twice the fetch (and nprobe) in every
shard, so no eligible row is lost. ``faiss.IndexShards`` would refuse an empty (untrained) IVF
shard, maps labels only by successive offsets (not a file's row list) and cannot mix in the exact
growth shard. Rows appended later (fold-ins, ``add=True``) go to that exact growth shard; an
on-disk IVF is never written to once built. Sharded parts are not stored in artifacts.
"""

from __future__ import annotations

import hashlib
import itertools
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
    lift_norm2,
    lifts,
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
    """One FAISS index over some table rows: label ``j`` is row ``first_row + j`` (``rows`` None) or ``rows[j]``.

    An index whose labels are already ``row - 1`` (the on-disk IVF) has ``first_row=1``. ``grows``
    marks the exact shard that rows appended to the model go to.
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
    """The FAISS-index face of shards that together hold rows 1..ntotal: ``ntotal``, ``d``, ``nlist``, ``search``.

    ``dim``: the vectors' dimension; ``l2``: distances are L2 (smaller is better), else inner products.
    """

    def __init__(self, shards: list[Shard], dim: int, l2: bool):
        self.shards, self.d, self.l2 = shards, int(dim), bool(l2)

    @property
    def ntotal(self) -> int:
        return sum(shard.size for shard in self.shards)

    @property
    def nlist(self) -> int:
        """The largest IVF shard's number of lists (1 without one): ``Part``'s nprobe ceiling (FAISS clamps per shard)."""
        import faiss

        return max((int(s.index.nlist) for s in self.shards if isinstance(s.index, faiss.IndexIVF)), default=1)

    def search(self, x: np.ndarray, k: int, params=None) -> tuple[np.ndarray, np.ndarray]:
        """``(distances, labels)``, both (nq, k), as ``faiss.Index.search`` gives them for the whole table.

        ``x``: (nq, d) float32. Labels are ``row - 1``, -1 where fewer than k were found (at the
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
        """Add (m, d) FAISS-ready vectors of rows ``first_row..`` (after all others) to the exact growth shard."""
        import faiss

        if not (self.shards and self.shards[-1].grows):
            self.shards.append(Shard(faiss.IndexFlatL2(self.d) if self.l2 else faiss.IndexFlatIP(self.d), int(first_row), grows=True))
        self.shards[-1].index.add(vectors)


@dataclass
class ShardedPart(Part):
    """A :class:`~collabemb.faiss_parts.Part` whose ``index`` is a :class:`ShardSet`; searching, rescoring,
    freshness and checksums are ``Part``'s own. ``index_type``: the shards' type; ``directory``: an
    on-disk part's files (None in memory)."""

    directory: Path | None = None

    @property
    def n_shards(self) -> int:
        """Shards built (the growth shard of appended rows not counted)."""
        return sum(not shard.grows for shard in self.index.shards)

    @classmethod
    def build(cls, name: str, module: EmbeddingDotBias, settings: IndexSettings, n_shards: int = 2, index_type: str | None = None):
        """Part ``name`` over the module's table as ``n_shards`` ``index_type`` shards (default: ``settings``' choice
        for the table) of equal contiguous row ranges, built one after another (more shards than rows: some empty)."""
        n = len(module.registry(_table_of(name, index_type)))
        if n == 0 or int(n_shards) < 1:
            raise ValueError(f"cannot build {n_shards} shards over {n} {PARTS[name]}s")
        index_type = index_type or settings.index_type_for(n)
        weights, biases = module.tables(PARTS[name])
        lifted = lifts(name, index_type)
        max_norm2 = lift_norm2(weights[1 : n + 1], biases[1 : n + 1]) if lifted else None
        shards = [
            Shard(build_shard(name, weights[a:b], biases[a:b], settings, index_type=index_type, max_norm2=max_norm2), first_row=a)
            for a, b in row_ranges(n, int(n_shards))
        ]
        checksum = new_checksum()
        update_checksum(checksum, weights, biases, 1, n + 1)
        return cls(name, index_type, ShardSet(shards, part_dim(name, module.n_factors, lifted), lifted), checksum, settings, max_norm2)

    @classmethod
    def from_shards(
        cls, name: str, module: EmbeddingDotBias, shards: Sequence[tuple], settings: IndexSettings, *, max_norm2: float | None = None
    ) -> ShardedPart:
        """Join shards built apart (:func:`build_shard`) into part ``name`` of ``module``.

        ``shards``: ``(rows, index)`` each: ``rows`` a ``range`` or (m,) int array of the table rows
        it holds, in label order; ``index`` a FAISS index or a file :func:`write_shard` wrote (read
        memory-mapped). Together they hold rows 1..n once each, all of one type. ``max_norm2``: for
        IVF recommend shards, the lift all were built with (the largest :func:`lift_norm2`).
        Raises ``ValueError`` for rows that do not cover the table once or a missing or short lift,
        ``StaleIndexError`` for a shard holding other vectors than the model's rows (one is compared
        per shard), ``ArtifactError`` for another type, metric or dimension, or a broken index.
        """
        table = _table_of(name)
        n = len(module.registry(table))
        weights, biases = module.tables(table)
        loaded = [(rows, read_shard(index, mmap=True) if isinstance(index, str | os.PathLike) else index) for rows, index in shards]
        types = {_index_type_of(index) for _, index in loaded}
        if len(types) != 1:
            raise ValueError(f"shards must all be of one index type, got {sorted(types)}")
        index_type = types.pop()
        lifted = lifts(name, index_type)
        if lifted and (max_norm2 is None or float(max_norm2) < lift_norm2(weights[1 : n + 1], biases[1 : n + 1]) / 2):
            raise ValueError(f"IVF recommend shards need max_norm2=, the lift they were built with (largest lift_norm2), got {max_norm2}")
        max_norm2 = float(max_norm2) if lifted else None
        dim = part_dim(name, module.n_factors, lifted)
        built = [_shard_of(rows, index, s, n) for s, (rows, index) in enumerate(loaded)]
        _check_cover(built, n)
        part = cls(name, index_type, ShardSet(built, dim, lifted), new_checksum(), settings, max_norm2)
        for s, shard in enumerate(built):
            check_type(shard.index, name, index_type, max_norm2, f"shard {s}")
            check_structure(shard.index, f"shard {s}")
            if shard.index.d != dim:
                raise ArtifactError(f"shard {s}: vectors of dimension {shard.index.d}, expected {dim}")
            _spot_check(part, shard, weights, biases, f"shard {s}")
        update_checksum(part.checksum, weights, biases, 1, n + 1)
        return part

    def extended(self, module: EmbeddingDotBias, rows: np.ndarray) -> ShardedPart:
        """This part with the module's rows ``rows`` (just appended to its table) in the exact growth shard.

        A new item longer than an IVF recommend part's lift allows for rebuilds an in-memory
        part (with a warning) and raises ``StaleIndexError`` for an on-disk one.
        """
        rows = np.sort(np.asarray(rows, dtype=np.int64))
        checksum = self.running_checksum(module)
        start = self.index.ntotal + 1
        if not np.array_equal(rows, np.arange(start, start + len(rows))):
            raise StaleIndexError(f"the {self.name!r} index holds {start - 1} {self.table}s; cannot append rows {rows[:3].tolist()}")
        weights, biases = module.tables(self.table)
        if self.lifted and len(rows) and lift_norm2(weights[rows], biases[rows]) / 2 > self.max_norm2:
            if self.directory is not None:
                raise StaleIndexError(
                    f"a new item is longer than the on-disk {self.name!r} index allows for: rebuild it (build_ondisk_ivf)"
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
    """One shard's FAISS index over (m, k) table vectors and (m,) biases (recommend only; None: zeros).

    The vectors are stored as part ``name`` stores them (normalised for cosine, ``[q_i, b_i]`` for
    recommend, lifted to ``max_norm2`` for an IVF one: the same value, the largest
    :func:`lift_norm2`, for every shard of the part). ``settings``: metric, HNSW and IVF parameters
    (``nlist`` None: by the shard's size), seed, threads. Label ``j`` is vector ``j``; an empty
    shard gets an empty (for IVF: untrained) index, which is never searched.
    """
    _table_of(name, str(index_type))
    vectors = np.asarray(vectors, dtype=np.float32)
    m = len(vectors)
    biases = np.zeros(m, np.float32) if biases is None else np.asarray(biases, dtype=np.float32).reshape(-1)
    if vectors.ndim != 2 or len(biases) != m:
        raise ValueError(f"vectors must be (m, k) and biases (m,), got shapes {vectors.shape} and {biases.shape}")
    lifted = lifts(name, index_type)
    if lifted and max_norm2 is None:
        raise ValueError("an IVF recommend shard needs max_norm2: the largest lift_norm2(...) over all shards' rows")
    template = Part(name, index_type, None, None, settings, float(max_norm2) if lifted else None)
    with _faiss_threads(settings.threads):
        index = _empty_index(index_type, part_dim(name, vectors.shape[1], lifted), lifted, settings, max(m, 1))
        if m and index_type == "ivf":  # trained as Part.build trains a whole table
            sample = np.random.default_rng(settings.seed).choice(m, size=min(m, 256 * int(index.nlist)), replace=False)
            index.train(template.faiss_input(vectors, biases, np.sort(sample)))
        for start in range(0, m, _ADD_ROWS):
            index.add(template.faiss_input(vectors, biases, np.arange(start, min(start + _ADD_ROWS, m))))
    return index


def row_ranges(n: int, n_shards: int) -> list[tuple[int, int]]:
    """``n_shards`` contiguous ``(start, stop)`` row ranges covering rows 1..n, sizes differing by at most one."""
    return list(itertools.pairwise(int(b) for b in 1 + (np.arange(n_shards + 1, dtype=np.int64) * n) // n_shards))


def write_shard(index, path: str | os.PathLike) -> Path:
    """Write a FAISS index to ``path`` atomically (under a temporary name beside it, then renamed); returns the path."""
    import faiss

    with atomic_file(path) as tmp:
        faiss.write_index(index, str(tmp))
    return Path(path)


def read_shard(path: str | os.PathLike, *, mmap: bool = False):
    """A FAISS index file read by FAISS's reader; ``mmap``: its vectors (flat, HNSW) or lists (IVF) memory-mapped."""
    import faiss

    flags = 0
    if mmap:
        with open(path, "rb") as fh:
            ivf = fh.read(2) == b"Iw"  # the fourcc of IVF indexes, whose lists are mapped by another flag
        flags = faiss.IO_FLAG_MMAP if ivf else faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError as exc:
        raise ArtifactError(f"{path}: unreadable FAISS index ({(str(exc).splitlines() or ['RuntimeError'])[0]})") from None


def shard_index(
    target: SimilarityIndex | FittedModel, n_shards: int, *, parts: Sequence[str] = ("items", "recommend"), index_type: str = "hnsw"
) -> SimilarityIndex:
    """Replace ``parts`` of an index by ``n_shards`` ``index_type`` shards each, built now; returns the index.

    ``target``: a :class:`~collabemb.index.SimilarityIndex`, or a fitted model (then its
    ``fitted.index``, made if missing, so ``collabemb.similar_items(fitted, ...)`` answers through
    the shards). The shards take the index's settings (``nlist`` None: by each shard's size).
    """
    index = _similarity_index(target)
    for name in parts:
        index._parts[name] = ShardedPart.build(name, index.fitted.module, index.settings, int(n_shards), index_type)
    return index


# --- on-disk IVF -----------------------------------------------------------------------------------


def build_ondisk_ivf(
    target: SimilarityIndex | FittedModel, directory: str | os.PathLike, *, part: str = "items", n_shards: int = 4, keep_shard_files=False
) -> SimilarityIndex:
    """Build ``part`` as one IVF whose inverted lists are a memory-mapped file in ``directory``; returns the index holding it.

    One quantizer (``nlist``: the index's, else by table size) is trained on a sample drawn as
    ``Part.build`` draws it (``{part}.ivf-trained.faiss``); each of ``n_shards`` row ranges is added
    to a copy (labels: row - 1), written to ``{part}.ivf-shard-{s}.faiss`` and freed; the lists are
    merged on disk into ``{part}.ivf-{token}.ivfdata``, read by ``{part}.ivf-{token}.faiss``, and
    the manifest ``{part}.ivf.json``, written last, names both: readers see the old build or the
    new one. Every file is written under a temporary name and renamed; shard files (unless
    ``keep_shard_files``) and older builds' files are removed. One build per directory and part.
    """
    index = _similarity_index(target)
    module, settings, table = index.fitted.module, index.settings, _table_of(part)
    n = len(module.registry(table))
    if n == 0:
        raise ValueError(f"the model has no {table}s to index")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights, biases = module.tables(table)
    lifted = part == "recommend"
    template = Part(part, "ivf", None, None, settings, lift_norm2(weights[1 : n + 1], biases[1 : n + 1]) if lifted else None)
    trained_file = directory / f"{part}.ivf-trained.faiss"
    with _faiss_threads(settings.threads):
        trained = _empty_index("ivf", part_dim(part, module.n_factors, lifted), lifted, settings, n)
        sample = np.random.default_rng(settings.seed).choice(n, size=min(n, 256 * int(trained.nlist)), replace=False) + 1
        trained.train(template.faiss_input(weights, biases, np.sort(sample)))
        write_shard(trained, trained_file)
        shard_files = [
            _write_ivf_shard(trained, template, weights, biases, rows, directory / f"{part}.ivf-shard-{s}.faiss")
            for s, rows in enumerate(row_ranges(n, int(n_shards)))
        ]
    token = secrets.token_hex(6)
    index_file, ivfdata_file = directory / f"{part}.ivf-{token}.faiss", directory / f"{part}.ivf-{token}.ivfdata"
    _merge_lists(trained_file, shard_files, index_file, ivfdata_file)
    hasher = table_hasher(module, table)
    what = {"format": ONDISK_FORMAT, "part": part, "metric": settings.metric, "max_norm2": template.max_norm2, "ntotal": n}
    model = {"registry_fingerprint": module.registry(table).fingerprint(), "vector_checksum": hasher.hexdigest()}
    files = {"trained_file": trained_file.name, "index_file": index_file.name, "index_sha256": _sha256(index_file)}
    data = {"ivfdata_file": ivfdata_file.name, "ivfdata_bytes": ivfdata_file.stat().st_size, "nlist": int(trained.nlist)}
    write_json(directory / f"{part}.ivf.json", {**what, **model, **files, **data, "n_shards": int(n_shards)})
    keep = {trained_file.name, index_file.name, ivfdata_file.name} | ({f.name for f in shard_files} if keep_shard_files else set())
    for old in directory.glob(f"{part}.ivf-*"):
        if old.name not in keep:
            old.unlink(missing_ok=True)
    index._parts[part] = _ondisk_part(index, directory, part, hasher)
    return index


def open_ondisk_ivf(target: SimilarityIndex | FittedModel, directory: str | os.PathLike, *, part: str = "items") -> SimilarityIndex:
    """Put the on-disk IVF :func:`build_ondisk_ivf` wrote to ``directory`` (which may have moved) into the index, its
    lists mapped read-only; returns the index. Refuses files built for another registry or other vectors
    (``StaleIndexError``) or metric (``ValueError``), or not what the manifest records or broken (``ArtifactError``)."""
    index = _similarity_index(target)
    index._parts[part] = _ondisk_part(index, Path(directory), part, table_hasher(index.fitted.module, _table_of(part)))
    return index


def _write_ivf_shard(trained, template: Part, weights: np.ndarray, biases: np.ndarray, rows: tuple[int, int], path: Path) -> Path:
    """Add table rows ``rows[0]..rows[1]-1`` (labels: row - 1) to a copy of the trained IVF, write it to ``path``."""
    import faiss

    shard = faiss.clone_index(trained)
    for start in range(rows[0], rows[1], _ADD_ROWS):
        block = np.arange(start, min(start + _ADD_ROWS, rows[1]))
        shard.add_with_ids(template.faiss_input(weights, biases, block), block - 1)
    return write_shard(shard, path)


def _merge_lists(trained_file: Path, shard_files: list[Path], index_file: Path, ivfdata_file: Path) -> None:
    """Merge the shard files' lists (memory-mapped, not loaded) into ``ivfdata_file``, written through a memory
    map that is unmapped before the file is synced and renamed, and write the IVF reading it to ``index_file``."""
    import faiss

    merged = faiss.read_index(str(trained_file))
    shards = [faiss.read_index(str(f), faiss.IO_FLAG_MMAP) for f in shard_files]  # kept alive until merged
    sources = faiss.InvertedListsPtrVector()
    for shard in shards:
        sources.push_back(shard.invlists)
    with atomic_file(ivfdata_file) as tmp_data:
        lists = faiss.OnDiskInvertedLists(merged.nlist, merged.code_size, str(tmp_data))
        ntotal = lists.merge_from_multiple(sources.data(), sources.size(), False)
        merged.replace_invlists(lists, True)  # merged owns the lists now, and unmaps them when freed
        lists.this.disown()
        merged.ntotal = ntotal
        lists.filename = ivfdata_file.name  # found beside the index file when read (IO_FLAG_ONDISK_SAME_DIR)
        with atomic_file(index_file) as tmp_index:
            faiss.write_index(merged, str(tmp_index))
        del merged, lists
    del sources, shards


def _ondisk_part(index: SimilarityIndex, directory: Path, part: str, hasher) -> ShardedPart:
    """The on-disk part in ``directory``, checked against the index's model (``hasher``: its table's checksum)."""
    import faiss

    module, manifest_file = index.fitted.module, directory / f"{part}.ivf.json"
    manifest = _read_manifest(manifest_file, part, module, index.settings, hasher)
    index_file, ivfdata_file = directory / manifest["index_file"], directory / manifest["ivfdata_file"]
    if not index_file.is_file() or _sha256(index_file) != manifest["index_sha256"]:
        raise ArtifactError(f"{index_file}: missing, or not the file {manifest_file.name} records (SHA-256 differs)")
    if not ivfdata_file.is_file() or ivfdata_file.stat().st_size != manifest["ivfdata_bytes"]:
        raise ArtifactError(f"{ivfdata_file}: missing, or not the {manifest['ivfdata_bytes']} bytes {manifest_file.name} records")
    try:
        ivf = faiss.read_index(str(index_file), faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError as exc:
        raise ArtifactError(f"{index_file}: unreadable FAISS index ({(str(exc).splitlines() or ['RuntimeError'])[0]})") from None
    max_norm2, lifted, label = manifest["max_norm2"], part == "recommend", str(index_file)
    check_type(ivf, part, "ivf", max_norm2, label)
    _check_lists_in_file(ivf, manifest["ivfdata_bytes"], label)
    check_structure(ivf, label)
    dim = part_dim(part, module.n_factors, lifted)
    if ivf.d != dim or ivf.ntotal != manifest["ntotal"]:
        raise ArtifactError(f"{label}: holds {ivf.ntotal} vectors of dimension {ivf.d}, expected {manifest['ntotal']} of dimension {dim}")
    faiss.downcast_InvertedLists(ivf.invlists).prefetch_nthread = 0  # FAISS's 32 prefetch threads per search cost ~4 ms a query
    shard = Shard(ivf, first_row=1)  # labels are table row - 1
    result = ShardedPart(part, "ivf", ShardSet([shard], dim, lifted), hasher.copy(), index.settings, max_norm2, directory=directory)
    _spot_check(result, shard, *module.tables(PARTS[part]), label)
    return result


def _read_manifest(path: Path, part: str, module: EmbeddingDotBias, settings: IndexSettings, hasher) -> dict:
    """The manifest of an on-disk part, refused unless it describes this part of this model."""
    table = _table_of(part)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable on-disk index manifest ({exc})") from None
    ok = isinstance(manifest, dict) and manifest.get("format") == ONDISK_FORMAT and manifest.get("part") == part
    ok = ok and all(
        isinstance(manifest.get(key), str) and Path(manifest[key]).name == manifest[key] for key in ("index_file", "ivfdata_file")
    )
    if not (ok and isinstance(manifest.get("ntotal"), int) and isinstance(manifest.get("ivfdata_bytes"), int) and "max_norm2" in manifest):
        raise ArtifactError(f"{path}: not an on-disk {part!r} index manifest ({ONDISK_FORMAT})")
    if manifest.get("registry_fingerprint") != module.registry(table).fingerprint() or manifest["ntotal"] != len(module.registry(table)):
        raise StaleIndexError(f"{path}: built for another {table} registry; rebuild it with build_ondisk_ivf")
    if manifest.get("vector_checksum") != hasher.hexdigest():
        raise StaleIndexError(
            f"{path}: built from other {table} vectors than this model's (checksum differs); rebuild it with build_ondisk_ivf"
        )
    if part != "recommend" and manifest.get("metric") != settings.metric:
        raise ValueError(f"{path}: built for metric {manifest.get('metric')!r}, this index searches by {settings.metric!r}")
    return manifest


def _check_lists_in_file(ivf, file_bytes: int, label: str) -> None:
    """Refuse on-disk lists that reach outside their data file (a search would read past the mapping)."""
    import faiss

    lists = faiss.downcast_InvertedLists(ivf.invlists)
    if not isinstance(lists, faiss.OnDiskInvertedLists):
        raise ArtifactError(f"{label}: its inverted lists are not on disk")
    slot, table = int(lists.code_size) + 8, lists.lists  # a list's block: capacity codes, then capacity int64 labels
    for i in range(int(lists.nlist)):
        one = table.at(i)
        if one.size > one.capacity or one.offset + one.capacity * slot > file_bytes:
            raise ArtifactError(f"{label}: inverted list {i} lies outside its {file_bytes}-byte data file")


# --- helpers -------------------------------------------------------------------------------------


def _similarity_index(target) -> SimilarityIndex:
    if isinstance(target, SimilarityIndex):
        return target
    if isinstance(target, FittedModel):
        return index_of(target)
    raise TypeError(f"expected a SimilarityIndex or a FittedModel, got {type(target).__name__}")


def _table_of(name: str, index_type: str | None = None) -> str:
    """The table part ``name`` searches; refuses an unknown part, or an unknown ``index_type`` when one is given."""
    if name not in PARTS or (index_type is not None and index_type not in INDEX_TYPES):
        raise ValueError(
            f"unknown part {name!r} or index type {index_type!r}; expected one of {', '.join(PARTS)} and {', '.join(INDEX_TYPES)}"
        )
    return PARTS[name]


def _index_type_of(index) -> str:
    import faiss

    for name, kind in (("hnsw", faiss.IndexHNSW), ("ivf", faiss.IndexIVF), ("exact", faiss.IndexFlat)):
        if isinstance(index, kind):
            return name
    raise ArtifactError(f"a {type(index).__name__} is not a shard index (HNSW, IVF or flat)")


def _takes(index, params) -> bool:
    """Whether FAISS search parameters ``params`` are for this shard's kind of index."""
    import faiss

    if isinstance(params, faiss.SearchParametersHNSW):
        return isinstance(index, faiss.IndexHNSW)
    return isinstance(params, faiss.SearchParametersIVF) and isinstance(index, faiss.IndexIVF)


def _shard_of(rows, index, s: int, n: int) -> Shard:
    """Shard ``s`` holding table ``rows`` (a range or an int array, in label order) of a table of ``n`` rows."""
    size = int(index.ntotal)
    if isinstance(rows, range):
        if rows.step != 1 or len(rows) != size or (size and (rows.start < 1 or rows.stop - 1 > n)):
            raise ValueError(f"shard {s}: rows {rows} do not fit its {size} vectors within rows 1..{n}")
        return Shard(index, first_row=rows.start if size else 1)
    arr = np.asarray(rows)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"shard {s}: rows must be a range or a 1-d integer array")
    arr = arr.astype(np.int64)
    if len(arr) != size or (size and (arr.min() < 1 or arr.max() > n)):
        raise ValueError(f"shard {s}: {len(arr)} rows for its {size} vectors, or rows outside 1..{n}")
    if size and np.all(np.diff(arr) == 1):
        return Shard(index, first_row=int(arr[0]))
    return Shard(index, first_row=1, rows=arr)


def _check_cover(shards: list[Shard], n: int) -> None:
    """Refuse shards that do not hold every table row 1..n exactly once."""
    covered = np.zeros(n + 1, dtype=bool)
    for shard in shards:
        covered[shard.rows if shard.rows is not None else slice(shard.first_row, shard.first_row + shard.size)] = True
    total = sum(shard.size for shard in shards)
    if total != n or not covered[1:].all():
        raise ValueError(
            f"the shards hold {total} vectors covering {int(covered[1:].sum())} of rows 1..{n}: each row must be in exactly one"
        )


def _spot_check(part: Part, shard: Shard, weights: np.ndarray, biases: np.ndarray, label: str) -> None:
    """Refuse a shard whose first stored vector (flat, HNSW or IVF-flat) is not what ``part`` stores for its row."""
    import faiss

    index, found = shard.index, None
    if index.ntotal and not isinstance(index, faiss.IndexIVF):
        found = 0, index.reconstruct(0)
    elif index.ntotal:
        lists = index.invlists
        i = next(i for i in range(index.nlist) if lists.list_size(i))
        code = bytes(faiss.rev_swig_ptr(lists.get_codes(i), lists.code_size))
        found = int(faiss.rev_swig_ptr(lists.get_ids(i), 1)[0]), np.frombuffer(code, dtype=np.float32)
    if found is None:
        return
    row = int(shard.global_labels(np.array([[found[0]]], dtype=np.int64))[0, 0]) + 1
    expected = part.faiss_input(weights, biases, np.array([row]))[0]
    if found[1].shape != expected.shape or not np.allclose(found[1], expected, rtol=1e-5, atol=1e-6):
        raise StaleIndexError(
            f"{label}: holds another vector for {part.table} row {row} than the model's (other vectors, another row order, "
            f"metric or lift): rebuild it"
        )


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


__all__ = ["ShardSet", "ShardedPart", "build_ondisk_ivf", "build_shard", "lift_norm2", "open_ondisk_ivf", "shard_index", "write_shard"]
