"""The fitted-model artifact: one verified snapshot, no pickle, replaced in one atomic step.

An artifact is a store (:mod:`collabemb.store`): ``DIR/CURRENT`` points at the current snapshot
``DIR/snap-*/``, which holds::

    manifest.json        every file below with its size and SHA-256 (written last)
    config.json          format, schema_version, model class, n_factors, y_range, table sizes,
                         registry fingerprints, the tensors' SHA-256, the model's identity, fit
                         history, and the entries of the stored seen items, metadata and index
    users.json           user registry: {"name", "id_type": "int"|"str", "ids": [...]} in row
                         order, so ids[0] is row 1 (row 0, the unknown slot, has no ID)
    items.json           item registry, same form
    tensors.safetensors  u_weight (n_user_rows, k), i_weight (n_item_rows, k),
                         u_bias (n_user_rows, 1), i_bias (n_item_rows, 1), float32, finite;
                         svdpp models also y_weight (n_item_rows, k), the history vectors
    seen_indptr.npy, seen_items.npy  training (user, item) pairs as an int64/int32 CSR of rows
    item_metadata.parquet  optional: an ``item`` column of raw IDs plus titles, genres, ...
    MODEL_CARD.md        the model card (:mod:`collabemb.model_card`), UTF-8 Markdown; artifacts
                         written before cards have none, and nothing needs it to load a model
    index-*.faiss        optional: the bytes of a similarity index (collabemb.index builds
                         and checks them; this module stores them)

Saving refuses non-finite weights and a stale index before anything is written, then writes a
new snapshot and swaps the pointer (a second process saving to the same path is refused while
the first holds the lock). Loading reads one snapshot under a shared lock, checks every file
against the manifest (size, then SHA-256) before parsing it, every JSON file against its schema
(:mod:`collabemb.schema`), and every tensor's dtype, shape and finiteness, and refuses a
mismatch with an :class:`ArtifactError` naming the file. Artifacts of schema 1 (before the
identity record) and artifacts written before manifests (files directly in ``DIR``) still load,
the latter unverified (with a warning).
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
import warnings
from pathlib import Path
from tokenize import TokenError

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from collabemb.fitted import FittedModel, ModelIdentity, StoredIndex
from collabemb.history import FitHistory
from collabemb.interactions import SeenItems
from collabemb.model_card import model_card
from collabemb.models import TABLE_NAMES, EmbeddingDotBias
from collabemb.registry import IdRegistry
from collabemb.schema import CONFIG, CONFIG_MAX_BYTES, REGISTRY, REGISTRY_MAX_BYTES, ArtifactError, parse_json
from collabemb.store import Snapshot, SnapshotWriter, open_snapshot, store_path, write_snapshot, writer_lock

__all__ = ["ArtifactError", "load_model", "read_config", "read_model_card", "save_model", "writer_lock"]

FORMAT = "collabemb-artifact"
SCHEMA_VERSION = 2
CONFIG_FILE = "config.json"
TENSORS_FILE = "tensors.safetensors"
METADATA_FILE = "item_metadata.parquet"
#: svdpp models: the items' history vectors, a fifth tensor beside the module's four tables.
HISTORY_TABLE = "y_weight"
SEEN_INDPTR_FILE = "seen_indptr.npy"
SEEN_INDICES_FILE = "seen_items.npy"
MODEL_CARD_FILE = "MODEL_CARD.md"
#: A card is a page of text; a larger file is refused before it is read.
MODEL_CARD_MAX_BYTES = 1 << 20


def save_model(fitted: FittedModel, directory: str | os.PathLike) -> Path:
    """Write ``fitted`` to ``directory`` as a new snapshot that replaces the old one only when complete.

    Non-finite weights and a stale index are refused before anything is written. Another process
    writing the same ``directory`` at the same time: :class:`~collabemb.store.StoreLockedError`.
    """
    target = store_path(directory)
    index_entry, index_files = fitted.index.to_files() if fitted.index is not None else (None, {})
    with write_snapshot(target, "artifact") as writer:
        write_model_files(fitted, writer, index_entry, index_files)
    return target


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether a tensor holds no NaN or infinity (checked in numpy: ten times torch.isfinite's speed on the CPU)."""
    return bool(np.isfinite(tensor.detach().cpu().numpy()).all())


