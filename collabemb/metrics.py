"""Ranking and rating metrics, and evaluating a fitted model on held-out data.

Ranking metrics take two things, row-aligned over the users being evaluated:

* ``recommended``: (n_users, k) int array, each row the item indices a model recommends, best
  first, all distinct; ``-1`` pads a row that has fewer than ``k`` items.
* ``relevant``: the held-out items of each user: a scipy sparse (n_users, n_cols) matrix whose
  stored entries mark the relevant items, or a sequence of n_users integer arrays. Item indices
  share one space with ``recommended``.

Per-user functions return (n_users,) float64 arrays with NaN for users without relevant items;
:func:`ranking_metrics` averages over the users that have some. With ``h_j`` = 1 when the item at
position j (0-based) is relevant, ``R`` the user's number of relevant items and ``k`` the list
length:

* precision@k = ``sum(h) / k``; recall@k = ``sum(h) / R``; hit rate@k = ``1 if any(h)``.
* NDCG@k = ``sum_j h_j / log2(j + 2)`` divided by its best possible value,
  ``sum_{j < min(k, R)} 1 / log2(j + 2)``.
* AP@k = ``sum_j h_j * precision@(j + 1) / min(k, R)``; MAP@k is its mean over users.
* catalogue coverage@k: distinct items recommended to anyone, divided by the catalogue size.

:func:`evaluate` scores a fitted model: RMSE and MAE for rating models, the ranking metrics for
every model, recommending for each test user the top k of the model's known items by score, with
the user's training items excluded. Test pairs that are themselves among the excluded pairs can
never be hit; evaluate counts them (``excluded_test_pairs``) and warns
(:class:`ExcludedTestPairsWarning`) rather than report metrics that silently undercount.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from collabemb.data import Ratings
from collabemb.fitted import FittedModel
from collabemb.inputs import read_ratings_for
from collabemb.interactions import encode
from collabemb.models import EmbeddingDotBias
from collabemb.registry import UNKNOWN_ROW, IdRegistry
from collabemb.settings import check_k, check_number

#: Scores computed at once while ranking: users per batch = this // number of items.
SCORE_BLOCK = 1 << 24


def hits(recommended: np.ndarray, relevant) -> tuple[np.ndarray, np.ndarray]:
    """Which recommendations are relevant.

    Returns:
        ``(hit, n_relevant)``: (n_users, k) bool, True where ``recommended[u, j]`` is one of user
        u's relevant items; (n_users,) int64 number of relevant items per user.
    """
    rec = _as_recommended(recommended)
    indptr, indices = _as_lists(relevant, len(rec))
    n_relevant = np.diff(indptr)
    width = int(max(rec.max(initial=-1), indices.max(initial=-1))) + 1
    owner = np.repeat(np.arange(len(rec), dtype=np.int64), n_relevant)
    relevant_codes = np.unique(owner * width + indices)
    rec_codes = np.arange(len(rec), dtype=np.int64)[:, None] * width + rec
    hit = np.isin(rec_codes, relevant_codes, assume_unique=False) & (rec >= 0)
    return hit, n_relevant


def precision_at_k(recommended: np.ndarray, relevant) -> np.ndarray:
    """(n_users,) hits in the top k divided by k (NaN for users without relevant items)."""
    hit, n_rel = hits(recommended, relevant)
    return _nan_where_empty(hit.sum(axis=1) / max(hit.shape[1], 1), n_rel)


def recall_at_k(recommended: np.ndarray, relevant) -> np.ndarray:
    """(n_users,) hits in the top k divided by the user's number of relevant items."""
    hit, n_rel = hits(recommended, relevant)
    return _nan_where_empty(hit.sum(axis=1) / np.maximum(n_rel, 1), n_rel)


def hit_rate_at_k(recommended: np.ndarray, relevant) -> np.ndarray:
    """(n_users,) 1.0 when at least one of the top k is relevant, else 0.0."""
    hit, n_rel = hits(recommended, relevant)
    return _nan_where_empty(hit.any(axis=1).astype(np.float64), n_rel)


def ndcg_at_k(recommended: np.ndarray, relevant) -> np.ndarray:
    """(n_users,) normalised discounted cumulative gain with binary relevance."""
    hit, n_rel = hits(recommended, relevant)
    return _ndcg(hit, n_rel)


def average_precision_at_k(recommended: np.ndarray, relevant) -> np.ndarray:
    """(n_users,) average precision at k, normalised by ``min(k, R)``; MAP@k is its mean."""
    hit, n_rel = hits(recommended, relevant)
    return _average_precision(hit, n_rel)


def catalogue_coverage(recommended: np.ndarray, n_items: int) -> float:
    """Share of a catalogue of ``n_items`` items that appears in at least one recommendation list."""
    rec = _as_recommended(recommended)
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    return float(len(np.unique(rec[rec >= 0])) / n_items)


