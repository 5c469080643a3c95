"""Embeddings for other models: feature columns for tabular learners, torch modules for networks.

Everything here starts from a fitted model (a :class:`~collabemb.fitted.FittedModel`, or a bare
:class:`~collabemb.models.EmbeddingDotBias`) and keeps its ID-to-row mapping exact:

* :func:`to_features`: embedding, bias and "known" columns for the IDs of any DataFrame (or
  :class:`~collabemb.data.Ratings`), for gradient boosting, random forests or linear models.
* :func:`to_torch`: an :class:`IdEmbedding` (an ``nn.Embedding`` with a bias table and the
  registry) for another torch network, with hard (row) and soft (probability) lookups.

Feature columns, stable across versions: ``{prefix}emb_0 .. {prefix}emb_{k-1}``,
``{prefix}bias`` (float32) and ``{prefix}known`` (bool), with prefixes ``user_`` and ``item_``
by default. Tables and files by raw ID are in :mod:`collabemb.export`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from collabemb.data import Ratings
from collabemb.export import FACTOR_PREFIX
from collabemb.fitted import FittedModel
from collabemb.models import EmbeddingDotBias, Table, check_table
from collabemb.registry import UNKNOWN_ROW, IdRegistry, Unknown

Model = FittedModel | EmbeddingDotBias


# --- features for tabular models -------------------------------------------------------


def to_features(
    model: Model,
    df: pd.DataFrame | Ratings,
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
        model: a fitted model (or its module).
        df: any DataFrame holding raw IDs of the model's ID types (ints or strings, never mixed),
            or :class:`~collabemb.data.Ratings` (its ``frame`` is used).
        user_col, item_col: ID columns; ``None`` skips that side.
        user_prefix, item_prefix: column prefixes; the added columns are
            ``{prefix}emb_0 .. {prefix}emb_{k-1}`` (float32), ``{prefix}bias`` (float32, logit
            units) and ``{prefix}known`` (bool).
        bias, known: whether to add the bias and the known-flag columns.

    Returns:
        A new DataFrame: ``df``'s columns (same index) followed by the feature columns.

    Raises:
        ValueError: a missing ID column, or an added column name that ``df`` already has.
        TypeError: IDs of another type than the registry's (``"7"`` is not ``7``).
    """
    if isinstance(df, Ratings):
        df = df.frame
    parts = []
    for col, prefix, table in ((user_col, user_prefix, "user"), (item_col, item_prefix, "item")):
        if col is None:
            continue
        if col not in df.columns:
            raise ValueError(f"DataFrame has no {table} ID column {col!r} (found: {', '.join(map(str, df.columns))})")
        parts.append(_feature_block(model, table, df[col], prefix, bias=bias, known=known))
    if not parts:
        raise ValueError("nothing to add: both user_col and item_col are None")
    added = [c for p in parts for c in p.columns]
    clash = sorted(set(added) & set(map(str, df.columns)))
    if clash or len(set(added)) != len(added):
        raise ValueError(f"feature column(s) {clash or added} already exist; choose other prefixes")
    return pd.concat([df, *parts], axis=1)


def _feature_block(model: Model, table: Table, ids: pd.Series, prefix: str, *, bias: bool, known: bool) -> pd.DataFrame:
    """The feature columns of one table for a column of raw IDs (same index as ``ids``)."""
    rows = model.registry(table).encode(ids)
    w, b = model.tables(table)
    names = [f"{prefix}{FACTOR_PREFIX}{j}" for j in range(w.shape[1])]
    values = np.concatenate([w, b[:, None]], axis=1) if bias else w
    if bias:
        names.append(f"{prefix}bias")
    block = pd.DataFrame(np.take(values, rows, axis=0), columns=names, index=ids.index, copy=False)
    if known:
        block[f"{prefix}known"] = rows != UNKNOWN_ROW
    return block


# --- torch modules ------------------------------------------------------------------------


class IdEmbedding(nn.Embedding):
    """An ``nn.Embedding`` carrying a trained table, its bias table and its ID registry.

    Index 0 is the **unknown slot**: a trained row standing for an average user / item, the row
    every unseen raw ID maps to. It is *not* a padding index (``padding_idx`` is None), and its
    vector is not zero. Known IDs are rows ``1..len(registry)``, in the registry's order.

    The registry is the one the table was copied with: registries are immutable, so IDs added to
    the model later (``append_rows``) are unknown here and map to row 0, as they must, since this
    table has no rows for them.

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

    def rows(self, raw_ids, *, unknown: Unknown = "unknown_slot") -> torch.Tensor:
        """(n,) int64 rows of raw IDs on this module's device (unseen -> row 0, or raise with ``unknown="raise"``)."""
        return torch.from_numpy(self.registry.encode(raw_ids, unknown=unknown)).to(self.weight.device)

    def lookup(self, raw_ids, *, unknown: Unknown = "unknown_slot") -> torch.Tensor:
        """(n, k) embeddings of raw IDs (unseen IDs get the trained row 0, or raise with ``unknown="raise"``)."""
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
        reg = self.registry
        return f"{super().extra_repr()}, registry={reg.name!r} ({len(reg)} {reg.id_type} IDs + unknown row 0)"


def to_torch(model: Model, table: Table = "item", *, freeze: bool = True) -> IdEmbedding:
    """The user or item table as an :class:`IdEmbedding` on the CPU (weights copied: the model is untouched).

    Args:
        model: a fitted model (or its module).
        table: ``"user"`` or ``"item"``.
        freeze: leave the weights and biases out of gradient updates (``requires_grad=False``);
            gradients still flow *through* the lookup to its inputs (e.g. ``probs`` in ``soft``).
    """
    registry = model.registry(check_table(table))
    weight, bias = model.tables(table)
    return IdEmbedding(torch.from_numpy(weight), torch.from_numpy(bias), registry, freeze=freeze)
