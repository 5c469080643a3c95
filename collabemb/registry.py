"""Raw ID <-> embedding row mapping.

Row 0 of every embedding table is the *unknown* slot; the n known IDs take rows 1..n.
A registry holds IDs of exactly one type, ``int`` (any value that fits int64) or ``str``;
the type is never coerced: the string ``"007"`` and the integer ``7`` are different IDs, and
a registry of int IDs refuses string queries rather than silently treating them as unseen.

Order: the IDs given to the constructor take rows 1..n in **sorted order of the raw IDs**
(numeric order for ints, code-point order for strings), independent of the order in which
they appear in the data. A registry never changes once made: :meth:`IdRegistry.extended` returns a
*new* registry with the added IDs appended after the existing rows (sorted among themselves), so
existing rows never move and whoever holds the old registry keeps a valid mapping.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Literal

import numpy as np
import pandas as pd

UNKNOWN_ROW = 0
IdType = Literal["int", "str"]
#: What happens to an ID a registry does not know: map it to the trained unknown row 0, or raise.
Unknown = Literal["unknown_slot", "raise"]
UNKNOWN_CHOICES: tuple[str, ...] = ("unknown_slot", "raise")

#: Which table: the users' or the items'. One word for it across Python and the command line.
Table = Literal["user", "item"]
TABLES: tuple[str, ...] = ("user", "item")

#: How an integer ID is written as text (the rule of collabemb.data): "050", "+5", " 5" and "-0" are not.
CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]*")
#: Lists up to this long of plain ints or strs are checked without pandas (a query's few IDs).
_SMALL = 256
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def check_table(table: str) -> Table:
    """``table`` if it is ``"user"`` or ``"item"``, else a ValueError saying so."""
    if table not in TABLES:
        raise ValueError(f"table must be 'user' or 'item', got {table!r}")
    return table  # type: ignore[return-value]


class UnknownIdError(KeyError):
    """Raised by :meth:`IdRegistry.encode` with ``unknown="raise"`` when an ID was never registered."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


def id_type_of(values: Iterable | np.ndarray | pd.Series, *, what: str = "IDs") -> tuple[np.ndarray, IdType]:
    """Validate a collection of raw IDs and return them as a 1-D array plus their type.

    Returns ``(array, id_type)`` where ``array`` is int64 for ``id_type == "int"`` and an object
    array of Python ``str`` for ``id_type == "str"``. Raises ``TypeError`` for floats, booleans, a mix of
    ints and strings, and ``ValueError`` for missing values or ints outside the int64 range.
    """
    if isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype == np.int64:
        return values, "int"  # already validated (the common case inside the package): no pandas
    if isinstance(values, list | tuple) and 0 < len(values) <= _SMALL:
        if all(type(v) is int for v in values) and all(_INT64_MIN <= v <= _INT64_MAX for v in values):
            return np.array(values, dtype=np.int64), "int"  # a few plain IDs (one query): no pandas
        if all(type(v) is str for v in values):
            return _as_object_array(values), "str"
    if isinstance(values, pd.Series | pd.Index):
        series = values
    else:
        if isinstance(values, str | bytes | int | np.integer):
            raise TypeError(f"{what} must be a sequence of IDs, not a single {type(values).__name__}")
        arr = values if isinstance(values, np.ndarray) else _as_object_array(values)
        if arr.dtype.kind in "OU":
            # keep Python objects as they are: pandas would otherwise convert strings to an
            # Arrow-backed dtype, which is slow here and cannot hold lone surrogates
            series = pd.Series(arr, copy=False, dtype=object)
        else:
            series = pd.Series(arr, copy=False)
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        raise TypeError(f"{what} must be ints or strings, found booleans")
    if pd.api.types.is_integer_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype):
        if series.hasnans:
            raise ValueError(f"{what} contain a missing value")
        if pd.api.types.is_unsigned_integer_dtype(dtype) and len(series) and series.max() > _INT64_MAX:
            raise ValueError(f"{what} must fit in int64; found {series.max()} (pass very large IDs as strings)")
        return series.to_numpy(dtype=np.int64), "int"
    if pd.api.types.is_float_dtype(dtype):
        raise TypeError(
            f"{what} must be ints or strings, found floats ({dtype}); convert integral floats with .astype('int64') or pass strings"
        )
    if isinstance(dtype, pd.CategoricalDtype):
        return id_type_of(series.astype(dtype.categories.dtype), what=what)
    # object or string dtype: inspect the Python values
    arr = series.to_numpy(dtype=object)
    if len(arr) == 0:
        return np.empty(0, dtype=np.int64), "int"
    inferred = pd.api.types.infer_dtype(arr, skipna=False)
    if inferred == "string":
        return arr, "str"
    if inferred == "integer":
        try:
            return arr.astype(np.int64), "int"
        except OverflowError:
            big = next(v for v in arr if not _INT64_MIN <= int(v) <= _INT64_MAX)
            raise ValueError(f"{what} must fit in int64; found {big} (pass very large IDs as strings)") from None
    if series.isna().any():
        pos = int(np.flatnonzero(series.isna().to_numpy())[0])
        raise ValueError(f"{what} contain a missing value at position {pos}")
    kinds = {}
    for v in arr:
        kinds.setdefault(type(v).__name__, v)
        if len(kinds) > 1 and ("str" in kinds) and any(k != "str" for k in kinds):
            break
    examples = ", ".join(f"{name} {kinds[name]!r}" for name in kinds)
    if set(kinds) - {"str"} and "str" in kinds:
        raise TypeError(f"{what} mix types ({examples}); IDs must be all ints or all strings, never coerced")
    raise TypeError(f"{what} must be ints or strings, found {examples}")


