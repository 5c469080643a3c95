"""The fast engine's strata across processes: DSGD (Gemulla et al. 2011) over ``torch.distributed``.

With ``threads=T`` the fast engine (:mod:`collabemb.engines.fast`) gives every user row and item row one of
T blocks and, in stratum s, trains cell (user block t, item block (t + s) % T) on thread t. Here the T
threads are T processes (ranks): rank r holds the ratings of the users of block r, and their rows, for the
whole fit; the item blocks travel. In stratum s rank r trains cell (r, (r + s) % T) with item block
(r + s) % T, then passes that block (its rows, biases and Adagrad accumulators) to rank r - 1 and receives
block (r + s + 1) % T from rank r + 1 (point-to-point send/recv, nothing else moves), so after T strata
every block is home again.

**The correspondence, exactly:** N ranks give bit-identical weights, accumulators and training loss to one
process's ``fit(..., threads=N)`` with the same seed and settings on the same ratings (in any order, split
between the ranks in any way). Every rank lays its ratings out by pair hash (:func:`~collabemb.engines.fast.
_hash_order`, with the *global* chunk count), visits the chunks in the epoch's seeded order, routes to the
unknown slot with the same hashes, runs the same compiled kernel on the same sequence of ratings per cell
with the same learning rates, and the loss is summed in the same (stratum, block) order. Tables live on
each rank in compact per-block arrays (a block's rows in row order, after a padding row 0 unless the block
holds the real row 0), which changes no arithmetic.

The one rating that must move: a rating whose user the epoch routes to the unknown row 0 is trained in
the cell of row 0's block, which may belong to another rank; each epoch those (about ``unknown_frac`` of
them) are sent to that rank with their chunk and hash, and merged into its cells in the single process's
order. Rank 0 also holds the whole model: it hands every rank its blocks before the first epoch it runs
and collects them after each epoch, so that validation, checkpoints and the artifact are the fit loop's
own. Collectives time out (``init_process_group``'s timeout): a rank that dies ends the job with
:class:`RankFailure` on the others instead of a hang.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from collabemb.engines import EpochResult, decays_of_counts
from collabemb.engines.fast import (
    CHUNK,
    STATE_NAMES,
    TASK_RATINGS,
    _adagrad_blocks,
    _hash_order,
    _jit,
    _routed,
    cell_blocks,
    epoch_plan,
    fit_key,
    route_below,
    row_blocks,
)


class RankFailure(ConnectionError):
    """Another rank of the job stopped (or could not be reached) while this one waited on it."""


@_jit
def _split(
    users,
    items,
    ratings,
    chunk_start,
    chunks,
    ublock,
    iblock,
    me,
    route_below,
    key,
    fit_key,
    counts,
    out_pos,
    out_hash,
    out_items,
    out_ratings,
):
    """Route this rank's ratings chunk by chunk in the epoch's order; count or write the ones leaving.

    A rating stays when its routed user's block is ``me``: ``counts[item block] += 1``. One whose user is
    routed to row 0 in another rank's block leaves: without ``out_pos`` (empty) ``counts[-1] += 1``;
    otherwise its epoch chunk position, pair hash, routed item row and rating are written at ``counts[-1]``, which
    advances (so the leaving ratings come out sorted by (position, hash)).
    """
    write = out_pos.shape[0] > 0
    for j in range(chunks.shape[0]):
        for m in range(chunk_start[chunks[j]], chunk_start[chunks[j] + 1]):
            u, i, h = _routed(fit_key, key, route_below, users[m], items[m])
            if ublock[u] == me:
                if not write:
                    counts[iblock[i]] += 1
            elif write:
                n = counts[-1]
                out_pos[n] = j
                out_hash[n] = h
                out_items[n] = i
                out_ratings[n] = ratings[m]
                counts[-1] = n + 1
            else:
                counts[-1] += 1


@_jit
def _fill(
    users,
    items,
    ratings,
    chunk_start,
    chunks,
    ublock,
    iblock,
    me,
    route_below,
    key,
    fit_key,
    ulocal,
    ilocal,
    inc_pos,
    inc_hash,
    inc_items,
    inc_ratings,
    offsets,
    out_users,
    out_items,
    out_ratings,
):
    """Write this rank's staying ratings, and the ``inc_*`` ones other ranks sent (sorted by (position, hash),
    user row 0), into its cells in the single process's order: chunk by chunk in the epoch's order, by pair
    hash within a chunk. Rows are written as block-local indices (``ulocal``, ``ilocal``)."""
    k = 0
    n_inc = inc_pos.shape[0]
    for j in range(chunks.shape[0]):
        for m in range(chunk_start[chunks[j]], chunk_start[chunks[j] + 1]):
            u, i, h = _routed(fit_key, key, route_below, users[m], items[m])
            if ublock[u] != me:
                continue
            while k < n_inc and inc_pos[k] == j and inc_hash[k] < h:
                _put(0, inc_items[k], inc_ratings[k], iblock, ulocal, ilocal, offsets, out_users, out_items, out_ratings)
                k += 1
            _put(u, i, ratings[m], iblock, ulocal, ilocal, offsets, out_users, out_items, out_ratings)
        while k < n_inc and inc_pos[k] == j:
            _put(0, inc_items[k], inc_ratings[k], iblock, ulocal, ilocal, offsets, out_users, out_items, out_ratings)
            k += 1


@_jit
def _put(u, i, rating, iblock, ulocal, ilocal, offsets, out_users, out_items, out_ratings):
    """Write one routed rating (global rows u, i) at the next place of its cell (item block), as block-local indices."""
    c = iblock[i]
    out_users[offsets[c]] = ulocal[u]
    out_items[offsets[c]] = ilocal[i]
    out_ratings[offsets[c]] = rating
    offsets[c] += 1


@dataclass
class Blocks:
    """Rows per block of one table: ``rows[b]`` the block's (n_b,) global rows in order, ``local`` each global
    row's index in its block's compact arrays (padding row 0 first unless the block holds row 0), ``size[b]``
    the compact arrays' length."""

    rows: list[np.ndarray]
    local: np.ndarray
    size: list[int]

    @classmethod
    def of(cls, block: np.ndarray, count: int) -> Blocks:
        rows = [np.flatnonzero(block == b) for b in range(count)]
        local = np.zeros(len(block), np.int32)
        size = []
        for r in rows:
            pad = 0 if len(r) and r[0] == 0 else 1
            local[r] = np.arange(pad, pad + len(r), dtype=np.int32)
            size.append(len(r) + pad)
        return cls(rows, local, size)

    def places(self, b: int) -> np.ndarray:
        """(n_b,) compact indices of block b's rows, in the order of ``rows[b]``."""
        return self.local[self.rows[b]].astype(np.int64)


