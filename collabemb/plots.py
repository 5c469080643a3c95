"""Looking at the embeddings: an item map, a bias ranking and the training curves (matplotlib).

* :func:`pca_frame`: the items' (or users') first principal components, by raw ID.
* :func:`plot_pca`: the item map: every item as a grey dot in the plane of the first two
  principal components, the ``n`` most-rated items labelled by title and optionally coloured
  by genre.
* :func:`plot_bias`: the items with the highest and the lowest learned bias.
* :func:`plot_history`: train / validation RMSE and learning rate per epoch from ``fitted.history``.

The plots take a :class:`~collabemb.fitted.FittedModel`: rating counts come from the training
pairs it stores (``fitted.seen_items``) and labels from its item metadata
(``fitted.item_metadata``; an empty frame means none) unless others are given.

Each plot function returns a ``matplotlib.figure.Figure`` built without pyplot (no global figure
state, no display needed) and, given ``out``, writes it as a PNG atomically. matplotlib is
imported when a plot is made, not when collabemb is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from collabemb.atomic import atomic_file
from collabemb.data import Ratings, read_ratings
from collabemb.export import embedding_arrays
from collabemb.fitted import FittedModel
from collabemb.history import FitHistory
from collabemb.models import EmbeddingDotBias, Table, check_table
from collabemb.registry import IdRegistry

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Longest label drawn next to a point or bar; longer titles are cut with an ellipsis.
LABEL_CHARS = 32
#: Categories given their own colour in :func:`plot_pca`; the rest are drawn as "other" in grey.
MAX_COLOURS = 9


def pca_frame(fitted: FittedModel | EmbeddingDotBias, table: Table = "item", *, n_components: int = 2) -> pd.DataFrame:
    """Principal components of the known rows of the user or item table (row 0 left out).

    ``fitted`` is a fitted model or its module; ``table`` is ``"user"`` or ``"item"``.

    The vectors are centred on their mean and projected on the leading right singular vectors
    (signs fixed so each component's largest loading is positive, for stable pictures).

    Returns:
        DataFrame with the raw ID column (``user`` / ``item``) and ``pc1 .. pc{n_components}``
        (float64), in registry row order. ``frame.attrs["explained_variance_ratio"]`` holds the
        share of the total variance each component explains.
    """
    ids, matrix, _ = embedding_arrays(fitted, check_table(table), unknown_row=False)
    if len(ids) < 2:
        raise ValueError(f"PCA needs at least 2 known {table}s, the model has {len(ids)}")
    n_components = min(n_components, matrix.shape[1], len(ids))
    x = matrix.astype(np.float64)
    x -= x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    vt = vt[:n_components]
    vt *= np.sign(vt[np.arange(n_components), np.abs(vt).argmax(axis=1)])[:, None]
    coords = x @ vt.T
    frame = pd.DataFrame(coords, columns=[f"pc{j + 1}" for j in range(n_components)])
    frame.insert(0, table, pd.Series(ids, dtype=ids.dtype))
    total = float((s**2).sum())
    frame.attrs["explained_variance_ratio"] = [float(v) / total if total else 0.0 for v in s[:n_components] ** 2]
    return frame


def _figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _save(fig: Figure, out: str | os.PathLike | None, dpi: int) -> None:
    if out is None:
        return
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"{out}: plots are written as PNG; give a name ending in .png")
    with atomic_file(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


def _item_index(items: IdRegistry) -> pd.Index:
    return pd.Index(items.ids, dtype=object if items.id_type == "str" else np.int64)


def _item_counts(fitted: FittedModel, ratings: Ratings | pd.DataFrame | str | os.PathLike | None) -> tuple[pd.Series | None, str]:
    """Ratings per known item (indexed by raw item ID, registry order) and where they came from.

    From ``ratings`` when given; otherwise from the training pairs stored with the model
    (``fitted.seen_items``, which ``collabemb fit`` saves) when it holds any; otherwise ``(None, "")``.
    """
    index = _item_index(fitted.items)
    if ratings is not None:
        counts = read_ratings(ratings).frame["item"].value_counts()
        return counts.reindex(index, fill_value=0).astype(np.int64), "in the given ratings"
    if len(fitted.seen_items):
        return pd.Series(fitted.seen_items.pairs_per_item(fitted.items.n_rows), index=index), "in the training pairs stored with the model"
    return None, ""


def _labels(fitted: FittedModel, meta: pd.DataFrame | None, label_col: str | None) -> pd.Series:
    """A text label per known item (registry order): ``label_col`` of the metadata, else the raw ID."""
    ids = pd.Series(fitted.items.ids, dtype=object if fitted.items.id_type == "str" else np.int64)
    labels = ids.astype(str)
    if meta is not None and label_col is not None:
        if label_col not in meta.columns:
            raise ValueError(f"item metadata has no column {label_col!r} (found: {', '.join(map(str, meta.columns))})")
        by_id = meta.set_index("item")[label_col]
        found = by_id.reindex(ids.to_numpy())
        labels = pd.Series(np.where(found.notna().to_numpy(), found.astype(str).to_numpy(), labels.to_numpy()), dtype=object)
    return labels.map(lambda s: s if len(s) <= LABEL_CHARS else s[: LABEL_CHARS - 1] + "\u2026")


def _metadata(fitted: FittedModel, metadata: pd.DataFrame | None, id_col: str = "item") -> pd.DataFrame | None:
    """The item metadata to draw with, its ID column named ``item``: ``metadata`` when given, else
    the metadata stored with the model; None when there is none (an empty frame)."""
    if metadata is None:
        return None if fitted.item_metadata.empty else fitted.item_metadata
    if id_col not in metadata.columns:
        raise ValueError(f"item metadata has no ID column {id_col!r} (found: {', '.join(map(str, metadata.columns))})")
    return metadata.rename(columns={id_col: "item"})


def item_categories(fitted: FittedModel, meta: pd.DataFrame | None, color_by: str) -> pd.Series:
    """One category per known item from metadata column ``color_by``.

    Multi-valued fields (``"Comedy|Drama"``) give each item its *least common* value over the
    catalogue, the most specific one (a Film-Noir thriller is coloured Film-Noir). Items
    without a value are ``"(none)"``.
    """
    if meta is None or color_by not in meta.columns:
        found = "no item metadata" if meta is None else f"columns: {', '.join(map(str, meta.columns))}"
        raise ValueError(f"cannot colour by {color_by!r}: {found}")
    values = meta.set_index("item")[color_by].reindex(_item_index(fitted.items))
    parts = values.fillna("").astype(str).str.split("|")
    freq = parts.explode().value_counts()
    freq = freq.drop("", errors="ignore")
    return pd.Series([min((p for p in ps if p), key=lambda g: (freq.get(g, 0), g), default="(none)") for ps in parts], dtype=object)


def plot_pca(
    fitted: FittedModel,
    *,
    n: int = 40,
    ratings: Ratings | pd.DataFrame | str | os.PathLike | None = None,
    metadata: pd.DataFrame | None = None,
    metadata_id_col: str = "item",
    label_col: str | None = "title",
    color_by: str | None = None,
    out: str | os.PathLike | None = None,
    figsize: tuple[float, float] = (11.0, 8.5),
    dpi: int = 110,
) -> Figure:
    """The item map: first two principal components, ``n`` items labelled.

    Args:
        fitted: a fitted model.
        n: how many items to mark and label.
        ratings: ratings (Ratings, DataFrame with an ``item`` column, or a file) to count per item;
            then the ``n`` most-rated items are labelled. Without them the training pairs stored
            with the model are counted (``fitted.seen_items``, saved by ``collabemb fit``); without
            any, the ``n`` items farthest from the centre of the map are labelled. The title
            says which.
        metadata: item metadata (titles, genres); default the metadata stored with the model
            (``fitted.item_metadata``).
        metadata_id_col: ID column of ``metadata``.
        label_col: metadata column to label points with (raw IDs when missing or None).
        color_by: metadata column to colour the labelled items by (e.g. ``"genres"``).
        out: write the figure here as PNG (atomically).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    pcs = pca_frame(fitted, "item", n_components=2)
    ratio = pcs.attrs["explained_variance_ratio"]
    meta = _metadata(fitted, metadata, metadata_id_col)
    counts, source = _item_counts(fitted, ratings)
    xy = pcs[["pc1", "pc2"]].to_numpy()
    if counts is not None:
        chosen = np.argsort(-counts.to_numpy(), kind="stable")[:n]
        how = f"the {len(chosen)} most-rated items ({source})"
    else:
        chosen = np.argsort(-np.hypot(xy[:, 0], xy[:, 1]), kind="stable")[:n]
        how = f"the {len(chosen)} items farthest from the centre (pass ratings to label the most-rated)"
    labels = _labels(fitted, meta, label_col if meta is not None else None)

    fig = _figure(figsize)
    ax = fig.add_subplot()
    ax.scatter(xy[:, 0], xy[:, 1], s=6, color="0.82", linewidths=0, label=f"all {len(xy)} items", zorder=1)
    if color_by is not None:
        cats = item_categories(fitted, meta, color_by).iloc[chosen]
        order = cats.value_counts().index.tolist()
        shown = order[:MAX_COLOURS]
        from matplotlib import colormaps

        palette = [colormaps["tab10"](j) for j in (0, 1, 2, 3, 4, 5, 6, 8, 9)]  # tab10 without its grey
        groups = [(cat, (cats == cat).to_numpy(), palette[c_idx]) for c_idx, cat in enumerate(shown)]
        groups.append(("other", ~cats.isin(shown).to_numpy(), "0.35"))
        for cat, mask, colour in groups:
            if mask.any():
                pts = xy[chosen[mask]]
                ax.scatter(pts[:, 0], pts[:, 1], s=28, color=colour, label=cat, zorder=3)
        ax.legend(title=color_by, fontsize=8, title_fontsize=9, loc="best", markerscale=1.2)
    else:
        pts = xy[chosen]
        ax.scatter(pts[:, 0], pts[:, 1], s=28, color="tab:blue", zorder=3)
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f}% of variance)" if len(ratio) > 1 else "PC2")
    ax.axhline(0, color="0.9", lw=0.8, zorder=0)
    ax.axvline(0, color="0.9", lw=0.8, zorder=0)
    ax.set_title(f"Item embeddings, first two principal components\nmarked: {how}", fontsize=10)  # its height sets the layout
    placed = _place_labels(ax, xy, chosen, labels)
    if placed < len(chosen):
        how += f"; {placed} labelled, {len(chosen) - placed} not (their labels would overlap)"  # same two lines, same layout
    ax.set_title(f"Item embeddings, first two principal components\nmarked: {how}", fontsize=10)
    _save(fig, out, dpi)
    return fig


