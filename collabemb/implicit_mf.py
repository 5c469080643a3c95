"""Implicit-feedback models trained by the ``implicit`` library, and a popularity baseline.

Clicks, plays and purchases say what a user touched, not how much they liked it. :func:`fit_implicit`
trains ``implicit``'s alternating least squares (``"als"``), Bayesian personalised ranking
(``"bpr"``) or logistic matrix factorisation (``"lmf"``) on the same input as :func:`collabemb.fit`
and returns a :class:`~collabemb.fitted.FittedModel` whose module has ``y_range=None``: its score
``<p_u, q_i> + b_u + b_i`` is exactly the score ``implicit`` ranks by, so the artifact, the
exports, similarity search, ``recommend`` and the command line work unchanged.
:func:`fit_popularity` is the baseline every ranking model has to beat, in the same form.

From ratings to confidence
--------------------------
Each input row is an interaction ``(user, item, value)``; ``value`` is the rating column (a star
rating, a play count, a purchase amount), or 1 when a DataFrame has no rating column.

1. ``threshold``: rows with ``value < threshold`` are dropped (``threshold=4`` keeps 4 and 5
   stars as positives). None keeps every row.
2. ``weighting`` turns each kept value into a weight ``w``: ``"binary"`` gives 1, ``"raw"`` the
   value itself, ``"log"`` ``log1p(value)`` (play counts: 1 play -> 0.69, 100 plays -> 4.6).
   ``"raw"`` and ``"log"`` need positive values.
3. ALS, following Hu, Koren and Volinsky (2008) as ``implicit`` implements it: an observed pair
   has preference 1 and confidence ``c = alpha * w``, every unobserved pair preference 0 and
   confidence 1. LMF uses ``w`` as the weight of each positive; BPR treats every kept row as a
   plain positive (``weighting`` does not change it).

The model knows the users and items with at least one kept interaction; an ID whose
interactions were all dropped is unknown to it, like an ID never seen.

Row layout
----------
``implicit`` keeps biases inside its factor matrices: BPR appends a column of ones to the user
factors and an item-bias column to the item factors; LMF appends two, a user-bias column paired
with ones on the item side and ones paired with an item-bias column. Those columns are moved into
``u_bias`` / ``i_bias``, so ``i_weight`` holds only the ``n_factors`` latent factors; ALS has no
biases (they are zero). Known IDs take rows ``1..n`` (``implicit``'s row ``r`` is registry row
``r + 1``).

Row 0, the unknown slot, is **not trained** for these models (``implicit`` has no routing): it is
set to the mean of the known rows, factors and biases alike. An unseen user therefore gets the
ranking of the average user, ``<mean p, q_i> + b_i``, and an unseen item the average item's score.

Fold-in
-------
The model family, ALS's regularization and alpha and the confidence options are recorded in the
fitted model's ``identity`` (saved in config.json), so :func:`collabemb.coldstart.fold_in_als` can
fold new users into a loaded artifact with the same closed-form solve ``implicit``'s
``recalculate_user`` does.

BPR and LMF models have no fold-in. Their factors come from a fixed number of SGD / AdaGrad
epochs over randomly sampled negatives, not from the optimum of an objective a new user could be
solved against on their own, so no per-user solve reproduces what training would have given them
(``implicit`` itself offers no ``recalculate_user`` for them). The rating-model fold-in of
:mod:`collabemb.coldstart` does not apply either: it fits ratings through the sigmoid of a
``y_range`` with the model's ``weight_decay``, and these models have neither. A new user of a BPR
or LMF model is answered by row 0 (the average user) until the model is retrained.

Threads: ``implicit`` is told ``num_threads`` explicitly, and BLAS is held to one thread during
every ``implicit`` call (``threadpoolctl``), as ``implicit`` recommends; callers set nothing.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from importlib.metadata import version
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from collabemb.data import Ratings, read_ratings
from collabemb.fitted import FittedModel, ModelIdentity
from collabemb.history import FitHistory
from collabemb.interactions import SeenItems, encode
from collabemb.model_card import data_facts, library_versions
from collabemb.models import EmbeddingDotBias
from collabemb.registry import IdRegistry

Family = Literal["als", "bpr", "lmf"]
Weighting = Literal["binary", "raw", "log"]

FAMILIES: tuple[str, ...] = ("als", "bpr", "lmf")
WEIGHTINGS: tuple[str, ...] = ("binary", "raw", "log")
#: ``params["model"]`` of :func:`fit_popularity`'s models.
POPULARITY = "popularity"

#: Per-family defaults. ALS's regularization and alpha were chosen on MovieLens 100K (ratings >= 4
#: as positives), validating on the last 10 training interactions of each user, never on the test
#: part benchmarks/ranking.py reports: NDCG@10 0.134 against 0.115 with ``implicit``'s own
#: defaults (0.01, 1.0). ``implicit`` does not scale the regularization by a user's number of
#: interactions, so larger data may want a larger value. BPR and LMF use ``implicit``'s defaults,
#: which did best among the few settings tried.
DEFAULTS: dict[str, dict[str, float | int]] = {
    "als": {"iterations": 15, "regularization": 20.0, "alpha": 5.0},
    "bpr": {"iterations": 100, "regularization": 0.01, "learning_rate": 0.01},
    "lmf": {"iterations": 30, "regularization": 0.6, "learning_rate": 1.0, "neg_prop": 30},
}


def fit_implicit(
    ratings: Ratings | pd.DataFrame | str | os.PathLike,
    *,
    model: Family = "als",
    n_factors: int = 64,
    iterations: int | None = None,
    regularization: float | None = None,
    alpha: float | None = None,
    learning_rate: float | None = None,
    threshold: float | None = None,
    weighting: Weighting = "binary",
    seed: int = 0,
    threads: int = 1,
    progress: bool | None = None,
    **read_kwargs,
) -> FittedModel:
    """Train an implicit-feedback model with ``implicit`` and return it as a FittedModel.

    Args:
        ratings: interactions: Ratings, a DataFrame (without a rating column every row weighs 1)
            or a file path; ``read_kwargs`` (``user_col=``, ``layout=``...) go to
            :func:`~collabemb.data.read_ratings`.
        model: ``"als"``, ``"bpr"`` or ``"lmf"``.
        n_factors: latent factors k (biases come on top for BPR and LMF).
        iterations: ALS sweeps / BPR and LMF epochs; default per family (:data:`DEFAULTS`).
        regularization: L2 strength as ``implicit`` defines it; default per family.
        alpha: ALS only: confidence per unit weight, ``c = alpha * w``.
        learning_rate: BPR and LMF only.
        threshold: drop interactions whose value is below this (module docstring).
        weighting: ``"binary"``, ``"raw"`` or ``"log"`` (module docstring).
        seed: ``implicit``'s ``random_state``. ALS gives identical factors for the same seed
            whatever ``threads``; BPR and LMF only with ``threads=1`` (they update factors from
            several threads without locks).
        threads: ``implicit``'s ``num_threads`` (0 means all cores). BLAS runs single-threaded.
        progress: ``implicit``'s progress bar; default on only when stderr is a terminal.

    Returns:
        A fitted model with ``y_range=None``; its ``identity`` names the family and what a
        fold-in needs, ``history.params`` records the hyperparameters, counts, ``fit_seconds`` and
        the data facts and library versions of the model card (:mod:`collabemb.model_card`).
    """
    if model not in FAMILIES:
        raise ValueError(f"model must be one of {', '.join(map(repr, FAMILIES))}, got {model!r}")
    hyper = _hyperparameters(model, iterations, regularization, alpha, learning_rate)
    if n_factors < 1:
        raise ValueError(f"n_factors must be >= 1, got {n_factors}")
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0: all cores), got {threads}")
    train = read_interactions(ratings, read_kwargs)
    users, items, matrix = _interactions(train, threshold, weighting)

    algorithm = _algorithm_class(model)  # imported first: threadpool_limits only reaches loaded BLAS libraries
    t0 = time.perf_counter()
    with threadpool_limits(1, "blas"):
        algo = _make_algorithm(algorithm, n_factors, hyper, seed, threads)
        algo.fit(matrix, show_progress=sys.stderr.isatty() if progress is None else progress)
    seconds = time.perf_counter() - t0

    user_f, user_b, item_f, item_b = _split_factors(model, algo.user_factors, algo.item_factors, n_factors)
    module = _model_from_tables(users, items, user_f, user_b, item_f, item_b)
    identity = ModelIdentity(
        family=model,
        row0="mean",
        threshold=_plain(threshold),
        weighting=weighting,
        regularization=hyper["regularization"] if model == "als" else None,
        alpha=hyper.get("alpha"),
    )
    counts = {"n_train": len(train), "n_interactions": int(matrix.nnz), "n_dropped": len(train) - int(matrix.nnz)}
    params = {"n_factors": n_factors, **hyper, "seed": seed, "threads": threads, **counts, **data_facts(train, users, items)}
    facts = {"fit_seconds": seconds, "implicit_version": version("implicit"), "versions": library_versions(model)}
    history = FitHistory(params={**params, **facts})
    return FittedModel(module, identity, history, SeenItems.from_csr(matrix))


def fit_popularity(ratings: Ratings | pd.DataFrame | str | os.PathLike, *, threshold: float | None = None, **read_kwargs) -> FittedModel:
    """The popularity baseline: every user gets the items with the most interactions.

    Returned as a FittedModel (``y_range=None``, one factor, all factors zero) whose item
    bias is the number of kept training interactions of the item (``threshold`` as in
    :func:`fit_implicit`), so every item's score is its count and the ranking is the same for
    every user. Row 0 of the item table holds the mean count.
    """
    train = read_interactions(ratings, read_kwargs)
    users, items, matrix = _interactions(train, threshold, "binary")
    counts = np.bincount(matrix.indices, minlength=len(items)).astype(np.float32)
    zeros_u = np.zeros((len(users), 1), np.float32)
    zeros_i = np.zeros((len(items), 1), np.float32)
    module = _model_from_tables(users, items, zeros_u, np.zeros(len(users), np.float32), zeros_i, counts)
    identity = ModelIdentity(family=POPULARITY, row0="mean_count", threshold=_plain(threshold))
    counts = {"n_train": len(train), "n_interactions": int(matrix.nnz), "n_dropped": len(train) - int(matrix.nnz)}
    history = FitHistory(params={**counts, **data_facts(train, users, items), "versions": library_versions(POPULARITY)})
    return FittedModel(module, identity, history, SeenItems.from_csr(matrix))


# --- building blocks -----------------------------------------------------------


def _hyperparameters(family: str, iterations, regularization, alpha, learning_rate) -> dict:
    given = {"iterations": iterations, "regularization": regularization, "alpha": alpha, "learning_rate": learning_rate}
    hyper = dict(DEFAULTS[family])
    for name, value in given.items():
        if value is None:
            continue
        if name not in hyper:
            raise ValueError(f"{name} does not apply to model={family!r} (it takes {', '.join(k for k in hyper if k in given)})")
        hyper[name] = value
    if int(hyper["iterations"]) < 1 or hyper["iterations"] != int(hyper["iterations"]):
        raise ValueError(f"iterations must be an integer >= 1, got {hyper['iterations']}")
    if not float(hyper["regularization"]) >= 0:
        raise ValueError(f"regularization must be >= 0, got {hyper['regularization']}")
    if "alpha" in hyper and not float(hyper["alpha"]) > 0:
        raise ValueError(f"alpha must be > 0, got {hyper['alpha']}")
    if "learning_rate" in hyper and not float(hyper["learning_rate"]) > 0:
        raise ValueError(f"learning_rate must be > 0, got {hyper['learning_rate']}")
    return {k: (int(v) if k in ("iterations", "neg_prop") else float(v)) for k, v in hyper.items()}


def read_interactions(source, read_kwargs: dict) -> Ratings:
    """read_ratings, except that a DataFrame without the rating column weighs every row 1."""
    if isinstance(source, pd.DataFrame):
        rating_col = read_kwargs.get("rating_col", "rating")
        if rating_col not in source.columns and read_kwargs.get("layout") is None:
            source = source.assign(**{rating_col: np.float32(1.0)})
    return read_ratings(source, **read_kwargs)


def kept_mask(values: np.ndarray, threshold) -> np.ndarray:
    return np.ones(len(values), dtype=bool) if threshold is None else values >= float(threshold)


def interaction_weights(values: np.ndarray, weighting: str) -> np.ndarray:
    """(n,) float64 weights ``w`` of kept interaction values (module docstring)."""
    if weighting == "binary":
        return np.ones(len(values))
    if weighting not in ("raw", "log"):
        raise ValueError(f"weighting must be one of {', '.join(map(repr, WEIGHTINGS))}, got {weighting!r}")
    bad = values <= 0
    if bad.any():
        raise ValueError(
            f"weighting={weighting!r} needs positive values; {int(bad.sum())} kept interaction(s) are <= 0 "
            f"(e.g. {values[bad][0]:g}); drop them with threshold= or use weighting='binary'"
        )
    return values if weighting == "raw" else np.log1p(values)


def _interactions(train: Ratings, threshold, weighting: str) -> tuple[IdRegistry, IdRegistry, sp.csr_matrix]:
    """Registries of the kept rows and the (n_users, n_items) float32 CSR of weights ``w``.

    CSR row ``r`` is registry row ``r + 1`` (the same for columns and items).
    """
    frame = train.frame
    values = frame["rating"].to_numpy(np.float64)
    keep = kept_mask(values, threshold)
    if not keep.any():
        raise ValueError(f"no interaction is >= threshold {threshold} ({len(frame)} rows, largest value {values.max():g})")
    kept = train.subset(keep) if not keep.all() else train
    weights = interaction_weights(values[keep], weighting).astype(np.float32)
    data = encode(Ratings(kept.frame.assign(rating=weights), train.source))
    return data.users, data.items, data.tocsr()


def _algorithm_class(family: str) -> type:
    """``implicit``'s CPU class for a family (the GPU build is not used)."""
    with warnings.catch_warnings():
        # implicit imports tqdm.auto, which warns in a notebook without ipywidgets; its progress
        # bar is off unless asked for, so the warning says nothing the user can act on
        warnings.filterwarnings("ignore", message="IProgress not found")
        return _import_class(family)


