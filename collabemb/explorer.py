"""The embedding explorer: one self-contained HTML page for looking around a model's items.

* :func:`explorer_html` builds the page. ``collabemb serve`` answers it at ``/`` with
  ``static=False``: neighbours, a user's recommendations and seen items and a new user's fold-in
  are asked of the server's JSON API (docs/serve-api.md) with relative URLs, the token cookie
  going along.
* :func:`write_explorer` writes it as one file with ``static=True`` (``collabemb explore``): no
  server; the neighbours of the ``top`` most-rated items are precomputed with
  :func:`collabemb.similar_items` for the metric of the model's index (the stored one, else the
  default cosine index) and, when an exact index is cheap (at most ``EXACT_MAX_DEFAULT`` items),
  for the other metric too. When the item table is small (``n_items * n_factors`` at most
  :data:`BROWSER_VECTORS_MAX`) the float32 vectors are embedded as well and the page computes
  any other item's neighbours itself, exactly (an exact search over the same vectors); otherwise
  it says that item's neighbours were not precomputed.

The page refers to nothing outside itself (no CDN, fonts or network in static mode: plain
JavaScript drawing on a canvas, :mod:`collabemb.explorer_page`). Its data is one JSON block:
the item map (the first two principal components, :func:`collabemb.pca_frame`), each item's
raw ID (JSON numbers for an int registry, strings for a str one: the type is kept), bias,
training-pair count (from ``fitted.seen_items``) and metadata, and the colourings offered. The
JSON is written with every ``<``, ``>`` and ``&`` as a ``\\u`` escape, so no text in it (a title
holding ``</script>`` or ``<!--``) can end the block.
"""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from collabemb.atomic import atomic_file
from collabemb.explorer_page import render_page
from collabemb.export import embedding_arrays
from collabemb.faiss_parts import EXACT_MAX_DEFAULT
from collabemb.fitted import FittedModel, StoredIndex
from collabemb.index import SimilarityIndex, index_of
from collabemb.plots import item_categories, pca_frame

#: Neighbours listed per item.
NEIGHBOURS_K = 10
#: Largest item table (n_items * n_factors numbers) whose vectors a static page carries, so that
#: it can compute any item's neighbours itself: 2**17 float32, 512 KiB (about 700 kB as base64);
#: ml-100k's 1682 items with the default 64 factors fit.
BROWSER_VECTORS_MAX = 131_072
#: A text metadata column is offered as a colouring when it has at most this many categories
#: (its rarest value per item, as in :func:`collabemb.plot_pca`); more is free text, shown on hover only.
MAX_CATEGORIES = 50
#: Longest metadata text carried per item; longer values are cut with an ellipsis.
MAX_TEXT = 200
_DIGITS = 6  # decimals kept of map coordinates, biases and scores


