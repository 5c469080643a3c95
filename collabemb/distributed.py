"""Fitting one model on N processes: ``torchrun --nproc-per-node N -m collabemb fit --distributed DATASET ...``.

Every process (rank) calls :func:`fit_distributed`; ``torch.distributed`` with the gloo backend (CPU) joins
them (torchrun's environment: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT`` or a rendezvous
endpoint, on one machine or several). The steps:

1. **Registries, once, together.** Rank r summarises files r, r + N, ... of the parquet dataset
   (:mod:`collabemb.ratings_dataset`): distinct user and item IDs, row count, rating range. The IDs are
   gathered (as bytes, nothing pickled) and every rank builds the same sorted registries a one-process fit
   would build from all the ratings.
2. **Each rank reads only its users.** Rows belong to blocks by the fit's seed
   (:func:`~collabemb.engines.fast.row_blocks`); rank r reads the rows of the users of block r through a
   dataset filter. Per-row rating counts (for the frequency-aware penalty) are summed across ranks.
3. **Training** by :class:`~collabemb.engines.dsgd.RankEngine` (item blocks travel between ranks each
   stratum). Rank 0 holds the whole model and runs the fit loop of :mod:`collabemb.train`: validation
   (``valid``, a file rank 0 reads), history, early stopping, per-epoch checkpoints and the result.
4. **The result** on rank 0: the same :class:`~collabemb.fitted.FittedModel` as ``fit(..., threads=N)``
   (bit-identical tables, see :mod:`collabemb.engines.dsgd`), with the training pairs gathered as its seen
   items; the other ranks return None.

A rank that stops (killed, out of memory) makes the others raise :class:`~collabemb.engines.dsgd.RankFailure`
within the collective timeout (``timeout_s``; at once on one machine, where the closed socket is seen), and
torchrun stops the job, naming the failed rank. ``resume=DIR`` continues from the last checkpoint, with the
same N (the same weights as a run never stopped) or another N (the tables and optimiser state carry over;
the remaining epochs then follow the new block layout).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import signal
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from collabemb.data import read_ratings
from collabemb.engines.dsgd import Comms, RankEngine
from collabemb.engines.fast import row_blocks
from collabemb.fitted import FittedModel, ModelIdentity
from collabemb.history import FitHistory
from collabemb.interactions import SeenItems
from collabemb.model_card import library_versions
from collabemb.models import TABLE_NAMES, EmbeddingDotBias
from collabemb.ratings_dataset import RatingsDataset, id_bytes, ids_of_bytes
from collabemb.registry import IdRegistry
from collabemb.settings import FitSettings
from collabemb.store import writer_lock
from collabemb.train import FitLoop, default_y_range, load_engine_state, lr_schedule, read_checkpoint

#: Seconds a rank waits on another before the job is declared broken (a checkpoint write must fit in it).
DEFAULT_TIMEOUT_S = 600


def launched_rank() -> int:
    """This process's rank as torchrun set it; a ValueError outside torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ValueError("--distributed runs under torchrun (torchrun --nproc-per-node N -m collabemb fit --distributed ...)")
    return int(os.environ["RANK"])


def fit_distributed(
    dataset: str | os.PathLike,
    *,
    valid: str | os.PathLike | None = None,
    settings: FitSettings | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: str = "rating",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    **options,
) -> FittedModel | None:
    """Fit on every rank of a torchrun job (module docstring); rank 0 returns the model, the others None.

    Args:
        dataset: a parquet file or directory of parquet files (:class:`~collabemb.ratings_dataset.RatingsDataset`).
        valid: validation ratings (any file :func:`~collabemb.data.read_ratings` reads), scored by rank 0.
        settings, options: as :func:`collabemb.fit`; the fast engine, ``model="dot"``, CPU. ``threads`` is
            ignored: each rank trains its block on one thread, the job's block count is N.
        checkpoint, resume: directories written and read by rank 0 (all ranks must pass the same).
        timeout_s: how long a rank waits on another before giving up.
    """
    settings = (settings or FitSettings()).replace(**options)
    if settings.model != "dot" or settings.engine not in ("auto", "fast") or settings.device != "cpu":
        raise ValueError("a distributed fit trains model='dot' with the fast engine on the CPU")
    owned = not dist.is_initialized()
    if owned:
        launched_rank()
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout_s))
    try:
        if dist.get_rank() != 0:  # rank 0 decides when the job ends; Ctrl-C there ends the epoch first
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        data = RatingsDataset(dataset, user_col=user_col, item_col=item_col, rating_col=rating_col)
        with writer_lock(checkpoint) if checkpoint is not None and dist.get_rank() == 0 else contextlib.nullcontext():
            return _fit(data, valid, settings, checkpoint=checkpoint, resume=resume)
    finally:
        if owned:
            dist.destroy_process_group()


