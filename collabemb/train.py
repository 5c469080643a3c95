"""Fitting :class:`~collabemb.models.EmbeddingDotBias` to ratings.

Objective, per training rating (user u, item i, rating r)::

    (r - y(u, i))**2 + weight_decay * (|p_u|**2 + |q_i|**2)

The L2 term is applied to the factor rows a rating touches (as in Funk/Surprise SVD), so
frequently rated IDs are regularised in proportion to their evidence. Biases are not penalised:
on MovieLens 100K u1..u5 penalising them as strongly as the factors cost 0.002-0.01 RMSE
(benchmarks/accuracy.py).

Two engines minimise it, on the same model:

* ``"fast"`` (the default on CPU): :mod:`collabemb.engine`, a compiled kernel that updates the
  module's own tensors once per rating with row-wise Adagrad, on ``threads`` threads.
* ``"autograd"``: torch autograd and Adam over mini-batches of the objective's mean. It runs on
  any device (CUDA) and is the reference the fast engine is tested against.

The unknown slot: in every epoch each training row has its user replaced by row 0 with
probability ``unknown_frac``, and independently its item, so row 0 learns an average user and
an average item; unseen IDs then predict about the global mean plus the known side's bias.

Checkpoints (``fit(..., checkpoint=DIR)``) are written after every epoch, atomically: ``DIR``
is a complete model artifact (``collabemb.load_model(DIR)`` reads it) plus
``training_state.json`` (epoch, settings, early-stopping state, a fingerprint of the training
data) and ``optimizer.safetensors`` (optimiser state, random-generator state, best weights).
Nothing is pickled. ``fit(..., resume=DIR)`` continues such a run where it stopped: same epoch
count, same learning-rate schedule, and with the same thread count the very weights an
uninterrupted run would have reached.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from collabemb.data import Ratings, read_ratings
from collabemb.models import EmbeddingDotBias
from collabemb.registry import IdRegistry

#: Defaults chosen by measurement on MovieLens 100K u1..u5 (benchmarks/accuracy.py); ``None``
#: means the engine's own value from ENGINE_DEFAULTS.
DEFAULTS = {
    "n_factors": 64,
    "epochs": 20,
    "lr": None,
    "weight_decay": None,
    "batch_size": None,  # autograd engine only; auto: see fit()
    "unknown_frac": 0.02,
}
#: Per-engine learning rate and weight decay (their optimisers differ: row-wise Adagrad / Adam).
#: Fast engine on ml-100k u1..u5, 20 epochs: lr 0.07-0.15 x weight_decay 0.08-0.12 all gave
#: mean test RMSE 0.904-0.913; 10 epochs did as well at 64 factors but not at 8 (0.920).
ENGINE_DEFAULTS = {
    "fast": {"lr": 0.1, "weight_decay": 0.1},
    "autograd": {"lr": 0.01, "weight_decay": 0.12},
}
ENGINES = ("auto", "fast", "autograd")
#: Per-epoch validation scores at most this many validation ratings (a fixed, seeded sample).
VALID_SAMPLE = 250_000
CHECKPOINT_FORMAT = "collabemb-checkpoint"
CHECKPOINT_VERSION = 1
STATE_FILE = "training_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
#: Settings a resumed fit must share with its checkpoint (threads, device, validation may differ).
_RESUME_KEYS = (
    "engine", "n_factors", "epochs", "lr", "lr_schedule", "weight_decay", "batch_size",
    "unknown_frac", "y_range", "early_stopping", "seed", "n_train",
)  # fmt: skip
_TABLES = ("u_weight", "i_weight", "u_bias", "i_bias")


@dataclass
class FitHistory:
    """What a fit did, epoch by epoch (lists are aligned, one entry per finished epoch).

    ``train_rmse`` is measured on the ratings as they were trained (rows routed to the unknown
    slot excluded); ``valid_rmse`` on the validation ratings after the epoch (None without one;
    on a fixed sample of ``params["valid_sample"]`` of them when there are more). ``seconds`` is
    the epoch's wall time including validation, ``train_seconds`` the training pass alone (empty
    in artifacts written before it existed). ``stop_reason`` says why training ended before
    ``params["epochs"]``: ``"early_stopping"``, ``"callback"`` (``on_epoch`` returned True) or
    ``"interrupted"`` (Ctrl-C); None when every epoch ran.
    """

    epoch: list[int] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    train_rmse: list[float] = field(default_factory=list)
    valid_rmse: list[float | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    params: dict = field(default_factory=dict)
    train_seconds: list[float] = field(default_factory=list)
    stop_reason: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FitHistory:
        """Inverse of :meth:`to_dict`; fields missing from older artifacts take their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"epoch": self.epoch, "lr": self.lr, "train_rmse": self.train_rmse, "valid_rmse": self.valid_rmse, "seconds": self.seconds}
        )


