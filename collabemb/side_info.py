"""Side information: place items (or users) the model never saw from their metadata.

A :class:`SideInfoMap` is a ridge regression from an ID's encoded features ``x`` (genres, year,
tags, ...) to ``y = [v, b]``, its (k,) embedding and its bias (logit units), learned on the
trained rows of one table that have metadata (row 0, the unknown slot, has no ID and is never
used)::

    y = intercept + x @ coef,   coef = argmin sum_i |y_i - intercept - x_i @ coef|^2 + ridge * |coef|^2

solved in closed form from a thin SVD of the centred feature matrix (the intercept is not
penalised). ``ridge`` is chosen on a fixed grid (:data:`RIDGE_GRID` times the number of training
rows) by the exact leave-one-out error of all k + 1 outputs, computed from the hat matrix without
refitting: no randomness, the same rows always give the same map.

**Encoding** (:class:`FeatureEncoding`, fitted once on the training rows and kept with the map).
Each used column becomes one or more feature columns:

* ``"flag"``: a bool or 0/1 column (ml-100k's genre columns), used as it is; missing is 0.
* ``"categorical"``: one-hot over the values seen in training; a missing or unseen value is all 0.
* ``"numeric"``: standardised with the training mean and standard deviation; a missing value is
  the training mean (0 after standardising) and sets a ``name:missing`` indicator column.
* ``"date"``: a datetime column, as fractional years, then as ``"numeric"``.
* ``"multi"``: several values per row (``"Action|Comedy"``, or a list): multi-hot over the values
  seen in training; unseen values are ignored.
* ``"words"``: free text (titles): multi-hot over the lowercase words found in at least two
  training rows. Only for columns named in ``columns=``.

With ``columns=None`` every column but the ID column is used and its kind inferred: bool or 0/1
numbers -> flag; other numbers -> numeric; datetimes -> date; strings that all read as numbers
-> numeric; lists, or strings holding ``"|"`` -> multi; other strings with at most half as many
distinct values as rows -> categorical; other strings (titles, URLs: nearly one value per row)
and all-missing columns are left out (:attr:`FeatureEncoding.ignored`). ``columns`` may instead
list the columns to use (a free-text one among them is read as words) or map each to its kind.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from collabemb.interactions import SeenItems
from collabemb.model_view import rating_of_logits
from collabemb.models import EmbeddingDotBias, Table, check_table
from collabemb.registry import UNKNOWN_ROW, IdRegistry, Unknown, id_type_of

#: The kinds a feature column can be encoded as (module docstring).
KINDS = ("flag", "categorical", "numeric", "date", "multi", "words")
#: Ridge strengths searched, per unit of row weight (the penalty is ``ridge = g * sum of the row weights``).
RIDGE_GRID = tuple(float(g) for g in 10.0 ** np.arange(-6.0, 1.01, 0.5))
#: The separator of several values in one string cell.
MULTI_SEP = "|"
_WORD = re.compile(r"\w+")
_LISTS = (list, tuple, set, frozenset, np.ndarray)


class ModelTables(Protocol):
    """What the map reads of a :class:`~collabemb.fitted.FittedModel` (which has it all)."""

    module: EmbeddingDotBias
    item_metadata: pd.DataFrame
    seen_items: SeenItems

    @property
    def users(self) -> IdRegistry: ...

    @property
    def items(self) -> IdRegistry: ...

    @property
    def y_range(self) -> tuple[float, float] | None: ...

    def registry(self, table: Table) -> IdRegistry: ...

    def tables(self, table: Table) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class FeatureColumn:
    """One metadata column's encoding, fitted on the training rows.

    Attributes:
        name: the metadata column; kind: one of :data:`KINDS`.
        vocabulary: categorical levels, or the multi / words tokens, in feature-column order.
        mean, scale: numeric / date: the training mean and standard deviation (1 when constant).
    """

    name: str
    kind: str
    vocabulary: tuple = ()
    mean: float = 0.0
    scale: float = 1.0

    @classmethod
    def fit(cls, name: str, kind: str, values: pd.Series) -> FeatureColumn:
        if kind not in KINDS:
            raise ValueError(f"column {name!r}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        present = values[~_missing(values)]
        if kind == "categorical":
            return cls(name, kind, tuple(sorted(set(present.astype(object)), key=lambda v: (type(v).__name__, str(v)))))
        if kind in ("multi", "words"):
            counts = Counter(t for value in present for t in set(_tokens(value, kind)))
            least = 2 if kind == "words" else 1
            return cls(name, kind, tuple(sorted(t for t, c in counts.items() if c >= least)))
        if kind in ("numeric", "date"):
            x = _numbers(present, kind)
            x = x[~np.isnan(x)]
            mean = float(x.mean()) if len(x) else 0.0
            std = float(x.std()) if len(x) else 0.0
            return cls(name, kind, mean=mean, scale=std if std > 0 else 1.0)
        return cls(name, kind)

    @property
    def names(self) -> list[str]:
        """The names of this column's feature columns."""
        if self.kind == "flag":
            return [self.name]
        if self.kind in ("numeric", "date"):
            return [self.name, f"{self.name}:missing"]
        return [f"{self.name}{'=' if self.kind == 'categorical' else ':'}{v}" for v in self.vocabulary]

    def encode(self, values: pd.Series) -> np.ndarray:
        """(n, len(names)) float64 feature columns of ``values`` (n,)."""
        missing = _missing(values)
        out = np.zeros((len(values), len(self.names)))
        if self.kind == "flag":
            x = _numbers(values, "numeric")
            out[:, 0] = np.where(missing | np.isnan(x), 0.0, x != 0)
        elif self.kind in ("numeric", "date"):
            x = _numbers(values, self.kind)
            absent = missing | np.isnan(x)
            out[:, 0] = np.where(absent, 0.0, (np.where(absent, self.mean, x) - self.mean) / self.scale)
            out[:, 1] = absent
        elif self.kind == "categorical":
            at = np.full(len(values), -1)
            at[~missing] = pd.Index(self.vocabulary, dtype=object).get_indexer(values[~missing].astype(object))
            hit = np.flatnonzero(at >= 0)
            out[hit, at[hit]] = 1.0
        else:
            column = {t: j for j, t in enumerate(self.vocabulary)}
            cells = values.to_numpy(dtype=object)
            for i in np.flatnonzero(~missing):
                for t in _tokens(cells[i], self.kind):
                    if t in column:
                        out[i, column[t]] = 1.0
        return out


