"""``collabemb serve`` under load: throughput and latency over HTTP on loopback, beside the Python API.

Two artifacts: MovieLens 100K (all of ``u.data``, ``fit`` defaults, the ml-100k titles and genres,
the default index stored), and a generated catalogue of 1,000,000 items x 64 factors in 500
clusters, 10,000 users who like two clusters each (:func:`million_artifact`), with HNSW indexes
for similar items and for recommendations (built once, cached under
``~/.cache/collabemb/bench-serve-1m-tastes``); what those indexes answer is compared with exact
search (recall@10). For each artifact, ``collabemb serve`` is started as a process;
the time from starting it to the first answered ``/v1/similar`` is measured. Then a bounded load
generator (this process: asyncio, one keep-alive HTTP/1.1 connection per client, a fixed number
of requests, no retries) sends each query type at 1, 8 and 32 concurrent clients after a warm-up:
``similar`` (GET, k=10), ``recommend`` (GET, a known user, k=10), ``fold-in`` (POST /v1/recommend
with 10 ratings of a new user), ``predict`` (GET) and ``embedding`` (GET). Throughput is requests
/ wall time; latencies are per request, client side. Beside it, the same queries through the Python
API in this process (``similar_items``, ``recommend``, ``recommend_from_ratings``, ``predict``,
``weight``/``bias``), one at a time: the floor a server cannot beat.

    flock /tmp/collabemb-bench.lock python benchmarks/serve.py [--data ../shared/data/ml-100k] [--skip-1m]

Prints the tables and appends them to benchmarks/RESULTS.md with date, machine and command. The
load generator and the server share this machine's cores: the figures include that contention.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import collabemb as ce

from machine import append_results

HERE = Path(__file__).resolve().parent
CACHE = Path.home() / ".cache" / "collabemb"
CONCURRENCY = (1, 8, 32)
REQUESTS = {1: 1000, 8: 3000, 32: 6000}
WARMUP = 300


# --- the artifacts -------------------------------------------------------------------------------


def movielens_artifact(data: Path, out: Path) -> ce.FittedModel:
    from collabemb.movielens import _read_items

    ratings = ce.read_ratings(data / "u.data", layout="ml-100k")
    model = ce.fit(ratings, seed=0, progress=False)
    model.set_item_metadata(_read_items(data, "ml-100k"))
    ce.build_index(model)
    ce.save_model(model, out)
    return model


def million_artifact(out: Path) -> None:
    """The generated catalogue: 1M items in 500 clusters of taste, 10,000 users who each like two clusters.

    Items ``0.1 (c + 0.5 e)`` for their cluster's centre ``c`` and noise ``e`` (both standard normal, 64
    factors); a user ``0.1 (0.7 c1 + 0.3 c2) + 0.05 e`` for their two clusters, and 20 rated items drawn from
    them, as a trained model's users sit among the items they rated. Built once (HNSW for similar items and
    for recommendations, the library's defaults), cached in ``out``."""
    import torch

    from collabemb.models import EmbeddingDotBias

    if (out / "CURRENT").exists():
        return
    rng = np.random.default_rng(0)
    n_items, n_users, k, n_clusters = 1_000_000, 10_000, 64, 500
    centres = rng.standard_normal((n_clusters, k), dtype=np.float32)
    cluster = rng.integers(0, n_clusters, n_items)
    items = 0.1 * (centres[cluster] + 0.5 * rng.standard_normal((n_items, k), dtype=np.float32))
    likes = rng.integers(0, n_clusters, (n_users, 2))
    users = 0.1 * (0.7 * centres[likes[:, 0]] + 0.3 * centres[likes[:, 1]]) + 0.05 * rng.standard_normal((n_users, k), dtype=np.float32)
    tables = {
        "u_weight": torch.from_numpy(np.vstack([users.mean(0, keepdims=True), users]).astype(np.float32)),
        "i_weight": torch.from_numpy(np.vstack([items.mean(0, keepdims=True), items])),
        "u_bias": torch.zeros(n_users + 1, 1),
        "i_bias": torch.from_numpy(0.1 * rng.standard_normal((n_items + 1, 1), dtype=np.float32)),
    }
    module = EmbeddingDotBias(
        ce.IdRegistry(np.arange(1, n_users + 1), name="user"), ce.IdRegistry(np.arange(1, n_items + 1), name="item"), k, tables=tables
    )
    # 20 rated items per user from the clusters they like (14 and 6), so recommend leaves out what they rated
    by_cluster = np.argsort(cluster, kind="stable")
    starts = np.searchsorted(cluster[by_cluster], np.arange(n_clusters + 1))
    liked = np.repeat(likes, [14, 6], axis=1)  # (n_users, 20) the cluster of each rated item
    picks = starts[liked] + (rng.random(liked.shape) * (starts[liked + 1] - starts[liked])).astype(np.int64)
    seen = ce.SeenItems.from_rows(np.repeat(np.arange(1, n_users + 1), 20), by_cluster[picks].ravel() + 1, n_users + 1)
    fitted = ce.FittedModel(module, ce.ModelIdentity(family="rating", row0="mean", weight_decay=0.1), seen_items=seen)
    t0 = time.perf_counter()
    ce.build_index(fitted, parts=("items", "recommend"), index_type="hnsw")
    print(f"  built HNSW (items, recommend) over 1M items in {time.perf_counter() - t0:.0f} s", flush=True)
    ce.save_model(fitted, out)