def default_y_range(ratings: np.ndarray) -> tuple[float, float]:
    """Sigmoid range for ratings in [lo, hi]: widened by 10% of the span on each side.

    For 1..5 stars this gives (0.6, 5.4), so 1 and 5 are reachable without saturating.
    """
    lo, hi = float(ratings.min()), float(ratings.max())
    span = hi - lo if hi > lo else 1.0
    return (lo - 0.1 * span, hi + 0.1 * span)


def fit(
    ratings: Ratings | pd.DataFrame | str | os.PathLike,
    *,
    valid: Ratings | pd.DataFrame | None = None,
    n_factors: int = DEFAULTS["n_factors"],
    epochs: int = DEFAULTS["epochs"],
    lr: float | None = DEFAULTS["lr"],
    lr_schedule: str = "onecycle",
    weight_decay: float | None = DEFAULTS["weight_decay"],
    batch_size: int | None = DEFAULTS["batch_size"],
    unknown_frac: float = DEFAULTS["unknown_frac"],
    y_range: tuple[float, float] | None = None,
    early_stopping: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    device: str = "cpu",
    progress: bool | None = None,
    engine: str = "auto",
    valid_sample: int | None = VALID_SAMPLE,
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    on_epoch: Callable[[FitHistory], bool | None] | None = None,
    **read_kwargs,
) -> EmbeddingDotBias:
    """Train an :class:`EmbeddingDotBias` and return it, fitted, with ``model.history`` set.

    Args:
        ratings: training ratings: Ratings, a DataFrame, or a file path (``read_kwargs`` such as
            ``user_col=``, ``layout=`` go to :func:`~collabemb.data.read_ratings`).
        valid: optional validation ratings, scored after every epoch (RMSE).
        n_factors: embedding width.
        epochs: maximum number of passes over the training ratings.
        lr: peak learning rate (fast: row-wise Adagrad, default 0.1; autograd: Adam, 0.01).
        lr_schedule: ``"onecycle"`` (warm up over the first 25% of steps, cosine down to
            lr/100), ``"cosine"`` (cosine from lr to lr/100) or ``"constant"``. A step is a
            chunk of 1024 ratings (fast) or a mini-batch (autograd).
        weight_decay: L2 strength on the factor rows each rating touches (module docstring);
            default per engine (fast 0.1, autograd 0.12).
        batch_size: autograd engine only: ratings per step; default ``clip(n_train // 50, 64,
            1024)`` so that small sets still get at least ~50 steps per epoch. The fast engine
            updates once per rating and refuses a batch size.
        unknown_frac: per-epoch probability that a row's user (and, independently, its item) is
            routed to the unknown slot 0; 0 leaves row 0 untrained.
        y_range: (lo, hi) of the sigmoid; default widens the observed rating range by 10%.
        early_stopping: stop after this many epochs without a better validation RMSE and keep
            the best epoch's weights (needs ``valid``).
        seed: seeds initialisation, shuffling and unknown-slot routing.
        threads: fast engine: kernel threads, default the CPUs available (at most 8); the same
            seed and thread count give identical weights (threads train disjoint blocks of rows
            in lock-step strata), different thread counts slightly different ones. Autograd
            engine: torch intra-op threads, default 1 (2 threads were no faster on 2 cores and
            took minutes instead of seconds while another process held a core: OpenMP
            spinning); the same seed and thread count give identical weights.
        device: ``"cpu"`` or ``"cuda"`` (autograd engine).
        progress: tqdm progress bar with ratings per second; default on only when stderr is a
            terminal.
        engine: ``"fast"``, ``"autograd"`` or ``"auto"``: fast on CPU, autograd on other devices.
        valid_sample: score at most this many validation ratings per epoch (a fixed sample drawn
            with ``seed``); None scores them all.
        checkpoint: directory to write a checkpoint into after every epoch (module docstring).
        resume: a checkpoint directory to continue from. The call must repeat the checkpoint's
            training data and settings (``epochs``, ``lr``, ``seed``...; ``threads``,
            ``device``, ``valid`` and ``progress`` may differ); it then runs the remaining
            epochs. A finished checkpoint returns its model.
        on_epoch: called with the history after every epoch (after the checkpoint is written);
            returning True stops training there (``history.stop_reason == "callback"``).

    Ctrl-C stops cleanly: the epoch in progress is dropped, the model keeps the weights of the
    last finished epoch (so does the checkpoint), ``history.stop_reason`` is ``"interrupted"``
    and the model is returned. A second Ctrl-C aborts at once; so does Ctrl-C before the first
    epoch has finished (``KeyboardInterrupt``).
    """
    train = read_ratings(ratings, **read_kwargs)
    valid = read_ratings(valid, **read_kwargs) if valid is not None else None
    if early_stopping is not None and valid is None:
        raise ValueError("early_stopping needs validation ratings (valid=...)")
    if not 0.0 <= unknown_frac < 0.5:
        raise ValueError(f"unknown_frac must be in [0, 0.5), got {unknown_frac}")
    if lr_schedule not in ("onecycle", "cosine", "constant"):
        raise ValueError(f"lr_schedule must be 'onecycle', 'cosine' or 'constant', got {lr_schedule!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device='cuda' asked for, but torch sees no CUDA device")
    engine = _choose_engine(engine, device)
    defaults = ENGINE_DEFAULTS[engine]
    lr = defaults["lr"] if lr is None else lr
    weight_decay = defaults["weight_decay"] if weight_decay is None else weight_decay
    if engine == "fast" and batch_size is not None:
        raise ValueError("batch_size applies to the autograd engine only (the fast engine updates once per rating); pass engine='autograd'")
    if engine == "autograd" and batch_size is None:
        batch_size = int(np.clip(len(train) // 50, 64, 1024))
    if epochs < 1 or (batch_size is not None and batch_size < 1):
        raise ValueError("epochs and batch_size must be >= 1")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if valid_sample is not None and valid_sample < 1:
        raise ValueError(f"valid_sample must be >= 1 or None, got {valid_sample}")
    if engine == "fast":
        from collabemb.engine import default_threads

        threads = default_threads() if threads is None else threads
    else:
        threads = 1 if threads is None else threads
    if checkpoint is not None:
        _check_checkpoint_target(Path(checkpoint))

    frame = train.frame
    users, u_rows = _encode_ids(frame["user"], "user")
    items, i_rows = _encode_ids(frame["item"], "item")
    r = frame["rating"].to_numpy(dtype=np.float32)
    y_range = tuple(float(v) for v in (y_range or default_y_range(r)))
    n_valid = len(valid) if valid is not None else 0
    params = {
        "n_factors": n_factors, "epochs": epochs, "lr": lr, "lr_schedule": lr_schedule,
        "weight_decay": weight_decay, "batch_size": batch_size, "unknown_frac": unknown_frac,
        "y_range": list(y_range), "early_stopping": early_stopping, "seed": seed, "device": device,
        "n_train": len(train), "n_valid": n_valid,
        "engine": engine, "optimizer": "adagrad-rowwise" if engine == "fast" else "adam", "threads": threads,
        "valid_sample": min(n_valid, valid_sample or n_valid),
    }  # fmt: skip
    fingerprint = _data_fingerprint(u_rows, i_rows, r) if (checkpoint is not None or resume is not None) else None
    resumed = _read_checkpoint(Path(resume), params, fingerprint, users, items) if resume is not None else None

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads if engine == "autograd" else 1)
    try:
        gen = torch.Generator().manual_seed(seed)
        model = EmbeddingDotBias(users, items, n_factors=n_factors, y_range=y_range)
        model.reset_parameters(gen)
        # what each user rated, so recommend(exclude_seen=True) works on the fitted model (saved with it)
        from collabemb.index import SeenItems  # index -> artifact -> train: imported here, not at the top

        model.seen_items = SeenItems.from_rows(u_rows, i_rows, users.n_rows)
        history = FitHistory(params=params)
        if resumed is not None:
            with torch.no_grad():
                for name in _TABLES:
                    getattr(model, name).weight.copy_(getattr(resumed.model, name).weight)
            history = resumed.model.history
            history.params = params
        model.to(device)

        def lr_at(steps: np.ndarray, steps_per_epoch: int) -> np.ndarray:
            return _lr_schedule(steps, steps_per_epoch * epochs, lr, lr_schedule)

        if engine == "fast":
            from collabemb.engine import FastEngine

            runner = FastEngine(
                model, u_rows, i_rows, r, seed=seed, lr_at=lr_at, weight_decay=weight_decay,
                unknown_frac=unknown_frac, threads=threads,
            )  # fmt: skip
        else:
            runner = _AutogradEngine(
                model, u_rows, i_rows, r, gen=gen, lr_at=lr_at, weight_decay=weight_decay,
                batch_size=batch_size, unknown_frac=unknown_frac, device=device,
            )  # fmt: skip
        del u_rows, i_rows
        try:
            if resumed is not None:
                runner.load_state({k.removeprefix("optimizer."): v for k, v in resumed.tensors.items() if k.startswith("optimizer.")})
            _train(
                model, runner, history, valid=valid, valid_sample=valid_sample, seed=seed, epochs=epochs,
                early_stopping=early_stopping, checkpoint=Path(checkpoint) if checkpoint is not None else None,
                fingerprint=fingerprint, resumed=resumed, on_epoch=on_epoch,
                progress=sys.stderr.isatty() if progress is None else progress,
            )  # fmt: skip
        finally:
            runner.close()
    finally:
        torch.set_num_threads(old_threads)
    model.history = history
    model.eval()
    return model


def _choose_engine(engine: str, device: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINES))}, got {engine!r}")
    on_cpu = device == "cpu"
    if engine == "fast" and not on_cpu:
        raise ValueError(f"the fast engine trains on the CPU; device={device!r} needs engine='autograd' (or 'auto')")
    if engine != "auto":
        return engine
    if not on_cpu:
        return "autograd"
    try:
        import collabemb.engine  # noqa: F401  (numba compiles on first use; this checks it imports)
    except ImportError as exc:  # pragma: no cover - numba is a dependency
        warnings.warn(f"fast engine unavailable ({exc}); training with the autograd engine", stacklevel=3)
        return "autograd"
    return "fast"


