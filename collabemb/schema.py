"""Every JSON file collabemb reads, declared in one place: types, ranges, required keys.

An artifact (:mod:`collabemb.artifact`), a checkpoint (:mod:`collabemb.train`) and the snapshot
store under both (:mod:`collabemb.store`) read only JSON, and only through :func:`read_json`:

* the size is bounded before anything is read (``max_bytes``, per file kind);
* the nesting depth is bounded before parsing (a tiny file nested 200,000 deep is refused
  without recursion);
* the parsed value is checked against its declared schema (:data:`CONFIG`, :data:`REGISTRY`,
  :data:`CHECKPOINT_STATE`, :data:`MANIFEST`, :data:`POINTER`), so an edited file gives one
  :class:`ArtifactError` naming the file and the key (``config.json: key 'y_range': expected
  a finite number, found Infinity``).

The declarations are plain data built from a few types: :class:`Obj`, :class:`List`,
:class:`Num`, :class:`Str`, :class:`Bool`, :class:`Null` and unions (a tuple of types).
The vocabularies the files use (model families, what row 0 holds, index types, metrics) are
defined here and imported by the modules that own the concepts, so the two cannot drift.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Model families (see :class:`collabemb.fitted.ModelIdentity`): ``"rating"`` (:func:`collabemb.fit`),
#: the ``implicit`` ones, the popularity baseline, and ``"vectors"`` imported from elsewhere.
FAMILIES: tuple[str, ...] = ("rating", "als", "bpr", "lmf", "popularity", "vectors")
#: What row 0, the unknown slot, holds.
ROW0: tuple[str, ...] = ("trained", "fitted", "mean", "mean_count", "untrained", "none")
#: FAISS index types and similarity metrics (see :mod:`collabemb.faiss_parts`).
INDEX_TYPES: tuple[str, ...] = ("exact", "hnsw", "ivf")
METRICS: tuple[str, ...] = ("cosine", "dot")
#: Index parts and the table each searches.
PART_NAMES: tuple[str, ...] = ("items", "users", "recommend")

MAX_DEPTH = 16
_KIB, _MIB, _GIB = 1 << 10, 1 << 20, 1 << 30
INT64_MAX = (1 << 63) - 1


class ArtifactError(ValueError):
    """An artifact or checkpoint that is missing, foreign, from a newer schema, tampered or inconsistent."""


# --- the schema types ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Num:
    """A finite number in ``[lo, hi]``; ``integer`` asks for a JSON integer (not a bool)."""

    lo: float = -math.inf
    hi: float = math.inf
    integer: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        if self.lo > -math.inf and self.hi < math.inf:
            return f"{kind} in [{_short(self.lo)}, {_short(self.hi)}]"
        if self.lo > -math.inf:
            return f"{kind} >= {_short(self.lo)}"
        return kind if self.hi == math.inf else f"{kind} <= {_short(self.hi)}"

    def accepts(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not isinstance(value, int):
            return False
        return (isinstance(value, int) or math.isfinite(value)) and self.lo <= value <= self.hi


@dataclass(frozen=True)
class Str:
    """A string: one of ``choices``, or matching ``pattern`` (full match), at most ``max_len`` long."""

    choices: tuple[str, ...] = ()
    pattern: str | None = None
    max_len: int = 4096

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        return f"a string matching {self.pattern}" if self.pattern else "a string"

    def accepts(self, value) -> bool:
        if not isinstance(value, str) or len(value) > self.max_len:
            return False
        if self.choices and value not in self.choices:
            return False
        return self.pattern is None or re.fullmatch(self.pattern, value) is not None


@dataclass(frozen=True)
class Bool:
    def describe(self) -> str:
        return "true or false"

    def accepts(self, value) -> bool:
        return isinstance(value, bool)


@dataclass(frozen=True)
class Null:
    def describe(self) -> str:
        return "null"

    def accepts(self, value) -> bool:
        return value is None


@dataclass(frozen=True)
class List:
    """A list of ``item`` (None: items not checked here, e.g. registry IDs checked by their reader),
    ``length`` long exactly (or any length up to ``max_len``)."""

    item: object = None
    length: int | None = None
    max_len: int = 1 << 40

    def describe(self) -> str:
        size = f"of length {self.length}" if self.length is not None else ""
        return f"a list {size}".rstrip()

    def accepts(self, value) -> bool:
        if not isinstance(value, list) or len(value) > self.max_len:
            return False
        return self.length is None or len(value) == self.length


@dataclass(frozen=True)
class Obj:
    """A JSON object with ``required`` and ``optional`` keys (``{key: schema}``); other keys are
    refused unless ``values`` is given, the schema every other value must meet (a map)."""

    required: dict = field(default_factory=dict)
    optional: dict = field(default_factory=dict)
    values: object = None
    key_pattern: str | None = None

    def describe(self) -> str:
        return "an object"

    def accepts(self, value) -> bool:
        return isinstance(value, dict)


def check(value, schema, file: str | Path, key: str = "") -> None:
    """Raise :class:`ArtifactError` naming ``file`` and the key path where ``value`` breaks ``schema``.

    ``schema`` is one of the types above or a tuple of them (any may match).
    """
    options = schema if isinstance(schema, tuple) else (schema,)
    matching = [s for s in options if s.accepts(value)]
    if not matching:
        expected = " or ".join(s.describe() for s in options)
        raise ArtifactError(f"{file}: {_where(key)}expected {expected}, found {_found(value)}")
    chosen = matching[0]
    if isinstance(chosen, List) and chosen.item is not None:
        for i, item in enumerate(value):
            check(item, chosen.item, file, f"{key}[{i}]")
    if isinstance(chosen, Obj):
        _check_object(value, chosen, file, key)


def check_arguments(values: dict, schema: Obj) -> None:
    """Raise ``ValueError("NAME must be ..., got VALUE")`` for the first of ``values`` (Python
    arguments named as ``schema``'s keys) outside its declared type and range."""
    for name, value in values.items():
        sub = schema.required.get(name, schema.optional.get(name))
        options = sub if isinstance(sub, tuple) else (sub,)
        if sub is not None and not any(s.accepts(value) for s in options):
            expected = " or ".join(s.describe() for s in options).replace("null", "None")
            raise ValueError(f"{name} must be {expected}, got {value!r}")


def _check_object(value: dict, schema: Obj, file, key: str) -> None:
    for name in schema.required:
        if name not in value:
            raise ArtifactError(f"{file}: {_where(_join(key, name))}required key is missing")
    for name, item in value.items():
        path = _join(key, name)
        sub = schema.required.get(name, schema.optional.get(name))
        if sub is None:
            if schema.values is None or (schema.key_pattern and not re.fullmatch(schema.key_pattern, name)):
                raise ArtifactError(f"{file}: {_where(path)}unexpected key")
            sub = schema.values
        check(item, sub, file, path)


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _where(key: str) -> str:
    return f"key {key!r}: " if key else ""


def _short(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e18 else f"{x:g}"


def _found(value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    text = json.dumps(value, allow_nan=True)
    kind = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "")
    if isinstance(value, dict | list):
        return f"{kind} of {len(value)}"
    return f"{kind} {text[:60]}".strip()


# --- bounded reading ------------------------------------------------------------------------------

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def nesting_depth(data: bytes) -> int:
    """The deepest ``[``/``{`` nesting of JSON text (strings skipped), computed without parsing."""
    bare = np.frombuffer(_STRING.sub(b"0", data), dtype=np.uint8)
    step = (bare == ord("[")).astype(np.int8) + (bare == ord("{")) - (bare == ord("]")) - (bare == ord("}"))
    return int(np.max(np.cumsum(step, dtype=np.int64), initial=0))


def parse_json(data: bytes, file: str | Path, schema, *, max_depth: int = MAX_DEPTH):
    """Parse JSON ``data`` (read from ``file``) and check it against ``schema``; depth bounded first."""
    depth = nesting_depth(data)
    if depth > max_depth:
        raise ArtifactError(f"{file}: JSON nested {depth} deep; at most {max_depth} is allowed")
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_non_finite)
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{file}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{file}, line {exc.lineno}, column {exc.colno}: invalid JSON ({exc.msg})") from None
    except RecursionError:  # the depth scan bounds this; kept for safety
        raise ArtifactError(f"{file}: JSON nested too deep") from None
    check(value, schema, file)
    return value


def read_json(path: str | Path, schema, *, max_bytes: int, max_depth: int = MAX_DEPTH):
    """Read, bound (size, then depth), parse and check the JSON file ``path`` (see :func:`parse_json`)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except IsADirectoryError:
        raise ArtifactError(f"{path}: a directory, expected a JSON file") from None
    if len(data) > max_bytes:
        raise ArtifactError(f"{path}: larger than {max_bytes} bytes, the most this file may hold")
    return parse_json(data, path, schema, max_depth=max_depth)


def _non_finite(name: str) -> float:
    return float(name.replace("Infinity", "inf"))


# --- the declarations -----------------------------------------------------------------------------

_HEX64 = Str(pattern="[0-9a-f]{64}")
#: A file name inside a snapshot, and a snapshot's own name (the store writes and reads by these).
FILE_NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}"
SNAPSHOT_PATTERN = r"snap-([0-9]{6,12})-[0-9a-f]{8}"
_NAME = Str(pattern=FILE_NAME_PATTERN)
_COUNT = Num(0, INT64_MAX, integer=True)
_SIZE = Num(0, 1 << 50, integer=True)
_FLOAT = Num()
_OPT_FLOAT = (Num(), Null())

#: The pointer file ``CURRENT`` of a snapshot store.
POINTER = Obj(required={"format": Str(("collabemb-pointer",)), "snapshot": Str(pattern=SNAPSHOT_PATTERN), "manifest_sha256": _HEX64})
POINTER_MAX_BYTES = 4 * _KIB

#: ``manifest.json``: every other file of a snapshot, with its size and SHA-256.
MANIFEST = Obj(
    required={
        "format": Str(("collabemb-manifest",)),
        "version": Num(1, 1, integer=True),
        "kind": Str(("artifact", "checkpoint")),
        "files": Obj(values=Obj(required={"size": _SIZE, "sha256": _HEX64}), key_pattern=_NAME.pattern),
    }
)
MANIFEST_MAX_BYTES = 1 * _MIB

#: ``users.json`` / ``items.json``: the IDs are checked one by one by ``IdRegistry.from_dict``.
REGISTRY = Obj(required={"ids": List()}, optional={"name": Str(max_len=200), "id_type": Str(("int", "str")), "kind": Str(("int", "str"))})
REGISTRY_MAX_BYTES = 8 * _GIB

#: ``ids.json`` of an ``npy`` embedding export (``collabemb.export``).
EXPORT_IDS = Obj(
    required={"format": Str(("collabemb-embedding-ids",)), "name": Str(("user", "item")), "ids": List()},
    optional={"id_type": Str(("int", "str")), "kind": Str(("int", "str")), "unknown_row": Bool()},
)

IDENTITY = Obj(
    optional={
        "family": Str(FAMILIES),
        "row0": Str(ROW0),
        "weight_decay": (Num(0), Null()),
        "threshold": _OPT_FLOAT,
        "weighting": (Str(("binary", "raw", "log")), Null()),
        "regularization": (Num(0), Null()),
        "alpha": (Num(0), Null()),
        "rating_model": Str(),  # one of settings.MODELS: ModelIdentity checks it
    }
)

_SCALAR = (Num(), Str(), Bool(), Null())
HISTORY = Obj(
    optional={
        "epoch": List(Num(1, 1 << 31, integer=True)),
        "lr": List(_FLOAT),
        "train_rmse": List(_OPT_FLOAT),
        "valid_rmse": List(_OPT_FLOAT),
        "seconds": List(Num(0)),
        "train_seconds": List(Num(0)),
        "best_epoch": (Num(1, 1 << 31, integer=True), Null()),
        "stopped_early": Bool(),
        # the fit's settings and counts; ``versions``: {library: version or null} at fit time (the model card's)
        "params": Obj(
            optional={"versions": Obj(values=(Str(max_len=200), Null()), key_pattern=r"[A-Za-z0-9_.-]{1,64}")},
            values=(*_SCALAR, List(_SCALAR, max_len=64)),
        ),
        "stop_reason": (Str(("early_stopping", "callback", "interrupted")), Null()),
    }
)

_INDEX_PART = Obj(
    required={
        "registry_fingerprint": Str(pattern="[0-9a-f]{16}"),
        "vector_checksum": Str(pattern="[0-9a-f]{32,64}"),
        "ntotal": _COUNT,
        "dim": Num(1, 1 << 16, integer=True),
    },
    optional={
        "index_type": Str(INDEX_TYPES),
        "kind": Str(INDEX_TYPES),
        "max_norm2": (Num(0), Null()),
        "file_checksum": Str(pattern="[0-9a-f]{32,64}"),
        "file_sha256": _HEX64,
        "tensors_sha256": _HEX64,
    },
)
INDEX_PARAMS = Obj(
    optional={
        "index_type": (Str(INDEX_TYPES), Null()),
        "kind": (Str(INDEX_TYPES), Null()),
        "exact_max": Num(0, INT64_MAX, integer=True),
        "hnsw_m": Num(2, 1024, integer=True),
        "ef_construction": Num(1, 1 << 16, integer=True),
        "ef_search": Num(1, 1 << 16, integer=True),
        "nlist": (Num(1, 1 << 24, integer=True), Null()),
        "nprobe": (Num(1, 1 << 24, integer=True), Null()),
        "seed": Num(0, 1 << 32, integer=True),
        "threads": (Num(1, 4096, integer=True), Null()),
    }
)
INDEX_ENTRY = Obj(
    required={"metric": Str(METRICS), "parts": Obj(values=_INDEX_PART, key_pattern="|".join(PART_NAMES))},
    optional={
        "params": INDEX_PARAMS,
        "files": List(Str(pattern=r"index-[a-z]+\.faiss"), max_len=len(PART_NAMES)),
        "has_unknown_slot": Bool(),
    },
)

_FINGERPRINT = Str(pattern="[0-9a-f]{16}")
#: ``config.json`` of an artifact (schema 1 and 2).
CONFIG = Obj(
    required={
        "format": Str(("collabemb-artifact",)),
        "schema_version": Num(1, INT64_MAX, integer=True),
        "model": Str(max_len=200),
        "n_factors": Num(1, 1 << 16, integer=True),
        "y_range": (List(_FLOAT, length=2), Null()),
        "n_user_rows": Num(1, INT64_MAX, integer=True),
        "n_item_rows": Num(1, INT64_MAX, integer=True),
        "user_fingerprint": _FINGERPRINT,
        "item_fingerprint": _FINGERPRINT,
    },
    optional={
        "created": Str(max_len=64),
        "identity": IDENTITY,
        "history": HISTORY,
        "seen_items": (Obj(required={"indptr": Str(("seen_indptr.npy",)), "indices": Str(("seen_items.npy",)), "n_pairs": _COUNT}), Null()),
        "item_metadata": (Str(("item_metadata.parquet",)), Null()),
        "index": (INDEX_ENTRY, Null()),
        "tensors_sha256": _HEX64,
    },
)
CONFIG_MAX_BYTES = 64 * _MIB

#: ``training_state.json`` of a checkpoint; ``settings`` is checked field by field by ``FitSettings``.
CHECKPOINT_STATE = Obj(
    required={
        "format": Str(("collabemb-checkpoint",)),
        "version": Num(1, INT64_MAX, integer=True),
        "epoch": Num(1, 1 << 31, integer=True),
        "settings": Obj(values=(*_SCALAR, List(_SCALAR, max_len=64))),
        "n_train": _COUNT,
        "data_fingerprint": (Str(pattern="[0-9a-f]{32}"), Null()),
        "best_valid": _OPT_FLOAT,
        "best_epoch": (Num(0, 1 << 31, integer=True), Null()),
        "bad_epochs": Num(0, 1 << 31, integer=True),
        "has_best_weights": Bool(),
    }
)
CHECKPOINT_STATE_MAX_BYTES = 1 * _MIB