def ranking_metrics(recommended: np.ndarray, relevant, *, n_items: int, k: int | None = None) -> dict[str, float]:
    """All ranking metrics at ``k``, averaged over users with relevant items.

    ``k`` is the list length asked for, by default ``recommended.shape[1]``; a larger ``k`` counts
    the lists as padded to it (a catalogue smaller than k), so that precision@k still divides by k.

    Returns:
        ``{"precision@k", "recall@k", "ndcg@k", "map@k", "hit_rate@k", "coverage@k", "users"}``
        with k filled in (``"ndcg@10"``...); ``users`` is the number of users averaged over.
        Coverage counts the lists of all users given, with or without relevant items.
    """
    hit, n_rel = hits(recommended, relevant)
    k = hit.shape[1] if k is None else check_k(k)
    if k < hit.shape[1]:
        raise ValueError(f"k={k} is shorter than the {hit.shape[1]} recommendations per user")
    has = n_rel > 0
    if not has.any():
        raise ValueError("no user has a relevant item; nothing to evaluate")
    longest = min(k, max(hit.shape[1], int(n_rel.max())))  # min(k, R) for every user, whatever the size of k
    per_user = {
        "precision": hit.sum(axis=1) / float(k),
        "recall": hit.sum(axis=1) / np.maximum(n_rel, 1),
        "ndcg": _ndcg(hit, n_rel, longest),
        "map": _average_precision(hit, n_rel, longest),
        "hit_rate": hit.any(axis=1).astype(np.float64),
    }
    out = {f"{name}@{k}": float(values[has].mean()) for name, values in per_user.items()}
    out[f"coverage@{k}"] = catalogue_coverage(recommended, n_items)
    out["users"] = int(has.sum())
    return out


def rating_errors(fitted: FittedModel, test: Ratings) -> dict[str, float]:
    """``{"rmse", "mae"}`` of a rating model's predictions on ``test`` (unseen IDs use row 0)."""
    if fitted.y_range is None:
        raise ValueError("RMSE and MAE need a rating model (y_range set); this model's scores are not ratings")
    pred = fitted.predict(test.frame["user"], test.frame["item"])["prediction"].to_numpy(np.float64)
    err = pred - test.frame["rating"].to_numpy(np.float64)
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}


