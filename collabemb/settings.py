"""Training settings: one frozen dataclass, the single list of what ``fit`` can be told.

:func:`collabemb.fit` takes these fields as keyword arguments, a resumed fit compares the fields
marked ``resume`` with its checkpoint's, the checkpoint stores :meth:`FitSettings.to_dict`, and
the command line makes one option per field (``n_factors`` -> ``--n-factors``) with the help and
default written here. Every field is checked with its range. Pure standard library (torch only
to check a device), so the command line starts without torch.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

ENGINES: tuple[str, ...] = ("auto", "fast", "autograd")
#: The rating models: ``dot`` (user vector . item vector + biases) and ``svdpp`` (the user vector plus
#: the normalised sum of history vectors y_j of the items the user rated, Koren 2008; fast engine only).
MODELS: tuple[str, ...] = ("dot", "svdpp")
LR_SCHEDULES: tuple[str, ...] = ("onecycle", "cosine", "constant")
#: Per-engine learning rate, weight decay and frequency exponent (their optimisers differ: row-wise
#: Adagrad / Adam), chosen on MovieLens 100K u1..u5 (benchmarks/accuracy.py); the fast engine's
#: weight_decay 0.13 with exponent 0.5 took the dot model from 0.9055 to 0.9017 there.
ENGINE_DEFAULTS: dict[str, dict[str, float]] = {
    "fast": {"lr": 0.1, "weight_decay": 0.13, "frequency_exponent": 0.5},
    "autograd": {"lr": 0.01, "weight_decay": 0.12, "frequency_exponent": 1.0},
}
#: Per-epoch validation scores at most this many validation ratings (a fixed, seeded sample).
VALID_SAMPLE = 250_000
#: The ranges of the numeric settings (FitSettings checks them; the command line refuses the same).
MAX_FACTORS = 4096
MAX_EPOCHS = 100_000
MAX_LR = 10.0
MAX_WEIGHT_DECAY = 100.0
MAX_BATCH = 1 << 24
MAX_SEED = 2**63 - 1
#: The fast engine's strata need threads**2 buffers: 256 threads is about 1 GB; beyond, memory runs out.
MAX_THREADS = 256
MAX_COUNT = 2**62
#: The devices a fit accepts (torch's names; :meth:`FitSettings.check_device` and collabemb.fit check the
#: machine has it). ``meta`` (torch's device without data) passes the form, for fit to say what each engine
#: needs, but no machine "has" it.
DEVICE = re.compile(r"cpu|cuda(:[0-9]+)?|mps|meta")
DEVICES = "cpu, cuda, cuda:N (N a GPU's number) or mps"


def _setting(default: Any, help: str, *, resume: bool = True) -> Any:
    """A dataclass field with its help text; ``resume``: a resumed fit must repeat it."""
    return field(default=default, metadata={"help": help, "resume": resume})


@dataclass(frozen=True)
class FitSettings:
    """Everything :func:`collabemb.fit` can be told about how to train (data aside).

    ``None`` for ``lr``, ``weight_decay``, ``frequency_exponent``, ``batch_size`` and ``threads`` means "the engine's
    default"; :meth:`resolved` fills them in.
    """

    model: str = _setting("dot", "dot (user . item + biases) or svdpp (the user vector plus its rated items' history vectors)")
    n_factors: int = _setting(64, "embedding width k")
    epochs: int = _setting(20, "maximum passes over the training ratings")
    lr: float | None = _setting(None, "peak learning rate (default per engine: fast 0.1 row-wise Adagrad, autograd 0.01 Adam)")
    lr_schedule: str = _setting("onecycle", "onecycle (warm up 25%, cosine down to lr/100), cosine or constant")
    weight_decay: float | None = _setting(
        None, "L2 strength on the factor rows each rating touches (default per engine: fast 0.13, autograd 0.12)"
    )
    frequency_exponent: float | None = _setting(
        None, "a row with n ratings is penalised as n**exponent per pass (1: weight_decay per rating; default fast 0.5, autograd 1)"
    )
    history_lr: float = _setting(0.3, "svdpp: the history vectors' learning rate, as a fraction of lr")
    history_weight_decay: float = _setting(0.5, "svdpp: L2 strength on the history vectors y_j")
    batch_size: int | None = _setting(None, "autograd engine only: ratings per step (default n_train // 50, clipped to 64..1024)")
    unknown_frac: float = _setting(0.02, "per-epoch probability that a rating's user (and its item) trains the unknown row 0")
    y_range: tuple[float, float] | None = _setting(None, "LO HI of the sigmoid output (default: the rating range widened by 10%)")
    early_stopping: int | None = _setting(None, "stop after this many epochs without a better validation RMSE, keep the best")
    seed: int = _setting(0, "seeds initialisation, shuffling and unknown-slot routing")
    threads: int | None = _setting(
        None, "fast: kernel threads (default: CPUs, at most 8); autograd: torch threads (default 1)", resume=False
    )
    device: str = _setting("cpu", "cpu, cuda, cuda:N or mps (cuda and mps: autograd engine)", resume=False)
    engine: str = _setting("auto", "fast (compiled CPU kernel), autograd (torch, any device), or auto: fast on CPU")
    valid_sample: int | None = _setting(VALID_SAMPLE, "score at most this many validation ratings per epoch", resume=False)
    progress: bool | None = _setting(None, "progress bar (default: only when stderr is a terminal)", resume=False)

    def __post_init__(self) -> None:
        _need(self.model in MODELS, f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        _check_int(self.n_factors, "n_factors", 1, MAX_FACTORS)
        _check_int(self.epochs, "epochs", 1, MAX_EPOCHS)
        check_number(self.lr, "lr", 0.0, MAX_LR, above=True, optional=True)
        _need(self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        check_number(self.weight_decay, "weight_decay", 0.0, MAX_WEIGHT_DECAY, optional=True)
        check_number(self.frequency_exponent, "frequency_exponent", 0.0, 2.0, optional=True)
        check_number(self.history_lr, "history_lr", 0.0, MAX_LR, above=True)
        check_number(self.history_weight_decay, "history_weight_decay", 0.0, MAX_WEIGHT_DECAY)
        if self.batch_size is not None:
            _check_int(self.batch_size, "batch_size", 1, MAX_BATCH)
        _need(
            _finite(self.unknown_frac) and 0.0 <= self.unknown_frac < 0.5,
            f"unknown_frac must be in [0, 0.5), got {shown(self.unknown_frac)}",
        )
        if self.y_range is not None:
            lo_hi = tuple(self.y_range) if hasattr(self.y_range, "__iter__") and not isinstance(self.y_range, str) else ()
            _need(
                len(lo_hi) == 2 and all(_finite(v) for v in lo_hi) and lo_hi[0] < lo_hi[1] and math.isfinite(lo_hi[1] - lo_hi[0]),
                f"y_range must be (lo, hi) with lo < hi, both finite, got {self.y_range}",
            )
            object.__setattr__(self, "y_range", (float(lo_hi[0]), float(lo_hi[1])))
        if self.early_stopping is not None:
            _check_int(self.early_stopping, "early_stopping", 1, MAX_EPOCHS)
        _check_int(self.seed, "seed", 0, MAX_SEED)
        if self.threads is not None:
            _check_int(self.threads, "threads", 1, MAX_THREADS)
        _need(isinstance(self.device, str) and DEVICE.fullmatch(self.device) is not None, f"device must be {DEVICES}, got {self.device!r}")
        _need(self.engine in ENGINES, f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.valid_sample is not None:
            _check_int(self.valid_sample, "valid_sample", 1, MAX_COUNT)
        _need(self.progress is None or isinstance(self.progress, bool), f"progress must be True, False or None, got {self.progress!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def resume_names(cls) -> tuple[str, ...]:
        """Settings a resumed fit must share with its checkpoint."""
        return tuple(f.name for f in fields(cls) if f.metadata["resume"])

    @classmethod
    def describe(cls) -> list[tuple[str, Any, str]]:
        """``(name, default, help)`` per field, in order (the command line's options)."""
        return [(f.name, f.default if f.default is not MISSING else None, f.metadata["help"]) for f in fields(cls)]

    def check_device(self) -> None:
        """Refuse a device this machine does not have (imports torch; the form is checked on construction)."""
        if self.device == "cpu":
            return
        if self.device == "meta":
            raise ValueError(f"device='meta' holds no data and cannot train; device must be {DEVICES}")
        import torch

        if self.device.startswith("cuda"):
            have = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if int(self.device.partition(":")[2] or 0) >= have:
                raise ValueError(f"device={self.device!r} asked for, but torch sees {have} CUDA device(s) on this machine")
        elif not torch.backends.mps.is_available():
            raise ValueError(f"device={self.device!r} asked for, but torch sees no MPS device on this machine")

    def replace(self, **changes: Any) -> FitSettings:
        """A copy with some fields changed (validated again)."""
        unknown = set(changes) - set(self.names())
        if unknown:
            raise TypeError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    def resolved(self, n_train: int, engine: str) -> FitSettings:
        """The settings with ``engine`` chosen and the engine's defaults filled in."""
        defaults = ENGINE_DEFAULTS[engine]
        if engine == "fast" and self.batch_size is not None:
            raise ValueError(
                "batch_size applies to the autograd engine only (the fast engine updates once per rating); use engine='autograd'"
            )
        batch_size = self.batch_size
        if engine == "autograd" and batch_size is None:
            batch_size = int(min(max(n_train // 50, 64), 1024))
        return replace(
            self,
            engine=engine,
            lr=defaults["lr"] if self.lr is None else self.lr,
            weight_decay=defaults["weight_decay"] if self.weight_decay is None else self.weight_decay,
            frequency_exponent=defaults["frequency_exponent"] if self.frequency_exponent is None else self.frequency_exponent,
            batch_size=batch_size,
        )

    def to_dict(self) -> dict:
        out = asdict(self)
        out["y_range"] = list(self.y_range) if self.y_range is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict) -> FitSettings:
        known = {k: v for k, v in data.items() if k in cls.names()}
        if known.get("y_range") is not None:
            known["y_range"] = tuple(known["y_range"])
        return cls(**known)


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def shown(value: Any) -> str:
    """A value in an error message; NaN and the infinities named as such."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isfinite(value):
        return "NaN (not a number)" if math.isnan(value) else f"{value} (infinite)"
    return repr(value) if isinstance(value, str) else str(value)


def check_number(value: Any, name: str, lo: float | None, hi: float | None, *, above: bool = False, optional: bool = False) -> float | None:
    """``value`` as a float if it is a finite real number in range (``lo < value`` with ``above``,
    else ``lo <= value``; ``value <= hi``), else ValueError naming ``name``, the range and the value."""
    if optional and value is None:
        return None
    finite = _finite(value)
    if not (finite and (lo is None or (value > lo if above else value >= lo)) and (hi is None or value <= hi)):
        bounds = [f"{'>' if above else '>='} {lo:g}"] if lo is not None else []
        bounds += [f"<= {hi:g}"] if hi is not None else []
        raise ValueError(f"{name} must be a finite number{' ' if bounds else ''}{' and '.join(bounds)}, got {shown(value)}")
    return float(value)


def _check_int(value: Any, name: str, minimum: int | None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {shown(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def check_k(k: Any) -> int:
    """A list length ``k`` as an int: an integer >= 1 (``TypeError`` for 2.5, "10" or True, ``ValueError``
    for 0 or -3). Searches then clamp it to the catalogue size before allocating anything."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an integer >= 1, got {shown(k)} ({type(k).__name__})")
    if k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k}")
    return int(k)
