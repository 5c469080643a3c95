"""Training speed at 25M ratings and on MovieLens 100K: collabemb's engines against Surprise's SVD.

    flock /tmp/collabemb-bench.lock python benchmarks/speed.py [--data-dir DIR] [--epochs 5] [--no-write]

What it measures, all at 64 factors, each measurement in a fresh subprocess (so its peak RSS is
that of one load + fit, never of the generator or of another engine):

1. **The 25M set**: ``collabemb.sample.generate_sample`` drawn in MovieLens-25M's shape (162,541
   users, 59,047 items, 25,000,095 ratings, seed 0), written once to ``ratings.csv`` and
   ``ratings.parquet`` in ``--data-dir`` (kept and reused: delete it, or pass
   ``--regenerate``, for a fresh one).
2. **Load**: ``read_ratings`` on the CSV and on the parquet file, seconds and peak RSS.
3. **25M fit**: the CSV loaded, 2% held out (``split_random``, seed 0), the fast engine trained for
   ``--epochs`` epochs at its default thread count and at ``threads=1``: ratings per second and
   seconds of every epoch (the training pass alone, from ``history.train_seconds``), held-out
   RMSE, peak RSS of load + split + fit.
4. **A 3M subset** (all ratings of a seeded random 12% of the users, about 3M ratings, 2% held
   out): the fast engine, the autograd path (torch autograd + Adam, 1 thread) and Surprise's
   ``SVD(n_factors=64)``, the same ``--epochs``. Surprise (a few M ratings/s, and it builds
   Python dicts of every rating) would take minutes and several GB on the full 25M, and the
   autograd path far longer: its Adam updates every row of both tables at every mini-batch
   (dense ``nn.Embedding`` gradients), about 0.07M ratings/s on the subset's 80k rows against
   0.9M/s on ml-100k. So the like-for-like comparison is made here (``--autograd-epochs`` shortens
   the autograd run, which takes most of the benchmark's time); ``--autograd-full-epochs N``
   also times the autograd path on the full set (estimated 15-20 min an epoch from the above).
5. **MovieLens 100K u1..u5** (``--ml100k``, default ``../shared/data/ml-100k``): the three again,
   10 epochs each, test RMSE per fold and mean.
6. **The command line end to end** on the 3M subset written as a CSV (all its ratings): wall time
   of ``collabemb fit FILE --out DIR --epochs E --n-factors 64`` as a fresh process (process
   start to artifact written: imports, reading, encoding, training, saving), median of
   ``--cli-runs`` runs, against Surprise's ``SVD.fit`` alone on the same ratings (trainset build
   excluded) in the same run, both with Surprise's defaults (100 factors, 20 epochs) and with the
   same settings as collabemb (64 factors, E epochs).

Prints a table and the issue's bar, and appends both to benchmarks/RESULTS.md. Timings on a busy
machine are noisy: read the medians and the ratios, and rerun on a quiet machine for figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHAPE_25M = {"n_users": 162_541, "n_items": 59_047, "n_ratings": 25_000_095, "seed": 0}
SUBSET_USER_FRAC = 0.12
HOLDOUT = 0.02
FACTORS = 64
BAR = {"fast_mps": 5.0, "vs_surprise": 4.0, "csv_load_s": 20.0, "rss_gb": 4.0, "ml100k_rmse": 0.920, "cli_vs_surprise": 4.0}


# --- the worker side (one measurement per process) --------------------------------------------


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _epoch_stats(history, n_train: int) -> dict:
    secs = list(history.train_seconds)
    return {"epoch_seconds": secs, "mps": [n_train / s / 1e6 for s in secs]}


def _subset(ratings, frac: float, seed: int):
    """All ratings of a seeded random ``frac`` of the users."""
    import numpy as np

    users = np.unique(ratings.frame["user"].to_numpy())
    keep = np.random.default_rng(seed).choice(users, int(len(users) * frac), replace=False)
    return ratings.subset(np.isin(ratings.frame["user"].to_numpy(), keep))


def _surprise_fit(train, test, epochs: int) -> dict:
    import numpy as np
    from surprise import SVD, Dataset, Reader

    lo, hi = float(train.frame["rating"].min()), float(train.frame["rating"].max())
    data = Dataset.load_from_df(train.frame[["user", "item", "rating"]], Reader(rating_scale=(lo, hi)))
    t0 = time.perf_counter()
    trainset = data.build_full_trainset()
    build = time.perf_counter() - t0
    algo = SVD(n_factors=FACTORS, n_epochs=epochs, random_state=0)
    t0 = time.perf_counter()
    algo.fit(trainset)
    seconds = time.perf_counter() - t0
    pred = np.array([algo.predict(u, i).est for u, i in zip(test.frame["user"].tolist(), test.frame["item"].tolist(), strict=True)])
    rmse = float(np.sqrt(np.mean((pred - test.frame["rating"].to_numpy(np.float64)) ** 2)))
    per_epoch = seconds / epochs
    return {
        "epoch_seconds": [per_epoch] * epochs,
        "mps": [len(train) / per_epoch / 1e6] * epochs,
        "rmse": rmse,
        "note": f"SVD.fit total / epochs; trainset build {build:.1f} s not counted",
    }


def _surprise_fit_only(ratings, epochs: int) -> dict:
    """Seconds of ``SVD.fit`` alone (trainset built first, not counted): defaults, and 64 factors x ``epochs``."""
    from surprise import SVD, Dataset, Reader

    lo, hi = float(ratings.frame["rating"].min()), float(ratings.frame["rating"].max())
    trainset = Dataset.load_from_df(ratings.frame[["user", "item", "rating"]], Reader(rating_scale=(lo, hi))).build_full_trainset()
    out = {"n": len(ratings)}
    for name, algo in (("defaults", SVD(random_state=0)), ("matched", SVD(n_factors=FACTORS, n_epochs=epochs, random_state=0))):
        t0 = time.perf_counter()
        algo.fit(trainset)
        out[name] = time.perf_counter() - t0
    return out


def _subset_csv(csv_path: Path, data_dir: Path) -> Path:
    """The 3M subset (all ratings of 12% of the users) as its own CSV, written once and reused."""
    out = data_dir / f"subset-{SUBSET_USER_FRAC:g}.csv"
    if not out.is_file():
        code = (
            "import sys; sys.path.insert(0, sys.argv[3]); import collabemb as ce; from speed import _subset, SUBSET_USER_FRAC\n"
            "r = _subset(ce.read_ratings(sys.argv[1]), SUBSET_USER_FRAC, seed=0)\n"
            "r.frame[['user', 'item', 'rating']].to_csv(sys.argv[2] + '.tmp', index=False)\n"
        )
        subprocess.run([sys.executable, "-c", code, str(csv_path), str(out), str(HERE)], check=True)
        os.replace(str(out) + ".tmp", out)
    return out


def _cli_fit_runs(csv: Path, epochs: int, runs: int, timeout: float) -> list[float]:
    """Wall seconds of ``collabemb fit`` as a fresh process, start to artifact written, ``runs`` times."""
    import tempfile

    exe = Path(sys.executable).parent / "collabemb"
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(runs):
            cmd = [
                str(exe),
                "fit",
                str(csv),
                "--out",
                f"{tmp}/art{n}",
                "--epochs",
                str(epochs),
                "--n-factors",
                str(FACTORS),
                "--no-progress",
            ]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)
            seconds.append(time.perf_counter() - t0)
            print(f"  collabemb fit (CLI) on {csv.name}: {seconds[-1]:.2f} s", flush=True)
    return seconds


def _collabemb_fit(train, test, engine: str, epochs: int, threads: int | None) -> dict:
    import collabemb as ce

    model = ce.fit(train, valid=test, engine=engine, epochs=epochs, threads=threads, n_factors=FACTORS, progress=False)
    out = _epoch_stats(model.history, len(train))
    out["rmse"] = ce.rmse(model, test)
    out["threads"] = model.history.params["threads"]
    out["engine"] = model.history.params["engine"]
    return out


def worker(spec: dict) -> dict:
    """Run one measurement described by ``spec``; return its figures."""
    import collabemb as ce

    kind = spec["kind"]
    if kind in ("fast", "autograd"):
        from collabemb.engines.fast import warm_up

        warm_up()  # numba compiles (or loads its cache) here, not inside the first timed epoch
    if kind == "load":
        t0 = time.perf_counter()
        ratings = ce.read_ratings(spec["path"])
        return {"load_s": time.perf_counter() - t0, "n": len(ratings), "peak_rss_gb": _peak_rss_gb()}
    if kind == "surprise-fit":
        return _surprise_fit_only(ce.read_ratings(spec["path"]), spec["epochs"])
    if spec["data"] == "ml-100k":
        folds = []
        for f in range(1, 6):
            train, test = ce.read_split(Path(spec["path"]) / f"u{f}.base", Path(spec["path"]) / f"u{f}.test", layout="ml-100k")
            res = (
                _surprise_fit(train, test, spec["epochs"])
                if kind == "surprise"
                else _collabemb_fit(train, test, kind, spec["epochs"], spec.get("threads"))
            )
            folds.append(res)
        out = {
            "rmse_folds": [r["rmse"] for r in folds],
            "rmse": statistics.fmean(r["rmse"] for r in folds),
            "mps": [m for r in folds for m in r["mps"]],
            "epoch_seconds": [s for r in folds for s in r["epoch_seconds"]],
            "threads": folds[0].get("threads"),
            "n_train": 80_000,
        }
        out["peak_rss_gb"] = _peak_rss_gb()
        return out
    t0 = time.perf_counter()
    ratings = ce.read_ratings(spec["path"])
    load_s = time.perf_counter() - t0
    if spec["data"] == "subset":
        ratings = _subset(ratings, SUBSET_USER_FRAC, seed=0)
    train, test = ce.split_random(ratings, HOLDOUT, seed=0)
    del ratings
    if kind == "surprise":
        out = _surprise_fit(train, test, spec["epochs"])
    else:
        out = _collabemb_fit(train, test, kind, spec["epochs"], spec.get("threads"))
    out.update(load_s=load_s, n_train=len(train), peak_rss_gb=_peak_rss_gb())
    return out


# --- the driver ------------------------------------------------------------------------------


def _run_worker(spec: dict, timeout: float) -> dict:
    label = f"{spec['kind']} on {spec['data']}" + (f", threads={spec['threads']}" if spec.get("threads") else "")
    print(f"  running {label} ...", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        print(f"  {label}: timed out after {timeout:.0f} s", flush=True)
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        print(f"  {label}: failed: {' | '.join(tail)}", flush=True)
        return {"error": " | ".join(tail)}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {label}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    return result


def _prepare_25m(data_dir: Path, shape: dict, regenerate: bool) -> tuple[Path, Path]:
    csv_path, pq_path, meta = data_dir / "ratings.csv", data_dir / "ratings.parquet", data_dir / "shape.json"
    if not regenerate and csv_path.is_file() and pq_path.is_file() and meta.is_file() and json.loads(meta.read_text()) == shape:
        print(f"reusing {csv_path} ({csv_path.stat().st_size / 1e6:.0f} MB)", flush=True)
        return csv_path, pq_path
    data_dir.mkdir(parents=True, exist_ok=True)
    code = (
        "import json, sys, time, pyarrow as pa, pyarrow.csv as pacsv, pyarrow.parquet as pq\n"
        "from collabemb.sample import generate_sample\n"
        "shape = json.loads(sys.argv[1]); out = sys.argv[2]\n"
        "t = time.perf_counter(); r = generate_sample(**shape).ratings; g = time.perf_counter() - t\n"
        "table = pa.Table.from_pandas(r, preserve_index=False); del r\n"
        "t = time.perf_counter(); pacsv.write_csv(table, out + '/ratings.csv.tmp'); c = time.perf_counter() - t\n"
        "pq.write_table(table, out + '/ratings.parquet.tmp')\n"
        "print(f'generated in {g:.0f} s, CSV written in {c:.0f} s')\n"
    )
    print(f"generating {shape['n_ratings']:,} ratings into {data_dir} (about a minute for 25M) ...", flush=True)
    subprocess.run([sys.executable, "-c", code, json.dumps(shape), str(data_dir)], check=True)
    os.replace(data_dir / "ratings.csv.tmp", csv_path)
    os.replace(data_dir / "ratings.parquet.tmp", pq_path)
    meta.write_text(json.dumps(shape))
    return csv_path, pq_path


def _fmt_row(data: str, engine: str, res: dict, epochs: int, note: str = "") -> str:
    if "error" in res:
        return f"| {data} | {engine} | - | {epochs} | - | - | - | - | - | {res['error']} |"
    mps = res["mps"]
    mps_text = f"{statistics.median(mps):.2f} ({min(mps):.2f}-{max(mps):.2f})"
    secs = f"{statistics.median(res['epoch_seconds']):.2f}"
    load = f"{res['load_s']:.1f}" if "load_s" in res else "-"
    threads = res.get("threads") or "-"
    rmse = f"{res['rmse']:.4f}"
    n = f"{res.get('n_train', 0) / 1e6:.2f}M"
    return f"| {data} ({n} train) | {engine} | {threads} | {epochs} | {mps_text} | {secs} | {load} | {res['peak_rss_gb']:.2f} | {rmse} | {note or res.get('note', '')} |"


def _cli_report(cli_seconds: list[float], surprise: dict, epochs: int) -> tuple[list[str], list[str]]:
    """Table rows and bar lines for the command line against Surprise's fit alone."""
    if not cli_seconds or "error" in surprise:
        return [f"command line vs Surprise: not measured ({surprise.get('error', 'no CLI run')})"], []
    cli = statistics.median(cli_seconds)
    runs = ", ".join(f"{s:.2f}" for s in cli_seconds)
    lines = [
        f"| 3M subset CSV ({surprise['n'] / 1e6:.2f}M ratings) | seconds | ratio to collabemb CLI |",
        "| --- | ---: | ---: |",
        f"| `collabemb fit` ({FACTORS} factors, {epochs} epochs), process start to artifact written, median of {len(cli_seconds)} ({runs}) | {cli:.2f} | 1.0x |",
        f"| Surprise `SVD().fit` alone, its defaults (100 factors, 20 epochs) | {surprise['defaults']:.2f} | {surprise['defaults'] / cli:.1f}x |",
        f"| Surprise `SVD(n_factors={FACTORS}, n_epochs={epochs}).fit` alone (collabemb's settings) | {surprise['matched']:.2f} | {surprise['matched'] / cli:.1f}x |",
    ]
    ratio = surprise["defaults"] / cli
    checks = [
        f"- `collabemb fit` end to end vs Surprise SVD's fit alone (defaults), same data, same run: {ratio:.1f}x faster "
        f"(bar >= {BAR['cli_vs_surprise']:g}x): {'met' if ratio >= BAR['cli_vs_surprise'] else 'NOT met'}; "
        f"against SVD at collabemb's own settings ({FACTORS} factors, {epochs} epochs): {surprise['matched'] / cli:.1f}x"
    ]
    return lines, checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help="where the generated set is kept (default ~/.cache/collabemb/bench-25m)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="shrink the generated set (users, items, ratings) for a quick trial; figures then say so"
    )
    parser.add_argument("--regenerate", action="store_true", help="draw the 25M set again even if cached")
    parser.add_argument("--epochs", type=int, default=5, help="epochs for every engine on the 25M set and the subset (default 5)")
    parser.add_argument("--ml100k-epochs", type=int, default=10, help="epochs on ml-100k (default 10, the fast engine's default)")
    parser.add_argument(
        "--autograd-epochs", type=int, help="epochs of the autograd path on the subset (default: --epochs; it takes ~45 s an epoch there)"
    )
    parser.add_argument(
        "--autograd-full-epochs",
        type=int,
        default=0,
        help="also time the autograd path on the full 25M (very slow: an estimated 15-20 min an epoch)",
    )
    parser.add_argument("--ml100k", default=str(HERE.parent.parent / "shared" / "data" / "ml-100k"))
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed for each measurement")
    parser.add_argument("--cli-runs", type=int, default=5, help="runs of `collabemb fit` on the 3M subset CSV (median reported)")
    parser.add_argument("--only-cli", action="store_true", help="measure only the command line end to end against Surprise (item 6)")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    t_start = time.perf_counter()
    shape = dict(SHAPE_25M)
    if args.scale != 1.0:
        shape.update({k: max(1000, int(shape[k] * args.scale)) for k in ("n_users", "n_items", "n_ratings")})
    default_dir = "bench-25m" if args.scale == 1.0 else f"bench-scale-{args.scale:g}"
    data_dir = Path(args.data_dir or Path.home() / ".cache" / "collabemb" / default_dir)
    csv_path, pq_path = _prepare_25m(data_dir, shape, args.regenerate)
    E = args.epochs
    subset_csv = _subset_csv(csv_path, data_dir)
    print("measuring (each in its own process) ...", flush=True)
    cli_seconds = _cli_fit_runs(subset_csv, E, args.cli_runs, args.timeout)
    surprise_fit = _run_worker({"kind": "surprise-fit", "data": "subset CSV", "path": str(subset_csv), "epochs": E}, args.timeout)
    cli_lines, cli_checks = _cli_report(cli_seconds, surprise_fit, E)
    if args.only_cli:
        print("\n".join(cli_lines + [""] + cli_checks))
        if not args.no_write:
            from machine import append_results

            append_results(
                HERE / "RESULTS.md",
                title="Command line end to end on the 3M subset vs Surprise SVD.fit (benchmarks/speed.py --only-cli)",
                command="flock /tmp/collabemb-bench.lock python benchmarks/speed.py " + " ".join(sys.argv[1:]),
                body="\n".join(cli_lines + [""] + cli_checks),
            )
        return
    loads = {
        name: _run_worker({"kind": "load", "data": name, "path": str(p)}, args.timeout)
        for name, p in (("CSV", csv_path), ("parquet", pq_path))
    }
    full = {
        "fast": _run_worker({"kind": "fast", "data": "25M", "path": str(csv_path), "epochs": E}, args.timeout),
        "fast-1": _run_worker({"kind": "fast", "data": "25M", "path": str(csv_path), "epochs": E, "threads": 1}, args.timeout),
    }
    if args.autograd_full_epochs:
        full["autograd"] = _run_worker(
            {"kind": "autograd", "data": "25M", "path": str(csv_path), "epochs": args.autograd_full_epochs}, args.timeout
        )
    E_auto = args.autograd_epochs or E
    sub = {
        kind: _run_worker(
            {"kind": kind, "data": "subset", "path": str(csv_path), "epochs": E_auto if kind == "autograd" else E}, args.timeout
        )
        for kind in ("fast", "autograd", "surprise")
    }
    ml = {}
    if Path(args.ml100k, "u1.base").is_file():
        ml = {
            kind: _run_worker({"kind": kind, "data": "ml-100k", "path": args.ml100k, "epochs": args.ml100k_epochs}, args.timeout)
            for kind in ("fast", "autograd", "surprise")
        }
    else:
        print(f"no ml-100k at {args.ml100k}; skipping it", flush=True)

    lines = [
        "| data | engine | threads | epochs | M ratings/s per epoch: median (min-max) | epoch s (median) | CSV load s | peak RSS GB | RMSE | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        _fmt_row("25M", "collabemb fast", full["fast"], E),
        _fmt_row("25M", "collabemb fast", full["fast-1"], E),
    ]
    if "autograd" in full:
        lines.append(_fmt_row("25M", "collabemb autograd", full["autograd"], args.autograd_full_epochs))
    lines += [
        _fmt_row("3M subset", "collabemb fast", sub["fast"], E),
        _fmt_row("3M subset", "collabemb autograd", sub["autograd"], E_auto),
        _fmt_row("3M subset", "Surprise SVD", sub["surprise"], E),
    ]
    for kind, name in (("fast", "collabemb fast"), ("autograd", "collabemb autograd"), ("surprise", "Surprise SVD")):
        if kind in ml:
            folds = ", ".join(f"{v:.4f}" for v in ml[kind].get("rmse_folds", []))
            lines.append(_fmt_row("ml-100k u1..u5", name, ml[kind], args.ml100k_epochs, note=f"mean test RMSE; folds {folds}"))
    table = "\n".join(lines) + "\n\n" + "\n".join(cli_lines)
    load_text = ", ".join(
        f"{name} {r['load_s']:.1f} s (peak RSS {r['peak_rss_gb']:.2f} GB)" if "error" not in r else f"{name} failed: {r['error']}"
        for name, r in loads.items()
    )

    def med(res: dict) -> float:
        return statistics.median(res["mps"]) if "mps" in res else float("nan")

    checks = []
    fast_mps = med(full["fast"])
    checks.append(
        f"- fast engine on 25M: {fast_mps:.2f} M ratings/s per epoch (median; bar >= {BAR['fast_mps']:g}): {'met' if fast_mps >= BAR['fast_mps'] else 'NOT met'}"
    )
    sp = med(sub["surprise"])
    checks.append(
        f"- vs Surprise SVD (same run, 3M subset, {sp:.2f} M/s): fast engine on 25M {fast_mps / sp:.1f}x, on the same subset "
        f"{med(sub['fast']) / sp:.1f}x (bar >= {BAR['vs_surprise']:g}x): {'met' if fast_mps / sp >= BAR['vs_surprise'] else 'NOT met'}"
    )
    if "load_s" in loads["CSV"]:
        checks.append(
            f"- loading the 25M CSV: {loads['CSV']['load_s']:.1f} s (bar <= {BAR['csv_load_s']:g} s): {'met' if loads['CSV']['load_s'] <= BAR['csv_load_s'] else 'NOT met'}"
        )
    if "peak_rss_gb" in full["fast"]:
        rss = full["fast"]["peak_rss_gb"]
        checks.append(
            f"- peak RSS of load + 2% split + fit on 25M: {rss:.2f} GB (bar <= {BAR['rss_gb']:g} GB): {'met' if rss <= BAR['rss_gb'] else 'NOT met'}"
        )
    if "fast" in ml and "rmse" in ml["fast"]:
        r = ml["fast"]["rmse"]
        checks.append(
            f"- ml-100k u1..u5 mean test RMSE, fast engine: {r:.4f} (bar <= {BAR['ml100k_rmse']:.3f}): {'met' if r <= BAR['ml100k_rmse'] else 'NOT met'}"
        )
    checks += cli_checks
    checks_text = "\n".join(checks)
    total = time.perf_counter() - t_start
    notes = (
        f"25M set: collabemb.sample.generate_sample({', '.join(f'{k}={v}' for k, v in shape.items())})"
        f"{'' if args.scale == 1.0 else f' (--scale {args.scale:g}: NOT the 25M set)'}; "
        f"{HOLDOUT:.0%} held out for RMSE (split_random, seed 0). 3M subset: all ratings of a seeded random "
        f"{SUBSET_USER_FRAC:.0%} of the users, {HOLDOUT:.0%} held out; Surprise and the autograd path are compared "
        f"there because on the full set they take minutes per epoch (and Surprise several GB). Every engine: "
        f"{FACTORS} factors, the same epochs per data set; collabemb engines at their default lr / weight_decay; "
        f"Surprise SVD(n_factors={FACTORS}, n_epochs=E, random_state=0), its per-epoch time = fit time / epochs "
        f"(its trainset build excluded). Ratings/s = training ratings / seconds of the training pass "
        f"(history.train_seconds; validation excluded). Peak RSS: of the measuring process (load + split + fit). "
        f"Load of the 25M files by read_ratings: {load_text}. Whole run: {total / 60:.1f} min."
    )
    print()
    print(table)
    print()
    print(checks_text)
    print()
    print(notes)
    if not args.no_write:
        from machine import append_results

        append_results(
            HERE / "RESULTS.md",
            title="Training speed: 25M generated ratings and ml-100k (benchmarks/speed.py)",
            command="flock /tmp/collabemb-bench.lock python benchmarks/speed.py " + " ".join(sys.argv[1:]),
            body=f"{table}\n\n{checks_text}\n\n{notes}",
        )


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