class Comms:
    """Point-to-point and collective calls on the default process group, counting the bytes this rank sends;
    a failed call (a rank gone, a timeout) raises :class:`RankFailure` naming this rank and the step."""

    def __init__(self) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.bytes_sent = 0
        self.broken = False  # a call failed: the group is unusable

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except RuntimeError as exc:  # gloo: "[.../pair.cc:553] Connection closed by peer [host]:port. This is ...", timeouts
            self.broken = True
            said = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).strip()).split(". ")[0] or type(exc).__name__
            raise RankFailure(f"rank {self.rank}: {what} failed ({said}): another rank stopped or cannot be reached") from None

    def send(self, arrays: list[np.ndarray], dst: int, what: str) -> None:
        for a in arrays:
            if a.size:
                self.bytes_sent += a.nbytes
                self._call(what, dist.send, torch.from_numpy(np.ascontiguousarray(a)), dst)

    def recv(self, arrays: list[np.ndarray], src: int, what: str) -> None:
        for a in arrays:
            if a.size:
                self._call(what, dist.recv, torch.from_numpy(a), src)

    def exchange(self, send: np.ndarray, dst: int, recv: np.ndarray, src: int, what: str) -> None:
        """Send ``send`` to ``dst`` while receiving ``recv`` (in place) from ``src``."""

        def both():
            works = []
            if send.size:
                works.append(dist.isend(torch.from_numpy(send), dst))
            if recv.size:
                works.append(dist.irecv(torch.from_numpy(recv), src))
            for w in works:
                w.wait()

        self.bytes_sent += send.nbytes
        self._call(what, both)

    def all_gather(self, values: np.ndarray, what: str) -> np.ndarray:
        """(world, *values.shape): every rank's ``values`` (same shape and dtype on every rank)."""
        out = [torch.empty_like(torch.from_numpy(values)) for _ in range(self.world)]
        self.bytes_sent += values.nbytes * (self.world - 1)
        self._call(what, dist.all_gather, out, torch.from_numpy(np.ascontiguousarray(values)))
        return np.stack([t.numpy() for t in out])

    def sum(self, values: np.ndarray, what: str) -> np.ndarray:
        """The element-wise sum over every rank of (n,) int64 ``values`` (wrapping on overflow)."""
        tensor = torch.from_numpy(np.array(values, np.int64))
        self.bytes_sent += tensor.numel() * 8
        self._call(what, dist.all_reduce, tensor)
        return tensor.numpy()

    def broadcast(self, values: np.ndarray, src: int, what: str) -> np.ndarray:
        if self.rank == src:
            self.bytes_sent += values.nbytes * (self.world - 1)
        tensor = torch.from_numpy(values)
        self._call(what, dist.broadcast, tensor, src)
        return values