@dataclass(frozen=True)
class FeatureEncoding:
    """Metadata rows -> a feature matrix, fitted once on the training rows.

    Attributes:
        id_col: the ID column (``"item"`` or ``"user"``), never a feature.
        columns: the encoded columns, in order.
        ignored: columns left out when kinds were inferred (free text, all missing).
    """

    id_col: str
    columns: tuple[FeatureColumn, ...]
    ignored: tuple[str, ...] = ()

    @classmethod
    def fit(cls, frame: pd.DataFrame, *, id_col: str, columns: Sequence[str] | Mapping[str, str] | None = None) -> FeatureEncoding:
        """Choose and fit each column's encoding on ``frame`` (the training rows)."""
        if isinstance(columns, str):
            raise TypeError("columns must be a list of column names or a {name: kind} mapping, not one string")
        names = [c for c in frame.columns if c != id_col] if columns is None else list(columns)
        absent = [c for c in names if c not in frame.columns or c == id_col]
        if absent:
            raise ValueError(f"no feature column {absent[0]!r} in the metadata (found: {', '.join(map(str, frame.columns))})")
        fitted, ignored = [], []
        for name in names:
            kind = columns[name] if isinstance(columns, Mapping) else _infer_kind(frame[name], named=columns is not None)
            if kind is None:
                ignored.append(name)
            else:
                fitted.append(FeatureColumn.fit(name, kind, frame[name]))
        if not fitted:
            hint = f" (left out: {', '.join(map(str, ignored))}; name a free-text column in columns= to use its words)" if ignored else ""
            raise ValueError(f"the metadata has no usable feature column{hint}")
        return cls(id_col, tuple(fitted), tuple(ignored))

    @property
    def names(self) -> list[str]:
        """The p feature-column names, in the order of :meth:`transform`'s columns."""
        return [n for column in self.columns for n in column.names]

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """(n, p) float64 features of ``frame``'s n rows; every encoded column must be there."""
        absent = [c.name for c in self.columns if c.name not in frame.columns]
        if absent:
            raise ValueError(f"the features have no column {absent[0]!r}, which the map was fitted with")
        return np.hstack([c.encode(frame[c.name].reset_index(drop=True)) for c in self.columns])


