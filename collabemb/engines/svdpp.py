"""The history-aware engine (``model="svdpp"``): the fast engine's kernel with Koren's implicit term.

The model (Koren 2008, "Factorization meets the neighborhood", SVD++) gives user ``u`` the
effective vector ``v_u = p_u + |N(u)|^-1/2 * sum_{j in N(u)} y_j``, where ``N(u)`` are the items
``u`` rated in training and ``y_j`` is item ``j``'s *history vector* (a third table, (n_item_rows,
k)). Predictions are the dot model's with ``v_u`` for the user vector:
``y = lo + span * sigmoid(<v_u, q_i> + b_u + b_i)``. Per rating the objective is the fast engine's,
``(r - y)**2 + weight_decay * (|p_u|**2 + |q_i|**2)``, plus ``history_weight_decay * |y_j|**2`` on
the history vectors a user's pass touches; the unknown slot is trained as there (row 0 has no
history, so its effective vector is ``p_0``).

How a pass goes (ratings grouped by user, so each user's history sum is formed once):

* Every epoch the ratings are routed to the unknown slot (the fast engine's counter-based draws)
  and counting-sorted, stably, into T*T cells (user block, item block, as the fast engine's
  strata) and inside each cell by the user's place in the epoch's random user order: a cell is a
  run of *user groups*.
* For a user group: its history sum over the items of the cell's item block is recomputed from
  the live ``y`` (those rows belong to this thread in this stratum) and stored as that block's
  part; the parts of the other blocks are the ones stored when the user last passed them (no
  other thread writes them meanwhile: reading them is deterministic). The group's ratings update
  ``p_u``, ``q_i`` and the biases as the fast kernel does (row-wise Adagrad, the same step sizes)
  with ``v_u`` in place of ``p_u``, and add up the gradient with respect to the history sum;
  then each history vector of the block's items takes one step with it (learning rate
  ``history_lr * lr``), row-wise Adagrad whose accumulator takes the mean square of that user
  gradient (the same for all the user's items, so one pass over each history row instead of two:
  about 1.4x the speed at the same ml-100k RMSE). With ``threads=1`` there is one block and the history sum
  is always fresh, as in Koren's per-user SGD.
* After the pass the module's ``u_weight`` is set to the effective vectors ``v_u`` (recomputed
  from the final ``y``), so the module *is* a dot model that predicts as the svdpp model does:
  validation, checkpoints, exports, indexes and recommendations read it unchanged. The engine
  keeps the user's own vectors ``p_u`` apart; :attr:`history_table` is ``y`` (for new users,
  whose vector comes straight from the items they rated).

Deterministic: the same seed and thread count give identical weights, whatever the timing.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from collabemb.engines import EpochResult
from collabemb.engines.fast import ADAGRAD_EPS, PREFETCH_AHEAD, TASK_RATINGS, FastEngine, _jit, _mix64, _prefetch

if TYPE_CHECKING:
    from collabemb.interactions import Interactions, SeenItems
    from collabemb.models import EmbeddingDotBias

#: The engine's own state tensors (besides the fast engine's Adagrad accumulators): the users' own
#: vectors p, the history vectors y and their accumulators, and the stored per-block history sums.
HISTORY_STATE = ("own_user", "history", "history_acc", "history_parts")


@_jit
def _svdpp_groups(
    users,
    items,
    ratings,
    gstart,
    groups,
    lr_of,
    p,
    q,
    bu,
    bi,
    gp,
    gq,
    gbu,
    gbi,
    y,
    gy,
    parts,
    hist_ptr,
    hist_items,
    norm,
    block,
    consts,
    route_below,
    key,
    row0_user,
    row0_item,
    decay_u,
    decay_i,
):
    """Train the user groups ``groups`` (in that order); return (sum sq error, count).

    users, items, ratings: the grouped ratings; group g is positions ``[gstart[g], gstart[g + 1])``,
    all of one user, trained with learning rate ``lr_of[j]`` (j: its place in ``groups``). p, q, bu,
    bi and their accumulators gp, gq, gbu, gbi: as the fast kernel (``p``: the users' own vectors).
    y, gy: (n_item_rows, k) history vectors and their row accumulators; parts: (n_user_rows, T, k)
    the stored history sums per item block; hist_ptr: (n_user_rows, T + 1) offsets into hist_items
    of each user's training items by block; norm: (n_user_rows,) |N(u)|^-1/2 (0 without history);
    block: this cell's item block; consts: (lo, span, history_weight_decay, history_lr). Rating at position m goes to the unknown user when the high 32 bits of
    mix64(key + m) are below ``route_below``, to the unknown item when the low 32 bits are; the
    unknown rows are this thread's copies ``row0_user = (p0 (1, k), b0, gp0, gbu0)`` and
    ``row0_item = (q0 (1, k), b0, gq0, gbi0)`` (merged by the caller: row 0 is every block's);
    decay_u, decay_i: the per-row L2 strengths (:func:`~collabemb.engines.row_decays`).
    """
    k = p.shape[1]
    lo, span, ywd, ylr = consts[0], consts[1], consts[2], consts[3]
    inv_k = np.float32(1.0 / k)
    eps = np.float32(ADAGRAD_EPS)
    one = np.float32(1.0)
    v = np.empty(k, np.float32)
    grad = np.empty(k, np.float32)
    sq = 0.0
    count = 0
    for j in range(groups.shape[0]):
        g0 = gstart[groups[j]]
        g1 = gstart[groups[j] + 1]
        lr = lr_of[j]
        u = users[g0]
        wd_u = decay_u[u]
        c = norm[u]
        history = c > 0
        if history:  # this block's part of the history sum, fresh; the others as stored
            _history_part(y, hist_items, hist_ptr[u, block], hist_ptr[u, block + 1], c, parts[u, block])
        for f in range(k):
            v[f] = p[u, f]
            grad[f] = 0.0
        if history:
            for b in range(parts.shape[1]):
                for f in range(k):
                    v[f] += parts[u, b, f]
        for r in range(g0, g1):
            if r + PREFETCH_AHEAD < g1:
                ia = items[r + PREFETCH_AHEAD]
                for f in range(0, k, 16):
                    _prefetch(q, ia, f)
            if route_below > 0:
                h = _mix64(key + np.uint64(r))
                to_u0 = (h >> np.uint64(32)) < route_below
                to_i0 = (h & np.uint64(0xFFFFFFFF)) < route_below
                if to_u0 or to_i0:  # rare: the thread's copies of row 0 (a function of its own, off the hot path)
                    tables = (p, q, bu, bi, gp, gq, gbu, gbi)
                    _routed(*tables, u, items[r], v, grad, to_u0, to_i0, ratings[r], lr, consts, row0_user, row0_item, decay_u, decay_i)
                    continue
            i = items[r]
            wd_i = decay_i[i]
            z = bu[u] + bi[i]
            for f in range(k):
                z += v[f] * q[i, f]
            s = one / (one + np.float32(math.exp(-z)))
            e = ratings[r] - (lo + span * s)
            sq += e * e
            count += 1
            g = e * span * s * (one - s)
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
                di = g * v[f] - wd_i * q[i, f]
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
                vf = v[f]
                d = step_u * (g * qf - wd_u * pf)
                p[u, f] = pf + d
                v[f] = vf + d
                grad[f] += g * qf
                q[i, f] = qf + step_i * (g * vf - wd_i * qf)
        if history:  # one step for each history vector of this block's items
            n2 = np.float32(0.0)  # the accumulators take the user's gradient, the same for each of its items
            for f in range(k):
                grad[f] *= c
                n2 += grad[f] * grad[f]
            n2 *= inv_k
            for t in range(hist_ptr[u, block], hist_ptr[u, block + 1]):
                i = hist_items[t]
                if t + PREFETCH_AHEAD < hist_ptr[u, block + 1]:
                    ahead = hist_items[t + PREFETCH_AHEAD]
                    for f in range(0, k, 16):
                        _prefetch(y, ahead, f)
                acc = gy[i] + n2
                gy[i] = acc
                step = ylr * lr / np.float32(math.sqrt(acc + eps))
                for f in range(k):
                    y[i, f] += step * (grad[f] - ywd * y[i, f])
    return sq, count


@_jit
def _routed(p, q, bu, bi, gp, gq, gbu, gbi, u, i, v, grad, to_u0, to_i0, rating, lr, consts, row0_user, row0_item, decay_u, decay_i):
    """One rating routed to the unknown user and/or item: :func:`_svdpp_groups`'s step on the thread's
    copies of row 0 (the unknown user has no history: its vector is its own). Not counted in the error."""
    k = p.shape[1]
    lo, span = consts[0], consts[1]
    wd_u = decay_u[0] if to_u0 else decay_u[u]
    wd_i = decay_i[0] if to_i0 else decay_i[i]
    inv_k = np.float32(1.0 / k)
    eps = np.float32(ADAGRAD_EPS)
    one = np.float32(1.0)
    P, BU, GP, GBU, ru = (row0_user[0], row0_user[1], row0_user[2], row0_user[3], 0) if to_u0 else (p, bu, gp, gbu, u)
    Q, BI, GQ, GBI, ri = (row0_item[0], row0_item[1], row0_item[2], row0_item[3], 0) if to_i0 else (q, bi, gq, gbi, i)
    V = P[0].copy() if to_u0 else v.copy()
    z = BU[ru] + BI[ri]
    for f in range(k):
        z += V[f] * Q[ri, f]
    s = one / (one + np.float32(math.exp(-z)))
    e = rating - (lo + span * s)
    g = e * span * s * (one - s)
    acc = GBU[ru] + g * g
    GBU[ru] = acc
    BU[ru] += lr * g / np.float32(math.sqrt(acc + eps))
    acc = GBI[ri] + g * g
    GBI[ri] = acc
    BI[ri] += lr * g / np.float32(math.sqrt(acc + eps))
    norm_u = np.float32(0.0)
    norm_i = np.float32(0.0)
    for f in range(k):
        du = g * Q[ri, f] - wd_u * P[ru, f]
        di = g * V[f] - wd_i * Q[ri, f]
        norm_u += du * du
        norm_i += di * di
    acc = GP[ru] + norm_u * inv_k
    GP[ru] = acc
    step_u = lr / np.float32(math.sqrt(acc + eps))
    acc = GQ[ri] + norm_i * inv_k
    GQ[ri] = acc
    step_i = lr / np.float32(math.sqrt(acc + eps))
    for f in range(k):
        pf = P[ru, f]
        qf = Q[ri, f]
        d = step_u * (g * qf - wd_u * pf)
        P[ru, f] = pf + d
        if not to_u0:
            v[f] += d
            grad[f] += g * qf
        Q[ri, f] = qf + step_i * (g * V[f] - wd_i * qf)
    return e


@_jit
def _history_part(y, hist_items, first, last, c, out):
    """``out = c * sum of y's rows hist_items[first:last]`` (k,)."""
    k = y.shape[1]
    for f in range(k):
        out[f] = 0.0
    for t in range(first, last):
        if t + PREFETCH_AHEAD < last:
            ahead = hist_items[t + PREFETCH_AHEAD]
            for f in range(0, k, 16):
                _prefetch(y, ahead, f)
        i = hist_items[t]
        for f in range(k):
            out[f] += y[i, f]
    for f in range(k):
        out[f] *= c


@_jit
def effective_vectors(p, y, hist_ptr, hist_items, norm, first, last, out):
    """``out[u] = p[u] + norm[u] * sum of y over u's training items`` for user rows [first, last)."""
    k = p.shape[1]
    for u in range(first, last):
        for f in range(k):
            out[u, f] = 0.0
        for t in range(hist_ptr[u, 0], hist_ptr[u, hist_ptr.shape[1] - 1]):
            j = hist_items[t]
            for f in range(k):
                out[u, f] += y[j, f]
        c = norm[u]
        for f in range(k):
            out[u, f] = p[u, f] + c * out[u, f]


def history_index(seen: SeenItems, iblock: np.ndarray, blocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's distinct training items, ordered by item block: ``(hist_ptr (n_user_rows, blocks + 1)
    int64, hist_items (n_pairs,) int32, norm (n_user_rows,) float32 = |N(u)|^-1/2, 0 without history)``."""
    n_users = seen.n_user_rows
    counts_per_user = np.diff(seen.indptr)
    items = seen.indices
    if blocks > 1:  # a stable sort by (user, block) keeps each block's items in item order
        key = np.repeat(np.arange(n_users, dtype=np.int64) * blocks, counts_per_user) + iblock[items]
        items = items[np.argsort(key, kind="stable")]
        counts = np.bincount(key, minlength=n_users * blocks).reshape(n_users, blocks)
        del key
    else:
        counts = counts_per_user.reshape(n_users, 1)
    flat = np.zeros(n_users * blocks + 1, np.int64)
    np.cumsum(counts.reshape(-1), out=flat[1:])
    hist_ptr = np.empty((n_users, blocks + 1), np.int64)
    hist_ptr[:, :blocks] = flat[:-1].reshape(n_users, blocks)
    hist_ptr[:, blocks] = flat[blocks::blocks]
    norm = np.where(counts_per_user > 0, 1.0 / np.sqrt(np.maximum(counts_per_user, 1)), 0.0).astype(np.float32)
    return hist_ptr, np.ascontiguousarray(items, dtype=np.int32), norm


class SvdppEngine(FastEngine):
    """Row-wise Adagrad over user groups with the history term; the module's ``u_weight`` holds the
    effective user vectors after every pass (module docstring).

    Args: as :class:`~collabemb.engines.fast.FastEngine` (its per-row L2 strengths too), plus ``seen`` (the
    training pairs, ``data.seen()``: each user's history), ``history_lr`` (the history vectors'
    learning rate as a fraction of the schedule's) and ``history_weight_decay``.
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
        seen: SeenItems,
        history_lr: float,
        history_weight_decay: float,
        frequency_exponent: float = 1.0,
    ):
        self._bind(model, data, seed, lr_at, weight_decay, unknown_frac, threads, frequency_exponent)
        perm = np.random.default_rng(np.random.SeedSequence([self.seed, 0])).permutation(self.n)  # a seeded shuffle
        self.users = np.asarray(data.user_rows, dtype=np.int32)[perm]
        self.items = np.asarray(data.item_rows, dtype=np.int32)[perm]
        self.ratings = np.asarray(data.values, dtype=np.float32)[perm]
        del perm
        self._effective = self._p  # the module's u_weight: written after every pass
        self._p = self._effective.copy()  # the users' own vectors, trained
        n_users, n_items, k = self._p.shape[0], self._q.shape[0], self._p.shape[1]
        T = self.threads
        if T == 1:
            self._ublock, self._iblock = np.zeros(n_users, np.int32), np.zeros(n_items, np.int32)
        # the ratings grouped once, for good: by cell (user block, item block), then user, then the shuffle
        cell = self._ublock[self.users].astype(np.int64) * T + self._iblock[self.items]
        order = np.argsort(cell * n_users + self.users, kind="stable")
        self.users, self.items, self.ratings = self.users[order], self.items[order], self.ratings[order]
        key = cell[order] * n_users + self.users
        del cell, order
        self._gstart = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1], [True]])).astype(np.int64)
        group_cell = key[self._gstart[:-1]] // n_users
        self._cell_groups = np.searchsorted(group_cell, np.arange(T * T + 1)).astype(np.int64)  # cell c: groups [.[c], .[c+1])
        del key
        self._hist_ptr, self._hist_items, self._norm = history_index(seen, self._iblock, T)
        self._y = np.zeros((n_items, k), np.float32)
        self._gy = np.zeros(n_items, np.float32)
        self._parts = np.zeros((n_users, T, k), np.float32)
        self._consts = np.array([self._lo, self._span, history_weight_decay, history_lr], dtype=np.float32)
        mine = (self._p, self._y, self._gy, self._parts)
        self.state.update({name: torch.from_numpy(array) for name, array in zip(HISTORY_STATE, mine, strict=True)})

    @property
    def history_table(self) -> np.ndarray:
        """(n_item_rows, k) float32: the history vectors y (row 0 and rows of unrated items stay zero)."""
        return self._y

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the accumulators, own vectors and history vectors; history parts stored for another
        thread count are recomputed from the history vectors."""
        super().load_state(state)
        for name in HISTORY_STATE[:3]:
            self.state[name].copy_(state[name])
        if tuple(state["history_parts"].shape) == self._parts.shape:
            self.state["history_parts"].copy_(state["history_parts"])
        else:
            self._refresh_parts()

    def run_epoch(self, epoch: int, stop: threading.Event, tick: Callable[[int], None]) -> EpochResult | None:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1, epoch]))
        key = np.uint64(rng.integers(0, 2**63))
        T = self.threads
        orders = [self._cell_groups[c] + rng.permutation(self._cell_groups[c + 1] - self._cell_groups[c]) for c in range(T * T)]
        steps = (epoch - 1) * self.n_chunks + np.arange(self.n_chunks, dtype=np.int64)
        lrs = np.asarray(self.lr_at(steps, self.n_chunks), dtype=np.float32)
        # a stopped pass leaves no trace in what only the engine holds (the fit loop restores the module's tables)
        trained = (self._p, self._y, self._gy, self._parts)
        saved = [a.copy() for a in trained]
        result = self._strata(orders, lrs, key, stop, tick)
        if result is None:
            for array, copy in zip(trained, saved, strict=True):
                array[...] = copy
            return None
        self._write_effective()
        return EpochResult(result[0], result[1], float(lrs[-1]))

    def _strata(self, orders, lrs, key, stop, tick) -> tuple[float, int] | None:
        """T strata; in stratum s thread t trains cell (t, (t + s) % T)'s user groups in ``orders[cell]``,
        on its own copies of row 0, merged after the stratum in thread order."""
        T = self.threads
        lock = threading.Lock()
        done = [0]
        tables = (self._p, self._q, self._bu, self._bi, *self._acc, self._y, self._gy, self._parts)
        history = (self._hist_ptr, self._hist_items, self._norm)
        source = (self.users, self.items, self.ratings)

        def train(stratum: int, t: int, row0: tuple) -> tuple[float, int] | None:
            block = (t + stratum) % T
            groups = orders[t * T + block]
            sizes = self._gstart[groups + 1] - self._gstart[groups]
            before = np.concatenate([[0], np.cumsum(sizes)])
            n_cell = max(int(before[-1]), 1)
            steps = (stratum * n_cell + before[:-1]) * self.n_chunks // (T * n_cell)  # the epoch's progress at each group
            lr_of = lrs[np.minimum(steps, self.n_chunks - 1)]
            bounds = np.append(np.searchsorted(before[:-1], np.arange(0, before[-1], TASK_RATINGS)), len(groups))
            sq, cnt = 0.0, 0
            for a, b in itertools.pairwise(bounds):
                if stop.is_set():
                    return None
                if a == b:
                    continue
                consts = (block, self._consts, self._route_below, key, *row0, *self._decay)
                sq_, cnt_ = _svdpp_groups(*source, self._gstart, groups[a:b], lr_of[a:b], *tables, *history, *consts)
                sq, cnt = sq + sq_, cnt + cnt_
                with lock:
                    done[0] += int(before[b] - before[a])
            return sq, cnt

        sq, cnt, reported = 0.0, 0, 0
        for stratum in range(T):
            copies = [self._row0_copies() for _ in range(T)]
            if self._pool is None:
                results = [train(0, 0, copies[0])]
                tick(done[0])
            else:
                jobs = [lambda t=t, s=stratum, mine=copies[t]: train(s, t, mine) for t in range(T)]
                results = self._in_parallel(jobs, stop, lock, done, tick, reported)
            reported = done[0]
            if stop.is_set() or any(r is None for r in results):
                return None
            self._merge_row0(copies)
            for sq_, cnt_ in results:  # a fixed order: the sum does not depend on timing
                sq, cnt = sq + sq_, cnt + cnt_
        return sq, cnt

    def _row0_copies(self) -> tuple[tuple, tuple]:
        """One thread's copies of the unknown user's and item's rows: ``((p0, b, gp, gbu), (q0, b, gq, gbi))``."""
        gp, gq, gbu, gbi = self._acc
        user = (self._p[:1].copy(), self._bu[:1].copy(), gp[:1].copy(), gbu[:1].copy())
        item = (self._q[:1].copy(), self._bi[:1].copy(), gq[:1].copy(), gbi[:1].copy())
        return user, item

    def _merge_row0(self, copies: list[tuple[tuple, tuple]]) -> None:
        """Row 0 += each thread's change to its copy, in thread order."""
        gp, gq, gbu, gbi = self._acc
        targets = ((self._p, self._bu, gp, gbu), (self._q, self._bi, gq, gbi))
        start = [[t[:1].copy() for t in side] for side in targets]
        for copy in copies:
            for side, (target_side, first_side) in enumerate(zip(targets, start, strict=True)):
                for target, first, mine in zip(target_side, first_side, copy[side], strict=True):
                    target[:1] += mine - first

    def _write_effective(self) -> None:
        """The module's ``u_weight`` <- the effective vectors (split over the threads by user rows)."""
        n = self._p.shape[0]
        bounds = np.linspace(0, n, self.threads + 1).astype(np.int64)
        history = (self._hist_ptr, self._hist_items, self._norm)

        def write(t: int) -> None:
            effective_vectors(self._p, self._y, *history, bounds[t], bounds[t + 1], self._effective)

        if self._pool is None:
            write(0)
        else:
            self._in_parallel([lambda t=t: write(t) for t in range(self.threads)], threading.Event())

    def _refresh_parts(self) -> None:
        """Recompute every stored per-block history sum from the history vectors."""
        for u in range(self._p.shape[0]):
            for b in range(self._parts.shape[1]):
                _history_part(self._y, self._hist_items, self._hist_ptr[u, b], self._hist_ptr[u, b + 1], self._norm[u], self._parts[u, b])