class RankEngine:
    """One rank's part of a DSGD fit (module docstring); on rank 0 an :class:`~collabemb.engines.Engine` for the
    fit loop, on the others driven by :meth:`follow`.

    Args:
        module: rank 0: the :class:`EmbeddingDotBias` (contiguous float32 CPU tables, updated after every epoch);
            other ranks: None.
        user_rows, item_rows, ratings: (n_r,) this rank's ratings (int rows, float32), every user row in this
            rank's block; the item rows are the whole model's.
        n_total: the number of training ratings over all ranks.
        user_counts, item_counts: (n_user_rows,), (n_item_rows,) int64 training ratings per row over all ranks.
        n_factors, y_range: the model's.
        seed, lr_at, weight_decay, unknown_frac, frequency_exponent: as :class:`~collabemb.engines.fast.FastEngine`.
    """

    def __init__(
        self,
        module,
        user_rows: np.ndarray,
        item_rows: np.ndarray,
        ratings: np.ndarray,
        *,
        n_total: int,
        user_counts: np.ndarray,
        item_counts: np.ndarray,
        n_factors: int,
        y_range: tuple[float, float],
        seed: int,
        lr_at: Callable[[np.ndarray, int], np.ndarray],
        weight_decay: float,
        unknown_frac: float,
        frequency_exponent: float = 1.0,
    ):
        self.comms = Comms()
        self.rank, self.world = self.comms.rank, self.comms.world
        self.seed, self.lr_at, self.k = int(seed) & (2**64 - 1), lr_at, int(n_factors)
        self.n_chunks = max(1, -(-int(n_total) // CHUNK))
        self.fit_key, self._route_below = fit_key(self.seed), route_below(unknown_frac)
        self._lo, self._span = np.float32(y_range[0]), np.float32(y_range[1] - y_range[0])
        ublock, iblock = row_blocks(self.seed, self.world, len(user_counts), len(item_counts))
        self._ublock, self._iblock = ublock, iblock
        self.users_of, self.items_of = Blocks.of(ublock, self.world), Blocks.of(iblock, self.world)
        users, items = np.asarray(user_rows, np.int32), np.asarray(item_rows, np.int32)
        if len(users) and np.any(ublock[users] != self.rank):
            raise ValueError(f"rank {self.rank} was given ratings of users outside its block")
        order, self.chunk_start = _hash_order(users, items, self.fit_key, self.n_chunks)
        self.users, self.items, self.ratings = users[order], items[order], np.asarray(ratings, np.float32)[order]
        del order
        decay_u = decays_of_counts(user_counts, weight_decay, frequency_exponent)
        decay_i = decays_of_counts(item_counts, weight_decay, frequency_exponent)
        self._decay_u = self._compact(decay_u, self.users_of, self.rank)
        self._decay_i = [self._compact(decay_i, self.items_of, b) for b in range(self.world)]
        n_u = self.users_of.size[self.rank]
        self._p, self._bu = np.zeros((n_u, self.k), np.float32), np.zeros(n_u, np.float32)
        self._gp, self._gbu = np.zeros(n_u, np.float32), np.zeros(n_u, np.float32)
        cap = max(self.items_of.size)
        self._item_buffers = [np.zeros(cap * (self.k + 3), np.float32) for _ in range(2)]
        self.module = module
        self.state = {}
        if module is not None:  # rank 0: the whole model's tables and accumulators
            self._tables = [getattr(module, name).weight.detach().numpy() for name in STATE_NAMES]
            self.state = {name: torch.zeros(t.shape[0], dtype=torch.float32) for name, t in zip(STATE_NAMES, self._tables, strict=True)}
        self._handed_out = self._closed = False
        self.bytes_per_epoch: list[int] = []

    @staticmethod
    def _compact(values: np.ndarray, blocks: Blocks, b: int) -> np.ndarray:
        out = np.zeros(blocks.size[b], values.dtype)
        out[blocks.places(b)] = values[blocks.rows[b]]
        return out

    def _item_views(self, buffer: np.ndarray, b: int) -> tuple[np.ndarray, ...]:
        """(q (n_b, k), bi, gq, gbi) views of item block b's compact arrays in ``buffer``."""
        n = self.items_of.size[b]
        q = buffer[: n * self.k].reshape(n, self.k)
        rest = buffer[n * self.k : n * (self.k + 3)]
        return q, rest[:n], rest[n : 2 * n], rest[2 * n : 3 * n]

    def _item_block(self, b: int) -> np.ndarray:
        """Item block b's part of the buffer (what travels): n_b * (k + 3) float32."""
        return self._item_buffers[0][: self.items_of.size[b] * (self.k + 3)]

    # --- the whole model <-> the blocks (rank 0) ---------------------------------------------------------

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the Adagrad accumulators (rank 0, before the first epoch it runs: resume)."""
        for name in STATE_NAMES:
            self.state[name].copy_(state[name])

    def _hand_out(self) -> None:
        """Every rank receives its user block and its home item block from rank 0's whole model."""
        if self.rank == 0:
            p, q, bu, bi = self._tables
            gp, gq, gbu, gbi = (self.state[name].numpy() for name in STATE_NAMES)
            for r in range(self.world):
                urows, irows = self.users_of.rows[r], self.items_of.rows[r]
                user = self._pack_users(r, p[urows], bu.reshape(-1)[urows], gp[urows], gbu[urows])
                item = self._pack_items(r, q[irows], bi.reshape(-1)[irows], gq[irows], gbi[irows])
                if r == 0:
                    self._unpack_users(0, user)
                    self._item_block(0)[:] = item
                else:
                    self.comms.send([user, item], r, "handing out the blocks")
        else:
            user = np.empty(self.users_of.size[self.rank] * (self.k + 3), np.float32)
            self.comms.recv([user, self._item_block(self.rank)], 0, "receiving this rank's blocks")
            self._unpack_users(self.rank, user)

    def _pack_users(self, r, p, bu, gp, gbu) -> np.ndarray:
        n, places = self.users_of.size[r], self.users_of.places(r)
        out = np.zeros(n * (self.k + 3), np.float32)
        out[: n * self.k].reshape(n, self.k)[places] = p
        for j, v in enumerate((bu, gp, gbu)):
            out[n * (self.k + j) : n * (self.k + j + 1)][places] = v
        return out

    def _pack_items(self, b, q, bi, gq, gbi) -> np.ndarray:
        out = np.zeros(self.items_of.size[b] * (self.k + 3), np.float32)
        for view, v in zip(self._item_views(out, b), (q, bi, gq, gbi), strict=True):
            view[self.items_of.places(b)] = v
        return out

    def _unpack_users(self, r: int, packed: np.ndarray) -> None:
        n = self.users_of.size[r]
        self._p[:] = packed[: n * self.k].reshape(n, self.k)
        self._bu[:], self._gp[:], self._gbu[:] = (packed[n * (self.k + j) : n * (self.k + j + 1)] for j in range(3))

    def _collect(self) -> None:
        """Rank 0 writes every rank's user block and home item block into the whole model."""
        mine_u = np.concatenate([self._p.reshape(-1), self._bu, self._gp, self._gbu])
        if self.rank != 0:
            self.comms.send([mine_u, self._item_block(self.rank)], 0, "sending the blocks to rank 0")
            return
        p, q, bu, bi = self._tables
        gp, gq, gbu, gbi = (self.state[name].numpy() for name in STATE_NAMES)
        for r in range(self.world):
            if r == 0:
                user, item = mine_u, self._item_block(0).copy()
            else:
                user = np.empty(self.users_of.size[r] * (self.k + 3), np.float32)
                item = np.empty(self.items_of.size[r] * (self.k + 3), np.float32)
                self.comms.recv([user, item], r, f"collecting rank {r}'s blocks")
            n, urows, places = self.users_of.size[r], self.users_of.rows[r], self.users_of.places(r)
            p[urows] = user[: n * self.k].reshape(n, self.k)[places]
            for target, j in ((bu.reshape(-1), 0), (gp, 1), (gbu, 2)):
                target[urows] = user[n * (self.k + j) : n * (self.k + j + 1)][places]
            irows, iplaces = self.items_of.rows[r], self.items_of.places(r)
            for target, view in zip((q, bi.reshape(-1), gq, gbi), self._item_views(item, r), strict=True):
                target[irows] = view[iplaces]

    # --- one epoch ---------------------------------------------------------------------------------------

    def run_epoch(self, epoch: int, stop: threading.Event, tick: Callable[[int], None]) -> EpochResult | None:
        """Rank 0: tell the other ranks to run ``epoch``, run it here, collect the model. The epoch always finishes
        (``stop`` is the fit loop's to act on after it): a rank cannot leave a stratum the others wait in."""
        self.comms.broadcast(np.array([epoch], np.int64), 0, "starting an epoch")
        return self._epoch(epoch, tick)

    def follow(self) -> None:
        """Ranks other than 0: run the epochs rank 0 announces until it announces the end."""
        while (epoch := int(self.comms.broadcast(np.zeros(1, np.int64), 0, "waiting for rank 0")[0])) > 0:
            self._epoch(epoch, lambda n: None)

    def close(self) -> None:
        """Rank 0: announce the end to the other ranks (once)."""
        if self.rank == 0 and self.world > 1 and not self._closed and not self.comms.broken:
            self._closed = True
            self.comms.broadcast(np.zeros(1, np.int64), 0, "announcing the end")

    def _epoch(self, epoch: int, tick: Callable[[int], None]) -> EpochResult | None:
        sent_before = self.comms.bytes_sent
        if not self._handed_out:
            self._hand_out()
            self._handed_out = True
        order, key, lrs = epoch_plan(self.seed, epoch, self.n_chunks, self.lr_at)
        if self.world == 1:
            return self._one_block(order, key, lrs, tick, sent_before)
        cells, cell_start, totals = self._cells(order, key)
        T, me = self.world, self.rank
        losses = np.zeros((T, 2), np.float64)
        for stratum in range(T):
            b = (me + stratum) % T
            q, bi, gq, gbi = self._item_views(self._item_buffers[0], b)
            tables = (self._p, q, self._bu, bi, self._gp, gq, self._gbu, gbi, self._lo, self._span, self._decay_u, self._decay_i[b])
            lo, hi = int(cell_start[b]), int(cell_start[b] + totals[b])
            piece = max(1, TASK_RATINGS // CHUNK) * CHUNK
            for a in range(lo, hi, piece):
                starts, stops, block_lr = cell_blocks(a, min(a + piece, hi), lo, hi, stratum, T, lrs)
                sq, cnt = _adagrad_blocks(*cells, starts, stops, block_lr, *tables, np.uint64(0), key, self.fit_key)
                losses[stratum] += (sq, cnt)
                tick(int(stops[-1] - starts[0]))
            if T > 1:  # pass block b to rank me - 1, receive block (me + stratum + 1) % T from rank me + 1
                nxt = (me + stratum + 1) % T
                incoming = self._item_buffers[1][: self.items_of.size[nxt] * (self.k + 3)]
                self.comms.exchange(
                    self._item_block(b), (me - 1) % T, incoming, (me + 1) % T, f"passing item block {b} in stratum {stratum}"
                )
                self._item_buffers.reverse()
        every = self.comms.all_gather(losses, "summing the loss")  # (rank, stratum, 2)
        self._collect()
        self.bytes_per_epoch.append(self.comms.bytes_sent - sent_before)
        sq = cnt = 0.0
        for stratum in range(T):  # the single process's order: stratum, then block (= thread)
            for t in range(T):
                sq, cnt = sq + every[t, stratum, 0], cnt + every[t, stratum, 1]
        return EpochResult(float(sq), int(cnt), float(lrs[-1]))

    def _one_block(self, order, key, lrs, tick, sent_before) -> EpochResult:
        """One rank: the fast engine's one-thread pass (chunks in the epoch's order, one learning rate per chunk,
        routing in the kernel); its one block's compact indices are the rows themselves."""
        q, bi, gq, gbi = self._item_views(self._item_buffers[0], 0)
        tables = (self._p, q, self._bu, bi, self._gp, gq, self._gbu, gbi, self._lo, self._span, self._decay_u, self._decay_i[0])
        per_task, sq, cnt = max(1, TASK_RATINGS // CHUNK), 0.0, 0
        for s in range(0, self.n_chunks, per_task):
            starts, stops = self.chunk_start[order[s : s + per_task]], self.chunk_start[order[s : s + per_task] + 1]
            sq_, cnt_ = _adagrad_blocks(
                self.users, self.items, self.ratings, starts, stops, lrs[s : s + per_task], *tables, self._route_below, key, self.fit_key
            )
            sq, cnt = sq + sq_, cnt + cnt_
            tick(int((stops - starts).sum()))
        self._collect()
        self.bytes_per_epoch.append(self.comms.bytes_sent - sent_before)
        return EpochResult(float(sq), int(cnt), float(lrs[-1]))

    def _cells(self, order: np.ndarray, key: np.uint64) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
        """This rank's T cells for the epoch: ``((users, items, ratings) in block-local indices, cell start, cell
        size)``, with the ratings other ranks routed to row 0 of this rank's block merged in."""
        T, me = self.world, self.rank
        route = (self._ublock, self._iblock, me, self._route_below, key, self.fit_key)
        source = (self.users, self.items, self.ratings, self.chunk_start, order)
        counts = np.zeros(T + 1, np.int64)
        _split(*source, *route, counts, np.empty(0, np.int64), np.empty(0, np.uint64), np.empty(0, np.int32), np.empty(0, np.float32))
        owner = int(self._ublock[0])
        leaving = self.comms.all_gather(counts[-1:], "counting the ratings routed to the unknown user")[:, 0]
        inc = (np.empty(0, np.int64), np.empty(0, np.uint64), np.empty(0, np.int32), np.empty(0, np.float32))
        if leaving.sum():
            inc = self._route_to_owner(source, route, counts, leaving, owner)
        staying = counts[:T].copy()
        if len(inc[0]):
            staying += np.bincount(self._iblock[inc[2]], minlength=T)
        cell_start = np.concatenate([[0], np.cumsum(staying)[:-1]]).astype(np.int64)
        n = int(staying.sum())
        cells = (np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, np.float32))
        local = (self.users_of.local, self.items_of.local)
        _fill(self.users, self.items, self.ratings, self.chunk_start, order, *route, *local, *inc, cell_start.copy(), *cells)
        return cells, cell_start, staying

    def _route_to_owner(self, source, route, counts, leaving, owner):
        """Send this rank's ratings routed to row 0 to its block's rank; there, receive every rank's, sorted by
        (epoch chunk position, pair hash): ``(positions, hashes, item rows, ratings)``."""
        me = self.rank
        if me != owner:
            n = int(leaving[me])
            pos, hashes, items, ratings = np.empty(n, np.int64), np.empty(n, np.uint64), np.empty(n, np.int32), np.empty(n, np.float32)
            _split(*source, *route, np.zeros(self.world + 1, np.int64), pos, hashes, items, ratings)
            self.comms.send([pos, hashes.view(np.int64), items, ratings], owner, "sending ratings routed to the unknown user")
            return (np.empty(0, np.int64), np.empty(0, np.uint64), np.empty(0, np.int32), np.empty(0, np.float32))
        parts = []
        for r in range(self.world):
            n = int(leaving[r])
            if r == me or not n:
                continue
            got = (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int32), np.empty(n, np.float32))
            self.comms.recv(list(got), r, f"receiving rank {r}'s ratings routed to the unknown user")
            parts.append(got)
        pos, hashes, items, ratings = (np.concatenate([p[j] for p in parts]) for j in range(4))
        hashes = hashes.view(np.uint64)
        by = np.lexsort((hashes, pos))  # stable: a pair rated twice keeps its order
        return pos[by], hashes[by], items[by], ratings[by]