def index_file_name(part: str) -> str:
    """The file a similarity index part is stored under: ``index-{part}.faiss``."""
    return f"index-{part}.faiss"


def check_storable(module: EmbeddingDotBias) -> None:
    """Refuse a model whose tables are not float32 (an artifact stores float32 exactly; a silent cast
    would change the model) or hold NaN or infinity (it would predict NaN), naming the table."""
    for name in TABLE_NAMES:
        weight = getattr(module, name).weight
        if weight.dtype != torch.float32:
            raise ArtifactError(
                f"the model's {name} table is {str(weight.dtype).replace('torch.', '')}; artifacts store float32: "
                f"convert the module with .float() first if that precision is what you want"
            )
        if not all_finite(weight):
            rows = torch.nonzero(~torch.isfinite(weight).all(dim=1)).flatten()
            raise ArtifactError(
                f"the model's {name} table holds NaN or infinity (in {len(rows)} row(s), first row {int(rows[0])}); "
                f"refusing to store it: training diverged or the weights were edited"
            )


def write_model_files(
    fitted: FittedModel, writer: SnapshotWriter, index_entry: dict | None = None, index_files: dict | None = None
) -> None:
    """Write the artifact's files into a new snapshot (``writer``); config.json last."""
    check_storable(fitted.module)  # before any file: every writer of a model (save, checkpoint) meets it
    module = fitted.module
    writer.write("users.json", _json_bytes(module.users.to_dict()))
    writer.write("items.json", _json_bytes(module.items.to_dict()))
    tensors = {name: getattr(module, name).weight.detach().to("cpu", torch.float32).contiguous() for name in TABLE_NAMES}
    if fitted.history_vectors is not None:  # svdpp: the items' history vectors, for new users
        if not np.isfinite(fitted.history_vectors).all():
            raise ArtifactError("the model's history vectors hold NaN or infinity; refusing to store them")
        tensors[HISTORY_TABLE] = torch.from_numpy(np.ascontiguousarray(fitted.history_vectors))
    writer.write(TENSORS_FILE, save_safetensors(tensors, metadata={"format": FORMAT, **_bound(module)}))
    writer.write(MODEL_CARD_FILE, model_card(fitted).encode("utf-8"))
    config = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "model": type(module).__name__,
        "n_factors": module.n_factors,
        "y_range": list(module.y_range) if module.y_range is not None else None,
        "n_user_rows": module.users.n_rows,
        "n_item_rows": module.items.n_rows,
        "user_fingerprint": module.users.fingerprint(),
        "item_fingerprint": module.items.fingerprint(),
        "tensors_sha256": writer.files[TENSORS_FILE]["sha256"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "identity": fitted.identity.to_dict(),
        "history": fitted.history.to_dict(),
    }
    seen = fitted.seen_items.padded(module.users.n_rows)
    writer.write(SEEN_INDPTR_FILE, _npy_bytes(seen.indptr))
    writer.write(SEEN_INDICES_FILE, _npy_bytes(seen.indices))
    config["seen_items"] = {"indptr": SEEN_INDPTR_FILE, "indices": SEEN_INDICES_FILE, "n_pairs": len(seen)}
    if len(fitted.item_metadata.columns) > 1 or len(fitted.item_metadata):
        writer.write(METADATA_FILE, _parquet_bytes(fitted.item_metadata))
        config["item_metadata"] = METADATA_FILE
    if index_entry is not None:
        parts = {}
        for part, entry in index_entry["parts"].items():
            name = index_file_name(part)
            writer.write(name, np.ascontiguousarray(index_files[name], dtype=np.uint8))
            # bound to these very bytes and tensors (collabemb.faiss_files)
            parts[part] = {**entry, "file_sha256": writer.files[name]["sha256"], "tensors_sha256": config["tensors_sha256"]}
        config["index"] = {**index_entry, "parts": parts, "files": sorted(writer.files.keys() & {index_file_name(p) for p in parts})}
    writer.write(CONFIG_FILE, _json_bytes(config))


def load_model(directory: str | os.PathLike) -> FittedModel:
    """Read an artifact written by :func:`save_model`, verified file by file. Nothing is unpickled."""
    with open_snapshot(directory, "artifact", also=("checkpoint",)) as snapshot:
        return read_model_files(snapshot)


