"""A stored model read as numpy arrays, without torch: the one reader of an artifact's files and their checks.

:func:`read_model_view` reads one snapshot (:mod:`collabemb.store`) of an artifact or a checkpoint
and refuses, with an :class:`~collabemb.schema.ArtifactError` naming the file (and the key), anything
that does not check out: config.json against its schema (:mod:`collabemb.schema`) and this reader's
schema version, the registries against config.json and against what the tensors file recorded of
them, every tensor's dtype, shape and finiteness, the seen items, the item metadata and the list of
index files. What it returns, a :class:`ModelView`, holds the four tables as float32 numpy arrays in
memory of their own; :func:`collabemb.artifact.read_model_files` builds the torch module on those
very arrays (``torch.from_numpy``, no copy), and ``collabemb serve`` answers searches from a view
while torch is still being imported.

Nothing here imports torch, not even through what it imports (numpy, pandas, pyarrow for the item
metadata, safetensors' own parser). The file names of an artifact and the records the view and the
torch model share (:class:`ModelIdentity`, :class:`StoredIndex`) are declared here as well.
"""

from __future__ import annotations

import io
import json
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from tokenize import TokenError
from typing import Protocol

import numpy as np
import pandas as pd
from safetensors import SafetensorError, deserialize

from collabemb.history import FitHistory
from collabemb.interactions import SeenItems
from collabemb.registry import IdRegistry, Table, check_table, id_type_of
from collabemb.schema import CONFIG, CONFIG_MAX_BYTES, FAMILIES, REGISTRY, REGISTRY_MAX_BYTES, ROW0, ArtifactError, parse_json
from collabemb.settings import MODELS
from collabemb.store import Snapshot, open_snapshot

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
#: safetensors' dtype codes by the names torch and numpy give them (for the message refusing one).
_DTYPE_NAMES = {"F64": "float64", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8"}
_DTYPE_NAMES |= {"U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool", "C64": "complex64"}


def index_file_name(part: str) -> str:
    """The file a similarity index part is stored under: ``index-{part}.faiss``."""
    return f"index-{part}.faiss"


@dataclass(frozen=True)
class ModelIdentity:
    """What kind of model a fitted module is (the ``identity`` record of ``config.json``).

    Attributes:
        family: ``"rating"``, ``"als"``, ``"bpr"``, ``"lmf"``, ``"popularity"`` or ``"vectors"``.
        row0: what row 0, the unknown slot, holds: ``"trained"`` (routed during training),
            ``"fitted"`` (solved afterwards on given ratings, the rest fixed: :func:`collabemb.fit_unknown_rows`),
            ``"mean"`` (mean of the known rows), ``"mean_count"`` (popularity: mean count),
            ``"untrained"`` (fastai's ``#na#`` row as imported: its random start, never trained) or
            ``"none"`` (zeros: vectors imported with ``SimilarityIndex.from_vectors``).
        weight_decay: rating models: the per-rating L2 strength (a fold-in reuses it).
        threshold: implicit models: interactions below it were dropped; None kept all.
        weighting: implicit models: ``"binary"``, ``"raw"`` or ``"log"``.
        regularization, alpha: ALS's L2 and confidence scale (its fold-in reuses them).
        rating_model: rating models: ``"dot"``, or ``"svdpp"``: the user table holds effective vectors
            (own vector plus the normalised sum of the history vectors of the items the user rated in
            training), and the model carries those history vectors (:attr:`FittedModel.history_vectors`).
    """

    family: str = "rating"
    row0: str = "trained"
    weight_decay: float | None = None
    threshold: float | None = None
    weighting: str | None = None
    regularization: float | None = None
    alpha: float | None = None
    rating_model: str = "dot"

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        if self.rating_model not in MODELS or (self.rating_model != "dot" and self.family != "rating"):
            raise ValueError(
                f"rating_model must be one of {', '.join(MODELS)} ('dot' unless family is 'rating'), got {self.rating_model!r}"
            )
        if self.row0 not in ROW0:
            raise ValueError(f"row0 must be one of {', '.join(ROW0)}, got {self.row0!r}")

    @property
    def fold_in(self) -> str | None:
        """Which new-ID solve applies: ``"rating"`` (Newton on the rating objective), ``"als"``
        (ALS's closed form) or None (BPR, LMF, popularity: no solve reproduces training)."""
        return {"rating": "rating", "als": "als"}.get(self.family)

    @property
    def row0_text(self) -> str:
        """``row0`` in words, for ``collabemb info``."""
        return {
            "trained": "trained: routed training ratings taught it an average user / item",
            "fitted": "fitted afterwards on given ratings with every other row fixed: an average user / item",
            "mean": "the mean of the known rows (not trained)",
            "untrained": "fastai's #na# row as imported: its random initial values, never trained",
            "mean_count": "item row 0: the mean count (not trained)",
            "none": "zeros: no unknown slot (vectors imported, not trained)",
        }[self.row0]

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict) -> ModelIdentity:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown identity field(s): {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass(frozen=True)
class StoredIndex:
    """An index as read from an artifact: its config entry and file bytes, not yet deserialised.

    ``verified``: ``{file name: SHA-256}`` of the index files and the tensors file as the
    artifact's manifest verified them; None when the artifact had no manifest.
    """

    config: dict
    files: dict[str, np.ndarray]
    verified: dict[str, str] | None = None

    def to_files(self) -> tuple[dict, dict[str, np.ndarray]]:
        return self.config, self.files


class TableSource(Protocol):
    """What a search index reads of a model: an :class:`~collabemb.models.EmbeddingDotBias`, a
    :class:`~collabemb.fitted.FittedModel` or a :class:`ModelView`."""

    @property
    def n_factors(self) -> int: ...

    def registry(self, table: Table) -> IdRegistry: ...

    def tables(self, table: Table) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True, eq=False)
