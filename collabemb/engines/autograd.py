"""The autograd engine: torch autograd and Adam over mini-batches, on any device.

Minimises the objective of :mod:`collabemb.train` (per training rating
``(r - y)**2 + wd_u * |p_u|**2 + wd_i * |q_i|**2`` (per-row strengths: :func:`~collabemb.engines.row_decays`), averaged over each mini-batch), routing each
rating's user (and, independently, its item) to the unknown row 0 with probability
``unknown_frac`` per epoch. Slower than :mod:`collabemb.engines.fast` on the CPU, but it runs on
CUDA and is the reference the fast engine is tested against. The same seed and thread count give
identical weights.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import numpy as np
import torch

from collabemb.engines import EpochResult, row_decays
from collabemb.interactions import Interactions
from collabemb.models import EmbeddingDotBias


class AutogradEngine:
    """Mini-batch Adam over the per-rating objective, by torch autograd (any device)."""

    def __init__(
        self,
        model: EmbeddingDotBias,
        data: Interactions,
        *,
        gen: torch.Generator,
        lr_at: Callable[[np.ndarray, int], np.ndarray],
        weight_decay: float,
        batch_size: int,
        unknown_frac: float,
        device: str,
        frequency_exponent: float = 1.0,
    ):
        self.model = model
        self.gen = gen
        self.lr_at = lr_at
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.unknown_frac = unknown_frac
        self.device = device
        self.u_all = torch.as_tensor(np.array(data.user_rows, dtype=np.int64), device=device)
        self.i_all = torch.as_tensor(np.array(data.item_rows, dtype=np.int64), device=device)
        self.r_all = torch.as_tensor(np.array(data.values, dtype=np.float32), device=device)
        n_rows = (model.users.n_rows, model.items.n_rows)
        decays = row_decays(data.user_rows, data.item_rows, *n_rows, weight_decay, frequency_exponent)
        self.decay_u, self.decay_i = (torch.as_tensor(d, device=device) for d in decays)
        self.n = len(data)
        self.steps_per_epoch = math.ceil(self.n / batch_size)
        self.opt = torch.optim.Adam(model.parameters(), lr=float(lr_at(np.zeros(1, np.int64), self.steps_per_epoch)[0]))

    def run_epoch(self, epoch: int, stop: threading.Event, tick: Callable[[int], None]):
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
            reg = self.decay_u[ub] * model.u_weight(ub).pow(2).sum(1) + self.decay_i[ib] * model.i_weight(ib).pow(2).sum(1)
            loss = (err.pow(2) + reg).mean()
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
