"""Index parts as stored bytes: what an artifact records about each, and the checks on reading one back.

:func:`parts_to_files` turns the built parts of a :class:`~collabemb.index.SimilarityIndex` into
FAISS bytes (``faiss.serialize_index``) and one config entry per part; :func:`parts_from_files`
(and :func:`read_stored_parts`, with the index's settings) reads them back, against any model's
tables (a torch module, or the :class:`~collabemb.model_view.ModelView` of an artifact read without
torch), and refuses, naming the file:

* bytes built for another registry, other vectors or another size
  (:class:`~collabemb.faiss_parts.StaleIndexError`);
* bytes that are not the FAISS index the entry describes: another type or metric, or internal
  tables that disagree with each other or point outside the index (an HNSW graph whose neighbour
  ids or offsets are out of range, IVF labels out of range), which a search could otherwise
  follow out of bounds (:class:`~collabemb.schema.ArtifactError`).

How an index is bound to the tensors it was built from: every entry records the checksum of the
table rows the part holds (``vector_checksum``), and, once in an artifact, the SHA-256 of its own
bytes (``file_sha256``) and of the artifact's tensors file (``tensors_sha256``). When the
artifact's manifest has verified both files (``verified=`` below), comparing those hashes binds
the index to the tensors without hashing the table again; the table checksum is then computed
only if the index is extended or saved (:meth:`Part.running_checksum`). Without a manifest
(artifacts of collabemb 0.2) the table is hashed at load, as before.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

from collabemb.faiss_parts import PARTS, IndexSettings, Part, StaleIndexError, lifts, new_checksum, part_dim, update_checksum
from collabemb.model_view import TENSORS_FILE, StoredIndex, TableSource, index_file_name
from collabemb.schema import ArtifactError


def parts_to_files(parts: dict[str, Part], model: TableSource) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """``({part: entry}, {file name: (n,) uint8 bytes})`` of built parts; refuses stale ones."""
    entries: dict[str, dict] = {}
    files: dict[str, np.ndarray] = {}
    sums: dict[str, str] = {}
    for name, part in parts.items():
        table = part.table
        if table not in sums:
            sums[table] = table_hasher(model, table).hexdigest()
        data = part.to_bytes()
        entries[name] = {**part.entry(model, sums[table], model.registry(table).fingerprint()), "file_checksum": bytes_checksum(data)}
        files[index_file_name(name)] = data
    return entries, files


def parts_from_files(
    entries: dict, files: dict[str, np.ndarray], model: TableSource, settings: IndexSettings, *, verified: dict[str, str] | None = None
) -> dict[str, Part]:
    """The parts :func:`parts_to_files` stored (``entries`` checked by the artifact's schema), each
    checked against ``model``.

    ``verified``: the SHA-256 of each index file and of ``tensors.safetensors`` as the artifact's
    manifest verified them (None for an unverified artifact: the table is hashed instead).
    """
    hashers: dict[str, object] = {}  # per table: the checksum of the model's rows, computed once
    parts: dict[str, Part] = {}
    for name, entry in entries.items():
        file = index_file_name(name)
        if name not in PARTS:
            raise ArtifactError(f"{file}: unknown index part {name!r}; expected one of {', '.join(PARTS)}")
        if verified is None and PARTS[name] not in hashers:
            hashers[PARTS[name]] = table_hasher(model, PARTS[name])
        hasher = hashers.get(PARTS[name])
        parts[name] = part_from_bytes(name, entry, files.get(file), model, settings, file=file, hasher=hasher, verified=verified)
    return parts


def read_stored_parts(stored: StoredIndex, model: TableSource) -> tuple[IndexSettings, dict[str, Part]]:
    """The settings and the parts of an index as an artifact stored it (its config entry and FAISS bytes), each
    part read back and checked against ``model`` (:func:`parts_from_files`).

    Raises :class:`~collabemb.schema.ArtifactError` for an entry whose settings are not valid, and what
    :func:`parts_from_files` raises for the parts.
    """
    config = stored.config
    try:
        params = dict(config.get("params", {}))
        if "kind" in params:  # the name of index_type in indexes stored before 0.2
            params["index_type"] = params.pop("kind")
        settings = IndexSettings(metric=config["metric"], **params)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"config.json: bad index entry ({exc})") from None
    return settings, parts_from_files(config.get("parts", {}), stored.files, model, settings, verified=stored.verified)


def _check_bound(file: str, entry: dict, verified: dict[str, str]) -> None:
    """Refuse an index entry whose recorded hashes are not those of the verified files beside it."""
    if entry.get("file_sha256") != verified.get(file):
        raise StaleIndexError(
            f"{file}: not the bytes config.json recorded for it (SHA-256 differs); the file was replaced or copied "
            f"from another artifact: rebuild it with collabemb.build_index(fitted)"
        )
    if entry.get("tensors_sha256") != verified.get(TENSORS_FILE):
        raise StaleIndexError(
            f"{file}: built from other tensors than this artifact's {TENSORS_FILE} (SHA-256 differs); the index is stale "
            f"or was copied from another artifact: rebuild it with collabemb.build_index(fitted)"
        )


def part_from_bytes(
    name: str, entry: dict, data: np.ndarray | None, model: TableSource, settings: IndexSettings, *, file: str, hasher, verified=None
) -> Part:
    """A part read back from :meth:`Part.to_bytes` and its entry, checked against ``model``.

    ``hasher`` is a checksum fed with the model's whole table, or None when ``verified`` (see
    :func:`parts_from_files`) binds the entry to the files instead (the part then computes its
    checksum only when needed).
    """
    import faiss

    table = PARTS[name]
    registry = model.registry(table)
    fingerprint = registry.fingerprint()
    if entry.get("registry_fingerprint") != fingerprint:
        raise StaleIndexError(
            f"{file}: built for another {table} registry (fingerprint {entry.get('registry_fingerprint')}, "
            f"this model's is {fingerprint}); the index is stale or was copied from another artifact: "
            f"rebuild it with collabemb.build_index(fitted)"
        )
    if verified is not None:
        _check_bound(file, entry, verified)
    elif entry.get("vector_checksum") != hasher.hexdigest():
        raise StaleIndexError(
            f"{file}: built from other {table} vectors than this model's (checksum differs); the index is stale "
            f"or was copied from another artifact: rebuild it with collabemb.build_index(fitted)"
        )
    if data is None:
        raise ArtifactError(f"{file}: missing")
    if verified is None and entry.get("file_checksum") is not None and entry["file_checksum"] != bytes_checksum(data):
        raise StaleIndexError(
            f"{file}: not the bytes config.json describes (checksum differs); the file was replaced or copied from "
            f"another artifact: rebuild it with collabemb.build_index(fitted)"
        )
    _check_flat_layout(data, file)
    try:
        index = faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8))
    except (RuntimeError, MemoryError) as exc:
        raise ArtifactError(f"{file}: unreadable FAISS index ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    index_type = entry.get("index_type", entry.get("kind"))  # "kind" in indexes stored before 0.2
    max_norm2 = entry.get("max_norm2")
    check_type(index, name, index_type, max_norm2, file)
    check_structure(index, file)
    dim = part_dim(name, model.n_factors, max_norm2 is not None)
    if index.d != dim or index.ntotal != len(registry):
        raise StaleIndexError(
            f"{file}: holds {index.ntotal} vectors of dimension {index.d}, expected {len(registry)} "
            f"of dimension {dim}: rebuild it with collabemb.build_index(fitted)"
        )
    checksum = hasher.copy() if hasher is not None else None
    return Part(name, index_type, index, checksum, settings, max_norm2, built_from=entry.get("vector_checksum"))


_FLAT = (b"IxFI", b"IxF2")  # IndexFlatIP, IndexFlatL2
_FLAT_HEADER = struct.Struct("<4siqqq?iQ")  # fourcc, d, ntotal, 2 dummies, is_trained, metric, codes length (floats)


def _check_flat_layout(data: np.ndarray, file: str) -> None:
    """Refuse flat-index bytes whose length fields disagree, before FAISS allocates what they claim."""
    head = bytes(data[: _FLAT_HEADER.size])
    if len(head) < _FLAT_HEADER.size or head[:4] not in _FLAT:
        return
    _, d, ntotal, _, _, _, _, length = _FLAT_HEADER.unpack(head)
    if d < 1 or ntotal < 0 or length != d * ntotal or len(data) != _FLAT_HEADER.size + 4 * length:
        raise ArtifactError(f"{file}: unreadable FAISS index (its header claims {ntotal} vectors of dimension {d} in {len(data)} bytes)")


def check_type(index, name: str, index_type, max_norm2, file: str) -> None:
    """Refuse a deserialised index whose type or metric is not what the entry says."""
    import faiss

    expected_type = {"exact": faiss.IndexFlatIP, "hnsw": faiss.IndexHNSWFlat, "ivf": faiss.IndexIVFFlat}.get(index_type)
    if expected_type is None or not isinstance(index, expected_type):
        raise ArtifactError(f"{file}: a {type(index).__name__}, expected index_type {index_type!r}")
    lifted = isinstance(max_norm2, float)
    if lifted != lifts(name, index_type) and (name, index_type) != ("recommend", "hnsw"):  # HNSW recommend: lifted before 2026-12
        raise ArtifactError(f"{file}: max_norm2 {max_norm2!r} does not fit a {index_type} {name!r} index")
    metric = faiss.METRIC_L2 if lifted else faiss.METRIC_INNER_PRODUCT
    if index.metric_type != metric:
        raise ArtifactError(f"{file}: FAISS metric {index.metric_type}, expected {'L2' if lifted else 'inner product'}")


def check_structure(index, file: str) -> None:
    """Refuse FAISS bytes whose internal tables disagree with each other or point outside the
    index: such bytes deserialise, but a search over them could read out of bounds."""
    import faiss

    n, d = int(index.ntotal), int(index.d)
    if isinstance(index, faiss.IndexHNSWFlat):
        storage, hnsw = faiss.downcast_index(index.storage), index.hnsw
        neighbors, offsets, levels = (faiss.vector_to_array(v) for v in (hnsw.neighbors, hnsw.offsets, hnsw.levels))
        per_level = faiss.vector_to_array(hnsw.cum_nneighbor_per_level)
        levels_ok = len(levels) == n and (n == 0 or (levels.min() >= 1 and levels.max() < len(per_level)))
        problems = {
            "storage size": storage.ntotal != n or storage.d != d or storage.codes.size() != n * d * 4,
            "levels": not levels_ok,
            "offsets": len(offsets) != n + 1 or (n > 0 and levels_ok and not np.array_equal(np.diff(offsets), per_level[levels])),
            "neighbour ids": n > 0 and (len(neighbors) != offsets[-1] or neighbors.min() < -1 or neighbors.max() >= n),
            "entry point": n > 0 and levels_ok and (not 0 <= hnsw.entry_point < n or hnsw.max_level != levels.max() - 1),
        }
    elif isinstance(index, faiss.IndexIVFFlat):
        lists = index.invlists
        sizes = np.array([lists.list_size(i) for i in range(index.nlist)], dtype=np.int64)
        ids = [faiss.rev_swig_ptr(lists.get_ids(i), int(size)) for i, size in enumerate(sizes) if size]
        labels = np.concatenate(ids) if ids else np.empty(0, dtype=np.int64)
        problems = {
            "quantizer": index.quantizer.d != d or (n > 0 and index.quantizer.ntotal != index.nlist),  # empty: untrained
            "list sizes": sizes.min(initial=0) < 0 or int(sizes.sum()) != n,
            "labels": len(labels) != n or (n > 0 and not np.array_equal(np.sort(labels), np.arange(n))),
        }
    else:
        problems = {"storage size": index.codes.size() != n * d * 4}
    bad = [what for what, broken in problems.items() if broken]
    if bad:
        raise ArtifactError(f"{file}: the FAISS index is inconsistent inside ({', '.join(bad)} do not fit its {n} vectors)")


def bytes_checksum(data: np.ndarray) -> str:
    """Hex checksum of a stored part's bytes (recorded beside them, so a swapped file is caught)."""
    return hashlib.blake2b(np.ascontiguousarray(data, dtype=np.uint8), digest_size=16).hexdigest()


def table_hasher(model: TableSource, table: str):
    """A checksum fed with rows 1..n of one table (what a fresh part over it would hold)."""
    h = new_checksum()
    weights, biases = model.tables(table)
    update_checksum(h, weights, biases, 1, len(model.registry(table)) + 1)
    return h
