"""Cold start: vectors for users and items the model never saw in training.

Three paths, each named in the ``source`` of what it produces:

* ``"fold_in"``: :func:`fold_in_users` / :func:`fold_in_items` solve a new ID's vector ``v`` and
  bias ``b`` from a few ratings with the other side fixed, minimising the training objective of
  :mod:`collabemb.train` restricted to that ID::

      sum_j (r_j - y_j)**2 + weight_decay * n * |v|**2,   y_j = lo + (hi - lo) * sigmoid(<v, w_j> + b + b_j)

  over its ``n`` ratings (the per-rating L2 on factor rows, summed; the bias is not penalised,
  as in training), with ``weight_decay`` and ``y_range`` read from the model. Newton steps with
  a backtracking line search (Gauss-Newton steps where the Hessian is not positive definite)
  converge in a handful of iterations: about a millisecond per ID.
* ``"unknown_slot"``: an ID none of whose ratings name a known counterpart gets the trained
  unknown row 0 (the average user or item), the model's answer for "no history at all".
* ``"mean_of_items"``: :func:`fold_in_items_like` describes an unseen item by known items it
  resembles: the mean of their vectors and of their biases.

With ``add=True`` the new IDs are appended to the model's registry and tables (rows never move),
to ``model.seen_items`` and to ``model.index`` (and to ``index=`` if given), so they can be
searched, recommended, predicted and saved like trained IDs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import expit

from collabemb.data import Ratings, read_ratings
from collabemb.index import SimilarityIndex, _encode_lenient, _registry, _table_rows
from collabemb.models import EmbeddingDotBias
from collabemb.registry import UNKNOWN_ROW, id_kind_of

MAX_ITER = 50
TOL = 1e-6


@dataclass
class FoldIn:
    """Vectors for new IDs, and how each was obtained.

    Attributes:
        side: ``"user"`` or ``"item"``.
        ids: (n,) raw IDs in order of first appearance, or None for one anonymous ID (ratings
            without an ID column).
        vectors: (n, n_factors) float32.
        biases: (n,) float32, logit units.
        source: (n,) str: ``"fold_in"``, ``"unknown_slot"`` or ``"mean_of_items"``.
        n_ratings: (n,) int64 ratings used (for ``"mean_of_items"``: the items averaged);
            n_ignored: (n,) int64 ratings skipped because the model does not know their
            counterpart ID.
        iterations: (n,) int64 Newton steps; converged: (n,) bool.
        rows: (n,) int64 registry rows when added (``add=True``), else None.
        rated_query, rated_rows: (m,) int64, one entry per rating used: the position in ``ids``
            and the counterpart's registry row (e.g. to exclude a new user's rated items).
    """

    side: str
    ids: np.ndarray | None
    vectors: np.ndarray
    biases: np.ndarray
    source: np.ndarray
    n_ratings: np.ndarray
    n_ignored: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    rows: np.ndarray | None
    rated_query: np.ndarray
    rated_rows: np.ndarray

    def __len__(self) -> int:
        return len(self.vectors)

    def to_frame(self) -> pd.DataFrame:
        """One row per ID: id, bias, n_ratings, n_ignored, source, iterations, converged (and row)."""
        frame = pd.DataFrame(
            {
                self.side: self.ids if self.ids is not None else np.array([None], dtype=object),
                "bias": self.biases,
                "n_ratings": self.n_ratings,
                "n_ignored": self.n_ignored,
                "source": self.source,
                "iterations": self.iterations,
                "converged": self.converged,
            }
        )
        if self.rows is not None:
            frame["row"] = self.rows
        return frame

    def predict(self, model: EmbeddingDotBias, counterpart_ids, *, of=None) -> np.ndarray:
        """(m,) float32 predicted ratings of folded ID ``of[j]`` (position in ``ids``) for ``counterpart_ids[j]``.

        ``of`` defaults to 0 (the first or only folded ID). Unseen counterparts use row 0.
        """
        other = "item" if self.side == "user" else "user"
        rows = _registry(model, other).encode(counterpart_ids)
        w, b = _table_rows(model, other, rows)
        of = np.zeros(len(rows), dtype=np.int64) if of is None else np.asarray(of, dtype=np.int64)
        z = np.einsum("ij,ij->i", w.astype(np.float64), self.vectors[of].astype(np.float64)) + b + self.biases[of]
        lo, hi = model.y_range
        return (lo + (hi - lo) * expit(z)).astype(np.float32)


def fold_in_users(
    model: EmbeddingDotBias,
    ratings: Ratings | pd.DataFrame | str | os.PathLike,
    *,
    add: bool = False,
    weight_decay: float | None = None,
    max_iter: int = MAX_ITER,
    tol: float = TOL,
    index: SimilarityIndex | None = None,
) -> FoldIn:
    """Vectors and biases for new users from their ratings of known items, item side fixed.

    Args:
        model: a fitted model.
        ratings: ``user``, ``item``, ``rating`` columns (Ratings, a DataFrame or a file read with
            :func:`~collabemb.data.read_ratings`). Without a ``user`` column all rows belong to
            one anonymous user. Items the model does not know are skipped (``n_ignored``).
        add: append the new users to ``model.users`` and the model's tables (and to
            ``model.seen_items``, ``model.index`` and ``index``); their IDs must be new.
        weight_decay: L2 strength; default: the one the model was fitted with
            (``model.history.params``).
        max_iter, tol: Newton iterations at most; stop when the largest gradient entry is below
            ``tol`` times the number of ratings.
        index: another SimilarityIndex to extend with ``add=True`` (``model.index`` always is).
    """
    return _fold_in(model, ratings, "user", add=add, weight_decay=weight_decay, max_iter=max_iter, tol=tol, index=index)


def fold_in_items(
    model: EmbeddingDotBias,
    ratings: Ratings | pd.DataFrame | str | os.PathLike,
    *,
    add: bool = False,
    weight_decay: float | None = None,
    max_iter: int = MAX_ITER,
    tol: float = TOL,
    index: SimilarityIndex | None = None,
) -> FoldIn:
    """Vectors and biases for new items from known users' ratings of them, user side fixed.

    As :func:`fold_in_users` with the roles swapped: without an ``item`` column all rows rate one
    anonymous item; users the model does not know are skipped.
    """
    return _fold_in(model, ratings, "item", add=add, weight_decay=weight_decay, max_iter=max_iter, tol=tol, index=index)


def fold_in_items_like(
    model: EmbeddingDotBias,
    like: Mapping,
    *,
    add: bool = False,
    index: SimilarityIndex | None = None,
) -> FoldIn:
    """Unseen items described by known items they resemble: the mean of their vectors and biases.

    Args:
        like: ``{new_item_id: [known_item_id, ...]}``; every describing item must be known.
        add: append the new items to the model (and its index), as for :func:`fold_in_users`.
    """
    if not like:
        raise ValueError("like must map at least one new item ID to known item IDs")
    ids, _ = id_kind_of(list(like.keys()), what="new item IDs")
    vectors, biases, query, rated = [], [], [], []
    for j, new_id in enumerate(like):
        described = like[new_id]
        if isinstance(described, str | bytes | int | np.integer):
            described = [described]
        rows = model.items.encode(list(described), unknown="raise")
        if len(rows) == 0:
            raise ValueError(f"item {new_id!r}: no known items given to describe it")
        v, b = _mean_of_rows(model, "item", rows)
        vectors.append(v)
        biases.append(b)
        query.append(np.full(len(rows), j, dtype=np.int64))
        rated.append(rows)
    n = len(ids)
    fold = FoldIn(
        side="item",
        ids=ids,
        vectors=np.vstack(vectors).astype(np.float32),
        biases=np.asarray(biases, dtype=np.float32),
        source=np.full(n, "mean_of_items", dtype=object),
        n_ratings=np.array([len(r) for r in rated], dtype=np.int64),
        n_ignored=np.zeros(n, dtype=np.int64),
        iterations=np.zeros(n, dtype=np.int64),
        converged=np.ones(n, dtype=bool),
        rows=None,
        rated_query=np.concatenate(query),
        rated_rows=np.concatenate(rated),
    )
    if add:
        _refuse_known(model.items, ids, "item")
        _add(model, fold, index, seen_pairs=False)
    return fold


def _mean_of_rows(model: EmbeddingDotBias, side: str, rows: np.ndarray) -> tuple[np.ndarray, float]:
    """(k,) float32 mean vector and the mean bias of registry rows of one side."""
    w, b = _table_rows(model, side, np.asarray(rows, dtype=np.int64))
    return w.astype(np.float64).mean(axis=0).astype(np.float32), float(np.mean(b, dtype=np.float64))


# --- the solver ---------------------------------------------------------------------------------


def solve_one(
    other_vectors: np.ndarray,
    other_biases: np.ndarray,
    ratings: np.ndarray,
    *,
    weight_decay: float,
    y_range: tuple[float, float],
    max_iter: int = MAX_ITER,
    tol: float = TOL,
) -> tuple[np.ndarray, float, int, bool]:
    """Minimise ``sum (r - y)^2 + weight_decay * n * |v|^2`` over ``(v, b)`` for one new ID.

    Args:
        other_vectors: (n, k) vectors of the counterparts rated; other_biases: (n,) their biases.
        ratings: (n,) ratings.

    Returns:
        ``(v, b, iterations, converged)``: (k,) float64 vector, bias, Newton steps taken, and
        whether the gradient fell below ``tol * n``.
    """
    X = np.asarray(other_vectors, dtype=np.float64)
    c = np.asarray(other_biases, dtype=np.float64)
    r = np.asarray(ratings, dtype=np.float64)
    n, k = X.shape
    lo, hi = (float(v) for v in y_range)
    span = hi - lo
    A = np.empty((n, k + 1))
    A[:, :k] = X
    A[:, k] = 1.0
    reg = np.full(k + 1, float(weight_decay) * n)
    reg[k] = 0.0  # the bias is not penalised, as in training
    theta = np.zeros(k + 1)
    m = np.clip((r.mean() - lo) / span, 0.02, 0.98)
    theta[k] = np.log(m / (1 - m)) - c.mean()  # start where the mean rating is predicted

    def objective(t: np.ndarray) -> float:
        y = lo + span * expit(A @ t + c)
        return float(np.sum((y - r) ** 2) + np.sum(reg * t * t))

    f0 = objective(theta)
    for it in range(max_iter):
        s = expit(A @ theta + c)
        e = lo + span * s - r
        dy = span * s * (1 - s)
        g = 2 * (A.T @ (e * dy)) + 2 * reg * theta
        if np.max(np.abs(g)) <= tol * n:
            return theta[:k], float(theta[k]), it, True
        d2y = dy * (1 - 2 * s)
        H = (A.T * (2 * (dy * dy + e * d2y))) @ A
        H[np.diag_indices_from(H)] += 2 * reg
        try:
            L = np.linalg.cholesky(H)
            step = np.linalg.solve(L.T, np.linalg.solve(L, g))
        except np.linalg.LinAlgError:  # not convex here: Gauss-Newton, always a descent direction
            H = (A.T * (2 * dy * dy)) @ A
            H[np.diag_indices_from(H)] += 2 * reg + 1e-9
            step = np.linalg.lstsq(H, g, rcond=None)[0]
        slope = float(g @ step)
        t = 1.0
        while True:
            candidate = theta - t * step
            f1 = objective(candidate)
            if f1 <= f0 - 1e-4 * t * slope or t < 1e-10:
                break
            t *= 0.5
        if t < 1e-10:  # no progress possible along the step: at a minimum to float precision
            return theta[:k], float(theta[k]), it, True
        theta, f0 = candidate, f1
    return theta[:k], float(theta[k]), max_iter, False


# --- internals ------------------------------------------------------------------------------------


def _weight_decay(model: EmbeddingDotBias, weight_decay: float | None) -> float:
    if weight_decay is not None:
        return float(weight_decay)
    params = model.history.params if model.history is not None else {}
    if "weight_decay" not in params:
        raise ValueError("the model has no fit history to read weight_decay from; pass weight_decay=")
    return float(params["weight_decay"])


def _read(ratings, side: str, other: str) -> tuple[pd.DataFrame, bool]:
    """The ratings as a frame with ``side``, ``other``, ``rating``; and whether it was anonymous."""
    if isinstance(ratings, Ratings):
        return ratings.frame, False
    if isinstance(ratings, pd.DataFrame):
        has_side = side in ratings.columns
    else:
        has_side = side in _columns(Path(ratings))
    if has_side:
        return read_ratings(ratings).frame, False
    # one anonymous ID: read the other column twice, so duplicates resolve per counterpart
    frame = read_ratings(ratings, user_col=other, item_col=other).frame
    frame[side] = 0
    return frame, True


def _columns(path: Path) -> list[str]:
    """Column names of a ratings file (header line, or parquet schema)."""
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    try:
        with open(path, "rb") as fh:
            head = fh.readline().decode("utf-8", errors="replace").rstrip("\r\n")
    except OSError:
        return []  # read_ratings reports the missing file
    sep = next((s for s in ("\t", "::", ";", ",") if s in head), ",")
    return [name.strip() for name in head.split(sep)]


def _fold_in(model, ratings, side: str, *, add: bool, weight_decay, max_iter: int, tol: float, index) -> FoldIn:
    if model.y_range is None:
        raise ValueError(
            "this model has no rating link (y_range=None: an implicit-feedback model), so the rating objective "
            "does not apply; fold ALS users in with collabemb.implicit_mf.fold_in_als"
        )
    other = "item" if side == "user" else "user"
    frame, anonymous = _read(ratings, side, other)
    if add and anonymous:
        raise ValueError(f"add=True needs {side} IDs: give the ratings a {side!r} column")
    wd = _weight_decay(model, weight_decay)
    codes, uniques = pd.factorize(frame[side].to_numpy(), sort=False)
    ids = None if anonymous else id_kind_of(uniques, what=f"{side} IDs")[0]
    if add:
        _refuse_known(_registry(model, side), ids, side)
    other_rows = _encode_lenient(_registry(model, other), frame[other])
    r = frame["rating"].to_numpy(dtype=np.float64)
    table_w, table_b = _full_table(model, other)
    n = len(uniques)
    k = model.n_factors
    vectors = np.empty((n, k), dtype=np.float32)
    biases = np.empty(n, dtype=np.float32)
    source = np.full(n, "fold_in", dtype=object)
    n_used = np.zeros(n, dtype=np.int64)
    n_ignored = np.zeros(n, dtype=np.int64)
    iterations = np.zeros(n, dtype=np.int64)
    converged = np.ones(n, dtype=bool)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n + 1))
    unknown_w, unknown_b = _table_rows(model, side, np.array([UNKNOWN_ROW]))
    used_query, used_rows = [], []
    for j in range(n):
        sel = order[bounds[j] : bounds[j + 1]]
        rows = other_rows[sel]
        ok = rows != UNKNOWN_ROW
        n_used[j], n_ignored[j] = int(ok.sum()), int((~ok).sum())
        if not ok.any():
            vectors[j], biases[j], source[j] = unknown_w[0], unknown_b[0], "unknown_slot"
            continue
        rows = rows[ok]
        v, b, it, conv = solve_one(
            table_w[rows], table_b[rows], r[sel][ok], weight_decay=wd, y_range=model.y_range, max_iter=max_iter, tol=tol
        )
        vectors[j], biases[j], iterations[j], converged[j] = v, b, it, conv
        used_query.append(np.full(len(rows), j, dtype=np.int64))
        used_rows.append(rows)
    fold = FoldIn(
        side=side,
        ids=ids,
        vectors=vectors,
        biases=biases,
        source=source,
        n_ratings=n_used,
        n_ignored=n_ignored,
        iterations=iterations,
        converged=converged,
        rows=None,
        rated_query=np.concatenate(used_query) if used_query else np.empty(0, np.int64),
        rated_rows=np.concatenate(used_rows) if used_rows else np.empty(0, np.int64),
    )
    if add:
        _add(model, fold, index, seen_pairs=True)
    return fold


def _refuse_known(registry, ids: np.ndarray, side: str) -> None:
    known = registry.known(ids)
    if known.any():
        raise ValueError(
            f"{side} {ids[known][0]!r} is already known; add=True appends new IDs only "
            f"(fold in without add to re-estimate a known {side})"
        )


def _full_table(model: EmbeddingDotBias, side: str) -> tuple[np.ndarray, np.ndarray]:
    w = (model.i_weight if side == "item" else model.u_weight).weight
    b = (model.i_bias if side == "item" else model.u_bias).weight
    return w.detach().to("cpu", torch.float32).numpy(), b.detach().to("cpu", torch.float32).numpy()[:, 0]


def _add(model: EmbeddingDotBias, fold: FoldIn, index: SimilarityIndex | None, *, seen_pairs: bool) -> None:
    """Append the folded IDs to the registry, the tables, seen items and the indexes."""
    side = fold.side
    registry = _registry(model, side)
    rows = registry.add(fold.ids)
    _grow_tables(model, side, rows, fold.vectors, fold.biases)
    fold.rows = rows
    seen = getattr(model, "seen_items", None)
    if seen is not None and seen_pairs and len(fold.rated_query):
        if side == "user":
            user_rows, item_rows = rows[fold.rated_query], fold.rated_rows
        else:
            user_rows, item_rows = fold.rated_rows, rows[fold.rated_query]
        model.seen_items = seen.add(user_rows, item_rows, model.users.n_rows)
    targets = [getattr(model, "index", None)]
    if index is not None and all(index is not t for t in targets):
        targets.append(index)
    for target in targets:
        if target is not None and target.model is model:
            target._append(side, rows)


def _grow_tables(model: EmbeddingDotBias, side: str, rows: np.ndarray, vectors: np.ndarray, biases: np.ndarray) -> None:
    """Replace the side's embedding tables with copies that have rows for the new IDs."""
    prefix = "i" if side == "item" else "u"
    n_rows = _registry(model, side).n_rows
    for name, values in ((f"{prefix}_weight", vectors), (f"{prefix}_bias", np.asarray(biases)[:, None])):
        old = getattr(model, name).weight.detach()
        new = torch.zeros((n_rows, old.shape[1]), dtype=old.dtype, device=old.device)
        new[: old.shape[0]] = old
        new[torch.as_tensor(rows, device=old.device)] = torch.as_tensor(np.asarray(values), dtype=old.dtype, device=old.device)
        emb = torch.nn.Embedding.from_pretrained(new, freeze=False)
        emb.train(model.training)
        setattr(model, name, emb)

