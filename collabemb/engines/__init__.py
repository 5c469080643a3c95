"""Training engines: what minimises the rating objective, one epoch at a time.

Every engine trains an :class:`~collabemb.models.EmbeddingDotBias` in place on encoded ratings
(table rows and float32 values) and provides the :class:`Engine` interface; the fit loop
(:mod:`collabemb.train`) drives any of them the same way: epochs, validation, early stopping,
checkpoints, Ctrl-C.

* :mod:`collabemb.engines.fast`: a compiled per-rating kernel (numba), row-wise Adagrad, CPU,
  deterministic on several threads.
* :mod:`collabemb.engines.autograd`: torch autograd and Adam over mini-batches, any device; the
  reference the fast engine is tested against.

A new engine goes in a module of its own here, implementing :class:`Engine`; ``train.fit``
picks it by the ``engine`` setting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


@dataclass
class EpochResult:
    """What one finished pass did: squared error summed over ``count`` plain ratings (those not
    routed to the unknown slot), and the learning rate of its last step."""

    sq_sum: float
    count: int
    last_lr: float


#: ``lr_at(steps, steps_per_epoch)``: (m,) int64 global step numbers (counted from 0 at the first
#: epoch) -> (m,) learning rates.
LrSchedule = Callable


class Engine(Protocol):
    """What the fit loop needs of an engine."""

    def run_epoch(self, epoch: int, stop: threading.Event, tick: Callable[[int], None]) -> EpochResult | None:
        """One pass over the ratings (epoch counts from 1); None when ``stop`` was set first.

        ``tick(n)`` is called in the calling thread as ratings are done (a progress bar).
        """
        ...

    @property
    def state(self) -> dict[str, torch.Tensor]:
        """The optimiser's state (and random-generator state), for checkpoints."""
        ...

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :attr:`state` saved by an earlier run (resume)."""
        ...

    def close(self) -> None:
        """Release threads and buffers."""
        ...


def row_decays(
    user_rows: np.ndarray, item_rows: np.ndarray, n_user_rows: int, n_item_rows: int, weight_decay: float, exponent: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row L2 strengths of the per-rating penalty (frequency-aware regularisation, Rendle 2022).

    A row with ``n`` training ratings gets ``weight_decay * (n / mean n) ** (exponent - 1)`` per
    rating, so its total penalty over a pass grows as ``n ** exponent``: ``exponent = 1`` is the
    plain per-rating penalty (every row ``weight_decay``), 0.5 penalises frequent rows less and rare
    rows more per rating. Rows without ratings (row 0, the unknown slot, among them) get
    ``weight_decay``. Returns ``((n_user_rows,), (n_item_rows,))`` float32.
    """
    counts = [
        np.bincount(np.asarray(rows, dtype=np.int64), minlength=n) for rows, n in ((user_rows, n_user_rows), (item_rows, n_item_rows))
    ]
    return decays_of_counts(counts[0], weight_decay, exponent), decays_of_counts(counts[1], weight_decay, exponent)


def decays_of_counts(counts: np.ndarray, weight_decay: float, exponent: float) -> np.ndarray:
    """:func:`row_decays` of one table from its (n_rows,) training-rating counts per row: (n_rows,) float32."""
    counts = np.asarray(counts, dtype=np.float64).copy()
    counts[0] = 0.0
    decay = np.full(len(counts), float(weight_decay))
    rated = counts > 0
    if exponent != 1.0 and rated.any():
        decay[rated] *= (counts[rated] / counts[rated].mean()) ** (exponent - 1.0)
    return decay.astype(np.float32)


def compiled(fn: Callable, *, fastmath: set[str] | bool = False) -> Callable:
    """``numba.njit(nogil=True)`` of ``fn`` with an on-disk cache when a cache directory is writable,
    without one otherwise; ``fastmath``: numba's flags (False: IEEE arithmetic). numba is imported
    here, on the first compiled function, not with this package."""
    import numba

    try:
        return numba.njit(nogil=True, fastmath=fastmath, cache=True)(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(nogil=True, fastmath=fastmath, cache=False)(fn)