class ModelView:
    """A stored model as :func:`read_model_view` read and checked it: numpy arrays, no torch. Nothing here
    writes the arrays; a torch module built on them (:func:`collabemb.artifact.fitted_from_view`) shares them.

    Attributes:
        directory: the snapshot directory it was read from; verified: whether a manifest verified its files.
        users, items: the registries; row ``r`` of a table is ``ids[r - 1]``, row 0 the unknown slot.
        n_factors: k, the width of the vectors.
        y_range: ``(lo, hi)`` of the predicted rating, or None (the identity link: scores, not ratings).
        weights: the tables by name, float32, C-contiguous, finite: ``u_weight`` (n_user_rows, k),
            ``i_weight`` (n_item_rows, k), ``u_bias`` (n_user_rows, 1), ``i_bias`` (n_item_rows, 1).
        identity, history: what kind of model it is, and what its fit did.
        history_vectors: svdpp models: (n_item_rows, k) float32 history vectors y_j; None for the others.
        seen_items: the training pairs (none when the artifact stores none).
        item_metadata: an ``item`` column of raw IDs plus titles, genres...; empty when none is stored.
        index: the stored similarity index (its entry and bytes, not deserialised), or None.
    """

    directory: Path
    verified: bool
    users: IdRegistry
    items: IdRegistry
    n_factors: int
    y_range: tuple[float, float] | None
    weights: dict[str, np.ndarray]
    identity: ModelIdentity
    history: FitHistory
    history_vectors: np.ndarray | None
    seen_items: SeenItems
    item_metadata: pd.DataFrame
    index: StoredIndex | None

    def registry(self, table: Table) -> IdRegistry:
        """The user or item registry."""
        return self.items if check_table(table) == "item" else self.users

    def tables(self, table: Table) -> tuple[np.ndarray, np.ndarray]:
        """``((n_rows, k) float32 weights, (n_rows,) float32 biases)`` of one table, views of :attr:`weights`."""
        prefix = "i" if check_table(table) == "item" else "u"
        return self.weights[f"{prefix}_weight"], self.weights[f"{prefix}_bias"][:, 0]

    def history_vector(self, item_rows: np.ndarray) -> np.ndarray | None:
        """svdpp: (k,) float64 history vector of the items ``item_rows`` (:func:`history_vector`); None otherwise."""
        return history_vector(self.history_vectors, item_rows)