def _encode_ids(column: pd.Series, name: str) -> tuple[IdRegistry, np.ndarray]:
    """The registry of a training column and its (n,) int32 rows, in one vectorised pass.

    Integer IDs spanning a range not much larger than the data go through a dense lookup table
    (O(n), no hashing: 25M MovieLens IDs in about a second); other IDs through the registry.
    """
    values = column.to_numpy()
    if values.dtype == np.int64 and len(values):
        lo, hi = int(values.min()), int(values.max())
        if hi - lo < max(4 * len(values), 1 << 20):
            offset = values - lo
            seen = np.zeros(hi - lo + 1, dtype=bool)
            seen[offset] = True
            ids = np.flatnonzero(seen) + lo  # sorted unique IDs: the registry's row order
            lookup = np.zeros(hi - lo + 1, dtype=np.int32)
            lookup[ids - lo] = np.arange(1, len(ids) + 1, dtype=np.int32)
            return IdRegistry(ids, name=name), lookup[offset]
    registry = IdRegistry(column, name=name)
    return registry, registry.encode(column).astype(np.int32)


def _lr_schedule(step: np.ndarray | int, total: int, lr: float, schedule: str) -> np.ndarray:
    """Learning rate at step(s) ``step`` of ``total`` (vectorised over steps)."""
    step = np.asarray(step, dtype=np.float64)
    if schedule == "constant":
        return np.full(step.shape, lr)
    t = step / max(total - 1, 1)
    floor = lr / 100
    if schedule == "cosine":
        return floor + (lr - floor) * 0.5 * (1 + np.cos(np.pi * t))
    warm = 0.25
    start = lr / 25
    up = start + (lr - start) * 0.5 * (1 - np.cos(np.pi * np.minimum(t, warm) / warm))
    down = floor + (lr - floor) * 0.5 * (1 + np.cos(np.pi * (np.maximum(t, warm) - warm) / (1 - warm)))
    return np.where(t < warm, up, down)