def recall_rows(model: ce.FittedModel, label: str, seed: int, n: int = 200) -> list[tuple]:
    """Recall@10 of what the server answers (the model's stored index, as the API answers) against exact search:
    ``similar`` (cosine, the query item left out) and ``recommend`` (largest ``<p_u, q_i> + b_i``, rated items
    left out), ``n`` seeded queries each."""
    rng = np.random.default_rng(seed)
    (weights, biases), (user_weights, _) = model.tables("item"), model.tables("user")
    unit = weights / np.maximum(np.linalg.norm(weights, axis=1, keepdims=True), 1e-12)
    items = model.items.ids[rng.choice(len(model.items), n, replace=False)]
    users = model.users.ids[rng.choice(len(model.users), min(n, len(model.users)), replace=False)]
    found_similar = ce.similar_items(model, items, k=10).groupby("query", sort=False)["item"].apply(set)
    found_recommend = ce.recommend(model, users, k=10).groupby("user", sort=False)["item"].apply(set)
    indptr, rated = model.seen_items.indptr, model.seen_items.indices
    hits = {"similar": [], "recommend": []}

    def top10(scores: np.ndarray) -> set:  # scores over table rows; row 0, the unknown slot, never answers
        scores[0] = -np.inf
        return set(model.items.ids[np.argpartition(-scores, 10)[:10] - 1].tolist())

    for item, row in zip(items, model.rows(items, "item"), strict=True):
        scores = unit @ unit[row]
        scores[row] = -np.inf
        hits["similar"].append(len(top10(scores) & found_similar[item]) / 10)
    for user, row in zip(users, model.rows(users, "user"), strict=True):
        scores = weights @ user_weights[row] + biases
        scores[rated[indptr[row] : indptr[row + 1]]] = -np.inf
        hits["recommend"].append(len(top10(scores) & found_recommend[user]) / 10)
    rows = [(label, name, float(np.mean(v)), len(v)) for name, v in hits.items()]
    for row in rows:
        print(f"  {label:<10} {row[1]:<10} recall@10 against exact search: {row[2]:.3f} ({row[3]} queries)", flush=True)
    return rows