@dataclass(frozen=True, eq=False)
class SideInfoMap:
    """A ridge map from an ID's metadata to its embedding and bias (module docstring).

    Attributes:
        table: ``"user"`` or ``"item"``; encoding: the :class:`FeatureEncoding` (p features).
        coef: (p, k + 1) float64: columns 0..k-1 the vector, column k the bias (logit units).
        intercept: (k + 1,) float64.
        weighting: ``"ratings"`` (each trained row weighted by its number of training ratings) or
            ``"uniform"``.
        ridge: the L2 strength used (the grid's best unless given); ridge_grid: (g,) the strengths
            searched; loo_error: (g,) their leave-one-out error: the mean squared error of the
            logit ``<u, v> + b_u + b`` that the placed ``[v, b]`` gives the counterparts of the
            training ratings (logit^2 units; the weighted mean over the trained rows).
        r2: leave-one-out R^2 at ``ridge``: 1 - LOO error / the same error of placing every row at
            the (weighted) mean of the trained rows.
        n_train: the trained rows it was fitted on.
    """

    table: Table
    encoding: FeatureEncoding
    coef: np.ndarray
    intercept: np.ndarray
    weighting: str
    ridge: float
    ridge_grid: np.ndarray
    loo_error: np.ndarray
    r2: float
    n_train: int

    @classmethod
    def fit(
        cls,
        fitted: ModelTables,
        table: Table = "item",
        metadata: pd.DataFrame | None = None,
        columns: Sequence[str] | Mapping[str, str] | None = None,
        *,
        ridge: float | None = None,
        weighting: str | None = None,
    ) -> SideInfoMap:
        """Learn the map on the rows of ``fitted``'s ``table`` that have metadata.

        Args:
            fitted: a FittedModel.
            table: ``"item"`` or ``"user"``.
            metadata: one row per ID: a ``table`` column of raw IDs plus feature columns; rows of
                IDs the model does not know are not used. Default: ``fitted.item_metadata``
                (items only: the model stores no user metadata).
            columns: which columns to use and how (module docstring); None: all, kinds inferred.
            ridge: a fixed L2 strength (> 0) instead of the leave-one-out search.
            weighting: ``"ratings"``: weight each trained row by its training ratings
                (``fitted.seen_items``), so the map fits the rows as often as ratings meet them,
                as the unknown slot (trained on routed ratings) does; ``"uniform"``: every row
                alike; rows without training pairs (added by a fold-in) are then left out. None:
                ``"ratings"`` when the model records training pairs of at least 2 of the rows.
        """
        table = check_table(table)
        if ridge is not None and not ridge > 0:
            raise ValueError(f"ridge must be > 0, got {ridge}")
        train, rows = _training_rows(fitted, table, metadata)
        counts = _pair_counts(fitted, table)[rows]
        weighting = weighting or ("ratings" if (counts > 0).sum() >= 2 else "uniform")
        if weighting not in ("ratings", "uniform"):
            raise ValueError(f"weighting must be 'ratings' or 'uniform', got {weighting!r}")
        weights = counts if weighting == "ratings" else np.ones(len(rows))
        if (weights > 0).sum() < 2:
            raise ValueError(f"weighting='ratings' needs training pairs of at least 2 {table}s with metadata; the model records fewer")
        keep = np.flatnonzero(weights > 0)
        train, rows, weights = train.iloc[keep].reset_index(drop=True), rows[keep], weights[keep]
        encoding = FeatureEncoding.fit(train, id_col=table, columns=columns)
        vectors, biases = fitted.tables(table)
        y = np.hstack([vectors[rows], biases[rows, None]]).astype(np.float64)
        grid = np.asarray(RIDGE_GRID) * weights.sum()
        metric = _logit_metric(fitted, "item" if table == "user" else "user")
        coef, intercept, chosen, loo, r2 = _ridge(encoding.transform(train), y, weights, metric, grid, ridge)
        return cls(table, encoding, coef, intercept, weighting, chosen, grid, loo, r2, len(train))

    @property
    def n_factors(self) -> int:
        return self.coef.shape[1] - 1

    def vectors(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """``((n, k) float32 vectors, (n,) float32 biases in logit units)`` placed for ``frame``'s n rows.

        ``frame`` needs the encoded columns (its ID column is not read); values the training rows
        did not have (a new category, a new tag) are ignored, missing numbers get the training mean.
        """
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"features must be a DataFrame, got {type(frame).__name__}")
        y = self.intercept + self.encoding.transform(frame) @ self.coef
        return y[:, :-1].astype(np.float32), y[:, -1].astype(np.float32)

    def to_frame(self) -> pd.DataFrame:
        """(p + 1) rows, the intercept first then one per feature; columns ``f0..f{k-1}`` and ``bias``."""
        names = [f"f{j}" for j in range(self.n_factors)] + ["bias"]
        return pd.DataFrame(np.vstack([self.intercept, self.coef]), index=["(intercept)", *self.encoding.names], columns=names)

    def __repr__(self) -> str:
        return (
            f"SideInfoMap({self.table}: {len(self.encoding.names)} features from {len(self.encoding.columns)} columns, "
            f"{self.n_train} trained rows, ridge={self.ridge:.3g}, leave-one-out R^2={self.r2:.3f})"
        )


