"""Ranking on MovieLens 100K: popularity, ALS, BPR, LMF and EmbeddingDotBias, and collabemb's ALS
against ``implicit``'s ALS called directly with the same settings.

Protocol: per user the last 10 ratings by timestamp are held out (``split_leave_last(n=10)``);
implicit models train on the remaining ratings >= 4 (positives); held-out ratings >= 4 are the
relevant items; each user's training items (every rating, not only positives) are left out of
their top 10. EmbeddingDotBias is trained on all training ratings and ranks by predicted rating.
Coverage is relative to the items of the training set.

The direct ``implicit`` run builds its own CSR from the same training frame (rows and columns in
sorted raw-ID order, as a user of the library would with ``np.unique``), fits
``implicit.cpu.als.AlternatingLeastSquares`` with the same hyperparameters, seed and thread count
under ``threadpool_limits(1, "blas")``, and recommends with ``implicit``'s own
``recommend(filter_already_liked_items=True)``; the lists are scored with the same
``collabemb.metrics`` functions. A test user without training positives has no row in
``implicit``'s model and gets an empty list; collabemb answers them with row 0 (the mean user).

Fit times are medians over ``--repeats`` runs, the collabemb and direct ALS runs interleaved.
"collabemb" times ``fit_implicit`` from the Ratings to the fitted EmbeddingDotBias; "direct,
end to end" times thresholding, ``np.unique``, building the CSR and ``fit``; "direct, fit()"
times ``fit`` alone.

    flock /tmp/collabemb-bench.lock python benchmarks/ranking.py [--data ../shared/data/ml-100k] [--repeats 9]

Prints the tables and appends them to benchmarks/RESULTS.md with date, machine and command.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

import collabemb as ce
from collabemb.implicit_mf import DEFAULTS, fit_implicit, fit_popularity
from collabemb.metrics import evaluate, ranking_metrics

from machine import append_results

HERE = Path(__file__).resolve().parent
K = 10
THRESHOLD = 4.0
HOLDOUT = 10
FACTORS = 64
SEED = 0
THREADS = 1


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def direct_als(train: ce.Ratings) -> tuple[object, np.ndarray, np.ndarray, float]:
    """implicit's ALS as its own user would call it. Returns (model, user IDs, item IDs, fit() seconds)."""
    from implicit.cpu.als import AlternatingLeastSquares

    frame = train.frame
    positive = frame[frame["rating"] >= THRESHOLD]
    users, u = np.unique(positive["user"].to_numpy(), return_inverse=True)
    items, i = np.unique(positive["item"].to_numpy(), return_inverse=True)
    user_items = sp.csr_matrix((np.ones(len(positive), np.float32), (u, i)), shape=(len(users), len(items)))
    hyper = DEFAULTS["als"]
    with threadpool_limits(1, "blas"):
        algo = AlternatingLeastSquares(
            factors=FACTORS,
            regularization=hyper["regularization"],
            alpha=hyper["alpha"],
            iterations=hyper["iterations"],
            num_threads=THREADS,
            random_state=SEED,
        )
        t0 = time.perf_counter()
        algo.fit(user_items, show_progress=False)
        fit_seconds = time.perf_counter() - t0
    return algo, users, items, fit_seconds