def read_model_files(snapshot: Snapshot) -> FittedModel:
    """The model stored in ``snapshot`` (an artifact's or a checkpoint's), every file checked."""
    root = snapshot.directory
    if not snapshot.verified:
        warnings.warn(
            f"{root} was written before artifacts carried a manifest: its files cannot be verified; save it again to add one", stacklevel=3
        )
    config = parse_json(snapshot.read(CONFIG_FILE, max_bytes=CONFIG_MAX_BYTES), root / CONFIG_FILE, CONFIG)
    _check_config(root, config)
    names = [TENSORS_FILE]
    if config.get("seen_items"):
        names += [SEEN_INDPTR_FILE, SEEN_INDICES_FILE]
    if config.get("item_metadata"):
        names.append(METADATA_FILE)
    index_names = _index_file_names(root, config.get("index"))
    data = snapshot.read_many(names + index_names)
    history = FitHistory.from_dict(config.get("history") or {})
    try:
        identity = ModelIdentity.from_dict(config["identity"]) if "identity" in config else _identity_of_schema_1(history, config)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{root / CONFIG_FILE}: key 'identity': {exc}") from None
    module, history_vectors = _load_module(snapshot, config, data[TENSORS_FILE], svdpp=identity.rating_model == "svdpp")
    fitted = FittedModel(module, identity, history, history_vectors=history_vectors)
    if config.get("seen_items"):
        fitted.seen_items = _load_seen(root, data, module.users, module.items, config["seen_items"]["n_pairs"])
    if config.get("item_metadata"):
        try:
            fitted.set_item_metadata(_read_parquet(data[METADATA_FILE], root / METADATA_FILE))
        except (ValueError, TypeError) as exc:
            raise ArtifactError(f"{root / METADATA_FILE}: {exc}") from None
    if config.get("index"):
        files = {name: np.frombuffer(data[name], dtype=np.uint8) for name in index_names}
        verified = {name: snapshot.files[name]["sha256"] for name in (*index_names, TENSORS_FILE)} if snapshot.verified else None
        fitted.index = StoredIndex({k: v for k, v in config["index"].items() if k != "files"}, files, verified)
    module.eval()
    return fitted


def read_config(directory: str | os.PathLike) -> dict:
    """The artifact's config.json as a dict (for ``collabemb info``), verified and schema-checked."""
    with open_snapshot(directory, "artifact", also=("checkpoint",)) as snapshot:
        path = snapshot.directory / CONFIG_FILE
        config = parse_json(snapshot.read(CONFIG_FILE, max_bytes=CONFIG_MAX_BYTES), path, CONFIG)
    _check_config(path.parent, config)
    return config


def read_model_card(directory: str | os.PathLike) -> str | None:
    """The artifact's MODEL_CARD.md (for ``collabemb info``), verified against the manifest; None for an
    artifact written before cards (it has none)."""
    with open_snapshot(directory, "artifact", also=("checkpoint",)) as snapshot:
        if not snapshot.has(MODEL_CARD_FILE):
            return None
        path = snapshot.directory / MODEL_CARD_FILE
        data = snapshot.read(MODEL_CARD_FILE, max_bytes=MODEL_CARD_MAX_BYTES)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _check_config(root: Path, config: dict) -> None:
    path = root / CONFIG_FILE
    if config["schema_version"] > SCHEMA_VERSION:
        raise ArtifactError(
            f"{path}: schema_version {config['schema_version']} is newer than this collabemb reads ({SCHEMA_VERSION}); upgrade collabemb"
        )
    if config["model"] != "EmbeddingDotBias":
        raise ArtifactError(f"{path}: key 'model': unknown model {config['model']!r}")
    y_range = config["y_range"]
    if y_range is not None and not y_range[0] < y_range[1]:
        raise ArtifactError(f"{path}: key 'y_range': the low end {y_range[0]} must be below the high end {y_range[1]}")


def _index_file_names(root: Path, entry: dict | None) -> list[str]:
    if not entry:
        return []
    # schema 1 listed no files: one index-{part}.faiss per part
    names = entry["files"] if "files" in entry else [index_file_name(part) for part in entry["parts"]]
    expected = sorted(index_file_name(part) for part in entry["parts"])
    if sorted(names) != expected:
        raise ArtifactError(f"{root / CONFIG_FILE}: key 'index.files': {sorted(names)} do not match the parts {expected}")
    return names


