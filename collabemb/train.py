"""Fitting :class:`~collabemb.models.EmbeddingDotBias` to ratings.

Objective, per training rating (user u, item i, rating r)::

    (r - y(u, i))**2 + weight_decay * (|p_u|**2 + |q_i|**2)

averaged over each mini-batch and minimised with Adam. The L2 term is applied to the factor
rows a rating touches (as in Funk/Surprise SVD), so frequently rated IDs are regularised in
proportion to their evidence. Biases are not penalised: on MovieLens 100K u1..u5 penalising
them as strongly as the factors cost 0.002-0.01 RMSE (benchmarks/accuracy.py).

The unknown slot: in every epoch each training row has its user replaced by row 0 with
probability ``unknown_frac``, and independently its item, so row 0 learns an average user and
an average item; unseen IDs then predict about the global mean plus the known side's bias.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from collabemb.data import Ratings, read_ratings
from collabemb.models import EmbeddingDotBias
from collabemb.registry import IdRegistry

#: Defaults chosen by measurement on MovieLens 100K u1..u5 (benchmarks/accuracy.py).
DEFAULTS = {
    "n_factors": 64,
    "epochs": 20,
    "lr": 0.01,
    "weight_decay": 0.12,
    "batch_size": None,  # auto: see fit()
    "unknown_frac": 0.02,
}


@dataclass
class FitHistory:
    """What a fit did, epoch by epoch (lists are aligned, one entry per finished epoch).

    ``train_rmse`` is measured on the batches as they were trained (rows routed to the unknown
    slot excluded); ``valid_rmse`` on the validation ratings after the epoch (None without one).
    """

    epoch: list[int] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    train_rmse: list[float] = field(default_factory=list)
    valid_rmse: list[float | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FitHistory:
        return cls(**data)

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
    lr: float = DEFAULTS["lr"],
    lr_schedule: str = "onecycle",
    weight_decay: float = DEFAULTS["weight_decay"],
    batch_size: int | None = DEFAULTS["batch_size"],
    unknown_frac: float = DEFAULTS["unknown_frac"],
    y_range: tuple[float, float] | None = None,
    early_stopping: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    device: str = "cpu",
    progress: bool | None = None,
    **read_kwargs,
) -> EmbeddingDotBias:
    """Train an :class:`EmbeddingDotBias` and return it, fitted, with ``model.history`` set.

    Args:
        ratings: training ratings: Ratings, a DataFrame, or a file path (``read_kwargs`` such as
            ``user_col=``, ``layout=`` go to :func:`~collabemb.data.read_ratings`).
        valid: optional validation ratings, scored after every epoch (RMSE).
        n_factors: embedding width.
        epochs: maximum number of passes over the training ratings.
        lr: peak learning rate of Adam.
        lr_schedule: ``"onecycle"`` (warm up over the first 25% of steps, cosine down to
            lr/100), ``"cosine"`` (cosine from lr to lr/100) or ``"constant"``.
        weight_decay: L2 strength on the factor rows each rating touches (module docstring).
        batch_size: ratings per step; default ``clip(n_train // 50, 64, 1024)`` so that small
            sets still get at least ~50 steps per epoch (80k ratings -> 1024).
        unknown_frac: per-epoch probability that a row's user (and, independently, its item) is
            routed to the unknown slot 0; 0 leaves row 0 untrained.
        y_range: (lo, hi) of the sigmoid; default widens the observed rating range by 10%.
        early_stopping: stop after this many epochs without a better validation RMSE and keep
            the best epoch's weights (needs ``valid``).
        seed: seeds initialisation, shuffling and unknown-slot routing. Same seed and same
            ``threads`` give identical weights on CPU.
        threads: torch intra-op threads during the fit; default 1. Measured on ml-100k u1 with
            2 cores: 2 threads fit in 1.45 s against 1.57 s on an idle machine, but took
            minutes instead of seconds while another process held a core (OpenMP spinning).
        device: ``"cpu"`` or ``"cuda"``.
        progress: tqdm progress bar; default on only when stderr is a terminal.
    """
    train = read_ratings(ratings, **read_kwargs)
    valid = read_ratings(valid, **read_kwargs) if valid is not None else None
    if early_stopping is not None and valid is None:
        raise ValueError("early_stopping needs validation ratings (valid=...)")
    if not 0.0 <= unknown_frac < 0.5:
        raise ValueError(f"unknown_frac must be in [0, 0.5), got {unknown_frac}")
    if lr_schedule not in ("onecycle", "cosine", "constant"):
        raise ValueError(f"lr_schedule must be 'onecycle', 'cosine' or 'constant', got {lr_schedule!r}")
    if batch_size is None:
        batch_size = int(np.clip(len(train) // 50, 64, 1024))
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device='cuda' asked for, but torch sees no CUDA device")

    frame = train.frame
    users = IdRegistry(frame["user"], name="user")
    items = IdRegistry(frame["item"], name="item")
    r = frame["rating"].to_numpy(dtype=np.float32)
    y_range = tuple(float(v) for v in (y_range or default_y_range(r)))
    params = {
        "n_factors": n_factors, "epochs": epochs, "lr": lr, "lr_schedule": lr_schedule,
        "weight_decay": weight_decay, "batch_size": batch_size, "unknown_frac": unknown_frac,
        "y_range": list(y_range), "early_stopping": early_stopping, "seed": seed, "device": device,
        "n_train": len(train), "n_valid": len(valid) if valid is not None else 0,
    }

    old_threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads is None else threads)
    try:
        gen = torch.Generator().manual_seed(seed)
        model = EmbeddingDotBias(users, items, n_factors=n_factors, y_range=y_range)
        model.reset_parameters(gen)
        model.to(device)
        history = FitHistory(params=params)
        _train_autograd(
            model, users.encode(frame["user"]), items.encode(frame["item"]), r, valid, history,
            epochs=epochs, lr=lr, lr_schedule=lr_schedule, weight_decay=weight_decay, batch_size=batch_size,
            unknown_frac=unknown_frac, early_stopping=early_stopping, gen=gen, device=device,
            progress=sys.stderr.isatty() if progress is None else progress,
        )
    finally:
        torch.set_num_threads(old_threads)
    model.history = history
    model.eval()
    return model


def _lr_at(step: int, total: int, lr: float, schedule: str) -> float:
    if schedule == "constant":
        return lr
    t = step / max(total - 1, 1)
    floor = lr / 100
    if schedule == "cosine":
        return floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * t))
    warm = 0.25
    if t < warm:
        start = lr / 25
        return start + (lr - start) * 0.5 * (1 - math.cos(math.pi * t / warm))
    return floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * (t - warm) / (1 - warm)))


def rmse(model: EmbeddingDotBias, ratings: Ratings) -> float:
    """Root mean squared error of ``model`` on ratings given by raw ID (unseen IDs use row 0)."""
    pred = model.predict(ratings.frame["user"], ratings.frame["item"])["prediction"].to_numpy(dtype=np.float64)
    return float(np.sqrt(np.mean((pred - ratings.frame["rating"].to_numpy(dtype=np.float64)) ** 2)))


def _train_autograd(
    model: EmbeddingDotBias, u: np.ndarray, i: np.ndarray, r: np.ndarray, valid: Ratings | None,
    history: FitHistory, *, epochs: int, lr: float, lr_schedule: str, weight_decay: float, batch_size: int,
    unknown_frac: float, early_stopping: int | None, gen: torch.Generator, device: str, progress: bool,
) -> None:
    """Mini-batch Adam over the per-rating objective; fills ``history`` in place."""
    n = len(r)
    u_all = torch.as_tensor(np.array(u, dtype=np.int64), device=device)
    i_all = torch.as_tensor(np.array(i, dtype=np.int64), device=device)
    r_all = torch.as_tensor(np.array(r, dtype=np.float32), device=device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(n / batch_size)
    total = steps_per_epoch * epochs
    step = 0
    best = (math.inf, None, None)  # (valid rmse, epoch, state)
    bad_epochs = 0
    bar = tqdm(total=total, disable=not progress, unit="batch", leave=False)
    model.train()
    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=gen).to(device)
            route_u = (torch.rand(n, generator=gen) < unknown_frac).to(device)
            route_i = (torch.rand(n, generator=gen) < unknown_frac).to(device)
            sq_sum = torch.zeros((), dtype=torch.float64, device=device)
            n_seen = 0
            for start in range(0, n, batch_size):
                idx = perm[start : start + batch_size]
                ub = torch.where(route_u[idx], 0, u_all[idx])
                ib = torch.where(route_i[idx], 0, i_all[idx])
                target = r_all[idx]
                step_lr = _lr_at(step, total, lr, lr_schedule)
                for group in opt.param_groups:
                    group["lr"] = step_lr
                pred = model(ub, ib)
                err = pred - target
                reg = model.u_weight(ub).pow(2).sum(1) + model.i_weight(ib).pow(2).sum(1)
                loss = (err.pow(2) + weight_decay * reg).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    plain = ~(route_u[idx] | route_i[idx])
                    sq_sum += err.detach()[plain].double().pow(2).sum()
                    n_seen += int(plain.sum())
                step += 1
                bar.update(1)
            if not torch.isfinite(sq_sum):
                raise FloatingPointError(f"training diverged in epoch {epoch} (non-finite loss); lower lr")
            history.epoch.append(epoch)
            history.lr.append(step_lr)
            history.train_rmse.append(float(math.sqrt(sq_sum.item() / max(n_seen, 1))))
            v = rmse(model, valid) if valid is not None else None
            model.train()
            history.valid_rmse.append(v)
            history.seconds.append(time.perf_counter() - t0)
            bar.set_postfix(epoch=epoch, train=f"{history.train_rmse[-1]:.4f}", valid=f"{v:.4f}" if v else "-")
            if v is not None:
                if v < best[0]:
                    best = (v, epoch, copy.deepcopy(model.state_dict()) if early_stopping else None)
                    bad_epochs = 0
                else:
                    bad_epochs += 1
                history.best_epoch = best[1]
                if early_stopping is not None and bad_epochs >= early_stopping:
                    history.stopped_early = True
                    break
    finally:
        bar.close()
    if early_stopping is not None and best[2] is not None:
        model.load_state_dict(best[2])
