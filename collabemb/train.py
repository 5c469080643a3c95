"""Fitting an :class:`~collabemb.models.EmbeddingDotBias` to ratings: the fit loop.

Objective, per training rating (user u, item i, rating r)::

    (r - y(u, i))**2 + weight_decay * (|p_u|**2 + |q_i|**2)

The L2 term is applied to the factor rows a rating touches (as in Funk/Surprise SVD), so
frequently rated IDs are regularised in proportion to their evidence. Biases are not penalised:
on MovieLens 100K u1..u5 penalising them as strongly as the factors cost 0.002-0.01 RMSE
(benchmarks/accuracy.py).

Two engines (:mod:`collabemb.engines`) minimise it, on the same model:

* ``"fast"`` (the default on CPU): :mod:`collabemb.engines.fast`, a compiled kernel that updates
  the module's own tensors once per rating with row-wise Adagrad, on ``threads`` threads.
* ``"autograd"``: :mod:`collabemb.engines.autograd`, torch autograd and Adam over mini-batches
  of the objective's mean. It runs on any device (CUDA) and is the reference the fast engine is
  tested against.

The settings are one :class:`~collabemb.settings.FitSettings`; this module runs the epochs
(validation, early stopping, checkpoints, Ctrl-C) with whichever engine they name.

The unknown slot: in every epoch each training row has its user replaced by row 0 with
probability ``unknown_frac``, and independently its item, so row 0 learns an average user and
an average item; unseen IDs then predict about the global mean plus the known side's bias.

Checkpoints (``fit(..., checkpoint=DIR)``) are written after every epoch as a new verified
snapshot of the store ``DIR`` (:mod:`collabemb.store`; the fit holds its writer lock
throughout, so a second fit on the same ``DIR`` is refused): the snapshot is a complete model
artifact (``collabemb.load_model(DIR)`` reads it) plus
``training_state.json`` (epoch, settings, early-stopping state, a fingerprint of the training
data) and ``optimizer.safetensors`` (optimiser state, random-generator state, best weights).
Nothing is pickled. ``fit(..., resume=DIR)`` continues such a run where it stopped: same epoch
count, same learning-rate schedule, and with the same thread count the very weights an
uninterrupted run would have reached.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from tqdm import tqdm

from collabemb.artifact import read_model_files, write_model_files
from collabemb.data import Ratings, read_ratings
from collabemb.engines import Engine
from collabemb.fitted import FittedModel, ModelIdentity
from collabemb.history import FitHistory
from collabemb.interactions import Interactions, SeenItems, encode
from collabemb.model_card import data_facts, library_versions
from collabemb.models import TABLE_NAMES, EmbeddingDotBias
from collabemb.registry import IdRegistry
from collabemb.schema import CHECKPOINT_STATE, CHECKPOINT_STATE_MAX_BYTES, ArtifactError, parse_json
from collabemb.settings import FitSettings
from collabemb.store import Snapshot, open_snapshot, write_snapshot, writer_lock

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "collabemb-checkpoint"
CHECKPOINT_VERSION = 2
STATE_FILE = "training_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
#: Options of :func:`~collabemb.data.read_ratings` that ``fit`` passes on when the ratings are a file.
READ_OPTIONS = ("user_col", "item_col", "rating_col", "timestamp_col", "layout", "sep", "duplicates", "id_type")


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
    valid: Ratings | pd.DataFrame | str | os.PathLike | None = None,
    settings: FitSettings | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    on_epoch: Callable[[FitHistory], bool | None] | None = None,
    **options,
) -> FittedModel:
    """Train an :class:`EmbeddingDotBias` on ratings and return it as a :class:`FittedModel`.

    Args:
        ratings: training ratings: Ratings, a DataFrame, or a file path.
        valid: optional validation ratings, scored after every epoch (RMSE). They are never
            training pairs: the fitted model's ``seen_items`` holds the training pairs only.
        settings: a :class:`~collabemb.settings.FitSettings`; its fields may also be given as
            keyword arguments (``n_factors=32, epochs=10``), which override it.
        checkpoint: directory to write a checkpoint into after every epoch (module docstring).
        resume: a checkpoint directory to continue from. The call must repeat the checkpoint's
            training data and the settings marked ``resume`` in FitSettings (``threads``,
            ``device``, ``valid`` and ``progress`` may differ); it then runs the remaining
            epochs. A finished checkpoint returns its model.
        on_epoch: called with the history after every epoch (after the checkpoint is written);
            returning True stops training there (``history.stop_reason == "callback"``).
        options: FitSettings fields, and for file input the options of
            :func:`~collabemb.data.read_ratings` (``user_col=``, ``layout=``, ...).

    Returns:
        The fitted model: the module, its identity (family ``"rating"``, the weight decay a
        fold-in reuses), the history, and the training pairs as ``seen_items``.

    Ctrl-C stops cleanly: the epoch in progress is dropped, the model keeps the weights of the
    last finished epoch (so does the checkpoint), ``history.stop_reason`` is ``"interrupted"``
    and the model is returned. A second Ctrl-C aborts at once; so does Ctrl-C before the first
    epoch has finished (``KeyboardInterrupt``).
    """
    read_kwargs = {k: options.pop(k) for k in list(options) if k in READ_OPTIONS}
    settings = (settings or FitSettings()).replace(**options)
    train = read_ratings(ratings, **read_kwargs)
    valid = read_ratings(valid, **read_kwargs) if valid is not None else None
    settings = _resolve(settings, train, valid)
    with writer_lock(checkpoint) if checkpoint is not None else contextlib.nullcontext():  # one fit per checkpoint path
        return _fit(train, valid, settings, checkpoint=checkpoint, resume=resume, on_epoch=on_epoch)


def _fit(train: Ratings, valid: Ratings | None, settings: FitSettings, *, checkpoint, resume, on_epoch) -> FittedModel:
    data = encode(train)
    facts = data_facts(train, data.users, data.items)  # for the model card: rating range, time span, counts
    del train
    n_valid = len(valid) if valid is not None else 0
    params = {**settings.to_dict(), "n_train": len(data), "n_valid": n_valid}
    params["valid_sample"] = min(n_valid, settings.valid_sample or n_valid)
    params["optimizer"] = "adagrad-rowwise" if settings.engine == "fast" else "adam"
    params.update(facts, versions=library_versions("rating"))
    fingerprint = _data_fingerprint(data) if (checkpoint is not None or resume is not None) else None
    resumed = read_checkpoint(Path(resume), settings, fingerprint, data.users, data.items, len(data)) if resume is not None else None

    old_threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads if settings.engine == "autograd" else 1)
    try:
        gen = torch.Generator().manual_seed(settings.seed)
        module = EmbeddingDotBias(data.users, data.items, n_factors=settings.n_factors, y_range=settings.y_range)
        module.reset_parameters(gen)
        if resumed is not None:
            _restore_tables(module, {name: getattr(resumed.fitted.module, name).weight for name in TABLE_NAMES})
        module.to(settings.device)
        seen = data.seen()
        engine = _make_engine(module, data, seen, settings, gen)
        del data
        try:
            identity = ModelIdentity("rating", "trained", weight_decay=settings.weight_decay, rating_model=settings.model)
            # svdpp: the engine's own history vectors, so every checkpoint (and the result) holds the current ones
            history_vectors = engine.history_table if settings.model == "svdpp" else None
            fitted = FittedModel(module, identity, FitHistory(params=params), seen, history_vectors=history_vectors)
            if resumed is not None:
                fitted.history = resumed.fitted.history
                fitted.history.params = params
                load_engine_state(engine, resumed, Path(resume))
            target = Path(checkpoint) if checkpoint is not None else None
            FitLoop(fitted, engine, settings, checkpoint=target, fingerprint=fingerprint).run(valid, resumed=resumed, on_epoch=on_epoch)
        finally:
            engine.close()
    finally:
        torch.set_num_threads(old_threads)
    module.eval()
    return fitted


def _resolve(settings: FitSettings, train: Ratings, valid: Ratings | None) -> FitSettings:
    """Check the settings against the data and the machine; fill in engine, defaults, threads, y_range."""
    if settings.early_stopping is not None and valid is None:
        raise ValueError("early_stopping needs validation ratings (valid=...)")
    try:
        torch.device(settings.device)
    except RuntimeError:
        raise ValueError(f"device {settings.device!r} is not a torch device (use 'cpu' or 'cuda')") from None
    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device='cuda' asked for, but torch sees no CUDA device")
    settings = settings.resolved(len(train), _choose_engine(settings.engine, settings.device))
    if settings.model == "svdpp" and settings.engine != "fast":
        raise ValueError("model='svdpp' trains on the fast engine (CPU) only; use engine='fast' or 'auto'")
    if settings.model == "svdpp" and settings.early_stopping is not None:
        raise ValueError("early_stopping keeps the best epoch's tables, not its history vectors: model='svdpp' runs all its epochs")
    y_range = settings.y_range or default_y_range(train.frame["rating"].to_numpy())
    return settings.replace(threads=_threads(settings), y_range=y_range)


def _make_engine(module: EmbeddingDotBias, data: Interactions, seen: SeenItems, settings: FitSettings, gen: torch.Generator) -> Engine:
    """The engine ``settings.engine`` names (svdpp's for ``model="svdpp"``), on the module's tables, the
    encoded ratings and their distinct pairs ``seen``."""

    def lr_at(steps: np.ndarray, steps_per_epoch: int) -> np.ndarray:
        return lr_schedule(steps, steps_per_epoch * settings.epochs, settings.lr, settings.lr_schedule)

    common = {"lr_at": lr_at, "weight_decay": settings.weight_decay, "unknown_frac": settings.unknown_frac}
    common["frequency_exponent"] = settings.frequency_exponent
    if settings.model == "svdpp":
        from collabemb.engines.svdpp import SvdppEngine

        history = {"history_lr": settings.history_lr, "history_weight_decay": settings.history_weight_decay}
        return SvdppEngine(module, data, seen=seen, seed=settings.seed, threads=settings.threads, **history, **common)
    if settings.engine == "fast":
        from collabemb.engines.fast import FastEngine

        return FastEngine(module, data, seed=settings.seed, threads=settings.threads, **common)
    from collabemb.engines.autograd import AutogradEngine

    return AutogradEngine(module, data, gen=gen, batch_size=settings.batch_size, device=settings.device, **common)


def _choose_engine(engine: str, device: str) -> str:
    on_cpu = device == "cpu"
    if engine == "fast" and not on_cpu:
        raise ValueError(f"the fast engine trains on the CPU; device={device!r} needs engine='autograd' (or 'auto')")
    if engine != "auto":
        return engine
    if not on_cpu:
        return "autograd"
    try:
        import collabemb.engines.fast  # noqa: F401  (numba compiles on first use; this checks it imports)
    except ImportError as exc:  # pragma: no cover - numba is a dependency
        warnings.warn(f"fast engine unavailable ({exc}); training with the autograd engine", stacklevel=3)
        return "autograd"
    return "fast"


def _threads(settings: FitSettings) -> int:
    if settings.threads is not None:
        return settings.threads
    if settings.engine == "fast":
        from collabemb.engines.fast import default_threads

        return default_threads()
    return 1


def lr_schedule(step: np.ndarray | int, total: int, lr: float, schedule: str) -> np.ndarray:
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


def rmse(fitted: FittedModel | EmbeddingDotBias, ratings: Ratings | pd.DataFrame) -> float:
    """Root mean squared error on ratings given by raw ID (unseen IDs use row 0)."""
    module = fitted.module if isinstance(fitted, FittedModel) else fitted
    frame = read_ratings(ratings).frame
    return _rmse_rows(module, module.users.encode(frame["user"]), module.items.encode(frame["item"]), frame["rating"].to_numpy())


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


# --- the loop shared by every engine -------------------------------------------------


@dataclass
class Resumed:
    fitted: FittedModel
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


class FitLoop:
    """Runs epochs ``len(history.epoch) + 1 .. settings.epochs`` with an engine; fills the history."""

    def __init__(self, fitted: FittedModel, engine: Engine, settings: FitSettings, *, checkpoint: Path | None, fingerprint: str | None):
        self.fitted = fitted
        self.module = fitted.module
        self.history = fitted.history
        self.engine = engine
        self.settings = settings
        self.checkpoint = checkpoint
        self.fingerprint = fingerprint
        self.best = {"valid": math.inf, "epoch": None, "bad_epochs": 0, "weights": None}

    def run(self, valid: Ratings | None, *, resumed: Resumed | None, on_epoch: Callable[[FitHistory], bool | None] | None) -> None:
        settings, history = self.settings, self.history
        valid_rows = _valid_rows(self.module, valid, settings.valid_sample, settings.seed) if valid is not None else None
        if resumed is not None:
            self._restore_best(resumed)
        done = len(history.epoch)
        if history.stop_reason == "early_stopping":
            done = settings.epochs  # a resumed run that had stopped early is finished
        else:
            history.stop_reason = None
        self.last_finished = _copy_tables(self.module)
        n_train = history.params["n_train"]
        progress = sys.stderr.isatty() if settings.progress is None else settings.progress
        bar = tqdm(
            total=settings.epochs * n_train, initial=done * n_train, disable=not progress, unit="rating", unit_scale=True, leave=False
        )
        try:
            with _StopOnSigint() as stop:
                for epoch in range(done + 1, settings.epochs + 1):
                    if self._epoch(epoch, stop, bar, valid_rows, on_epoch):
                        break
        finally:
            bar.close()
        if history.stop_reason == "interrupted" and not history.epoch:
            raise KeyboardInterrupt
        if settings.early_stopping is not None and self.best["weights"] is not None:
            _restore_tables(self.module, self.best["weights"])

    def _restore_best(self, resumed: Resumed) -> None:
        s = resumed.state
        self.best.update(valid=math.inf if s["best_valid"] is None else s["best_valid"], epoch=s["best_epoch"], bad_epochs=s["bad_epochs"])
        if s["has_best_weights"]:
            device = self.module.u_weight.weight.device
            self.best["weights"] = {name: resumed.tensors[f"best.{name}"].to(device) for name in TABLE_NAMES}

    def _epoch(self, epoch: int, stop: threading.Event, bar, valid_rows, on_epoch) -> bool:
        """Train one epoch and record it; True when training ends here."""
        history, best = self.history, self.best
        t0 = time.perf_counter()
        self.module.train()
        try:
            result = self.engine.run_epoch(epoch, stop, bar.update)
        except KeyboardInterrupt:  # only when no handler could be installed
            result = None
        if result is None:
            _restore_tables(self.module, self.last_finished)
            history.stop_reason = "interrupted"
            return True
        train_seconds = time.perf_counter() - t0
        if not math.isfinite(result.sq_sum):
            raise FloatingPointError(f"training diverged in epoch {epoch} (non-finite loss); lower lr")
        v = _rmse_rows(self.module, *valid_rows) if valid_rows is not None else None
        history.epoch.append(epoch)
        history.lr.append(result.last_lr)
        history.train_rmse.append(math.sqrt(result.sq_sum / max(result.count, 1)))
        history.valid_rmse.append(v)
        history.train_seconds.append(train_seconds)
        history.seconds.append(time.perf_counter() - t0)
        bar.set_postfix(epoch=epoch, train=f"{history.train_rmse[-1]:.4f}", valid=f"{v:.4f}" if v is not None else "-")
        log.info(
            "epoch %d/%d: train RMSE %.4f, valid RMSE %s, %.2f s",
            epoch,
            self.settings.epochs,
            history.train_rmse[-1],
            "-" if v is None else f"{v:.4f}",
            history.seconds[-1],
        )
        if v is not None:
            if v < best["valid"]:
                best.update(valid=v, epoch=epoch, bad_epochs=0)
                keep = self.settings.early_stopping is not None
                best["weights"] = _copy_tables(self.module, into=best["weights"]) if keep else None
            else:
                best["bad_epochs"] += 1
            history.best_epoch = best["epoch"]
        self.last_finished = _copy_tables(self.module, into=self.last_finished)
        stopping = self.settings.early_stopping is not None and best["bad_epochs"] >= self.settings.early_stopping
        if stopping:
            history.stopped_early = True
            history.stop_reason = "early_stopping"
        if self.checkpoint is not None:
            _write_checkpoint(self.checkpoint, self.fitted, self.engine, best=best, fingerprint=self.fingerprint)
        if stopping:
            return True
        if on_epoch is not None and on_epoch(history):
            history.stop_reason = "callback"
            return True
        if stop.is_set():
            history.stop_reason = "interrupted"
            return True
        return False


def _valid_rows(model: EmbeddingDotBias, valid: Ratings, sample: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frame = valid.frame
    if sample is not None and len(frame) > sample:
        pick = np.sort(
            np.random.default_rng(np.random.SeedSequence([int(seed) & (2**64 - 1), 2])).choice(len(frame), sample, replace=False)
        )
        frame = frame.iloc[pick]
    return model.users.encode(frame["user"]), model.items.encode(frame["item"]), frame["rating"].to_numpy(dtype=np.float64)


def _copy_tables(model: EmbeddingDotBias, into: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The four tables' current values, copied into ``into`` (reused) or new tensors."""
    if into is None:
        return {name: getattr(model, name).weight.detach().clone() for name in TABLE_NAMES}
    for name in TABLE_NAMES:
        into[name].copy_(getattr(model, name).weight.detach())
    return into


def _restore_tables(model: EmbeddingDotBias, tables: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name in TABLE_NAMES:
            getattr(model, name).weight.copy_(tables[name])


# --- checkpoints -----------------------------------------------------------------------


def _data_fingerprint(data: Interactions) -> str:
    """A hash of the encoded training ratings, so a resumed fit is known to see the same data."""
    h = hashlib.blake2b(digest_size=16)
    for arr in (data.user_rows, data.item_rows, data.values):
        h.update(np.ascontiguousarray(arr).view(np.uint8))
    return h.hexdigest()


def _write_checkpoint(path: Path, fitted: FittedModel, engine: Engine, *, best: dict, fingerprint: str | None) -> None:
    """Write a checkpoint as a new snapshot of the store at ``path``: a model plus the training state."""
    history = fitted.history
    epoch = history.epoch[-1]
    tensors = {f"optimizer.{k}": v.detach().to("cpu").contiguous() for k, v in engine.state.items()}
    keep_best = best["weights"] is not None and best["epoch"] != epoch
    if keep_best:
        tensors.update({f"best.{k}": v.detach().to("cpu").contiguous() for k, v in best["weights"].items()})
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "epoch": epoch,
        "settings": {k: history.params[k] for k in FitSettings.names()},
        "n_train": history.params["n_train"],
        "data_fingerprint": fingerprint,
        "best_valid": best["valid"] if math.isfinite(best["valid"]) else None,
        "best_epoch": best["epoch"],
        "bad_epochs": best["bad_epochs"],
        "has_best_weights": keep_best,
    }
    with write_snapshot(path, "checkpoint") as writer:
        write_model_files(fitted, writer)
        writer.write(OPTIMIZER_FILE, save_safetensors(tensors, metadata={"format": CHECKPOINT_FORMAT}))
        writer.write(STATE_FILE, json.dumps(state, ensure_ascii=True, allow_nan=False).encode("ascii"))


def read_checkpoint_state(path: str | os.PathLike) -> dict:
    """The ``training_state.json`` of a checkpoint directory (epoch, settings, early-stopping state)."""
    with open_snapshot(path, "checkpoint") as snapshot:
        return _read_state(snapshot)


def _read_state(snapshot: Snapshot) -> dict:
    file = snapshot.directory / STATE_FILE
    if not snapshot.has(STATE_FILE):
        raise ArtifactError(f"{snapshot.directory}: not a collabemb checkpoint ({STATE_FILE} missing)")
    state = parse_json(snapshot.read(STATE_FILE, max_bytes=CHECKPOINT_STATE_MAX_BYTES), file, CHECKPOINT_STATE)
    if state["version"] > CHECKPOINT_VERSION:
        raise ArtifactError(f"{file}: checkpoint version {state['version']} is newer than this collabemb reads ({CHECKPOINT_VERSION})")
    if state["version"] < CHECKPOINT_VERSION:
        raise ArtifactError(f"{file}: checkpoint version {state['version']} was written by an older collabemb; start the fit afresh")
    missing = sorted(set(FitSettings.names()) - set(state["settings"]))
    if missing:  # the values are compared with the resuming call's own (checked) settings
        raise ArtifactError(f"{file}: key 'settings.{missing[0]}': required key is missing")
    return state


def read_checkpoint(path: Path, settings: FitSettings, fingerprint: str, users: IdRegistry, items: IdRegistry, n_train: int) -> Resumed:
    """The checkpoint at ``path``, refused unless it was trained with these settings (those resume must repeat)
    on the same ratings (registries, count and ``fingerprint``)."""
    with open_snapshot(path, "checkpoint") as snapshot:
        state = _read_state(snapshot)
        saved = {**state["settings"], "n_train": state["n_train"]}
        now = {**settings.to_dict(), "n_train": n_train}
        differ = [
            f"{k}={saved.get(k)!r} (this call: {now[k]!r})" for k in (*FitSettings.resume_names(), "n_train") if saved.get(k) != now[k]
        ]
        if differ:
            raise ValueError(f"{path}: cannot resume: the checkpoint was trained with " + ", ".join(differ))
        fitted = read_model_files(snapshot)
        if fitted.users != users or fitted.items != items or state["data_fingerprint"] != fingerprint:
            raise ValueError(f"{path}: cannot resume: the training ratings differ from those the checkpoint was trained on")
        if len(fitted.history.epoch) != state["epoch"]:
            raise ArtifactError(f"{path}: checkpoint history does not match its training state")
        file = snapshot.directory / OPTIMIZER_FILE
        try:
            tensors = load_safetensors(snapshot.read(OPTIMIZER_FILE))
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise ArtifactError(f"{file}: unreadable ({exc})") from None
    _check_optimizer_state(file, tensors, fitted, state)
    return Resumed(fitted, state, tensors)


def load_engine_state(engine: Engine, resumed: Resumed, path: Path) -> None:
    try:
        engine.load_state({k.removeprefix("optimizer."): v for k, v in resumed.tensors.items() if k.startswith("optimizer.")})
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{path / OPTIMIZER_FILE}: the optimiser state does not fit this model ({str(exc).splitlines()[0]})") from None


def _check_optimizer_state(file: Path, tensors: dict[str, torch.Tensor], fitted: FittedModel, state: dict) -> None:
    """Refuse optimiser or best-weight tensors that are not finite, or best weights that are not float32
    in the shape of their table (the engine checks its own state's shapes when it loads it)."""
    shapes = {name: tuple(getattr(fitted.module, name).weight.shape) for name in TABLE_NAMES}
    for key, tensor in tensors.items():
        prefix, _, name = key.partition(".")
        if prefix not in ("optimizer", "best") or (prefix == "best" and name not in shapes):
            raise ArtifactError(f"{file}: unexpected tensor {key!r}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ArtifactError(f"{file}: tensor {key!r} holds NaN or infinity")
        if prefix == "best" and tensor.dtype != torch.float32:
            raise ArtifactError(f"{file}: tensor {key!r} is {str(tensor.dtype).replace('torch.', '')}, expected float32")
        if prefix == "best" and tuple(tensor.shape) != shapes[name]:
            raise ArtifactError(f"{file}: tensor {key!r} has shape {tuple(tensor.shape)}, expected {shapes[name]}")
    if state["has_best_weights"] and not all(f"best.{name}" in tensors for name in TABLE_NAMES):
        raise ArtifactError(f"{file}: the best weights training_state.json announces are missing")