def rmse(model: EmbeddingDotBias, ratings: Ratings) -> float:
    """Root mean squared error of ``model`` on ratings given by raw ID (unseen IDs use row 0)."""
    frame = ratings.frame
    return _rmse_rows(model, model.users.encode(frame["user"]), model.items.encode(frame["item"]), frame["rating"].to_numpy())


@torch.no_grad()
def _rmse_rows(model: EmbeddingDotBias, users: np.ndarray, items: np.ndarray, ratings: np.ndarray, batch_size: int = 1 << 16) -> float:
    """RMSE of the model's float32 predictions for (n,) table rows against (n,) ratings."""
    device = model.u_weight.weight.device
    was_training = model.training
    model.eval()
    sq = 0.0
    for start in range(0, len(ratings), batch_size):
        u = torch.as_tensor(np.asarray(users[start : start + batch_size], dtype=np.int64), device=device)
        i = torch.as_tensor(np.asarray(items[start : start + batch_size], dtype=np.int64), device=device)
        pred = model(u, i).float().cpu().numpy().astype(np.float64)
        sq += float(np.sum((pred - np.asarray(ratings[start : start + batch_size], dtype=np.float64)) ** 2))
    model.train(was_training)
    return math.sqrt(sq / max(len(ratings), 1))


# --- the loop shared by both engines -------------------------------------------------