def _fit(data: RatingsDataset, valid, settings: FitSettings, *, checkpoint, resume) -> FittedModel | None:
    comms = Comms()
    rank, world = comms.rank, comms.world
    users, items, n_total, (lo, hi) = _registries(data, comms)
    settings = settings.resolved(n_total, "fast")
    settings = settings.replace(threads=world, y_range=settings.y_range or default_y_range(np.array([lo, hi])))
    ublock, _ = row_blocks(settings.seed, world, users.n_rows, items.n_rows)
    mine = users.ids[ublock[1:] == rank]  # registry row j + 1 holds ids[j]
    user_ids, item_ids, ratings = data.read_users(mine)
    u_rows, i_rows = users.encode(user_ids).astype(np.int32), items.encode(item_ids).astype(np.int32)
    del user_ids, item_ids
    user_counts = comms.sum(np.bincount(u_rows, minlength=users.n_rows), "counting ratings per user")
    item_counts = comms.sum(np.bincount(i_rows, minlength=items.n_rows), "counting ratings per item")
    fingerprint = _fingerprint(comms, u_rows, i_rows, ratings)
    module = resumed = None
    if rank == 0:
        module = EmbeddingDotBias(users, items, n_factors=settings.n_factors, y_range=settings.y_range)
        module.reset_parameters(torch.Generator().manual_seed(settings.seed))
        if resume is not None:
            resumed = read_checkpoint(Path(resume), settings, fingerprint, users, items, n_total)
            with torch.no_grad():
                for name in TABLE_NAMES:
                    getattr(module, name).weight.copy_(getattr(resumed.fitted.module, name).weight)

    def lr_at(steps: np.ndarray, steps_per_epoch: int) -> np.ndarray:
        return lr_schedule(steps, steps_per_epoch * settings.epochs, settings.lr, settings.lr_schedule)

    engine = RankEngine(
        module,
        u_rows,
        i_rows,
        ratings,
        n_total=n_total,
        user_counts=user_counts,
        item_counts=item_counts,
        n_factors=settings.n_factors,
        y_range=settings.y_range,
        seed=settings.seed,
        lr_at=lr_at,
        weight_decay=settings.weight_decay,
        unknown_frac=settings.unknown_frac,
        frequency_exponent=settings.frequency_exponent,
    )
    seen = _gathered_seen(comms, u_rows, i_rows, users.n_rows)
    del u_rows, i_rows, ratings
    if rank != 0:
        engine.follow()
        _bytes_per_rank(comms, engine, settings.epochs)
        return None
    try:
        params = {**settings.to_dict(), "n_train": n_total, "optimizer": "adagrad-rowwise", "ranks": world}
        params |= {"rating_min": lo, "rating_max": hi, "time_min": None, "time_max": None, "n_users": len(users), "n_items": len(items)}
        params["versions"] = library_versions("rating")
        valid_ratings = read_ratings(valid) if valid is not None else None
        n_valid = len(valid_ratings) if valid_ratings is not None else 0
        params |= {"n_valid": n_valid, "valid_sample": min(n_valid, settings.valid_sample or n_valid)}
        identity = ModelIdentity("rating", "trained", weight_decay=settings.weight_decay, rating_model="dot")
        fitted = FittedModel(module, identity, FitHistory(params=params), seen)
        if resumed is not None:
            fitted.history = resumed.fitted.history
            fitted.history.params = params
            load_engine_state(engine, resumed, Path(resume))
        target = Path(checkpoint) if checkpoint is not None else None
        FitLoop(fitted, engine, settings, checkpoint=target, fingerprint=fingerprint).run(valid_ratings, resumed=resumed, on_epoch=None)
    finally:
        engine.close()
    traffic = _bytes_per_rank(comms, engine, settings.epochs)
    fitted.history.params["bytes_sent_per_epoch"] = [int(np.median(row)) if row else 0 for row in traffic]  # by rank
    module.eval()
    return fitted


