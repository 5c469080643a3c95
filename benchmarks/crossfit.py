"""Leaky vs cross-fitted embedding features for XGBoost and HistGradientBoosting (part of features.py).

On MovieLens 100K fold u1, every learner trained on u1.base and scored on u1.test, for each of
``seeds`` seeds (the medians are reported):

(a) label-encoded user and item IDs (rows of the sorted IDs, as numbers);
(b) *leaky* embedding features: ``EmbeddingFeatures.fit(X, y).transform(X)``, one collabemb model
    fitted on all the rows the booster then learns from, so each row's features have seen its own
    rating;
(c) *cross-fitted* features: ``EmbeddingFeatures.fit_transform(X, y)`` (5 folds: each row's
    features from a model that never saw it); test rows get the full model's features in (b) and (c).

each alone and with the side columns of ``u.user`` / ``u.item`` (age, gender, occupation code,
release year, 19 genre flags). Boosters: XGBoost (``hist``, 400 rounds, lr 0.05, depth 6) and
scikit-learn's HistGradientBoosting (400 rounds, lr 0.05, no early stopping), fixed settings for
every feature set, so the comparison is of the features alone.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

import collabemb as ce

ROUNDS, LEARNING_RATE = 400, 0.05
FEATURE_SETS = ("(a) label-encoded IDs", "(b) leaky embedding features", "(c) cross-fitted embedding features")


def side_columns(data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(users, items)``: u.user's age, gender (0/1), occupation code; u.item's year and genre flags."""
    users = pd.read_csv(data / "u.user", sep="|", header=None, names=["user", "age", "gender", "occupation", "zip"])
    users = users.assign(gender=(users["gender"] == "F").astype(np.int8), occupation=users["occupation"].astype("category").cat.codes)
    genres = pd.read_csv(data / "u.genre", sep="|", header=None, names=["genre", "code"])["genre"].tolist()
    names = ["item", "title", "release", "video", "url", *(f"genre_{g}" for g in genres)]
    items = pd.read_csv(data / "u.item", sep="|", header=None, names=names, encoding="latin-1")
    items["year"] = pd.to_datetime(items["release"], format="%d-%b-%Y", errors="coerce").dt.year.astype("float32")
    return users[["user", "age", "gender", "occupation"]], items[["item", "year", *(f"genre_{g}" for g in genres)]]


def boosters(seed: int, threads: int) -> dict[str, object]:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from xgboost import XGBRegressor

    return {
        "XGBoost": XGBRegressor(
            n_estimators=ROUNDS, learning_rate=LEARNING_RATE, max_depth=6, tree_method="hist", random_state=seed, n_jobs=threads
        ),
        "HistGradientBoosting": HistGradientBoostingRegressor(
            max_iter=ROUNDS, learning_rate=LEARNING_RATE, early_stopping=False, random_state=seed
        ),
    }


def run(train: ce.Ratings, test: ce.Ratings, data: Path, *, seeds: int, threads: int, settings: dict) -> dict:
    """``{(features, side, learner): [test RMSE per seed]}`` plus ``"seconds"``: the cross-fit times."""
    users_side, items_side = side_columns(data)
    x_tr, x_te = train.frame[["user", "item"]], test.frame[["user", "item"]]
    y_tr, y_te = train.frame["rating"].to_numpy(np.float64), test.frame["rating"].to_numpy(np.float64)
    side_tr = x_tr.merge(users_side, on="user", how="left").merge(items_side, on="item", how="left").drop(columns=["user", "item"])
    side_te = x_te.merge(users_side, on="user", how="left").merge(items_side, on="item", how="left").drop(columns=["user", "item"])
    users, items = ce.IdRegistry(x_tr["user"], name="user"), ce.IdRegistry(x_tr["item"], name="item")
    results: dict = {"seconds": []}
    for seed in range(seeds):
        features = ce.EmbeddingFeatures(cv=5, random_state=seed, settings=settings)
        t0 = time.perf_counter()
        crossed_tr = features.fit_transform(x_tr, y_tr)  # also fits the full model (fitted_)
        results["seconds"].append(time.perf_counter() - t0)
        full_tr, emb_te = features.transform(x_tr), features.transform(x_te)
        label_tr = np.column_stack([users.encode(x_tr["user"]), items.encode(x_tr["item"])]).astype(np.float32)
        label_te = np.column_stack([users.encode(x_te["user"]), items.encode(x_te["item"])]).astype(np.float32)
        sets = {FEATURE_SETS[0]: (label_tr, label_te), FEATURE_SETS[1]: (full_tr, emb_te), FEATURE_SETS[2]: (crossed_tr, emb_te)}
        for name, (a, b) in sets.items():
            for side in (False, True):
                fit_x = np.hstack([a, side_tr.to_numpy(np.float32)]) if side else a
                test_x = np.hstack([b, side_te.to_numpy(np.float32)]) if side else b
                for learner, model in boosters(seed, threads).items():
                    pred = model.fit(fit_x, y_tr).predict(test_x)
                    score = float(np.sqrt(np.mean((pred - y_te) ** 2)))
                    results.setdefault((name, side, learner), []).append(score)
                    print(f"  seed {seed} {name:<38} {'+ side' if side else '      '} {learner:<22} RMSE {score:.4f}", flush=True)
    return results


def table(results: dict) -> list[str]:
    lines = ["| features | side columns | learner | median test RMSE | per seed |", "| --- | --- | --- | ---: | --- |"]
    for key, scores in results.items():
        if key == "seconds":
            continue
        name, side, learner = key
        per_seed = ", ".join(f"{s:.4f}" for s in scores)
        lines.append(f"| {name} | {'yes' if side else 'no'} | {learner} | {statistics.median(scores):.4f} | {per_seed} |")
    return lines


def medians(results: dict, learner: str, side: bool) -> dict[str, float]:
    """``{"(a)": median RMSE, "(b)": ..., "(c)": ...}`` of one learner with or without side columns."""
    return {name[:3]: statistics.median(results[(name, side, learner)]) for name in FEATURE_SETS}
