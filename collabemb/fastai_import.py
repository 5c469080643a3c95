"""Bring a trained fastai collab model in: :func:`from_fastai` (a ``Learner``) or
:func:`from_fastai_parts` (a ``state_dict`` plus ``dls.classes``, for those who kept only those).

fastai's ``Categorify`` numbers each column's values ``classes[name] = ['#na#', id_1, id_2, ...]``:
row 0 is ``#na#``, the code every value not seen in training gets, and rows ``1..n`` are the
training IDs in sorted order. collabemb's registries have the same shape (row 0 is the unknown
slot, rows ``1..n`` the known IDs), so the import is a relabelling: each fastai row ``r`` lands in
the row our registry gives ``classes[name][r]`` (rows are permuted when the two orders differ, so
nothing depends on both sorting alike). The tables, biases and ``y_range`` are carried over as they
are, so predictions equal fastai's ``learn.get_preds`` (float32 rounding: within 1e-6).

fastai never trains row 0 (no training rating is ``#na#``): it keeps its random start, so fastai's
answer for an unseen ID is noise. Imported as it is, the row is flagged ``row0="untrained"``;
``unknown_row="mean"`` sets it to the mean of the known rows, and :func:`fit_unknown_rows` (or
``unknown_row="fitted"``, with the learner's own training ratings) solves it as an average user /
item on given ratings with every other row fixed.

fastai is not imported here: a learner is read through its attributes (``learn.model``,
``learn.dls.classes``, ``learn.dls.train_ds``), so this module works with any fastai 2 release
and costs nothing when fastai is not installed.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from importlib import metadata
from typing import Literal

import numpy as np
import pandas as pd
import torch

from collabemb.coldstart import solve_one
from collabemb.data import Ratings, read_ratings
from collabemb.fitted import FittedModel, ModelIdentity
from collabemb.history import FitHistory
from collabemb.interactions import SeenItems
from collabemb.model_card import data_facts, library_versions
from collabemb.models import TABLE_NAMES, EmbeddingDotBias
from collabemb.registry import UNKNOWN_ROW, IdRegistry
from collabemb.settings import ENGINE_DEFAULTS

log = logging.getLogger("collabemb.fastai")

#: fastai's name for the category of values not seen in training (row 0 of every table).
NA = "#na#"
#: What to put in row 0 on import: fastai's row as it is, the mean of the known rows, or (a
#: learner only) a solve on the learner's training ratings.
UnknownRow = Literal["untrained", "mean", "fitted"]


def from_fastai(learn, *, unknown_row: UnknownRow = "untrained") -> FittedModel:
    """A :class:`~collabemb.fitted.FittedModel` from a fastai collab ``Learner``.

    Args:
        learn: a ``Learner`` from ``collab_learner(dls, ...)`` (``use_nn=False``: fastai's
            ``EmbeddingDotBias``), trained or not.
        unknown_row: row 0 (``#na#``): ``"untrained"`` keeps fastai's values (predictions for
            unseen IDs then equal fastai's), ``"mean"`` the mean of the known rows, ``"fitted"``
            solves it on the learner's training ratings (:func:`fit_unknown_rows`).

    Returns:
        The model with registries from ``learn.dls.classes``, the four tables (rows relabelled),
        ``y_range``, and the training (user, item) pairs of ``learn.dls.train_ds`` as seen items
        (validation pairs are not seen). ``history.params`` records ``source="fastai"``.

    Raises:
        ValueError: an ``EmbeddingNN`` learner (``use_nn=True``), or classes and tables that
        disagree; TypeError: a learner without a collab model and classes.
    """
    if unknown_row not in ("untrained", "mean", "fitted"):
        raise ValueError(f"unknown_row must be 'untrained', 'mean' or 'fitted', got {unknown_row!r}")
    if not (hasattr(learn, "model") and hasattr(learn, "dls") and hasattr(learn.dls, "classes")):
        raise TypeError(f"from_fastai takes a fastai collab Learner (learn.model, learn.dls.classes), got {type(learn).__name__}")
    model = learn.model
    names = list(learn.dls.classes)
    user = model.user if hasattr(model, "user") else None
    item = model.item if hasattr(model, "item") else None
    y_range = model.y_range if hasattr(model, "y_range") else None
    fitted = from_fastai_parts(
        model.state_dict(),
        learn.dls.classes,
        y_range=y_range,
        user=user,
        item=item,
        unknown_row="mean" if unknown_row == "mean" else "untrained",
    )
    user, item = user or names[0], item or names[1]
    train = learn.dls.train_ds
    codes = train.xs
    user_rows = _relabel(fitted.users, learn.dls.classes[user])[codes[user].to_numpy(np.int64)]
    item_rows = _relabel(fitted.items, learn.dls.classes[item])[codes[item].to_numpy(np.int64)]
    fitted.seen_items = SeenItems.from_rows(user_rows, item_rows, fitted.users.n_rows)
    known = (user_rows != UNKNOWN_ROW) & (item_rows != UNKNOWN_ROW)
    trained = read_ratings(
        pd.DataFrame(
            {
                "user": fitted.users.decode(user_rows[known]),
                "item": fitted.items.decode(item_rows[known]),
                "rating": np.asarray(train.ys.iloc[:, 0], dtype=np.float64)[known],
            }
        )
    )
    fitted.history.params.update(n_train=len(codes), n_valid=len(learn.dls.valid_ds), **data_facts(trained, fitted.users, fitted.items))
    if unknown_row == "fitted":
        fit_unknown_rows(fitted, trained)
    return fitted


def from_fastai_parts(
    state_dict: dict,
    classes: dict,
    *,
    y_range: tuple[float, float] | None,
    user: str | None = None,
    item: str | None = None,
    unknown_row: Literal["untrained", "mean"] = "untrained",
) -> FittedModel:
    """A :class:`~collabemb.fitted.FittedModel` from the pieces of a fastai ``EmbeddingDotBias``.

    Args:
        state_dict: ``learn.model.state_dict()`` (keys ``u_weight.weight`` (n_users, k),
            ``i_weight.weight`` (n_items, k), ``u_bias.weight`` (n_users, 1), ``i_bias.weight``
            (n_items, 1)); what ``learn.save`` writes (a dict with a ``"model"`` entry) is accepted too.
        classes: ``learn.dls.classes``: column name -> ``['#na#', id_1, ...]``, one entry per table row.
        y_range: the model's ``y_range`` (``learn.model.y_range``), or None for fastai's identity output.
        user, item: the column names of users and items in ``classes``; default: the first and
            second (fastai's ``EmbeddingDotBias.from_classes`` takes them in that order).
        unknown_row: ``"untrained"`` (fastai's row 0 as it is) or ``"mean"`` (mean of the known rows).

    Returns:
        The model, ``identity.row0`` saying what row 0 holds, no seen items (the pieces do not
        say which pairs were trained on), ``history.params["source"] == "fastai"``.
    """
    if unknown_row not in ("untrained", "mean"):
        raise ValueError(f"unknown_row must be 'untrained' or 'mean' (or fit it afterwards: fit_unknown_rows), got {unknown_row!r}")
    if "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = state_dict["model"]
    if any(str(key).startswith("embeds.") for key in state_dict):
        raise ValueError(
            "this is fastai's EmbeddingNN (collab_learner(use_nn=True)): its predictions come from a neural net over "
            "concatenated embeddings of different widths, which collabemb's dot-product model cannot reproduce; "
            "import an EmbeddingDotBias learner (use_nn=False)"
        )
    missing = [f"{name}.weight" for name in TABLE_NAMES if f"{name}.weight" not in state_dict]
    if missing:
        raise ValueError(f"state_dict is not a fastai EmbeddingDotBias: missing {', '.join(missing)}")
    names = list(classes)
    if len(names) < 2 and (user is None or item is None):
        raise ValueError(f"classes must name a user and an item column, got {names}")
    user, item = user or names[0], item or names[1]
    tables = {name: state_dict[f"{name}.weight"].detach().to("cpu", torch.float32) for name in TABLE_NAMES}
    users = _registry(classes, user, "user", tables["u_weight"].shape[0])
    items = _registry(classes, item, "item", tables["i_weight"].shape[0])
    k = tables["u_weight"].shape[1]
    for table, registry in (("u", users), ("i", items)):
        rows = _relabel(registry, classes[user if table == "u" else item])
        for name in (f"{table}_weight", f"{table}_bias"):
            relabelled = torch.empty_like(tables[name])
            relabelled[torch.from_numpy(rows)] = tables[name]
            if unknown_row == "mean":
                relabelled[UNKNOWN_ROW] = relabelled[1:].mean(dim=0)
            tables[name] = relabelled
    if y_range is not None:
        y_range = (float(y_range[0]), float(y_range[1]))
    module = EmbeddingDotBias(users, items, k, y_range, tables=tables)
    params = {"source": "fastai", "fastai_version": _fastai_version(), "n_factors": k, "y_range": list(y_range) if y_range else None}
    params.update(user_column=str(user), item_column=str(item), versions=library_versions("rating"))
    log.info("imported a fastai EmbeddingDotBias: %d users, %d items, %d factors, row 0 %s", len(users), len(items), k, unknown_row)
    return FittedModel(module, ModelIdentity(family="rating", row0=unknown_row), FitHistory(params=params))


def fit_unknown_rows(
    fitted: FittedModel, ratings: Ratings | pd.DataFrame | str, *, weight_decay: float | None = None, **read_kwargs
) -> None:
    """Solve row 0 of both tables as an average user and an average item, every other row fixed.

    The user row 0 is the vector and bias that best predict *all* the given ratings from the
    rated items' rows (the rating objective of :func:`collabemb.fold_in_users`, one ID holding
    every rating), the item row 0 likewise from the raters' rows; ratings whose counterpart the
    model does not know are left out. Changes ``fitted`` in place; ``identity.row0`` becomes
    ``"fitted"``. Use it for rows that training never taught, such as fastai's ``#na#``.

    Args:
        fitted: a rating model (``family="rating"``).
        ratings: what :func:`collabemb.read_ratings` reads (``read_kwargs`` go to it).
        weight_decay: per-rating L2 on the row's vector (as in training); default: the model's
            recorded one, else the fast engine's default (0.1).
    """
    if fitted.identity.family != "rating":
        raise ValueError(f"fit_unknown_rows solves rating models; this is a {fitted.identity.family!r} model")
    data = read_ratings(ratings, **read_kwargs)
    frame = data.frame
    wd = weight_decay if weight_decay is not None else fitted.identity.weight_decay
    wd = float(ENGINE_DEFAULTS["fast"]["weight_decay"] if wd is None else wd)
    user_rows, item_rows = fitted.users.encode(frame["user"]), fitted.items.encode(frame["item"])
    values = frame["rating"].to_numpy(np.float64)
    module = fitted.module
    for table, counterpart_rows, weights, biases in (
        ("user", item_rows, module.u_weight.weight, module.u_bias.weight),
        ("item", user_rows, module.i_weight.weight, module.i_bias.weight),
    ):
        known = counterpart_rows != UNKNOWN_ROW
        if not known.any():
            raise ValueError(
                f"none of the ratings has a {'item' if table == 'user' else 'user'} the model knows: row 0 of {table}s cannot be fitted"
            )
        other_w, other_b = fitted.tables("item" if table == "user" else "user")
        vector, bias = _solve_row(other_w[counterpart_rows[known]], other_b[counterpart_rows[known]], values[known], wd, fitted.y_range)
        with torch.no_grad():
            weights[UNKNOWN_ROW] = torch.from_numpy(vector.astype(np.float32))
            biases[UNKNOWN_ROW, 0] = float(bias)
        log.info("row 0 of the %ss fitted on %d ratings (weight_decay %g)", table, int(known.sum()), wd)
    fitted.identity = replace(fitted.identity, row0="fitted")


def _solve_row(other_w: np.ndarray, other_b: np.ndarray, ratings: np.ndarray, wd: float, y_range) -> tuple[np.ndarray, float]:
    """(k,) vector and bias of one row from (n, k) counterpart vectors, (n,) biases and (n,) ratings."""
    if y_range is not None:
        vector, bias, _, _ = solve_one(other_w, other_b, ratings, weight_decay=wd, y_range=y_range)
        return vector, bias
    # identity output: ridge regression in closed form (the bias unpenalised)
    n, k = other_w.shape
    A = np.hstack([other_w.astype(np.float64), np.ones((n, 1))])
    reg = np.full(k + 1, wd * n)
    reg[k] = 0.0
    theta = np.linalg.solve(A.T @ A + np.diag(reg), A.T @ (ratings - other_b))
    return theta[:k], float(theta[k])


def _registry(classes: dict, name, table: str, n_rows: int) -> IdRegistry:
    """The registry of one table from fastai's ``classes[name]`` (``['#na#', id_1, ...]``)."""
    if name not in classes:
        raise ValueError(f"classes has no column {name!r} (it has {', '.join(map(repr, classes))})")
    values = list(classes[name])
    if not values or values[0] != NA:
        raise ValueError(f"classes[{name!r}] must start with {NA!r} (fastai's row 0), got {values[:1]}")
    if len(values) != n_rows:
        raise ValueError(f"classes[{name!r}] has {len(values)} entries but the {table} tables have {n_rows} rows")
    ids = _plain_ids(values[1:], name)
    registry = IdRegistry(ids, name=table)
    if len(registry) != len(ids):
        raise ValueError(f"classes[{name!r}] repeats an ID: {len(ids)} entries, {len(registry)} distinct")
    return registry


def _plain_ids(values: list, name) -> np.ndarray | list:
    """fastai's class values (numpy scalars: int8, int64, str_; floats for float columns) as plain ints or strs."""
    if all(isinstance(v, int | np.integer) for v in values):
        return np.array([int(v) for v in values], dtype=np.int64)
    if all(isinstance(v, str) for v in values):
        return [str(v) for v in values]
    if all(isinstance(v, float | np.floating) and float(v).is_integer() for v in values):
        return np.array([int(v) for v in values], dtype=np.int64)  # an int column read as float (it had NaNs)
    kinds = sorted({type(v).__name__ for v in values})
    raise TypeError(f"classes[{name!r}] holds {', '.join(kinds)}; IDs must be all ints or all strings")


def _relabel(registry: IdRegistry, values) -> np.ndarray:
    """(n_rows,) int64: our row of each fastai row (fastai row 0, ``#na#``, is our row 0)."""
    rows = np.zeros(len(values), dtype=np.int64)
    rows[1:] = registry.encode(_plain_ids(list(values)[1:], "classes"), unknown="raise")
    return rows


def _fastai_version() -> str | None:
    try:
        return metadata.version("fastai")
    except metadata.PackageNotFoundError:
        return None