def ids_from_text(texts: Iterable[str], id_type: IdType, *, what: str = "IDs") -> np.ndarray:
    """IDs written as text (a command line, a file), in the type of the registry they are looked up in.

    Text has no type of its own, so the registry decides: for ``"str"`` the text is the ID; for
    ``"int"`` every value must be an integer written canonically (:data:`CANONICAL_INT`), since
    ``"050"`` is not how 50 is written and is no ID of such a registry: ValueError naming it.
    Returns an int64 array, or an object array of str.
    """
    series = pd.Series(list(texts), dtype=object)
    if len(series) and pd.api.types.infer_dtype(series, skipna=False) != "string":
        bad = next(v for v in series if not isinstance(v, str))
        raise TypeError(f"{what}: expected text, found {type(bad).__name__} {bad!r}")
    if id_type == "str":
        return series.to_numpy(dtype=object)
    ok = series.str.fullmatch(CANONICAL_INT.pattern).to_numpy(dtype=bool)
    if not ok.all():
        raise ValueError(f"{what} are integers; {series[~ok].iloc[0]!r} is not one (written without leading zeros, '+' or spaces)")
    long = series[series.str.len().to_numpy() >= 19]  # int64 has 19 digits: check those exactly
    big = next((v for v in long if not _INT64_MIN <= int(v) <= _INT64_MAX), None)
    if big is not None:
        raise ValueError(f"{what} are integers that fit in int64; {big} does not (pass such IDs as strings)")
    return series.astype(np.int64).to_numpy()


def _target(arr: np.ndarray) -> pd.Index:
    """``arr`` as an Index for lookups, kept as Python objects (no Arrow string conversion)."""
    return pd.Index(arr, dtype=object if arr.dtype == object else arr.dtype, copy=False)


def _as_object_array(values: Iterable) -> np.ndarray:
    values = list(values)
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


