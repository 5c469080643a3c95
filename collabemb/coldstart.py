"""Cold start: vectors for users and items the model never saw in training.

Five paths, each named in the ``source`` of what it produces:

* ``"fold_in"`` for rating models (``fitted.identity.fold_in == "rating"``):
  :func:`fold_in_users` / :func:`fold_in_items` solve a new ID's vector ``v`` and bias ``b`` from
  a few ratings with the other table fixed, minimising the training objective of
  :mod:`collabemb.train` restricted to that ID::

      sum_j (r_j - y_j)**2 + weight_decay * n * |v|**2,   y_j = lo + (hi - lo) * sigmoid(<v, w_j> + b + b_j)

  over its ``n`` ratings (the per-rating L2 on factor rows, summed; the bias is not penalised,
  as in training), with ``weight_decay`` read from ``fitted.identity`` and ``y_range`` from the
  module. Newton steps with a backtracking line search (Gauss-Newton steps where the Hessian is
  not positive definite) converge in a handful of iterations: about a millisecond per ID.
* ``"fold_in"`` for ALS models (``fitted.identity.fold_in == "als"``): :func:`fold_in_als` solves
  ALS's closed-form user system with the confidences recorded at training.
* ``"unknown_slot"``: an ID none of whose ratings name a known counterpart gets row 0, the
  model's answer for "no history at all".
* ``"mean_of_items"``: :func:`fold_in_items_like` describes an unseen item by known items it
  resembles: the mean of their vectors and of their biases.
* ``"side_info"``: :func:`fold_in_items` / :func:`fold_in_users` with ``features=`` place an ID
  from its metadata (genres, year, tags; age, occupation) through a
  :class:`~collabemb.side_info.SideInfoMap` learned on the known IDs' metadata: for IDs with no
  ratings, or none of whose ratings name a known counterpart. Any model family.

With ``add=True`` the new IDs are appended to the module's registry and tables
(``append_rows``: rows never move), to ``fitted.seen_items`` and to ``fitted.index`` (and to
``index=`` if given), so they can be searched, recommended, predicted and saved like trained IDs.
:func:`recommend_from_ratings` folds new users in and recommends for them in one call.

Counterpart IDs are never coerced: an item column of ``str`` IDs for a model of ``int`` item IDs
raises ``TypeError``. Each ID column of a ratings *file* is read as the type of the registry it is
looked up in (text has no type of its own; :mod:`collabemb.inputs`): ``050`` for a model of
``int`` item IDs is refused, naming file, line and column.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from collabemb.data import Ratings
from collabemb.fitted import FittedModel
from collabemb.fold_solvers import MAX_ITER, TOL, als_confidences, als_solve, solve_one
from collabemb.implicit_mf import read_interactions
from collabemb.index import SimilarityIndex, index_of, mean_of_items
from collabemb.inputs import read_ratings_as, read_ratings_for
from collabemb.model_view import rating_of_logits
from collabemb.models import Table
from collabemb.registry import UNKNOWN_ROW, IdRegistry, id_type_of
from collabemb.settings import check_k
from collabemb.side_info import SideInfoMap, feature_ids, side_info_map


@dataclass
class FoldIn:
    """Vectors for new IDs, and how each was obtained.

    Attributes:
        table: ``"user"`` or ``"item"``: the table the new IDs belong to.
        ids: (n,) raw IDs in order of first appearance, or None for one anonymous ID (ratings
            without an ID column).
        vectors: (n, n_factors) float32.
        biases: (n,) float32, logit units.
        source: (n,) str: ``"fold_in"``, ``"unknown_slot"``, ``"mean_of_items"`` or ``"side_info"``.
        n_ratings: (n,) int64 ratings used (for ``"mean_of_items"``: the items averaged);
            n_ignored: (n,) int64 ratings skipped because the model does not know their
            counterpart ID.
        iterations: (n,) int64 Newton steps; converged: (n,) bool.
        rows: (n,) int64 table rows when added (``add=True``), else None.
        rated_query, rated_rows: (m,) int64, one entry per rating used: the position in ``ids``
            and the counterpart's table row (e.g. to exclude a new user's rated items).
    """

    table: Table
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
                self.table: self.ids if self.ids is not None else np.array([None], dtype=object),
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

    def predict(self, fitted: FittedModel, counterpart_ids, *, of=None) -> np.ndarray:
        """(m,) float32 predicted ratings of folded ID ``of[j]`` (position in ``ids``) for ``counterpart_ids[j]``.

        ``of`` defaults to 0 (the first or only folded ID). Unseen counterparts use row 0; for a
        model with ``y_range=None`` the score ``<v, w> + b + b_w`` is returned.
        """
        other = _other(self.table)
        rows = fitted.registry(other).encode(counterpart_ids)
        weights, biases = fitted.tables(other)
        of = np.zeros(len(rows), dtype=np.int64) if of is None else np.asarray(of, dtype=np.int64)
        z = np.einsum("ij,ij->i", weights[rows].astype(np.float64), self.vectors[of].astype(np.float64)) + biases[rows] + self.biases[of]
        return rating_of_logits(z, fitted.y_range)


def fold_in_users(
    fitted: FittedModel,
    ratings: Ratings | pd.DataFrame | str | os.PathLike | None = None,
    *,
    features: pd.DataFrame | None = None,
    side_info: SideInfoMap | pd.DataFrame | None = None,
    add: bool = False,
    weight_decay: float | None = None,
    max_iter: int = MAX_ITER,
    tol: float = TOL,
    index: SimilarityIndex | None = None,
) -> FoldIn:
    """Vectors and biases for new users of a rating model from their ratings of known items.

    Args:
        fitted: a rating model (``fitted.identity.fold_in == "rating"``; for ALS see
            :func:`fold_in_als`).
        ratings: ``user``, ``item``, ``rating`` columns (Ratings, a DataFrame or a file read with
            :func:`~collabemb.data.read_ratings`). Without a ``user`` column all rows belong to
            one anonymous user. Items the model does not know are skipped (``n_ignored``).
        features: user attributes, one row per user: a ``user`` column plus feature columns (age,
            gender, occupation...). Users without ratings, or none of whose rated items are
            known, are placed from them (``source="side_info"``, listed after the rated users);
            the rest are folded in from their ratings.
        side_info: the map that places them: a :class:`~collabemb.side_info.SideInfoMap`, or the
            attributes of known users to learn one from. Default: learned from the rows of
            ``features`` that name known users (:func:`~collabemb.side_info.side_info_map`).
        add: append the new users to the module's table (and to ``fitted.seen_items``,
            ``fitted.index`` and ``index``); their IDs must be new.
        weight_decay: L2 strength; default: the one the model was fitted with
            (``fitted.identity.weight_decay``).
        max_iter, tol: Newton iterations at most; stop when the largest gradient entry is below
            ``tol`` times the number of ratings.
        index: another SimilarityIndex over this model to extend with ``add=True``.
    """
    kwargs = {"weight_decay": weight_decay, "max_iter": max_iter, "tol": tol}
    return _fold_in(fitted, ratings, "user", features=features, side_info=side_info, add=add, index=index, **kwargs)


def fold_in_items(
    fitted: FittedModel,
    ratings: Ratings | pd.DataFrame | str | os.PathLike | None = None,
    *,
    features: pd.DataFrame | None = None,
    side_info: SideInfoMap | pd.DataFrame | None = None,
    add: bool = False,
    weight_decay: float | None = None,
    max_iter: int = MAX_ITER,
    tol: float = TOL,
    index: SimilarityIndex | None = None,
) -> FoldIn:
    """Vectors and biases for new items from known users' ratings of them, the user table fixed.

    As :func:`fold_in_users` with the roles swapped: without an ``item`` column all rows rate one
    anonymous item; users the model does not know are skipped. ``features``: item metadata (an
    ``item`` column plus genres, year, tags...) placing items that have no usable ratings; the map
    is by default learned from the model's stored ``item_metadata``, else from the rows of
    ``features`` that name known items.
    """
    kwargs = {"weight_decay": weight_decay, "max_iter": max_iter, "tol": tol}
    return _fold_in(fitted, ratings, "item", features=features, side_info=side_info, add=add, index=index, **kwargs)


def fold_in_items_like(fitted: FittedModel, like: Mapping, *, add: bool = False, index: SimilarityIndex | None = None) -> FoldIn:
    """Unseen items described by known items they resemble: the mean of their vectors and biases.

    Args:
        like: ``{new_item_id: [known_item_id, ...]}``; every describing item must be known.
        add: append the new items to the model (and its index), as for :func:`fold_in_users`.
    """
    if not like:
        raise ValueError("like must map at least one new item ID to known item IDs")
    ids, _ = id_type_of(list(like.keys()), what="new item IDs")
    vectors, means, query, rated = [], [], [], []
    for j, new_id in enumerate(like):
        vector, mean_bias, rows = mean_of_items(fitted.module, like[new_id], new_id)
        vectors.append(vector)
        means.append(mean_bias)
        query.append(np.full(len(rows), j, dtype=np.int64))
        rated.append(rows)
    n = len(ids)
    fold = FoldIn(
        table="item",
        ids=ids,
        vectors=np.vstack(vectors).astype(np.float32),
        biases=np.asarray(means, dtype=np.float32),
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
        _refuse_known(fitted.items, ids, "item")
        _add(fitted, fold, index, seen_pairs=False)
    return fold


def fold_in_als(
    fitted: FittedModel,
    interactions: Ratings | pd.DataFrame | str | os.PathLike,
    *,
    add: bool = False,
    index: SimilarityIndex | None = None,
    **read_kwargs,
) -> FoldIn:
    """Factors for new users of an ALS model by ALS's own closed-form user solve; items stay fixed.

    For each user this solves ``(Y^T C_u Y + reg * I) x_u = Y^T C_u p_u`` over the model's item
    factors ``Y`` (rows 1..n) with the confidences built from the threshold, weighting, alpha and
    regularization recorded in ``fitted.identity``: the computation of ``implicit``'s
    ``recalculate_user``, so it works on a model loaded from an artifact. Interactions with items
    the model does not know are skipped (``n_ignored``); a user left with none (all skipped or
    below the threshold) gets row 0, the average user (``source="unknown_slot"``).

    Args:
        fitted: an ALS model (``fitted.identity.fold_in == "als"``).
        interactions: ``user``, ``item`` and optionally ``rating`` columns, read like
            :func:`~collabemb.implicit_mf.fit_implicit`'s input. A DataFrame without a ``user``
            column is one anonymous user.
        add: append the new users to the module's table (and to ``fitted.seen_items``,
            ``fitted.index`` and ``index``), as :func:`fold_in_users` does; the IDs must be new.
            Without ``add`` a known user's factors are re-estimated and returned, the model is
            left unchanged.

    Returns:
        A :class:`FoldIn` (``table="user"``; biases are 0: ALS has none; ``iterations`` is 1 for a
        solved user, the closed form being exact). Its ``rated_query`` / ``rated_rows`` list every
        interaction with a known item, those below the threshold too, so that recommendations can
        leave out everything the user touched.
    """
    identity = fitted.identity
    if identity.fold_in != "als":
        hint = "; fold rating-model users in with collabemb.fold_in_users" if identity.fold_in == "rating" else ""
        raise ValueError(f"fold_in_als needs an ALS model from fit_implicit(model='als'); this one is {identity.family!r}{hint}")
    frame, anonymous = _interactions_of(fitted, interactions, read_kwargs)
    if anonymous and add:
        raise ValueError("add=True needs user IDs: give the interactions a 'user' column")
    codes, uniques = pd.factorize(frame["user"].to_numpy(), sort=False)
    ids = None if anonymous else id_type_of(uniques, what="user IDs")[0]
    if add:
        _refuse_known(fitted.users, ids, "user")
    items = fitted.items
    item_rows = items.encode(frame["item"])  # the other ID type raises TypeError
    known = item_rows != UNKNOWN_ROW
    n = len(uniques)
    cui = als_confidences(fitted, frame["rating"].to_numpy(np.float64), codes, item_rows, n)
    n_used = np.diff(cui.indptr)
    solved = n_used > 0
    user_w, user_b = fitted.tables("user")
    vectors = np.repeat(user_w[:1], n, axis=0)
    vectors[solved] = als_solve(fitted.tables("item")[0][1:].astype(np.float64), cui[solved], float(identity.regularization))
    biases = np.full(n, user_b[0], dtype=np.float32)
    biases[solved] = 0.0  # ALS has no biases
    seen = np.unique(codes[known].astype(np.int64) * items.n_rows + item_rows[known])
    fold = FoldIn(
        table="user",
        ids=ids,
        vectors=vectors,
        biases=biases,
        source=np.where(solved, "fold_in", "unknown_slot").astype(object),
        n_ratings=n_used.astype(np.int64),
        n_ignored=np.bincount(codes[~known], minlength=n).astype(np.int64),
        iterations=solved.astype(np.int64),
        converged=np.ones(n, dtype=bool),
        rows=None,
        rated_query=seen // items.n_rows,
        rated_rows=seen % items.n_rows,
    )
    if add:
        _add(fitted, fold, index, seen_pairs=True)
    return fold


def recommend_from_ratings(
    fitted_or_index: FittedModel | SimilarityIndex,
    ratings: Ratings | pd.DataFrame | str | os.PathLike,
    k: int = 10,
    *,
    exclude_seen: bool = True,
    exclude=None,
    add: bool = False,
    **fold_kwargs,
) -> pd.DataFrame:
    """Recommendations for new users described only by a few ratings (fold-in).

    Each user is folded in with the fold-in the model's identity names (:func:`fold_in_users`
    for rating models, :func:`fold_in_als` for ALS; ``fold_kwargs`` go to it); a user none of
    whose items the model knows gets the unknown slot. ``ratings`` has ``item`` and ``rating``
    columns and, for several users (or with ``add=True``), a ``user`` column.

    Args:
        fitted_or_index: a FittedModel (searched through ``index_of(fitted)``) or a SimilarityIndex.
        exclude_seen: leave out the items each new user rated (their seen items, as in :func:`recommend`).
        exclude: raw item IDs never to recommend (for every user).
        add: also append the new users to the model (see :func:`fold_in_users`).

    Returns:
        As :meth:`SimilarityIndex.recommend`; ``source`` is ``"fold_in"`` or ``"unknown_slot"``.
    """
    k = check_k(k)  # before any fold-in work
    if isinstance(fitted_or_index, SimilarityIndex):
        index, fitted = fitted_or_index, fitted_or_index.fitted
    else:
        index, fitted = None, fitted_or_index
    fold_in = fold_in_als if fitted.identity.fold_in == "als" else fold_in_users
    fold = fold_in(fitted, ratings, add=add, index=index, **fold_kwargs)
    searcher = index if index is not None else index_of(fitted)
    pairs = (fold.rated_query, fold.rated_rows) if exclude_seen else None
    ids = fold.ids if fold.ids is not None else np.array([None], dtype=object)
    return searcher.recommend_vectors(fold.vectors, fold.biases, k, ids=ids, source=fold.source, rated=pairs, exclude=exclude)


# --- internals ------------------------------------------------------------------------------------


def _other(table: str) -> Table:
    return "item" if table == "user" else "user"


def _rating_fold_in_applies(fitted: FittedModel) -> None:
    """Refuse a model the rating objective does not describe, saying what applies instead."""
    identity = fitted.identity
    if identity.fold_in == "als":
        raise ValueError(
            "this is an ALS model (implicit feedback, no rating link): the rating objective does not apply; "
            "fold its users in with collabemb.fold_in_als"
        )
    if identity.fold_in != "rating":
        raise ValueError(
            f"a {identity.family!r} model has no fold-in: no per-ID solve reproduces its training; "
            f"unseen IDs are answered by the unknown slot (unknown='unknown_slot') until it is retrained"
        )
    if fitted.y_range is None:
        raise ValueError("the rating fold-in needs the model's y_range (its rating link); this model has none")


def _weight_decay(fitted: FittedModel, weight_decay: float | None) -> float:
    if weight_decay is not None:
        return float(weight_decay)
    if fitted.identity.weight_decay is None:
        raise ValueError("the model records no weight_decay (fitted.identity.weight_decay) to fold in with; pass weight_decay=")
    return float(fitted.identity.weight_decay)


def _read(ratings, fitted: FittedModel, table: str, other: str) -> tuple[pd.DataFrame, bool]:
    """The ratings as a frame with ``table``, ``other``, ``rating``; and whether it was anonymous."""
    if isinstance(ratings, Ratings):
        return ratings.frame, False
    is_file = not isinstance(ratings, pd.DataFrame)
    has_table = _columns(Path(ratings)) if is_file else ratings.columns
    if table in has_table:
        return read_ratings_for(fitted, ratings).frame, False
    # one anonymous ID: read the other column twice, so duplicates resolve per counterpart
    id_type = fitted.registry(other).id_type
    frame = read_ratings_as(ratings, user_col=other, item_col=other, user_id_type=id_type, item_id_type=id_type).frame
    frame[table] = 0
    return frame, True


def _interactions_of(fitted: FittedModel, interactions, read_kwargs: dict) -> tuple[pd.DataFrame, bool]:
    """fold_in_als' input as a frame, and whether it is one anonymous user (no user column): a DataFrame read
    as fit_implicit reads it, a file by collabemb.inputs' ID rule (as :func:`_read` reads a rating model's)."""
    user_col, item_col = read_kwargs.get("user_col", "user"), read_kwargs.get("item_col", "item")
    if isinstance(interactions, Ratings | pd.DataFrame):
        anonymous = isinstance(interactions, pd.DataFrame) and user_col not in interactions.columns
        interactions = interactions.assign(**{user_col: 0}) if anonymous else interactions
        return read_interactions(interactions, read_kwargs).frame, anonymous
    if user_col in _columns(Path(interactions)):
        return read_ratings_for(fitted, interactions, **read_kwargs).frame, False
    id_type = fitted.items.id_type  # one anonymous user: read the item column twice, as _read does
    frame = read_ratings_as(interactions, **{**read_kwargs, "user_col": item_col}, user_id_type=id_type, item_id_type=id_type).frame
    frame["user"] = 0
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


def _fold_in(fitted: FittedModel, ratings, table: Table, *, features, side_info, add: bool, index, **solve) -> FoldIn:
    """Ratings folded in, features placed through the side-info map, or both; then added if asked."""
    if ratings is None and features is None:
        raise ValueError(f"give the new {table}s' ratings, their features (side information), or both")
    fold = None if ratings is None else _fold_in_ratings(fitted, ratings, table, add=add, **solve)
    if features is not None:
        if fold is not None and fold.ids is None:
            raise ValueError(f"features name {table}s by ID: give the ratings a {table!r} column too")
        placed = _place(fitted, table, features, side_info)
        fold = placed if fold is None else _with_placed(fold, placed)
    if add:
        _refuse_known(fitted.registry(table), fold.ids, table)
        _add(fitted, fold, index, seen_pairs=True)
    return fold


def _place(fitted: FittedModel, table: Table, features: pd.DataFrame, side_info) -> FoldIn:
    """Every row of ``features`` placed through the side-info map (``source="side_info"``)."""
    ids = feature_ids(features, table, fitted.registry(table))
    vectors, biases = side_info_map(fitted, table, side_info, features).vectors(features)
    n = len(ids)
    return FoldIn(
        table=table,
        ids=ids,
        vectors=vectors,
        biases=biases,
        source=np.full(n, "side_info", dtype=object),
        n_ratings=np.zeros(n, dtype=np.int64),
        n_ignored=np.zeros(n, dtype=np.int64),
        iterations=np.zeros(n, dtype=np.int64),
        converged=np.ones(n, dtype=bool),
        rows=None,
        rated_query=np.empty(0, np.int64),
        rated_rows=np.empty(0, np.int64),
    )


def _with_placed(rated: FoldIn, placed: FoldIn) -> FoldIn:
    """``rated``'s IDs first, those the unknown slot answered taking their placement when there is
    one; then the placed IDs without ratings, in their order."""
    at = pd.Index(placed.ids).get_indexer(rated.ids)
    swap = (rated.source == "unknown_slot") & (at >= 0)
    rated.vectors[swap], rated.biases[swap], rated.source[swap] = placed.vectors[at[swap]], placed.biases[at[swap]], "side_info"
    extra = pd.Index(rated.ids).get_indexer(placed.ids) < 0
    joined = {
        name: np.concatenate([getattr(rated, name), getattr(placed, name)[extra]])
        for name in ("ids", "vectors", "biases", "source", "n_ratings", "n_ignored", "iterations", "converged")
    }
    return FoldIn(table=rated.table, rows=None, rated_query=rated.rated_query, rated_rows=rated.rated_rows, **joined)


def _fold_in_ratings(fitted: FittedModel, ratings, table: Table, *, add: bool, weight_decay, max_iter: int, tol: float) -> FoldIn:
    """The rating fold-in (module docstring); with ``add`` it only checks that the IDs can be added."""
    _rating_fold_in_applies(fitted)
    other = _other(table)
    frame, anonymous = _read(ratings, fitted, table, other)
    if add and anonymous:
        raise ValueError(f"add=True needs {table} IDs: give the ratings a {table!r} column")
    wd = _weight_decay(fitted, weight_decay)
    codes, uniques = pd.factorize(frame[table].to_numpy(), sort=False)
    ids = None if anonymous else id_type_of(uniques, what=f"{table} IDs")[0]
    if add:
        _refuse_known(fitted.registry(table), ids, table)
    other_rows = fitted.registry(other).encode(frame[other])  # the other ID type raises TypeError
    r = frame["rating"].to_numpy(dtype=np.float64)
    other_w, other_b = fitted.tables(other)
    n, k = len(uniques), fitted.n_factors
    vectors, biases = np.empty((n, k), dtype=np.float32), np.empty(n, dtype=np.float32)
    source = np.full(n, "fold_in", dtype=object)
    n_used, n_ignored, iterations = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    converged = np.ones(n, dtype=bool)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n + 1))
    unknown_w, unknown_b = (t[UNKNOWN_ROW] for t in fitted.tables(table))
    used_query, used_rows = [], []
    for j in range(n):
        sel = order[bounds[j] : bounds[j + 1]]
        rows = other_rows[sel]
        ok = rows != UNKNOWN_ROW
        n_used[j], n_ignored[j] = int(ok.sum()), int((~ok).sum())
        if not ok.any():
            vectors[j], biases[j], source[j] = unknown_w, unknown_b, "unknown_slot"
            continue
        rows = rows[ok]
        prior = fitted.history_vector(rows) if table == "user" else None  # svdpp: the vector the user's history gives
        v, b, it, conv = solve_one(
            other_w[rows], other_b[rows], r[sel][ok], weight_decay=wd, y_range=fitted.y_range, max_iter=max_iter, tol=tol, prior=prior
        )
        vectors[j], biases[j], iterations[j], converged[j] = v, b, it, conv
        used_query.append(np.full(len(rows), j, dtype=np.int64))
        used_rows.append(rows)
    return FoldIn(
        table=table,
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


def _refuse_known(registry: IdRegistry, ids: np.ndarray, table: str) -> None:
    known = registry.known(ids)  # IDs of the other type raise TypeError
    if known.any():
        raise ValueError(
            f"{table} {ids[known].tolist()[0]!r} is already known; add=True appends new IDs only "
            f"(fold in without add to re-estimate a known {table})"
        )


def _add(fitted: FittedModel, fold: FoldIn, index: SimilarityIndex | None, *, seen_pairs: bool) -> None:
    """Append the folded IDs to the module's table, the seen items and the indexes."""
    module = fitted.module
    if index is not None and index.fitted.module is not module:
        raise ValueError("index= searches another model; pass an index over this fitted model (or none)")
    # a stored index is read back (and checked) while it still matches the registry it was built for
    targets = [index_of(fitted)] if fitted.index is not None else []
    if index is not None and all(index is not t for t in targets):
        targets.append(index)
    rows = module.append_rows(fold.table, fold.ids, fold.vectors, fold.biases)
    fold.rows = rows
    if seen_pairs and len(fold.rated_query):
        if fold.table == "user":
            user_rows, item_rows = rows[fold.rated_query], fold.rated_rows
        else:
            user_rows, item_rows = fold.rated_rows, rows[fold.rated_query]
        fitted.seen_items = fitted.seen_items.with_pairs(user_rows, item_rows, module.users.n_rows)
    for target in targets:
        target.extend(fold.table, rows)


__all__ = ["FoldIn", "fold_in_als", "fold_in_items", "fold_in_items_like", "fold_in_users", "recommend_from_ratings", "solve_one"]