# --- the server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(artifact: Path, first_query: str, workers: int) -> tuple[subprocess.Popen, int, float]:
    """``(process, port, seconds from start to the first answered first_query)``."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "collabemb", "serve", str(artifact), "--port", str(port), "--workers", str(workers)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    request = f"GET {first_query} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"collabemb serve exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(request)
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc, port, time.perf_counter() - t0
        except OSError:
            time.sleep(0.01)


def wait_fully_loaded(port: int, in_a_row: int = 20) -> None:
    """Until ``/healthz`` says ``"full_model": "ready"`` on ``in_a_row`` new connections in a row: every worker
    (each connection lands on one at random) past its second phase, so that the load measures the steady state."""
    request, ready = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n", 0
    while ready < in_a_row:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(request)
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        if b'"full_model":"failed"' in answer:
            raise SystemExit("a worker could not load the full model: its stderr says why")
        ready = ready + 1 if b'"full_model":"ready"' in answer else 0
        if not ready:
            time.sleep(0.2)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


# --- the load generator --------------------------------------------------------------------------


def http_request(method: str, path: str, body: dict | None = None) -> bytes:
    if body is None:
        return f"{method} {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    data = json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


async def one_client(port: int, requests: list[bytes], latencies: list[float], failures: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for request in requests:
        t0 = time.perf_counter()
        writer.write(request)
        status = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - t0)
        if not status.startswith(b"HTTP/1.1 200"):
            failures.append(status.decode().strip())
    writer.close()
    await writer.wait_closed()


async def load(port: int, requests: list[bytes], clients: int) -> tuple[float, list[float], list[str]]:
    """Send ``requests`` over ``clients`` connections at once; ``(wall s, latencies s, failures)``."""
    latencies: list[float] = []
    failures: list[str] = []
    shares = [requests[c::clients] for c in range(clients)]
    t0 = time.perf_counter()
    await asyncio.gather(*(one_client(port, share, latencies, failures) for share in shares))
    return time.perf_counter() - t0, latencies, failures


def queries(model: ce.FittedModel, rng: np.random.Generator, n: int, with_predict: bool = True) -> dict[str, list[bytes]]:
    items = model.items.ids[rng.integers(0, len(model.items), n)]
    users = model.users.ids[rng.integers(0, len(model.users), n)]
    out = {
        "similar": [http_request("GET", f"/v1/similar?item={i}&k=10") for i in items],
        "recommend": [http_request("GET", f"/v1/recommend?user={u}&k=10") for u in users],
        "fold-in": [
            http_request(
                "POST",
                "/v1/recommend",
                {
                    "ratings": [
                        {"item": int(i), "rating": float(r)}
                        for i, r in zip(rng.choice(model.items.ids, 10, replace=False), rng.integers(1, 6, 10), strict=True)
                    ],
                    "k": 10,
                },
            )
            for _ in range(n)
        ],
        "embedding": [http_request("GET", f"/v1/embedding?item={i}") for i in items],
    }
    if with_predict:
        out["predict"] = [http_request("GET", f"/v1/predict?user={u}&item={i}") for u, i in zip(users, items, strict=True)]
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def serve_rows(artifact: Path, model: ce.FittedModel, label: str, args) -> tuple[list[tuple], float]:
    first = f"/v1/similar?item={model.items.ids[0]}&k=10"
    proc, port, start_s = start_server(artifact, first, args.workers)
    wait_fully_loaded(port)
    print(f"  {label}: server start to first answer {start_s:.2f} s", flush=True)
    rows = []
    try:
        rng = np.random.default_rng(args.seed)
        batch = queries(model, rng, max(REQUESTS.values()) + WARMUP)
        for name, requests in batch.items():
            asyncio.run(load(port, requests[:WARMUP], 8))
            for clients in CONCURRENCY:
                wall, lat, failures = asyncio.run(load(port, requests[WARMUP : WARMUP + REQUESTS[clients]], clients))
                row = (
                    label,
                    name,
                    clients,
                    len(lat),
                    len(lat) / wall,
                    1000 * percentile(lat, 50),
                    1000 * percentile(lat, 99),
                    len(failures),
                )
                rows.append(row)
                print(
                    f"  {label:<10} {name:<10} {clients:>3} clients: {row[4]:7.0f} req/s  p50 {row[5]:6.2f} ms  p99 {row[6]:6.2f} ms  failed {row[7]}",
                    flush=True,
                )
    finally:
        stop_server(proc)
    return rows, start_s


def api_floor(model: ce.FittedModel, label: str, seed: int, n: int = 300) -> list[tuple]:
    """The same queries through the Python API, one at a time in this process: per-call p50/p99 ms."""
    rng = np.random.default_rng(seed)
    items = model.items.ids[rng.integers(0, len(model.items), n)]
    users = model.users.ids[rng.integers(0, len(model.users), n)]
    calls = {
        "similar": lambda j: ce.similar_items(model, [int(items[j])], k=10),
        "recommend": lambda j: ce.recommend(model, [int(users[j])], k=10),
        "fold-in": lambda j: ce.recommend_from_ratings(
            model,
            pd.DataFrame({"item": rng.choice(model.items.ids, 10, replace=False), "rating": rng.integers(1, 6, 10).astype(float)}),
            k=10,
        ),
        "predict": lambda j: model.predict([int(users[j])], [int(items[j])]),
        "embedding": lambda j: (model.weight([int(items[j])]), model.bias([int(items[j])])),
    }
    rows = []
    for name, call in calls.items():
        for j in range(20):
            call(j)
        times = []
        for j in range(n):
            t0 = time.perf_counter()
            call(j)
            times.append(time.perf_counter() - t0)
        rows.append((label, name, 1000 * percentile(times, 50), 1000 * percentile(times, 99)))
        print(f"  {label:<10} {name:<10} Python API in-process: p50 {rows[-1][2]:.3f} ms  p99 {rows[-1][3]:.3f} ms", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "ml-100k"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-1m", action="store_true", help="only the MovieLens 100K artifact")
    parser.add_argument("--workers", type=int, default=1, help="collabemb serve --workers")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args()
    import tempfile

    rows, floors, starts, recalls = [], [], {}, []
    with tempfile.TemporaryDirectory(dir=HERE) as tmp:
        ml = movielens_artifact(Path(args.data), Path(tmp) / "ml-100k")
        print("MovieLens 100K:", flush=True)
        got, starts["ml-100k"] = serve_rows(Path(tmp) / "ml-100k", ml, "ml-100k", args)
        rows += got
        floors += api_floor(ce.load_model(Path(tmp) / "ml-100k"), "ml-100k", args.seed)
    if not args.skip_1m:
        million = CACHE / "bench-serve-1m-tastes"
        print("generated catalogue, 1M items:", flush=True)
        million_artifact(million)
        big = ce.load_model(million)
        got, starts["1M items"] = serve_rows(million, big, "1M items", args)
        rows += got
        floors += api_floor(big, "1M items", args.seed)
        recalls += recall_rows(big, "1M items", args.seed)

    def row_of(label: str, name: str, clients: int) -> tuple:
        return next(r for r in rows if r[:3] == (label, name, clients))

    checks = [
        ("ml-100k, 1 client: similar p50 <= 2 ms", row_of("ml-100k", "similar", 1)[5] <= 2.0),
        ("ml-100k, 1 client: recommend p50 <= 2 ms", row_of("ml-100k", "recommend", 1)[5] <= 2.0),
        *(
            (
                f"ml-100k, 32 clients, {name}: >= 1000 req/s and p99 <= 50 ms",
                row_of("ml-100k", name, 32)[4] >= 1000 and row_of("ml-100k", name, 32)[6] <= 50,
            )
            for name in ("similar", "recommend")
        ),
        ("ml-100k, fold-in recommend p99 <= 60 ms (every concurrency)", all(r[6] <= 60 for r in rows if r[:2] == ("ml-100k", "fold-in"))),
        ("ml-100k: server start to first answer <= 3 s", starts["ml-100k"] <= 3.0),
        ("no failed request", all(r[7] == 0 for r in rows)),
    ]
    if not args.skip_1m:
        checks.append(
            (
                "1M items: similar and recommend p99 <= 60 ms (every concurrency)",
                all(r[6] <= 60 for r in rows if r[0] == "1M items" and r[1] in ("similar", "recommend")),
            )
        )
    for name, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    lines = [
        "Load generator and server on the same 2-core machine (this process: asyncio, keep-alive HTTP/1.1, fixed request counts "
        f"{', '.join(f'{c} client(s): {n}' for c, n in REQUESTS.items())}, after {WARMUP} warm-up requests); `collabemb serve` with "
        f"{args.workers} worker(s). Latency is client side, per request.",
        "",
        "Start to first answered `/v1/similar`: " + ", ".join(f"{k} {v:.2f} s" for k, v in starts.items()) + ".",
        "",
        "| artifact | query | clients | requests | req/s | p50 ms | p99 ms | failed |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {a} | {q} | {c} | {n} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {f} |" for a, q, c, n, rps, p50, p99, f in rows],
        "",
        "The floor: the same queries through the Python API in one process, one at a time (300 calls each):",
        "",
        "| artifact | query | p50 ms | p99 ms |",
        "| --- | --- | ---: | ---: |",
        *[f"| {a} | {q} | {p50:.3f} | {p99:.3f} |" for a, q, p50, p99 in floors],
        "",
        *(
            [
                "What the 1M catalogue's HNSW indexes answer, against exact search (recall@10, the API's answers, which the "
                "server's equal):",
                "",
                "| artifact | query | recall@10 | queries |",
                "| --- | --- | ---: | ---: |",
                *[f"| {a} | {q} | {r:.3f} | {n} |" for a, q, r, n in recalls],
                "",
            ]
            if recalls
            else []
        ),
        "Bar: " + "; ".join(f"{name}: {'pass' if ok else 'FAIL'}" for name, ok in checks) + ".",
    ]
    if not args.no_write:
        append_results(
            HERE / "RESULTS.md",
            title="collabemb serve under load (benchmarks/serve.py)",
            command="python benchmarks/serve.py " + " ".join(sys.argv[1:]),
            body="\n".join(lines),
        )
    if not all(ok for _, ok in checks):
        sys.exit(1)


if __name__ == "__main__":
    main()
