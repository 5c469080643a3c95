"""The fast CPU engine: a compiled per-rating kernel that trains :class:`EmbeddingDotBias` in place.

Same model and objective as :mod:`collabemb.engines.autograd`: per training rating
(user u, item i, rating r), with ``y = lo + span * sigmoid(<p_u, q_i> + b_u + b_i)``, minimise
``(r - y)**2 + wd_u * |p_u|**2 + wd_i * |q_i|**2`` (``wd`` the row's ``weight_decay``, scaled by its rating count
when ``frequency_exponent`` is not 1: :func:`~collabemb.engines.row_decays`), the unknown slot trained by routing each
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
* **Shuffle once, then shuffle chunks.** Every rating gets a 64-bit hash of its (user row, item
  row) pair and the fit's seed (:func:`_pair_hash`); the hash puts it in one of ``ceil(n / CHUNK)``
  chunks (about :data:`CHUNK` ratings each) and orders it within the chunk. The ratings are laid
  out once in that order as three compact arrays (int32 user row, int32 item row, float32 rating:
  12 bytes a rating); every epoch then visits the chunks in a fresh random order, so an epoch
  costs no per-rating shuffling and no per-batch Python objects. The learning-rate schedule steps
  once per chunk. Because a rating's place depends on its pair and the seed only, never on its
  position in the input, a process holding only some users' ratings lays them out exactly as one
  holding all of them: what lets :mod:`collabemb.engines.dsgd` train the same model on N
  processes.
* **Threads, deterministically** (DSGD-style strata): with ``threads=T > 1`` every user row and
  every item row belongs to one of T blocks (a seeded draw, fixed for the fit). Each epoch the
  routed ratings are counting-sorted, in O(n) by the T threads, into a reused buffer of T*T cells
  (user block, item block; 12 bytes a rating), each cell in the epoch's chunk order. Then T
  strata: in stratum s, thread t trains cell (t, (t + s) % T), and all threads meet before the
  next. No two threads ever touch the same row or Adagrad accumulator at once and each thread's
  sequence of updates is fixed, so the same seed and thread count give identical weights
  whatever the timing. ``threads=1`` runs the shuffled ratings in the calling thread, without
  the buffer. Threads block rather than spin between strata, so they do not burn a core another
  process holds (OpenMP-style spinning slowed torch 50x in that situation).

The unknown-slot routing draws come from a hash of (epoch key, the rating's pair hash), so they
do not depend on the number of threads, the order in which tasks are run, or the process.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from collabemb.engines import EpochResult, compiled, row_decays

if TYPE_CHECKING:
    from collabemb.interactions import Interactions
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
    """:func:`~collabemb.engines.compiled` with the kernel's fastmath flags."""
    return compiled(fn, fastmath=_FASTMATH)


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
def _pair_hash(fit_key, u, i):
    """The uint64 hash of one rating's (user row, item row) pair under the fit's key: a bijection of the
    pair, so two ratings share it only when they rate the same pair."""
    return _mix64(fit_key ^ ((np.uint64(u) << np.uint64(32)) | np.uint64(i)))


@_jit
def _routed(fit_key, key, route_below, u, i):
    """One rating's rows after the epoch's unknown-slot routing, and its pair hash: ``(u, i, h)``. Its user goes to
    row 0 when the high 32 bits of mix64(key + h) are below ``route_below``, its item when the low 32 bits are."""
    h = _pair_hash(fit_key, u, i)
    r = _mix64(key + h)
    if (r >> np.uint64(32)) < route_below:
        u = 0
    if (r & np.uint64(0xFFFFFFFF)) < route_below:
        i = 0
    return u, i, h


@_jit
def _chunk_of(h, n_chunks):
    """The chunk (0..n_chunks-1) of pair hash ``h``: its top 32 bits scaled, so chunks are contiguous in h."""
    return np.int64(((h >> np.uint64(32)) * np.uint64(n_chunks)) >> np.uint64(32))


