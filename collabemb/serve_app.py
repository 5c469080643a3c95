"""The HTTP API of ``collabemb serve`` (docs/serve-api.md): a Starlette app over one loaded artifact.

A :class:`ModelHolder` holds the loaded model (a :class:`Served`); a request takes it once, at its start,
and a reload swaps a new one in by one assignment, so a request in flight finishes on the model it
started with. The hot paths search the index's FAISS parts on table rows, with the parts, exclusions
and scores of :class:`~collabemb.index.SimilarityIndex`'s queries but no DataFrame (a raw ID found by
binary search, item metadata made JSON-ready at load), inline on the event loop; a reload, a first
build of an index part and the explorer page run in a thread. Every refusal is a 4xx in JSON.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
import pandas as pd
import torch
from scipy.special import expit
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from collabemb.artifact import MODEL_CARD_FILE, MODEL_CARD_MAX_BYTES, read_model_files
from collabemb.coldstart import fold_in_als, fold_in_users, solve_one
from collabemb.fitted import FittedModel, StoredIndex
from collabemb.index import SimilarityIndex, index_of
from collabemb.model_card import model_card
from collabemb.registry import CANONICAL_INT, UNKNOWN_ROW
from collabemb.serve_metrics import CONTENT_TYPE, MeasuredApp, Metrics
from collabemb.store import open_snapshot

K_DEFAULT, K_MAX = 10, 1000
MAX_BODY_BYTES = 1 << 20
MAX_ENTRIES = 10_000  # pairs, IDs or ratings in one POST
TOKEN_COOKIE = "collabemb_token"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_OMITTED = ("item", "score", "rank")  # metadata columns a result's own keys take precedence over


class ApiError(Exception):
    """A request the API refuses: the HTTP status and one readable sentence."""

    def __init__(self, status: int, message: str):
        super().__init__(status, message)
        self.status, self.message = status, message


def log(message: str) -> None:
    print(f"collabemb serve: {message}", file=sys.stderr, flush=True)


class _Table:
    """One table of a served model: its registry and vectors, and the lookup and typing of one raw ID."""

    def __init__(self, fitted: FittedModel, name: str):
        self.name, self.registry = name, fitted.registry(name)
        self.id_type, self.ids = self.registry.id_type, self.registry.ids
        self.weights, self.biases = fitted.tables(name)
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
        raise ApiError(400, f"{where}: this model's {self.name} IDs are {kind}, got {_shown(value)}")


class Served:
    """Everything one loaded artifact answers from; not changed once made (but for its lazy caches)."""

    def __init__(self, artifact: Path, fitted: FittedModel, snapshot: str | None, key, card: str):
        self.artifact, self.fitted, self.snapshot, self.key, self.card = artifact, fitted, snapshot, key, card
        self.loaded_at = time.time()
        self.name = f"{snapshot or artifact} (loaded {_iso(self.loaded_at)})"
        self.index_stored = isinstance(fitted.index, StoredIndex)
        self.index: SimilarityIndex = index_of(fitted)
        missing = [name for name in ("items", "recommend") if name not in self.index.parts]
        kind = self.index.settings.index_type_for(len(fitted.items))
        if missing and kind != "exact":  # minutes for millions of items: say why the start takes them
            log(f"building the {' and '.join(missing)} {kind} index in memory: the artifact stores none (`collabemb index` stores one)")
        self.index.threads = os.cpu_count()  # what the artifact lacks is built now, on every core
        self.index.build("items", "recommend")
        self.index.threads = None
        self.users, self.items = _Table(fitted, "user"), _Table(fitted, "item")
        self.tables = {"user": self.users, "item": self.items}
        if len(self.users.registry) and self.index.settings.index_type_for(len(self.users.registry)) == "exact":
            self.index.build("users")  # a copy of the vectors: cheap; an approximate one is built on its first query
        self.meta, self.seen = _metadata_rows(fitted, self.items), fitted.seen_items
        self._lock, self._page = threading.Lock(), None

    def part(self, name: str):
        """The FAISS part ``name`` (``items``, ``users``, ``recommend``), built once, in a thread, on first use."""
        if name in self.index.parts:
            return self.index.part(name)
        with self._lock:
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
        module, part = self.fitted.module, self.part("recommend")
        p, bu = np.asarray(vectors, dtype=np.float32), np.asarray(biases, dtype=np.float64).reshape(-1)
        k, rated = min(k, max(len(self.items.registry), 1)), rated if rated is not None and len(rated) else None
        found, ip = part.search(part.recommend_queries(p), k, stride=self.items.registry.n_rows + 1, global_rows=rated)
        if part.lifted:  # L2 distances came back: score the candidates exactly
            found, ip = part.rescore(module, p, found)
        logits = ip.astype(np.float64) + bu[:, None]
        if module.y_range is None:
            return self.results("item", found[0], logits[0].astype(np.float32))
        lo, hi = module.y_range
        return self.results("item", found[0], (lo + (hi - lo) * expit(logits[0])).astype(np.float32))

    def results(self, table: str, rows: np.ndarray, scores: np.ndarray) -> list[dict]:
        rows, scores = rows[rows != UNKNOWN_ROW], scores[rows != UNKNOWN_ROW].tolist()
        ids = self.tables[table].ids[rows - 1].tolist()
        if table == "user":
            return [{"user": i, "score": s, "rank": r} for r, (i, s) in enumerate(zip(ids, scores, strict=True), 1)]
        meta = [self.meta[x] for x in rows.tolist()]
        return [{"item": i, "score": s, "rank": r, **m} for r, (i, s, m) in enumerate(zip(ids, scores, meta, strict=True), 1)]

    def fold_in(self, items: list, ratings: list[float]) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray]:
        """One anonymous user from its ratings: ``(vector (1, k), bias (1,), the query's words, the item rows rated)``.

        A rating model is solved as :func:`~collabemb.coldstart.fold_in_users` solves it (:func:`solve_one` on the
        known items, ratings as float32), without reading a DataFrame; ALS models, repeated items and ratings
        beyond float32 go through coldstart's functions themselves."""
        identity, r, y_range = self.fitted.identity, np.asarray(ratings, dtype=np.float64), self.fitted.y_range
        simple = identity.fold_in == "rating" and identity.weight_decay is not None and y_range is not None
        if simple and len(set(items)) == len(items) and np.all(np.abs(r) <= _FLOAT32_MAX):
            rows = np.array([self.items.row(item) for item in items], dtype=np.int64)
            known, used = rows != UNKNOWN_ROW, rows[rows != UNKNOWN_ROW]
            query = {"source": "fold_in" if len(used) else "unknown_slot", "n_ratings": len(used), "n_ignored": len(rows) - len(used)}
            if not len(used):  # no known item: the unknown user, as fold_in_users answers
                return self.users.weights[:1], self.users.biases[:1], query, used
            r32, wd = r.astype(np.float32).astype(np.float64)[known], identity.weight_decay
            prior = self.fitted.history_vector(used)  # svdpp: the history the rated items give; None otherwise
            v, b, _, _ = solve_one(self.items.weights[used], self.items.biases[used], r32, weight_decay=wd, y_range=y_range, prior=prior)
            return v.astype(np.float32)[None], np.array([b], dtype=np.float32), query, np.sort(used)
        solve = {"rating": fold_in_users, "als": fold_in_als}.get(identity.fold_in)
        if solve is None:
            raise ApiError(400, f"a {identity.family!r} model has no fold-in; send no ratings for the unknown user's answer")
        ids = np.array(items, dtype=np.int64 if self.items.id_type == "int" else object)
        try:
            fold = solve(self.fitted, pd.DataFrame({"item": ids, "rating": r}))
        except (ValueError, TypeError) as exc:
            raise ApiError(400, _one_line(exc)) from None
        query = {"source": str(fold.source[0]), "n_ratings": int(fold.n_ratings[0]), "n_ignored": int(fold.n_ignored[0])}
        return fold.vectors, fold.biases, query, np.unique(fold.rated_rows)

    def predict(self, user_rows: np.ndarray, item_rows: np.ndarray) -> list[float]:
        """Predicted ratings of row pairs: the module's forward, as :meth:`EmbeddingDotBias.predict` computes them."""
        with torch.no_grad():
            return self.fitted.module(torch.from_numpy(user_rows), torch.from_numpy(item_rows)).float().numpy().tolist()

    def embedding(self, table: str, raw, row: int) -> dict:
        t, known = self.tables[table], row != UNKNOWN_ROW
        source, vector, bias = "known" if known else "unknown_slot", t.weights[row].tolist(), float(t.biases[row])
        return {"table": table, "id": raw, "row": row, "known": known, "source": source, "vector": vector, "bias": bias}

    def page(self) -> str:
        with self._lock:  # built once per loaded model
            if self._page is None:
                from collabemb.explorer import explorer_html

                self._page = explorer_html(self.fitted, static=False)
            return self._page

    def info(self) -> dict:
        f, index = self.fitted, self.index
        info = {"artifact": str(self.artifact), "family": f.identity.family, "n_users": len(f.users), "n_items": len(f.items)}
        info |= {"n_factors": f.n_factors, "y_range": list(f.y_range) if f.y_range is not None else None}
        info |= {"id_type": {"user": f.users.id_type, "item": f.items.id_type}, "row0": f.identity.row0}
        info["index"] = {"metric": index.settings.metric, "parts": index.parts, "stored": self.index_stored}
        return info | {"loaded_at": _iso(self.loaded_at), "model_card": self.card}


def load_served(artifact: Path, *, unless=None) -> Served | None:
    """The artifact's current snapshot, read and checked as :func:`~collabemb.artifact.load_model` reads it, its
    index ready; None when the snapshot's key (name and manifest) is ``unless``: nothing new to load."""
    artifact = Path(artifact).resolve()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_snapshot(artifact, "artifact", also=("checkpoint",)) as snapshot:
            name = snapshot.directory.name if snapshot.verified else None
            key = (name, json.dumps(snapshot.files, sort_keys=True)) if snapshot.verified else None
            if key is not None and key == unless:
                return None
            fitted = read_model_files(snapshot)
            card = snapshot.read(MODEL_CARD_FILE, max_bytes=MODEL_CARD_MAX_BYTES) if snapshot.has(MODEL_CARD_FILE) else None
        served = Served(artifact, fitted, name, key, card.decode("utf-8", "replace") if card is not None else model_card(fitted))
    for warning in caught:
        log(f"warning: {_one_line(warning.message)}")
    return served


class ModelHolder:
    """The model being served (``current``) and its reloads, one at a time."""

    def __init__(self, artifact: Path, metrics: Metrics):
        self.artifact, self.metrics, self._lock = Path(artifact), metrics, threading.Lock()
        self.current: Served = load_served(self.artifact)
        metrics.model_loaded(self.current.loaded_at)

    def reload(self, *, force: bool = True) -> dict:
        """Load the artifact again and swap it in (``force=False``: unless its snapshot is the one served); a
        dict with ``status`` ``reloaded``, ``unchanged`` or ``failed`` (the old model kept, ``message`` says why)."""
        with self._lock:
            old = self.current
            try:
                new = load_served(self.artifact, unless=None if force else old.key)
            except Exception as exc:
                if not isinstance(exc, ValueError | TypeError | KeyError | OSError | MemoryError):
                    traceback.print_exc()
                self.metrics.reloaded("failed")
                log(message := f"reload failed, still serving {old.name}: {_one_line(exc)}")
                return {"status": "failed", "message": message}
            if new is None:
                self.metrics.reloaded("unchanged")
                log(f"reload: {old.snapshot} is still the artifact's snapshot; nothing to do")
                return {"status": "unchanged", "loaded_at": _iso(old.loaded_at), "snapshot": old.snapshot}
            self.current = new  # one assignment: a request has the old model or the new one, never a mix
            self.metrics.reloaded("reloaded")
            self.metrics.model_loaded(new.loaded_at)
            log(f"reloaded {self.artifact}: now serving {new.name}, {len(new.users.registry)} users, {len(new.items.registry)} items")
            return {"status": "reloaded", "loaded_at": _iso(new.loaded_at), "snapshot": new.snapshot}

    def reload_soon(self) -> None:
        """Reload in a thread of its own, unless the snapshot is the one served (what SIGHUP does)."""
        threading.Thread(target=self.reload, kwargs={"force": False}, name="collabemb-reload", daemon=True).start()


class _Api:
    """The endpoints (docs/serve-api.md), each answering from ``holder.current`` as it was when the request came."""

    def __init__(self, holder: ModelHolder, metrics: Metrics, token: str | None, notify: Callable[[], None] | None):
        self.holder, self.metrics, self.token, self.notify = holder, metrics, token, notify

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def info(self, request: Request) -> Response:
        _params(request, ())
        return JSONResponse(self.holder.current.info())

    async def prometheus(self, request: Request) -> Response:
        _params(request, ())
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def similar(self, request: Request) -> Response:
        served, p = self.holder.current, _params(request, ("item", "user", "k", "fallback"), one_of=("item", "user"))
        table = "item" if "item" in p else "user"
        raw, k = served.tables[table].from_text(p[table]), _k(p.get("k"))
        row = int(served.rows(table, [raw], _fallback(p.get("fallback")))[0])
        if table == "user" and "users" not in served.index.parts:
            await run_in_threadpool(served.part, "users")  # an approximate index: built once, off the event loop
        query = {table: raw, "source": "known" if row else "unknown_slot"}
        return JSONResponse({"query": query, "results": served.similar(table, row, k)})

    async def recommend(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._recommend_from_ratings(request)
        served, p = self.holder.current, _params(request, ("user", "k", "include_seen", "fallback"), ("user",))
        raw, k, include_seen = served.users.from_text(p["user"]), _k(p.get("k")), _flag(p.get("include_seen", False), "include_seen")
        row = int(served.rows("user", [raw], _fallback(p.get("fallback")))[0])
        rated = None if include_seen or row == UNKNOWN_ROW else served.seen_rows(row)  # row 0 has seen nothing
        if rated is not None and not len(served.seen):
            raise ApiError(400, "this model stores no training pairs, so what a user rated cannot be left out; ask include_seen=true")
        results = served.recommend(served.users.weights[row : row + 1], served.users.biases[row : row + 1], k, rated)
        return JSONResponse({"query": {"user": raw, "source": "known" if row else "unknown_slot"}, "results": results})

    async def _recommend_from_ratings(self, request: Request) -> Response:
        body = await _json_body(request, ("ratings", "k", "include_seen"))
        k, include_seen = _k(body.get("k"), text=False), _flag(body.get("include_seen", False), '"include_seen"', text=False)
        served = self.holder.current
        ratings = _entries(body, "ratings", ("item", "rating"))
        if not ratings:  # no history: the unknown user (row 0), who has seen nothing
            results = served.recommend(served.users.weights[:1], served.users.biases[:1], k, None)
            return JSONResponse({"query": {"source": "anonymous", "n_ratings": 0, "n_ignored": 0}, "results": results})
        items = [served.items.from_json(entry["item"], f"ratings[{j}].item") for j, entry in enumerate(ratings)]
        values = [_rating(entry["rating"], f"ratings[{j}].rating") for j, entry in enumerate(ratings)]
        vector, bias, query, rated = served.fold_in(items, values)
        return JSONResponse({"query": query, "results": served.recommend(vector, bias, k, None if include_seen else rated)})

    async def predict(self, request: Request) -> Response:
        post = request.method == "POST"
        if post:
            body = await _json_body(request, ("pairs", "fallback"))
            served, pairs = self.holder.current, _entries(body, "pairs", ("user", "item"))
            users = [served.users.from_json(pair["user"], f"pairs[{j}].user") for j, pair in enumerate(pairs)]
            items = [served.items.from_json(pair["item"], f"pairs[{j}].item") for j, pair in enumerate(pairs)]
        else:
            served, body = self.holder.current, _params(request, ("user", "item", "fallback"), ("user", "item"))
            users, items = [served.users.from_text(body["user"])], [served.items.from_text(body["item"])]
        fallback = _fallback(body.get("fallback"))
        u, i = served.rows("user", users, fallback, post), served.rows("item", items, fallback, post)
        keys, columns = ("user", "item", "prediction", "user_known", "item_known"), (users, items, served.predict(u, i) if len(u) else [])
        results = [dict(zip(keys, row, strict=True)) for row in zip(*columns, (u != 0).tolist(), (i != 0).tolist(), strict=True)]
        return JSONResponse({"results": results} if post else results[0])

    async def embedding(self, request: Request) -> Response:
        post = request.method == "POST"
        if post:
            body = await _json_body(request, ("table", "ids", "fallback"))
            served, table = self.holder.current, body.get("table")
            if table not in ("user", "item"):
                raise ApiError(400, f'"table" must be "user" or "item", got {_shown(table)}')
            raws = [served.tables[table].from_json(v, f"ids[{j}]") for j, v in enumerate(_entries(body, "ids"))]
        else:
            served, body = self.holder.current, _params(request, ("item", "user", "fallback"), one_of=("item", "user"))
            table = "item" if "item" in body else "user"
            raws = [served.tables[table].from_text(body[table])]
        rows = served.rows(table, raws, _fallback(body.get("fallback")), post).tolist()
        results = [served.embedding(table, raw, row) for raw, row in zip(raws, rows, strict=True)]
        return JSONResponse({"table": table, "results": results} if post else results[0])

    async def seen(self, request: Request) -> Response:
        served = self.holder.current
        raw = served.users.from_text(_params(request, ("user",), ("user",))["user"])
        row = int(served.rows("user", [raw], False)[0])
        if not len(served.seen):
            raise ApiError(404, "this model stores no training pairs: what each user rated is not known to it")
        item_rows = served.seen_rows(row)
        return JSONResponse({"user": raw, "items": served.items.ids[item_rows - 1].tolist()})

    async def reload(self, request: Request) -> Response:
        _params(request, ())
        result = await run_in_threadpool(self.holder.reload, force=True)
        if result["status"] == "failed":
            raise ApiError(409, result["message"])
        if self.notify is not None:
            self.notify()
        return JSONResponse({"status": "reloaded", "loaded_at": result["loaded_at"], "snapshot": result["snapshot"]})

    async def page(self, request: Request) -> Response:
        p = _params(request, ("token",))
        try:
            html = await run_in_threadpool(self.holder.current.page)
        except ImportError as exc:
            raise ApiError(503, f"the explorer page is not available in this installation ({_one_line(exc)})") from None
        response = HTMLResponse(html)
        if self.token is not None and "token" in p:  # the guard has checked it: keep it for the page's own requests
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict", path="/")
        return response


def _params(request: Request, allowed: tuple[str, ...], required: tuple[str, ...] = (), one_of: tuple[str, ...] = ()) -> dict[str, str]:
    """The query parameters: each one this endpoint takes, each at most once, the ``required`` ones and one of ``one_of`` there."""
    out: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key in out:
            raise ApiError(400, f"parameter {key!r} is given twice")
        if key not in allowed:
            raise ApiError(400, f"unknown parameter {key!r}: {request.url.path} takes {', '.join(allowed) or 'no parameters'}")
        out[key] = value
    missing = [name for name in required if name not in out]
    if missing:
        raise ApiError(400, f"missing parameter {missing[0]!r}")
    if one_of and sum(name in out for name in one_of) != 1:
        raise ApiError(400, f"give exactly one of {' or '.join(f'{name}=ID' for name in one_of)}")
    return out


def _k(value, *, text: bool = True) -> int:
    """``k`` from a query string (``text``) or a JSON body (a number): 1..1000, default 10."""
    value = int(value) if text and isinstance(value, str) and CANONICAL_INT.fullmatch(value) and len(value) < 8 else value
    if value is not None and (type(value) is not int or not 1 <= value <= K_MAX):
        raise ApiError(400, f"k must be an integer from 1 to {K_MAX}, got {_shown(value)}")
    return K_DEFAULT if value is None else value


def _fallback(value) -> bool:
    if value not in (None, "raise", "unknown_slot"):
        raise ApiError(400, f"fallback must be 'unknown_slot' (answer unknown IDs from row 0) or 'raise', got {_shown(value)}")
    return value == "unknown_slot"


def _flag(value, name: str, *, text: bool = True) -> bool:
    """A flag: true / false (or 1 / 0) in a query string (``text``), a JSON boolean in a body."""
    value = {"true": True, "1": True, "false": False, "0": False}.get(value, value) if text and isinstance(value, str) else value
    if type(value) is not bool:
        raise ApiError(400, f"{name} must be true or false, got {_shown(value)}")
    return value


def _rating(value, where: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ApiError(400, f"{where}: a rating is a finite JSON number, got {_shown(value)}")
    return float(value)


async def _json_body(request: Request, fields: tuple[str, ...]) -> dict:
    """The request body: a JSON object of at most 1 MiB with no field but ``fields``."""
    length, too_big = request.headers.get("content-length", ""), f"the request body may hold at most {MAX_BODY_BYTES} bytes (1 MiB)"
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise ApiError(413, too_big)
    chunks, size = [], 0
    async for chunk in request.stream():
        chunks.append(chunk)
        if (size := size + len(chunk)) > MAX_BODY_BYTES:
            raise ApiError(413, too_big)
    try:
        body = json.loads(b"".join(chunks))
    except RecursionError:
        raise ApiError(400, "the request body is JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of too many digits
        raise ApiError(400, f"the request body is not valid JSON ({_one_line(exc)})") from None
    _check_fields(body, fields, "the request body")
    return body


def _check_fields(value, fields: tuple[str, ...], where: str, *, required: bool = False) -> None:
    if not isinstance(value, dict):
        raise ApiError(400, f"{where} must be a JSON object, got {_shown(value)}")
    extra = [key for key in value if key not in fields]
    missing = [key for key in fields if key not in value] if required else []
    if extra:
        raise ApiError(400, f"{where}: unknown field {extra[0]!r}; expected {', '.join(fields)}")
    if missing:
        raise ApiError(400, f"{where}: missing field {missing[0]!r}")


def _entries(body: dict, name: str, fields: tuple[str, ...] = ()) -> list:
    """The array ``body[name]`` (default empty) of at most 10,000 entries; objects with ``fields`` when given."""
    value = body.get(name, [])
    if not isinstance(value, list):
        raise ApiError(400, f'"{name}" must be a JSON array, got {_shown(value)}')
    if len(value) > MAX_ENTRIES:
        raise ApiError(413, f'"{name}" holds {len(value)} entries; at most {MAX_ENTRIES} are answered in one request')
    for j, entry in enumerate(value if fields else ()):
        _check_fields(entry, fields, f"{name}[{j}]", required=True)
    return value


def _metadata_rows(fitted: FittedModel, items: _Table) -> list[dict]:
    """One JSON-ready dict of item metadata per item row (None where a row has no metadata)."""
    meta = fitted.item_metadata
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


def _shown(value) -> str:
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str | int | float | bool | list | dict | type(None)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(exc) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": {"status": status, "message": message}}, ensure_ascii=False).encode()


async def _error(request: Request, exc: Exception) -> Response:
    """An :class:`ApiError`, or Starlette's 404 / 405, as the API's JSON error."""
    status, headers = (exc.status, None) if isinstance(exc, ApiError) else (exc.status_code, exc.headers)
    if isinstance(exc, ApiError):
        message = exc.message
    elif status == 405:
        message = f"{request.method} is not allowed on {request.url.path}; it answers {(headers or {}).get('Allow', 'other methods')}"
    else:
        message = f"no such path: {request.url.path}" if status == 404 else _one_line(exc.detail)
    return Response(_error_body(status, message), status, headers=headers, media_type="application/json")


class _Guard:
    """Middleware: with a token, every request but ``GET /healthz`` carries it (header, cookie, or ``/?token=``)."""

    def __init__(self, app, *, token: str | None):
        self.app, self.token = app, token.encode() if token is not None else None

    async def __call__(self, scope, receive, send) -> None:
        refusal = self._refusal(scope) if scope["type"] == "http" else None
        if refusal is None:
            return await self.app(scope, receive, send)
        await Response(_error_body(401, refusal), 401, {"WWW-Authenticate": "Bearer"}, "application/json")(scope, receive, send)

    def _refusal(self, scope) -> str | None:
        """Why a request is refused for want of the token; None when it may pass."""
        if self.token is None or scope["path"] == "/healthz":
            return None
        given, cookie = [], TOKEN_COOKIE.encode() + b"="
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                given.append(value[7:].strip())
            elif name == b"cookie":
                given += [v.strip()[len(cookie) :] for v in value.split(b";") if v.strip().startswith(cookie)]
        if scope["path"] == "/":
            given += [v.encode() for k, v in parse_qsl(scope["query_string"].decode("latin-1")) if k == "token"]
        if any(hmac.compare_digest(g, self.token) for g in given):
            return None
        return "wrong token" if given else "this server needs a token: send the header 'Authorization: Bearer <token>'"


def create_app(artifact: Path, *, token: str | None, notify: Callable[[], None] | None = None) -> Starlette:
    """The API of docs/serve-api.md over ``artifact``, loaded now (a bad one raises here); ``token``: what every
    request but ``GET /healthz`` must carry; ``notify``: called after ``POST /v1/reload`` (``--workers N``: the
    other workers reload). ``app.state.holder`` is the :class:`ModelHolder` (SIGHUP: its ``reload_soon``)."""
    get, both = ["GET"], ["GET", "POST"]  # the hot routes first: a request is matched against them in this order
    table = {"/v1/similar": ("similar", get), "/v1/recommend": ("recommend", both), "/v1/predict": ("predict", both)}
    table |= {"/v1/embedding": ("embedding", both), "/v1/seen": ("seen", get), "/v1/info": ("info", get), "/healthz": ("healthz", get)}
    table |= {"/metrics": ("prometheus", get), "/": ("page", get), "/v1/reload": ("reload", ["POST"])}
    metrics = Metrics(set(table))
    holder = ModelHolder(Path(artifact), metrics)
    api = _Api(holder, metrics, token, notify)
    routes = [Route(path, getattr(api, name), methods=methods) for path, (name, methods) in table.items()]
    body_500 = _error_body(500, "internal error (a bug in collabemb serve); the server's log has the details")
    app = Starlette(
        routes=routes,
        middleware=[Middleware(MeasuredApp, metrics=metrics, body_500=body_500), Middleware(_Guard, token=token)],
        exception_handlers={ApiError: _error, HTTPException: _error},
    )
    app.router.redirect_slashes = False  # /v1/similar/ is no path of the API (404), not a redirect
    app.state.holder = holder
    return app


__all__ = ["ApiError", "ModelHolder", "Served", "create_app", "load_served"]
