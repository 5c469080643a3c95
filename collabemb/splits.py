"""Train/test splits of :class:`~collabemb.data.Ratings`.

Five kinds: a seeded random fraction, per-user leave-last-n by timestamp, per-user random
holdout of n, seeded random folds for cross-validation, and predefined train/test files (such as
the MovieLens 100K folds u1..u5).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterator

import numpy as np
import pandas as pd

from collabemb.data import Ratings, read_ratings


def split_random(ratings: Ratings, test_frac: float = 0.2, *, seed: int = 0) -> tuple[Ratings, Ratings]:
    """Random (train, test) split with ``round(test_frac * n)`` test rows, reproducible by seed."""
    if not 0.0 < test_frac < 1.0:
        raise ValueError(f"test_frac must be in (0, 1), got {test_frac}")
    n = len(ratings)
    rng = np.random.default_rng(seed)
    test = np.zeros(n, dtype=bool)
    test[rng.permutation(n)[: round(test_frac * n)]] = True
    return ratings.subset(~test), ratings.subset(test)


def split_leave_last(ratings: Ratings, n: int = 1) -> tuple[Ratings, Ratings]:
    """Per user, the ``n`` latest ratings by timestamp go to test; the rest to train.

    Ties in timestamp are broken by input order (later row = later). Users with ``n`` or fewer
    ratings stay entirely in train, so every test user has training history.
    """
    if not ratings.has_timestamp:
        raise ValueError(f"{ratings.source}: leave-last-n needs a timestamp column")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    frame = ratings.frame
    order = np.lexsort((np.arange(len(frame)), frame["timestamp"].to_numpy()))
    # group by integer codes: grouping the ID column itself would make pandas 3 convert str IDs
    users = pd.Series(pd.factorize(frame["user"].to_numpy())[0][order])
    from_end = users.groupby(users, sort=False).cumcount(ascending=False).to_numpy()
    count = users.groupby(users, sort=False).transform("size").to_numpy()
    test_sorted = (from_end < n) & (count > n)
    test = np.zeros(len(frame), dtype=bool)
    test[order] = test_sorted
    return ratings.subset(~test), ratings.subset(test)


def split_random_per_user(ratings: Ratings, n: int = 1, *, seed: int = 0) -> tuple[Ratings, Ratings]:
    """Per user, ``n`` ratings drawn at random (seeded) go to test; the rest to train.

    The random counterpart of :func:`split_leave_last`, for data without timestamps: users with
    ``n`` or fewer ratings stay entirely in train, so every test user has training history.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ratings))
    users = pd.Series(pd.factorize(ratings.frame["user"].to_numpy())[0][order])
    rank = users.groupby(users, sort=False).cumcount().to_numpy()
    count = users.groupby(users, sort=False).transform("size").to_numpy()
    test = np.zeros(len(ratings), dtype=bool)
    test[order] = (rank < n) & (count > n)
    return ratings.subset(~test), ratings.subset(test)


def split_folds(ratings: Ratings, folds: int = 5, *, seed: int = 0) -> Iterator[tuple[Ratings, Ratings]]:
    """``folds`` random folds for cross-validation (Surprise's ``KFold``), reproducible by seed.

    The ratings are shuffled once and cut into ``folds`` test parts whose sizes differ by at most
    one; every rating is in exactly one test part. Yields ``folds`` (train, test) pairs, fold 1
    first, train being everything outside that test part (both in input order). Each pair is made
    when it is asked for, so the folds are never all held at once. The arguments are checked here,
    before the first pair.
    """
    n = len(ratings)
    if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) or not 2 <= folds <= n:
        raise ValueError(f"folds must be an integer from 2 to the number of ratings ({n}), got {folds!r}")
    fold_of = np.empty(n, dtype=np.int64)
    for fold, rows in enumerate(np.array_split(np.random.default_rng(seed).permutation(n), int(folds))):
        fold_of[rows] = fold
    return _fold_pairs(ratings, fold_of, int(folds))


def _fold_pairs(ratings: Ratings, fold_of: np.ndarray, folds: int) -> Iterator[tuple[Ratings, Ratings]]:
    for fold in range(folds):
        test = fold_of == fold
        yield ratings.subset(~test), ratings.subset(test)


def read_split(train_path: str | os.PathLike, test_path: str | os.PathLike, **read_kwargs) -> tuple[Ratings, Ratings]:
    """Predefined (train, test) files, each read with :func:`~collabemb.data.read_ratings`."""
    return read_ratings(train_path, **read_kwargs), read_ratings(test_path, **read_kwargs)
