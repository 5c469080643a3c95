"""Getting the embeddings out: tables by raw ID, files, features for tabular models, torch modules.

Everything here starts from a fitted :class:`~collabemb.models.EmbeddingDotBias` and keeps its
ID-to-row mapping exact:

* :func:`embedding_frame` / :func:`embedding_arrays`: the user or item table with its raw IDs
  and biases, as a DataFrame or as ``(ids, matrix, bias)`` numpy arrays.
* :func:`write_embeddings` / :func:`read_embeddings`: parquet, CSV, ``.npy`` plus an ID file,
  and the TensorBoard Embedding Projector pair (``vectors.tsv`` + ``metadata.tsv``).
* :func:`to_features`: embedding, bias and "known" columns for the IDs of any DataFrame, for
  gradient boosting, random forests or linear models.
* :func:`to_torch`: an :class:`IdEmbedding` (an ``nn.Embedding`` with a bias table and the
  registry) for another torch network, with hard (row) and soft (probability) lookups.

Row 0 is the unknown slot in every table (see :mod:`collabemb.registry`). Exports include it by
default as the first row, with ``row == 0`` and a missing ID; ``unknown="exclude"`` leaves it out.

Column names, stable across versions:

* tables and files: ``row`` (int64 table row), the ID column ``user`` or ``item`` (raw IDs;
  ``pd.Int64Dtype`` for int IDs so row 0 can hold ``<NA>``, object of str for string IDs),
  any joined metadata columns, ``bias`` (float32, logit units), ``emb_0 .. emb_{k-1}``
  (float32).
* features: ``{prefix}emb_0 .. {prefix}emb_{k-1}``, ``{prefix}bias`` (float32) and
  ``{prefix}known`` (bool), with prefixes ``user_`` and ``item_`` by default.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from collabemb.registry import UNKNOWN_ROW, IdRegistry, id_kind_of

if TYPE_CHECKING:
    from collabemb.models import EmbeddingDotBias

Kind = Literal["user", "item"]
Unknown = Literal["include", "exclude"]
Format = Literal["parquet", "csv", "npy", "projector"]

FORMATS: tuple[str, ...] = ("parquet", "csv", "npy", "projector")
#: Prefix of the factor columns in tables and files: ``emb_0 .. emb_{k-1}``.
FACTOR_PREFIX = "emb_"
#: Significant digits written to CSV / TSV by default. 9 significant digits identify every
#: float32 exactly, so the default text round trip is bit-for-bit; fewer digits round.
TEXT_DIGITS = 9
#: The label of row 0 in the projector's ``metadata.tsv`` (it has no raw ID).
PROJECTOR_UNKNOWN_LABEL = "<unknown>"
#: ``format`` field of the ``ids.json`` written next to ``vectors.npy``.
IDS_FORMAT = "collabemb-embedding-ids"

_SUFFIX_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
_CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]*")
#: Files that mark a directory written by :func:`write_embeddings` (safe to replace).
_DIR_FILES = {"npy": ("vectors.npy", "bias.npy", "ids.json"), "projector": ("vectors.tsv", "metadata.tsv")}


class EmbeddingArrays(NamedTuple):
    """One embedding table with its raw IDs, as numpy arrays aligned row by row.

    Attributes:
        ids: (n,) raw IDs. With row 0 included an object array whose first entry is ``None``
            (row 0 has no raw ID) followed by the known IDs; without it the registry's own
            array (int64, or object of str).
        matrix: (n, n_factors) float32; with row 0 included ``matrix[r]`` is table row ``r``.
        bias: (n,) float32 biases in logit units, aligned with ``matrix``.
    """

    ids: np.ndarray
    matrix: np.ndarray
    bias: np.ndarray


# --- tables by raw ID ------------------------------------------------------------


def _check_kind(kind: str) -> Kind:
    if kind not in ("user", "item"):
        raise ValueError(f"kind must be 'user' or 'item', got {kind!r}")
    return kind  # type: ignore[return-value]


def _check_unknown(unknown: str) -> None:
    if unknown not in ("include", "exclude"):
        raise ValueError(f"unknown must be 'include' or 'exclude', got {unknown!r}")


def _tables(model: EmbeddingDotBias, kind: Kind) -> tuple[IdRegistry, np.ndarray, np.ndarray]:
    """(registry, (n_rows, k) float32 weights, (n_rows,) float32 biases) as numpy views of the model."""
    if kind == "user":
        reg, weight, bias = model.users, model.u_weight.weight, model.u_bias.weight
    else:
        reg, weight, bias = model.items, model.i_weight.weight, model.i_bias.weight
    w = weight.detach().to("cpu", torch.float32).numpy()
    b = bias.detach().to("cpu", torch.float32).numpy()[:, 0]
    return reg, w, b


def embedding_arrays(model: EmbeddingDotBias, kind: Kind = "item", *, unknown: Unknown = "include") -> EmbeddingArrays:
    """The user or item table as ``(ids, matrix, bias)`` numpy arrays (copies, not views).

    Args:
        model: a fitted model.
        kind: ``"user"`` or ``"item"``.
        unknown: ``"include"`` puts row 0 (the trained unknown slot) first, so ``matrix[r]`` is
            table row ``r`` and ``ids[0] is None``; ``"exclude"`` returns the known rows 1..n only,
            with ``ids`` equal to ``registry.ids``.
    """
    reg, w, b = _tables(model, _check_kind(kind))
    _check_unknown(unknown)
    if unknown == "exclude":
        return EmbeddingArrays(reg.ids.copy(), w[1:].copy(), b[1:].copy())
    ids = np.empty(reg.n_rows, dtype=object)
    ids[0] = None
    ids[1:] = reg.ids.tolist() if reg.kind == "int" else reg.ids
    return EmbeddingArrays(ids, w.copy(), b.copy())


def embedding_frame(
    model: EmbeddingDotBias,
    kind: Kind = "item",
    *,
    unknown: Unknown = "include",
    metadata: pd.DataFrame | bool | None = None,
    metadata_id_col: str | None = None,
) -> pd.DataFrame:
    """The user or item table as a DataFrame, one row per table row, in table order.

    Columns: ``row`` (int64), the ID column ``user`` / ``item`` (``Int64`` with ``<NA>`` on row 0
    for int IDs, object of str with ``None`` on row 0 for string IDs; plain int64 when row 0 is
    excluded), any metadata columns, ``bias`` (float32), ``emb_0 .. emb_{k-1}`` (float32).

    Args:
        model: a fitted model.
        kind: ``"user"`` or ``"item"``.
        unknown: ``"include"`` (row 0 first, ``row == 0``, missing ID) or ``"exclude"``.
        metadata: a DataFrame to join by raw ID (left join: IDs without metadata get missing
            values, metadata rows for IDs the model does not know are dropped), or ``True`` for
            the item metadata stored with the model (``model.item_metadata``).
        metadata_id_col: ID column of ``metadata``; default ``kind`` (``"user"`` / ``"item"``).

    Raises:
        TypeError: metadata IDs of another kind than the registry's (``"7"`` is not ``7``).
        ValueError: repeated metadata IDs, or a metadata column named like a table column.
    """
    kind = _check_kind(kind)
    _check_unknown(unknown)
    reg, w, b = _tables(model, kind)
    start = 0 if unknown == "include" else 1
    n = reg.n_rows - start
    k = w.shape[1]
    names = [f"{FACTOR_PREFIX}{j}" for j in range(k)]
    frame = pd.DataFrame(w[start:], columns=names, copy=True)
    frame.insert(0, "bias", b[start:].copy())
    if start == 0:
        if reg.kind == "int":
            ids = pd.array(np.concatenate([[0], reg.ids]), dtype="Int64")
            ids[0] = pd.NA
        else:
            ids = np.empty(n, dtype=object)
            ids[0] = None
            ids[1:] = reg.ids
    else:
        ids = reg.ids.copy()
    frame.insert(0, kind, pd.Series(ids, dtype=object) if reg.kind == "str" else ids)
    frame.insert(0, "row", np.arange(start, reg.n_rows, dtype=np.int64))
    if metadata is not None and metadata is not False:
        meta = _metadata_for(model, kind, reg, metadata, metadata_id_col, reserved=set(frame.columns))
        pos = meta.index.get_indexer(pd.Index(reg.ids, dtype=meta.index.dtype))  # -1: no metadata
        if start == 0:
            pos = np.concatenate([[-1], pos])  # row 0 has no metadata
        joined = meta.reset_index(drop=True).reindex(pos)  # label -1 is absent: a missing row
        joined.index = frame.index
        for offset, col in enumerate(meta.columns):
            frame.insert(2 + offset, col, _plain_text(joined[col]))
    return frame


def _plain_text(col: pd.Series) -> pd.Series:
    """Text columns as object of Python str with None for missing (as the registries keep IDs)."""
    if pd.api.types.is_string_dtype(col.dtype) and not isinstance(col.dtype, pd.CategoricalDtype):
        values = col.to_numpy(dtype=object, na_value=None)
        return pd.Series(values, index=col.index, dtype=object, name=col.name)
    return col


def embeddings(
    model: EmbeddingDotBias,
    kind: Kind,
    *,
    form: Literal["frame", "arrays"] = "frame",
    unknown: Unknown = "include",
    metadata: pd.DataFrame | bool | None = None,
    metadata_id_col: str | None = None,
) -> pd.DataFrame | EmbeddingArrays:
    """:func:`embedding_frame` (``form="frame"``) or :func:`embedding_arrays` (``form="arrays"``).

    Behind ``model.user_embeddings()`` / ``model.item_embeddings()``.
    """
    if form == "frame":
        return embedding_frame(model, kind, unknown=unknown, metadata=metadata, metadata_id_col=metadata_id_col)
    if form == "arrays":
        if metadata is not None and metadata is not False:
            raise ValueError("metadata is joined to the DataFrame form only (form='frame')")
        return embedding_arrays(model, kind, unknown=unknown)
    raise ValueError(f"form must be 'frame' or 'arrays', got {form!r}")


def _metadata_for(
    model: EmbeddingDotBias, kind: Kind, reg: IdRegistry, metadata: pd.DataFrame | bool,
    id_col: str | None, *, reserved: set,
) -> pd.DataFrame:
    """Metadata indexed by raw ID (unique), checked against the registry's kind and the table's columns."""
    if metadata is True:
        if kind != "item":
            raise ValueError("metadata=True means the item metadata stored with the model; for users pass a DataFrame")
        if model.item_metadata is None:
            raise ValueError("the model has no item metadata stored (set_item_metadata, or fit --items); pass a DataFrame")
        metadata, id_col = model.item_metadata, "item"
    if not isinstance(metadata, pd.DataFrame):
        raise TypeError(f"metadata must be a DataFrame or True, got {type(metadata).__name__}")
    id_col = id_col or kind
    if id_col not in metadata.columns:
        raise ValueError(f"metadata has no ID column {id_col!r} (found: {', '.join(map(str, metadata.columns))})")
    ids, found = id_kind_of(metadata[id_col], what=f"metadata column {id_col!r}")
    if len(ids) and found != reg.kind:
        raise TypeError(f"metadata IDs are {found}, the model's {kind} IDs are {reg.kind} ('7' and 7 are different IDs)")
    meta = metadata.drop(columns=[id_col])
    clash = [c for c in meta.columns if c in reserved or str(c).startswith(FACTOR_PREFIX)]
    if clash:
        raise ValueError(f"metadata column(s) {clash} clash with the table's own columns (row, {kind}, bias, {FACTOR_PREFIX}*)")
    meta.index = pd.Index(ids, dtype=object if reg.kind == "str" else np.int64)
    if not meta.index.is_unique:
        dup = meta.index[meta.index.duplicated()].tolist()[0]
        raise ValueError(f"metadata repeats {kind} {dup!r}")
    return meta


# --- writers and readers -----------------------------------------------------------


def _format_of(path: Path, format: str | None) -> str:
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        return format
    found = _SUFFIX_FORMATS.get(path.suffix.lower())
    if found is None:
        raise ValueError(
            f"{path}: cannot tell the format from the name; give it (format= or --format): one of {', '.join(FORMATS)} "
            "(npy and projector write a directory)"
        )
    return found


def write_embeddings(
    model: EmbeddingDotBias,
    path: str | os.PathLike,
    kind: Kind = "item",
    *,
    format: Format | None = None,
    unknown: Unknown = "include",
    metadata: pd.DataFrame | bool | None = None,
    metadata_id_col: str | None = None,
    digits: int = TEXT_DIGITS,
) -> Path:
    """Write the user or item table to ``path``, atomically; returns ``path``.

    Formats (``format=None`` takes it from the suffix: ``.parquet``/``.pq``, ``.csv``):

    * ``"parquet"``: the :func:`embedding_frame` table, float32 columns; reads back bit-for-bit.
    * ``"csv"``: the same table as text, floats with ``digits`` significant digits (the default
      9 is exact for float32; fewer digits round to that precision). Row 0's ID is empty.
    * ``"npy"``: ``path`` is a directory holding ``vectors.npy`` ((n, k) float32, row ``r`` =
      table row ``r`` when row 0 is included), ``bias.npy`` ((n,) float32) and ``ids.json``
      (``{"format", "name", "kind", "ids"}``, ``ids`` aligned with the rows, ``null`` for row 0).
      Bit-for-bit; no metadata.
    * ``"projector"``: ``path`` is a directory holding the TensorBoard Embedding Projector pair:
      ``vectors.tsv`` (one tab-separated vector per line, ``digits`` significant digits, no
      header) and ``metadata.tsv`` (the raw ID, plus the metadata columns with a header row
      when metadata is joined; TensorBoard wants a header exactly when there are several
      columns). Row 0 is labelled ``<unknown>``; tabs and line breaks inside labels become spaces.

    The file (or directory) is written beside ``path`` under a temporary name and renamed into
    place, so readers never see a half-written export. An existing export of the same format is
    replaced; any other existing file or non-empty directory is refused.
    """
    path = Path(path)
    fmt = _format_of(path, format)
    if not 1 <= digits <= 17:
        raise ValueError(f"digits must be in 1..17, got {digits}")
    if fmt == "npy" and metadata is not None and metadata is not False:
        raise ValueError("the npy export holds vectors, biases and IDs only; use parquet, csv or projector for metadata")
    frame = embedding_frame(model, kind, unknown=unknown, metadata=metadata, metadata_id_col=metadata_id_col)
    if fmt in ("parquet", "csv"):
        _check_file_target(path)
        with _atomic_file(path) as tmp:
            if fmt == "parquet":
                _write_parquet(frame, tmp)
            else:
                frame.to_csv(tmp, index=False, float_format=f"%.{digits}g", lineterminator="\n")
        return path
    _check_dir_target(path, fmt)
    with _atomic_dir(path) as tmp:
        if fmt == "npy":
            _write_npy_dir(frame, kind, model, tmp)
        else:
            _write_projector_dir(frame, kind, tmp, digits)
    return path


def read_embeddings(path: str | os.PathLike, *, format: Format | None = None, id_type: Literal["int", "str"] | None = None) -> pd.DataFrame:
    """Read a parquet, CSV or npy export back into the :func:`embedding_frame` table.

    ``format=None`` takes it from the suffix, or from the files of a directory (``npy``).
    For CSV the ID column is int when every value is a canonical integer (``-?(0|[1-9][0-9]*)``),
    otherwise str, as :func:`collabemb.read_ratings` decides; ``id_type`` forces one.
    """
    path = Path(path)
    if format is None and path.is_dir():
        format = "npy" if (path / "ids.json").is_file() else None
        if format is None:
            raise ValueError(f"{path}: not an npy export (no ids.json); projector files are for TensorBoard, read them with it")
    fmt = _format_of(path, format)
    if fmt == "projector":
        raise ValueError("the projector files are for TensorBoard; read_embeddings reads parquet, csv and npy exports")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such export")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        frame = pq.read_table(path).to_pandas()
        for col in frame.columns:
            frame[col] = _plain_text(frame[col])
        return frame
    if fmt == "csv":
        return _read_csv(path, id_type)
    return _read_npy_dir(path)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"cannot write parquet: {exc}") from None
    # dictionary-encode IDs and metadata only: trying it on a million distinct floats per column
    # (and falling back) is what makes a plain write_table of a 1M x 64 table slow (2.2 s vs 0.5 s)
    text = [c for c in table.column_names if not pa.types.is_floating(table.schema.field(c).type)]
    pq.write_table(table, path, use_dictionary=text)


def _read_csv(path: Path, id_type: str | None) -> pd.DataFrame:
    header = pd.read_csv(path, nrows=0).columns
    if len(header) < 3 or header[0] != "row" or header[1] not in ("user", "item") or "bias" not in header:
        raise ValueError(f"{path}, line 1: expected columns row, user|item, ..., bias, {FACTOR_PREFIX}0..., found {', '.join(header)}")
    kind = header[1]
    floats = [c for c in header if c == "bias" or c.startswith(FACTOR_PREFIX)]
    dtypes = {c: np.float32 for c in floats} | {"row": np.int64, kind: str}
    # only an empty field is missing, and never in the ID column ("NA" may be a string ID)
    na = {c: [""] for c in header if c != kind}
    frame = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=na)
    raw = frame[kind].astype(object)
    unknown = frame["row"].to_numpy() == UNKNOWN_ROW
    known_ids = raw[~unknown]
    if id_type is None:
        id_type = "int" if known_ids.str.fullmatch(_CANONICAL_INT.pattern).all() else "str"
    if id_type == "int":
        ids = pd.array(np.zeros(len(raw), dtype=np.int64), dtype="Int64")
        ids[~unknown] = known_ids.astype(np.int64).to_numpy()
        ids[unknown] = pd.NA
        frame[kind] = ids if unknown.any() else ids.astype(np.int64)
    elif id_type == "str":
        values = raw.to_numpy(dtype=object).copy()
        values[unknown] = None
        frame[kind] = pd.Series(values, dtype=object)
    else:
        raise ValueError(f"id_type must be 'int', 'str' or None, got {id_type!r}")
    for col in frame.columns:
        if col not in floats and col not in ("row", kind):
            frame[col] = _plain_text(frame[col])
    return frame


def _write_npy_dir(frame: pd.DataFrame, kind: Kind, model: EmbeddingDotBias, tmp: Path) -> None:
    names = [c for c in frame.columns if str(c).startswith(FACTOR_PREFIX)]
    np.save(tmp / "vectors.npy", frame[names].to_numpy(dtype=np.float32), allow_pickle=False)
    np.save(tmp / "bias.npy", frame["bias"].to_numpy(dtype=np.float32), allow_pickle=False)
    reg = model.users if kind == "user" else model.items
    ids = reg.ids.tolist()
    if frame["row"].iloc[0] == UNKNOWN_ROW:
        ids = [None, *ids]
    doc = {"format": IDS_FORMAT, "name": kind, "kind": reg.kind, "unknown_row": bool(frame["row"].iloc[0] == UNKNOWN_ROW), "ids": ids}
    with open(tmp / "ids.json", "w", encoding="utf-8") as fh:
        json.dump(doc, fh, ensure_ascii=True, allow_nan=False)


def _read_npy_dir(path: Path) -> pd.DataFrame:
    with open(path / "ids.json", encoding="utf-8") as fh:
        doc = json.load(fh)
    if doc.get("format") != IDS_FORMAT or doc.get("kind") not in ("int", "str") or doc.get("name") not in ("user", "item"):
        raise ValueError(f"{path / 'ids.json'}: not a collabemb ID file (format {doc.get('format')!r})")
    matrix = np.load(path / "vectors.npy", allow_pickle=False)
    bias = np.load(path / "bias.npy", allow_pickle=False)
    ids, kind, name = doc["ids"], doc["kind"], doc["name"]
    if not (matrix.ndim == 2 and bias.shape == (len(ids),) and matrix.shape[0] == len(ids)):
        raise ValueError(f"{path}: vectors.npy {matrix.shape}, bias.npy {bias.shape} and {len(ids)} IDs do not line up")
    has_unknown = bool(doc.get("unknown_row"))
    frame = pd.DataFrame(matrix, columns=[f"{FACTOR_PREFIX}{j}" for j in range(matrix.shape[1])], copy=False)
    frame.insert(0, "bias", bias)
    if kind == "int":
        col = pd.array(ids, dtype="Int64") if has_unknown else np.array(ids, dtype=np.int64)
    else:
        col = pd.Series(np.empty(len(ids), dtype=object), dtype=object)
        col[:] = ids
    frame.insert(0, name, col)
    frame.insert(0, "row", np.arange(0 if has_unknown else 1, len(ids) + (0 if has_unknown else 1), dtype=np.int64))
    return frame


def _write_projector_dir(frame: pd.DataFrame, kind: Kind, tmp: Path, digits: int) -> None:
    names = [c for c in frame.columns if str(c).startswith(FACTOR_PREFIX)]
    np.savetxt(tmp / "vectors.tsv", frame[names].to_numpy(dtype=np.float32), fmt=f"%.{digits}g", delimiter="\t")
    meta_cols = [kind] + [c for c in frame.columns if c not in ("row", kind, "bias") and not str(c).startswith(FACTOR_PREFIX)]
    labels = pd.DataFrame({c: _labels(frame[c]) for c in meta_cols})
    labels.loc[frame["row"].to_numpy() == UNKNOWN_ROW, kind] = PROJECTOR_UNKNOWN_LABEL
    with open(tmp / "metadata.tsv", "w", encoding="utf-8", newline="\n") as fh:
        if len(meta_cols) > 1:
            fh.write("\t".join(_clean(str(c)) for c in meta_cols) + "\n")
        fh.write("\n".join("\t".join(row) for row in labels.itertuples(index=False, name=None)))
        fh.write("\n")


def _labels(col: pd.Series) -> list[str]:
    return ["" if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else _clean(str(v)) for v in col.tolist()]


def _clean(text: str) -> str:
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


# --- atomic writes ---------------------------------------------------------------------


def _check_file_target(path: Path) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory; give a file name for this format")


def _check_dir_target(path: Path, fmt: str) -> None:
    if path.is_file():
        raise FileExistsError(f"{path}: is a file; the {fmt} export writes a directory")
    if path.is_dir():
        found = {p.name for p in path.iterdir()}
        if found and not found <= set(_DIR_FILES[fmt]):
            raise FileExistsError(f"{path}: exists and is not a {fmt} export (holds {', '.join(sorted(found)[:5])}); refusing to replace it")


class _atomic_file:
    """Context manager yielding a temporary path beside ``target``, renamed onto it on success."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.chmod(self.tmp, 0o666 & ~_umask())
            os.replace(self.tmp, self.target)
        else:
            self.tmp.unlink(missing_ok=True)


