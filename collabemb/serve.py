"""``collabemb serve``: the API of :mod:`collabemb.serve_app` under uvicorn, its processes and its signals.

* **Only loopback without a token.** A host other than ``localhost`` / ``127.x`` / ``::1`` is refused
  unless a token is given: every request but ``GET /healthz`` must then carry it.
* **A bad artifact fails before the server listens**: the artifact is loaded (and checked) first,
  then the socket is bound, then uvicorn serves it (httptools when installed, no access log,
  uvicorn's own messages from ``warning`` up). With ``--workers N`` the socket is bound first
  and the workers' own loads are the check: the supervisor loads nothing (the first answer would
  wait for its load, then the workers'), and raises the error of a worker that cannot load the
  artifact as the single process raises it. One line on stdout says when it answers:
  ``collabemb serve: listening on http://HOST:PORT (artifact ..., N users, M items)`` (the port the
  system picked with ``--port 0``).
* **The first answer does not wait for torch.** What is loaded before the server listens is phase A
  of :mod:`collabemb.serve_model` (the artifact read into numpy and its FAISS index: no torch, numba
  or scipy); phase B (torch, the fold-in solver) starts in a thread when the app starts, and only
  the requests that need it (predict, fold-ins, the explorer page) wait for it.
* **One thread each.** FAISS, torch and BLAS run on one thread per process
  (:func:`~collabemb.serve_model.one_thread_each`; torch once phase B has imported it): a worker
  answers one request at a time, and OpenMP threads spinning between requests would take the CPU
  from the others (and from the clients, on a small machine).
* **SIGHUP reloads the artifact in place** (:meth:`~collabemb.serve_app.ModelHolder.reload_soon`):
  a thread loads the current snapshot and swaps the new model in; requests in flight finish on the
  model they started with, and a failed reload keeps the old model and says why on stderr. A
  SIGHUP while the snapshot served is still the current one does nothing.
* **--workers N** runs uvicorn's supervisor (``uvicorn.supervisors.Multiprocess``): N spawned worker
  processes, each loading the artifact itself, each listening on its own socket of one port (on Linux;
  see :func:`_bind_each`; elsewhere they share one socket). uvicorn 0.54 answers
  SIGHUP by restarting the workers one after the other (each new one started and ready before
  the old one is stopped): fresh interpreters importing torch again, seconds of mixed answers per
  worker, and idle keep-alive connections closed. Here the supervisor passes SIGHUP on to every
  worker instead, and each reloads in place as a single process does: no process, socket or
  connection is replaced, so no request is dropped; for the second or so the loads take, some
  workers answer from the old model and some from the new. ``POST /v1/reload`` reloads the worker
  that takes it and sends SIGHUP to the supervisor, which passes it on (that worker, already up to
  date, skips it). A worker that dies is replaced by uvicorn with a fresh one (loading the current
  snapshot); one that cannot load it stops the server, as uvicorn stops on a worker that fails to
  start, with its error. ``/metrics`` counts per worker process.
* **SIGINT (Ctrl-C) and SIGTERM** shut down gracefully (requests in flight are answered, for up to
  30 s) and the exit status is 0.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import ipaddress
import multiprocessing
import os
import pickle
import signal
import socket
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

if TYPE_CHECKING:
    from collabemb.serve_app import ModelHolder

#: Seconds a worker process may take to load the artifact and start answering.
READY_TIMEOUT = 300
GRACEFUL_SECONDS = 30


def run_server(artifact: Path, *, host: str, port: int, workers: int, token: str | None) -> int:
    """Serve ``artifact`` on ``host:port`` until SIGINT or SIGTERM; the exit status (0).

    Raises ValueError for a non-loopback ``host`` without ``token`` and for workers that do not
    start, :class:`~collabemb.artifact.ArtifactError` for a bad artifact, OSError for a port that
    cannot be bound.
    """
    token = token or None
    if token is None and not is_loopback(host):
        raise ValueError(
            f"--host {host} answers other machines too: give --token (or set COLLABEMB_TOKEN) so that only "
            f"requests carrying it are answered, or bind to 127.0.0.1"
        )
    if workers > 1:
        return _supervise(Path(artifact), host, port, workers, token)
    from collabemb.serve_app import create_app  # pandas, FAISS, Starlette: after the checks that need none of them
    from collabemb.serve_model import one_thread_each

    one_thread_each()
    app = create_app(artifact, token=token)
    served = app.state.holder.current
    sock = _bind(host, port)
    line = _listening(host, sock, served.artifact, len(served.users.registry), len(served.items.registry))
    _Server(_config(app), app.state.holder, line).run(sockets=[sock])
    return 0


def _supervise(artifact: Path, host: str, port: int, workers: int, token: str | None) -> int:
    """``--workers N``: the socket bound, N worker processes loading the artifact and serving it; the first
    worker error raised (a bad artifact: the error a single process raises)."""
    sockets = _bind_each(host, port, workers)
    reports, report = multiprocessing.get_context("spawn").Pipe(duplex=False)
    config = _config(functools.partial(_worker_app, str(artifact), token, report), workers=workers)
    supervisor = _Supervisor(config, sockets, reports, functools.partial(_listening, host, sockets[0], artifact.resolve()))
    supervisor.run()
    supervisor.read_reports()
    if supervisor.failure is not None:
        raise supervisor.failure
    if supervisor.failed:
        raise ValueError(f"a worker process could not start serving {artifact}; the lines above say why")
    return 0


def _listening(host: str, sock: socket.socket, artifact: Path, n_users: int, n_items: int) -> str:
    """The line that says where the server answers, once it does."""
    shown = f"[{host}]" if ":" in host else host
    return f"collabemb serve: listening on http://{shown}:{sock.getsockname()[1]} (artifact {artifact}, {n_users} users, {n_items} items)"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not listening yet: uvicorn's server does that), inheritable by workers;
    with ``reuse_port``, one of a group of sockets bound to the same port (``SO_REUSEPORT``)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        raise OSError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _bind_each(host: str, port: int, workers: int) -> list[socket.socket]:
    """One listening socket per worker, all on one port, so that the kernel spreads new connections over the
    workers (Linux's ``SO_REUSEPORT``: by a hash of each connection's addresses). On one shared socket the
    worker that wakes first accepts every connection waiting, so a client pool opening its connections at once
    lands on one worker (measured: 32 of 32 in one of four runs, on 2 workers). The port is first bound without
    ``SO_REUSEPORT`` and let go, so a port some other server holds is refused as for one process. Elsewhere than
    on Linux: one socket, shared."""
    if not sys.platform.startswith("linux"):
        return [_bind(host, port)]
    with _bind(host, port) as probe:
        port = probe.getsockname()[1]
    return [_bind(host, port, reuse_port=True) for _ in range(workers)]


def _config(app, *, workers: int = 1) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        factory=workers > 1,
        workers=workers,
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        # Python's own event loop, not uvloop: uvloop answers about 15% more cheap requests a second, but under load
        # it leaves a few in 100 waiting twice as long (measured: 16 clients on one worker, p99 2.1x the median
        # against 1.25x with asyncio's loop, where requests are taken in the order they came)
        loop="asyncio",
        lifespan="on",  # the app's start begins phase B (collabemb.serve_model)
        access_log=False,
        log_level="warning",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )


class _Server(uvicorn.Server):
    """uvicorn's server of one process: says the line once it answers; SIGHUP reloads; a signal that stopped
    it is not raised again afterwards (uvicorn re-raises it, which would end the process with its status)."""

    def __init__(self, config: uvicorn.Config, holder: ModelHolder, line: str):
        super().__init__(config)
        self.holder, self.line = holder, line

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(self.line, flush=True)

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handlers = {signal.SIGINT: self.handle_exit, signal.SIGTERM: self.handle_exit, signal.SIGHUP: self._reload}
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _reload(self, signum, frame) -> None:
        self.holder.reload_soon()


class _Supervisor(Multiprocess):
    """uvicorn's supervisor of N workers, but: each worker reports its load (:func:`_worker_app`), the line is
    said once every worker answers, SIGHUP is passed on to the workers (each reloads in place) rather than
    restarting them, and Ctrl-C stops a start-up.

    ``reports``: what the workers send: ``(n_users, n_items)`` once loaded, or the exception their load raised.
    ``line``: the listening line of ``(n_users, n_items)``. ``failure``: the first exception reported."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket], reports: Connection, line: Callable[[int, int], str]):
        super().__init__(config, sockets)
        self.reports, self.line, self.timed_out = reports, line, False
        self.failure: BaseException | None = None
        self.loaded: tuple[int, int] | None = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: self.should_exit.set())

    def read_reports(self) -> None:
        """Take in what the workers have reported (each worker sends one report; a replaced worker one more)."""
        while self.reports.poll():
            try:
                report = self.reports.recv()
            except (EOFError, OSError, pickle.UnpicklingError):
                return
            if isinstance(report, BaseException):
                self.failure = self.failure or report
            else:
                self.loaded = self.loaded or report

    def keep_subprocess_alive(self) -> None:
        """uvicorn's, but a worker that died is replaced by one on the same socket as it (see :func:`_bind_each`):
        the connections the kernel queued on that socket meanwhile wait for the new worker."""
        self.read_reports()
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung: kill it
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # it could not start serving: the next would not either
                self.should_exit.set()
                return
            self.processes[idx] = self._start_worker(idx)

    def _start_worker(self, idx: int) -> Process:
        process = Process(self.config, [self.sockets[idx % len(self.sockets)]])
        process.start()
        return process

    @property
    def failed(self) -> bool:
        """Whether a worker failed to start (or to load the artifact, when uvicorn replaced one): the server stopped for it."""
        return self.timed_out or any(process.exitcode == STARTUP_FAILURE for process in self.processes)

    def init_processes(self) -> None:
        self.processes = [self._start_worker(idx) for idx in range(self.processes_num)]
        for process in self.processes:
            if not process.wait_until_ready(READY_TIMEOUT, self.should_exit):
                self.timed_out = process.exitcode is None and not self.should_exit.is_set()
                self.should_exit.set()
                return
        self.read_reports()  # every worker is ready: each has reported its load
        print(self.line(*self.loaded), flush=True)

    def handle_hup(self) -> None:
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGHUP)


def _worker_app(artifact: str, token: str | None, report: Connection):
    """The app of one worker process (uvicorn calls this in the worker): threads set, SIGHUP a reload; its load
    reported to the supervisor on ``report`` (the table sizes, or the exception, and then the exit)."""
    from collabemb.serve_app import create_app
    from collabemb.serve_model import one_thread_each

    one_thread_each()
    try:
        app = create_app(Path(artifact), token=token, notify=_tell_supervisor)
    except Exception as exc:
        try:
            report.send(exc)
        except (pickle.PicklingError, TypeError, AttributeError):  # an exception pickle cannot carry: its words
            report.send(RuntimeError(f"{type(exc).__name__}: {' '.join(str(exc).split())}"))
        sys.exit(STARTUP_FAILURE)
    holder = app.state.holder
    signal.signal(signal.SIGHUP, lambda signum, frame: holder.reload_soon())
    report.send((len(holder.current.users.registry), len(holder.current.items.registry)))
    return app


def _tell_supervisor() -> None:
    """After ``POST /v1/reload`` in a worker: SIGHUP to the supervisor, which passes it on to every worker."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(os.getppid(), signal.SIGHUP)


__all__ = ["is_loopback", "run_server"]