def history_vector(history_vectors: np.ndarray | None, item_rows: np.ndarray) -> np.ndarray | None:
    """svdpp: (k,) float64 ``|N|^-1/2 * sum of y_j`` over the distinct known item rows ``item_rows`` of the
    (n_item_rows, k) ``history_vectors`` (a user's history vector: the part of its vector its rated items give);
    None when ``history_vectors`` is None (every other model)."""
    if history_vectors is None:
        return None
    rows = np.unique(np.asarray(item_rows, dtype=np.int64))
    rows = rows[rows != 0]
    if not len(rows):
        return np.zeros(history_vectors.shape[1])
    return history_vectors[rows].astype(np.float64).sum(axis=0) / np.sqrt(len(rows))


def rating_of_logits(logits: np.ndarray, y_range: tuple[float, float] | None) -> np.ndarray:
    """float32 scores of float64 logits ``<p_u, q_i> + b_u + b_i``: ``lo + (hi - lo) * sigmoid(logits)`` in
    float64 (the sigmoid as ``1 / (1 + exp(-x))``, scipy's ``expit``), or the logits themselves for ``y_range=None``."""
    if y_range is None:
        return np.asarray(logits).astype(np.float32)
    lo, hi = y_range
    with np.errstate(over="ignore"):  # exp(-x) overflows to inf for x below -709: the sigmoid is 0 there, as expit's
        sigmoid = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    return (lo + (hi - lo) * sigmoid).astype(np.float32)


def no_item_metadata(id_type: str) -> pd.DataFrame:
    """The item metadata of a model that has none: an empty ``item`` column of the item ID type."""
    return pd.DataFrame({"item": np.empty(0, dtype=np.int64 if id_type == "int" else object)})


def item_metadata_frame(frame: pd.DataFrame, id_type: str, *, id_col: str = "item") -> pd.DataFrame:
    """Item metadata checked for a model whose item IDs are ``id_type``: the ID column ``id_col`` renamed
    ``item`` and first, the index reset. Raises ValueError for a missing ID column or a repeated ID, TypeError
    for IDs of the other type."""
    if id_col not in frame.columns:
        raise ValueError(f"item metadata has no column {id_col!r} (found: {', '.join(map(str, frame.columns))})")
    ids, found = id_type_of(frame[id_col], what=f"item metadata column {id_col!r}")
    if len(ids) and found != id_type:
        raise TypeError(f"item metadata IDs are {found}, the model's item IDs are {id_type}")
    meta = frame.drop(columns=[id_col]).copy()
    meta.insert(0, "item", ids)
    if meta["item"].duplicated().any():
        dup = meta["item"][meta["item"].duplicated()].iloc[0]
        raise ValueError(f"item metadata repeats item {dup!r}")
    return meta.reset_index(drop=True)


# --- reading -----------------------------------------------------------------------------------------