def feature_ids(frame: pd.DataFrame, table: Table, registry: IdRegistry) -> np.ndarray:
    """(n,) raw IDs of a metadata / features frame's ``table`` column, checked: present, the
    registry's ID type (never coerced: TypeError), each once, at least one row."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"features must be a DataFrame with a {table!r} column, got {type(frame).__name__}")
    if table not in frame.columns:
        raise ValueError(f"the features have no {table!r} ID column (found: {', '.join(map(str, frame.columns)) or 'none'})")
    if frame.empty:
        raise ValueError(f"the features have no rows: expected one row per {table}")
    ids, _ = id_type_of(frame[table], what=f"features column {table!r}")
    registry.known(ids)  # the other ID type raises TypeError
    repeated = pd.Series(ids).duplicated().to_numpy()
    if repeated.any():
        raise ValueError(f"the features repeat {table} {ids[repeated].tolist()[0]!r}: one row per {table}")
    return ids


def side_info_map(
    fitted: ModelTables, table: Table, side_info: SideInfoMap | pd.DataFrame | None = None, features: pd.DataFrame | None = None
) -> SideInfoMap:
    """The map that places new IDs of ``table``.

    ``side_info`` itself when it is a SideInfoMap (checked against the model); fitted on it when it
    is a metadata frame of known IDs; else fitted on the model's stored item metadata when it names
    known items; else on the rows of ``features`` that name IDs the model knows.
    """
    if isinstance(side_info, SideInfoMap):
        if side_info.table != table or side_info.n_factors != fitted.module.n_factors:
            raise ValueError(
                f"side_info maps {side_info.table} features to {side_info.n_factors} factors; "
                f"this needs {table}s of a model with {fitted.module.n_factors}"
            )
        return side_info
    if isinstance(side_info, pd.DataFrame):
        return SideInfoMap.fit(fitted, table, metadata=side_info)
    if side_info is not None:
        raise TypeError(f"side_info must be a SideInfoMap or a metadata DataFrame, got {type(side_info).__name__}")
    stored = fitted.item_metadata
    if table == "item" and len(stored) and fitted.registry("item").known(stored["item"]).sum() >= 2:
        return SideInfoMap.fit(fitted, "item")
    if features is not None and table in features.columns and fitted.registry(table).known(features[table]).sum() >= 2:
        return SideInfoMap.fit(fitted, table, metadata=features)
    where = "the model stores no item metadata of known items (set_item_metadata, or fit --items)" if table == "item" else ""
    raise ValueError(
        f"no metadata of known {table}s to learn the side-info map from: {where + ' and ' if where else ''}"
        f"the features name fewer than 2 known {table}s; pass side_info= (a SideInfoMap, or metadata rows of known {table}s)"
    )


def predict_with_features(
    fitted: ModelTables, users, items, item_features: pd.DataFrame, *, unknown: Unknown = "unknown_slot"
) -> pd.DataFrame:
    """:meth:`FittedModel.predict <collabemb.fitted.FittedModel.predict>` with ``item_features``.

    Items the model knows are predicted as always; unseen items with a row in ``item_features``
    through their :class:`SideInfoMap` placement (:func:`side_info_map`, fitted for this call);
    other unseen items by the unknown slot, or refused with ``unknown="raise"``.

    Returns:
        The frame of :meth:`EmbeddingDotBias.predict <collabemb.models.EmbeddingDotBias.predict>`
        (``item_known`` False for every unseen item) plus ``item_source`` (str): ``"known"``,
        ``"side_info"`` or ``"unknown_slot"``.
    """
    fitted.users.encode(users, unknown=unknown)  # checks ``unknown`` and, with "raise", the users
    out = fitted.module.predict(users, items, unknown="unknown_slot")
    item_ids = out["item"].to_numpy()
    unseen = ~out["item_known"].to_numpy()
    at = np.full(len(out), -1, dtype=np.int64)
    at[unseen] = pd.Index(feature_ids(item_features, "item", fitted.items)).get_indexer(item_ids[unseen])
    placed = at >= 0
    if unknown == "raise" and (unseen & ~placed).any():
        fitted.items.encode(item_ids[unseen & ~placed], unknown="raise")  # UnknownIdError naming them
    if placed.any():
        needed, pos = np.unique(at[placed], return_inverse=True)
        vectors, biases = side_info_map(fitted, "item", features=item_features).vectors(item_features.iloc[needed])
        user_w, user_b = fitted.tables("user")
        u = fitted.users.encode(out["user"].to_numpy()[placed])
        z = np.einsum("ij,ij->i", user_w[u].astype(np.float64), vectors[pos].astype(np.float64)) + user_b[u] + biases[pos]
        prediction = out["prediction"].to_numpy().copy()
        prediction[placed] = rating_of_logits(z, fitted.y_range)
        out["prediction"] = prediction
    out["item_source"] = np.where(~unseen, "known", np.where(placed, "side_info", "unknown_slot")).astype(object)
    return out


# --- internals ------------------------------------------------------------------------------------


def _training_rows(fitted: ModelTables, table: Table, metadata: pd.DataFrame | None) -> tuple[pd.DataFrame, np.ndarray]:
    """The metadata rows of known IDs and their (m,) int64 table rows (never row 0)."""
    if metadata is None:
        if table == "user" or fitted.item_metadata.empty:
            stored = "no user metadata" if table == "user" else "no item metadata (set_item_metadata, or fit --items)"
            raise ValueError(f"the model stores {stored}: pass metadata=, a frame with a {table!r} column and feature columns")
        metadata = fitted.item_metadata
    rows = fitted.registry(table).encode(feature_ids(metadata, table, fitted.registry(table)))
    known = np.flatnonzero(rows != UNKNOWN_ROW)
    if len(known) < 2:
        raise ValueError(
            f"the side-info map learns from known {table}s' metadata: {len(known)} of its {len(rows)} rows "
            f"name a {table} the model knows, at least 2 are needed"
        )
    return metadata.iloc[known].reset_index(drop=True), rows[known]


def _pair_counts(fitted: ModelTables, table: Table) -> np.ndarray:
    """(n_rows,) float64 training pairs per row of ``table`` (``fitted.seen_items``; 0 for rows added later)."""
    seen, n_rows = fitted.seen_items, fitted.registry(table).n_rows
    per_row = np.diff(seen.indptr) if table == "user" else np.bincount(seen.indices.astype(np.int64), minlength=n_rows)
    counts = np.zeros(n_rows)
    counts[: min(n_rows, len(per_row))] = per_row[:n_rows]
    return counts


def _logit_metric(fitted: ModelTables, other: Table) -> np.ndarray:
    """(k + 1, k + 1) ``E[a a^T]``, ``a = [u, 1]`` over the counterparts ``u`` of the training ratings
    (every known counterpart alike when the model records none): an error ``e = [dv, db]`` in a
    placed row changes a rating's logit by ``<u, dv> + db``, ``e^T M e`` squared on average."""
    vectors, _ = fitted.tables(other)
    counts = _pair_counts(fitted, other)[1:]
    counts = counts if counts.any() else np.ones(len(counts))
    a = np.hstack([vectors[1:].astype(np.float64), np.ones((len(counts), 1))])
    return (a.T * counts) @ a / counts.sum()


