"""The dot-product-plus-biases rating model, a plain ``torch.nn.Module`` that knows its IDs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from collabemb.registry import UNKNOWN_ROW, IdRegistry, Table, Unknown, check_table

#: The module's four parameter tables, by their (fastai-compatible) names.
TABLE_NAMES = ("u_weight", "i_weight", "u_bias", "i_bias")


def table_of(table: Table | None, is_item: bool | None) -> Table:
    """The table named by our word (``table="user"|"item"``) or fastai's (``is_item=True|False``);
    neither: ``"item"``, as fastai's default. Both, disagreeing: a ValueError."""
    if is_item is None:
        return check_table(table or "item")
    by_flag = "item" if is_item else "user"
    if table is not None and check_table(table) != by_flag:
        raise ValueError(f"table={table!r} and is_item={is_item} name different tables; give one of them")
    return by_flag


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

    The registries are immutable; :meth:`append_rows` replaces them with extended copies, so a
    registry handed out earlier (to an export, an ``IdEmbedding``) stays valid.
    """

    def __init__(
        self,
        users: IdRegistry,
        items: IdRegistry,
        n_factors: int = 64,
        y_range: tuple[float, float] | None = (0.5, 5.5),
        *,
        tables: dict[str, torch.Tensor] | None = None,
    ):
        """``tables``: the four weight tensors by name (:data:`TABLE_NAMES`), float32, each of its
        table's shape, used as they are (an artifact's); None: initialised as in :meth:`reset_parameters`."""
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
        shapes = {
            "u_weight": (users.n_rows, n_factors),
            "i_weight": (items.n_rows, n_factors),
            "u_bias": (users.n_rows, 1),
            "i_bias": (items.n_rows, 1),
        }
        for name, shape in shapes.items():
            weight = None if tables is None else tables[name]
            if weight is not None and (tuple(weight.shape) != shape or weight.dtype != torch.float32):
                raise ValueError(f"table {name!r} must be float32 of shape {shape}, got {weight.dtype} {tuple(weight.shape)}")
            setattr(self, name, nn.Embedding(*shape, _weight=weight if weight is not None else torch.empty(shape)))
        if tables is None:
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
    def registry(self, table: Table) -> IdRegistry:
        """The user or item registry."""
        return self.items if check_table(table) == "item" else self.users

    def tables(self, table: Table) -> tuple[np.ndarray, np.ndarray]:
        """``((n_rows, k) float32 weights, (n_rows,) float32 biases)`` of one table, as CPU numpy
        arrays (views of the parameters when they live on the CPU)."""
        check_table(table)
        weight = (self.i_weight if table == "item" else self.u_weight).weight
        bias = (self.i_bias if table == "item" else self.u_bias).weight
        return weight.detach().to("cpu", torch.float32).numpy(), bias.detach().to("cpu", torch.float32).numpy()[:, 0]

    def rows(self, raw_ids, table: Table = "item", *, unknown: Unknown = "unknown_slot") -> np.ndarray:
        """(n,) int64 table rows of raw IDs; unseen IDs get row 0 (or raise with ``unknown="raise"``)."""
        return self.registry(table).encode(raw_ids, unknown=unknown)

    def weight(self, raw_ids, table: Table | None = None, *, is_item: bool | None = None, unknown: Unknown = "unknown_slot") -> np.ndarray:
        """(n, n_factors) float32 embeddings of raw IDs of ``table`` (or fastai's ``is_item``; default:
        items, as fastai's ``weight(arr, is_item=True)``); unseen IDs get the trained unknown row 0."""
        table = table_of(table, is_item)
        rows = self.rows(raw_ids, table, unknown=unknown)
        return self.tables(table)[0][rows]

    def bias(self, raw_ids, table: Table | None = None, *, is_item: bool | None = None, unknown: Unknown = "unknown_slot") -> np.ndarray:
        """(n,) float32 biases (logit units) of raw IDs of ``table`` (or ``is_item``, as :meth:`weight`);
        unseen IDs get row 0's bias."""
        table = table_of(table, is_item)
        rows = self.rows(raw_ids, table, unknown=unknown)
        return self.tables(table)[1][rows]

    @torch.no_grad()
    def predict(self, users, items, *, unknown: Unknown = "unknown_slot", batch_size: int = 1 << 20) -> pd.DataFrame:
        """Predicted ratings for (user, item) pairs given by raw ID.

        Args:
            users, items: (n,) raw IDs, paired element-wise.
            unknown: ``"unknown_slot"``: unseen IDs use the trained row 0; ``"raise"``: refuse them.

        Returns:
            DataFrame with n rows: ``user``, ``item``, ``prediction`` (float32, inside y_range),
            ``user_known``, ``item_known`` (bool: False where the unknown slot answered).
        """
        u = self.users.encode(users, unknown=unknown)
        i = self.items.encode(items, unknown=unknown)
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

    # --- growth ----------------------------------------------------------------
    @torch.no_grad()
    def append_rows(self, table: Table, raw_ids, vectors: np.ndarray, biases: np.ndarray) -> np.ndarray:
        """Append new IDs with their (n, k) vectors and (n,) biases to one table; returns their rows.

        The IDs must all be new. The registry is replaced by an extended copy (the old one is
        not touched) and the two tables grow by ``n`` rows; existing rows never move.
        """
        registry = self.registry(table)
        grown, rows = registry.extended(raw_ids)
        if len(grown) != len(registry) + len(rows) or len(set(rows.tolist())) != len(rows):
            raise ValueError(f"append_rows adds new {table} IDs only; some are known or repeated")
        names = ("i_weight", "i_bias") if table == "item" else ("u_weight", "u_bias")
        new = (np.asarray(vectors, np.float32).reshape(len(rows), self.n_factors), np.asarray(biases, np.float32).reshape(len(rows), 1))
        for name, values in zip(names, new, strict=True):
            old = getattr(self, name).weight
            grown_table = torch.zeros((grown.n_rows, old.shape[1]), dtype=old.dtype, device=old.device)
            grown_table[: old.shape[0]] = old.detach()
            grown_table[torch.as_tensor(rows, device=old.device)] = torch.from_numpy(values).to(old.device, old.dtype)
            setattr(self, name, nn.Embedding.from_pretrained(grown_table, freeze=not old.requires_grad))
        if table == "item":
            self.items = grown
        else:
            self.users = grown
        return rows

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