class _atomic_dir:
    """Context manager yielding a temporary directory beside ``target``, swapped in on success."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        os.chmod(self.tmp, 0o777 & ~_umask())
        for p in self.tmp.iterdir():
            os.chmod(p, 0o666 & ~_umask())
        if not self.target.exists():
            os.replace(self.tmp, self.target)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.old-", dir=self.target.parent))
        os.rmdir(old)
        os.replace(self.target, old)
        try:
            os.replace(self.tmp, self.target)
        except BaseException:
            os.replace(old, self.target)
            raise
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- features for tabular models -------------------------------------------------------


def to_features(
    model: EmbeddingDotBias,
    df: pd.DataFrame,
    *,
    user_col: str | None = "user",
    item_col: str | None = "item",
    user_prefix: str = "user_",
    item_prefix: str = "item_",
    bias: bool = True,
    known: bool = True,
) -> pd.DataFrame:
    """``df`` with embedding, bias and known-flag columns added for its user and item IDs.

    Vectorised: the IDs are encoded once through the registry (a hash lookup) and the rows taken
    from the tables with one numpy ``take``; no Python loop per row. IDs the model never saw get
    the trained unknown slot (row 0) and ``{prefix}known == False``.

    Args:
        model: a fitted model.
        df: any DataFrame holding raw IDs of the model's kinds (ints or strings, never mixed).
        user_col, item_col: ID columns; ``None`` skips that side.
        user_prefix, item_prefix: column prefixes; the added columns are
            ``{prefix}emb_0 .. {prefix}emb_{k-1}`` (float32), ``{prefix}bias`` (float32, logit
            units) and ``{prefix}known`` (bool).
        bias, known: whether to add the bias and the known-flag columns.

    Returns:
        A new DataFrame: ``df``'s columns (same index) followed by the feature columns.

    Raises:
        ValueError: a missing ID column, or an added column name that ``df`` already has.
        TypeError: IDs of another kind than the registry's (``"7"`` is not ``7``).
    """
    parts = []
    for col, prefix, kind in ((user_col, user_prefix, "user"), (item_col, item_prefix, "item")):
        if col is None:
            continue
        if col not in df.columns:
            raise ValueError(f"DataFrame has no {kind} ID column {col!r} (found: {', '.join(map(str, df.columns))})")
        reg, w, b = _tables(model, kind)
        rows = reg.encode(df[col])
        names = [f"{prefix}{FACTOR_PREFIX}{j}" for j in range(w.shape[1])]
        table = np.concatenate([w, b[:, None]], axis=1) if bias else w
        if bias:
            names.append(f"{prefix}bias")
        block = pd.DataFrame(np.take(table, rows, axis=0), columns=names, index=df.index, copy=False)
        if known:
            block[f"{prefix}known"] = rows != UNKNOWN_ROW
        parts.append(block)
    if not parts:
        raise ValueError("nothing to add: both user_col and item_col are None")
    added = [c for p in parts for c in p.columns]
    clash = sorted(set(added) & set(map(str, df.columns)))
    if clash or len(set(added)) != len(added):
        raise ValueError(f"feature column(s) {clash or added} already exist; choose other prefixes")
    return pd.concat([df, *parts], axis=1)


# --- torch modules ------------------------------------------------------------------------


class IdEmbedding(nn.Embedding):
    """An ``nn.Embedding`` carrying a trained table, its bias table and its ID registry.

    Index 0 is the **unknown slot**: a trained row standing for an average user / item, the row
    every unseen raw ID maps to. It is *not* a padding index (``padding_idx`` is None), and its
    vector is not zero. Known IDs are rows ``1..len(registry)``, in the registry's order.

    Three ways in:

    * ``emb(rows)``: an int64 tensor of rows, any shape -> ``(..., k)``, as any nn.Embedding.
    * ``emb.lookup(raw_ids)``: raw IDs through the registry (unseen -> row 0) -> ``(n, k)``;
      ``emb.rows(raw_ids)`` gives the int64 row tensor alone.
    * ``emb.soft(probs)``: a probability vector (or any weights) over IDs -> ``probs @ weight``,
      differentiable in ``probs``; the last dimension is either ``num_embeddings`` (row 0
      first) or ``len(registry)`` (known IDs only, rows 1..n in registry order). For a one-hot
      ``probs`` it equals the hard lookup.

    Attributes:
        weight: (n_rows, k) float32 parameter (``requires_grad=False`` when frozen).
        bias: ``nn.Embedding(n_rows, 1)``, the biases in logit units; ``emb.bias(rows)``.
        registry: the :class:`~collabemb.registry.IdRegistry` (not in ``state_dict``; save it
            with ``registry.to_dict()``).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, registry: IdRegistry, *, freeze: bool = True) -> None:
        n_rows, k = weight.shape
        if n_rows != registry.n_rows:
            raise ValueError(f"weight has {n_rows} rows, the registry needs {registry.n_rows} ({len(registry)} IDs + row 0)")
        if tuple(bias.shape) not in ((n_rows,), (n_rows, 1)):
            raise ValueError(f"bias must have shape ({n_rows},) or ({n_rows}, 1), got {tuple(bias.shape)}")
        super().__init__(n_rows, k, _weight=weight.detach().clone(), _freeze=freeze)
        self.bias = nn.Embedding(n_rows, 1, _weight=bias.detach().reshape(n_rows, 1).clone(), _freeze=freeze)
        self.registry = registry

    def rows(self, raw_ids, *, unknown: Literal["zero", "raise"] = "zero") -> torch.Tensor:
        """(n,) int64 rows of raw IDs on this module's device (unseen -> 0, or raise)."""
        return torch.from_numpy(self.registry.encode(raw_ids, unknown=unknown)).to(self.weight.device)

    def lookup(self, raw_ids, *, unknown: Literal["zero", "raise"] = "zero") -> torch.Tensor:
        """(n, k) embeddings of raw IDs (unseen IDs get the trained row 0)."""
        return self(self.rows(raw_ids, unknown=unknown))

    def _soft_table(self, probs: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        width = probs.shape[-1]
        if width == self.num_embeddings:
            return table
        if width == self.num_embeddings - 1:
            return table[1:]
        raise ValueError(
            f"probs has {width} columns; expected {self.num_embeddings} (row 0 first) or {self.num_embeddings - 1} (known IDs only)"
        )

    def soft(self, probs: torch.Tensor) -> torch.Tensor:
        """(..., k) expected embedding ``probs @ weight`` for (..., n_rows) or (..., n_ids) weights."""
        table = self._soft_table(probs, self.weight)
        return probs.to(table.dtype) @ table

    def soft_bias(self, probs: torch.Tensor) -> torch.Tensor:
        """(...,) expected bias ``probs @ bias`` for the same ``probs`` as :meth:`soft`."""
        table = self._soft_table(probs, self.bias.weight)
        return (probs.to(table.dtype) @ table).squeeze(-1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, registry={self.registry.name!r} ({len(self.registry)} {self.registry.kind} IDs + unknown row 0)"


def to_torch(model: EmbeddingDotBias, kind: Kind, *, freeze: bool = True) -> IdEmbedding:
    """The user or item table as an :class:`IdEmbedding` (weights copied: the model is untouched).

    Args:
        model: a fitted model.
        kind: ``"user"`` or ``"item"``.
        freeze: leave the weights and biases out of gradient updates (``requires_grad=False``);
            gradients still flow *through* the lookup to its inputs (e.g. ``probs`` in ``soft``).
    """
    kind = _check_kind(kind)
    if kind == "user":
        return IdEmbedding(model.u_weight.weight, model.u_bias.weight, model.users, freeze=freeze)
    return IdEmbedding(model.i_weight.weight, model.i_bias.weight, model.items, freeze=freeze)
