"""The HTTP API of ``collabemb serve`` (docs/serve-api.md): a Starlette app over one loaded artifact.

A :class:`ModelHolder` holds the loaded model (a :class:`~collabemb.serve_model.Served`); a request takes
it once, at its start, and a reload swaps a new one in by one assignment, so a request in flight finishes
on the model it started with. The hot paths search the index's FAISS parts on table rows, with the parts,
exclusions and scores of :class:`~collabemb.index.SimilarityIndex`'s queries but no DataFrame (a raw ID
found by binary search, item metadata made JSON-ready at load), inline on the event loop; a reload, a
first build of an index part and the explorer page run in a thread. A model answers searches from its
phase A (no torch); predictions, fold-ins, the explorer page wait, off the event loop, for its phase B
(:mod:`collabemb.serve_model`). Every refusal is a 4xx in JSON.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import math
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from collabemb.registry import CANONICAL_INT, UNKNOWN_ROW
from collabemb.serve_metrics import CONTENT_TYPE, MeasuredApp, Metrics
from collabemb.serve_model import ApiError, Served, iso_time, load_served, log, one_line, shown

K_DEFAULT, K_MAX = 10, 1000
MAX_BODY_BYTES = 1 << 20
MAX_ENTRIES = 10_000  # pairs, IDs or ratings in one POST
TOKEN_COOKIE = "collabemb_token"


class ModelHolder:
    """The model being served (``current``) and its reloads, one at a time."""

    def __init__(self, artifact: Path, metrics: Metrics):
        self.artifact, self.metrics, self._lock = Path(artifact), metrics, threading.Lock()
        self.current: Served = load_served(self.artifact)  # phase A; the app's start begins phase B
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
                log(message := f"reload failed, still serving {old.name}: {one_line(exc)}")
                return {"status": "failed", "message": message}
            if new is None:
                self.metrics.reloaded("unchanged")
                log(f"reload: {old.snapshot} is still the artifact's snapshot; nothing to do")
                return {"status": "unchanged", "loaded_at": iso_time(old.loaded_at), "snapshot": old.snapshot}
            self.current = new  # one assignment: a request has the old model or the new one, never a mix
            new.start_finishing()  # its phase B, as at the start: the requests that need it wait for it
            self.metrics.reloaded("reloaded")
            self.metrics.model_loaded(new.loaded_at)
            log(f"reloaded {self.artifact}: now serving {new.name}, {len(new.users.registry)} users, {len(new.items.registry)} items")
            return {"status": "reloaded", "loaded_at": iso_time(new.loaded_at), "snapshot": new.snapshot}

    def reload_soon(self) -> None:
        """Reload in a thread of its own, unless the snapshot is the one served (what SIGHUP does)."""
        threading.Thread(target=self.reload, kwargs={"force": False}, name="collabemb-reload", daemon=True).start()


class _Api:
    """The endpoints (docs/serve-api.md), each answering from ``holder.current`` as it was when the request came."""

    def __init__(self, holder: ModelHolder, metrics: Metrics, token: str | None, notify: Callable[[], None] | None):
        self.holder, self.metrics, self.token, self.notify = holder, metrics, token, notify

    async def healthz(self, request: Request) -> Response:
        served = self.holder.current
        full = "loading" if not served.finished else "failed" if served.failure is not None else "ready"
        return JSONResponse({"status": "ok", "full_model": full})

    async def info(self, request: Request) -> Response:
        _params(request, ())
        served = self.holder.current
        if served.card is None:  # an artifact without a card: phase B writes it
            await _finished(served)
        return JSONResponse(served.info())

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
        await _finished(served)  # the compiled solver (and for some models coldstart's fold-ins): phase B
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
        if len(u):
            await _finished(served)  # the module's forward: phase B
        keys, columns = ("user", "item", "prediction", "user_known", "item_known"), (users, items, served.predict(u, i) if len(u) else [])
        results = [dict(zip(keys, row, strict=True)) for row in zip(*columns, (u != 0).tolist(), (i != 0).tolist(), strict=True)]
        return JSONResponse({"results": results} if post else results[0])

    async def embedding(self, request: Request) -> Response:
        post = request.method == "POST"
        if post:
            body = await _json_body(request, ("table", "ids", "fallback"))
            served, table = self.holder.current, body.get("table")
            if table not in ("user", "item"):
                raise ApiError(400, f'"table" must be "user" or "item", got {shown(table)}')
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
            raise ApiError(503, f"the explorer page is not available in this installation ({one_line(exc)})") from None
        response = HTMLResponse(html)
        if self.token is not None and "token" in p:  # the guard has checked it: keep it for the page's own requests
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict", path="/")
        return response


async def _finished(served: Served) -> None:
    """Wait, off the event loop, for the served model's phase B (at once when it is over; started if it is not)."""
    if not served.finished:
        await run_in_threadpool(served.wait_finished)


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
        raise ApiError(400, f"k must be an integer from 1 to {K_MAX}, got {shown(value)}")
    return K_DEFAULT if value is None else value


