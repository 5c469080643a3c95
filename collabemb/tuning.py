"""Cross-validation and hyperparameter search for :func:`collabemb.fit`.

:func:`cross_validate` is Surprise's ``cross_validate`` for this package: the ratings cut into
seeded random folds (or predefined (train, test) pairs such as MovieLens 100K's u1..u5), one fit
per fold, RMSE and MAE on each test part, as a table with a mean and a standard-deviation row.

:func:`tune` searches :class:`~collabemb.settings.FitSettings` with optuna (an optional
dependency: ``pip install collabemb[tune]``): a seeded TPE sampler proposes settings, each trial
cross-validates them, and optuna's median pruner stops a trial after a fold whose running mean
RMSE is worse than the median of the finished trials' at that fold. The objective is the mean
validation RMSE over the folds. The best settings are saved with :meth:`TuneResult.save` as a
file that ``collabemb fit --config FILE`` reads (:mod:`collabemb.settings_file`).

Both are deterministic for a seed: the folds are drawn with it, every fit is seeded with it, and
the search runs one trial at a time. Fits on the fast engine are reproducible for a fixed
``threads`` (by default the CPUs available, so give ``threads`` to compare machines).
"""

from __future__ import annotations

import math
import numbers
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from collabemb.data import Ratings, read_ratings
from collabemb.metrics import rating_errors
from collabemb.settings import FitSettings
from collabemb.settings_file import check_settings, write_settings
from collabemb.splits import split_folds
from collabemb.train import READ_OPTIONS, fit

RatingsLike = Ratings | pd.DataFrame | str | os.PathLike
#: A number of random folds, or the (train, test) pairs themselves.
Folds = int | Sequence[tuple[RatingsLike, RatingsLike]]

#: What :func:`tune` searches unless told otherwise (the format is :func:`tune`'s ``space``). The
#: ranges suit the fast engine (row-wise Adagrad, the CPU default); give ``lr`` a range of its own
#: for ``engine="autograd"`` (Adam, default lr 0.01).
DEFAULT_SPACE: dict[str, tuple] = {
    "n_factors": ("choice", [32, 64, 128]),
    "lr": ("log", 0.03, 0.3),
    "weight_decay": ("log", 0.02, 0.3),
    "frequency_exponent": ("float", 0.0, 1.0),
    "epochs": ("int", 8, 40),
}
#: Searched as well when the model is, or may be, ``svdpp``.
SVDPP_SPACE: dict[str, tuple] = {"history_lr": ("log", 0.05, 1.0), "history_weight_decay": ("log", 0.1, 3.0)}
SPACE_KINDS: tuple[str, ...] = ("float", "log", "int", "log_int", "choice")
SPACE_FORMAT = "('float' | 'log' | 'int' | 'log_int', lo, hi), ('choice', [values]) or None (not searched)"
#: The run's own arguments, never searched nor saved with the best settings.
RUN_SETTINGS: tuple[str, ...] = ("seed", "threads")
#: Trials that run the median pruner compares a trial with, before it prunes anything.
PRUNE_AFTER_TRIALS = 5


def cross_validate(
    ratings: RatingsLike | None, folds: Folds = 5, *, seed: int = 0, threads: int | None = None, **settings: Any
) -> pd.DataFrame:
    """Fit on each fold's training part and score its test part, as Surprise's ``cross_validate``.

    Args:
        ratings: Ratings, a DataFrame or a file; None when ``folds`` gives the pairs.
        folds: the number of random folds (:func:`~collabemb.splits.split_folds`: every rating in
            exactly one test part), or a sequence of (train, test) pairs, each Ratings, a
            DataFrame or a file (``read_split("u1.base", "u1.test", layout="ml-100k")``...).
        seed: draws the folds and seeds every fit.
        threads: the fits' threads (``FitSettings.threads``).
        settings: FitSettings fields (``n_factors=32, epochs=10``), and for file input the options
            of :func:`~collabemb.data.read_ratings`. Anything else is a ValueError listing them.

    Returns:
        A DataFrame with one row per fold, ``fold`` 1..k, and the columns ``rmse``, ``mae``
        (on the test part; unseen IDs use the trained row 0), ``fit_seconds``, ``n_train`` and
        ``n_test``; then a row ``fold="mean"`` and a row ``fold="std"`` (the folds' population
        standard deviation, ddof=0, as Surprise prints).
    """
    read_kwargs, fit_settings = _split_options(settings, seed=seed, threads=threads)
    pairs = enumerate(_folds(ratings, folds, seed, read_kwargs), start=1)
    rows = [{"fold": number, **_score_fold(train, test, fit_settings)} for number, (train, test) in pairs]
    table = pd.DataFrame(rows)
    numbers_only = table.drop(columns="fold")
    summary = pd.DataFrame([{"fold": "mean", **numbers_only.mean()}, {"fold": "std", **numbers_only.std(ddof=0)}])
    return pd.concat([table.astype({"fold": object}), summary.astype({"fold": object})], ignore_index=True)