@dataclass
class _Resumed:
    model: EmbeddingDotBias
    state: dict
    tensors: dict[str, torch.Tensor]


class _StopOnSigint:
    """While active (in the main thread), the first Ctrl-C sets ``event``; a second one raises.

    The training loop polls the event between steps, so a Ctrl-C never lands in the middle of an
    update or of a checkpoint write. Elsewhere (another thread, or a SIGINT handler that is not
    Python's default) nothing is installed and Ctrl-C raises KeyboardInterrupt as usual.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous = None

    def __enter__(self) -> threading.Event:
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self.event

    def _handle(self, signum, frame) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        print("\ncollabemb: Ctrl-C: stopping, keeping the last finished epoch (Ctrl-C again to abort)", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _train(
    model: EmbeddingDotBias, runner, history: FitHistory, *, valid: Ratings | None, valid_sample: int | None, seed: int,
    epochs: int, early_stopping: int | None, checkpoint: Path | None, fingerprint: str | None, resumed: _Resumed | None,
    on_epoch: Callable[[FitHistory], bool | None] | None, progress: bool,
) -> None:  # fmt: skip
    """Run epochs ``len(history.epoch) + 1 .. epochs`` with ``runner``; fills ``history`` in place."""
    n_train = history.params["n_train"]
    valid_rows = _valid_rows(model, valid, valid_sample, seed) if valid is not None else None
    best = {"valid": math.inf, "epoch": None, "bad_epochs": 0, "weights": None}
    if resumed is not None:
        s = resumed.state
        best.update(valid=math.inf if s["best_valid"] is None else s["best_valid"], epoch=s["best_epoch"], bad_epochs=s["bad_epochs"])
        if s["has_best_weights"]:
            best["weights"] = {name: resumed.tensors[f"best.{name}"].to(model.u_weight.weight.device) for name in _TABLES}
    done = len(history.epoch)
    if history.stop_reason == "early_stopping":
        done = epochs  # a resumed run that had stopped early is finished
    else:
        history.stop_reason = None
    last_finished = _copy_tables(model)
    bar = tqdm(total=epochs * n_train, initial=done * n_train, disable=not progress, unit="rating", unit_scale=True, leave=False)
    try:
        with _StopOnSigint() as stop:
            for epoch in range(done + 1, epochs + 1):
                t0 = time.perf_counter()
                model.train()
                try:
                    result = runner.run_epoch(epoch, stop, bar.update)
                except KeyboardInterrupt:  # only when no handler could be installed
                    result = None
                if result is None:
                    _restore_tables(model, last_finished)
                    history.stop_reason = "interrupted"
                    break
                train_seconds = time.perf_counter() - t0
                if not math.isfinite(result.sq_sum):
                    raise FloatingPointError(f"training diverged in epoch {epoch} (non-finite loss); lower lr")
                v = _rmse_rows(model, *valid_rows) if valid_rows is not None else None
                history.epoch.append(epoch)
                history.lr.append(result.last_lr)
                history.train_rmse.append(math.sqrt(result.sq_sum / max(result.count, 1)))
                history.valid_rmse.append(v)
                history.train_seconds.append(train_seconds)
                history.seconds.append(time.perf_counter() - t0)
                bar.set_postfix(epoch=epoch, train=f"{history.train_rmse[-1]:.4f}", valid=f"{v:.4f}" if v is not None else "-")
                if v is not None:
                    if v < best["valid"]:
                        best.update(valid=v, epoch=epoch, bad_epochs=0)
                        best["weights"] = _copy_tables(model, into=best["weights"]) if early_stopping is not None else None
                    else:
                        best["bad_epochs"] += 1
                    history.best_epoch = best["epoch"]
                last_finished = _copy_tables(model, into=last_finished)
                stopping = early_stopping is not None and best["bad_epochs"] >= early_stopping
                if stopping:
                    history.stopped_early = True
                    history.stop_reason = "early_stopping"
                if checkpoint is not None:
                    model.history = history
                    _write_checkpoint(checkpoint, model, runner, history, best=best, fingerprint=fingerprint)
                if stopping:
                    break
                if on_epoch is not None and on_epoch(history):
                    history.stop_reason = "callback"
                    break
                if stop.is_set():
                    history.stop_reason = "interrupted"
                    break
    finally:
        bar.close()
    if history.stop_reason == "interrupted" and not history.epoch:
        raise KeyboardInterrupt
    if early_stopping is not None and best["weights"] is not None:
        _restore_tables(model, best["weights"])


def _valid_rows(model: EmbeddingDotBias, valid: Ratings, sample: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frame = valid.frame
    if sample is not None and len(frame) > sample:
        pick = np.sort(np.random.default_rng(np.random.SeedSequence([int(seed) & (2**64 - 1), 2])).choice(len(frame), sample, replace=False))
        frame = frame.iloc[pick]
    return model.users.encode(frame["user"]), model.items.encode(frame["item"]), frame["rating"].to_numpy(dtype=np.float64)


def _copy_tables(model: EmbeddingDotBias, into: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The four tables' current values, copied into ``into`` (reused) or new tensors."""
    if into is None:
        return {name: getattr(model, name).weight.detach().clone() for name in _TABLES}
    for name in _TABLES:
        into[name].copy_(getattr(model, name).weight.detach())
    return into