def _ridge(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, metric: np.ndarray, grid: np.ndarray, ridge: float | None
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, float]:
    """Weighted ridge of (n, q) ``y`` on (n, p) ``x``, unpenalised intercept, strength by exact LOO.

    Minimises ``sum_i w_i |y_i - c - x_i @ coef|^2 + ridge * |coef|^2``. With ``sqrt(w)`` times the
    ``w``-centred ``x`` written ``U S V^T``, the leverages are ``h_i = w_i / sum(w) + sum_j U_ij^2
    s_j^2 / (s_j^2 + ridge)`` and a row's leave-one-out residual is its residual over ``1 - h_i``;
    its error is ``r^T metric r``, averaged with the weights ``w``.

    Returns ``(coef (p, q), intercept (q,), ridge, loo error (g,) over grid, loo R^2 at ridge)``.
    """
    total = w.sum()
    x_mean, y_mean = w @ x / total, w @ y / total
    yc = y - y_mean
    root = np.sqrt(w)[:, None]
    u, s, vt = np.linalg.svd(root * (x - x_mean), full_matrices=False)
    uty = u.T @ (root * yc)
    s2 = s**2

    def error(residual: np.ndarray) -> float:
        return float(w @ ((residual @ metric) * residual).sum(axis=1) / total)

    def loo(strength: float) -> float:
        shrink = s2 / (s2 + strength)
        leverage = w / total + (u**2) @ shrink
        return error((yc - u @ (shrink[:, None] * uty) / root) / np.maximum(1.0 - leverage, 1e-12)[:, None])

    loo_error = np.array([loo(g) for g in grid])
    chosen = float(grid[int(np.argmin(loo_error))]) if ridge is None else float(ridge)
    coef = vt.T @ ((s / (s2 + chosen))[:, None] * uty)
    baseline = error(yc)
    r2 = 1.0 - loo(chosen) / baseline if baseline > 0 else 0.0
    return coef, y_mean - x_mean @ coef, chosen, loo_error, r2


