"""Getting the embeddings out as tables and files, by raw ID.

Everything here starts from a fitted model (a :class:`~collabemb.fitted.FittedModel`, or a bare
:class:`~collabemb.models.EmbeddingDotBias`) and keeps its ID-to-row mapping exact:

* :func:`embedding_frame` / :func:`embedding_arrays`: the user or item table with its raw IDs
  and biases, as a DataFrame or as ``(ids, matrix, bias)`` numpy arrays.
* :func:`write_embeddings` / :func:`read_embeddings`: parquet, CSV, ``.npy`` plus an ID file,
  and the TensorBoard Embedding Projector pair (``vectors.tsv`` + ``metadata.tsv``).

Embeddings as objects for other models (feature columns, torch modules) are in
:mod:`collabemb.features`.

Row 0 is the unknown slot in every table (see :mod:`collabemb.registry`). Exports include it by
default as the first row, with ``row == 0`` and a missing ID; ``unknown_row=False`` leaves it out.

Column names, stable across versions: ``row`` (int64 table row), the ID column ``user`` or
``item`` (raw IDs; ``pd.Int64Dtype`` for int IDs so row 0 can hold ``<NA>``, object of str for
string IDs), any joined metadata columns, ``bias`` (float32, logit units), ``emb_0 .. emb_{k-1}``
(float32).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd

from collabemb.atomic import atomic_dir, atomic_file
from collabemb.fitted import FittedModel
from collabemb.models import EmbeddingDotBias, Table, check_table
from collabemb.registry import UNKNOWN_ROW, IdRegistry, IdType, id_type_of
from collabemb.schema import EXPORT_IDS, REGISTRY_MAX_BYTES, read_json

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
_DIR_FILES = {"npy": ("vectors.npy", "bias.npy", "ids.json"), "projector": ("vectors.tsv", "metadata.tsv", "projector_config.pbtxt")}

Model = FittedModel | EmbeddingDotBias


class EmbeddingArrays(NamedTuple):
    """One embedding table with its raw IDs, as numpy arrays aligned row by row.

    Attributes:
        ids: (n,) raw IDs. With row 0 included an object array whose first entry is ``None``
            (row 0 has no raw ID) followed by the known IDs; without it the registry's own
            IDs (int64, or object of str).
        matrix: (n, n_factors) float32; with row 0 included ``matrix[r]`` is table row ``r``.
        bias: (n,) float32 biases in logit units, aligned with ``matrix``.
    """

    ids: np.ndarray
    matrix: np.ndarray
    bias: np.ndarray


# --- tables by raw ID ------------------------------------------------------------


def embedding_arrays(model: Model, table: Table = "item", *, unknown_row: bool = True) -> EmbeddingArrays:
    """The user or item table as ``(ids, matrix, bias)`` numpy arrays (copies, not views).

    Args:
        model: a fitted model (or its module).
        table: ``"user"`` or ``"item"``.
        unknown_row: True puts row 0 (the trained unknown slot) first, so ``matrix[r]`` is table
            row ``r`` and ``ids[0] is None``; False returns the known rows 1..n only, with
            ``ids`` equal to ``registry.ids``.
    """
    reg = model.registry(check_table(table))
    w, b = model.tables(table)
    if not unknown_row:
        return EmbeddingArrays(reg.ids.copy(), w[1:].copy(), b[1:].copy())
    ids = np.empty(reg.n_rows, dtype=object)
    ids[0] = None
    ids[1:] = reg.ids.tolist() if reg.id_type == "int" else reg.ids
    return EmbeddingArrays(ids, w.copy(), b.copy())


def embedding_frame(
    model: Model,
    table: Table = "item",
    *,
    unknown_row: bool = True,
    metadata: pd.DataFrame | bool | None = None,
    metadata_id_col: str | None = None,
) -> pd.DataFrame:
    """The user or item table as a DataFrame, one row per table row, in table order.

    Columns: ``row`` (int64), the ID column ``user`` / ``item`` (``Int64`` with ``<NA>`` on row 0
    for int IDs, object of str with ``None`` on row 0 for string IDs; plain int64 without row 0),
    any metadata columns, ``bias`` (float32), ``emb_0 .. emb_{k-1}`` (float32).

    Args:
        model: a fitted model (or its module).
        table: ``"user"`` or ``"item"``.
        unknown_row: True: row 0 first (``row == 0``, missing ID); False: known rows only.
        metadata: a DataFrame to join by raw ID (left join: IDs without metadata get missing
            values, metadata rows for IDs the model does not know are dropped), or ``True`` for
            the item metadata stored with the model (``fitted.item_metadata``).
        metadata_id_col: ID column of ``metadata``; default ``table`` (``"user"`` / ``"item"``).

    Raises:
        TypeError: metadata IDs of another type than the registry's (``"7"`` is not ``7``).
        ValueError: repeated metadata IDs, or a metadata column named like a table column.
    """
    reg = model.registry(check_table(table))
    w, b = model.tables(table)
    start = 0 if unknown_row else 1
    frame = pd.DataFrame(w[start:], columns=[f"{FACTOR_PREFIX}{j}" for j in range(w.shape[1])], copy=True)
    frame.insert(0, "bias", b[start:].copy())
    frame.insert(0, table, _id_column(reg, unknown_row))
    frame.insert(0, "row", np.arange(start, reg.n_rows, dtype=np.int64))
    if metadata is not None and metadata is not False:
        meta = _metadata_for(model, table, reg, metadata, metadata_id_col, reserved=set(frame.columns))
        pos = meta.index.get_indexer(pd.Index(reg.ids, dtype=meta.index.dtype))  # -1: no metadata
        if unknown_row:
            pos = np.concatenate([[-1], pos])  # row 0 has no metadata
        joined = meta.reset_index(drop=True).reindex(pos)  # label -1 is absent: a missing row
        joined.index = frame.index
        for offset, col in enumerate(meta.columns):
            frame.insert(2 + offset, col, _plain_text(joined[col]))
    return frame


def _id_column(reg: IdRegistry, unknown_row: bool) -> pd.api.extensions.ExtensionArray | np.ndarray | pd.Series:
    """The raw-ID column of a table: row 0 (when included) holds a missing ID."""
    if not unknown_row:
        ids = reg.ids.copy()
        return pd.Series(ids, dtype=object) if reg.id_type == "str" else ids
    if reg.id_type == "int":
        ids = pd.array(np.concatenate([[0], reg.ids]), dtype="Int64")
        ids[0] = pd.NA
        return ids
    values = np.empty(reg.n_rows, dtype=object)
    values[0] = None
    values[1:] = reg.ids
    return pd.Series(values, dtype=object)


def _plain_text(col: pd.Series) -> pd.Series:
    """Text columns as object of Python str with None for missing (as the registries keep IDs)."""
    if pd.api.types.is_string_dtype(col.dtype) and not isinstance(col.dtype, pd.CategoricalDtype):
        values = col.to_numpy(dtype=object, na_value=None)
        return pd.Series(values, index=col.index, dtype=object, name=col.name)
    return col


def _stored_metadata(model: Model, table: Table) -> pd.DataFrame:
    """The item metadata stored with a fitted model, for ``metadata=True``."""
    if table != "item":
        raise ValueError("metadata=True means the item metadata stored with the model; for users pass a DataFrame")
    if not isinstance(model, FittedModel) or model.item_metadata.empty:
        raise ValueError("the model has no item metadata stored (set_item_metadata, or fit --items); pass a DataFrame")
    return model.item_metadata


def _metadata_for(
    model: Model, table: Table, reg: IdRegistry, metadata: pd.DataFrame | bool, id_col: str | None, *, reserved: set
) -> pd.DataFrame:
    """Metadata indexed by raw ID (unique), checked against the registry's ID type and the table's columns."""
    if metadata is True:
        metadata, id_col = _stored_metadata(model, table), "item"
    if not isinstance(metadata, pd.DataFrame):
        raise TypeError(f"metadata must be a DataFrame or True, got {type(metadata).__name__}")
    id_col = id_col or table
    if id_col not in metadata.columns:
        raise ValueError(f"metadata has no ID column {id_col!r} (found: {', '.join(map(str, metadata.columns))})")
    ids, found = id_type_of(metadata[id_col], what=f"metadata column {id_col!r}")
    if len(ids) and found != reg.id_type:
        raise TypeError(f"metadata IDs are {found}, the model's {table} IDs are {reg.id_type} ('7' and 7 are different IDs)")
    meta = metadata.drop(columns=[id_col])
    clash = [c for c in meta.columns if c in reserved or str(c).startswith(FACTOR_PREFIX)]
    if clash:
        raise ValueError(f"metadata column(s) {clash} clash with the table's own columns (row, {table}, bias, {FACTOR_PREFIX}*)")
    meta.index = pd.Index(ids, dtype=object if reg.id_type == "str" else np.int64)
    if not meta.index.is_unique:
        dup = meta.index[meta.index.duplicated()].tolist()[0]
        raise ValueError(f"metadata repeats {table} {dup!r}")
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
    model: Model,
    path: str | os.PathLike,
    table: Table = "item",
    *,
    format: Format | None = None,
    unknown_row: bool = True,
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
      (``{"format", "name", "id_type", "unknown_row", "ids"}``, ``ids`` aligned with the rows,
      ``null`` for row 0). Bit-for-bit; no metadata.
    * ``"projector"``: ``path`` is a directory holding the TensorBoard Embedding Projector pair:
      ``vectors.tsv`` (one tab-separated vector per line, ``digits`` significant digits, no
      header) and ``metadata.tsv`` (the raw ID, plus the metadata columns with a header row
      when metadata is joined; TensorBoard wants a header exactly when there are several
      columns), and ``projector_config.pbtxt`` naming both, so ``tensorboard --logdir path``
      opens the projector on them directly. Row 0 is labelled ``<unknown>``; tabs and line
      breaks inside labels become spaces.

    The file (or directory) is written beside ``path`` under a temporary name and renamed into
    place (:mod:`collabemb.atomic`), so readers never see a half-written export. An existing
    export of the same format is replaced; any other existing file or non-empty directory is refused.
    """
    path = Path(path)
    table = check_table(table)
    fmt = _format_of(path, format)
    if not 1 <= digits <= 17:
        raise ValueError(f"digits must be in 1..17, got {digits}")
    if fmt == "npy" and metadata is not None and metadata is not False:
        raise ValueError("the npy export holds vectors, biases and IDs only; use parquet, csv or projector for metadata")
    frame = embedding_frame(model, table, unknown_row=unknown_row, metadata=metadata, metadata_id_col=metadata_id_col)
    if fmt in ("parquet", "csv"):
        _check_file_target(path)
        with atomic_file(path) as tmp:
            if fmt == "parquet":
                _write_parquet(frame, tmp)
            else:
                frame.to_csv(tmp, index=False, float_format=f"%.{digits}g", lineterminator="\n")
        return path
    _check_dir_target(path, fmt)
    with atomic_dir(path) as tmp:
        if fmt == "npy":
            _write_npy_dir(frame, table, model.registry(table), unknown_row, tmp)
        else:
            _write_projector_dir(frame, table, tmp, digits)
    return path