class IdRegistry:
    """Bidirectional mapping between raw IDs of one type and embedding rows; immutable.

    Row 0 is the unknown slot; known IDs occupy rows ``1..len(self)``.

    Args:
        ids: raw IDs (duplicates allowed, they are collapsed). All ints or all strings.
        name: which table the IDs belong to (``"user"``, ``"item"``), used in error messages.
        id_type: ``"int"`` or ``"str"``; default: inferred from ``ids`` (``"int"`` when empty).
    """

    def __init__(self, ids: Iterable | np.ndarray | pd.Series = (), *, name: str = "id", id_type: IdType | None = None):
        self.name = name
        arr, found = id_type_of(ids, what=f"{name} IDs")
        if id_type is None:
            id_type = found
        elif len(arr) and found != id_type:
            raise TypeError(f"{name} IDs must be {id_type}, found {found}")
        if id_type not in ("int", "str"):
            raise ValueError(f"id_type must be 'int' or 'str', got {id_type!r}")
        self.id_type: IdType = id_type
        unique = pd.unique(arr)
        self._set_ids(np.sort(unique) if id_type == "int" else _as_object_array(sorted(unique)))

    def _set_ids(self, ids: np.ndarray) -> None:
        self._ids = ids.astype(np.int64) if self.id_type == "int" else ids.astype(object)
        self._ids.flags.writeable = False
        self._index = pd.Index(self._ids, dtype=np.int64 if self.id_type == "int" else object)

    # --- size and identity -------------------------------------------------
    def __len__(self) -> int:
        """Number of known IDs (the table has ``len(self) + 1`` rows)."""
        return len(self._ids)

    @property
    def n_rows(self) -> int:
        """Rows an embedding table needs: known IDs plus the unknown slot."""
        return len(self._ids) + 1

    @property
    def ids(self) -> np.ndarray:
        """Raw IDs in row order: ``ids[r - 1]`` is the ID of row ``r``. Read-only int64 or object (str) array."""
        return self._ids

    def __contains__(self, raw_id) -> bool:
        try:
            return bool(self.known([raw_id])[0])
        except (TypeError, ValueError):  # another ID type, a missing value, an int beyond int64
            return False

    def __repr__(self) -> str:
        head = ", ".join(repr(v) for v in self._ids[:3].tolist())
        more = ", ..." if len(self._ids) > 3 else ""
        return f"IdRegistry(name={self.name!r}, id_type={self.id_type!r}, n={len(self)}, ids=[{head}{more}])"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, IdRegistry)
            and self.id_type == other.id_type
            and len(self) == len(other)
            and bool(np.array_equal(self._ids, other._ids))
        )

    __hash__ = None  # equal by value, not hashable (as for other mutable-looking containers)

    # --- mapping -------------------------------------------------------------
    def _query(self, raw_ids) -> np.ndarray:
        arr, id_type = id_type_of(raw_ids, what=f"{self.name} IDs")
        if len(arr) and id_type != self.id_type:
            raise TypeError(
                f"this registry holds {self.id_type} {self.name} IDs, got {id_type} IDs "
                f"(e.g. {arr[:1].tolist()[0]!r}); '7' and 7 are different IDs"
            )
        return arr

    def encode(self, raw_ids, *, unknown: Unknown = "unknown_slot") -> np.ndarray:
        """Map raw IDs to rows.

        Args:
            raw_ids: sequence of raw IDs, shape (n,), of this registry's ID type (another type
                raises ``TypeError``: IDs are never coerced).
            unknown: ``"unknown_slot"`` maps unseen IDs to row 0 (the trained unknown slot);
                ``"raise"`` raises :class:`UnknownIdError` naming the first few unseen IDs.

        Returns:
            (n,) int64 rows in ``0..len(self)``.
        """
        if unknown not in UNKNOWN_CHOICES:
            raise ValueError(f"unknown must be 'unknown_slot' or 'raise', got {unknown!r}")
        arr = self._query(raw_ids)
        pos = self._index.get_indexer(_target(arr))
        rows = pos.astype(np.int64) + 1  # -1 (missing) becomes 0, the unknown slot
        if unknown == "raise":
            missing = rows == UNKNOWN_ROW
            if missing.any():
                unseen = pd.unique(arr[missing])
                shown = ", ".join(repr(v) for v in unseen[:5].tolist())
                more = f" and {len(unseen) - 5} more" if len(unseen) > 5 else ""
                raise UnknownIdError(f"{len(unseen)} unseen {self.name} ID(s): {shown}{more}")
        return rows

    def decode(self, rows) -> np.ndarray:
        """Map rows back to raw IDs.

        Args:
            rows: (n,) integer rows in ``1..len(self)``. Row 0 has no raw ID and raises.

        Returns:
            (n,) raw IDs: int64 array, or object array of str.
        """
        rows = np.asarray(rows)
        if rows.size == 0:
            rows = rows.astype(np.int64)  # np.asarray([]) is float64
        if rows.dtype.kind not in "iu":
            raise TypeError(f"rows must be integers, got {rows.dtype}")
        if rows.size and (rows.min() < 1 or rows.max() > len(self)):
            bad = rows[(rows < 1) | (rows > len(self))][0]
            if bad == UNKNOWN_ROW:
                raise IndexError(f"row 0 is the unknown {self.name} slot and has no raw ID")
            raise IndexError(f"row {bad} is out of range for {len(self)} known {self.name} IDs (rows 1..{len(self)})")
        return self._ids[rows - 1]

    def from_text(self, texts: Iterable[str]) -> np.ndarray:
        """IDs written as text (a command line, a file), in this registry's type: :func:`ids_from_text`."""
        return ids_from_text(texts, self.id_type, what=f"this model's {self.name} IDs")

    def known(self, raw_ids) -> np.ndarray:
        """(n,) bool: whether each raw ID has a row of its own."""
        return self.encode(raw_ids) != UNKNOWN_ROW

    # --- growth, by copy -------------------------------------------------------
    def extended(self, raw_ids) -> tuple[IdRegistry, np.ndarray]:
        """A new registry with the IDs not yet known appended (sorted among themselves).

        ``self`` is left unchanged and existing rows never move. Returns ``(registry, rows)``:
        the new registry and the (n,) int64 rows of all given IDs in it, old and new.
        """
        if len(self) == 0:
            arr, id_type = id_type_of(raw_ids, what=f"{self.name} IDs")
            if not len(arr):  # an empty batch says nothing about the type
                id_type = self.id_type
        else:
            arr, id_type = self._query(raw_ids), self.id_type
        new = pd.unique(arr[self._index.get_indexer(_target(arr)) < 0])
        out = IdRegistry(name=self.name, id_type=id_type)
        if len(new):
            new = np.sort(new) if id_type == "int" else _as_object_array(sorted(new))
            out._set_ids(np.concatenate([self._ids.astype(new.dtype), new]))
        else:
            out._set_ids(self._ids)
        return out, out.encode(arr)

    # --- persistence (no pickle) ---------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready description: ``{"name", "id_type", "ids"}`` with ids in row order (row 1 first)."""
        return {"name": self.name, "id_type": self.id_type, "ids": self._ids.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> IdRegistry:
        """Inverse of :meth:`to_dict`; keeps the stored row order exactly (no re-sorting)."""
        id_type = data.get("id_type", data.get("kind"))  # "kind" in artifacts of schema 1
        if id_type not in ("int", "str"):
            raise ValueError(f"registry id_type must be 'int' or 'str', found {id_type!r}")
        ids = data.get("ids")
        if not isinstance(ids, list):
            raise ValueError("registry 'ids' must be a list")
        reg = cls(name=str(data.get("name", "id")), id_type=id_type)
        if id_type == "int":
            if not all(type(v) is int for v in ids):
                raise ValueError("registry of id_type 'int' holds a non-integer ID")
            if not all(_INT64_MIN <= v <= _INT64_MAX for v in ids):
                raise ValueError("registry of id_type 'int' holds an ID outside the int64 range")
            reg._set_ids(np.array(ids, dtype=np.int64))
        else:
            if not all(type(v) is str for v in ids):
                raise ValueError("registry of id_type 'str' holds a non-string ID")
            reg._set_ids(_as_object_array(ids))
        if not reg._index.is_unique:
            raise ValueError("registry holds a duplicated ID")
        return reg

    def fingerprint(self) -> str:
        """A short hash of ID type and IDs in row order; equal registries give equal fingerprints."""
        h = hashlib.sha256(self.id_type.encode())
        h.update(json.dumps(self._ids.tolist(), ensure_ascii=True).encode())
        return h.hexdigest()[:16]