#: Where a label may sit around its point (offset in points, alignment), tried in this order.
_LABEL_SPOTS = ((4, 3, "left", "bottom"), (-4, 3, "right", "bottom"), (4, -3, "left", "top"), (-4, -3, "right", "top"))


def _place_labels(ax, xy: np.ndarray, chosen: np.ndarray, labels: pd.Series) -> int:
    """Label the ``chosen`` rows of ``xy`` in order, each at the first spot around its point where the
    label stays inside the axes and overlaps no label placed before; a label with no such spot is
    left out (its point stays marked). Returns how many were placed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = ax.figure
    FigureCanvasAgg(fig)
    fig.draw_without_rendering()  # the constrained layout and the axis limits, as they will be saved
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken: list = []
    for idx in chosen:
        for dx, dy, ha, va in _LABEL_SPOTS:
            text = ax.annotate(
                str(labels.iloc[idx]),
                xy[idx],
                xytext=(dx, dy),
                textcoords="offset points",
                ha=ha,
                va=va,
                fontsize=7.5,
                zorder=4,
                bbox={"boxstyle": "round,pad=0.12", "facecolor": "white", "edgecolor": "none", "alpha": 0.75},
            )
            box = text.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in taken):
                taken.append(box.expanded(1.04, 1.15))
                break
            text.remove()
    return len(taken)


def plot_bias(
    fitted: FittedModel,
    *,
    n: int = 15,
    ratings: Ratings | pd.DataFrame | str | os.PathLike | None = None,
    min_ratings: int = 0,
    metadata: pd.DataFrame | None = None,
    metadata_id_col: str = "item",
    label_col: str | None = "title",
    out: str | os.PathLike | None = None,
    figsize: tuple[float, float] = (11.0, 7.0),
    dpi: int = 110,
) -> Figure:
    """Bias ranking: the ``n`` items with the lowest and the ``n`` with the highest learned bias.

    A bias is in logit units (before the sigmoid): how much better (or worse) an item is rated
    than its raters' tastes explain. With rating counts (``ratings``, or the training pairs
    stored with the model as in :func:`plot_pca`) each bar says how many ratings the item had,
    and ``min_ratings`` leaves out items with fewer (rare items' biases are noisy).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _, _, bias = embedding_arrays(fitted, "item", unknown_row=False)
    meta = _metadata(fitted, metadata, metadata_id_col)
    labels = _labels(fitted, meta, label_col if meta is not None else None)
    counts, source = _item_counts(fitted, ratings)
    keep = np.ones(len(bias), dtype=bool)
    if counts is not None:
        keep = counts.to_numpy() >= min_ratings
        labels = labels + counts.map(lambda c: f" ({c})").to_numpy()
    elif min_ratings:
        raise ValueError("min_ratings needs ratings= (or training pairs stored with the model) to count them")
    candidates = np.flatnonzero(keep)
    if len(candidates) == 0:
        raise ValueError(f"no item has at least {min_ratings} ratings")
    order = candidates[np.argsort(bias[candidates], kind="stable")]
    low, high = order[: min(n, len(order))], order[::-1][: min(n, len(order))]

    fig = _figure(figsize)
    axes = fig.subplots(1, 2)
    for ax, picked, colour, title in ((axes[0], low, "tab:red", "lowest bias"), (axes[1], high, "tab:green", "highest bias")):
        y = np.arange(len(picked))[::-1]
        ax.barh(y, bias[picked], color=colour, alpha=0.8)
        ax.set_yticks(y, labels.iloc[picked].tolist(), fontsize=8)
        ax.axvline(0, color="0.3", lw=0.8)
        ax.set_title(f"{len(picked)} items with the {title}", fontsize=10)
        ax.set_xlabel("item bias (logit units)")
    note = f", items with >= {min_ratings} ratings" if counts is not None and min_ratings else ""
    heading = f"Item biases: {len(bias)} items"
    fig.suptitle(f"{heading}{note}; (n) = ratings {source}" if counts is not None else heading, fontsize=11)
    _save(fig, out, dpi)
    return fig


def plot_history(
    fitted: FittedModel | FitHistory, *, out: str | os.PathLike | None = None, figsize: tuple[float, float] = (8.0, 5.0), dpi: int = 110
) -> Figure:
    """Training curves: train and validation RMSE per epoch, learning rate on a second axis.

    Args:
        fitted: a fitted model whose ``history`` to plot, or a :class:`~collabemb.history.FitHistory`.

    Raises:
        ValueError: the history has no epochs (a model fitted in one solve, or not trained).
    """
    history = fitted if isinstance(fitted, FitHistory) else fitted.history
    if not history.epoch:
        raise ValueError("no training history to plot (the model was not fitted by collabemb.fit, or has no epochs)")
    frame = history.to_frame()
    fig = _figure(figsize)
    ax = fig.add_subplot()
    ax.plot(frame["epoch"], frame["train_rmse"], "o-", color="tab:blue", label="train RMSE", ms=4)
    valid = pd.to_numeric(frame["valid_rmse"], errors="coerce")
    if valid.notna().any():
        ax.plot(frame["epoch"], valid, "s-", color="tab:orange", label="validation RMSE", ms=4)
        best = int(frame["epoch"].iloc[int(valid.idxmin())])
        ax.axvline(best, color="tab:orange", ls=":", lw=1)
        right_half = best > (frame["epoch"].min() + frame["epoch"].max()) / 2
        ax.annotate(
            f"best {valid.min():.4f} (epoch {best})",
            (best, valid.min()),
            xytext=(-6 if right_half else 6, 12),
            textcoords="offset points",
            ha="right" if right_half else "left",
            fontsize=8,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("RMSE")
    lr_ax = ax.twinx()
    lr_ax.plot(frame["epoch"], frame["lr"], "--", color="0.5", label="learning rate (end of epoch)")
    lr_ax.set_ylabel("learning rate", color="0.4")
    lines = ax.get_legend_handles_labels()
    lr_lines = lr_ax.get_legend_handles_labels()
    ax.legend(lines[0] + lr_lines[0], lines[1] + lr_lines[1], fontsize=8, loc="upper right")
    stopped = " (stopped early)" if history.stopped_early else ""
    ax.set_title(f"Training history: {len(frame)} epochs{stopped}", fontsize=10)
    _save(fig, out, dpi)
    return fig
