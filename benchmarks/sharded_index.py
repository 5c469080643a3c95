"""Sharded and on-disk FAISS indexes against one index over the same catalogue: recall, latency, build time, memory.

A generated catalogue of ``--items`` items (default 1,000,000) x 64 factors, clustered as
``benchmarks/serve.py``'s ``million_artifact`` (500 Gaussian centres, N(0, 0.5^2) around them,
scaled by 0.1; item biases N(0, 0.1^2)), and 10,000 users. For each configuration the
``"items"`` and ``"recommend"`` parts are built (collabemb.faiss_shards), then:

* recall@10 of ``similar_items`` and of ``recommend`` (``exclude_seen=False``) against exact brute
  force (``index_type="exact"``), on 1,000 item and 1,000 user queries;
* latency of one public-API call (raw ID in, DataFrame out) on one FAISS thread, p50 / p99 over the
  same 1,000 queries after 20 warm-up calls, and batch throughput (1,000 IDs in one call, one
  thread; the median of 3 calls);
* build seconds (both parts, ``--build-threads`` FAISS threads) and memory: the peak of the
  process's anonymous resident memory (``RssAnon``, sampled every 10 ms) during the build over
  what it was before, and what the index still holds after it (freed heap handed back to the OS
  before each reading, ``malloc_trim``). The on-disk IVF's lists are a memory-mapped file: page
  cache, not anonymous memory (their size is given beside).

Configurations: one HNSW index; HNSW in each ``--shards`` count (contiguous row ranges, merged per
query); one IVF; IVF in the largest shard count; one on-disk IVF (its lists merged from that many
shard files). Library defaults throughout (HNSW M=32, efConstruction=40, efSearch=256; IVF
nlist = 4 sqrt(n), at most n / 39, per index or shard; nprobe = max(8, nlist / 16)).

    flock /tmp/collabemb-bench.lock python benchmarks/sharded_index.py [--items 1000000] [--shards 2,4]
        [--build-threads 2] [--no-write]

Prints the table and appends it to benchmarks/RESULTS.md with date, machine and command.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import torch
from similarity import timed_singles

import collabemb as ce
from collabemb.faiss_shards import build_ondisk_ivf, shard_index
from collabemb.index import SimilarityIndex
from collabemb.models import EmbeddingDotBias

from machine import append_results

HERE = Path(__file__).resolve().parent
K = 10
N_QUERIES = 1000


def catalogue(n_items: int, n_users: int = 10_000, k: int = 64, seed: int = 0) -> ce.FittedModel:
    """The clustered catalogue of benchmarks/serve.py's million_artifact, ``n_items`` items, as a fitted model."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((500, k), dtype=np.float32)
    items = np.empty((n_items + 1, k), dtype=np.float32)
    for start in range(0, n_items, 1 << 17):  # in blocks: no second full-size temporary
        stop = min(start + (1 << 17), n_items)
        block = centres[rng.integers(0, 500, stop - start)] + 0.5 * rng.standard_normal((stop - start, k), dtype=np.float32)
        items[1 + start : 1 + stop] = 0.1 * block
    items[0] = items[1:].mean(axis=0)
    tables = {
        "u_weight": torch.from_numpy(0.1 * rng.standard_normal((n_users + 1, k), dtype=np.float32)),
        "i_weight": torch.from_numpy(items),
        "u_bias": torch.zeros(n_users + 1, 1),
        "i_bias": torch.from_numpy(0.1 * rng.standard_normal((n_items + 1, 1), dtype=np.float32)),
    }
    users, item_ids = ce.IdRegistry(np.arange(1, n_users + 1), name="user"), ce.IdRegistry(np.arange(1, n_items + 1), name="item")
    module = EmbeddingDotBias(users, item_ids, k, tables=tables)
    return ce.FittedModel(module, ce.ModelIdentity(family="rating", row0="mean", weight_decay=0.1))


class AnonPeak:
    """Peak anonymous resident memory (MiB) of this process while the block runs, sampled every 10 ms."""

    def __enter__(self) -> AnonPeak:
        self.before = self.peak = anon_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, anon_mib())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, anon_mib())


