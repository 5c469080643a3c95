"""One model on N processes: ``torchrun ... collabemb fit --distributed`` against one process with threads.

The data: a generated 100M-rating MovieLens-shaped set (``collabemb.sample.generate_sample``, 650,000 users
x 80,000 items, seed 0), 1% of it held out at random for the test RMSE, the rest written as a parquet
dataset partitioned by user hash (``bucket=0..15``; cached under ``~/.cache/collabemb/bench-100m``). Then,
each a fresh process tree, with the same settings (64 factors, 5 epochs, seed 0):

* **1 process x 2 threads**: the dataset read whole with pyarrow, ``collabemb.fit(..., threads=2)``, saved;
* **2 processes x 1 thread**: ``torchrun --nproc-per-node 2 -m collabemb fit --distributed``;
* **4 processes x 1 thread**: the same with 4 ranks on the 2 cores (oversubscribed: the overhead).

Each process runs under ``/usr/bin/time`` for its peak RSS. Reported: wall time of the whole run (load, 5
epochs, save), ratings/s per epoch (training ratings / the median epoch's seconds, from the history), the
bytes each rank sent per epoch (counted by the engine), peak RSS per rank, the held-out RMSE, and a model
of the epoch time on N machines from the measured per-rank compute rate and traffic.

    flock /tmp/collabemb-bench.lock python benchmarks/distributed.py [--ratings 100000000] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = Path.home() / ".cache" / "collabemb"
SETTINGS = {"n_factors": 64, "epochs": 5, "seed": 0}
BUCKETS = 16


def prepare(n_ratings: int) -> Path:
    """The cached dataset directory (``train/`` parquet dataset, ``test.parquet``), generated once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from collabemb.sample import generate_sample

    root = CACHE / f"bench-{n_ratings // 1_000_000}m"
    if (root / "done").exists():
        return root
    scale = n_ratings / 100_000_000
    t0 = time.perf_counter()
    print(f"generating {n_ratings:,} ratings into {root} ...", flush=True)
    ratings = generate_sample(int(650_000 * scale), int(max(80_000 * min(scale * 4, 1), 2_000)), n_ratings, seed=0).ratings
    test = np.random.default_rng(0).random(len(ratings)) < 0.01
    frame = ratings[["user", "item", "rating"]]
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame[test], preserve_index=False), root / "test.parquet")
    train = frame[~test]
    bucket = (train["user"].to_numpy() * 0x9E3779B1 % 2**32) % BUCKETS
    for b in range(BUCKETS):
        (root / "train" / f"bucket={b}").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(train[bucket == b], preserve_index=False), root / "train" / f"bucket={b}" / "part-0.parquet")
    (root / "done").write_text(json.dumps({"n_train": int((~test).sum()), "n_test": int(test.sum())}))
    print(f"  written in {time.perf_counter() - t0:.0f} s", flush=True)
    return root


def single_worker(root: Path, out: Path) -> None:
    """The one-process run (in a child process): read the dataset whole, fit with 2 threads, save."""
    import pyarrow.dataset as ds

    import collabemb as ce

    frame = ds.dataset(str(root / "train"), format="parquet", partitioning="hive").to_table(columns=["user", "item", "rating"]).to_pandas()
    fitted = ce.fit(frame, valid=root / "test.parquet", threads=2, progress=False, **SETTINGS)
    del frame
    ce.save_model(fitted, out)


def timed(command: list[str], env: dict) -> tuple[float, str, str]:
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-4000:]}")
    return wall, done.stdout, done.stderr


def peaks(stderr: str) -> list[float]:
    """Peak RSS in GB of each process /usr/bin/time reported (``PEAK_RSS_KB=...`` lines), in rank order when tagged."""
    found = re.findall(r"PEAK_RSS_KB=(\d+) RANK=(\w*)", stderr)
    ordered = sorted(found, key=lambda f: int(f[1]) if f[1].isdigit() else 0)
    return [int(kb) / 1e6 for kb, _ in ordered]


def run(label: str, ranks: int, root: Path, tmp: Path) -> dict:
    import collabemb as ce

    out = tmp / label.replace(" ", "-")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if ranks == 0:
        command = ["/usr/bin/time", "-f", "PEAK_RSS_KB=%M RANK=0", sys.executable, __file__, "--worker", str(root), str(out)]
    else:
        # torchrun starts /bin/sh per rank so that $RANK reaches /usr/bin/time's format
        script = f'exec /usr/bin/time -f "PEAK_RSS_KB=%M RANK=$RANK" {sys.executable} -m collabemb fit --distributed "$@"'
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(ranks),
            "--no-python",
            "/bin/sh",
            "-c",
            script,
            "sh",
        ]
        command += [str(root / "train"), "--out", str(out), "--valid", str(root / "test.parquet")]
        command += [part for k, v in SETTINGS.items() for part in (f"--{k.replace('_', '-')}", str(v))]
    print(f"  {label} ...", flush=True)
    wall, _, stderr = timed(command, env)
    fitted = ce.load_model(out)
    h = fitted.history
    n_train = h.params["n_train"]
    row = {
        "label": label,
        "ranks": max(ranks, 1),
        "wall_s": wall,
        "epoch_s": float(np.median(h.train_seconds)),
        "ratings_per_s": n_train / float(np.median(h.train_seconds)),
        "valid_rmse": h.valid_rmse[-1],
        "bytes": h.params.get("bytes_sent_per_epoch", [0]),
        "rss_gb": peaks(stderr),
        "n_train": n_train,
        "weights": fitted,
    }
    print(
        f"    wall {wall:.0f} s, epoch {row['epoch_s']:.1f} s ({row['ratings_per_s'] / 1e6:.2f} M ratings/s), "
        f"valid RMSE {row['valid_rmse']:.5f}, sent/epoch {[f'{b / 1e6:.1f} MB' for b in row['bytes']]}, peak RSS {row['rss_gb']} GB",
        flush=True,
    )
    return row