def read_model_view(snapshot: Snapshot) -> ModelView:
    """The model stored in ``snapshot`` (an artifact's or a checkpoint's), every file checked, as numpy arrays."""
    root = snapshot.directory
    if not snapshot.verified:
        warnings.warn(
            f"{root} was written before artifacts carried a manifest: its files cannot be verified; save it again to add one", stacklevel=4
        )
    config = parse_json(snapshot.read(CONFIG_FILE, max_bytes=CONFIG_MAX_BYTES), root / CONFIG_FILE, CONFIG)
    check_config(root, config)
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
    users, items = _read_registries(snapshot, config)
    weights = _read_tensors(snapshot, config, data[TENSORS_FILE], users, items, svdpp=identity.rating_model == "svdpp")
    history_vectors = weights.pop(HISTORY_TABLE, None)
    seen = SeenItems.empty(users.n_rows)
    if config.get("seen_items"):
        seen = _read_seen(root, data, users, items, config["seen_items"]["n_pairs"])
    metadata = no_item_metadata(items.id_type)
    if config.get("item_metadata"):
        try:
            metadata = item_metadata_frame(_read_parquet(data[METADATA_FILE], root / METADATA_FILE), items.id_type)
        except (ValueError, TypeError) as exc:
            raise ArtifactError(f"{root / METADATA_FILE}: {exc}") from None
    index = _stored_index(snapshot, config["index"], data, index_names) if config.get("index") else None
    y_range = (float(config["y_range"][0]), float(config["y_range"][1])) if config["y_range"] is not None else None
    return ModelView(
        directory=root,
        verified=snapshot.verified,
        users=users,
        items=items,
        n_factors=config["n_factors"],
        y_range=y_range,
        weights=weights,
        identity=identity,
        history=history,
        history_vectors=history_vectors,
        seen_items=seen,
        item_metadata=metadata,
        index=index,
    )


def _stored_index(snapshot: Snapshot, entry: dict, data: dict[str, bytes], names: list[str]) -> StoredIndex:
    """The index entry and its files' bytes as (n,) uint8 arrays, with the SHA-256 the manifest verified them by."""
    files = {name: np.frombuffer(data[name], dtype=np.uint8) for name in names}
    verified = {name: snapshot.files[name]["sha256"] for name in (*names, TENSORS_FILE)} if snapshot.verified else None
    return StoredIndex({k: v for k, v in entry.items() if k != "files"}, files, verified)


def read_config(directory) -> dict:
    """The artifact's config.json as a dict (for ``collabemb info``), verified and schema-checked."""
    with open_snapshot(directory, "artifact", also=("checkpoint",)) as snapshot:
        path = snapshot.directory / CONFIG_FILE
        config = parse_json(snapshot.read(CONFIG_FILE, max_bytes=CONFIG_MAX_BYTES), path, CONFIG)
    check_config(path.parent, config)
    return config


def read_model_card(directory) -> str | None:
    """The artifact's MODEL_CARD.md (for ``collabemb info``), verified against the manifest; None for an
    artifact written before cards (it has none)."""
    with open_snapshot(directory, "artifact", also=("checkpoint",)) as snapshot:
        return read_card(snapshot)


def read_card(snapshot: Snapshot) -> str | None:
    """The snapshot's MODEL_CARD.md as text, verified against the manifest; None when it has none."""
    if not snapshot.has(MODEL_CARD_FILE):
        return None
    data = snapshot.read(MODEL_CARD_FILE, max_bytes=MODEL_CARD_MAX_BYTES)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{snapshot.directory / MODEL_CARD_FILE}: not UTF-8 text (byte {exc.start})") from None


def check_config(root: Path, config: dict) -> None:
    """Refuse a schema-checked config.json of a newer schema, another model class or an empty y_range."""
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


def _read_registries(snapshot: Snapshot, config: dict) -> tuple[IdRegistry, IdRegistry]:
    """The user and item registries, each of config.json's size and fingerprint."""
    users = _read_registry(snapshot, "users.json", config["n_user_rows"])
    items = _read_registry(snapshot, "items.json", config["n_item_rows"])
    for reg, key in ((users, "user"), (items, "item")):
        if config[f"{key}_fingerprint"] != reg.fingerprint():
            raise ArtifactError(f"{snapshot.directory / (key + 's.json')}: registry does not match config.json (fingerprint differs)")
    return users, items