def _import_class(family: str) -> type:
    if family == "als":
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares
    if family == "bpr":
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking
    from implicit.cpu.lmf import LogisticMatrixFactorization

    return LogisticMatrixFactorization


def _make_algorithm(cls: type, n_factors: int, hyper: dict, seed: int, threads: int):
    """An unfitted ``implicit`` model; construct it under single-threaded BLAS (its constructor
    warns otherwise). ``hyper`` holds exactly the family's constructor arguments (:data:`DEFAULTS`)."""
    return cls(factors=n_factors, **hyper, num_threads=threads, random_state=seed)


def _split_factors(family: str, user: np.ndarray, item: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """(user factors, user bias, item factors, item bias) from ``implicit``'s matrices.

    Checks that the constant columns hold ones, so a change of layout in a future ``implicit``
    fails here instead of producing wrong scores.
    """
    user = np.asarray(user, dtype=np.float32)
    item = np.asarray(item, dtype=np.float32)
    zeros_u, zeros_i = np.zeros(len(user), np.float32), np.zeros(len(item), np.float32)
    if family == "als":
        _expect_width(user, item, k)
        return user, zeros_u, item, zeros_i
    if family == "bpr":  # user [p | 1], item [q | b_i]
        _expect_width(user, item, k + 1)
        _expect_ones(user[:, k], "BPR user factors, last column")
        return user[:, :k], zeros_u, item[:, :k], item[:, k].copy()
    # LMF: user [p | 1 | b_u], item [q | b_i | 1]
    _expect_width(user, item, k + 2)
    _expect_ones(user[:, k], "LMF user factors, column k")
    _expect_ones(item[:, k + 1], "LMF item factors, last column")
    return user[:, :k], user[:, k + 1].copy(), item[:, :k], item[:, k].copy()


def _expect_width(user: np.ndarray, item: np.ndarray, width: int) -> None:
    if user.shape[1] != width or item.shape[1] != width:
        raise RuntimeError(
            f"implicit returned factors of width {user.shape[1]}/{item.shape[1]}, expected {width}; unsupported implicit version?"
        )


def _expect_ones(column: np.ndarray, what: str) -> None:
    if len(column) and not np.all(column == 1.0):
        raise RuntimeError(f"{what} should hold ones (implicit's bias layout); unsupported implicit version?")


def _model_from_tables(
    users: IdRegistry, items: IdRegistry, user_f: np.ndarray, user_b: np.ndarray, item_f: np.ndarray, item_b: np.ndarray
) -> EmbeddingDotBias:
    """An EmbeddingDotBias (identity link) with rows 1..n from the tables and row 0 their mean."""
    model = EmbeddingDotBias(users, items, n_factors=user_f.shape[1], y_range=None)
    for emb, table in (
        (model.u_weight, user_f),
        (model.i_weight, item_f),
        (model.u_bias, user_b[:, None]),
        (model.i_bias, item_b[:, None]),
    ):
        # a new Parameter over the numpy buffer: torch's parallel copy_ costs ~16 ms per table on
        # a busy 2-core machine (OpenMP waits), more than the rest of the wrapper together
        emb.weight = torch.nn.Parameter(torch.from_numpy(_with_mean_row(table)))
    model.eval()
    return model


def _with_mean_row(table: np.ndarray) -> np.ndarray:
    table = np.asarray(table, dtype=np.float32)
    mean = table.mean(axis=0, dtype=np.float64, keepdims=True).astype(np.float32)
    return np.concatenate([mean, table])


def _plain(value):
    """A JSON-ready number (numpy scalars and ints as Python float) or None."""
    return None if value is None else float(value)
