"""What ``collabemb serve`` counts, rendered in the Prometheus text format (version 0.0.4).

* ``collabemb_requests_total{path,method,status}``: requests answered (a counter);
* ``collabemb_request_seconds{path}``: time from a request's arrival at the app to its last byte
  handed to the server (a histogram, :data:`BUCKETS`);
* ``collabemb_model_loaded_timestamp_seconds``: when the model being served was loaded (unix time);
* ``collabemb_reloads_total{result}``: reloads, by ``result`` (``reloaded``, ``unchanged``, ``failed``).

``path`` is a route of the API (``/v1/similar``), or ``other`` for any path the API does not
have, so a scan of random URLs cannot grow the label set; ``method`` is an HTTP method or ``other``.
:class:`MeasuredApp`, the app's outermost middleware, counts every request, including one whose
handler failed: it answers that one itself (a 500). :class:`Metrics` takes one lock per call:
requests are counted from the event loop, reloads from a thread. With ``--workers N`` each process
counts its own requests (a scrape reaches one of them).
"""

from __future__ import annotations

import bisect
import sys
import threading
import time
import traceback

#: Upper bounds (seconds) of the latency histogram's buckets; ``+Inf`` follows.
BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
#: HTTP methods counted by name; any other is counted as ``other``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
RELOAD_RESULTS: tuple[str, ...] = ("reloaded", "unchanged", "failed")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Request counters, latency histograms and reload counts of one server process; thread-safe.

    Args:
        paths: the API's routes; requests to any other path are counted under ``other``.
    """

    def __init__(self, paths: frozenset[str] | set[str]):
        self._paths = frozenset(paths)
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = {}
        self._buckets: dict[str, list[int]] = {}  # per path: counts per bucket (not cumulative), +Inf last
        self._sums: dict[str, float] = {}
        self._reloads = dict.fromkeys(RELOAD_RESULTS, 0)
        self._loaded_at = 0.0

    def path_label(self, path: str) -> str:
        """The ``path`` label of a request path: the route itself, or ``other``."""
        return path if path in self._paths else "other"

    def observe(self, path: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request to ``path`` (a request path; see :meth:`path_label`)."""
        label = self.path_label(path)
        method = method if method in METHODS else "other"
        slot = bisect.bisect_left(BUCKETS, seconds)
        with self._lock:
            key = (label, method, int(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            counts = self._buckets.get(label)
            if counts is None:
                counts = self._buckets[label] = [0] * (len(BUCKETS) + 1)
                self._sums[label] = 0.0
            counts[slot] += 1
            self._sums[label] += seconds

    def reloaded(self, result: str) -> None:
        """Count one reload with ``result`` ``"reloaded"``, ``"unchanged"`` or ``"failed"``."""
        if result not in self._reloads:
            raise ValueError(f"reload result must be one of {', '.join(RELOAD_RESULTS)}, got {result!r}")
        with self._lock:
            self._reloads[result] += 1

    def model_loaded(self, timestamp: float) -> None:
        """Record when the model now served was loaded (unix seconds)."""
        with self._lock:
            self._loaded_at = float(timestamp)

    def render(self) -> str:
        """Everything counted so far, in the Prometheus text format."""
        with self._lock:
            requests = sorted(self._requests.items())
            histograms = sorted((label, list(counts), self._sums[label]) for label, counts in self._buckets.items())
            reloads = dict(self._reloads)
            loaded_at = self._loaded_at
        lines = [
            "# HELP collabemb_requests_total Requests answered, by route, method and status.",
            "# TYPE collabemb_requests_total counter",
        ]
        for (label, method, status), n in requests:
            lines.append(f'collabemb_requests_total{{path="{_escape(label)}",method="{method}",status="{status}"}} {n}')
        lines += ["# HELP collabemb_request_seconds Time to answer a request, by route.", "# TYPE collabemb_request_seconds histogram"]
        for label, counts, total in histograms:
            path = _escape(label)
            running = 0
            for bound, n in zip((*map(_number, BUCKETS), "+Inf"), counts, strict=True):
                running += n
                lines.append(f'collabemb_request_seconds_bucket{{path="{path}",le="{bound}"}} {running}')
            lines.append(f'collabemb_request_seconds_sum{{path="{path}"}} {_number(total)}')
            lines.append(f'collabemb_request_seconds_count{{path="{path}"}} {running}')
        lines += [
            "# HELP collabemb_model_loaded_timestamp_seconds When the model being served was loaded (unix time).",
            "# TYPE collabemb_model_loaded_timestamp_seconds gauge",
            f"collabemb_model_loaded_timestamp_seconds {_number(loaded_at)}",
            "# HELP collabemb_reloads_total Reloads of the artifact (SIGHUP or POST /v1/reload), by result.",
            "# TYPE collabemb_reloads_total counter",
        ]
        lines += [f'collabemb_reloads_total{{result="{result}"}} {reloads[result]}' for result in RELOAD_RESULTS]
        return "\n".join(lines) + "\n"


class MeasuredApp:
    """Outermost ASGI middleware: every HTTP request counted in ``metrics`` with its status and time.

    A request whose handler raised is answered here, with the JSON error ``body_500`` (500), and
    counted as such; its traceback goes to stderr (a bug: every refusal is a 4xx of the app).
    """

    def __init__(self, app, *, metrics: Metrics, body_500: bytes):
        self.app, self.metrics, self.body_500 = app, metrics, body_500

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [0]

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            print(f"collabemb serve: internal error answering {scope['method']} {scope['path']}:", file=sys.stderr, flush=True)
            traceback.print_exc()
            if not status[0]:
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self.body_500)).encode())]
                await sending({"type": "http.response.start", "status": 500, "headers": headers})
                await sending({"type": "http.response.body", "body": self.body_500})
        finally:
            self.metrics.observe(scope["path"], scope["method"], status[0] or 500, time.perf_counter() - start)


def _escape(value: str) -> str:
    """A label value as the text format writes it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """A sample value: Python's shortest round-trip repr (``0.001``, ``1700000000.25``)."""
    return repr(float(value))


__all__ = ["BUCKETS", "CONTENT_TYPE", "MeasuredApp", "Metrics"]
