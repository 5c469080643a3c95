"""The history-aware model's speed: ratings/s per epoch on the generated 25M set, and a new user's
vector from its history on ml-100k.

    python benchmarks/svdpp_speed.py [--epochs 3] [--threads 2] [--ml100k ../shared/data/ml-100k]

Trains ``model="dot"`` and ``model="svdpp"`` (64 factors, the given threads) on the generated
MovieLens-shaped 25M set (drawn by benchmarks/speed.py's generator, cached under
~/.cache/collabemb/bench-25m), each in the same run; then, on ml-100k u1, times the history vector
of a user from its rated items (``FittedModel.history_vector``) and the whole svdpp fold-in
(``fold_in_users``: the history vector refined by the Newton solve) for users of u1.test, folded in
from their test ratings. Prints and appends to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from speed import SHAPE_25M, _prepare_25m

import collabemb as ce

from machine import append_results

HERE = Path(__file__).resolve().parent


def epoch_speed(ratings: ce.Ratings, model: str, epochs: int, threads: int) -> dict:
    t0 = time.perf_counter()
    fitted = ce.fit(ratings, model=model, epochs=epochs, threads=threads, n_factors=64, progress=False)
    total = time.perf_counter() - t0
    seconds = fitted.history.train_seconds
    return {"epoch_s": seconds, "mps": [len(ratings) / s / 1e6 for s in seconds], "fit_s": total}


def new_user_ms(data: Path, threads: int) -> dict:
    train, test = ce.read_split(data / "u1.base", data / "u1.test", layout="ml-100k")
    model = ce.fit(train, model="svdpp", threads=threads, progress=False)
    frame = test.frame
    users = frame["user"].unique()[:200]
    ce.fold_in_users(model, frame[frame["user"] == users[0]][["item", "rating"]])  # numba's first call
    history, whole = [], []
    for u in users:
        mine = frame[frame["user"] == u][["item", "rating"]]
        t0 = time.perf_counter()
        model.history_vector(model.items.encode(mine["item"]))
        history.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        ce.fold_in_users(model, pd.DataFrame(mine))
        whole.append((time.perf_counter() - t0) * 1e3)
    sizes = [int((frame["user"] == u).sum()) for u in users]
    return {"history_ms": history, "fold_in_ms": whole, "ratings": sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ml100k", default=str(HERE.parent.parent / "shared" / "data" / "ml-100k"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    _, pq_path = _prepare_25m(Path.home() / ".cache" / "collabemb" / "bench-25m", dict(SHAPE_25M), False)
    frame = pd.read_parquet(pq_path)
    ratings = ce.read_ratings(frame[["user", "item", "rating"]])
    del frame
    tiny = ce.read_ratings(pd.DataFrame({"user": [1, 1, 2], "item": [1, 2, 1], "rating": [4.0, 3.0, 5.0]}))
    for model in ("dot", "svdpp"):  # numba's compiled kernels loaded before anything is timed
        ce.fit(tiny, model=model, epochs=1, threads=args.threads, n_factors=64, progress=False)
    speeds = {}
    for model in ("dot", "svdpp"):
        speeds[model] = epoch_speed(ratings, model, args.epochs, args.threads)
        print(f"{model}: epochs {[f'{s:.1f} s' for s in speeds[model]['epoch_s']]}, M ratings/s {speeds[model]['mps']}", flush=True)
    del ratings
    users = new_user_ms(Path(args.ml100k), args.threads)
    med = {k: statistics.median(users[k]) for k in ("history_ms", "fold_in_ms")}
    p99 = {k: float(np.percentile(users[k], 99)) for k in ("history_ms", "fold_in_ms")}
    lines = [
        "| model | epochs | median epoch s | median M ratings/s per epoch | fit s (incl. setup) |",
        "| --- | ---: | ---: | ---: | ---: |",
        *[
            f"| {m} | {args.epochs} | {statistics.median(r['epoch_s']):.1f} | {statistics.median(r['mps']):.2f} | {r['fit_s']:.1f} |"
            for m, r in speeds.items()
        ],
        "",
        f"New users of u1.test folded in from their test ratings ({len(users['ratings'])} users, median "
        f"{statistics.median(users['ratings']):.0f} ratings): history vector median {med['history_ms']:.3f} ms "
        f"(p99 {p99['history_ms']:.3f}); whole svdpp fold-in (history + Newton refinement) median {med['fold_in_ms']:.2f} ms "
        f"(p99 {p99['fold_in_ms']:.2f}).",
    ]
    mps = statistics.median(speeds["svdpp"]["mps"])
    bar = [
        f"svdpp >= 5 M ratings/s per epoch: {'pass' if mps >= 5 else 'FAIL'} ({mps:.2f})",
        f"a new user's vector from history < 1 ms: {'pass' if med['history_ms'] < 1 else 'FAIL'}",
    ]
    body = "\n".join(lines) + "\n\nBar: " + "; ".join(bar)
    print(body)
    if not args.no_write:
        append_results(
            HERE / "RESULTS.md",
            title="svdpp speed (benchmarks/svdpp_speed.py)",
            command="python benchmarks/svdpp_speed.py " + " ".join(sys.argv[1:]),
            body=f"25M generated MovieLens-shaped set, 64 factors, {args.threads} threads.\n\n{body}",
        )


if __name__ == "__main__":
    main()
