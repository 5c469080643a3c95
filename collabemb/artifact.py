"""The fitted-model artifact: one directory, no pickle, written atomically.

Layout::

    DIR/
      config.json          format, schema_version, model class, n_factors, y_range, table sizes,
                           registry fingerprints, the model's identity, fit history, and the
                           entries of the stored seen items, metadata and index
      users.json           user registry: {"name", "id_type": "int"|"str", "ids": [...]} in row
                           order, so ids[0] is row 1 (row 0, the unknown slot, has no ID)
      items.json           item registry, same form
      tensors.safetensors  u_weight (n_user_rows, k), i_weight (n_item_rows, k),
                           u_bias (n_user_rows, 1), i_bias (n_item_rows, 1), float32
      seen_indptr.npy, seen_items.npy  training (user, item) pairs as an int32 CSR of rows
      item_metadata.parquet  optional: an ``item`` column of raw IDs plus titles, genres, ...
      index-*.faiss        optional: the bytes of a similarity index (collabemb.index builds
                           and checks them; this module stores them)

Saving writes everything into a temporary directory beside the target and renames it into place
(:mod:`collabemb.atomic`), so a crash never leaves a half-written artifact under the final name.
Loading checks the format, the schema version and every tensor shape against the registries, and
refuses a mismatch. Artifacts of schema 1 (before the identity record) are read too.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from collabemb.atomic import atomic_dir
from collabemb.fitted import FittedModel, ModelIdentity, StoredIndex
from collabemb.history import FitHistory
from collabemb.interactions import SeenItems
from collabemb.models import TABLE_NAMES, EmbeddingDotBias
from collabemb.registry import IdRegistry

FORMAT = "collabemb-artifact"
SCHEMA_VERSION = 2
METADATA_FILE = "item_metadata.parquet"
SEEN_INDPTR_FILE = "seen_indptr.npy"
SEEN_INDICES_FILE = "seen_items.npy"


class ArtifactError(ValueError):
    """An artifact directory that is missing, foreign, from a newer schema, or inconsistent."""


def save_model(fitted: FittedModel, directory: str | os.PathLike) -> Path:
    """Write ``fitted`` to ``directory`` (replacing an existing artifact there only when complete).

    The stored index, if any, is asked for its files first: a stale index is refused before
    anything is written.
    """
    target = Path(directory)
    if target.exists() and not (target / "config.json").is_file() and (not target.is_dir() or any(target.iterdir())):
        raise ArtifactError(f"{target}: exists and is not a collabemb artifact; refusing to replace it")
    index_entry, index_files = fitted.index.to_files() if fitted.index is not None else (None, {})
    with atomic_dir(target) as tmp:
        write_model_files(fitted, tmp, index_entry, index_files)
    return target


def write_model_files(fitted: FittedModel, tmp: Path, index_entry: dict | None = None, index_files: dict | None = None) -> None:
    """Write the artifact's files into the (new, empty) directory ``tmp``; config.json last."""
    module = fitted.module
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
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "identity": fitted.identity.to_dict(),
        "history": fitted.history.to_dict(),
    }
    _write_json(tmp / "users.json", module.users.to_dict())
    _write_json(tmp / "items.json", module.items.to_dict())
    tensors = {name: getattr(module, name).weight.detach().to("cpu", torch.float32).contiguous() for name in TABLE_NAMES}
    save_file(tensors, str(tmp / "tensors.safetensors"), metadata={"format": FORMAT})
    seen = fitted.seen_items.padded(module.users.n_rows)
    np.save(tmp / SEEN_INDPTR_FILE, seen.indptr, allow_pickle=False)
    np.save(tmp / SEEN_INDICES_FILE, seen.indices, allow_pickle=False)
    config["seen_items"] = {"indptr": SEEN_INDPTR_FILE, "indices": SEEN_INDICES_FILE, "n_pairs": len(seen)}
    if len(fitted.item_metadata.columns) > 1 or len(fitted.item_metadata):
        _write_parquet(fitted.item_metadata, tmp / METADATA_FILE)
        config["item_metadata"] = METADATA_FILE
    if index_entry is not None:
        for name, data in (index_files or {}).items():
            if not name.startswith("index-") or "/" in name:
                raise ArtifactError(f"index file name {name!r} must start with 'index-' and name no directory")
            np.asarray(data, dtype=np.uint8).tofile(tmp / name)
        config["index"] = {**index_entry, "files": sorted(index_files or {})}
    _write_json(tmp / "config.json", config)  # last: its presence marks a complete artifact


def load_model(directory: str | os.PathLike) -> FittedModel:
    """Read an artifact written by :func:`save_model`. Nothing is unpickled."""
    root = Path(directory)
    if not root.is_dir():
        raise ArtifactError(f"{root}: no such artifact directory")
    config = _read_json(root / "config.json")
    module = _load_module(root, config)
    history = FitHistory.from_dict(config["history"]) if isinstance(config.get("history"), dict) else FitHistory()
    try:
        identity = ModelIdentity.from_dict(config["identity"]) if "identity" in config else _identity_of_schema_1(history, config)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{root / 'config.json'}: bad identity entry ({exc})") from None
    fitted = FittedModel(module, identity, history)
    if config.get("seen_items"):
        fitted.seen_items = _load_seen(root, module.users, module.items)
    if config.get("item_metadata"):
        meta = _read_parquet(root / METADATA_FILE)
        try:
            fitted.set_item_metadata(meta)
        except (ValueError, TypeError) as exc:
            raise ArtifactError(f"{root / METADATA_FILE}: {exc}") from None
    if config.get("index"):
        fitted.index = _load_index(root, config["index"])
    module.eval()
    return fitted


