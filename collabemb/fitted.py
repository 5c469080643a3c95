"""The fitted model: the torch module plus everything a fit knows about it, each field typed.

A :class:`FittedModel` is what :func:`collabemb.fit`, :func:`collabemb.fit_implicit` and
:func:`collabemb.load_model` return, and what :func:`collabemb.save_model` writes. It holds:

* ``module``: the :class:`~collabemb.models.EmbeddingDotBias` (tables and registries);
* ``identity``: a :class:`~collabemb.model_view.ModelIdentity`, what kind of model this is (family,
  what row 0 means, the settings a fold-in must reuse), stored as its own record in ``config.json``;
* ``history``: the :class:`~collabemb.history.FitHistory` (empty for one-solve models);
* ``seen_items``: the training pairs (:class:`~collabemb.interactions.SeenItems`);
* ``item_metadata``: titles, genres... (a DataFrame with an ``item`` column; empty when none);
* ``index``: a similarity index to store with the model, or None. The search layer
  (:mod:`collabemb.index`) builds it; this layer only knows it as bytes to store.

Every field is always present. Reading a raw ID's vector, bias or prediction is delegated to the
module (``fitted.weight(ids, "item")``); search, cold start and exports are functions of the
layers above that take a FittedModel.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd

from collabemb.data import read_ratings
from collabemb.history import FitHistory
from collabemb.interactions import SeenItems
from collabemb.model_view import ModelIdentity, StoredIndex, history_vector, item_metadata_frame, no_item_metadata
from collabemb.models import EmbeddingDotBias, Table
from collabemb.registry import IdRegistry, Unknown
from collabemb.side_info import predict_with_features


class IndexSnapshot(Protocol):
    """What the artifact needs of a similarity index: its config entry and its files' bytes."""

    def to_files(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``(config entry, {file name: (n,) uint8 bytes})``; refuses an index that is stale."""
        ...


class FittedModel:
    """A fitted :class:`~collabemb.models.EmbeddingDotBias` with what the fit knows about it.

    See the module docstring for the fields. ``seen_items`` defaults to no pairs and
    ``item_metadata`` to an empty frame; assigning anything but a SeenItems / a DataFrame with
    an ``item`` column is refused, so both are always there to read.
    """

    def __init__(
        self,
        module: EmbeddingDotBias,
        identity: ModelIdentity | None = None,
        history: FitHistory | None = None,
        seen_items: SeenItems | None = None,
        item_metadata: pd.DataFrame | None = None,
        index: IndexSnapshot | None = None,
        history_vectors: np.ndarray | None = None,
    ):
        if not isinstance(module, EmbeddingDotBias):
            raise TypeError(f"module must be an EmbeddingDotBias, got {type(module).__name__}")
        self.module = module
        self.identity = identity if identity is not None else ModelIdentity()
        self.history = history if history is not None else FitHistory()
        self.seen_items = seen_items if seen_items is not None else SeenItems.empty(module.users.n_rows)
        self.item_metadata = item_metadata if item_metadata is not None else no_item_metadata(module.items.id_type)
        self.index = index
        self.history_vectors = history_vectors

    @property
    def history_vectors(self) -> np.ndarray | None:
        """svdpp models: (n_item_rows, k) float32 history vectors y_j (a new user's vector starts as
        ``|N|^-1/2`` times the sum of those of the items it rated); rows of items added after the fit
        are zero. None for every other model."""
        y = self._history_vectors
        if y is None or len(y) == self.module.items.n_rows:
            return y
        grown = np.zeros((self.module.items.n_rows, y.shape[1]), np.float32)
        grown[: len(y)] = y
        self._history_vectors = grown
        return grown

    @history_vectors.setter
    def history_vectors(self, value: np.ndarray | None) -> None:
        svdpp = self.identity.rating_model == "svdpp"
        if value is None:
            if svdpp:
                raise ValueError("an svdpp model needs its history vectors")
            self._history_vectors = None
            return
        if not svdpp:
            raise ValueError(f"history vectors belong to svdpp models; this one's rating_model is {self.identity.rating_model!r}")
        value = np.asarray(value)
        shape = (self.module.items.n_rows, self.module.n_factors)
        if value.dtype != np.float32 or value.ndim != 2 or value.shape[1] != shape[1] or len(value) > shape[0]:
            raise ValueError(f"history_vectors must be float32 of shape {shape}, got {value.dtype} {value.shape}")
        self._history_vectors = value

    def history_vector(self, item_rows: np.ndarray) -> np.ndarray | None:
        """svdpp: (k,) float64 ``|N|^-1/2 * sum of y_j`` over the distinct known item rows ``item_rows`` (a
        user's history vector: the part of its vector its rated items give); None for other models."""
        return history_vector(self.history_vectors, item_rows)

    @property
    def seen_items(self) -> SeenItems:
        """The training (user, item) pairs, as rows (:class:`~collabemb.interactions.SeenItems`)."""
        return self._seen_items

    @seen_items.setter
    def seen_items(self, value: SeenItems) -> None:
        if not isinstance(value, SeenItems):
            raise TypeError(f"seen_items must be a SeenItems (SeenItems.empty(n) for none), got {type(value).__name__}")
        self._seen_items = value

    @property
    def item_metadata(self) -> pd.DataFrame:
        """Item metadata: an ``item`` column of raw IDs plus titles, genres...; empty when none."""
        return self._item_metadata

    @item_metadata.setter
    def item_metadata(self, value: pd.DataFrame) -> None:
        if not isinstance(value, pd.DataFrame) or "item" not in value.columns:
            raise TypeError("item_metadata must be a DataFrame with an 'item' column (set_item_metadata checks and renames one)")
        self._item_metadata = value

    # --- read through to the module ----------------------------------------------------------
    @property
    def users(self) -> IdRegistry:
        return self.module.users

    @property
    def items(self) -> IdRegistry:
        return self.module.items

    @property
    def n_factors(self) -> int:
        return self.module.n_factors

    @property
    def y_range(self) -> tuple[float, float] | None:
        return self.module.y_range

    def registry(self, table: Table) -> IdRegistry:
        return self.module.registry(table)

    def tables(self, table: Table) -> tuple[np.ndarray, np.ndarray]:
        """``((n_rows, k) float32 weights, (n_rows,) float32 biases)`` of one table (numpy)."""
        return self.module.tables(table)

    def rows(self, raw_ids, table: Table = "item", *, unknown: Unknown = "unknown_slot") -> np.ndarray:
        """(n,) int64 table rows of raw IDs (:meth:`EmbeddingDotBias.rows`); unseen IDs get row 0."""
        return self.module.rows(raw_ids, table, unknown=unknown)

    def weight(self, raw_ids, table: Table | None = None, *, is_item: bool | None = None, unknown: Unknown = "unknown_slot") -> np.ndarray:
        """(n, n_factors) float32 embeddings of raw IDs (:meth:`EmbeddingDotBias.weight`: ``table`` or
        fastai's ``is_item``, items by default); unseen IDs get the unknown row 0."""
        return self.module.weight(raw_ids, table, is_item=is_item, unknown=unknown)

    def bias(self, raw_ids, table: Table | None = None, *, is_item: bool | None = None, unknown: Unknown = "unknown_slot") -> np.ndarray:
        """(n,) float32 biases (logit units) of raw IDs (``table`` or ``is_item``, items by default);
        unseen IDs get row 0's bias."""
        return self.module.bias(raw_ids, table, is_item=is_item, unknown=unknown)

    def predict(self, users, items, *, unknown: Unknown = "unknown_slot", item_features: pd.DataFrame | None = None) -> pd.DataFrame:
        """Predicted ratings for raw ID pairs (see :meth:`EmbeddingDotBias.predict`).

        ``item_features``: item metadata (an ``item`` column plus genres, year, tags...) with rows
        for items the model never saw: those are answered through their placement by a
        :class:`~collabemb.side_info.SideInfoMap`, learned for the call on the stored
        ``item_metadata`` (else on this frame's rows of known items), instead of by the unknown
        slot; ``item_known`` stays False for them and a column ``item_source`` says ``"known"``,
        ``"side_info"`` or ``"unknown_slot"`` (:func:`collabemb.side_info.predict_with_features`).
        """
        if item_features is None:
            return self.module.predict(users, items, unknown=unknown)
        return predict_with_features(self, users, items, item_features, unknown=unknown)

    # --- what the fit knows --------------------------------------------------------------------
    def set_item_metadata(self, frame: pd.DataFrame, *, id_col: str = "item") -> None:
        """Attach item metadata (one row per raw item ID, e.g. title and genres); saved with the model.

        The ID column must hold the model's item ID type; it is renamed ``item``. Rows for IDs
        the model does not know are kept (they may be added later).
        """
        self.item_metadata = item_metadata_frame(frame, self.items.id_type, id_col=id_col)

    def set_seen_items(self, ratings) -> None:
        """Store the (user, item) pairs of ``ratings`` (Ratings, a DataFrame or a file) as the
        training pairs that ``recommend`` and ``evaluate`` leave out; unknown IDs are dropped."""
        self.seen_items = SeenItems.from_ratings(read_ratings(ratings), self.users, self.items)

    def __repr__(self) -> str:
        return (
            f"FittedModel({self.identity.family}: {len(self.users)} users, {len(self.items)} items, "
            f"{self.n_factors} factors, y_range={self.y_range}, {len(self.seen_items)} seen pairs, "
            f"index={'yes' if self.index is not None else 'no'})"
        )


__all__ = ["FittedModel", "IndexSnapshot", "ModelIdentity", "StoredIndex"]
