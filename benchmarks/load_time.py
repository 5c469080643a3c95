"""What verifying an artifact costs: load time of a 1M x 64 model with an HNSW item index.

    .venv/bin/python benchmarks/load_time.py [--rows 1000000] [--repeats 5] [--baseline-src DIR] [--no-write]

Builds (once, cached under ~/.cache/collabemb/) a model of 1,000 users x ``--rows`` items x 64
factors with random weights and an HNSW index over its items, saves it, and times
``load_model`` + ``index_of`` (the FAISS index deserialised and checked), median of ``--repeats``,
in fresh processes (page cache warm, as a server restart would find it):

* **verified**: the artifact as collabemb saves it now: every file checked against the manifest
  (size, SHA-256) before it is parsed, the index bound to the tensors by hashes;
* **unverified (0.2 layout)**: the same files without a manifest, as collabemb 0.2 wrote them; the
  loader then checks what 0.2 checked (the table rehashed against the index, the index bytes'
  checksum);
* **collabemb 0.2 itself** (with ``--baseline-src DIR``, a checkout of the 0.2 code, e.g.
  ``git worktree add /tmp/base a8dea5a``), on the 0.2 layout.

Prints the table and appends it to benchmarks/RESULTS.md with date, machine and command.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import append_results  # noqa: E402

CACHE = Path.home() / ".cache" / "collabemb"
TIMER = """
import sys, time, warnings
warnings.simplefilter("ignore")
import collabemb as ce
from collabemb.index import index_of
t = time.perf_counter()
fitted = ce.load_model(sys.argv[1])
index_of(fitted)
print(time.perf_counter() - t)
"""


def build(rows: int, target: Path) -> None:
    import numpy as np
    import torch

    import collabemb as ce
    from collabemb.models import EmbeddingDotBias
    from collabemb.registry import IdRegistry

    rng = np.random.default_rng(0)
    users, items = IdRegistry(np.arange(1, 1001), name="user"), IdRegistry(np.arange(1, rows + 1), name="item")
    tables = {
        name: torch.from_numpy(rng.standard_normal(shape, dtype=np.float32) * 0.1)
        for name, shape in (("u_weight", (1001, 64)), ("i_weight", (rows + 1, 64)), ("u_bias", (1001, 1)), ("i_bias", (rows + 1, 1)))
    }
    fitted = ce.FittedModel(EmbeddingDotBias(users, items, n_factors=64, tables=tables))
    t = time.perf_counter()
    ce.build_index(fitted, parts=("items",), index_type="hnsw")
    print(f"built the HNSW index over {rows} items in {time.perf_counter() - t:.0f} s", flush=True)
    ce.save_model(fitted, target)


def flat_copy(store: Path, target: Path) -> None:
    """The same artifact in collabemb 0.2's layout: the snapshot's files directly in the directory, no manifest."""
    import json

    if target.exists():
        shutil.rmtree(target)
    snapshot = store / json.loads((store / "CURRENT").read_text())["snapshot"]
    shutil.copytree(snapshot, target)
    (target / "manifest.json").unlink()


def timed(artifact: Path, repeats: int, env: dict | None = None) -> list[float]:
    out = []
    for _ in range(repeats):
        run = subprocess.run([sys.executable, "-c", TIMER, str(artifact)], capture_output=True, text=True, env=env, check=True)
        out.append(float(run.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-src", type=Path, help="a checkout of collabemb 0.2 to time as well")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args()
    store = CACHE / f"bench-load-{args.rows}"
    if not (store / "CURRENT").is_file():
        build(args.rows, store)
    flat = CACHE / f"bench-load-{args.rows}-flat"
    flat_copy(store, flat)
    size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) / 2**20
    rows = [("verified (manifest, SHA-256 of every file)", timed(store, args.repeats))]
    rows.append(("unverified, 0.2 layout, this code", timed(flat, args.repeats)))
    if args.baseline_src:
        env = {**os.environ, "PYTHONPATH": str(args.baseline_src)}
        rows.append(("collabemb 0.2 code, 0.2 layout", timed(flat, args.repeats, env)))
    verified = statistics.median(rows[0][1])
    lines = [
        f"Artifact: 1,000 users x {args.rows:,} items x 64 factors plus an HNSW item index, {size:.0f} MiB on disk; "
        f"`load_model` + `index_of` in a fresh process, median of {args.repeats} (all runs in seconds).",
        "",
        "| load | median s | runs | verified / this |",
        "| --- | ---: | --- | ---: |",
    ]
    for name, times in rows:
        median = statistics.median(times)
        lines.append(f"| {name} | {median:.2f} | {', '.join(f'{t:.2f}' for t in times)} | {verified / median:.2f} |")
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        command = "python benchmarks/load_time.py " + " ".join(sys.argv[1:])
        append_results(
            HERE / "RESULTS.md", title="Artifact load time with verification (benchmarks/load_time.py)", command=command.strip(), body=body
        )


if __name__ == "__main__":
    main()