def scaling_model(two: dict, one_rank_rate: float, n_users: int, n_items: int, k: int, unknown_frac: float = 0.02) -> list[str]:
    """Epoch time on N machines: compute n / (N * rate) (the measured per-rank rate) plus traffic over a 10 Gbit/s
    link, counted serially (conservative): what a rank sends (its item blocks around the ring, about the item
    table; its user and item blocks to rank 0; the ratings routed to the unknown user, 24 bytes each) and what
    rank 0 receives from the others (their blocks: (N - 1) / N of both tables)."""
    n = two["n_train"]
    users, items = (n_users + 1) * (k + 3) * 4, (n_items + 1) * (k + 3) * 4
    lines = [
        "| machines N | compute s | sent per rank MB | rank 0 receives MB | traffic s at 10 Gbit/s | epoch s (model) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for machines in (1, 2, 4, 8, 16, 32):
        compute = n / (machines * one_rank_rate)
        sent = 0 if machines == 1 else items + (users + items) / machines + unknown_frac * n / machines * 24
        received = (machines - 1) / machines * (users + items)
        comm = (sent + received) / 1.25e9
        lines.append(f"| {machines} | {compute:.2f} | {sent / 1e6:.1f} | {received / 1e6:.1f} | {comm:.3f} | {compute + comm:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=100_000_000)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        single_worker(Path(args.worker[0]), Path(args.worker[1]))
        return
    import tempfile

    import torch

    from machine import append_results

    root = prepare(args.ratings)
    rows = []
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        for label, ranks in (("1 process x 2 threads", 0), ("2 processes x 1 thread", 2), ("4 processes x 1 thread", 4)):
            rows.append(run(label, ranks, root, Path(tmp)))
    one, two, four = rows
    same = all(
        torch.equal(getattr(one["weights"].module, t).weight, getattr(two["weights"].module, t).weight)
        for t in ("u_weight", "i_weight", "u_bias", "i_bias")
    )
    n_items = len(one["weights"].items)
    checks = [
        ("2 processes >= 0.8x the throughput of 1 process x 2 threads", two["ratings_per_s"] >= 0.8 * one["ratings_per_s"]),
        ("identical RMSE (and weights) at 2 processes", same and two["valid_rmse"] == one["valid_rmse"]),
        ("peak RSS per rank at 2 ranks <= 0.6x the single process's", max(two["rss_gb"]) <= 0.6 * one["rss_gb"][0]),
        ("whole 100M run (load, 5 epochs, save) under 10 minutes", all(r["wall_s"] < 600 for r in rows)),
    ]
    for name, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    lines = [
        f"Generated MovieLens-shaped set: {one['n_train']:,} training ratings (parquet, {BUCKETS} user-hash partitions), "
        f"{n_items:,} items; 1% held out for the RMSE; 64 factors, 5 epochs, seed 0. Each run a fresh process tree on this "
        "2-core machine; peak RSS by /usr/bin/time per process; bytes counted by the engine.",
        "",
        "| run | wall s (load, 5 epochs, save) | median epoch s | M ratings/s | held-out RMSE | sent per epoch, by rank (MB) | peak RSS by rank (GB) |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
        *[
            f"| {r['label']} | {r['wall_s']:.0f} | {r['epoch_s']:.2f} | {r['ratings_per_s'] / 1e6:.2f} | {r['valid_rmse']:.5f} | "
            f"{', '.join(f'{b / 1e6:.1f}' for b in r['bytes'])} | {', '.join(f'{g:.2f}' for g in r['rss_gb'])} |"
            for r in rows
        ],
        "",
        f"2 processes vs 1 process x 2 threads: throughput ratio {two['ratings_per_s'] / one['ratings_per_s']:.2f}, "
        f"weights bit-identical: {same}; 4 processes (oversubscribed) ratio {four['ratings_per_s'] / one['ratings_per_s']:.2f}.",
        "",
        "Model of one epoch on N machines (one rank each) on this data: compute at the measured per-rank rate "
        f"({two['ratings_per_s'] / 2 / 1e6:.2f} M ratings/s, the 2-process run's rate per rank) plus the traffic at 10 Gbit/s:",
        "",
        *scaling_model(two, two["ratings_per_s"] / 2, len(one["weights"].users), n_items, SETTINGS["n_factors"]),
        "",
        "Bar: " + "; ".join(f"{name}: {'pass' if ok else 'FAIL'}" for name, ok in checks) + ".",
    ]
    if not args.no_write:
        append_results(
            HERE / "RESULTS.md",
            title="One model on N processes (benchmarks/distributed.py)",
            command="python benchmarks/distributed.py " + " ".join(sys.argv[1:]),
            body="\n".join(lines),
        )


if __name__ == "__main__":
    main()