def _bytes_per_rank(comms: Comms, engine: RankEngine, epochs: int) -> list[list[int]]:
    """Every rank's bytes sent in each epoch this run trained, ``[rank][epoch]`` (measured by :class:`Comms`)."""
    mine = np.full(epochs, -1, np.int64)
    mine[: len(engine.bytes_per_epoch)] = engine.bytes_per_epoch
    every = comms.all_gather(mine, "gathering the traffic counts")
    return [[int(b) for b in row if b >= 0] for row in every]


def _registries(data: RatingsDataset, comms: Comms) -> tuple[IdRegistry, IdRegistry, int, tuple[float, float]]:
    """The user and item registries of the whole dataset, its row count and rating range; each rank reads
    a share of the files."""
    mine = data.summary(comms.rank, comms.world)
    user_col, item_col, _ = data.columns
    users = [ids_of_bytes(b, data.id_type[user_col]) for b in _gathered_bytes(comms, id_bytes(mine.users, data.id_type[user_col]))]
    items = [ids_of_bytes(b, data.id_type[item_col]) for b in _gathered_bytes(comms, id_bytes(mine.items, data.id_type[item_col]))]
    stats = comms.all_gather(np.array([mine.n_rows, mine.rating_min, mine.rating_max], np.float64), "summing the dataset")
    n_total = int(stats[:, 0].sum())
    if n_total == 0:
        raise ValueError(f"{data.path}: no ratings")
    registries = [IdRegistry(np.concatenate(parts), name=name) for parts, name in ((users, "user"), (items, "item"))]
    return registries[0], registries[1], n_total, (float(stats[:, 1].min()), float(stats[:, 2].max()))


def _gathered_bytes(comms: Comms, payload: bytes) -> list[bytes]:
    """Every rank's ``payload``, in rank order (lengths first, then padded uint8 arrays)."""
    sizes = comms.all_gather(np.array([len(payload)], np.int64), "gathering IDs")[:, 0]
    padded = np.zeros(int(sizes.max(initial=0)), np.uint8)
    padded[: len(payload)] = np.frombuffer(payload, np.uint8)
    every = comms.all_gather(padded, "gathering IDs")
    return [every[r, : int(sizes[r])].tobytes() for r in range(comms.world)]


def _fingerprint(comms: Comms, u_rows: np.ndarray, i_rows: np.ndarray, ratings: np.ndarray) -> str:
    """A fingerprint of all ranks' ratings that depends neither on their order nor on how they are split:
    the wrapping sum of a hash of each (user row, item row, rating bits), over every rank."""
    key = (
        (u_rows.astype(np.uint64) << np.uint64(40))
        ^ (i_rows.astype(np.uint64) << np.uint64(20))
        ^ ratings.view(np.uint32).astype(np.uint64)
    )
    mixed = key * np.uint64(0x9E3779B97F4A7C15)
    mixed ^= mixed >> np.uint64(29)
    total = comms.sum(np.array([mixed.sum(dtype=np.uint64)]).view(np.int64), "fingerprinting the ratings")
    return hashlib.blake2b(b"distributed ratings " + total.tobytes(), digest_size=16).hexdigest()


def _gathered_seen(comms: Comms, u_rows: np.ndarray, i_rows: np.ndarray, n_user_rows: int) -> SeenItems | None:
    """Rank 0: the training pairs of every rank as one :class:`SeenItems` (the users of ranks are disjoint); None elsewhere."""
    local = SeenItems.from_rows(u_rows, i_rows, n_user_rows)
    counts = np.diff(local.indptr).astype(np.int64)
    if comms.rank != 0:
        comms.send([counts, local.indices], 0, "sending the training pairs")
        return None
    total = counts.copy()
    pieces = [(counts, local.indices)]
    for r in range(1, comms.world):
        c = np.empty(n_user_rows, np.int64)
        comms.recv([c], r, f"receiving rank {r}'s training pairs")
        idx = np.empty(int(c.sum()), local.indices.dtype)
        comms.recv([idx], r, f"receiving rank {r}'s training pairs")
        pieces.append((c, idx))
        total += c
    indptr = np.concatenate([[0], np.cumsum(total)]).astype(np.int64)
    indices = np.empty(int(indptr[-1]), local.indices.dtype)
    for c, idx in pieces:  # a rank's users' lists, in row order, go to their places
        rows = np.flatnonzero(c)
        starts = np.repeat(indptr[rows] - np.concatenate([[0], np.cumsum(c[rows])[:-1]]), c[rows])
        indices[starts + np.arange(len(idx))] = idx
    return SeenItems(indptr, indices)