def read_embeddings(path: str | os.PathLike, *, format: Format | None = None, id_type: IdType | None = None) -> pd.DataFrame:
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
        arrow = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"cannot write parquet: {exc}") from None
    # dictionary-encode IDs and metadata only: trying it on a million distinct floats per column
    # (and falling back) is what makes a plain write_table of a 1M x 64 table slow
    text = [c for c in arrow.column_names if not pa.types.is_floating(arrow.schema.field(c).type)]
    pq.write_table(arrow, path, use_dictionary=text)


def _read_csv(path: Path, id_type: str | None) -> pd.DataFrame:
    header = pd.read_csv(path, nrows=0).columns
    if len(header) < 3 or header[0] != "row" or header[1] not in ("user", "item") or "bias" not in header:
        raise ValueError(f"{path}, line 1: expected columns row, user|item, ..., bias, {FACTOR_PREFIX}0..., found {', '.join(header)}")
    name = header[1]
    floats = [c for c in header if c == "bias" or c.startswith(FACTOR_PREFIX)]
    dtypes = {c: np.float32 for c in floats} | {"row": np.int64, name: str}
    # only an empty field is missing, and never in the ID column ("NA" may be a string ID)
    na = {c: [""] for c in header if c != name}
    frame = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=na)
    raw = frame[name].astype(object)
    unknown = frame["row"].to_numpy() == UNKNOWN_ROW
    known_ids = raw[~unknown]
    if id_type is None:
        id_type = "int" if known_ids.str.fullmatch(_CANONICAL_INT.pattern).all() else "str"
    if id_type == "int":
        ids = pd.array(np.zeros(len(raw), dtype=np.int64), dtype="Int64")
        ids[~unknown] = known_ids.astype(np.int64).to_numpy()
        ids[unknown] = pd.NA
        frame[name] = ids if unknown.any() else ids.astype(np.int64)
    elif id_type == "str":
        values = raw.to_numpy(dtype=object).copy()
        values[unknown] = None
        frame[name] = pd.Series(values, dtype=object)
    else:
        raise ValueError(f"id_type must be 'int', 'str' or None, got {id_type!r}")
    for col in frame.columns:
        if col not in floats and col not in ("row", name):
            frame[col] = _plain_text(frame[col])
    return frame


