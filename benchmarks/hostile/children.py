"""Child processes: forks of this interpreter with collabemb already imported, or fresh processes.

Every command of a case runs as a child with a timeout and an address-space limit; a forked child
is set up as a fresh ``collabemb`` / ``python -c`` process would be (standard streams, signal
handlers, the interpreter's exit handling) so that the fork shortcut changes no outcome.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import re
import resource
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

MEM_LIMIT = 6 << 30


@dataclass
class Run:
    """What a child process did."""

    what: str
    rc: int | None
    timed_out: bool
    stdout: str
    stderr: str
    seconds: float
    cpu: float = 0.0  # user + system seconds of the child (steadier than wall time on a busy machine)

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def short(self) -> str:
        text = " | ".join(self.lines[-2:]) if self.lines else "(no stderr)"
        return text if len(text) <= 220 else text[:217] + "..."


@dataclass
class Proc:
    what: str
    pid: int
    popen: subprocess.Popen | None
    out: Path
    err: Path
    started: float
    deadline: float
    status: int | None = None
    cpu: float = 0.0


class Launcher:
    """Starts children: forks of this interpreter (collabemb already imported) or fresh processes."""

    def __init__(self, io_dir: Path, *, fresh: bool):
        self.io_dir = io_dir
        self.fresh = fresh
        self.counter = 0

    def spawn(
        self,
        *,
        argv: list[str] | None = None,
        snippet: str | None = None,
        args: list[str] | tuple = (),
        cwd: Path,
        timeout: float,
        uid: int | None = None,
        fresh: bool | None = None,
        stdout_fd: int | None = None,
    ) -> Proc:
        """``collabemb ARGV`` or ``python -c SNIPPET ARGS``, stdout and stderr to files."""
        self.counter += 1
        out, err = self.io_dir / f"{os.getpid()}-{self.counter}.out", self.io_dir / f"{os.getpid()}-{self.counter}.err"
        what = "collabemb " + " ".join(map(str, argv))[:300] if argv is not None else "python -c SNIPPET " + " ".join(map(str, args))[:300]
        now = time.monotonic()
        sys.stdout.flush()
        sys.stderr.flush()
        if fresh if fresh is not None else self.fresh:
            if argv is not None:
                cmd = [str(Path(sys.executable).parent / "collabemb"), *map(str, argv)]
            else:
                cmd = [sys.executable, "-c", snippet, *map(str, args)]
            with open(out, "wb") as fo, open(err, "wb") as fe:
                popen = subprocess.Popen(
                    cmd,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout_fd if stdout_fd is not None else fo,
                    stderr=fe,
                    preexec_fn=lambda: _limits(uid, fresh=True),
                )
            return Proc(what, popen.pid, popen, out, err, now, now + timeout)
        pid = os.fork()
        if pid == 0:  # the child: never returns
            _child(argv, snippet, [str(a) for a in args], cwd, uid, out, err, stdout_fd)
        return Proc(what, pid, None, out, err, now, now + timeout)

    def wait(self, proc: Proc) -> Run:
        timed_out = False
        delay = 0.002
        while proc.status is None:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if not pid and time.monotonic() > proc.deadline:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
            if pid:
                proc.status = os.waitstatus_to_exitcode(status)
                proc.cpu = usage.ru_utime + usage.ru_stime
                if proc.popen is not None:
                    proc.popen.returncode = proc.status
                break
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)
        seconds = time.monotonic() - proc.started
        read = lambda p: p.read_bytes().decode("utf-8", "replace") if p.exists() else ""  # noqa: E731
        return Run(proc.what, proc.status, timed_out, read(proc.out), read(proc.err), seconds, proc.cpu)

    def run(self, **kwargs) -> Run:
        return self.wait(self.spawn(**kwargs))

    def run_many(self, jobs: list[tuple[object, dict]]) -> dict:
        """Run children CPU count at a time; ``{key: Run}``."""
        parallel = max(1, os.cpu_count() or 1)
        results, running, pending = {}, [], list(jobs)
        while pending or running:
            while pending and len(running) < parallel:
                key, spec = pending.pop(0)
                running.append((key, self.spawn(**spec)))
            key, proc = running.pop(0)
            results[key] = self.wait(proc)
        return results


def _limits(uid: int | None, *, fresh: bool) -> None:
    """In a child before it runs: an address-space limit, no core files, and maybe another user."""
    try:
        limit = MEM_LIMIT + (_vm_size() if not fresh else 2 << 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


def _vm_size() -> int:
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    except (OSError, StopIteration):
        return 2 << 30


def _child(argv, snippet, args, cwd, uid, out: Path, err: Path, stdout_fd: int | None) -> None:
    """A forked child: set up as a fresh ``collabemb`` / ``python -c`` process would be, run, exit."""
    try:
        os.chdir(cwd)
        fd_in = os.open(os.devnull, os.O_RDONLY)
        fd_out = stdout_fd if stdout_fd is not None else os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        fd_err = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd_in, 0)
        os.dup2(fd_out, 1)
        os.dup2(fd_err, 2)
        _limits(uid, fresh=False)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as the interpreter sets it at start-up
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8")
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True)
        sys.__stdout__, sys.__stderr__, sys.__stdin__ = sys.stdout, sys.stderr, sys.stdin
    except BaseException:
        os._exit(99)
    code = 0
    try:
        if argv is not None:  # what the console script does: import its entry point (fresh), call it
            import importlib

            module, func = console_entry()
            sys.argv = [str(Path(sys.executable).parent / "collabemb"), *argv]
            sys.exit(getattr(importlib.import_module(module), func)())
        sys.argv = ["-c", *args]
        exec(compile(snippet, "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code & 0xFF
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        _flush_std()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    code = _flush_std(code)
    os._exit(code)


def _flush_std(code: int = 0) -> int:
    """The interpreter's last flush: a closed stdout pipe prints 'Exception ignored' and exits 120."""
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError) as exc:
        os.write(
            2,
            f"Exception ignored in: <_io.TextIOWrapper name='<stdout>' mode='w' encoding='utf-8'>\n{type(exc).__name__}: {exc}\n".encode(),
        )
        code = 120
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    return code


def console_entry() -> tuple[str, str]:
    """``(module, function)`` the ``collabemb`` console script calls (``from M import F ... sys.exit(F())``)."""
    try:
        text = (Path(sys.executable).parent / "collabemb").read_text()
        m = re.search(r"^from ([\w.]+) import (\w+)", text, re.MULTILINE)
        if m:
            return m.group(1), m.group(2)
    except OSError:
        pass
    return "collabemb.cli", "main"


def preload() -> str | None:
    """Import collabemb, every submodule and the heavy dependencies, so that forked children start warm.

    Not the console script's own module (nor any ``__main__``): it may set things up at import (a
    SIGINT handler), which each child must do itself, as a fresh process does."""
    import importlib
    import pkgutil

    entry_module = console_entry()[0]
    try:
        import collabemb

        for mod in pkgutil.walk_packages(collabemb.__path__, "collabemb."):
            if mod.name == entry_module or mod.name.endswith("__main__"):
                continue
            with contextlib.suppress(Exception):  # an optional module that cannot import is the child's business
                importlib.import_module(mod.name)
        for name in ("faiss", "torch", "pandas", "pyarrow.parquet", "safetensors.torch", "numba", "scipy.special", "matplotlib.pyplot"):
            with contextlib.suppress(Exception):
                importlib.import_module(name)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh interpreter has it
    if entry_module in sys.modules:
        return f"{entry_module} was imported by another module; children would not run it fresh"
    return None