@dataclass(frozen=True, eq=False)
class TuneResult:
    """What :func:`tune` found.

    Attributes:
        best_settings: the FitSettings fields of the best trial: the fixed settings :func:`tune`
            was given and the best trial's searched values (``seed`` and ``threads`` are the
            run's, and are not part of them).
        best_rmse: the best trial's mean validation RMSE over the folds.
        best_trial: the best trial's number (0-based, the ``number`` column of ``trials``).
        folds: the number of folds each trial cross-validated.
        trials: one row per trial: ``number``, ``state`` (``complete``, ``pruned``, or ``fail``:
            the fit diverged), ``rmse`` (the mean over the folds it ran), ``folds`` (how many it
            ran), one column per searched setting (NaN where a trial did not use it), ``seconds``.
    """

    best_settings: dict[str, Any]
    best_rmse: float
    best_trial: int
    folds: int
    trials: pd.DataFrame

    def save(self, path: str | os.PathLike) -> Path:
        """Write :attr:`best_settings` to ``path`` (``.toml`` or ``.json``, by the suffix; atomic), for
        ``collabemb fit RATINGS --config PATH``. A TOML file starts with comments saying where it came from."""
        comment = (
            f"collabemb tune: mean validation RMSE {self.best_rmse:.4f} over {self.folds} folds "
            f"(trial {self.best_trial} of {len(self.trials)})\ntrain with: collabemb fit RATINGS --config {Path(path).name} --out DIR"
        )
        return write_settings(path, self.best_settings, comment=comment)