def _write_npy_dir(frame: pd.DataFrame, table: Table, reg: IdRegistry, unknown_row: bool, tmp: Path) -> None:
    names = [c for c in frame.columns if str(c).startswith(FACTOR_PREFIX)]
    np.save(tmp / "vectors.npy", frame[names].to_numpy(dtype=np.float32), allow_pickle=False)
    np.save(tmp / "bias.npy", frame["bias"].to_numpy(dtype=np.float32), allow_pickle=False)
    ids = [None, *reg.ids.tolist()] if unknown_row else reg.ids.tolist()
    doc = {"format": IDS_FORMAT, "name": table, "id_type": reg.id_type, "unknown_row": bool(unknown_row), "ids": ids}
    with open(tmp / "ids.json", "w", encoding="utf-8") as fh:
        json.dump(doc, fh, ensure_ascii=True, allow_nan=False)


def _read_npy_dir(path: Path) -> pd.DataFrame:
    doc = read_json(path / "ids.json", EXPORT_IDS, max_bytes=REGISTRY_MAX_BYTES)
    id_type = doc.get("id_type", doc.get("kind"))  # "kind" in exports written before the rename
    if id_type is None:
        raise ValueError(f"{path / 'ids.json'}: key 'id_type': required key is missing")
    # memory-mapped first: a header that claims more than the file holds is refused, not allocated
    matrix = np.array(np.load(path / "vectors.npy", allow_pickle=False, mmap_mode="r"))
    bias = np.array(np.load(path / "bias.npy", allow_pickle=False, mmap_mode="r"))
    ids, name = doc["ids"], doc["name"]
    if not (matrix.ndim == 2 and bias.shape == (len(ids),) and matrix.shape[0] == len(ids)):
        raise ValueError(f"{path}: vectors.npy {matrix.shape}, bias.npy {bias.shape} and {len(ids)} IDs do not line up")
    has_unknown = bool(doc.get("unknown_row"))
    frame = pd.DataFrame(matrix, columns=[f"{FACTOR_PREFIX}{j}" for j in range(matrix.shape[1])], copy=False)
    frame.insert(0, "bias", bias)
    if id_type == "int":
        col = pd.array(ids, dtype="Int64") if has_unknown else np.array(ids, dtype=np.int64)
    else:
        col = pd.Series(np.empty(len(ids), dtype=object), dtype=object)
        col[:] = ids
    frame.insert(0, name, col)
    start = 0 if has_unknown else 1
    frame.insert(0, "row", np.arange(start, len(ids) + start, dtype=np.int64))
    return frame