def top_k_rows(
    model: FittedModel | EmbeddingDotBias, user_rows: np.ndarray, k: int, *, exclude: sp.csr_matrix | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The k best-scoring known items (rows 1..n) for each user row, best first.

    Scores are ``<p_u, q_i> + b_i`` (the user's bias does not change a ranking; for a rating
    model the sigmoid is monotone, so this is the ranking by predicted rating).

    Args:
        model: a fitted model, or its module.
        user_rows: (n,) int64 user table rows (0 is the unknown slot).
        exclude: optional (n, n_item_rows) sparse matrix; a stored entry at (u, row) removes
            that item row from user u's candidates.

    Returns:
        ``(item_rows, scores)``: (n, w) int64 item rows (-1 where fewer than k items are left)
        and (n, w) float32 scores (-inf there), ``w = min(k, number of items)``: no list is longer
        than the catalogue (nothing of size k beyond it is allocated).
    """
    user_rows = np.asarray(user_rows, dtype=np.int64)
    n_item_rows = model.registry("item").n_rows
    n_items = n_item_rows - 1
    k = min(check_k(k), max(n_items, 1))
    if exclude is not None:
        exclude = sp.csr_matrix(exclude)
        if exclude.shape != (len(user_rows), n_item_rows):
            raise ValueError(f"exclude must have shape {(len(user_rows), n_item_rows)}, got {exclude.shape}")
    users = model.tables("user")[0]
    item_weight, item_bias = model.tables("item")
    items, item_bias = item_weight[1:], item_bias[1:]
    take = min(k, n_items)
    out_rows = np.full((len(user_rows), k), -1, dtype=np.int64)
    out_scores = np.full((len(user_rows), k), -np.inf, dtype=np.float32)
    step = max(1, SCORE_BLOCK // max(n_items, 1))
    for start in range(0, len(user_rows), step):
        stop = min(start + step, len(user_rows))
        scores = users[user_rows[start:stop]] @ items.T + item_bias
        if exclude is not None:
            block = exclude[start:stop].tocoo()
            cols = block.col - 1  # item row r is column r - 1 of the scores
            inside = cols >= 0
            scores[block.row[inside], cols[inside]] = -np.inf
        if take < n_items:
            part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        else:
            part = np.tile(np.arange(n_items), (stop - start, 1))
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -part_scores), axis=1)  # best score first, ties by row
        best = np.take_along_axis(part, order, axis=1)
        best_scores = np.take_along_axis(part_scores, order, axis=1)
        best_rows = np.where(np.isfinite(best_scores), best + 1, -1)
        out_rows[start:stop, :take] = best_rows
        out_scores[start:stop, :take] = np.where(best_rows >= 0, best_scores, -np.inf)
    return out_rows, out_scores


class ExcludedTestPairsWarning(UserWarning):
    """Relevant test pairs are among the pairs :func:`evaluate` excludes as seen, so no list can hit them.

    The usual cause is validation or test ratings stored as training pairs (a model fitted on
    all ratings, or ``set_seen_items`` given them); the ranking metrics are then too low.
    """


def evaluate(
    fitted: FittedModel,
    test: Ratings | pd.DataFrame | str,
    *,
    train: Ratings | pd.DataFrame | str | None = None,
    k: int = 10,
    threshold: float | None = None,
    exclude_seen: bool = True,
    **read_kwargs,
) -> dict[str, float]:
    """Score a fitted model on held-out ``test`` interactions.

    Every distinct user of ``test`` gets a top-k list of the model's known items, ranked by score
    (users the model does not know are answered by row 0, as ``predict`` would), with the items
    the user has in training left out.

    Args:
        fitted: the fitted model.
        test: held-out interactions (``read_kwargs`` go to :func:`~collabemb.data.read_ratings`).
        train: the training interactions, whose items are excluded per user (all of them, also
            those below a training threshold) and whose items are the catalogue for coverage.
            Default: ``fitted.seen_items`` (catalogue: the model's known items).
        k: list length.
        threshold: test rows with a rating below this are not relevant (``threshold=4``: only
            4 and 5 stars count as hits). None: every test row is relevant.
        exclude_seen: False ranks training items too; otherwise ``train`` or a non-empty
            ``fitted.seen_items`` is required, so seen items are never silently left in.

    Returns:
        For a rating model ``rmse`` and ``mae`` over all test rows, then for every model the
        :func:`ranking_metrics`, ``users`` (test users with a relevant item) and
        ``excluded_test_pairs``: relevant test pairs (known user and item) that are among the
        excluded pairs and so can never be hit. When there are any, an
        :class:`ExcludedTestPairsWarning` says how many.
    """
    k = check_k(k)
    threshold = check_number(threshold, "threshold", None, None, optional=True)
    test = read_ratings_for(fitted, test, **read_kwargs)  # a file's ID columns in their registries' types (collabemb.inputs)
    train = read_ratings_for(fitted, train, **read_kwargs) if train is not None else None
    out: dict[str, float] = {}
    if fitted.y_range is not None:
        out.update(rating_errors(fitted, test))
    frame = test.frame
    pairs = encode(test, fitted.users, fitted.items)  # the test pairs as rows, by the one encoder
    user_codes_all, user_ids = pd.factorize(frame["user"].to_numpy(), sort=False)
    user_index = pd.Index(user_ids)
    user_rows = np.zeros(len(user_ids), dtype=np.int64)
    user_rows[user_codes_all] = pairs.user_rows
    keep = np.ones(len(frame), dtype=bool) if threshold is None else frame["rating"].to_numpy(np.float64) >= float(threshold)
    user_codes = user_codes_all[keep]
    item_rows = pairs.item_rows[keep].astype(np.int64)
    relevant = _relevant_matrix(fitted.items, user_codes, item_rows, frame["item"].to_numpy()[keep], len(user_ids))
    exclude = _exclusions(fitted, user_index, user_rows, train) if exclude_seen else None
    rows, _ = top_k_rows(fitted, user_rows, k, exclude=exclude)
    n_catalogue = train.frame["item"].nunique() if train is not None else len(fitted.items)
    out.update(ranking_metrics(rows, relevant, n_items=max(n_catalogue, 1), k=k))
    excluded = _excluded_test_pairs(exclude, user_codes, user_rows[user_codes], item_rows) if exclude is not None else 0
    if excluded:
        which = "test pairs" if threshold is None else "relevant test pairs"
        warnings.warn(
            ExcludedTestPairsWarning(
                f"{excluded} of {len(item_rows)} {which} are among the excluded training pairs (seen items) and can never be hit; "
                "were validation/test pairs stored as training pairs?"
            ),
            stacklevel=2,
        )
    out["excluded_test_pairs"] = excluded
    return out


# --- helpers -------------------------------------------------------------------


def _exclusions(fitted: FittedModel, user_index: pd.Index, user_rows: np.ndarray, train: Ratings | None) -> sp.csr_matrix:
    """(n_test_users, n_item_rows) marks of the items to leave out of each test user's list."""
    if train is not None:
        return _seen_matrix(fitted, user_index, train)
    if len(fitted.seen_items) == 0:
        raise ValueError(
            "excluding seen items needs the training interactions: pass train= (or store them with "
            "fitted.set_seen_items(train)), or exclude_seen=False to rank training items too"
        )
    query, item_rows = fitted.seen_items.items_of(user_rows)
    return sp.csr_matrix((np.ones(len(query), np.int8), (query, item_rows)), shape=(len(user_index), fitted.items.n_rows))


def _excluded_test_pairs(exclude: sp.csr_matrix, user_codes: np.ndarray, user_rows: np.ndarray, item_rows: np.ndarray) -> int:
    """How many (test user, item row) pairs with a known user and item are marked in ``exclude``."""
    known = (user_rows != UNKNOWN_ROW) & (item_rows != UNKNOWN_ROW)
    if not known.any():
        return 0
    marked = np.asarray(exclude[user_codes[known], item_rows[known]]).ravel()
    return int(np.count_nonzero(marked))


def _relevant_matrix(items: IdRegistry, user_codes: np.ndarray, item_rows: np.ndarray, item_ids: np.ndarray, n_users: int) -> sp.csr_matrix:
    """(n_users, cols) relevance in item-row space; items the model does not know get columns of
    their own beyond its rows, so they count as relevant but can never be hit."""
    rows = item_rows
    unknown = rows == UNKNOWN_ROW
    if unknown.any():
        codes, _ = pd.factorize(item_ids[unknown])
        rows = rows.copy()
        rows[unknown] = items.n_rows + codes
    width = int(rows.max(initial=0)) + 1
    matrix = sp.csr_matrix((np.ones(len(rows), np.int8), (user_codes, rows)), shape=(n_users, width))
    matrix.sum_duplicates()
    return matrix


def _seen_matrix(fitted: FittedModel, user_index: pd.Index, train: Ratings) -> sp.csr_matrix:
    """(n_test_users, n_item_rows) marks of the known items each test user has in ``train``."""
    codes = user_index.get_indexer(train.frame["user"].to_numpy())
    rows = encode(train, fitted.users, fitted.items).item_rows
    ok = (codes >= 0) & (rows != UNKNOWN_ROW)
    return sp.csr_matrix((np.ones(int(ok.sum()), np.int8), (codes[ok], rows[ok])), shape=(len(user_index), fitted.items.n_rows))


def _as_recommended(recommended) -> np.ndarray:
    rec = np.asarray(recommended)
    if rec.ndim != 2:
        raise ValueError(f"recommended must be a 2-D (n_users, k) array, got shape {rec.shape}")
    if rec.size and rec.dtype.kind not in "iu":
        raise TypeError(f"recommended must hold integer item indices, got {rec.dtype}")
    return rec.astype(np.int64, copy=False)


def _as_lists(relevant, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) of the relevant items per user, duplicates removed."""
    if sp.issparse(relevant):
        m = sp.csr_matrix(relevant, copy=True)
        m.sum_duplicates()
        m.eliminate_zeros()
        if m.shape[0] != n_users:
            raise ValueError(f"relevant has {m.shape[0]} rows, recommended {n_users}")
        return m.indptr.astype(np.int64), m.indices.astype(np.int64)
    if not isinstance(relevant, Sequence | np.ndarray) or len(relevant) != n_users:
        raise ValueError(f"relevant must be a sparse matrix or a sequence of {n_users} arrays (one per recommended row)")
    lists = [np.unique(np.asarray(items, dtype=np.int64)) for items in relevant]
    indptr = np.concatenate([[0], np.cumsum([len(a) for a in lists])]).astype(np.int64)
    indices = np.concatenate(lists).astype(np.int64) if lists else np.empty(0, np.int64)
    if len(indices) and indices.min() < 0:
        raise ValueError("relevant item indices must be >= 0")
    return indptr, indices


def _nan_where_empty(values: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    return np.where(n_rel > 0, values, np.nan)


def _ndcg(hit: np.ndarray, n_rel: np.ndarray, k: int | None = None) -> np.ndarray:
    k = hit.shape[1] if k is None else k
    discount = 1.0 / np.log2(np.arange(hit.shape[1]) + 2.0)
    dcg = hit @ discount
    best = np.minimum(n_rel, k)  # the ideal list's hits: the discounts up to the longest of them, never k of them
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(best.max(initial=0)) + 2.0))])[best]
    return _nan_where_empty(dcg / np.where(ideal > 0, ideal, 1.0), n_rel)


def _average_precision(hit: np.ndarray, n_rel: np.ndarray, k: int | None = None) -> np.ndarray:
    k = hit.shape[1] if k is None else k
    precision = np.cumsum(hit, axis=1) / np.arange(1, hit.shape[1] + 1)
    ap = (precision * hit).sum(axis=1) / np.maximum(np.minimum(n_rel, k), 1)
    return _nan_where_empty(ap, n_rel)