def direct_metrics(algo, users: np.ndarray, items: np.ndarray, train: ce.Ratings, test: ce.Ratings) -> dict[str, float]:
    """Ranking metrics of implicit's own recommend() lists, scored by collabemb.metrics."""
    t, f = test.frame, train.frame
    test_users = np.unique(t["user"].to_numpy())
    rows = np.searchsorted(users, test_users)
    known = (rows < len(users)) & (users[np.minimum(rows, len(users) - 1)] == test_users)
    # every training rating is "already liked" for filtering, in implicit's index space
    fu = np.searchsorted(users, f["user"].to_numpy())
    fi = np.searchsorted(items, f["item"].to_numpy())
    ok = (fu < len(users)) & (fi < len(items))
    ok[ok] &= (users[fu[ok]] == f["user"].to_numpy()[ok]) & (items[fi[ok]] == f["item"].to_numpy()[ok])
    seen = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (fu[ok], fi[ok])), shape=(len(users), len(items)))
    recommended = np.full((len(test_users), K), -1, dtype=np.int64)
    with threadpool_limits(1, "blas"):
        ids, _ = algo.recommend(rows[known], seen[rows[known]], N=K, filter_already_liked_items=True)
    recommended[known] = ids
    # relevance in implicit's item space; held-out items it has no column for can never be hit
    rel = t[t["rating"] >= THRESHOLD]
    col = np.searchsorted(items, rel["item"].to_numpy())
    inside = (col < len(items)) & (items[np.minimum(col, len(items) - 1)] == rel["item"].to_numpy())
    col = np.where(inside, col, len(items) + np.unique(rel["item"].to_numpy(), return_inverse=True)[1])
    relevant = sp.csr_matrix(
        (np.ones(len(rel)), (np.searchsorted(test_users, rel["user"].to_numpy()), col)), shape=(len(test_users), int(col.max()) + 1)
    )
    return ranking_metrics(recommended, relevant, n_items=f["item"].nunique())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "ml-100k"))
    parser.add_argument("--repeats", type=int, default=9, help="fits per model for the timing medians (ALS pair)")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args()

    ratings = ce.read_ratings(Path(args.data) / "u.data", layout="ml-100k")
    train, test = ce.split_leave_last(ratings, HOLDOUT)
    n_pos = int((train.frame["rating"] >= THRESHOLD).sum())
    print(f"ml-100k: {len(train)} training ratings ({n_pos} >= {THRESHOLD:g}), {len(test)} held out; k={K}", flush=True)

    # warm-up: imports, first-call allocations
    fit_implicit(train, model="als", threshold=THRESHOLD, iterations=1, threads=THREADS)
    direct_als(train)

    als_times, direct_times, direct_fit_times = [], [], []
    for r in range(args.repeats):
        first, second = ("collabemb", "direct") if r % 2 == 0 else ("direct", "collabemb")
        for which in (first, second):
            if which == "collabemb":
                als, sec = timed(fit_implicit, train, model="als", n_factors=FACTORS, threshold=THRESHOLD, seed=SEED, threads=THREADS)
                als_times.append(sec)
            else:
                (algo, users, items, fit_sec), sec = timed(direct_als, train)
                direct_times.append(sec)
                direct_fit_times.append(fit_sec)
    rows = []
    small = max(3, args.repeats // 3)

    def record(name: str, model, seconds: list[float]) -> dict:
        res = evaluate(model, test, train=train, k=K, threshold=THRESHOLD)
        rows.append((name, res, statistics.median(seconds), len(seconds)))
        print(
            f"{name}: NDCG@{K} {res[f'ndcg@{K}']:.4f}, recall@{K} {res[f'recall@{K}']:.4f}, "
            f"coverage {res[f'coverage@{K}']:.4f}, fit {statistics.median(seconds):.3f} s",
            flush=True,
        )
        return res

    pop_runs = [timed(fit_popularity, train, threshold=THRESHOLD) for _ in range(small)]
    record("popularity", pop_runs[-1][0], [s for _, s in pop_runs])
    als_res = record("ALS (collabemb.fit_implicit)", als, als_times)
    direct_res = direct_metrics(algo, users, items, train, test)
    rows.append(("ALS (implicit, direct)", direct_res, statistics.median(direct_times), len(direct_times)))
    for family in ("bpr", "lmf"):
        runs = [
            timed(fit_implicit, train, model=family, n_factors=FACTORS, threshold=THRESHOLD, seed=SEED, threads=THREADS)
            for _ in range(small)
        ]
        record(f"{family.upper()} (collabemb.fit_implicit)", runs[-1][0], [s for _, s in runs])
    edb_runs = [timed(ce.fit, train, seed=SEED, threads=THREADS, progress=False) for _ in range(3)]
    edb_res = record("EmbeddingDotBias (collabemb.fit, by predicted rating)", edb_runs[-1][0], [s for _, s in edb_runs])

    same_factors = bool(
        np.array_equal(als.module.u_weight.weight.detach().numpy()[1:], algo.user_factors)
        and np.array_equal(als.module.i_weight.weight.detach().numpy()[1:], algo.item_factors)
    )
    shared = als_res["users"] - (len(set(test.frame.loc[test.frame["rating"] >= THRESHOLD, "user"]) - set(users)))
    ndcg_gap = als_res[f"ndcg@{K}"] - direct_res[f"ndcg@{K}"]
    ratio_e2e = statistics.median(als_times) / statistics.median(direct_times)
    ratio_fit = statistics.median(als_times) / statistics.median(direct_fit_times)
    pop_ndcg = rows[0][1][f"ndcg@{K}"]
    bar = abs(ndcg_gap) <= 0.002 and ratio_e2e <= 1.1 and als_res[f"ndcg@{K}"] > pop_ndcg

    hyper = DEFAULTS["als"]
    settings = (
        f"Protocol: per user the last {HOLDOUT} ratings by timestamp held out; positives and relevant items are ratings >= "
        f"{THRESHOLD:g}; each user's training items excluded; k = {K}; {als_res['users']} test users with a relevant item. "
        f"Implicit models: {FACTORS} factors, seed {SEED}, {THREADS} thread, BLAS single-threaded; ALS regularization "
        f"{hyper['regularization']:g}, alpha {hyper['alpha']:g}, {hyper['iterations']} iterations (collabemb's defaults); "
        f"BPR and LMF implicit's defaults. EmbeddingDotBias: collabemb.fit defaults on all training ratings."
    )
    lines = [
        settings,
        "",
        f"| model | NDCG@{K} | recall@{K} | coverage@{K} | precision@{K} | MAP@{K} | fit s (median) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, res, sec, n in rows:
        lines.append(
            f"| {name} | {res[f'ndcg@{K}']:.4f} | {res[f'recall@{K}']:.4f} | {res[f'coverage@{K}']:.4f} | "
            f"{res[f'precision@{K}']:.4f} | {res[f'map@{K}']:.4f} | {sec:.3f} (n={n}) |"
        )
    lines += [
        "",
        f"collabemb's ALS against implicit's ALS called directly: factors bit-identical: {'yes' if same_factors else 'NO'}; "
        f"NDCG@{K} {als_res[f'ndcg@{K}']:.4f} vs {direct_res[f'ndcg@{K}']:.4f} (difference {ndcg_gap:+.4f}; "
        f"{als_res['users'] - shared} test user(s) without training positives get row 0 from collabemb and no list from implicit).",
        f"Fit time, medians of {args.repeats} interleaved runs: collabemb {statistics.median(als_times):.3f} s; implicit direct end to end "
        f"{statistics.median(direct_times):.3f} s (ratio {ratio_e2e:.3f}); implicit fit() alone {statistics.median(direct_fit_times):.3f} s "
        f"(ratio {ratio_fit:.3f}). All runs (s): collabemb {', '.join(f'{s:.3f}' for s in als_times)}; "
        f"direct {', '.join(f'{s:.3f}' for s in direct_times)}.",
        f"Bar (same NDCG within 0.002, at most 1.1x the direct fit time end to end, beats popularity "
        f"{als_res[f'ndcg@{K}']:.4f} > {pop_ndcg:.4f}): {'met' if bar else 'NOT met'}. "
        f"EmbeddingDotBias, trained for RMSE, ranks worst (NDCG@{K} {edb_res[f'ndcg@{K}']:.4f}).",
    ]
    body = "\n".join(lines)
    print()
    print(body)
    if not args.no_write:
        command = "python benchmarks/ranking.py " + " ".join(sys.argv[1:])
        append_results(
            HERE / "RESULTS.md",
            title="Ranking on MovieLens 100K, leave-last-10 (benchmarks/ranking.py)",
            command=command.strip(),
            body=body,
        )


if __name__ == "__main__":
    main()