def tune(
    ratings: RatingsLike | None,
    *,
    folds: Folds = 3,
    trials: int = 30,
    seed: int = 0,
    space: dict[str, tuple | None] | None = None,
    timeout: float | None = None,
    threads: int | None = None,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
    **settings: Any,
) -> TuneResult:
    """Search FitSettings for the lowest mean validation RMSE over cross-validation folds (optuna).

    Args:
        ratings, folds: as :func:`cross_validate` (default 3 random folds, the same for every trial).
        trials: how many settings to try (fewer when ``timeout`` runs out first).
        seed: seeds the sampler (optuna's TPE), the folds and every fit: the same seed, data,
            ``threads`` and arguments give the same trials and the same best settings.
        space: what to search, ``{field: dimension}``, over :data:`DEFAULT_SPACE` (which it extends,
            and overrides field by field). A dimension is ``("log", lo, hi)`` (a float drawn
            log-uniformly), ``("float", lo, hi)``, ``("int", lo, hi)`` (inclusive),
            ``("log_int", lo, hi)``, ``("choice", [values])`` (None, bool, int, float or str), or
            None to leave a default dimension out. E.g. ``{"lr": ("log", 0.01, 0.3),
            "n_factors": ("choice", [32, 64]), "epochs": ("int", 5, 30)}``. When the model is, or
            may be, ``"svdpp"`` the default space also holds :data:`SVDPP_SPACE`.
        timeout: stop starting trials after this many seconds (the trial in progress finishes;
            how many trials run then depends on the machine's speed).
        threads: the fits' threads (``FitSettings.threads``).
        on_trial: called with each finished trial's row of ``trials`` (a dict).
        settings: fixed FitSettings fields (never searched; a field both fixed and in ``space`` is
            an error), and for file input the options of :func:`~collabemb.data.read_ratings`.
            The fits show no progress bar unless ``progress=True`` is given.

    Returns:
        A :class:`TuneResult`; ``save(path)`` writes its best settings for ``collabemb fit --config``.

    Raises:
        ModuleNotFoundError (an ImportError): optuna is not installed.
        ValueError: an unknown setting, a bad dimension, or no trial completed.
    """
    optuna = import_optuna()
    read_kwargs, base = _split_options({"progress": False, **settings}, seed=seed, threads=threads)
    fixed = {name: value for name, value in settings.items() if name not in read_kwargs}
    dimensions = search_space(space, fixed)
    if isinstance(trials, bool) or not isinstance(trials, numbers.Integral) or trials < 1:
        raise ValueError(f"trials must be an integer >= 1, got {trials!r}")
    if timeout is not None and not (isinstance(timeout, numbers.Real) and timeout > 0):
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    random_folds = _is_count(folds)
    if random_folds and ratings is not None:
        ratings = read_ratings(ratings, **read_kwargs)  # read once; each trial draws the same folds from it
    pairs = _folds(ratings, folds, seed, read_kwargs)  # checks the folds; given pairs are read here, once
    n_folds = int(folds) if random_folds else len(pairs)

    def objective(trial) -> float:
        fit_settings = base.replace(**{name: _suggest(trial, name, dimension) for name, dimension in dimensions.items()})
        total = 0.0
        for step, (train, test) in enumerate(_folds(ratings, folds, seed, {}) if random_folds else pairs):
            total += _score_fold(train, test, fit_settings)["rmse"]
            trial.set_user_attr("folds", step + 1)
            if step + 1 < n_folds:  # the last fold's mean is the trial's value
                trial.report(total / (step + 1), step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return total / n_folds

    sampler = optuna.samplers.TPESampler(seed=seed % 2**32)  # numpy's RandomState takes 32-bit seeds
    pruner = optuna.pruners.MedianPruner(n_startup_trials=PRUNE_AFTER_TRIALS, n_warmup_steps=0)
    report = [] if on_trial is None else [lambda study, trial: on_trial(_trial_row(trial, dimensions))]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the trials are reported in the table, not logged
    try:
        study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
        study.optimize(objective, n_trials=int(trials), timeout=timeout, n_jobs=1, catch=(FloatingPointError,), callbacks=report)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return _result(study, dimensions, fixed, n_folds)


def search_space(space: dict[str, tuple | None] | None, fixed: dict[str, Any]) -> dict[str, tuple]:
    """The dimensions :func:`tune` searches: :data:`DEFAULT_SPACE` (and :data:`SVDPP_SPACE` when the
    model may be svdpp) without the ``fixed`` fields, then ``space`` on top, each dimension checked."""
    given = dict(space or {})
    for name, dimension in given.items():
        _check_dimension(name, dimension)
        if name in fixed and dimension is not None:
            raise ValueError(f"{name} is both fixed ({name}={fixed[name]!r}) and in space; give it in one of them")
    model = given.get("model")
    svdpp = fixed.get("model") == "svdpp" or (model is not None and model[0] == "choice" and "svdpp" in model[1])
    dimensions = {name: d for name, d in {**DEFAULT_SPACE, **(SVDPP_SPACE if svdpp else {})}.items() if name not in fixed}
    dimensions.update(given)
    dimensions = {name: d for name, d in dimensions.items() if d is not None}
    if not dimensions:
        raise ValueError("nothing to search: every dimension is fixed or left out of space")
    return dimensions


def _check_dimension(name: str, dimension: Any) -> None:
    where = f"space[{name!r}]"
    if name not in FitSettings.names() or name in RUN_SETTINGS:
        searchable = [n for n in FitSettings.names() if n not in RUN_SETTINGS]
        raise ValueError(f"{where}: not a setting tune searches; the FitSettings fields are {', '.join(searchable)}")
    if dimension is None:
        return
    kind = dimension[0] if isinstance(dimension, tuple | list) and dimension else None
    if kind == "choice" and len(dimension) == 2 and isinstance(dimension[1], Sequence) and not isinstance(dimension[1], str):
        choices = list(dimension[1])
        if not choices or not all(c is None or isinstance(c, bool | int | float | str) for c in choices):
            raise ValueError(f"{where}: the choices must be a non-empty list of None, bool, int, float or str, got {dimension[1]!r}")
        for choice in choices:
            check_settings({name: choice}, where=where)
        return
    if kind not in SPACE_KINDS or kind == "choice" or len(dimension) != 3:
        raise ValueError(f"{where}: expected {SPACE_FORMAT}, got {dimension!r}")
    lo, hi = dimension[1:]
    integral = kind in ("int", "log_int")
    wanted = numbers.Integral if integral else numbers.Real
    if not all(isinstance(v, wanted) and not isinstance(v, bool) and math.isfinite(v) for v in (lo, hi)) or not lo < hi:
        raise ValueError(f"{where}: lo and hi must be {'integers' if integral else 'finite numbers'} with lo < hi, got {lo!r}, {hi!r}")
    if kind.startswith("log") and lo <= 0:
        raise ValueError(f"{where}: a log dimension needs lo > 0, got {lo!r}")
    check_settings({name: lo}, where=where)
    check_settings({name: hi}, where=where)


def _suggest(trial, name: str, dimension: tuple) -> Any:
    kind = dimension[0]
    if kind == "choice":
        return trial.suggest_categorical(name, list(dimension[1]))
    if kind in ("int", "log_int"):
        return trial.suggest_int(name, int(dimension[1]), int(dimension[2]), log=kind == "log_int")
    return trial.suggest_float(name, float(dimension[1]), float(dimension[2]), log=kind == "log")


def _result(study, dimensions: dict[str, tuple], fixed: dict[str, Any], n_folds: int) -> TuneResult:
    table = pd.DataFrame([_trial_row(trial, dimensions) for trial in study.trials])
    complete = table["state"] == "complete"
    if not complete.any():
        states = ", ".join(f"{count} {state}" for state, count in table["state"].value_counts().items())
        raise ValueError(f"no trial completed ({states}); widen the space or lower lr")
    best = study.best_trial
    return TuneResult({**fixed, **best.params}, float(best.value), best.number, n_folds, table)


def _trial_row(trial, dimensions: dict[str, tuple]) -> dict[str, Any]:
    """A finished trial as a row of :attr:`TuneResult.trials`."""
    state = trial.state.name.lower()
    steps = trial.intermediate_values
    if state == "complete":
        rmse = float(trial.value)
    else:  # a pruned trial's last running mean; a failed one has none after its last report
        rmse = float(steps[max(steps)]) if steps and state == "pruned" else math.nan
    seconds = trial.duration.total_seconds() if trial.duration is not None else math.nan
    params = {name: trial.params.get(name, math.nan) for name in dimensions}
    return {"number": trial.number, "state": state, "rmse": rmse, "folds": trial.user_attrs.get("folds", 0), **params, "seconds": seconds}


def import_optuna():
    """The optuna module; ModuleNotFoundError saying how to install it when it is missing."""
    try:
        import optuna
    except ImportError:
        raise ModuleNotFoundError("collabemb.tune needs optuna: pip install collabemb[tune]", name="optuna") from None
    return optuna


def _split_options(options: dict[str, Any], *, seed: int, threads: int | None) -> tuple[dict[str, Any], FitSettings]:
    """``(read_ratings options, FitSettings)`` from keyword arguments; anything else is a ValueError."""
    unknown = sorted(set(options) - set(FitSettings.names()) - set(READ_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown setting(s): {', '.join(unknown)}; the settings are the FitSettings fields: {', '.join(FitSettings.names())} "
            f"(and for a ratings file the read_ratings options: {', '.join(READ_OPTIONS)})"
        )
    read_kwargs = {name: value for name, value in options.items() if name in READ_OPTIONS}
    settings = {name: value for name, value in options.items() if name not in READ_OPTIONS}
    return read_kwargs, FitSettings(**settings, seed=seed, threads=threads)


def _folds(ratings: RatingsLike | None, folds: Folds, seed: int, read_kwargs: dict[str, Any]) -> Iterable[tuple[Ratings, Ratings]]:
    """The (train, test) pairs: random folds of ``ratings``, or the given pairs read as Ratings."""
    if _is_count(folds):
        if ratings is None:
            raise ValueError(f"folds={folds} random folds need ratings")
        return split_folds(read_ratings(ratings, **read_kwargs), int(folds), seed=seed)
    if ratings is not None:
        raise ValueError("give ratings and a number of folds, or ratings=None and a list of (train, test) pairs, not both")
    if isinstance(folds, str | bytes) or not isinstance(folds, Sequence) or not folds:
        raise ValueError(f"folds must be a number of folds or a non-empty list of (train, test) pairs, got {folds!r}")
    if not all(isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2 for pair in folds):
        raise ValueError("folds must be a number of folds or a list of (train, test) pairs; one item is not a pair")
    return [(read_ratings(train, **read_kwargs), read_ratings(test, **read_kwargs)) for train, test in folds]


def _is_count(folds: Any) -> bool:
    return isinstance(folds, numbers.Integral) and not isinstance(folds, bool)


def _score_fold(train: Ratings, test: Ratings, settings: FitSettings) -> dict[str, float]:
    t0 = time.perf_counter()
    fitted = fit(train, settings=settings)
    seconds = time.perf_counter() - t0
    return {**rating_errors(fitted, test), "fit_seconds": seconds, "n_train": len(train), "n_test": len(test)}
