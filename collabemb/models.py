"""The dot-product-plus-biases rating model, a plain ``torch.nn.Module`` that knows its IDs."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn

from collabemb.registry import UNKNOWN_ROW, IdRegistry, id_kind_of

if TYPE_CHECKING:
    from collabemb.train import FitHistory


class EmbeddingDotBias(nn.Module):
    """Rating model ``y = lo + (hi - lo) * sigmoid(<u, i> + b_u + b_i)``, or, with
    ``y_range=None``, the plain score ``y = <u, i> + b_u + b_i`` (implicit-feedback models such as
    ALS or BPR, whose scores rank items but are not ratings).

    In the spirit of fastai's ``EmbeddingDotBias``, with the ID vocabulary attached: row ``r`` of
    every table belongs to the raw ID ``users.ids[r - 1]`` (or ``items.ids[r - 1]``), and row 0 is
    the unknown slot, which :func:`collabemb.fit` trains to stand for an average user / item.

    Args:
        users, items: registries; the tables get ``users.n_rows`` / ``items.n_rows`` rows.
        n_factors: embedding width k.
        y_range: (lo, hi) rating range of the sigmoid output, or None for the identity link.

    Parameters (torch names, fastai-compatible):
        u_weight: ``nn.Embedding(n_user_rows, k)``; i_weight: ``nn.Embedding(n_item_rows, k)``;
        u_bias: ``nn.Embedding(n_user_rows, 1)``; i_bias: ``nn.Embedding(n_item_rows, 1)``.
    """

    def __init__(
        self, users: IdRegistry, items: IdRegistry, n_factors: int = 64, y_range: tuple[float, float] | None = (0.5, 5.5)
    ):
        super().__init__()
        if y_range is not None:
            lo, hi = (float(v) for v in y_range)
            if not lo < hi:
                raise ValueError(f"y_range must be (lo, hi) with lo < hi, got {y_range}")
            y_range = (lo, hi)
        if n_factors < 1:
            raise ValueError(f"n_factors must be >= 1, got {n_factors}")
        self.users = users
        self.items = items
        self.n_factors = int(n_factors)
        self.y_range = y_range
        self.u_weight = nn.Embedding(users.n_rows, n_factors)
        self.i_weight = nn.Embedding(items.n_rows, n_factors)
        self.u_bias = nn.Embedding(users.n_rows, 1)
        self.i_bias = nn.Embedding(items.n_rows, 1)
        self.history: FitHistory | None = None
        #: Optional item metadata (titles, genres...): a DataFrame with an ``item`` column of raw IDs.
        self.item_metadata: pd.DataFrame | None = None
        #: Optional training (user, item) pairs as a ``collabemb.index.SeenItems``, for
        #: ``recommend(exclude_seen=True)``; set by :meth:`set_seen_items`, saved with the model.
        self.seen_items = None
        #: Optional ``collabemb.index.SimilarityIndex`` set by :meth:`build_index`; saved with the model.
        self.index = None
        self.reset_parameters(torch.Generator().manual_seed(0))

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Factors ~ N(0, 0.01^2) (as fastai), biases zero (as spotlight)."""
        with torch.no_grad():
            for emb in (self.u_weight, self.i_weight):
                emb.weight.normal_(0.0, 0.01, generator=generator)
            for emb in (self.u_bias, self.i_bias):
                emb.weight.zero_()

    # --- the torch side: rows in, ratings out -------------------------------
    def logits(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """(B,) pre-sigmoid scores ``<u, i> + b_u + b_i`` for (B,) int64 row tensors."""
        dot = (self.u_weight(user_idx) * self.i_weight(item_idx)).sum(dim=1)
        return dot + self.u_bias(user_idx).squeeze(1) + self.i_bias(item_idx).squeeze(1)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """(B,) predicted ratings in ``y_range`` (or raw scores when it is None) for (B,) int64 rows."""
        if self.y_range is None:
            return self.logits(user_idx, item_idx)
        lo, hi = self.y_range
        return lo + (hi - lo) * torch.sigmoid(self.logits(user_idx, item_idx))

    # --- the raw-ID side -----------------------------------------------------
    def _registry(self, is_item: bool) -> IdRegistry:
        return self.items if is_item else self.users

    def rows(self, raw_ids, *, is_item: bool = False, unknown: str = "zero") -> np.ndarray:
        """(n,) int64 table rows of raw IDs; unseen IDs get row 0 (or raise with ``unknown="raise"``)."""
        return self._registry(is_item).encode(raw_ids, unknown=unknown)

    def weight(self, raw_ids, *, is_item: bool = False, unknown: str = "zero") -> np.ndarray:
        """(n, n_factors) float32 embeddings of raw IDs; unseen IDs get the trained unknown row 0."""
        table = (self.i_weight if is_item else self.u_weight).weight
        rows = self.rows(raw_ids, is_item=is_item, unknown=unknown)
        return table.detach().cpu().numpy()[rows]

    def bias(self, raw_ids, *, is_item: bool = False, unknown: str = "zero") -> np.ndarray:
        """(n,) float32 biases (logit units) of raw IDs; unseen IDs get row 0's bias."""
        table = (self.i_bias if is_item else self.u_bias).weight
        rows = self.rows(raw_ids, is_item=is_item, unknown=unknown)
        return table.detach().cpu().numpy()[rows, 0]

    @torch.no_grad()
    def predict(self, users, items, *, batch_size: int = 1 << 20) -> pd.DataFrame:
        """Predicted ratings for (user, item) pairs given by raw ID.

        Args:
            users, items: (n,) raw IDs, paired element-wise. Unseen IDs use the unknown slot.

        Returns:
            DataFrame with n rows: ``user``, ``item``, ``prediction`` (float32, inside y_range),
            ``user_known``, ``item_known`` (bool: False where the unknown slot answered).
        """
        u = self.users.encode(users)
        i = self.items.encode(items)
        if len(u) != len(i):
            raise ValueError(f"users and items must have the same length, got {len(u)} and {len(i)}")
        device = self.u_weight.weight.device
        was_training = self.training
        self.eval()
        out = np.empty(len(u), dtype=np.float32)
        for start in range(0, len(u), batch_size):
            ut = torch.from_numpy(u[start : start + batch_size]).to(device)
            it = torch.from_numpy(i[start : start + batch_size]).to(device)
            out[start : start + batch_size] = self(ut, it).float().cpu().numpy()
        self.train(was_training)
        return pd.DataFrame(
            {
                "user": _as_column(users),
                "item": _as_column(items),
                "prediction": out,
                "user_known": u != UNKNOWN_ROW,
                "item_known": i != UNKNOWN_ROW,
            }
        )

    def set_item_metadata(self, frame: pd.DataFrame, *, id_col: str = "item") -> None:
        """Attach item metadata (one row per raw item ID, e.g. title and genres); saved with the model.

        The ID column must hold the same kind of IDs as the item registry; it is renamed ``item``.
        Rows for IDs the model does not know are kept (they may be added later).
        """
        if id_col not in frame.columns:
            raise ValueError(f"item metadata has no column {id_col!r} (found: {', '.join(map(str, frame.columns))})")
        ids, kind = id_kind_of(frame[id_col], what=f"item metadata column {id_col!r}")
        if len(ids) and kind != self.items.kind:
            raise TypeError(f"item metadata IDs are {kind}, the model's item IDs are {self.items.kind}")
        meta = frame.drop(columns=[id_col]).copy()
        meta.insert(0, "item", ids)
        if meta["item"].duplicated().any():
            dup = meta["item"][meta["item"].duplicated()].iloc[0]
            raise ValueError(f"item metadata repeats item {dup!r}")
        self.item_metadata = meta.reset_index(drop=True)

    # --- getting the embeddings out (collabemb.export) -------------------------
    def user_embeddings(self, *, form: str = "frame", unknown: str = "include", metadata=None, metadata_id_col: str | None = None):
        """User table by raw ID: a DataFrame (``form="frame"``) or ``(ids, matrix, bias)`` arrays
        (``form="arrays"``); row 0 first unless ``unknown="exclude"``. See :mod:`collabemb.export`."""
        from collabemb.export import embeddings

        return embeddings(self, "user", form=form, unknown=unknown, metadata=metadata, metadata_id_col=metadata_id_col)

    def item_embeddings(self, *, form: str = "frame", unknown: str = "include", metadata=None, metadata_id_col: str | None = None):
        """Item table by raw ID, as :meth:`user_embeddings`; ``metadata=True`` joins ``item_metadata``."""
        from collabemb.export import embeddings

        return embeddings(self, "item", form=form, unknown=unknown, metadata=metadata, metadata_id_col=metadata_id_col)

    def to_features(self, df: pd.DataFrame, *, user_col: str | None = "user", item_col: str | None = "item", **kwargs) -> pd.DataFrame:
        """``df`` plus embedding, bias and known-flag columns for its IDs (:func:`collabemb.export.to_features`)."""
        from collabemb.export import to_features

        return to_features(self, df, user_col=user_col, item_col=item_col, **kwargs)

    def to_torch(self, kind: str, *, freeze: bool = True):
        """An ``nn.Embedding`` with biases and the registry (:func:`collabemb.export.to_torch`); index 0 = unknown slot."""
        from collabemb.export import to_torch

        return to_torch(self, kind, freeze=freeze)

    # --- search and cold start (collabemb.index, collabemb.coldstart) --------
    def set_seen_items(self, ratings) -> None:
        """Remember which items each user rated in ``ratings`` (usually the training set) so that
        ``recommend(exclude_seen=True)`` leaves them out; saved with the model as an int32 CSR."""
        from collabemb.index import SeenItems

        self.seen_items = SeenItems.from_ratings(self, ratings)

    def build_index(self, *, parts: tuple[str, ...] = ("items", "recommend"), **kwargs):
        """Build a :class:`collabemb.index.SimilarityIndex` (``kind=``, ``metric=``, ...), keep it as
        ``self.index`` (saved with the model) and return it. ``parts`` are built now, others on first use."""
        from collabemb.index import SimilarityIndex

        self.index = SimilarityIndex(self, **kwargs).build(*parts)
        return self.index

    def similar_items(self, ids, k: int = 10, **kwargs) -> pd.DataFrame:
        """:meth:`SimilarityIndex.similar_items <collabemb.index.SimilarityIndex.similar_items>` on
        ``self.index`` (built with default settings on first use)."""
        return (self.index or self.build_index(parts=())).similar_items(ids, k, **kwargs)

    def similar_users(self, ids, k: int = 10, **kwargs) -> pd.DataFrame:
        """:meth:`SimilarityIndex.similar_users <collabemb.index.SimilarityIndex.similar_users>` on ``self.index``."""
        return (self.index or self.build_index(parts=())).similar_users(ids, k, **kwargs)

    def recommend(self, users, k: int = 10, **kwargs) -> pd.DataFrame:
        """:meth:`SimilarityIndex.recommend <collabemb.index.SimilarityIndex.recommend>` on ``self.index``:
        top-k items per user in predicted-rating order, seen items excluded."""
        return (self.index or self.build_index(parts=())).recommend(users, k, **kwargs)

    def fold_in(self, ratings, *, side: str = "user", add: bool = False, **kwargs):
        """Vectors for new users (``side="user"``) or items from a few ratings, the other side fixed
        (:func:`collabemb.coldstart.fold_in_users` / ``fold_in_items``); ``add=True`` appends them."""
        from collabemb.coldstart import fold_in_items, fold_in_users

        if side not in ("user", "item"):
            raise ValueError(f"side must be 'user' or 'item', got {side!r}")
        return (fold_in_users if side == "user" else fold_in_items)(self, ratings, add=add, **kwargs)

    # --- persistence ---------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        """Write the artifact directory atomically (see :func:`collabemb.artifact.save_model`)."""
        from collabemb.artifact import save_model

        save_model(self, directory)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> EmbeddingDotBias:
        """Read an artifact written by :meth:`save` (never unpickles)."""
        from collabemb.artifact import load_model

        return load_model(directory)

    def extra_repr(self) -> str:
        return f"users={len(self.users)}, items={len(self.items)}, n_factors={self.n_factors}, y_range={self.y_range}"


def _as_column(raw_ids) -> np.ndarray:
    if isinstance(raw_ids, pd.Series | pd.Index):
        return raw_ids.to_numpy()
    if isinstance(raw_ids, np.ndarray):
        return raw_ids
    values = list(raw_ids)
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    try:
        return arr.astype(np.int64) if all(type(v) is int for v in values) else arr
    except OverflowError:
        return arr