def _load_module(snapshot: Snapshot, config: dict, tensor_bytes: bytes, *, svdpp: bool) -> tuple[EmbeddingDotBias, np.ndarray | None]:
    """The module, and the history vectors of an svdpp model (None for any other)."""
    root = snapshot.directory
    users = _load_registry(snapshot, "users.json", config["n_user_rows"])
    items = _load_registry(snapshot, "items.json", config["n_item_rows"])
    for reg, key in ((users, "user"), (items, "item")):
        if config[f"{key}_fingerprint"] != reg.fingerprint():
            raise ArtifactError(f"{root / (key + 's.json')}: registry does not match config.json (fingerprint differs)")
    tensor_path = root / TENSORS_FILE
    if snapshot.verified and config.get("tensors_sha256") not in (None, snapshot.files[TENSORS_FILE]["sha256"]):
        raise ArtifactError(f"{tensor_path}: not the tensors config.json was written with (SHA-256 differs)")
    try:
        tensors = load_safetensors(tensor_bytes)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{tensor_path}: unreadable ({exc})") from None
    _check_bound(root, tensor_bytes, config, users, items)
    k = config["n_factors"]
    expected = {"u_weight": (users.n_rows, k), "i_weight": (items.n_rows, k), "u_bias": (users.n_rows, 1), "i_bias": (items.n_rows, 1)}
    if svdpp:
        expected[HISTORY_TABLE] = (items.n_rows, k)
    for name in sorted(set(tensors) - set(expected)):
        raise ArtifactError(f"{tensor_path}: unexpected tensor {name!r}")
    for name, shape in expected.items():
        _check_tensor(tensor_path, name, tensors.get(name), shape, users, items, k)
    y_range = tuple(config["y_range"]) if config["y_range"] is not None else None
    history_vectors = tensors.pop(HISTORY_TABLE).numpy() if svdpp else None
    return EmbeddingDotBias(users, items, n_factors=k, y_range=y_range, tables=tensors), history_vectors


def _bound(module: EmbeddingDotBias) -> dict[str, str]:
    """What the tensors file records of the model beside its tables (safetensors metadata), so that
    config.json and the registries cannot be edited to disagree with the tables unnoticed."""
    return {
        "n_factors": str(module.n_factors),
        "y_range": json.dumps(list(module.y_range) if module.y_range is not None else None),
        "user_fingerprint": module.users.fingerprint(),
        "item_fingerprint": module.items.fingerprint(),
    }


def _check_bound(root: Path, tensor_bytes: bytes, config: dict, users: IdRegistry, items: IdRegistry) -> None:
    """Refuse a config.json or a registry that differs from what the tensors file recorded of the
    model (tensors written before 0.3 recorded nothing: nothing to compare)."""
    (length,) = struct.unpack("<Q", tensor_bytes[:8])
    recorded = json.loads(tensor_bytes[8 : 8 + length]).get("__metadata__", {})  # safetensors has parsed this header already
    for key, value in (("n_factors", str(config["n_factors"])), ("y_range", json.dumps(config["y_range"]))):
        if key in recorded and recorded[key] != value:
            raise ArtifactError(
                f"{root / CONFIG_FILE}: key {key!r}: {value} does not match the {recorded[key]} {TENSORS_FILE} was written with"
            )
    for registry, key in ((users, "user"), (items, "item")):
        if recorded.get(f"{key}_fingerprint", registry.fingerprint()) != registry.fingerprint():
            raise ArtifactError(f"{root / (key + 's.json')}: not the {key} registry {TENSORS_FILE} was written with (fingerprint differs)")


def _check_tensor(path: Path, name: str, tensor, shape: tuple, users: IdRegistry, items: IdRegistry, k: int) -> None:
    if tensor is None:
        raise ArtifactError(f"{path}: tensor {name!r} is missing")
    if tensor.dtype != torch.float32:
        raise ArtifactError(f"{path}: tensor {name!r} is {str(tensor.dtype).replace('torch.', '')}, expected float32")
    if tuple(tensor.shape) != shape:
        raise ArtifactError(
            f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}, expected {shape} "
            f"from the registries ({len(users)} users, {len(items)} items, {k} factors, plus row 0)"
        )
    if not all_finite(tensor):
        row = int(torch.nonzero(~torch.isfinite(tensor).all(dim=1)).flatten()[0])
        raise ArtifactError(f"{path}: tensor {name!r} holds NaN or infinity (first in row {row})")