def _read_registry(snapshot: Snapshot, name: str, n_rows: int) -> IdRegistry:
    path = snapshot.directory / name
    data = parse_json(snapshot.read(name, max_bytes=REGISTRY_MAX_BYTES), path, REGISTRY)
    try:
        registry = IdRegistry.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{path}: bad registry ({exc})") from None
    if registry.n_rows != n_rows:
        raise ArtifactError(f"{path}: {len(registry)} IDs, config.json says {n_rows - 1}")
    return registry


def _read_tensors(
    snapshot: Snapshot, config: dict, tensor_bytes: bytes, users: IdRegistry, items: IdRegistry, *, svdpp: bool
) -> dict[str, np.ndarray]:
    """The four tables (and an svdpp model's ``y_weight``) by name, each checked (see :class:`ModelView`)."""
    root = snapshot.directory
    tensor_path = root / TENSORS_FILE
    if snapshot.verified and config.get("tensors_sha256") not in (None, snapshot.files[TENSORS_FILE]["sha256"]):
        raise ArtifactError(f"{tensor_path}: not the tensors config.json was written with (SHA-256 differs)")
    try:
        stored = dict(deserialize(tensor_bytes))  # {name: {"dtype": "F32", "shape": [...], "data": bytearray}}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{tensor_path}: unreadable ({exc})") from None
    _check_bound(root, tensor_bytes, config, users, items)
    k = config["n_factors"]
    expected = {"u_weight": (users.n_rows, k), "i_weight": (items.n_rows, k), "u_bias": (users.n_rows, 1), "i_bias": (items.n_rows, 1)}
    if svdpp:
        expected[HISTORY_TABLE] = (items.n_rows, k)
    for name in sorted(set(stored) - set(expected)):
        raise ArtifactError(f"{tensor_path}: unexpected tensor {name!r}")
    return {name: _checked_tensor(tensor_path, name, stored.get(name), shape, users, items, k) for name, shape in expected.items()}


def _checked_tensor(path: Path, name: str, stored: dict | None, shape: tuple, users: IdRegistry, items: IdRegistry, k: int) -> np.ndarray:
    """The float32 array of one stored tensor (``stored``: safetensors' dtype code, shape and bytes), checked."""
    if stored is None:
        raise ArtifactError(f"{path}: tensor {name!r} is missing")
    if stored["dtype"] != "F32":
        raise ArtifactError(f"{path}: tensor {name!r} is {_DTYPE_NAMES.get(stored['dtype'], stored['dtype'])}, expected float32")
    if tuple(stored["shape"]) != shape:
        raise ArtifactError(
            f"{path}: tensor {name!r} has shape {tuple(stored['shape'])}, expected {shape} "
            f"from the registries ({len(users)} users, {len(items)} items, {k} factors, plus row 0)"
        )
    array = np.frombuffer(stored["data"], dtype="<f4").reshape(shape)  # the bytearray safetensors made: writable, shared
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        raise ArtifactError(f"{path}: tensor {name!r} holds NaN or infinity (first in row {int(np.flatnonzero(~finite)[0])})")
    return array


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


def _read_seen(root: Path, data: dict[str, bytes], users: IdRegistry, items: IdRegistry, n_pairs: int) -> SeenItems:
    indptr = _read_npy(data[SEEN_INDPTR_FILE], root / SEEN_INDPTR_FILE, np.int64, users.n_rows + 1)
    indices = _read_npy(data[SEEN_INDICES_FILE], root / SEEN_INDICES_FILE, np.int32, n_pairs)
    if len(indices) and (indices.min() < 1 or indices.max() >= items.n_rows):
        raise ArtifactError(f"{root / SEEN_INDICES_FILE}: item rows outside 1..{len(items)}")
    try:
        return SeenItems(indptr, indices)
    except ValueError as exc:
        raise ArtifactError(f"{root / SEEN_INDPTR_FILE}: {exc}") from None


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


__all__ = ["ModelIdentity", "ModelView", "StoredIndex", "TableSource", "read_config", "read_model_card", "read_model_view"]