def explorer_html(fitted: FittedModel, *, static: bool, top: int = 300) -> str:
    """The explorer page for ``fitted`` as one HTML document (str).

    Args:
        fitted: a fitted model; its item metadata gives titles (a ``title`` column) and colourings.
        static: True for a page that works alone from a file (neighbours embedded); False for
            the page ``collabemb serve`` answers at ``/`` (everything else asked of the server).
        top: static pages: how many of the most-rated items get precomputed neighbours (the
            first ``top`` in registry order when the model stores no training pairs).

    Raises:
        ValueError: ``top`` below 1, or fewer than 2 known items (no map to draw).
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be an integer >= 1, got {top!r}")
    ids, matrix, bias = embedding_arrays(fitted, "item", unknown_row=False)
    counts = _item_counts(fitted)
    map_block, x, y = _map(fitted)
    data = {
        "mode": "static" if static else "server",
        "model": _model_block(fitted),
        "map": map_block,
        "items": {"id": ids.tolist(), "x": x, "y": y, "bias": _rounded(bias), "count": None if counts is None else counts.tolist()},
        "metadata": _metadata_block(fitted),
        "colourings": _colourings(fitted, counts),
    }
    if static:
        data["neighbours"] = _precomputed_neighbours(fitted, counts, top)
        fits = matrix.size <= BROWSER_VECTORS_MAX
        data["vectors"] = {"n_factors": int(matrix.shape[1]), "base64": _base64_f32(matrix)} if fits else None
    else:
        data["neighbours"] = {"k": NEIGHBOURS_K, "metric": _index_metric(fitted), "metrics": {}, "top": [], "rule": ""}
        data["vectors"] = None
    return render_page(_json_for_script(data))


def write_explorer(fitted: FittedModel, out: str | os.PathLike, *, top: int = 300) -> Path:
    """Write the static explorer page (:func:`explorer_html` with ``static=True``) to ``out``, atomically.

    Returns the path written. The page needs no server and no network: open it in a browser.
    """
    page = explorer_html(fitted, static=True, top=top)
    out = Path(out)
    with atomic_file(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out


# --- the data blocks -------------------------------------------------------------------------


def _model_block(fitted: FittedModel) -> dict:
    y_range = fitted.y_range
    return {
        "family": fitted.identity.family,
        "fold_in": fitted.identity.fold_in,
        "n_users": len(fitted.users),
        "n_items": len(fitted.items),
        "n_factors": fitted.n_factors,
        "y_range": None if y_range is None else [float(y_range[0]), float(y_range[1])],
        "id_type": {"user": fitted.users.id_type, "item": fitted.items.id_type},
    }


def _map(fitted: FittedModel) -> tuple[dict, list[float], list[float]]:
    """The item map: ``({"method", "axes": [x title, y title]}, x, y)``, coordinates in registry order."""
    pcs = pca_frame(fitted, "item", n_components=2)
    ratio = pcs.attrs["explained_variance_ratio"]
    axes = [f"PC{j + 1} ({100 * r:.1f}% of variance)" for j, r in enumerate(ratio)]
    x = pcs["pc1"].to_numpy()
    y = pcs["pc2"].to_numpy() if "pc2" in pcs.columns else np.zeros(len(pcs))  # a one-factor model: a line
    return {"method": "PCA", "axes": axes + ["(no second component)"] * (2 - len(axes))}, _rounded(x), _rounded(y)


def _item_counts(fitted: FittedModel) -> np.ndarray | None:
    """(n_items,) int64 training pairs per known item (registry order); None when none are stored."""
    if not len(fitted.seen_items):
        return None
    return fitted.seen_items.pairs_per_item(fitted.items.n_rows)


def _aligned_metadata(fitted: FittedModel) -> pd.DataFrame:
    """The item metadata, one row per known item in registry order (missing items: NA)."""
    meta = fitted.item_metadata
    index = pd.Index(fitted.items.ids, dtype=object if fitted.items.id_type == "str" else np.int64)
    return meta.set_index("item").reindex(index)


def _metadata_block(fitted: FittedModel) -> dict:
    """``{"title": [...] or None, "columns": [...], "values": {column: [...]}}``, JSON-ready, registry order."""
    meta = _aligned_metadata(fitted)
    values = {str(col): _json_values(meta[col]) for col in meta.columns}
    title = values.pop("title", None)
    return {"title": title, "columns": list(values), "values": values}


def _json_values(column: pd.Series) -> list:
    """A metadata column as JSON values: numbers stay numbers (NaN / NA: null), the rest text."""
    present = column.notna().to_numpy()
    values = column.to_numpy(dtype=object)
    if pd.api.types.is_integer_dtype(column):
        return [int(v) if ok else None for v, ok in zip(values, present, strict=True)]
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return [round(float(v), _DIGITS) if ok and math.isfinite(v) else None for v, ok in zip(values, present, strict=True)]
    return [_short(str(v)) if ok else None for v, ok in zip(values, present, strict=True)]


def _short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "\u2026"


def _colourings(fitted: FittedModel, counts: np.ndarray | None) -> list[dict]:
    """The colourings offered: bias, popularity (when counts exist) and the usable metadata columns.

    A numeric column is a continuous colouring of its values; a text column (``"Action|Comedy"``)
    a categorical one, each item coloured by its rarest value (:func:`collabemb.plot_pca`'s rule),
    when it has at most :data:`MAX_CATEGORIES` categories.
    """
    found = [{"name": "bias", "kind": "continuous", "label": "item bias (logit units)", "source": "bias"}]
    if counts is not None:
        found.append({"name": "popularity", "kind": "continuous", "label": "training pairs per item (log scale)", "source": "count"})
    meta = _aligned_metadata(fitted)
    for col in meta.columns:
        if col == "title" or not meta[col].notna().any():
            continue
        if pd.api.types.is_numeric_dtype(meta[col]) and not pd.api.types.is_bool_dtype(meta[col]):
            found.append({"name": str(col), "kind": "continuous", "label": str(col), "source": "metadata"})
            continue
        cats = item_categories(fitted, fitted.item_metadata, col)
        freq = cats.value_counts()
        order = sorted(freq.index, key=lambda name: (name == "(none)", -freq[name], name))  # the most common first, none last
        if len(order) <= MAX_CATEGORIES:
            code = {name: j for j, name in enumerate(order)}
            several = meta[col].dropna().astype(str).str.contains("|", regex=False).any()
            label = f"{col} (each item's rarest value)" if several else str(col)
            found.append({"name": str(col), "kind": "categorical", "label": label, "categories": order, "codes": cats.map(code).tolist()})
    return found


# --- neighbours of a static page -----------------------------------------------------------------


def _index_metric(fitted: FittedModel) -> str:
    """The metric the model's index searches (the server's): the stored or attached one's, else cosine."""
    index = fitted.index
    if isinstance(index, SimilarityIndex):
        return index.settings.metric
    if isinstance(index, StoredIndex):
        return str(index.config.get("metric", "cosine"))
    return "cosine"