def _missing(values: pd.Series) -> np.ndarray:
    """(n,) bool: NA, or an empty string (how :func:`~collabemb.inputs.read_item_metadata` reads a blank)."""
    missing = np.array(values.isna(), dtype=bool)
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        missing |= np.array([isinstance(v, str) and not v.strip() for v in values], dtype=bool)
    return missing


def _numbers(values: pd.Series, kind: str) -> np.ndarray:
    """(n,) float64: numbers (dates as fractional years); NaN where missing or not a number."""
    if kind == "date":
        when = pd.to_datetime(values, errors="coerce", utc=True)
        return (when.dt.year + (when.dt.dayofyear - 1) / 365.25).to_numpy(dtype=np.float64, na_value=np.nan)
    cells = values.astype(object).where(~_missing(values), np.nan)
    cells = cells.map(lambda v: float(v) if isinstance(v, bool | np.bool_) else v)
    return pd.to_numeric(cells, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _tokens(value, kind: str) -> list[str]:
    """The values of one multi cell (``"a|b"`` or a list), or the lowercase words of a text cell."""
    if kind == "words":
        return _WORD.findall(str(value).lower())
    parts = [str(v) for v in value] if isinstance(value, _LISTS) else str(value).split(MULTI_SEP)
    return [p.strip() for p in parts if p.strip()]


def _infer_kind(values: pd.Series, *, named: bool) -> str | None:
    """The kind of a column from its training values (module docstring); None: leave it out."""
    present = values[~_missing(values)]
    if present.empty:
        return None
    if pd.api.types.is_bool_dtype(values):
        return "flag"
    if pd.api.types.is_datetime64_any_dtype(values):
        return "date"
    if pd.api.types.is_numeric_dtype(values):
        return "flag" if set(np.unique(present.astype(np.float64))) <= {0.0, 1.0} else "numeric"
    if isinstance(values.dtype, pd.CategoricalDtype):
        return "categorical"
    cells = present.astype(object)
    if any(isinstance(v, _LISTS) for v in cells):
        return "multi"
    texts = cells.astype(str)
    if pd.to_numeric(texts, errors="coerce").notna().all():
        return "numeric"
    if texts.str.contains(MULTI_SEP, regex=False).any():
        return "multi"
    if texts.nunique() * 2 <= len(texts):
        return "categorical"
    return "words" if named else None


__all__ = [
    "KINDS",
    "RIDGE_GRID",
    "FeatureColumn",
    "FeatureEncoding",
    "SideInfoMap",
    "feature_ids",
    "predict_with_features",
    "side_info_map",
]