def read_config(directory: str | os.PathLike) -> dict:
    """The artifact's config.json as a dict (for ``collabemb info``)."""
    return _read_json(Path(directory) / "config.json")


def _load_module(root: Path, config: dict) -> EmbeddingDotBias:
    if config.get("format") != FORMAT:
        raise ArtifactError(f"{root / 'config.json'}: not a collabemb artifact (format {config.get('format')!r})")
    version = config.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ArtifactError(
            f"{root / 'config.json'}: schema_version {version!r} is newer than this collabemb reads ({SCHEMA_VERSION}); upgrade collabemb"
        )
    if config.get("model") != "EmbeddingDotBias":
        raise ArtifactError(f"{root / 'config.json'}: unknown model {config.get('model')!r}")
    try:
        users = IdRegistry.from_dict(_read_json(root / "users.json"))
        items = IdRegistry.from_dict(_read_json(root / "items.json"))
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{root}: bad registry ({exc})") from None
    for reg, key in ((users, "user"), (items, "item")):
        if config.get(f"{key}_fingerprint") != reg.fingerprint():
            raise ArtifactError(f"{root / (key + 's.json')}: registry does not match config.json (fingerprint differs)")
    tensor_path = root / "tensors.safetensors"
    if not tensor_path.is_file():
        raise ArtifactError(f"{tensor_path}: missing")
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{tensor_path}: unreadable ({exc})") from None
    k = config["n_factors"]
    expected = {"u_weight": (users.n_rows, k), "i_weight": (items.n_rows, k), "u_bias": (users.n_rows, 1), "i_bias": (items.n_rows, 1)}
    for name, shape in expected.items():
        if name not in tensors:
            raise ArtifactError(f"{tensor_path}: tensor {name!r} is missing")
        found = tuple(tensors[name].shape)
        if found != shape:
            raise ArtifactError(
                f"{tensor_path}: tensor {name!r} has shape {found}, expected {shape} "
                f"from the registries ({len(users)} users, {len(items)} items, {k} factors, plus row 0)"
            )
    y_range = tuple(config["y_range"]) if config["y_range"] is not None else None
    module = EmbeddingDotBias(users, items, n_factors=k, y_range=y_range)
    with torch.no_grad():
        for name in TABLE_NAMES:
            getattr(module, name).weight.copy_(tensors[name])
    return module


def _identity_of_schema_1(history: FitHistory, config: dict) -> ModelIdentity:
    """Schema-1 artifacts kept the model's identity inside the history's params (and, for vectors
    imported into an index, a ``has_unknown_slot: false`` in the index entry)."""
    params = history.params
    family = str(params.get("model", "rating"))
    row0 = {"rating": "trained", "popularity": "mean_count"}.get(family, "mean")
    index = config.get("index")
    if isinstance(index, dict) and index.get("has_unknown_slot") is False:
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


def _load_seen(root: Path, users: IdRegistry, items: IdRegistry) -> SeenItems:
    try:
        indptr = np.load(root / SEEN_INDPTR_FILE, allow_pickle=False)
        indices = np.load(root / SEEN_INDICES_FILE, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{root}: seen items unreadable ({exc})") from None
    if indptr.dtype != np.int64 or indices.dtype != np.int32:
        raise ArtifactError(f"{root / SEEN_INDPTR_FILE}: expected int64 indptr and int32 items, found {indptr.dtype} and {indices.dtype}")
    if len(indptr) != users.n_rows + 1:
        raise ArtifactError(f"{root / SEEN_INDPTR_FILE}: {len(indptr) - 1} user rows, the registry has {users.n_rows}")
    if len(indices) and (indices.min() < 1 or indices.max() >= items.n_rows):
        raise ArtifactError(f"{root / SEEN_INDICES_FILE}: item rows outside 1..{len(items)}")
    try:
        return SeenItems(indptr, indices)
    except ValueError as exc:
        raise ArtifactError(f"{root / SEEN_INDPTR_FILE}: {exc}") from None


def _load_index(root: Path, entry: dict) -> StoredIndex:
    if not isinstance(entry, dict):
        raise ArtifactError(f"{root / 'config.json'}: bad index entry (not an object)")
    # schema 1 listed no files: one index-{part}.faiss per part
    names = entry["files"] if "files" in entry else [f"index-{part}.faiss" for part in entry.get("parts", {})]
    files = {}
    for name in names:
        if not isinstance(name, str) or not name.startswith("index-") or "/" in name or "\\" in name:
            raise ArtifactError(f"{root / 'config.json'}: bad index file name {name!r}")
        path = root / name
        if not path.is_file():
            raise ArtifactError(f"{path}: missing")
        files[name] = np.fromfile(path, dtype=np.uint8)
    return StoredIndex({k: v for k, v in entry.items() if k != "files"}, files)


def _write_parquet(frame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ArtifactError(f"item metadata cannot be stored as parquet: {exc}") from None
    pq.write_table(table, path)


def _read_parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        frame = pq.read_table(path).to_pandas()
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise ArtifactError(f"{path}: unreadable ({exc})") from None
    # object columns of Python str, as the registry keeps them
    for col in frame.columns:
        if pd.api.types.is_string_dtype(frame[col].dtype):
            frame[col] = frame[col].astype(object)
    return frame


def _write_json(path: Path, data: dict) -> None:
    """A JSON file inside a directory that is itself being written atomically."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=True, allow_nan=False)


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing (not a complete collabemb artifact)") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}, line {exc.lineno}, column {exc.colno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    return data
