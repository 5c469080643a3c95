"""The fast CPU engine: a compiled per-rating kernel that trains :class:`EmbeddingDotBias` in place.

Same model and objective as the autograd path in :mod:`collabemb.train`: per training rating
(user u, item i, rating r), with ``y = lo + span * sigmoid(<p_u, q_i> + b_u + b_i)``, minimise
``(r - y)**2 + weight_decay * (|p_u|**2 + |q_i|**2)``, the unknown slot trained by routing each
rating's user (and, independently, its item) to row 0 with probability ``unknown_frac``.

How it is fast:

* **One update per rating, row-wise Adagrad.** Each rating updates its two factor rows and two
  biases straight away. A factor row has *one* Adagrad accumulator (the running sum of the mean
  squared gradient over the row, as in FBGEMM's row-wise Adagrad), a bias its own. Adagrad is
  invariant to the scale of the gradient, so ``lr`` is about the first step's size in logit
  units, and rarely seen rows keep larger steps than popular ones. Measured while choosing (64
  factors, MovieLens 100K u1..u5 mean test RMSE): plain per-rating SGD ranged from 0.907 to 0.96
  over lr 0.005-0.1, weight_decay 0.01-0.16 and 10-80 epochs, its best setting overfitting by
  40 epochs; row-wise Adagrad stayed within 0.904-0.913 over lr 0.07-0.15, weight_decay
  0.08-0.12 and 10-20 epochs, and costs about 20% more time than SGD.
* **Compiled with numba** (``nogil``, so Python threads run kernels in parallel), with software
  prefetch of the rows a few ratings ahead: random access to 25M ratings' rows is memory-latency
  bound, and prefetching made the kernel about 3x faster (3-4 against 9-15 M ratings/s for one
  thread on a busy 2-core machine).
* **No copies of the model.** The kernel writes into numpy views of the module's own
  ``u_weight`` / ``i_weight`` / ``u_bias`` / ``i_bias`` tensors.
* **Shuffle once, then shuffle chunks.** The ratings are permuted once (by ``seed``) into three
  compact arrays (int32 user row, int32 item row, float32 rating: 12 bytes a rating); every epoch
  then visits chunks of :data:`CHUNK` consecutive ratings in a fresh random order, so an epoch
  costs no per-rating shuffling and no per-batch Python objects. The learning-rate schedule steps
  once per chunk.
* **Threads**: ``threads`` Python threads take tasks (runs of chunks) from a shared queue and
  update the tables without locks (Hogwild: two threads rarely touch the same row at once, and a
  lost update on a popular row does no harm). ``threads=1`` runs in the calling thread and is
  bit-for-bit deterministic for a fixed seed. Threads wait on nothing, so they do not spin when
  another process holds a core (OpenMP-style spinning slowed torch 50x in that situation).

The unknown-slot routing draws come from a counter-based hash of (epoch key, position), so they
do not depend on the number of threads or the order in which tasks are run.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from collabemb.models import EmbeddingDotBias

#: Ratings per chunk: the unit of per-epoch shuffling and of the learning-rate schedule.
CHUNK = 1024
#: Ratings per task handed to a thread (rounded to whole chunks): small enough that progress,
#: Ctrl-C and load balancing react within tens of milliseconds.
TASK_RATINGS = 1 << 18
#: Prefetch the rows of the rating this many positions ahead.
PREFETCH_AHEAD = 6
#: Adagrad's epsilon inside the square root.
ADAGRAD_EPS = 1e-8
#: Names of the optimiser state tensors (one accumulator per row of each table).
STATE_NAMES = ("u_weight", "i_weight", "u_bias", "i_bias")

# fastmath without 'nnan'/'ninf', so a diverging fit still shows up as a non-finite loss
_FASTMATH = {"reassoc", "contract", "arcp", "nsz", "afn"}


def _jit(fn):
    """``numba.njit`` with an on-disk cache when a cache directory is writable, without otherwise."""
    try:
        return numba.njit(nogil=True, fastmath=_FASTMATH, cache=True)(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(nogil=True, fastmath=_FASTMATH, cache=False)(fn)


@intrinsic
def _prefetch(typingctx, table, row, col):
    """Hint the CPU to fetch ``table[row, col]``'s cache line (LLVM's prefetch; no effect on results)."""
    sig = types.void(table, row, col)

    def codegen(context, builder, signature, args):
        tabty = signature.args[0]
        tab = context.make_array(tabty)(context, builder, args[0])
        r = context.cast(builder, args[1], signature.args[1], types.intp)
        c = context.cast(builder, args[2], signature.args[2], types.intp)
        ptr = cgutils.get_item_pointer(context, builder, tabty, tab, [r, c], wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        name = "llvm.prefetch.p0" if str(i8p) == "ptr" else "llvm.prefetch.p0i8"  # opaque or typed pointers (LLVM < 15)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), name)
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])  # read, high locality, data
        return context.get_dummy_value()

    return sig, codegen


@_jit
def _mix64(x):
    """splitmix64's finaliser: a well-mixed uint64 from a counter."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@_jit