@_jit
def _hash_order(users, items, fit_key, n_chunks):
    """The fit's layout of the ratings: ``(order, chunk_start)``.

    users, items: (n,) int32 rows. Returns (n,) int64 ``order`` (rating ``order[j]`` goes to place j) and
    (n_chunks + 1,) int64 ``chunk_start`` (chunk c holds places ``chunk_start[c]:chunk_start[c + 1]``):
    ratings sorted by pair hash (ties, the same pair rated twice, in input order), which sorts them by
    chunk. O(n) counting sort by chunk, then a stable sort of each chunk's few hashes."""
    n = users.shape[0]
    chunk_start = np.zeros(n_chunks + 1, np.int64)
    for m in range(n):
        chunk_start[_chunk_of(_pair_hash(fit_key, users[m], items[m]), n_chunks) + 1] += 1
    for c in range(n_chunks):
        chunk_start[c + 1] += chunk_start[c]
    fill = chunk_start[:-1].copy()
    order = np.empty(n, np.int64)
    for m in range(n):
        c = _chunk_of(_pair_hash(fit_key, users[m], items[m]), n_chunks)
        order[fill[c]] = m
        fill[c] += 1
    for c in range(n_chunks):
        a, b = chunk_start[c], chunk_start[c + 1]
        hashes = np.empty(b - a, np.uint64)
        for j in range(a, b):
            hashes[j - a] = _pair_hash(fit_key, users[order[j]], items[order[j]])
        order[a:b] = order[a:b][np.argsort(hashes, kind="mergesort")]
    return order, chunk_start


@_jit
def _adagrad_blocks(
    users, items, ratings, starts, stops, block_lr, p, q, bu, bi, gp, gq, gbu, gbi, lo, span, decay_u, decay_i, route_below, key, fit_key
):
    """Train on blocks of ratings in the given order; return (sum sq error, count).

    users, items: (n,) int32 rows; ratings: (n,) float32. Block j is ratings
    ``[starts[j], stops[j])``, trained with learning rate ``block_lr[j]``.
    p, q: (rows, k) float32 factor tables; bu, bi: (rows,) float32 biases; gp, gq, gbu, gbi: their
    Adagrad accumulators; decay_u, decay_i: (rows,) float32 per-row L2 strengths
    (:func:`~collabemb.engines.row_decays`). Rating m's user goes to row 0 when the high 32 bits of
    mix64(key + h) are below ``route_below`` (h: its :func:`_pair_hash` under ``fit_key``), its item when the
    low 32 bits are (``route_below=0``: ratings already routed). The squared error is summed over ratings on no row 0 (training rows are
    never 0, so: routed nowhere).

    One kernel for both paths (a helper function called per rating, even one numba inlines,
    halved its speed): the one-thread path passes chunk starts of the shuffled ratings, the
    multi-thread path consecutive blocks of one cell of :func:`_bucket_cells`'s output.
    """
    k = p.shape[1]
    inv_k = np.float32(1.0 / k)
    eps = np.float32(ADAGRAD_EPS)
    one = np.float32(1.0)
    sq = 0.0
    count = 0
    for j in range(starts.shape[0]):
        lr = block_lr[j]
        stop = stops[j]
        for m in range(starts[j], stop):
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
            if route_below > 0:
                h = _mix64(key + _pair_hash(fit_key, u, i))
                if (h >> np.uint64(32)) < route_below:
                    u = 0
                if (h & np.uint64(0xFFFFFFFF)) < route_below:
                    i = 0
            wd_u = decay_u[u]
            wd_i = decay_i[i]
            z = bu[u] + bi[i]
            for f in range(k):
                z += p[u, f] * q[i, f]
            s = one / (one + np.float32(math.exp(-z)))
            e = ratings[m] - (lo + span * s)
            if u != 0 and i != 0:
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
                du = g * q[i, f] - wd_u * p[u, f]
                di = g * p[u, f] - wd_i * q[i, f]
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
                p[u, f] = pf + step_u * (g * qf - wd_u * pf)
                q[i, f] = qf + step_i * (g * pf - wd_i * qf)
    return sq, count


@_jit
def _bucket_cells(
    users,
    items,
    ratings,
    chunk_start,
    chunks,
    ublock,
    iblock,
    strata,
    route_below,
    key,
    fit_key,
    offsets,
    out_users,
    out_items,
    out_ratings,
):
    """Route ``chunks`` of the ratings (as :func:`_adagrad_blocks` does) and sort them into cells.

    Chunk c is ratings ``chunk_start[c]:chunk_start[c + 1]``. Rating m (routed rows u, i) belongs to cell
    ``ublock[u] * strata + iblock[i]``. Without ``out_users`` (an empty array) this counts:
    ``offsets[c] += 1`` per rating. Otherwise it writes the routed rating at ``out_*[offsets[c]]`` and
    advances ``offsets[c]``: a counting sort that keeps the order of ``chunks`` within each cell.
    """
    write = out_users.shape[0] > 0
    for j in range(chunks.shape[0]):
        for m in range(chunk_start[chunks[j]], chunk_start[chunks[j] + 1]):
            u, i, _ = _routed(fit_key, key, route_below, users[m], items[m])
            c = ublock[u] * strata + iblock[i]
            if write:
                pos = offsets[c]
                out_users[pos] = u
                out_items[pos] = i
                out_ratings[pos] = ratings[m]
                offsets[c] = pos + 1
            else:
                offsets[c] += 1