def _write_projector_dir(frame: pd.DataFrame, table: Table, tmp: Path, digits: int) -> None:
    names = [c for c in frame.columns if str(c).startswith(FACTOR_PREFIX)]
    np.savetxt(tmp / "vectors.tsv", frame[names].to_numpy(dtype=np.float32), fmt=f"%.{digits}g", delimiter="\t")
    meta_cols = [table] + [c for c in frame.columns if c not in ("row", table, "bias") and not str(c).startswith(FACTOR_PREFIX)]
    labels = pd.DataFrame({c: _labels(frame[c]) for c in meta_cols})
    labels.loc[frame["row"].to_numpy() == UNKNOWN_ROW, table] = PROJECTOR_UNKNOWN_LABEL
    with open(tmp / "metadata.tsv", "w", encoding="utf-8", newline="\n") as fh:
        if len(meta_cols) > 1:
            fh.write("\t".join(_clean(str(c)) for c in meta_cols) + "\n")
        fh.write("\n".join("\t".join(row) for row in labels.itertuples(index=False, name=None)))
        fh.write("\n")
    config = f'embeddings {{\n  tensor_name: "{table} embeddings"\n  tensor_path: "vectors.tsv"\n  metadata_path: "metadata.tsv"\n}}\n'
    (tmp / "projector_config.pbtxt").write_text(config, encoding="utf-8")


def _labels(col: pd.Series) -> list[str]:
    return ["" if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else _clean(str(v)) for v in col.tolist()]


def _clean(text: str) -> str:
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _check_file_target(path: Path) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory; give a file name for this format")


def _check_dir_target(path: Path, fmt: str) -> None:
    if path.is_file():
        raise FileExistsError(f"{path}: is a file; the {fmt} export writes a directory")
    if path.is_dir():
        found = {p.name for p in path.iterdir()}
        if found and not found <= set(_DIR_FILES[fmt]):
            shown = ", ".join(sorted(found)[:5])
            raise FileExistsError(f"{path}: exists and is not a {fmt} export (holds {shown}); refusing to replace it")