def _restore_tables(model: EmbeddingDotBias, tables: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name in _TABLES:
            getattr(model, name).weight.copy_(tables[name])


# --- the autograd engine ---------------------------------------------------------------


class _AutogradEngine:
    """Mini-batch Adam over the per-rating objective, by torch autograd (any device)."""

    def __init__(
        self, model: EmbeddingDotBias, users: np.ndarray, items: np.ndarray, ratings: np.ndarray, *, gen: torch.Generator,
        lr_at: Callable[[np.ndarray, int], np.ndarray], weight_decay: float, batch_size: int, unknown_frac: float, device: str,
    ):  # fmt: skip
        self.model = model
        self.gen = gen
        self.lr_at = lr_at
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.unknown_frac = unknown_frac
        self.device = device
        self.u_all = torch.as_tensor(np.array(users, dtype=np.int64), device=device)
        self.i_all = torch.as_tensor(np.array(items, dtype=np.int64), device=device)
        self.r_all = torch.as_tensor(np.array(ratings, dtype=np.float32), device=device)
        self.n = len(ratings)
        self.steps_per_epoch = math.ceil(self.n / batch_size)
        self.opt = torch.optim.Adam(model.parameters(), lr=float(lr_at(np.zeros(1, np.int64), self.steps_per_epoch)[0]))

    def run_epoch(self, epoch: int, stop: threading.Event, tick: Callable[[int], None]):
        from collabemb.engine import EpochResult

        model, device, n = self.model, self.device, self.n
        perm = torch.randperm(n, generator=self.gen).to(device)
        route_u = (torch.rand(n, generator=self.gen) < self.unknown_frac).to(device)
        route_i = (torch.rand(n, generator=self.gen) < self.unknown_frac).to(device)
        first = (epoch - 1) * self.steps_per_epoch
        lrs = self.lr_at(first + np.arange(self.steps_per_epoch, dtype=np.int64), self.steps_per_epoch)
        sq_sum = torch.zeros((), dtype=torch.float64, device=device)
        n_seen = 0
        for step, start in enumerate(range(0, n, self.batch_size)):
            if stop.is_set():
                return None
            idx = perm[start : start + self.batch_size]
            ub = torch.where(route_u[idx], 0, self.u_all[idx])
            ib = torch.where(route_i[idx], 0, self.i_all[idx])
            for group in self.opt.param_groups:
                group["lr"] = float(lrs[step])
            err = model(ub, ib) - self.r_all[idx]
            reg = model.u_weight(ub).pow(2).sum(1) + model.i_weight(ib).pow(2).sum(1)
            loss = (err.pow(2) + self.weight_decay * reg).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            with torch.no_grad():
                plain = ~(route_u[idx] | route_i[idx])
                sq_sum += err.detach()[plain].double().pow(2).sum()
                n_seen += int(plain.sum())
            tick(len(idx))
        return EpochResult(sq_sum.item(), n_seen, float(lrs[-1]))

    @property
    def state(self) -> dict[str, torch.Tensor]:
        """Adam's moments and step count per parameter, and the random generator's state."""
        out = {"generator": self.gen.get_state()}
        for name, param in self.model.named_parameters():
            for key, value in self.opt.state.get(param, {}).items():
                out[f"adam.{name}.{key}"] = torch.as_tensor(value).detach()
        return out

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.gen.set_state(state["generator"])
        for name, param in self.model.named_parameters():
            prefix = f"adam.{name}."
            entry = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            if entry:
                entry = {k: (v if k == "step" else v.to(param.device)) for k, v in entry.items()}
                self.opt.state[param] = entry

    def close(self) -> None:
        pass


# --- checkpoints -----------------------------------------------------------------------


def _data_fingerprint(users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> str:
    """A hash of the encoded training ratings, so a resumed fit is known to see the same data."""
    h = hashlib.blake2b(digest_size=16)
    for arr in (users, items, ratings):
        h.update(np.ascontiguousarray(arr).view(np.uint8))
    return h.hexdigest()


def _check_checkpoint_target(path: Path) -> None:
    if path.exists() and not (path / STATE_FILE).is_file() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"{path}: exists and is not a collabemb checkpoint; refusing to overwrite it")


def _write_checkpoint(path: Path, model: EmbeddingDotBias, runner, history: FitHistory, *, best: dict, fingerprint: str | None) -> None:
    """Write the checkpoint directory atomically (a temporary sibling renamed into place)."""
    import shutil
    import tempfile

    from safetensors.torch import save_file

    from collabemb.artifact import _replace_dir, _write_json, save_model

    epoch = history.epoch[-1]
    tensors = {f"optimizer.{k}": v.detach().to("cpu").contiguous() for k, v in runner.state.items()}
    keep_best = best["weights"] is not None and best["epoch"] != epoch
    if keep_best:
        tensors.update({f"best.{k}": v.detach().to("cpu").contiguous() for k, v in best["weights"].items()})
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "epoch": epoch,
        "params": history.params,
        "data_fingerprint": fingerprint,
        "best_valid": best["valid"] if math.isfinite(best["valid"]) else None,
        "best_epoch": best["epoch"],
        "bad_epochs": best["bad_epochs"],
        "has_best_weights": keep_best,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.ckpt-", dir=path.parent))
    try:
        staged = work / "checkpoint"
        save_model(model, staged)
        save_file(tensors, str(staged / OPTIMIZER_FILE), metadata={"format": CHECKPOINT_FORMAT})
        _write_json(staged / STATE_FILE, state)
        _replace_dir(staged, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_checkpoint_state(path: str | os.PathLike) -> dict:
    """The ``training_state.json`` of a checkpoint directory (epoch, settings, early-stopping state)."""
    file = Path(path) / STATE_FILE
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: not a collabemb checkpoint ({STATE_FILE} missing)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: invalid JSON ({exc.msg})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{file}: not a collabemb checkpoint")
    if not isinstance(state.get("version"), int) or state["version"] > CHECKPOINT_VERSION:
        raise ValueError(f"{file}: checkpoint version {state.get('version')!r} is newer than this collabemb reads ({CHECKPOINT_VERSION})")
    return state


def _read_checkpoint(path: Path, params: dict, fingerprint: str, users: IdRegistry, items: IdRegistry) -> _Resumed:
    from safetensors.torch import load_file

    from collabemb.artifact import load_model

    state = read_checkpoint_state(path)
    saved = state["params"]
    differ = [f"{k}={saved.get(k)!r} (this call: {params[k]!r})" for k in _RESUME_KEYS if saved.get(k) != params[k]]
    if differ:
        raise ValueError(f"{path}: cannot resume: the checkpoint was trained with " + ", ".join(differ))
    model = load_model(path)
    if model.users != users or model.items != items or state.get("data_fingerprint") != fingerprint:
        raise ValueError(f"{path}: cannot resume: the training ratings differ from those the checkpoint was trained on")
    if model.history is None or len(model.history.epoch) != state["epoch"]:
        raise ValueError(f"{path}: checkpoint history does not match its training state")
    try:
        tensors = load_file(str(path / OPTIMIZER_FILE))
    except Exception as exc:  # safetensors raises several types for a bad file
        raise ValueError(f"{path / OPTIMIZER_FILE}: unreadable ({exc})") from None
    return _Resumed(model, state, tensors)