def _load_registry(snapshot: Snapshot, name: str, n_rows: int) -> IdRegistry:
    path = snapshot.directory / name
    data = parse_json(snapshot.read(name, max_bytes=REGISTRY_MAX_BYTES), path, REGISTRY)
    try:
        registry = IdRegistry.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{path}: bad registry ({exc})") from None
    if registry.n_rows != n_rows:
        raise ArtifactError(f"{path}: {len(registry)} IDs, config.json says {n_rows - 1}")
    return registry


def _identity_of_schema_1(history: FitHistory, config: dict) -> ModelIdentity:
    """Schema-1 artifacts kept the model's identity inside the history's params (and, for vectors
    imported into an index, a ``has_unknown_slot: false`` in the index entry)."""
    params = history.params
    family = str(params.get("model", "rating"))
    row0 = {"rating": "trained", "popularity": "mean_count"}.get(family, "mean")
    index = config.get("index")
    if index and index.get("has_unknown_slot") is False:
        family, row0 = "vectors", "none"
    number = lambda key: None if params.get(key) is None else float(params[key])  # noqa: E731
    return ModelIdentity(
        family=family,
        row0=row0,
        weight_decay=number("weight_decay") if family == "rating" else None,
        threshold=number("threshold"),
        weighting=params.get("weighting"),
        regularization=number("regularization") if family == "als" else None,
        alpha=number("alpha"),
    )


def _load_seen(root: Path, data: dict[str, bytes], users: IdRegistry, items: IdRegistry, n_pairs: int) -> SeenItems:
    indptr = _read_npy(data[SEEN_INDPTR_FILE], root / SEEN_INDPTR_FILE, np.int64, users.n_rows + 1)
    indices = _read_npy(data[SEEN_INDICES_FILE], root / SEEN_INDICES_FILE, np.int32, n_pairs)
    if len(indices) and (indices.min() < 1 or indices.max() >= items.n_rows):
        raise ArtifactError(f"{root / SEEN_INDICES_FILE}: item rows outside 1..{len(items)}")
    try:
        return SeenItems(indptr, indices)
    except ValueError as exc:
        raise ArtifactError(f"{root / SEEN_INDPTR_FILE}: {exc}") from None


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _read_npy(data: bytes, path: Path, dtype, length: int) -> np.ndarray:
    """A 1-d ``dtype`` array of ``length`` from .npy bytes; the header is checked before any allocation."""
    buffer = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buffer)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, found = read_header(buffer, max_header_size=10_000)
    except (ValueError, SyntaxError, TypeError, TokenError, RecursionError) as exc:  # numpy parses the header as a Python literal
        raise ArtifactError(f"{path}: not a .npy array ({exc})") from None
    if found != np.dtype(dtype) or len(shape) != 1 or fortran:
        raise ArtifactError(f"{path}: a {found} array of shape {shape}, expected a 1-d {np.dtype(dtype)} array")
    if shape[0] != length:
        raise ArtifactError(f"{path}: {shape[0]} entries, config.json and the registries say {length}")
    body = memoryview(data)[buffer.tell() :]
    if len(body) != length * found.itemsize:
        raise ArtifactError(f"{path}: {len(body)} bytes of data, its header says {length * found.itemsize}")
    return np.frombuffer(body, dtype=found).copy()


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ArtifactError(f"item metadata cannot be stored as parquet: {exc}") from None
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _read_parquet(data: bytes, path: Path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        frame = pq.read_table(pa.BufferReader(data)).to_pandas()
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise ArtifactError(f"{path}: unreadable ({exc})") from None
    # object columns of Python str, as the registry keeps them
    for col in frame.columns:
        if pd.api.types.is_string_dtype(frame[col].dtype):
            frame[col] = frame[col].astype(object)
    return frame


def _json_bytes(data: dict) -> bytes:
    return json.dumps(data, ensure_ascii=True, allow_nan=False).encode("ascii")