def _adagrad_chunks(
    users, items, ratings, chunks, chunk_lr, chunk_size,
    p, q, bu, bi, gp, gq, gbu, gbi,
    lo, span, weight_decay, route_below, key,
):  # fmt: skip
    """Train on ``chunks`` (in that order) of the shuffled ratings; return (sum sq error, count).

    users, items: (n,) int32 rows; ratings: (n,) float32. chunks: (c,) int64 chunk numbers,
    chunk_lr: (c,) float32 learning rate for each. p, q: (rows, k) float32 factor tables; bu, bi:
    (rows,) float32 biases; gp, gq, gbu, gbi: their Adagrad accumulators. Rating m's user goes to
    row 0 when the high 32 bits of mix64(key + m) are below ``route_below``, its item when the low
    32 bits are. The squared error is summed over ratings routed nowhere.
    """
    n = ratings.shape[0]
    k = p.shape[1]
    inv_k = np.float32(1.0 / k)
    eps = np.float32(ADAGRAD_EPS)
    one = np.float32(1.0)
    sq = 0.0
    count = 0
    for j in range(chunks.shape[0]):
        lr = chunk_lr[j]
        start = chunks[j] * chunk_size
        stop = min(start + chunk_size, n)
        for m in range(start, stop):
            ahead = m + PREFETCH_AHEAD
            if ahead < stop:
                ua = users[ahead]
                ia = items[ahead]
                for f in range(0, k, 16):  # 16 float32 = one 64-byte line
                    _prefetch(p, ua, f)
                    _prefetch(q, ia, f)
                _prefetch(p, ua, k - 1)
                _prefetch(q, ia, k - 1)
            u = users[m]
            i = items[m]
            h = _mix64(key + np.uint64(m))
            route_u = (h >> np.uint64(32)) < route_below
            route_i = (h & np.uint64(0xFFFFFFFF)) < route_below
            if route_u:
                u = 0
            if route_i:
                i = 0
            z = bu[u] + bi[i]
            for f in range(k):
                z += p[u, f] * q[i, f]
            s = one / (one + np.float32(math.exp(-z)))
            e = ratings[m] - (lo + span * s)
            if not (route_u or route_i):
                sq += e * e
                count += 1
            g = e * span * s * (one - s)  # -1/2 d(r - y)^2 / dz
            acc = gbu[u] + g * g
            gbu[u] = acc
            bu[u] += lr * g / np.float32(math.sqrt(acc + eps))
            acc = gbi[i] + g * g
            gbi[i] = acc
            bi[i] += lr * g / np.float32(math.sqrt(acc + eps))
            norm_u = np.float32(0.0)
            norm_i = np.float32(0.0)
            for f in range(k):
                du = g * q[i, f] - weight_decay * p[u, f]
                di = g * p[u, f] - weight_decay * q[i, f]
                norm_u += du * du
                norm_i += di * di
            acc = gp[u] + norm_u * inv_k
            gp[u] = acc
            step_u = lr / np.float32(math.sqrt(acc + eps))
            acc = gq[i] + norm_i * inv_k
            gq[i] = acc
            step_i = lr / np.float32(math.sqrt(acc + eps))
            for f in range(k):
                pf = p[u, f]
                qf = q[i, f]
                p[u, f] = pf + step_u * (g * qf - weight_decay * pf)
                q[i, f] = qf + step_i * (g * pf - weight_decay * qf)
    return sq, count


@dataclass
class EpochResult:
    """What one finished pass did: squared error summed over ``count`` plain ratings, last lr."""

    sq_sum: float
    count: int
    last_lr: float