def _indexes(fitted: FittedModel) -> list[tuple[SimilarityIndex, str]]:
    """The indexes a static page is computed with, and where each comes from.

    First the one :func:`collabemb.similar_items` searches (the model's index; without one an
    index with default settings, kept local so ``fitted`` is not changed); then, when an exact
    index is cheap, one of the other metric.
    """
    if fitted.index is None:
        first, how = SimilarityIndex(fitted), "FAISS index built for this page"
    else:
        first, how = index_of(fitted), "the model's FAISS index"
    found = [(first, how)]
    if len(fitted.items) <= EXACT_MAX_DEFAULT:
        other = "dot" if first.settings.metric == "cosine" else "cosine"
        found.append((SimilarityIndex(fitted, metric=other, index_type="exact"), "exact FAISS index built for this page"))
    return found


def _precomputed_neighbours(fitted: FittedModel, counts: np.ndarray | None, top: int) -> dict:
    """Neighbours of the ``top`` most-rated items, per metric.

    Returns ``{"k", "metric" (the first), "top": [positions], "rule": str, "metrics": {metric:
    {"source": str, "items": [[positions] per top item], "scores": [[floats] per top item]}}}``;
    positions index the page's item lists (registry order).
    """
    n = len(fitted.items)
    if counts is not None:
        chosen = np.argsort(-counts, kind="stable")[:top]
        rule = f"the {len(chosen)} most-rated items"
    else:
        chosen = np.arange(min(top, n))
        rule = f"the first {len(chosen)} items in registry order (the model stores no training pairs to count)"
    query_ids = fitted.items.ids[chosen]
    k = max(min(NEIGHBOURS_K, n - 1), 1)
    metrics = {}
    for index, how in _indexes(fitted):
        frame = index.similar_items(query_ids, k)
        positions = fitted.items.encode(frame["item"].to_numpy()) - 1
        query_pos = fitted.items.encode(frame["query"].to_numpy()) - 1
        lists: dict[int, tuple[list, list]] = {int(p): ([], []) for p in chosen}
        for q, p, s in zip(query_pos.tolist(), positions.tolist(), frame["score"].to_numpy(dtype=np.float64).tolist(), strict=True):
            lists[q][0].append(p)
            lists[q][1].append(round(s, _DIGITS))
        part = index.parts.get("items", "exact")
        metrics[index.settings.metric] = {
            "source": f"{how} ({part})",
            "items": [lists[int(p)][0] for p in chosen],
            "scores": [lists[int(p)][1] for p in chosen],
        }
    return {"k": k, "metric": next(iter(metrics)), "metrics": metrics, "top": chosen.tolist(), "rule": rule}


# --- encoding ------------------------------------------------------------------------------------


def _rounded(values: np.ndarray) -> list[float]:
    return np.round(np.asarray(values, dtype=np.float64), _DIGITS).tolist()


def _base64_f32(matrix: np.ndarray) -> str:
    """(n, k) vectors as base64 of little-endian float32, row after row."""
    return base64.b64encode(np.ascontiguousarray(matrix, dtype="<f4").tobytes()).decode("ascii")


def _json_for_script(data: dict) -> str:
    """``data`` as strict ASCII JSON that is safe inside a ``<script>`` element.

    ``<``, ``>`` and ``&`` can only occur inside JSON strings, where ``\\u003c``, ``\\u003e`` and
    ``\\u0026`` mean the same: so ``</script>`` and ``<!--`` in any text never reach the HTML parser.
    """
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
