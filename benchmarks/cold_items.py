"""Cold items on MovieLens 100K: unseen items placed from their genres and year vs the fallbacks.

For each seed, 10% of the items are held out (all their ratings), collabemb.fit trains on the rest
(default settings, threads=2, the same seed) and the held-out items' ratings are predicted for
their (known) users by:

* the unknown slot: row 0, the trained average item (what ``predict`` answers for an unseen item);
* the mean item: the mean vector and bias of all known items (``fold_in_items_like``);
* side info: the item placed from its genres and year by a ``SideInfoMap`` learned on the known
  items' u.item metadata (``predict(..., item_features=...)``), rows weighted by their ratings (the
  default), and the same map with every row weighted alike.

    python benchmarks/cold_items.py [--data ../shared/data/ml-100k] [--seeds 0 1 2] [--frac 0.1]

Prints the table and appends it to benchmarks/RESULTS.md with date, machine and command.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import collabemb as ce
from collabemb.side_info import SideInfoMap

from machine import append_results

HERE = Path(__file__).resolve().parent
METHODS = ("unknown slot", "mean item", "side info", "side info, uniform rows")


def rmse(pred, truth) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - np.asarray(truth, np.float64)) ** 2)))


def one_seed(ratings: ce.Ratings, items, seed: int, frac: float, threads: int) -> dict:
    """Hold out ``frac`` of the items, fit on the rest, and score each placement on their ratings."""
    frame = ratings.frame
    ids = np.unique(frame["item"].to_numpy())
    held = np.random.default_rng(seed).choice(ids, round(frac * len(ids)), replace=False)
    out = frame["item"].isin(held).to_numpy()
    train, test = frame[~out], frame[out]
    t0 = time.perf_counter()
    model = ce.fit(train, threads=threads, seed=seed, progress=False)
    fit_s = time.perf_counter() - t0
    model.set_item_metadata(items[["item", "title", "genres", "year"]])
    held_meta = items[items["item"].isin(held)]
    users, truth = test["user"].to_numpy(), test["rating"].to_numpy()

    t0 = time.perf_counter()
    side = SideInfoMap.fit(model)  # the map predict learns: the stored metadata of the known items
    map_s = time.perf_counter() - t0
    placed = model.predict(users, test["item"], item_features=held_meta)
    assert (placed["item_source"] == "side_info").all()
    uniform = ce.fold_in_items(model, features=held_meta, side_info=SideInfoMap.fit(model, weighting="uniform"))
    mean_item = ce.fold_in_items_like(model, {-1: model.items.ids})
    return {
        "seed": seed,
        "items": len(held),
        "ratings": len(test),
        "known RMSE": ce.rmse(model, train),
        "unknown slot": rmse(model.predict(users, test["item"])["prediction"], truth),
        "mean item": rmse(mean_item.predict(model, users), truth),
        "side info": rmse(placed["prediction"], truth),
        "side info, uniform rows": rmse(uniform.predict(model, users, of=uniform_positions(uniform, test)), truth),
        "features": ", ".join(c.name for c in side.encoding.columns),
        "n_features": len(side.encoding.names),
        "ridge": side.ridge,
        "r2": side.r2,
        "fit_s": fit_s,
        "map_s": map_s,
    }


def uniform_positions(fold: ce.FoldIn, test) -> np.ndarray:
    """The position in ``fold.ids`` of each test rating's item."""
    order = {item: j for j, item in enumerate(fold.ids.tolist())}
    return np.array([order[i] for i in test["item"].tolist()], dtype=np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "ml-100k"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--frac", type=float, default=0.1, help="fraction of the items held out (default 0.1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args()
    data = Path(args.data)
    ratings = ce.read_ratings(data / "u.data", layout="ml-100k")
    items = ce.load_movielens(data).items  # u.item + u.genre as the package reads them: title, genres "A|B", year

    rows = []
    for seed in args.seeds:
        row = one_seed(ratings, items, seed, args.frac, args.threads)
        rows.append(row)
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)

    lines = [
        "| seed | held-out items | their ratings | known-pair RMSE (train) | "
        + " | ".join(f"{m} RMSE" for m in METHODS)
        + " | ridge | LOO R^2 |",
        "| ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in METHODS) + " | ---: | ---: |",
    ]
    for r in rows:
        cells = " | ".join(f"{r[m]:.4f}" for m in METHODS)
        lines.append(
            f"| {r['seed']} | {r['items']} | {r['ratings']} | {r['known RMSE']:.4f} | {cells} | {r['ridge']:.3g} | {r['r2']:.3f} |"
        )
    mean = " | ".join(f"**{statistics.fmean(r[m] for r in rows):.4f}**" for m in METHODS)
    lines.append(f"| **mean** | | | {statistics.fmean(r['known RMSE'] for r in rows):.4f} | {mean} | | |")
    table = "\n".join(lines)
    print(table)
    gain = statistics.fmean(r["unknown slot"] - r["side info"] for r in rows)
    note = (
        f"Features: {rows[0]['features']} ({rows[0]['n_features']} feature columns: genres multi-hot, year standardised "
        f"plus a missing indicator; titles left out). Side info lowers the held-out items' RMSE by {gain:.4f} on average "
        f"against the unknown slot. Fit {statistics.median(r['fit_s'] for r in rows):.2f} s, map "
        f"{statistics.median(r['map_s'] for r in rows):.2f} s (medians). LOO R^2: the map's leave-one-out R^2 on the "
        "known items' [vector, bias], in logit units as the training ratings see them."
    )
    print(note)
    if not args.no_write:
        append_results(
            HERE / "RESULTS.md",
            title="Cold items from side information on MovieLens 100K (benchmarks/cold_items.py)",
            command=" ".join(["flock /tmp/collabemb-bench.lock python benchmarks/cold_items.py", *sys.argv[1:]]),
            body=(
                f"{args.frac:.0%} of the items held out per seed (all their ratings); collabemb.fit defaults, "
                f"threads={args.threads}, seed = the split's seed. RMSE on the held-out items' ratings.\n\n{table}\n\n{note}"
            ),
        )


if __name__ == "__main__":
    main()
