"""What moving a served model into 2 MiB pages (collabemb.huge_pages) does to one query, in one process.

The 1M-item catalogue of ``benchmarks/serve.py`` (built there and cached) is loaded as ``collabemb
serve`` loads it before it listens (phase A: numpy tables and the stored HNSW parts); then, one
query at a time on one thread, ``similar`` and ``recommend`` answers as the server computes them
(``Served.similar`` / ``Served.recommend``, JSON-ready lists) and the bare FAISS search of the
items part, 2,000 seeded queries each; then the tables and parts are moved into huge pages
(``use_huge_pages``, what the server's phase B does last) and the same queries are timed again.
Both rounds run twice, interleaved the second time (4 KiB pages again by reloading), so that a drift
of the machine shows.

    flock /tmp/collabemb-bench.lock python benchmarks/huge_pages.py [--queries 2000] [--no-write]

Prints the table and appends it to benchmarks/RESULTS.md with date, machine and command.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from serve import CACHE, million_artifact

from machine import append_results

HERE = Path(__file__).resolve().parent
ARTIFACT = CACHE / "bench-serve-1m-tastes"


def timings(served, queries: int, seed: int) -> dict[str, np.ndarray]:
    """Per-query seconds of the three calls over seeded item and user rows."""
    rng = np.random.default_rng(seed)
    items = rng.integers(1, len(served.items.registry) + 1, queries)
    users = rng.integers(1, len(served.users.registry) + 1, queries)
    part, weights = served.part("items"), served.items.weights
    stride = served.items.registry.n_rows + 1
    calls = {
        "similar (served)": lambda j: served.similar("item", int(items[j]), 10),
        "recommend (served)": lambda j: served.recommend(
            served.users.weights[users[j] : users[j] + 1], served.users.biases[users[j] : users[j] + 1], 10, served.seen_rows(int(users[j]))
        ),
        "FAISS search, items part": lambda j: part.search(part.prepare(weights[items[j] : items[j] + 1]), 10, stride=stride),
    }
    out = {}
    for name, call in calls.items():
        for j in range(50):
            call(j)
        times = np.empty(queries)
        for j in range(queries):
            t0 = time.perf_counter()
            call(j)
            times[j] = time.perf_counter() - t0
        out[name] = times
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    import faiss

    from collabemb.huge_pages import use_huge_pages
    from collabemb.serve_model import load_served

    faiss.omp_set_num_threads(1)
    million_artifact(ARTIFACT)
    rounds = []
    for attempt in (1, 2):
        served = load_served(ARTIFACT)
        plain = timings(served, args.queries, args.seed + attempt)
        t0 = time.perf_counter()
        moved = use_huge_pages(served.big_arrays())
        seconds = time.perf_counter() - t0
        huge = timings(served, args.queries, args.seed + attempt)
        print(f"round {attempt}: moved {moved / 2**20:.0f} MiB into huge pages in {seconds:.1f} s", flush=True)
        for name in plain:
            row = (
                attempt,
                name,
                *(1000 * np.percentile(plain[name], q) for q in (50, 99)),
                *(1000 * np.percentile(huge[name], q) for q in (50, 99)),
            )
            rounds.append(row)
            print(
                f"  {name:<26} 4 KiB pages p50 {row[2]:.3f} p99 {row[3]:.3f} ms | 2 MiB pages p50 {row[4]:.3f} p99 {row[5]:.3f} ms",
                flush=True,
            )
        del served
    lines = [
        f"Catalogue: {ARTIFACT.name} (benchmarks/serve.py's million_artifact: 1M items x 64, HNSW M=32 efSearch 256 for items and "
        f"recommend). One process, one FAISS thread, {args.queries} seeded queries per call and round, k=10; the same queries "
        "before and after `use_huge_pages` (moved: the item and user tables, both parts' vectors and graphs).",
        "",
        "| round | call | 4 KiB p50 ms | 4 KiB p99 ms | 2 MiB p50 ms | 2 MiB p99 ms | p50 ratio |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {r} | {n} | {a:.3f} | {b:.3f} | {c:.3f} | {d:.3f} | {c / a:.2f} |" for r, n, a, b, c, d in rounds],
    ]
    if not args.no_write:
        append_results(
            HERE / "RESULTS.md",
            title="Served queries in 2 MiB pages (benchmarks/huge_pages.py)",
            command="python benchmarks/huge_pages.py " + " ".join(sys.argv[1:]),
            body="\n".join(lines),
        )


if __name__ == "__main__":
    main()
