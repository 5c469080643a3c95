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
mismatch with an :class:`ArtifactError` naming the file; that reading and those checks are
:func:`collabemb.model_view.read_model_view`'s (numpy, no torch), and :func:`fitted_from_view`
builds the torch module on the arrays it read. Artifacts of schema 1 (before the
identity record) and artifacts written before manifests (files directly in ``DIR``) still load,
the latter unverified (with a warning).
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save as save_safetensors

from collabemb.fitted import FittedModel
from collabemb.model_card import model_card
from collabemb.model_view import (
    CONFIG_FILE,
    FORMAT,
    HISTORY_TABLE,
    METADATA_FILE,
    MODEL_CARD_FILE,
    SCHEMA_VERSION,
    SEEN_INDICES_FILE,
    SEEN_INDPTR_FILE,
    TENSORS_FILE,
    ModelView,
    index_file_name,
    read_config,
    read_model_card,
    read_model_view,
)
from collabemb.models import TABLE_NAMES, EmbeddingDotBias
from collabemb.schema import ArtifactError
from collabemb.store import Snapshot, SnapshotWriter, open_snapshot, store_path, write_snapshot, writer_lock

__all__ = [
    "ArtifactError",
    "fitted_from_view",
    "load_model",
    "read_config",
    "read_model_card",
    "read_model_files",
    "save_model",
    "writer_lock",
]


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
    """The model stored in ``snapshot`` (an artifact's or a checkpoint's), every file checked (:func:`read_model_view`)."""
    return fitted_from_view(read_model_view(snapshot))


def fitted_from_view(view: ModelView) -> FittedModel:
    """The torch model of a stored model's view, in eval mode; its tables are the view's arrays (shared, not copied)."""
    tables = {name: torch.from_numpy(view.weights[name]) for name in TABLE_NAMES}
    module = EmbeddingDotBias(view.users, view.items, n_factors=view.n_factors, y_range=view.y_range, tables=tables)
    fitted = FittedModel(module, view.identity, view.history, view.seen_items, view.item_metadata, view.index, view.history_vectors)
    module.eval()
    return fitted


def _bound(module: EmbeddingDotBias) -> dict[str, str]:
    """What the tensors file records of the model beside its tables (safetensors metadata), so that
    config.json and the registries cannot be edited to disagree with the tables unnoticed."""
    return {
        "n_factors": str(module.n_factors),
        "y_range": json.dumps(list(module.y_range) if module.y_range is not None else None),
        "user_fingerprint": module.users.fingerprint(),
        "item_fingerprint": module.items.fingerprint(),
    }


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


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


def _json_bytes(data: dict) -> bytes:
    return json.dumps(data, ensure_ascii=True, allow_nan=False).encode("ascii")
