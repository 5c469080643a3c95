"""What ``collabemb serve`` answers from: one loaded artifact, made ready in two phases so that the first answer needs no torch.

* **Phase A** (:func:`load_served`, before the server listens): the artifact's
  :class:`~collabemb.model_view.ModelView` (every file checked, the tables as numpy arrays) and the
  FAISS parts it stores, read back and checked against the view's tables (the missing ones built
  over them). Similar items and users, embeddings, recommendations for a known user or the unknown
  one, seen items and the model's info answer from it. Neither torch nor numba nor scipy is imported.
* **Phase B** (:meth:`Served.start_finishing`, in a thread of its own, once the server has started):
  torch imported, the :class:`~collabemb.fitted.FittedModel` built on the view's very arrays
  (:func:`~collabemb.artifact.fitted_from_view`, no copy), numba's compiled fold-in solver loaded,
  the model card written for an artifact that stores none. Predictions (the module's forward),
  fold-ins, the explorer page (and the info of a card-less artifact) wait for it
  (:meth:`Served.wait_finished`); they never fail for want of it. Last, the tables and the FAISS parts'
  vectors and graphs are moved into 2 MiB pages (:mod:`collabemb.huge_pages`; 1.2 GiB of a 1M-item
  catalogue in about 2.5 s): its searches then take 14-23% less time.

A reloaded artifact goes through the same two phases.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from collabemb.faiss_files import read_stored_parts
from collabemb.faiss_parts import IndexSettings, Part
from collabemb.huge_pages import use_huge_pages
from collabemb.model_view import MODEL_CARD_FILE, MODEL_CARD_MAX_BYTES, ModelView, StoredIndex, rating_of_logits, read_model_view
from collabemb.registry import CANONICAL_INT, UNKNOWN_ROW
from collabemb.store import open_snapshot

if TYPE_CHECKING:
    from collabemb.fitted import FittedModel  # torch: phase B imports it

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_OMITTED = ("item", "score", "rank")  # metadata columns a result's own keys take precedence over
_one_thread = threading.Event()  # set by one_thread_each(): phase B limits what it loads to one thread too


class ApiError(Exception):
    """A request the API refuses: the HTTP status and one readable sentence."""

    def __init__(self, status: int, message: str):
        super().__init__(status, message)
        self.status, self.message = status, message


def log(message: str) -> None:
    print(f"collabemb serve: {message}", file=sys.stderr, flush=True)


def one_thread_each() -> None:
    """FAISS (OpenMP) and BLAS on one thread in this process, now; torch and the libraries phase B loads with
    it too, once it has loaded them. A server process answers one request at a time on each."""
    import faiss
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(1)
    threadpool_limits(1)
    _one_thread.set()


class _SwitchInterval:
    """While a phase B imports torch and numba beside the event loop, the GIL is handed over every 0.5 ms rather
    than every 5 ms (Python's default), so the thread answering requests waits less behind the import's Python
    code (measured on 2 cores, /v1/similar one at a time in the seconds after the start: p99 18-20 ms, 6 ms
    with it). The import's long C calls (loading libtorch: up to 0.6 s) hold the GIL all the same. The
    interval is process-wide: set by the first phase B running, restored when the last one ends."""

    def __init__(self, seconds: float):
        self.seconds, self._lock, self._running, self._default = seconds, threading.Lock(), 0, 0.005

    @contextlib.contextmanager
    def shortened(self) -> Iterator[None]:
        with self._lock:
            if self._running == 0:
                self._default = sys.getswitchinterval()
                sys.setswitchinterval(self.seconds)
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    sys.setswitchinterval(self._default)


_phase_b_switch = _SwitchInterval(0.0005)


def warm_fold_in() -> None:
    """Load the compiled fold-in solver (numba: compiled once per installation, then read from its cache,
    about half a second), so that the first fold-in request does not wait for it."""
    from collabemb.fold_solvers import solve_one

    solve_one(np.zeros((1, 1)), np.zeros(1), np.ones(1), weight_decay=0.1, y_range=(0.0, 2.0))


class _Table:
    """One table of a served model: its registry and vectors, and the lookup and typing of one raw ID."""

    def __init__(self, view: ModelView, name: str):
        self.name, self.registry = name, view.registry(name)
        self.id_type, self.ids = self.registry.id_type, self.registry.ids
        self.weights, self.biases = view.tables(name)
        ordered = len(self.ids) < 2 or bool(np.all(self.ids[1:] > self.ids[:-1]))  # not after IDs were appended
        self._order = None if ordered else np.argsort(self.ids, kind="stable")
        self._sorted = self.ids if ordered else self.ids[self._order]

    def row(self, raw) -> int:
        pos = int(np.searchsorted(self._sorted, raw))
        if pos < len(self._sorted) and self._sorted[pos] == raw:
            return pos + 1 if self._order is None else int(self._order[pos]) + 1
        return UNKNOWN_ROW

    def from_text(self, text: str):
        """A query-string ID: the text for str IDs; for int IDs a canonical integer (``050`` is refused)."""
        if self.id_type == "str":
            return text
        if not CANONICAL_INT.fullmatch(text) or not _INT64_MIN <= int(text) <= _INT64_MAX:
            raise ApiError(400, f"this model's {self.name} IDs are 64-bit integers written without leading zeros or '+'; not {text!r}")
        return int(text)

    def from_json(self, value, where: str):
        """A JSON-body ID: a JSON number for int IDs, a JSON string for str IDs."""
        if type(value) is (int if self.id_type == "int" else str) and (type(value) is str or _INT64_MIN <= value <= _INT64_MAX):
            return value
        kind = "integers (JSON numbers)" if self.id_type == "int" else "strings (JSON strings)"
        raise ApiError(400, f"{where}: this model's {self.name} IDs are {kind}, got {shown(value)}")


class ServedIndex:
    """The FAISS parts a served model searches (:class:`~collabemb.faiss_parts.Part`, over the view's tables).

    The parts the artifact stores are read back and checked against the view (as
    :meth:`~collabemb.index.SimilarityIndex.from_stored` does); the items and recommend parts it lacks
    are built now, with the default settings when it stores no index, on every core; an exact users part
    (a copy of the vectors: cheap) too, an approximate one on its first query (:meth:`part`).
    """

    def __init__(self, view: ModelView, stored: StoredIndex | None):
        """``view``: the model's tables; ``stored``: the index its artifact stores (None: none)."""
        self.view, self.stored, self._lock = view, stored is not None, threading.Lock()
        self.settings, self._parts = read_stored_parts(stored, view) if stored is not None else (IndexSettings(), {})
        missing = [name for name in ("items", "recommend") if name not in self._parts]
        kind = self.settings.index_type_for(len(view.items))
        if missing and kind != "exact":  # minutes for millions of items: say why the start takes them
            log(f"building the {' and '.join(missing)} {kind} index in memory: the artifact stores none (`collabemb index` stores one)")
        for name in missing:
            self._build(name, os.cpu_count())
        if len(view.users) and self.settings.index_type_for(len(view.users)) == "exact":
            self._build("users", None)

    @property
    def parts(self) -> dict[str, str]:
        """The parts built so far and their index type, e.g. ``{"items": "exact", "recommend": "exact"}``."""
        return {name: part.index_type for name, part in self._parts.items()}

    @property
    def loaded_parts(self) -> dict[str, Part]:
        """The :class:`~collabemb.faiss_parts.Part` of each part read or built so far, by name."""
        return dict(self._parts)

    @property
    def has_unknown_slot(self) -> bool:
        """Whether row 0 can answer unseen IDs: False for vectors imported without one (zeros)."""
        return self.view.identity.row0 != "none"

    def part(self, name: str) -> Part:
        """The part ``name`` (``items``, ``users``, ``recommend``); built once, on its first use, when it is not yet."""
        part = self._parts.get(name)
        if part is None:
            with self._lock:
                part = self._parts.get(name) or self._build(name, None)
        return part

    def _build(self, name: str, threads: int | None) -> Part:
        """Build part ``name`` over the view's table on ``threads`` FAISS threads (None: FAISS's setting); its
        searches then run on FAISS's setting."""
        part = Part.build(name, self.view, dataclasses.replace(self.settings, threads=threads))
        part.settings = self.settings
        self._parts[name] = part
        return part


class Served:
    """Everything one loaded artifact answers from; not changed once made (but for its lazy caches and phase B).

    Phase A (the constructor): ``index``, the FAISS parts; ``view``, the artifact's view without its index entry
    and bytes (read into ``index``: they would only take memory); the tables, metadata and seen items.
    ``fitted``: the torch model of phase B, waited for when read (see the module docstring)."""

    def __init__(self, artifact: Path, view: ModelView, snapshot: str | None, key, card: str | None):
        self.artifact, self.snapshot, self.key, self.card = artifact, snapshot, key, card
        self.loaded_at = time.time()
        self.name = f"{snapshot or artifact} (loaded {iso_time(self.loaded_at)})"
        self.view = dataclasses.replace(view, index=None)
        self.index = ServedIndex(self.view, view.index)
        self.users, self.items = _Table(view, "user"), _Table(view, "item")
        self.tables = {"user": self.users, "item": self.items}
        self.meta, self.seen = _metadata_rows(view, self.items), view.seen_items
        self._lock, self._page = threading.Lock(), None
        self._finished, self._finisher, self._fitted, self._failure = threading.Event(), None, None, None
        self._starting = threading.Lock()

    # --- phase B ------------------------------------------------------------------------------------
    def start_finishing(self) -> None:
        """Start phase B in a thread of its own (once; later calls do nothing)."""
        with self._starting:
            if self._finisher is None:
                self._finisher = threading.Thread(target=self._finish, name="collabemb-phase-b", daemon=True)
                self._finisher.start()

    @property
    def finished(self) -> bool:
        """Whether phase B is over (the torch model ready, or its failure known)."""
        return self._finished.is_set()

    def wait_finished(self) -> None:
        """Block until phase B is over, starting it if nobody has."""
        self.start_finishing()
        self._finished.wait()

    @property
    def failure(self) -> Exception | None:
        """Why phase B failed (None while it runs and once it has succeeded)."""
        return self._failure

    @property
    def fitted(self) -> FittedModel:
        """The :class:`~collabemb.fitted.FittedModel` of phase B, waited for; a 503 if it could not be built."""
        self.wait_finished()
        if self._fitted is None:
            raise ApiError(503, f"the full model could not be loaded ({one_line(self._failure)}); the server's log has the details")
        return self._fitted

    def _finish(self) -> None:
        try:
            with _phase_b_switch.shortened():
                self._load_full_model()
            use_huge_pages(self.big_arrays())
        finally:
            self._finished.set()

    def big_arrays(self) -> list[np.ndarray]:
        """The arrays searches read at random (see :mod:`collabemb.huge_pages`): both tables' vectors and the
        loaded FAISS parts' vectors and graphs."""
        return [t.weights for t in self.tables.values()] + [a for p in self.index.loaded_parts.values() for a in p.big_arrays()]

    def _load_full_model(self) -> None:
        """Phase B (see the module docstring); its failure kept for the requests that need it."""
        try:
            import torch

            from collabemb.artifact import fitted_from_view
            from collabemb.index import SimilarityIndex
            from collabemb.model_card import model_card

            if _one_thread.is_set():
                from threadpoolctl import threadpool_limits

                torch.set_num_threads(1)
                threadpool_limits(1)  # the BLAS loaded since phase A (scipy's, torch's)
            fitted = fitted_from_view(self.view)
            fitted.index = SimilarityIndex.from_parts(fitted, self.index.settings, self.index.loaded_parts)  # the parts served
            warm_fold_in()
            if self.card is None:  # an artifact written before cards: the card of the model as it is
                self.card = model_card(fitted)
            self._fitted = fitted
        except Exception as exc:  # said once here, then by every request that needs the model
            self._failure = exc
            log(f"the full model of {self.name} could not be loaded:\n{traceback.format_exc()}")

    # --- answers ------------------------------------------------------------------------------------
    def part(self, name: str) -> Part:
        """The FAISS part ``name`` (``items``, ``users``, ``recommend``), built once, in a thread, on first use."""
        return self.index.part(name)

    def rows(self, table: str, raws: list, fallback: bool, post: bool = False) -> np.ndarray:
        """(n,) rows of typed raw IDs; an unknown one gets row 0 with ``fallback``, else a 404 naming it."""
        rows = np.array([self.tables[table].row(raw) for raw in raws], dtype=np.int64)
        missing = [raws[j] for j in np.flatnonzero(rows == UNKNOWN_ROW)[:1]]
        if missing and not fallback:
            ask = 'send "fallback": "unknown_slot"' if post else "ask fallback=unknown_slot"
            raise ApiError(404, f"unknown {table} {missing[0]!r}: not in this model; {ask} to answer it from the unknown slot (row 0)")
        if missing and not self.index.has_unknown_slot:
            raise ApiError(404, f"unknown {table} {missing[0]!r}: not in this model, which has no unknown slot to answer it from")
        return rows

    def similar(self, table: str, row: int, k: int) -> list[dict]:
        t, part = self.tables[table], self.part("items" if table == "item" else "users")
        queries, k = part.prepare(t.weights[row : row + 1]), min(k, max(len(t.registry), 1))
        found, scores = part.search(queries, k, stride=t.registry.n_rows + 1, self_rows=np.array([row], dtype=np.int64))
        return self.results(table, found[0], scores[0])

    def seen_rows(self, row: int) -> np.ndarray:
        """The sorted item rows user row ``row`` rated in training (none for a user added since)."""
        indptr = self.seen.indptr if row + 1 < len(self.seen.indptr) else np.zeros(row + 2, np.int64)
        return self.seen.indices[indptr[row] : indptr[row + 1]].astype(np.int64)

    def recommend(self, vectors: np.ndarray, biases: np.ndarray, k: int, rated: np.ndarray | None) -> list[dict]:
        """Top-k items for one user given by its (1, k) vector and (1,) bias, by predicted rating, leaving out
        the sorted unique item rows ``rated`` (for one query the same as ``pairs=``, without their bookkeeping)."""
        part = self.part("recommend")
        p, bu = np.asarray(vectors, dtype=np.float32), np.asarray(biases, dtype=np.float64).reshape(-1)
        k, rated = min(k, max(len(self.items.registry), 1)), rated if rated is not None and len(rated) else None
        found, ip = part.recommend(self.items.weights, self.items.biases, p, k, global_rows=rated)
        scores = rating_of_logits(ip + bu[:, None], self.view.y_range)  # as SimilarityIndex.recommend scores
        return self.results("item", found[0], scores[0])

    def results(self, table: str, rows: np.ndarray, scores: np.ndarray) -> list[dict]:
        rows, scores = rows[rows != UNKNOWN_ROW], scores[rows != UNKNOWN_ROW].tolist()
        ids = self.tables[table].ids[rows - 1].tolist()
        if table == "user":
            return [{"user": i, "score": s, "rank": r} for r, (i, s) in enumerate(zip(ids, scores, strict=True), 1)]
        meta = [self.meta[x] for x in rows.tolist()]
        return [{"item": i, "score": s, "rank": r, **m} for r, (i, s, m) in enumerate(zip(ids, scores, meta, strict=True), 1)]

    def fold_in(self, items: list, ratings: list[float]) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray]:
        """One anonymous user from its ratings: ``(vector (1, k), bias (1,), the query's words, the item rows rated)``.

        A rating model is solved as :func:`~collabemb.coldstart.fold_in_users` solves it (``solve_one`` on the
        known items, ratings as float32), without reading a DataFrame; ALS models, repeated items and ratings
        beyond float32 go through coldstart's functions themselves, on the model of phase B (waited for)."""
        from collabemb.fold_solvers import solve_one  # numba (and torch, through the fitted model): phase B

        identity, r, y_range = self.view.identity, np.asarray(ratings, dtype=np.float64), self.view.y_range
        simple = identity.fold_in == "rating" and identity.weight_decay is not None and y_range is not None
        if simple and len(set(items)) == len(items) and np.all(np.abs(r) <= _FLOAT32_MAX):
            rows = np.array([self.items.row(item) for item in items], dtype=np.int64)
            known, used = rows != UNKNOWN_ROW, rows[rows != UNKNOWN_ROW]
            query = {"source": "fold_in" if len(used) else "unknown_slot", "n_ratings": len(used), "n_ignored": len(rows) - len(used)}
            if not len(used):  # no known item: the unknown user, as fold_in_users answers
                return self.users.weights[:1], self.users.biases[:1], query, used
            r32, wd = r.astype(np.float32).astype(np.float64)[known], identity.weight_decay
            prior = self.view.history_vector(used)  # svdpp: the history the rated items give; None otherwise
            v, b, _, _ = solve_one(self.items.weights[used], self.items.biases[used], r32, weight_decay=wd, y_range=y_range, prior=prior)
            return v.astype(np.float32)[None], np.array([b], dtype=np.float32), query, np.sort(used)
        from collabemb.coldstart import fold_in_als, fold_in_users

        solve = {"rating": fold_in_users, "als": fold_in_als}.get(identity.fold_in)
        if solve is None:
            raise ApiError(400, f"a {identity.family!r} model has no fold-in; send no ratings for the unknown user's answer")
        ids = np.array(items, dtype=np.int64 if self.items.id_type == "int" else object)
        try:
            fold = solve(self.fitted, pd.DataFrame({"item": ids, "rating": r}))
        except (ValueError, TypeError) as exc:
            raise ApiError(400, one_line(exc)) from None
        query = {"source": str(fold.source[0]), "n_ratings": int(fold.n_ratings[0]), "n_ignored": int(fold.n_ignored[0])}
        return fold.vectors, fold.biases, query, np.unique(fold.rated_rows)

    def predict(self, user_rows: np.ndarray, item_rows: np.ndarray) -> list[float]:
        """Predicted ratings of row pairs: the module's forward (phase B), as :meth:`EmbeddingDotBias.predict` computes them."""
        import torch

        module = self.fitted.module
        with torch.no_grad():
            return module(torch.from_numpy(user_rows), torch.from_numpy(item_rows)).float().numpy().tolist()

    def embedding(self, table: str, raw, row: int) -> dict:
        t, known = self.tables[table], row != UNKNOWN_ROW
        source, vector, bias = "known" if known else "unknown_slot", t.weights[row].tolist(), float(t.biases[row])
        return {"table": table, "id": raw, "row": row, "known": known, "source": source, "vector": vector, "bias": bias}

    def page(self) -> str:
        """The explorer page of the model of phase B (waited for), built once per loaded model."""
        fitted = self.fitted
        with self._lock:
            if self._page is None:
                from collabemb.explorer import explorer_html

                self._page = explorer_html(fitted, static=False)
            return self._page

    def info(self) -> dict:
        """``/v1/info``; the card of an artifact that stores none is phase B's (None before it)."""
        view, index = self.view, self.index
        info = {"artifact": str(self.artifact), "family": view.identity.family, "n_users": len(view.users), "n_items": len(view.items)}
        info |= {"n_factors": view.n_factors, "y_range": list(view.y_range) if view.y_range is not None else None}
        info |= {"id_type": {"user": view.users.id_type, "item": view.items.id_type}, "row0": view.identity.row0}
        info["index"] = {"metric": index.settings.metric, "parts": index.parts, "stored": index.stored}
        return info | {"loaded_at": iso_time(self.loaded_at), "model_card": self.card}


def load_served(artifact: Path, *, unless=None) -> Served | None:
    """Phase A of the artifact's current snapshot: read and checked as :func:`~collabemb.artifact.load_model`
    reads it (:func:`~collabemb.model_view.read_model_view`, no torch), its index ready; None when the
    snapshot's key (name and manifest) is ``unless``: nothing new to load. Phase B is not started."""
    artifact = Path(artifact).resolve()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_snapshot(artifact, "artifact", also=("checkpoint",)) as snapshot:
            name = snapshot.directory.name if snapshot.verified else None
            key = (name, json.dumps(snapshot.files, sort_keys=True)) if snapshot.verified else None
            if key is not None and key == unless:
                return None
            view = read_model_view(snapshot)
            card = snapshot.read(MODEL_CARD_FILE, max_bytes=MODEL_CARD_MAX_BYTES) if snapshot.has(MODEL_CARD_FILE) else None
        served = Served(artifact, view, name, key, card.decode("utf-8", "replace") if card is not None else None)
    for warning in caught:
        log(f"warning: {one_line(warning.message)}")
    return served


def _metadata_rows(view: ModelView, items: _Table) -> list[dict]:
    """One JSON-ready dict of item metadata per item row (None where a row has no metadata)."""
    meta = view.item_metadata
    columns = [col for col in meta.columns if str(col) not in _OMITTED]
    out = [{str(col): None for col in columns}] * items.registry.n_rows
    if columns and len(meta):
        values = [[_plain(v) for v in meta[col].tolist()] for col in columns]
        for j, row in enumerate(items.registry.encode(meta["item"]).tolist()):
            if row != UNKNOWN_ROW:
                out[row] = {str(col): column[j] for col, column in zip(columns, values, strict=True)}
    return out


def _plain(value):
    """A metadata value as JSON can hold it: missing values and non-finite floats become None."""
    value = value.item() if isinstance(value, np.generic) else value
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray | list | tuple | dict):
        return {str(k): _plain(v) for k, v in value.items()} if isinstance(value, dict) else [_plain(v) for v in value]
    if value is pd.NA or value is pd.NaT:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def shown(value) -> str:
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str | int | float | bool | list | dict | type(None)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def one_line(exc) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def iso_time(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


__all__ = ["ApiError", "Served", "ServedIndex", "load_served", "log", "one_thread_each", "warm_fold_in"]
