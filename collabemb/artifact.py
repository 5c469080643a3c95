"""The fitted-model artifact: one directory, no pickle, written atomically.

Layout::

    DIR/
      config.json          format, schema_version, model class, n_factors, y_range, table sizes,
                           registry fingerprints, fit history
      users.json           user registry: {"name", "kind": "int"|"str", "ids": [...]} in row order,
                           so ids[0] is row 1 (row 0, the unknown slot, has no ID)
      items.json           item registry, same form
      tensors.safetensors  u_weight (n_user_rows, k), i_weight (n_item_rows, k),
                           u_bias (n_user_rows, 1), i_bias (n_item_rows, 1), float32
      item_metadata.parquet  optional: an ``item`` column of raw IDs plus titles, genres, ...
      seen_indptr.npy, seen_items.npy  optional: training (user, item) pairs as an int32 CSR of rows
      index-{items,users,recommend}.faiss  optional: FAISS indexes (collabemb.index), with their
                           registry fingerprints and vector checksums in config.json

Saving writes everything into a temporary directory beside the target and renames it into place,
so a crash never leaves a half-written artifact under the final name. Loading checks the format,
the schema version and every tensor shape against the registries, and refuses a mismatch.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from collabemb.models import EmbeddingDotBias
from collabemb.registry import IdRegistry
from collabemb.train import FitHistory

FORMAT = "collabemb-artifact"
SCHEMA_VERSION = 1
TENSOR_NAMES = ("u_weight", "i_weight", "u_bias", "i_bias")
METADATA_FILE = "item_metadata.parquet"


class ArtifactError(ValueError):
    """An artifact directory that is missing, foreign, from a newer schema, or inconsistent."""


def save_model(model: EmbeddingDotBias, directory: str | os.PathLike) -> Path:
    """Write ``model`` to ``directory`` (replacing an existing artifact there only when complete)."""
    target = Path(directory)
    if target.exists() and not (target / "config.json").is_file() and any(target.iterdir()):
        raise ArtifactError(f"{target}: exists and is not a collabemb artifact; refusing to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; an artifact is an ordinary directory
        config = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "model": type(model).__name__,
            "n_factors": model.n_factors,
            "y_range": list(model.y_range) if model.y_range is not None else None,
            "n_user_rows": model.users.n_rows,
            "n_item_rows": model.items.n_rows,
            "user_fingerprint": model.users.fingerprint(),
            "item_fingerprint": model.items.fingerprint(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "history": model.history.to_dict() if model.history is not None else None,
        }
        _write_json(tmp / "users.json", model.users.to_dict())
        _write_json(tmp / "items.json", model.items.to_dict())
        tensors = {name: getattr(model, name).weight.detach().to("cpu", torch.float32).contiguous() for name in TENSOR_NAMES}
        save_file(tensors, str(tmp / "tensors.safetensors"), metadata={"format": FORMAT})
        os.chmod(tmp / "tensors.safetensors", 0o666 & ~_umask())
        if model.item_metadata is not None:
            _write_parquet(model.item_metadata, tmp / METADATA_FILE)
            config["item_metadata"] = METADATA_FILE
        if getattr(model, "seen_items", None) is not None:
            config["seen_items"] = model.seen_items._save(tmp, model.users.n_rows)
        if getattr(model, "index", None) is not None:
            config["index"] = model.index._save(tmp)  # refuses an index that no longer matches the model
        _write_json(tmp / "config.json", config)  # last: its presence marks a complete artifact
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_model(directory: str | os.PathLike) -> EmbeddingDotBias:
    """Read an artifact written by :func:`save_model`. Nothing is unpickled."""
    root = Path(directory)
    if not root.is_dir():
        raise ArtifactError(f"{root}: no such artifact directory")
    config = _read_json(root / "config.json")
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
    expected = {
        "u_weight": (users.n_rows, k),
        "i_weight": (items.n_rows, k),
        "u_bias": (users.n_rows, 1),
        "i_bias": (items.n_rows, 1),
    }
    for name, shape in expected.items():
        if name not in tensors:
            raise ArtifactError(f"{tensor_path}: tensor {name!r} is missing")
        found = tuple(tensors[name].shape)
        if found != shape:
            raise ArtifactError(
                f"{tensor_path}: tensor {name!r} has shape {found}, expected {shape} "
                f"from the registries ({len(users)} users, {len(items)} items, {k} factors, plus row 0)"
            )
    model = EmbeddingDotBias(users, items, n_factors=k, y_range=tuple(config["y_range"]) if config["y_range"] is not None else None)
    with torch.no_grad():
        for name in TENSOR_NAMES:
            getattr(model, name).weight.copy_(tensors[name])
    if config.get("item_metadata"):
        meta = _read_parquet(root / METADATA_FILE)
        try:
            model.set_item_metadata(meta)
        except (ValueError, TypeError) as exc:
            raise ArtifactError(f"{root / METADATA_FILE}: {exc}") from None
    if config.get("history") is not None:
        model.history = FitHistory.from_dict(config["history"])
    if config.get("seen_items") or config.get("index"):  # optional; older artifacts have neither
        from collabemb.index import SeenItems, SimilarityIndex

        if config.get("seen_items"):
            model.seen_items = SeenItems._load(root, users, items)
        if config.get("index"):
            model.index = SimilarityIndex._load(model, root, config["index"])
    model.eval()
    return model


def read_config(directory: str | os.PathLike) -> dict:
    """The artifact's config.json as a dict (for ``collabemb info``)."""
    return _read_json(Path(directory) / "config.json")


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=True, allow_nan=False)
        fh.flush()
        os.fsync(fh.fileno())


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


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` directory to ``target``; an old artifact is removed only afterwards."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rmdir(old)
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