class FastEngine:
    """Row-wise Adagrad over shuffled chunks, run by the compiled kernel on the model's own tensors.

    Args:
        model: a CPU, float32 :class:`EmbeddingDotBias`; its tables are updated in place.
        users, items: (n,) integer table rows of the training ratings (0 never occurs here).
        ratings: (n,) float32 ratings.
        seed: seeds the one-off shuffle, each epoch's chunk order and the unknown-slot routing.
        lr_at: the schedule: ``lr_at(steps, steps_per_epoch)`` maps (m,) int64 global step
            numbers (one step per chunk, counted from 0 at the first epoch) to (m,) learning rates.
        weight_decay, unknown_frac: as in :func:`collabemb.fit`.
        threads: kernel threads; 1 is deterministic.
    """

    def __init__(
        self, model: EmbeddingDotBias, users: np.ndarray, items: np.ndarray, ratings: np.ndarray, *,
        seed: int, lr_at: Callable[[np.ndarray, int], np.ndarray], weight_decay: float, unknown_frac: float, threads: int,
    ):  # fmt: skip
        tables = {name: getattr(model, name).weight for name in STATE_NAMES}
        for name, t in tables.items():
            if t.device.type != "cpu" or t.dtype != torch.float32 or not t.is_contiguous():
                raise ValueError(f"the fast engine trains contiguous float32 CPU tables; {name} is {t.dtype} on {t.device}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.seed = int(seed) & (2**64 - 1)
        self.threads = int(threads)
        self.lr_at = lr_at
        self.n = len(ratings)
        self.n_chunks = max(1, -(-self.n // CHUNK))
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0]))
        perm = rng.permutation(self.n)
        self.users = np.asarray(users, dtype=np.int32)[perm]
        self.items = np.asarray(items, dtype=np.int32)[perm]
        self.ratings = np.asarray(ratings, dtype=np.float32)[perm]
        del perm
        # numpy views of the module's tensors: the kernel writes into the model itself
        self._p = tables["u_weight"].detach().numpy()
        self._q = tables["i_weight"].detach().numpy()
        self._bu = tables["u_bias"].detach().numpy().reshape(-1)
        self._bi = tables["i_bias"].detach().numpy().reshape(-1)
        self.state = {name: torch.zeros(t.shape[0], dtype=torch.float32) for name, t in tables.items()}
        self._acc = [self.state[name].numpy() for name in STATE_NAMES]
        lo, hi = model.y_range
        self._lo, self._span = np.float32(lo), np.float32(hi - lo)
        self._wd = np.float32(weight_decay)
        self._route_below = np.uint64(min(int(round(unknown_frac * 2**32)), 2**32))
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="collabemb") if self.threads > 1 else None

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the Adagrad accumulators saved from :attr:`state` (checkpoints)."""
        for name in STATE_NAMES:
            self.state[name].copy_(state[name])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def run_epoch(self, epoch: int, stop: threading.Event, tick: Callable[[int], None]) -> EpochResult | None:
        """One pass over the ratings (epoch counts from 1). Returns None when ``stop`` was set first.

        ``tick(n)`` is called in the calling thread as ratings are done (for a progress bar).
        """
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1, epoch]))
        order = rng.permutation(self.n_chunks).astype(np.int64)
        key = np.uint64(rng.integers(0, 2**63))
        steps = (epoch - 1) * self.n_chunks + np.arange(self.n_chunks, dtype=np.int64)
        lrs = np.asarray(self.lr_at(steps, self.n_chunks), dtype=np.float32)
        per_task = max(1, min(TASK_RATINGS // CHUNK, -(-self.n_chunks // (4 * self.threads))))
        tasks = [(order[s : s + per_task], lrs[s : s + per_task]) for s in range(0, self.n_chunks, per_task)]

        def run(chunks: np.ndarray, chunk_lr: np.ndarray) -> tuple[float, int]:
            return _adagrad_chunks(
                self.users, self.items, self.ratings, chunks, chunk_lr, CHUNK,
                self._p, self._q, self._bu, self._bi, *self._acc,
                self._lo, self._span, self._wd, self._route_below, key,
            )  # fmt: skip

        def size(chunks: np.ndarray) -> int:
            return int(np.minimum((chunks + 1) * CHUNK, self.n).sum() - (chunks * CHUNK).sum())

        sq, count = 0.0, 0
        if self._pool is None:
            for chunks, chunk_lr in tasks:
                if stop.is_set():
                    return None
                s, c = run(chunks, chunk_lr)
                sq, count = sq + s, count + c
                tick(size(chunks))
        else:
            queue = iter(tasks)
            lock = threading.Lock()
            done = [0]

            def worker() -> tuple[float, int]:
                total_sq, total_count = 0.0, 0
                while not stop.is_set():
                    with lock:
                        task = next(queue, None)
                    if task is None:
                        break
                    s, c = run(*task)
                    total_sq, total_count = total_sq + s, total_count + c
                    with lock:
                        done[0] += size(task[0])
                return total_sq, total_count

            futures = [self._pool.submit(worker) for _ in range(self.threads)]
            reported = 0
            try:
                while True:
                    finished, pending = wait(futures, timeout=0.1, return_when=FIRST_EXCEPTION)
                    with lock:
                        now = done[0]
                    if now > reported:
                        tick(now - reported)
                        reported = now
                    if not pending or any(f.exception() is not None for f in finished):
                        break
            except BaseException:  # KeyboardInterrupt while waiting: let the workers finish their task
                stop.set()
                wait(futures)
                raise
            for f in futures:
                s, c = f.result()
                sq, count = sq + s, count + c
            if stop.is_set():
                return None
        return EpochResult(sq, count, float(lrs[-1]))


def default_threads() -> int:
    """Kernel threads when none are asked for: the CPUs this process may use, at most 8.

    On the 2-core benchmark machine 2 threads trained 25M ratings about twice as fast as one
    (benchmarks/RESULTS.md); beyond 8, Hogwild's shared rows and memory bandwidth are untested.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernel on a tiny problem; the first fit does it anyway."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", numba.NumbaWarning)
        z = np.zeros(2, dtype=np.float32)
        t = np.zeros((2, 4), dtype=np.float32)
        _adagrad_chunks(
            np.zeros(1, np.int32), np.zeros(1, np.int32), np.ones(1, np.float32), np.zeros(1, np.int64),
            np.ones(1, np.float32), CHUNK, t, t.copy(), z, z.copy(), z.copy(), z.copy(), z.copy(), z.copy(),
            np.float32(0.5), np.float32(5.0), np.float32(0.1), np.uint64(0), np.uint64(1),
        )  # fmt: skip