def anon_mib() -> float:
    """``RssAnon`` of this process in MiB (/proc/self/status)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("RssAnon:")) / 1024


def recall(truth: pd.DataFrame, found: pd.DataFrame, key: str) -> float:
    """Mean over queries of |found & true top-10| / 10."""
    t, f = truth.groupby(key, sort=False)["item"].apply(set), found.groupby(key, sort=False)["item"].apply(set)
    return float(np.mean([len(t[q] & f.get(q, set())) / K for q in t.index]))


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc ``malloc_trim``), so RSS deltas mean what they say."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: RSS keeps freed heap
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def measure(label: str, index: SimilarityIndex, build, truth: dict, queries: dict, threads: int) -> dict:
    """Build ``index`` (``build(index)``), then its recall, latencies and throughput; one table row."""
    release_freed_memory()
    faiss.omp_set_num_threads(threads)
    index.threads = threads
    with AnonPeak() as memory:
        t0 = time.perf_counter()
        build(index)
        build_s = time.perf_counter() - t0
    release_freed_memory()  # what the build freed is not "held"
    row = {"config": label, "build_s": build_s, "peak_mib": memory.peak - memory.before, "held_mib": anon_mib() - memory.before}
    print(f"{label}: built in {build_s:.1f} s (peak +{row['peak_mib']:.0f} MiB, held +{row['held_mib']:.0f} MiB)", flush=True)
    faiss.omp_set_num_threads(1)
    index.threads = 1
    asks = {
        "similar": ("query", lambda q: index.similar_items(q, K)),
        "recommend": ("user", lambda q: index.recommend(q, K, exclude_seen=False)),
    }
    for name, (key, ask) in asks.items():
        found = ask(queries[name])
        assert (found.groupby(key).size() == K).all(), f"{label} {name}: a query got fewer than {K} results"
        lat = timed_singles(ask, queries[name])
        rates = []
        for _ in range(3):
            t0 = time.perf_counter()
            ask(queries[name])
            rates.append(len(queries[name]) / (time.perf_counter() - t0))
        row |= {
            f"{name}_recall": recall(truth[name], found, key),
            f"{name}_p50": np.median(lat) * 1e3,
            f"{name}_p99": np.percentile(lat, 99) * 1e3,
            f"{name}_qps": statistics.median(rates),
        }
        print(
            f"  {name}: recall@10 {row[f'{name}_recall']:.4f}, p50 {row[f'{name}_p50']:.3f} ms, "
            f"p99 {row[f'{name}_p99']:.3f} ms, batch {row[f'{name}_qps']:,.0f}/s",
            flush=True,
        )
    return row


def run(n_items: int, shard_counts: list[int], build_threads: int, seed: int, workdir: Path) -> str:
    t0, load_start = time.perf_counter(), os.getloadavg()[0]
    fitted = catalogue(n_items, seed=seed)
    rng = np.random.default_rng(seed + 1)
    queries = {"similar": rng.choice(fitted.module.items.ids, N_QUERIES, replace=False)}
    queries["recommend"] = rng.choice(fitted.module.users.ids, N_QUERIES, replace=False)
    faiss.omp_set_num_threads(build_threads)
    exact = SimilarityIndex(fitted, index_type="exact", threads=build_threads)
    truth = {
        "similar": exact.similar_items(queries["similar"], K),
        "recommend": exact.recommend(queries["recommend"], K, exclude_seen=False),
    }
    del exact
    release_freed_memory()
    print(f"catalogue {n_items:,} x 64 and exact answers: {time.perf_counter() - t0:.1f} s", flush=True)
    most = max(shard_counts)
    configs = [("HNSW, one index", "hnsw", lambda idx: idx.build("items", "recommend"))]
    for s in shard_counts:
        configs.append((f"HNSW, {s} shards", None, lambda idx, s=s: shard_index(idx, s, index_type="hnsw")))
    configs.append(("IVF, one index", "ivf", lambda idx: idx.build("items", "recommend")))
    configs.append((f"IVF, {most} shards", None, lambda idx: shard_index(idx, most, index_type="ivf")))

    def ondisk(idx: SimilarityIndex) -> None:
        for part in ("items", "recommend"):
            build_ondisk_ivf(idx, workdir, part=part, n_shards=most)

    configs.append((f"IVF on disk ({most} shard files merged)", None, ondisk))
    rows = []
    for label, index_type, build in configs:
        index = SimilarityIndex(fitted, index_type=index_type)
        rows.append(measure(label, index, build, truth, queries, build_threads))
        del index
    data_mib = sum(f.stat().st_size for f in workdir.glob("*.ivfdata")) / 2**20
    load = f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    return table(rows, n_items, build_threads, data_mib, load)


def table(rows: list[dict], n_items: int, build_threads: int, data_mib: float, load: str) -> str:
    lines = [
        f"Catalogue: {n_items:,} items x 64 factors (clustered as benchmarks/serve.py's million_artifact), 10,000 users; "
        f"{N_QUERIES:,} item and {N_QUERIES:,} user queries. FAISS {faiss.__version__}; builds on {build_threads} FAISS threads, "
        "queries on 1. Recall@10 against exact brute force; latency of one public-API call (raw ID in, DataFrame out); "
        "batch: 1,000 IDs in one call. Build: both parts (items, recommend); memory: anonymous RSS, peak during the build "
        f"and held after it, over the process before it. The on-disk IVF's lists ({data_mib:,.0f} MiB for both parts) are a "
        f"memory-mapped file, read from a warm page cache here. The 2 cores are shared: 1-minute load average {load}.",
        "",
        "| index | build s | build peak MiB | held MiB | similar recall@10 | p50 ms | p99 ms | batch q/s "
        "| recommend recall@10 | p50 ms | p99 ms | batch q/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['build_s']:.1f} | {r['peak_mib']:,.0f} | {r['held_mib']:,.0f} | "
            + " | ".join(
                f"{r[f'{q}_recall']:.4f} | {r[f'{q}_p50']:.3f} | {r[f'{q}_p99']:.3f} | {r[f'{q}_qps']:,.0f}"
                for q in ("similar", "recommend")
            )
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000, help="catalogue size")
    parser.add_argument("--shards", default="2,4", help="comma-separated shard counts for sharded HNSW")
    parser.add_argument("--build-threads", type=int, default=2, help="FAISS threads for builds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args()
    shard_counts = sorted({int(s) for s in args.shards.split(",")})
    with tempfile.TemporaryDirectory(prefix="collabemb-ondisk-") as tmp:
        body = run(args.items, shard_counts, args.build_threads, args.seed, Path(tmp))
    print()
    print(body)
    if not args.no_write:
        command = "python benchmarks/sharded_index.py " + " ".join(sys.argv[1:])
        append_results(HERE / "RESULTS.md", title="Sharded and on-disk indexes (benchmarks/sharded_index.py)", command=command, body=body)


if __name__ == "__main__":
    main()