def _fallback(value) -> bool:
    if value not in (None, "raise", "unknown_slot"):
        raise ApiError(400, f"fallback must be 'unknown_slot' (answer unknown IDs from row 0) or 'raise', got {shown(value)}")
    return value == "unknown_slot"


def _flag(value, name: str, *, text: bool = True) -> bool:
    """A flag: true / false (or 1 / 0) in a query string (``text``), a JSON boolean in a body."""
    value = {"true": True, "1": True, "false": False, "0": False}.get(value, value) if text and isinstance(value, str) else value
    if type(value) is not bool:
        raise ApiError(400, f"{name} must be true or false, got {shown(value)}")
    return value


def _rating(value, where: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ApiError(400, f"{where}: a rating is a finite JSON number, got {shown(value)}")
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
        raise ApiError(400, f"the request body is not valid JSON ({one_line(exc)})") from None
    _check_fields(body, fields, "the request body")
    return body


def _check_fields(value, fields: tuple[str, ...], where: str, *, required: bool = False) -> None:
    if not isinstance(value, dict):
        raise ApiError(400, f"{where} must be a JSON object, got {shown(value)}")
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
        raise ApiError(400, f'"{name}" must be a JSON array, got {shown(value)}')
    if len(value) > MAX_ENTRIES:
        raise ApiError(413, f'"{name}" holds {len(value)} entries; at most {MAX_ENTRIES} are answered in one request')
    for j, entry in enumerate(value if fields else ()):
        _check_fields(entry, fields, f"{name}[{j}]", required=True)
    return value


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
        message = f"no such path: {request.url.path}" if status == 404 else one_line(exc.detail)
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
    """The API of docs/serve-api.md over ``artifact``, loaded now (phase A of :mod:`collabemb.serve_model`: a bad
    artifact raises here) and finished in the background once the app starts (its lifespan starts phase B);
    ``token``: what every request but ``GET /healthz`` must carry; ``notify``: called after ``POST /v1/reload``
    (``--workers N``: the other workers reload). ``app.state.holder`` is the :class:`ModelHolder` (SIGHUP: its
    ``reload_soon``)."""
    get, both = ["GET"], ["GET", "POST"]  # the hot routes first: a request is matched against them in this order
    table = {"/v1/similar": ("similar", get), "/v1/recommend": ("recommend", both), "/v1/predict": ("predict", both)}
    table |= {"/v1/embedding": ("embedding", both), "/v1/seen": ("seen", get), "/v1/info": ("info", get), "/healthz": ("healthz", get)}
    table |= {"/metrics": ("prometheus", get), "/": ("page", get), "/v1/reload": ("reload", ["POST"])}
    metrics = Metrics(set(table))
    holder = ModelHolder(Path(artifact), metrics)
    api = _Api(holder, metrics, token, notify)
    routes = [Route(path, getattr(api, name), methods=methods) for path, (name, methods) in table.items()]
    body_500 = _error_body(500, "internal error (a bug in collabemb serve); the server's log has the details")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        holder.current.start_finishing()  # phase B beside the first requests: torch, the fold-in solver
        yield

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(MeasuredApp, metrics=metrics, body_500=body_500), Middleware(_Guard, token=token)],
        exception_handlers={ApiError: _error, HTTPException: _error},
    )
    app.router.redirect_slashes = False  # /v1/similar/ is no path of the API (404), not a redirect
    app.state.holder = holder
    return app


__all__ = ["ApiError", "ModelHolder", "Served", "create_app", "load_served"]