class FastEngine:
    """Row-wise Adagrad over shuffled chunks, run by the compiled kernel on the model's own tensors.

    Args:
        model: a CPU, float32 :class:`EmbeddingDotBias`; its tables are updated in place.
        data: the encoded training ratings (its rows are the model's; 0 never occurs there).
        seed: seeds the one-off shuffle, each epoch's chunk order and the unknown-slot routing.
        lr_at: the schedule: ``lr_at(steps, steps_per_epoch)`` maps (m,) int64 global step
            numbers (one step per chunk, counted from 0 at the first epoch) to (m,) learning rates.
        weight_decay, frequency_exponent, unknown_frac: as in :func:`collabemb.fit`.
        threads: kernel threads (stratified when > 1: :meth:`_stratified`); every count is
            deterministic for a seed.
    """

    def __init__(
        self,
        model: EmbeddingDotBias,
        data: Interactions,
        *,
        seed: int,
        lr_at: Callable[[np.ndarray, int], np.ndarray],
        weight_decay: float,
        unknown_frac: float,
        threads: int,
        frequency_exponent: float = 1.0,
    ):
        self._bind(model, data, seed, lr_at, weight_decay, unknown_frac, threads, frequency_exponent)
        users, items = np.asarray(data.user_rows, dtype=np.int32), np.asarray(data.item_rows, dtype=np.int32)
        order, self.chunk_start = _hash_order(users, items, self.fit_key, self.n_chunks)
        self.users, self.items = users[order], items[order]
        self.ratings = np.asarray(data.values, dtype=np.float32)[order]
        del order
        if self.threads > 1:  # the bucketed copy of the ratings, refilled every epoch
            self._cell_users = np.empty(self.n, np.int32)
            self._cell_items = np.empty(self.n, np.int32)
            self._cell_ratings = np.empty(self.n, np.float32)

    def _bind(self, model, data, seed, lr_at, weight_decay, unknown_frac, threads, frequency_exponent) -> None:
        """Everything but the layout of the ratings: the module's tables as numpy views, the Adagrad state,
        the per-row decays, the fit's keys and (threads > 1) each row's block and the thread pool."""
        tables = {name: getattr(model, name).weight for name in STATE_NAMES}
        for name, t in tables.items():
            if t.device.type != "cpu" or t.dtype != torch.float32 or not t.is_contiguous():
                raise ValueError(f"the fast engine trains contiguous float32 CPU tables; {name} is {t.dtype} on {t.device}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.seed = int(seed) & (2**64 - 1)
        self.threads = int(threads)
        self.lr_at = lr_at
        self.n = len(data)
        self.n_chunks = max(1, -(-self.n // CHUNK))
        self.fit_key = fit_key(self.seed)
        # numpy views of the module's tensors: the kernel writes into the model itself
        self._p = tables["u_weight"].detach().numpy()
        self._q = tables["i_weight"].detach().numpy()
        self._bu = tables["u_bias"].detach().numpy().reshape(-1)
        self._bi = tables["i_bias"].detach().numpy().reshape(-1)
        self.state = {name: torch.zeros(t.shape[0], dtype=torch.float32) for name, t in tables.items()}
        self._acc = [self.state[name].numpy() for name in STATE_NAMES]
        lo, hi = model.y_range
        self._lo, self._span = np.float32(lo), np.float32(hi - lo)
        n_user_rows, n_item_rows = self._p.shape[0], self._q.shape[0]
        self._decay = row_decays(data.user_rows, data.item_rows, n_user_rows, n_item_rows, weight_decay, frequency_exponent)
        self._route_below = route_below(unknown_frac)
        self._pool = None
        if self.threads > 1:
            self._ublock, self._iblock = row_blocks(self.seed, self.threads, n_user_rows, n_item_rows)
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="collabemb")

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
        order, key, lrs = epoch_plan(self.seed, epoch, self.n_chunks, self.lr_at)
        if self._pool is None:
            result = self._one_thread(order, lrs, key, stop, tick)
        else:
            result = self._stratified(order, lrs, key, stop, tick)
        return None if result is None else EpochResult(result[0], result[1], float(lrs[-1]))

    def _one_thread(self, order, lrs, key, stop, tick) -> tuple[float, int] | None:
        per_task = max(1, TASK_RATINGS // CHUNK)
        sq, count = 0.0, 0
        tables = (self._p, self._q, self._bu, self._bi, *self._acc, self._lo, self._span, *self._decay)
        source = (self.users, self.items, self.ratings)
        for s in range(0, self.n_chunks, per_task):
            if stop.is_set():
                return None
            starts, stops = self.chunk_start[order[s : s + per_task]], self.chunk_start[order[s : s + per_task] + 1]
            sq_, count_ = _adagrad_blocks(*source, starts, stops, lrs[s : s + per_task], *tables, self._route_below, key, self.fit_key)
            sq, count = sq + sq_, count + count_
            tick(int((stops - starts).sum()))
        return sq, count

    def _stratified(self, order, lrs, key, stop, tick) -> tuple[float, int] | None:
        """DSGD-style strata: with T threads, T user blocks and T item blocks of rows.

        The epoch's routed ratings are counting-sorted into T*T cells (user block, item block),
        each in the epoch's chunk order (:meth:`_bucket`); in stratum s, thread t trains cell
        (t, (t + s) % T), then all threads meet. No two threads touch the same row or accumulator
        at once and every thread's sequence of updates is fixed, so the weights depend on the
        seed and T only.
        """
        T = self.threads
        cell_start, totals = self._bucket(order, key, stop)
        lock = threading.Lock()
        done = [0]
        tables = (self._p, self._q, self._bu, self._bi, *self._acc, self._lo, self._span, *self._decay)
        cells = (self._cell_users, self._cell_items, self._cell_ratings)

        def train(stratum: int, t: int) -> tuple[float, int] | None:
            c = t * T + (t + stratum) % T
            lo, hi = int(cell_start[c]), int(cell_start[c] + totals[c])
            piece = max(1, TASK_RATINGS // CHUNK) * CHUNK  # whole blocks, so the lr steps do not depend on it
            sq, cnt = 0.0, 0
            for a in range(lo, hi, piece):
                if stop.is_set():
                    return None
                b = min(a + piece, hi)
                starts, stops, block_lr = cell_blocks(a, b, lo, hi, stratum, T, lrs)
                sq_, cnt_ = _adagrad_blocks(*cells, starts, stops, block_lr, *tables, np.uint64(0), key, self.fit_key)
                sq, cnt = sq + sq_, cnt + cnt_
                with lock:
                    done[0] += b - a
            return sq, cnt

        sq, cnt, reported = 0.0, 0, 0
        for stratum in range(T):
            results = self._in_parallel([lambda t=t, s=stratum: train(s, t) for t in range(T)], stop, lock, done, tick, reported)
            reported = done[0]
            if stop.is_set() or any(r is None for r in results):
                return None
            for sq_, cnt_ in results:  # a fixed order: the sum does not depend on timing either
                sq, cnt = sq + sq_, cnt + cnt_
        return sq, cnt

    def _bucket(self, order, key, stop) -> tuple[np.ndarray, np.ndarray]:
        """Route the epoch's ratings and counting-sort them into the T*T cells, in parallel.

        Returns ``(cell_start, totals)``: (T*T,) int64 first position and size of each cell in
        the cell buffers. Each of the T threads counts, then writes, one slice of the chunk order.
        """
        T = self.threads
        slices = np.array_split(order, T)
        route = (self._ublock, self._iblock, T, self._route_below, key, self.fit_key)
        source = (self.users, self.items, self.ratings, self.chunk_start)
        none_i, none_f = np.empty(0, np.int32), np.empty(0, np.float32)

        def count(w: int) -> np.ndarray:
            counts = np.zeros(T * T, np.int64)
            _bucket_cells(*source, slices[w], *route, counts, none_i, none_i, none_f)
            return counts

        counts = np.stack(self._in_parallel([lambda w=w: count(w) for w in range(T)], stop))
        totals = counts.sum(axis=0)
        cell_start = np.concatenate([[0], np.cumsum(totals)[:-1]])
        offsets = cell_start + np.cumsum(counts, axis=0) - counts  # slice w's first place in each cell
        cells = (self._cell_users, self._cell_items, self._cell_ratings)

        def scatter(w: int) -> None:
            _bucket_cells(*source, slices[w], *route, offsets[w].copy(), *cells)

        self._in_parallel([lambda w=w: scatter(w) for w in range(T)], stop)
        return cell_start, totals

    def _in_parallel(self, jobs, stop, lock=None, done=None, tick=None, reported=0) -> list:
        """Run ``jobs`` (one per pool thread) to the end, ticking progress; their results in order."""
        futures = [self._pool.submit(job) for job in jobs]
        try:
            while True:
                finished, pending = wait(futures, timeout=0.1, return_when=FIRST_EXCEPTION)
                if tick is not None:
                    with lock:
                        now = done[0]
                    if now > reported:
                        tick(now - reported)
                        reported = now
                if not pending or any(f.exception() is not None for f in finished):
                    break
        except BaseException:  # KeyboardInterrupt while waiting: let the workers finish their piece
            stop.set()
            wait(futures)
            raise
        return [f.result() for f in futures]


def fit_key(seed: int) -> np.uint64:
    """The key of the fit's pair hashes (:func:`_pair_hash`), from its seed."""
    return np.uint64(np.random.default_rng(np.random.SeedSequence([int(seed) & (2**64 - 1), 0])).integers(0, 2**63))


def route_below(unknown_frac: float) -> np.uint64:
    """The routing threshold of ``unknown_frac``: a side goes to row 0 when 32 bits of its hash are below it."""
    return np.uint64(min(round(unknown_frac * 2**32), 2**32))


def row_blocks(seed: int, blocks: int, n_user_rows: int, n_item_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user row's and item row's block (0..blocks-1), a seeded draw fixed for the fit: ((n_user_rows,),
    (n_item_rows,)) int32."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & (2**64 - 1), 2]))
    return rng.integers(0, blocks, n_user_rows).astype(np.int32), rng.integers(0, blocks, n_item_rows).astype(np.int32)


def epoch_plan(seed: int, epoch: int, n_chunks: int, lr_at: Callable) -> tuple[np.ndarray, np.uint64, np.ndarray]:
    """Epoch ``epoch``'s (from 1) chunk order ((n_chunks,) int64), routing key and (n_chunks,) float32 learning rates."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & (2**64 - 1), 1, epoch]))
    order = rng.permutation(n_chunks).astype(np.int64)
    key = np.uint64(rng.integers(0, 2**63))
    steps = (epoch - 1) * n_chunks + np.arange(n_chunks, dtype=np.int64)
    return order, key, np.asarray(lr_at(steps, n_chunks), dtype=np.float32)


def cell_blocks(a: int, b: int, lo: int, hi: int, stratum: int, strata: int, lrs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kernel blocks of places ``a:b`` of a cell laid out at ``lo:hi``, trained in stratum ``stratum`` of ``strata``:
    ``(starts, stops, learning rates)``, blocks of :data:`CHUNK` places, each at the lr of the epoch's progress
    there (the stratum, plus the share of the cell done), so the steps depend on the cell only."""
    starts = np.arange(a, b, CHUNK, dtype=np.int64)
    steps = (stratum * (hi - lo) + (starts - lo)) * len(lrs) // (strata * (hi - lo))
    return starts, np.minimum(starts + CHUNK, b), lrs[np.minimum(steps, len(lrs) - 1)]


def default_threads() -> int:
    """Kernel threads when none are asked for: the CPUs this process may use, at most 8.

    Beyond 8, the strata's load balance and memory bandwidth are untested.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernels on a tiny problem; the first fit does it anyway."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", numba.NumbaWarning)
        z = np.zeros(2, dtype=np.float32)
        t = np.zeros((2, 4), dtype=np.float32)
        i32, f32 = np.zeros(1, np.int32), np.ones(1, np.float32)
        tables = (t, t.copy(), z, z.copy(), z.copy(), z.copy(), z.copy(), z.copy())
        consts = (np.float32(0.5), np.float32(5.0), np.full(2, 0.1, np.float32), np.full(2, 0.1, np.float32))
        one = np.ones(1, np.int64)
        for threshold in (np.uint64(0), np.uint64(1)):
            _adagrad_blocks(i32, i32, f32, np.zeros(1, np.int64), one, f32, *tables, *consts, threshold, np.uint64(1), np.uint64(2))
        blocks, bounds = np.zeros(2, np.int32), np.array([0, 1], np.int64)
        for out in ((np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.float32)), (i32.copy(), i32.copy(), f32.copy())):
            _bucket_cells(
                i32,
                i32,
                f32,
                bounds,
                np.zeros(1, np.int64),
                blocks,
                blocks,
                1,
                np.uint64(0),
                np.uint64(1),
                np.uint64(2),
                np.zeros(1, np.int64),
                *out,
            )
        _hash_order(i32, i32, np.uint64(2), 1)
