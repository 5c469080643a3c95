"""New users from a few ratings: the svdpp history vector, the Newton fold-in, and retraining.

    python benchmarks/cold_users.py [--data ../shared/data/ml-100k] [--folds 1 2 3 4 5] [--frac 0.1]

On each ml-100k fold: a seeded 10% of the users are held out of training (all their u*.base
ratings removed); the dot model and the svdpp model (defaults, 2 threads) are fitted on the rest.
For each held-out user, its first n (5, 10, 20; by timestamp) training ratings are what we know;
its test ratings are scored:

* dot, fold-in: ``fold_in_users`` (the Newton solve, the item table fixed);
* svdpp, history only: the user's vector is the history vector of the n items it rated
  (``history_vector``), its bias the unknown user's (row 0): no solve at all;
* svdpp, fold-in: ``fold_in_users`` (the history vector refined by the Newton solve);
* retraining: each model fitted again with the held-out users' n ratings added (the same seed).

Prints the table (mean over folds) and appends it to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from accuracy import rmse

import collabemb as ce

from machine import append_results

HERE = Path(__file__).resolve().parent
SIZES = (5, 10, 20)


def history_only(model: ce.FittedModel, known: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """Predictions for each test row from the user's history vector and the unknown user's bias."""
    lo, hi = model.y_range
    item_w, item_b = model.tables("item")
    user_b = model.tables("user")[1][0]
    out = np.empty(len(test))
    for user, rows in test.groupby("user").indices.items():
        mine = known[known["user"] == user]
        v = model.history_vector(model.items.encode(mine["item"]))
        items = model.items.encode(test["item"].to_numpy()[rows])
        z = item_w[items] @ v + item_b[items] + user_b
        out[rows] = lo + (hi - lo) / (1 + np.exp(-z))
    return out


def folded(model: ce.FittedModel, known: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    fold = ce.fold_in_users(model, known[["user", "item", "rating"]])
    position = {u: j for j, u in enumerate(fold.ids.tolist())}
    item_w, item_b = model.tables("item")
    items = model.items.encode(test["item"])
    rows = np.array([position[u] for u in test["user"].tolist()])
    z = (fold.vectors[rows] * item_w[items]).sum(1) + fold.biases[rows] + item_b[items]
    lo, hi = model.y_range
    return lo + (hi - lo) / (1 + np.exp(-z))


def one_fold(train: ce.Ratings, test: ce.Ratings, frac: float, seed: int) -> dict[tuple[str, int], float]:
    frame, tests = train.frame, test.frame
    users = np.sort(frame["user"].unique())
    held = set(np.random.default_rng(seed).choice(users, int(len(users) * frac), replace=False).tolist())
    kept = frame[~frame["user"].isin(held)]
    held_train = frame[frame["user"].isin(held)].sort_values(["user", "timestamp", "item"], kind="stable")
    held_test = tests[tests["user"].isin(held) & tests["item"].isin(kept["item"].unique())]
    common = {"threads": 2, "progress": False, "seed": 0}
    models = {"dot": ce.fit(kept, **common), "svdpp": ce.fit(kept, model="svdpp", **common)}
    out = {}
    for n in SIZES:
        known = held_train.groupby("user").head(n)
        scored = held_test[held_test["user"].isin(known["user"].unique())]
        truth = scored["rating"].to_numpy()
        out[("dot, fold-in", n)] = rmse(folded(models["dot"], known, scored), truth)
        out[("svdpp, history only", n)] = rmse(history_only(models["svdpp"], known, scored), truth)
        out[("svdpp, fold-in", n)] = rmse(folded(models["svdpp"], known, scored), truth)
        for name, model in (("dot", "dot"), ("svdpp", "svdpp")):
            again = ce.fit(pd.concat([kept, known]), model=model, **common)
            out[(f"{name}, retrained", n)] = ce.rmse(again, scored)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "ml-100k"))
    parser.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--frac", type=float, default=0.1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    data = Path(args.data)
    results = []
    for f in args.folds:
        train, test = ce.read_split(data / f"u{f}.base", data / f"u{f}.test", layout="ml-100k")
        results.append(one_fold(train, test, args.frac, seed=f))
        print(f"u{f}: " + ", ".join(f"{k[0]} @{k[1]} {v:.4f}" for k, v in results[-1].items()), flush=True)
    methods = list(dict.fromkeys(k[0] for k in results[0]))
    lines = ["| method | " + " | ".join(f"{n} ratings" for n in SIZES) + " |", "| --- |" + " ---: |" * len(SIZES)]
    for method in methods:
        lines.append(f"| {method} | " + " | ".join(f"{statistics.fmean(r[(method, n)] for r in results):.4f}" for n in SIZES) + " |")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        append_results(
            HERE / "RESULTS.md",
            title="New users from a few ratings (benchmarks/cold_users.py)",
            command="python benchmarks/cold_users.py " + " ".join(sys.argv[1:]),
            body=(
                f"ml-100k folds {args.folds}: {args.frac:.0%} of the users held out of training (seeded per fold); each known "
                "from its first n training ratings by time, scored on its test ratings of items the model knows; test RMSE, "
                f"mean over folds. Defaults, 2 threads.\n\n{table}"
            ),
        )


if __name__ == "__main__":
    main()
