"""What a fit did, epoch by epoch: a plain record, saved in the artifact's config.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import pandas as pd


@dataclass
class FitHistory:
    """What a fit did, epoch by epoch (lists are aligned, one entry per finished epoch).

    ``train_rmse`` is measured on the ratings as they were trained (rows routed to the unknown
    slot excluded); ``valid_rmse`` on the validation ratings after the epoch (None without one;
    on a fixed sample of ``params["valid_sample"]`` of them when there are more). ``seconds`` is
    the epoch's wall time including validation, ``train_seconds`` the training pass alone.
    ``stop_reason`` says why training ended before ``params["epochs"]``: ``"early_stopping"``,
    ``"callback"`` (``on_epoch`` returned True) or ``"interrupted"`` (Ctrl-C); None when every
    epoch ran. ``params`` records the settings the fit ran with and what it counted
    (``n_train``, ``n_valid``...). Models fitted in one solve (``implicit``, popularity) have no
    epochs: their lists are empty.
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
