"""Hostile cases against the command line and the artifact: what an attacker and a careful user would try.

    .venv/bin/python benchmarks/robustness.py [--out benchmarks/RESULTS.md] [--kinds tamper tracebacks inputs crash]
                                              [--only REGEX] [--jobs N] [--fresh] [--keep] [--list]

It builds its own small world in a temporary directory (a generated ratings CSV of 4,000 ratings,
200 users x 150 items; ``collabemb fit`` at seed 0 and seed 1, single-threaded so that a fit is
reproducible; ``collabemb index``: exact, IVF and HNSW), then runs every case as a child process
with a timeout, in four kinds:

* **tamper** (artifact tampering: silent wrong results from a loadable artifact): every file under
  the artifact directory, recursively (flat artifacts and snapshot stores alike), truncated,
  emptied, deleted, byte-flipped at fixed offsets, replaced by the same file of the seed-1
  artifact; config.json values edited (``n_factors`` missing, ``history: 5``, ``index.parts`` a list,
  ``y_range`` null / infinite, 200,000-deep nesting, ``ef_search`` 2**40, a 256 MiB file...); NaN,
  int64 and float64 weights written as proper safetensors; a registry edited with its fingerprint
  recomputed; seen_items.npy empty / mislabelled / claiming 10**10 items; IVF labels out of range
  with the file checksum recomputed. Edits that must be coherent are also tried with every recorded
  hash recomputed (manifest and pointer, when the artifact has them: the attacker who rewrites the
  manifest too). Each tampered copy is asked ``predict``, ``similar``, ``recommend`` and ``info``
  (compared as printed, checksums masked) and, when they answer, its loaded model is compared
  exactly (float32 predictions, seen pairs) with the untampered one.
* **tracebacks**: absurd values of every numeric option of every command, missing files,
  directories where files are expected, a config.json that is a list, unreadable files (run as
  ``nobody`` when the harness is root).
* **inputs** (bad input files): 1e39 / nan / inf ratings, 1e30 timestamps, a repeated header
  column, compressed files under misleading extensions, quoted multi-line fields before an error
  (the line number named must be right), BOM, NUL bytes, CRLF, non-UTF-8, empty and header-only
  files, ``007`` IDs on an int model, a bad ``--out`` that must be refused before training
  (measured in CPU seconds of the child against a 3-epoch and a LONG_EPOCHS fit: steadier than
  wall time on a shared machine).
* **crash** (crash and concurrency): ``fit --out ART`` over an existing artifact SIGKILLed at its
  Nth write event (an audit hook counts write-opens, renames, removes, mkdir/rmdir and rmtree
  under the work directory; N = 1 .. the end of the save), then ART must load as the complete old
  or the complete new model, a rerun must succeed and leave no leftovers; the same into a fresh
  path and with ``--checkpoint`` followed by ``--resume``; Ctrl-C at fixed moments (exit 130, one
  line, nothing already written lost; the same audit hook sends the SIGINT); a second writer
  started while the first is busy (fit: training; index: loading, held there 3 s by the hook); a
  reader loading in a loop while two writers save different models; ``| head -1`` (no "Broken
  pipe"). Runs of consecutive kill points of one kind in one directory keep only their ends.

Outcome of a case: **held** (refused with exit 2 and exactly one ``collabemb: error:`` line on
stderr, besides ``collabemb: warning:`` lines, naming the file involved and, for bad input, the
right line; or answers identical to the untampered artifact's / a sane answer; or, for a crash,
the complete old or new model), else the worst of, by severity: ``crash`` (killed by a signal),
``hang`` (timeout), ``silent wrong result`` (exit 0 with other answers, a mixed model, NaN, a bad
value accepted), ``traceback``, ``vague error`` (non-zero exit without a traceback but not one
clean line, not exit 2 (130 for Ctrl-C), the file or the line not named), ``leftover``.

Speed: by default every child is forked from this process after it has imported collabemb and
its heavy dependencies (torch, FAISS, pandas; nothing is run before the fork), and then calls the
console script's entry point (read from ``.venv/bin/collabemb``; its module is imported fresh in
each child, not before the fork, as it installs a SIGINT handler) with the interpreter's exit
handling (uncaught exception -> traceback and exit 1, atexit, final flush) reproduced; a fresh interpreter
costs ~5 s of imports per command on this machine, which would make the run take an hour. The
``| head -1`` cases always start real ``collabemb`` processes. ``--fresh`` runs every child as a
new process (``collabemb ...`` / ``python -c``), to check the fork shortcut changes no outcome.
Children get a 6 GiB address-space limit, so an absurd allocation fails instead of swapping.

With ``--out`` a section is appended to RESULTS.md (benchmarks/machine.py): machine, command,
date, the table per kind and every case not held.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import io
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import hostile_cases as hc  # noqa: E402

KINDS: dict[str, str] = {
    "tamper": "artifact tampering",
    "tracebacks": "tracebacks",
    "inputs": "bad input files",
    "crash": "crash and concurrency",
}
HELD = "held"
HARNESS = "harness error"
#: NOT HELD outcomes, most severe first.
SEVERITY: tuple[str, ...] = ("crash", "hang", "silent wrong result", "traceback", "vague error", "leftover")
_RANK = {name: n for n, name in enumerate((HARNESS, *SEVERITY, HELD))}

N_USERS, N_ITEMS, N_RATINGS = 200, 150, 4000
#: The artifacts tampered with: A (exact index), and A with an IVF and with an HNSW index.
BASES = ("A", "A_IVF", "A_HNSW")
#: Every fit of the harness (A, B, the crash series): small, single-threaded (deterministic).
FIT_ARGS = ["--epochs", "3", "--n-factors", "8", "--threads", "1", "--no-progress"]
LONG_EPOCHS = 3000  # the bad --out cases: a fit whose training takes seconds
QUERY_TIMEOUT = 30.0
FIT_TIMEOUT = 60.0
CASE_TIMEOUT = 300.0
MEM_LIMIT = 6 << 30
NOBODY = 65534
TRACEBACK = "Traceback (most recent call last)"
_NAN = re.compile(r"(?<![\w.])[-+]?(nan|inf|infinity)(?![\w])", re.IGNORECASE)


class HarnessError(RuntimeError):
    """The harness itself cannot go on (its own setup failed)."""


# --- one child process ------------------------------------------------------------------------------


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


# --- judging ------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    outcome: str
    detail: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def held(self) -> bool:
        return self.outcome == HELD


def worst(verdicts: list[Verdict]) -> Verdict:
    return min(verdicts, key=lambda v: _RANK[v.outcome]) if verdicts else Verdict(HELD, "")


def normalise_output(text: str, *paths: Path) -> str:
    """The artifact's path and long hex strings (checksums, fingerprints: what `info` shows of config.json) masked."""
    for p in paths:
        for form in {str(p.resolve()), str(p)}:
            text = text.replace(form, "<ART>")
    return _HEX.sub("<HEX>", text)


_HEX = re.compile(r"\b[0-9a-f]{16,}\b")


def judge(
    run: Run,
    *,
    expect: str = "refuse",
    names: tuple | list = (),
    line: int | None = None,
    same: str | None = None,
    check: Callable[[Run], str | None] | None = None,
    code: int = 2,
    label: str = "",
) -> Verdict:
    """One child's outcome.

    ``expect``: ``"refuse"`` (success is a bad value accepted), ``"same"`` (success must print
    ``same``), ``"sane"`` (success must pass ``check``: None or the problem). A refusal is clean
    with exit ``code``, one ``collabemb: error:`` line (plus warnings), naming one of ``names``
    (basenames) when given and, when ``line`` is given, that line number.
    """
    tag = f"{label}: " if label else ""
    if run.timed_out:
        return Verdict("hang", f"{tag}no answer in {run.seconds:.0f} s")
    if run.rc is not None and run.rc < 0:
        return Verdict("crash", f"{tag}killed by {signal.Signals(-run.rc).name}; {run.short()}")
    if TRACEBACK in run.stderr:
        tb = [ln for ln in run.lines if not ln.startswith(" ")]
        last = tb[-1] if tb else ""
        return Verdict("traceback", f"{tag}exit {run.rc}, {last[:200]}")
    if run.rc == 0:
        if expect == "refuse":
            out = run.stdout.strip().splitlines()
            return Verdict("silent wrong result", f"{tag}accepted (exit 0): {(out[-1] if out else '')[:160]}")
        if expect == "same":
            if same is not None and run.stdout != same:
                return Verdict(
                    "silent wrong result", f"{tag}exit 0, answers differ from the untampered artifact's ({_diff(same, run.stdout)})"
                )
            return Verdict(HELD, f"{tag}identical answers")
        problem = check(run) if check is not None else _nan_problem(run)
        if problem:
            return Verdict("silent wrong result", f"{tag}{problem}")
        return Verdict(HELD, f"{tag}sane answer (exit 0)")
    errors = [ln for ln in run.lines if ln.startswith("collabemb: error:")]
    other = [ln for ln in run.lines if not ln.startswith(("collabemb: error:", "collabemb: warning:"))]
    if run.rc != code or len(errors) != 1 or other:
        first = (other or errors or ["(no stderr)"])[0]
        why = f"exit {run.rc}" + (f" (expected {code})" if run.rc != code else "")
        if len(errors) != 1 or other:
            why += f", {len(run.lines)} stderr lines"
        return Verdict("vague error", f"{tag}{why}: {first[:180]}")
    message = errors[0]
    if names and not any(str(n) in message for n in names):
        return Verdict("vague error", f"{tag}does not name {' or '.join(map(str, names))}: {message[:180]}")
    if line is not None:
        found = [int(n) for n in re.findall(r"\blines? (\d+)", message)]
        if line not in found:
            said = f"names line {', '.join(map(str, found))}" if found else "names no line"
            return Verdict("vague error", f"{tag}{said}, the bad value is on line {line}: {message[:160]}")
    return Verdict(HELD, f"{tag}refused: {message[:180]}")


def _nan_problem(run: Run) -> str | None:
    m = _NAN.search(run.stdout)
    if m:
        return f"exit 0 with {m.group(0)!r} in the output"
    return None


def _diff(a: str, b: str) -> str:
    la, lb = a.splitlines(), b.splitlines()
    n = sum(1 for x, y in zip(la, lb, strict=False) if x != y) + abs(len(la) - len(lb))
    first = next((k for k, (x, y) in enumerate(zip(la, lb, strict=False)) if x != y), min(len(la), len(lb)))
    got = lb[first][:70] if first < len(lb) else "(end)"
    want = la[first][:70] if first < len(la) else "(end)"
    return f"{n} of {len(la)} lines; first: {got!r} instead of {want!r}"


# --- the world every case starts from ---------------------------------------------------------------


@dataclass
class World:
    """The data, artifacts, baselines and probes built once before the cases."""

    root: Path
    launcher: Launcher
    data: dict[str, Path] = field(default_factory=dict)
    arts: dict[str, Path] = field(default_factory=dict)
    baseline: dict[tuple[str, str], str] = field(default_factory=dict)
    sigs: dict[str, dict] = field(default_factory=dict)
    probes: dict[str, list[dict]] = field(default_factory=dict)
    user_ids: list[str] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    deterministic: bool = True
    short_fit_cpu: float = 0.0  # CPU seconds of fit A (3 epochs) and of the same fit at LONG_EPOCHS
    long_fit_cpu: float = 0.0
    nobody_ok: bool = False

    @property
    def has_manifest(self) -> bool:
        return bool(hc.find_named(self.arts["A"], "manifest.json"))

    def fit_argv(self, ratings: str, out: Path | str, seed: int, *extra: str) -> list[str]:
        return ["fit", str(self.data[ratings]), "--out", str(out), *FIT_ARGS, "--seed", str(seed), *extra]


def queries(world: World, art: Path) -> list[tuple[str, list[str]]]:
    """The questions every tampered artifact is asked; together they read every file of it."""
    return [
        ("predict", ["predict", str(art), str(world.data["pairs"])]),
        ("similar", ["similar", str(art), *world.item_ids, "-k", "5"]),
        ("recommend", ["recommend", str(art), "--user", *world.user_ids, "-k", "5"]),
        ("info", ["info", str(art)]),
    ]


def build_world(root: Path, launcher: Launcher) -> World:
    """Data files, artifacts A (seed 0), B (seed 1), A-IVF, NEW (seed 1 on other ratings), baselines, probes."""
    w = World(root, launcher)
    data = root / "data"
    data.mkdir(parents=True)
    rows = hc.make_ratings(0, N_USERS, N_ITEMS, N_RATINGS)
    w.data["ratings"] = hc.write_text(data / "ratings.csv", hc.ratings_csv(rows))
    w.data["ratings_ts"] = hc.write_text(data / "ratings_ts.csv", hc.ratings_csv(rows, timestamp=True))
    # model NEW / C: other ratings (every 10th row dropped, every user and item kept) -> other seen pairs
    w.data["ratings_b"] = hc.write_text(data / "ratings_b.csv", hc.ratings_csv(_thin(rows)))
    w.user_ids = [str(u) for u in range(1, N_USERS + 1)]
    w.item_ids = [str(i) for i in range(1, N_ITEMS + 1)]
    pairs_u = [u for u in range(1, N_USERS + 1) for j in range(6)] + [1] * N_ITEMS + [999_999, 3, 999_999]
    pairs_i = (
        [(u * 7 + j * 23) % N_ITEMS + 1 for u in range(1, N_USERS + 1) for j in range(6)]
        + list(range(1, N_ITEMS + 1))
        + [5, 888_888, 888_888]
    )
    w.data["pairs"] = hc.write_text(
        data / "pairs.csv", "user,item\n" + "".join(f"{u},{i}\n" for u, i in zip(pairs_u, pairs_i, strict=True))
    )
    w.data["pairs_json"] = hc.write_text(data / "pairs.json", json.dumps({"users": pairs_u, "items": pairs_i}))
    big = [(u, i) for u in range(1, N_USERS + 1) for i in range(1, N_ITEMS + 1)]
    w.data["big_pairs"] = hc.write_text(data / "big_pairs.csv", "user,item\n" + "".join(f"{u},{i}\n" for u, i in big))

    arts = root / "arts"
    arts.mkdir()
    fits = {
        "A": w.fit_argv("ratings", arts / "A", 0),
        "B": w.fit_argv("ratings", arts / "B", 1),
        "A2": w.fit_argv("ratings", arts / "A2", 0),
        "NEW": w.fit_argv("ratings_b", arts / "NEW", 1),
        "LONG": [
            "fit",
            str(w.data["ratings"]),
            "--out",
            str(arts / "LONG"),
            "--epochs",
            str(LONG_EPOCHS),
            "--n-factors",
            "8",
            "--threads",
            "1",
            "--no-progress",
        ],
    }
    done = _run_many(launcher, [(name, {"argv": argv, "cwd": root, "timeout": 120}) for name, argv in fits.items()])
    for name, run in done.items():
        if run.rc != 0:
            raise HarnessError(f"setup: {run.what} failed (exit {run.rc}): {run.stderr[-1500:]}")
        w.arts[name] = arts / name
    w.short_fit_cpu, w.long_fit_cpu = done["A"].cpu, done["LONG"].cpu
    hc.copy_tree(w.arts["NEW"], arts / "C")  # C: NEW with an index (the second model of the reader case)
    w.arts["C"] = arts / "C"
    index = [("A", ["index", str(arts / "A")]), ("B", ["index", str(arts / "B")]), ("C", ["index", str(arts / "C")])]
    done = _run_many(launcher, [(n, {"argv": a, "cwd": root, "timeout": 60}) for n, a in index])
    for run in done.values():
        if run.rc != 0:
            raise HarnessError(f"setup: {run.what} failed (exit {run.rc}): {run.stderr[-1500:]}")
    jobs = []
    for name, index_type in (("A_IVF", "ivf"), ("A_HNSW", "hnsw")):
        w.arts[name] = hc.copy_tree(w.arts["A"], arts / name)
        jobs.append(
            (
                name,
                {
                    "argv": ["index", str(arts / name), "--index-type", index_type, "--parts", "items", "recommend"],
                    "cwd": root,
                    "timeout": 60,
                },
            )
        )
    for run in _run_many(launcher, jobs).values():
        if run.rc != 0:
            raise HarnessError(f"setup: {run.what} failed (exit {run.rc}): {run.stderr[-1500:]}")

    # baselines: each base artifact asked the queries from a copy (as the cases do)
    jobs = []
    for base in BASES:
        copy = hc.copy_tree(w.arts[base], root / "baseline" / base / "ART")
        for q, argv in queries(w, copy):
            jobs.append(((base, q), {"argv": argv, "cwd": root, "timeout": QUERY_TIMEOUT}))
    for key, run in _run_many(launcher, jobs).items():
        if run.rc != 0 or TRACEBACK in run.stderr:
            raise HarnessError(f"setup: baseline {run.what} failed (exit {run.rc}): {run.stderr[-1500:]}")
        w.baseline[key] = normalise_output(run.stdout, root / "baseline" / key[0] / "ART")
    det = launcher.run(argv=["predict", str(w.arts["A2"]), str(w.data["pairs"])], cwd=root, timeout=QUERY_TIMEOUT)
    w.deterministic = det.rc == 0 and det.stdout == w.baseline[("A", "predict")]
    if not w.deterministic:
        w.notes.append(
            "two fits with the same seed and --threads 1 gave different predictions: crash cases compare signatures of loaded models only"
        )

    for name in ("A", "NEW", "C", "B", "A_IVF", "A_HNSW", "LONG"):
        w.sigs[name] = signature(w, w.arts[name], cwd=root)
        if not w.sigs[name].get("ok"):
            raise HarnessError(f"setup: signature of {name}: {w.sigs[name]}")
    if w.sigs["A"]["pred"] == w.sigs["NEW"]["pred"] or w.sigs["A"]["seen"] == w.sigs["NEW"]["seen"]:
        raise HarnessError("setup: the old and new models of the crash cases are not distinguishable")

    # probes: the write events of the commands the crash cases interrupt (audit hook, nothing killed)
    probe_dir = root / "probes"
    specs = {
        "save_over_old": ("A", lambda d: w.fit_argv("ratings_b", d / "ART", 1)),
        "save_fresh": (None, lambda d: w.fit_argv("ratings_b", d / "ART", 1)),
        "checkpoint": ("A", lambda d: w.fit_argv("ratings_b", d / "ART", 1, "--checkpoint", str(d / "CK"))),
        "index": ("A", lambda d: ["index", str(d / "ART"), "--index-type", "hnsw"]),
    }
    jobs = []
    for name, (base, argv_of) in specs.items():
        d = probe_dir / name
        d.mkdir(parents=True)
        if base:
            hc.copy_tree(w.arts[base], d / "ART")
        jobs.append((name, audit_spawn(d, argv_of(d), n=0, log=d / "events.jsonl", cwd=root)))
    for name, run in _run_many(launcher, jobs).items():
        if run.rc != 0:
            raise HarnessError(f"setup: probe {name} failed (exit {run.rc}): {run.stderr[-1500:]}")
        w.probes[name] = read_events(probe_dir / name / "events.jsonl")
    w.sigs["CK_FINAL"] = signature(w, probe_dir / "checkpoint" / "ART", cwd=root)

    # can a child running as nobody read the world? (the permission cases need it)
    if os.geteuid() == 0:
        hc.chmod_tree(root)
        control = root / "nobody-control"
        hc.copy_tree(w.arts["A"], control)
        hc.chmod_tree(control)
        try:
            run = launcher.run(argv=["info", str(control)], cwd=root, timeout=QUERY_TIMEOUT, uid=NOBODY)
            w.nobody_ok, why = run.rc == 0, run.short()
        except OSError as exc:  # a fresh process as nobody cannot reach the interpreter (under /root, say)
            w.nobody_ok, why = False, str(exc)
        if not w.nobody_ok:
            w.notes.append(f"permission cases not run: `info` as nobody fails on an untouched artifact ({why})")
    else:
        w.nobody_ok = True
    return w


def _thin(rows: list) -> list:
    """Every 10th row dropped, unless its user or item would be left with fewer than 2 ratings."""
    from collections import Counter

    users, items = Counter(r[0] for r in rows), Counter(r[1] for r in rows)
    keep = []
    for n, r in enumerate(rows):
        if n % 10 == 0 and users[r[0]] > 2 and items[r[1]] > 2:
            users[r[0]] -= 1
            items[r[1]] -= 1
            continue
        keep.append(r)
    return keep


def _run_many(launcher: Launcher, jobs: list[tuple[object, dict]], parallel: int | None = None) -> dict:
    """Run children two (CPU count) at a time; ``{key: Run}``."""
    parallel = parallel or max(1, os.cpu_count() or 1)
    results, running, pending = {}, [], list(jobs)
    while pending or running:
        while pending and len(running) < parallel:
            key, spec = pending.pop(0)
            running.append((key, launcher.spawn(**spec)))
        key, proc = running.pop(0)
        results[key] = launcher.wait(proc)
    return results


def audit_spawn(
    root: Path, argv: list[str], *, n: int, log: Path, cwd: Path, sig: int = signal.SIGKILL, match: str = "", timeout: float = FIT_TIMEOUT
) -> dict:
    """Spawn arguments: ``collabemb ARGV`` under the audit hook (hostile_cases.AUDIT_SNIPPET)."""
    entry = ":".join(console_entry())
    return {
        "snippet": hc.AUDIT_SNIPPET,
        "args": [str(root), n, int(sig), str(log), match, entry, "--", *argv],
        "cwd": cwd,
        "timeout": timeout,
    }


def read_events(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def signature(world: World, art: Path, *, cwd: Path) -> dict:
    run = world.launcher.run(snippet=hc.SIGNATURE_SNIPPET, args=[str(art), str(world.data["pairs_json"])], cwd=cwd, timeout=QUERY_TIMEOUT)
    if run.timed_out:
        return {"ok": False, "error": "timed out", "type": "hang"}
    if run.rc != 0 or not run.stdout.strip():
        return {"ok": False, "error": f"exit {run.rc}: {run.short()}", "type": "crash" if (run.rc or 0) < 0 else "traceback"}
    return json.loads(run.stdout.strip().splitlines()[-1])


# --- cases ----------------------------------------------------------------------------------------------


class Skip(Exception):
    """This case does not apply to the artifact at hand."""


@dataclass
class Ctx:
    """What a case gets: the world, its own empty directory, and a launcher."""

    world: World
    dir: Path

    @property
    def launcher(self) -> Launcher:
        return self.world.launcher

    def copy(self, base: str = "A", name: str = "ART") -> Path:
        return hc.copy_tree(self.world.arts[base], self.dir / name)

    def cli(self, argv: list[str], *, timeout: float = QUERY_TIMEOUT, uid: int | None = None, cwd: Path | None = None) -> Run:
        return self.launcher.run(argv=[str(a) for a in argv], cwd=cwd or self.dir, timeout=timeout, uid=uid)

    def signature(self, art: Path) -> dict:
        return signature(self.world, art, cwd=self.dir)


@dataclass
class Case:
    kind: str
    name: str
    fn: Callable[[Ctx], Verdict]
    timeout: float = CASE_TIMEOUT
    group: str = ""  # post-processing across cases (the checkpoint series)


# --- kind: artifact tampering ---------------------------------------------------------------------------


def ask_all(ctx: Ctx, art: Path, base: str, names: list[str]) -> Verdict:
    """The four queries on a tampered copy, each identical to the untampered answers or cleanly refused."""
    verdicts = []
    for q, argv in queries(ctx.world, art):
        run = ctx.cli(argv)
        run.stdout = normalise_output(run.stdout, art)
        verdicts.append(judge(run, expect="same", same=ctx.world.baseline[(base, q)], names=names, label=q))
    v = worst(verdicts)
    answered = [q for (q, _), x in zip(queries(ctx.world, art), verdicts, strict=True) if x.held and "identical" in x.detail]
    if v.held and answered:  # answers identical as printed (4 decimals): compare the loaded model exactly too
        sig = ctx.signature(art)
        if sig.get("ok") and _sig_key(sig) != _sig_key(ctx.world.sigs[base]):
            ref = ctx.world.sigs[base]
            parts = (
                ("pred", "predictions (exact float32)"),
                ("tables", "weights (bit for bit)"),
                ("seen", "seen pairs"),
                ("index", "index"),
            )
            what = ", ".join(label for key, label in parts if sig.get(key) != ref.get(key))
            return Verdict("silent wrong result", f"{', '.join(answered)} answered as printed, but the model loaded differs in its {what}")
    if v.held:
        refused = sum(1 for x in verdicts if x.detail.split(": ", 1)[-1].startswith("refused"))
        v = Verdict(
            HELD, f"{refused} of 4 queries refused cleanly, the others identical" + (f"; {_first_refusal(verdicts)}" if refused else "")
        )
    return v


def _first_refusal(verdicts: list[Verdict]) -> str:
    for v in verdicts:
        if "refused: " in v.detail:
            return v.detail.split("refused: ", 1)[1][:150]
    return ""


def tamper_case(name: str, prepare: Callable[[Path], list[str]], *, base: str = "A", kind: str = "tamper") -> Case:
    """A case: copy ``base``, ``prepare(copy)`` tampers it and returns the file names a refusal should name."""

    def fn(ctx: Ctx) -> Verdict:
        art = ctx.copy(base)
        try:
            names = prepare(art)
        except Skip as exc:
            return Verdict(HELD, f"not applicable: {exc}")
        return ask_all(ctx, art, base, names)

    return Case(kind, name, fn)


def _one(art: Path, name: str) -> Path:
    found = hc.find_named(art, name)
    if not found:
        raise Skip(f"no {name} in this artifact")
    return found[-1]


def config_change(change: Callable[[dict], object], *, manifest: bool) -> Callable[[Path], list[str]]:
    def prepare(art: Path) -> list[str]:
        edits = [(p, *hc.edit_json(p, change)) for p in hc.find_named(art, "config.json")]
        if not edits:
            raise Skip("no config.json")
        if manifest:
            hc.rehash(art, edits, scope="manifest")
        return ["config.json"]

    return prepare


def config_bytes(make: Callable[[bytes], bytes], *, manifest: bool, sparse_to: int = 0) -> Callable[[Path], list[str]]:
    def prepare(art: Path) -> list[str]:
        edits = []
        for p in hc.find_named(art, "config.json"):
            old = p.read_bytes()
            p.write_bytes(make(old))
            if sparse_to:
                hc.sparse_pad(p, sparse_to)
            edits.append((p, old, p.read_bytes() if manifest else b""))
        if not edits:
            raise Skip("no config.json")
        if manifest:
            hc.rehash(art, edits, scope="manifest")
        return ["config.json"]

    return prepare


def _set_key(key: str, value_of: Callable[[object], object], *, delete: bool = False) -> Callable[[dict], object]:
    """Set (or delete) the first ``key`` found in the config tree."""

    def change(cfg: dict) -> None:
        paths = list(hc.json_paths(cfg, key))
        if not paths:
            raise Skip(f"config.json has no {key!r}")
        path = paths[0]
        parent = hc.get_path(cfg, path[:-1])
        if delete:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value_of(parent[path[-1]])

    return change


def _parts_as_list(cfg: dict) -> None:
    index = cfg.get("index")
    if not isinstance(index, dict) or not isinstance(index.get("parts"), dict):
        raise Skip("config.json has no index.parts object")
    index["parts"] = [{"name": k, **v} for k, v in index["parts"].items()]


CONFIG_EDITS: list[tuple[str, Callable[[dict], object]]] = [
    ("n_factors missing", _set_key("n_factors", None, delete=True)),
    ("n_factors 4 (the tensors have 8)", _set_key("n_factors", lambda v: 4)),
    ("n_factors 8.0 (a float)", _set_key("n_factors", lambda v: float(v))),
    ('n_factors "8" (a string)', _set_key("n_factors", lambda v: str(v))),
    ("n_user_rows + 1", _set_key("n_user_rows", lambda v: v + 1)),
    ("history: 5", _set_key("history", lambda v: 5)),
    ("index.parts a list", _parts_as_list),
    ("y_range null", _set_key("y_range", lambda v: None)),
    ("y_range [-Infinity, Infinity]", _set_key("y_range", lambda v: [float("-inf"), float("inf")])),
    ("y_range [NaN, NaN]", _set_key("y_range", lambda v: [float("nan"), float("nan")])),
    ("y_range reversed", _set_key("y_range", lambda v: list(reversed(v)))),
    ("schema_version 999", _set_key("schema_version", lambda v: 999)),
]


def _deep(old: bytes) -> bytes:
    return b'{"a":' * 200_000 + b"1" + b"}" * 200_000


def _fingerprint(registry: dict) -> str:
    try:
        from collabemb.registry import IdRegistry

        return IdRegistry.from_dict(registry).fingerprint()
    except Exception:  # the package's own function is preferred; this is its algorithm at the time of writing
        import hashlib

        h = hashlib.sha256(str(registry["id_type"]).encode())
        h.update(json.dumps(registry["ids"], ensure_ascii=True).encode())
        return h.hexdigest()[:16]


def registry_swap(file: str, *, fingerprint: str, manifest: bool) -> Callable[[Path], list[str]]:
    """Swap the first two IDs of a registry (rows 1 and 2 trade places); ``fingerprint``: "none",
    "key" (the config's own fingerprint field) or "everywhere" (every copy in config.json, the index's too)."""

    def prepare(art: Path) -> list[str]:
        path = _one(art, file)
        old_reg = json.loads(path.read_bytes())
        old_fp = _fingerprint(old_reg)
        old, new = hc.edit_json(path, lambda reg: reg["ids"].__setitem__(slice(0, 2), reg["ids"][1::-1]))
        new_fp = _fingerprint(json.loads(new))
        edits = [(path, old, new)]
        names = [file]
        if fingerprint != "none":
            for cfg in hc.find_named(art, "config.json"):
                before = cfg.read_bytes()
                if fingerprint == "everywhere":
                    cfg.write_bytes(before.replace(old_fp.encode(), new_fp.encode()))
                else:
                    obj = json.loads(before)
                    for key in [k for k, v in obj.items() if "fingerprint" in k and v == old_fp]:
                        obj[key] = new_fp
                    cfg.write_bytes(json.dumps(obj).encode())
                edits.append((cfg, before, cfg.read_bytes()))
            names.append("config.json")
        if manifest:
            hc.rehash(art, edits, scope="manifest")
        return names

    return prepare


def tensors_change(change: Callable[[dict], dict], *, manifest: bool) -> Callable[[Path], list[str]]:
    def prepare(art: Path) -> list[str]:
        path = _one(art, "tensors.safetensors")
        old, new = hc.rewrite_safetensors(path, change)
        rewritten = hc.rehash(art, [(path, old, new)], scope="manifest") if manifest else []
        return ["tensors.safetensors", *_configs(rewritten)]

    return prepare


def _configs(rewritten: list[str]) -> list[str]:
    """config.json when a rehash rewrote it (it records the edited file's checksum: an edited file too)."""
    return ["config.json"] if any(Path(r).name == "config.json" for r in rewritten) else []


def _weight(tensors: dict, hint: str) -> str:
    names = [n for n in tensors if hint in n]
    if not names:
        raise Skip(f"no tensor named like {hint!r}")
    return names[0]


def _nan_item_row(t: dict) -> dict:
    name = _weight(t, "i_weight")
    t[name] = t[name].copy()
    t[name][3, :] = np.nan
    return t


def _inf_user_bias(t: dict) -> dict:
    name = _weight(t, "u_bias")
    t[name] = t[name].copy()
    t[name][5] = np.inf
    return t


def _as_dtype(dtype) -> Callable[[dict], dict]:
    return lambda t: {k: v.astype(dtype) for k, v in t.items()}


def header_claims(size: int, *, manifest: bool) -> Callable[[Path], list[str]]:
    def prepare(art: Path) -> list[str]:
        path = _one(art, "tensors.safetensors")
        old = path.read_bytes()
        new = size.to_bytes(8, "little") + old[8:]
        path.write_bytes(new)
        rewritten = hc.rehash(art, [(path, old, new)], scope="manifest") if manifest else []
        return ["tensors.safetensors", *_configs(rewritten)]

    return prepare


def npy_change(file: str, make: Callable[[dict, bytes], bytes], *, manifest: bool) -> Callable[[Path], list[str]]:
    def prepare(art: Path) -> list[str]:
        path = _one(art, file)
        old = path.read_bytes()
        header, raw = hc.npy_parts(old)
        new = make(header, raw)
        path.write_bytes(new)
        rewritten = hc.rehash(art, [(path, old, new)], scope="manifest") if manifest else []
        return [file, *_configs(rewritten)]

    return prepare


NPY_EDITS: list[tuple[str, str, Callable[[dict, bytes], bytes]]] = [
    ("seen_items.npy", "empty (0 items)", lambda h, raw: hc.npy_bytes("<i4", (0,), b"")),
    ("seen_items.npy", "mislabelled big-endian ('>i4')", lambda h, raw: hc.npy_bytes(">i4", h["shape"], raw)),
    ("seen_items.npy", "mislabelled unsigned ('<u4')", lambda h, raw: hc.npy_bytes("<u4", h["shape"], raw)),
    ("seen_items.npy", "mislabelled float ('<f4')", lambda h, raw: hc.npy_bytes("<f4", h["shape"], raw)),
    ("seen_items.npy", "header claims 10**10 items", lambda h, raw: hc.npy_bytes(h["descr"], (10**10,), raw)),
    ("seen_indptr.npy", "int64 data labelled int32 (twice the rows)", lambda h, raw: hc.npy_bytes("<i4", (h["shape"][0] * 2,), raw)),
]


def ivf_label(file: str, label_of: Callable[[World], int], *, checksum: bool, manifest: bool) -> Callable[[Path], list[str]]:
    """An IVF index file with one stored label changed through FAISS (a valid index, lying labels)."""

    def prepare(art: Path, ctx: Ctx) -> list[str]:
        path = _one(art, file)
        old = path.read_bytes()
        run = ctx.launcher.run(snippet=hc.IVF_LABEL_SNIPPET, args=[str(path), label_of(ctx.world)], cwd=ctx.dir, timeout=QUERY_TIMEOUT)
        if run.rc != 0:
            raise Skip(f"could not edit the IVF labels: {run.short()}")
        edits = [(path, old, path.read_bytes())]
        rewritten = hc.rehash(art, edits, scope="manifest" if manifest else "config") if checksum else []
        return [file, *_configs(rewritten)]

    return prepare


def ivf_case(name: str, prepare) -> Case:
    def fn(ctx: Ctx) -> Verdict:
        art = ctx.copy("A_IVF")
        try:
            names = prepare(art, ctx)
        except Skip as exc:
            return Verdict(HELD, f"not applicable: {exc}")
        return ask_all(ctx, art, "A_IVF", names)

    return Case("tamper", name, fn)


def tamper_cases(world: World) -> list[Case]:
    a, b = world.arts["A"], world.arts["B"]
    cases: list[Case] = []
    for f in hc.files_under(a):
        rel, size, fname = f.relative_to(a), f.stat().st_size, f.name
        label = hc.normalise(str(rel))

        def named(op, rel=rel, fname=fname):
            def prepare(art: Path) -> list[str]:
                op(art / rel)
                return [fname]

            return prepare

        if size:
            cases.append(
                tamper_case(f"{label}: truncated to half ({size // 2} of {size} bytes)", named(lambda p, s=size: hc.truncate(p, s // 2)))
            )
            cases.append(tamper_case(f"{label}: last byte cut", named(lambda p, s=size: hc.truncate(p, s - 1))))
            cases.append(tamper_case(f"{label}: emptied", named(lambda p: hc.truncate(p, 0))))
            for off in hc.flip_offsets(size):
                cases.append(tamper_case(f"{label}: byte {off} of {size} flipped", named(lambda p, o=off: hc.flip(p, o))))
        cases.append(tamper_case(f"{label}: deleted", named(lambda p: p.unlink())))
        other = hc.counterpart(f, a, b)
        if other is not None and other.read_bytes() != f.read_bytes():
            cases.append(tamper_case(f"{label}: replaced by the seed-1 artifact's", named(lambda p, o=other: shutil.copyfile(o, p))))
        elif other is not None:
            world.notes.append(f"{label}: the seed-1 artifact's file is byte-identical (replacement case not run)")

    variants = [(False, "")] + ([(True, ", manifest recomputed")] if world.has_manifest else [])
    cfg = json.loads(hc.find_named(a, "config.json")[-1].read_bytes())
    for label, change in CONFIG_EDITS:
        try:
            change(json.loads(json.dumps(cfg)))
        except Skip as exc:
            world.notes.append(f"config edit {label!r} not applicable: {exc}")
            continue
        for manifest, suffix in variants:
            cases.append(tamper_case(f"config.json: {label}{suffix}", config_change(change, manifest=manifest)))
    for base, key in (("A_HNSW", "ef_search"), ("A_IVF", "nprobe"), ("A_IVF", "nlist")):
        change = _set_key(key, lambda v: 2**40)
        try:
            change(json.loads(hc.find_named(world.arts[base], "config.json")[-1].read_bytes()))
        except Skip as exc:
            world.notes.append(f"config edit {key} 2**40 not applicable: {exc}")
            continue
        for manifest, suffix in variants:
            cases.append(tamper_case(f"{base} config.json: {key} 2**40{suffix}", config_change(change, manifest=manifest), base=base))
    for manifest, suffix in variants:
        cases.append(tamper_case(f"config.json: nested 200,000 deep{suffix}", config_bytes(_deep, manifest=manifest)))
        cases.append(
            tamper_case(f"config.json: 256 MiB (NUL-padded){suffix}", config_bytes(lambda old: old, manifest=manifest, sparse_to=1 << 28))
        )
        cases.append(
            tamper_case(
                f"config.json: 80 MB of spaces after the object (valid JSON){suffix}",
                config_bytes(lambda old: old + b" " * 80_000_000, manifest=manifest),
            )
        )
        for label, change in [
            ("one item row NaN", _nan_item_row),
            ("one user bias +inf", _inf_user_bias),
            ("weights stored as int64", _as_dtype(np.int64)),
            ("weights stored as float64 (same values)", _as_dtype(np.float64)),
        ]:
            cases.append(tamper_case(f"tensors.safetensors: {label}{suffix}", tensors_change(change, manifest=manifest)))
        cases.append(
            tamper_case(f"tensors.safetensors: header length field claims 2**40 bytes{suffix}", header_claims(2**40, manifest=manifest))
        )
        for file, label, make in NPY_EDITS:
            cases.append(tamper_case(f"{file}: {label}{suffix}", npy_change(file, make, manifest=manifest)))
    cases.append(tamper_case("items.json: first two IDs swapped", registry_swap("items.json", fingerprint="none", manifest=False)))
    for fp, what in (("key", "config's item_fingerprint recomputed"), ("everywhere", "every item fingerprint in config.json recomputed")):
        for manifest, suffix in variants:
            cases.append(
                tamper_case(
                    f"items.json: first two IDs swapped, {what}{suffix}", registry_swap("items.json", fingerprint=fp, manifest=manifest)
                )
            )
    for manifest, suffix in variants:
        cases.append(
            tamper_case(
                f"users.json: first two IDs swapped, every user fingerprint in config.json recomputed{suffix}",
                registry_swap("users.json", fingerprint="everywhere", manifest=manifest),
            )
        )
    big = lambda w: 10**9  # noqa: E731
    past_end = lambda w: len(w.item_ids) + 5  # noqa: E731
    cases.append(
        ivf_case(
            "IVF index-items.faiss: a label set to 10**9 (file checksum not recomputed)",
            ivf_label("index-items.faiss", big, checksum=False, manifest=False),
        )
    )
    for manifest, suffix in variants:
        cases.append(
            ivf_case(
                f"IVF index-items.faiss: a label set to 10**9, file checksum recomputed{suffix}",
                ivf_label("index-items.faiss", big, checksum=True, manifest=manifest),
            )
        )
        cases.append(
            ivf_case(
                f"IVF index-recommend.faiss: a label set to n_items + 5, file checksum recomputed{suffix}",
                ivf_label("index-recommend.faiss", past_end, checksum=True, manifest=manifest),
            )
        )
    return cases


# --- kind: tracebacks ----------------------------------------------------------------------------------


def cli_case(
    kind: str,
    name: str,
    argv_of: Callable[[Ctx, Path | None], list],
    *,
    expect: str = "refuse",
    names: tuple | list = (),
    line: int | None = None,
    base: str | None = "A",
    timeout: float = QUERY_TIMEOUT,
    prepare: Callable[[Ctx, Path | None], None] | None = None,
    check: Callable[[Ctx, Run, Path | None], str | None] | None = None,
    nobody: bool = False,
) -> Case:
    """One command on a fresh copy of ``base``; judged by :func:`judge` (``check`` sees the run on success)."""

    def fn(ctx: Ctx) -> Verdict:
        art = ctx.copy(base) if base else None
        if prepare is not None:
            try:
                prepare(ctx, art)
            except Skip as exc:
                return Verdict(HELD, f"not applicable: {exc}")
        uid = None
        if nobody and os.geteuid() == 0:
            if not ctx.world.nobody_ok:
                return Verdict(HELD, "not applicable: a child cannot run as nobody here")
            uid = NOBODY
        run = ctx.cli(argv_of(ctx, art), timeout=timeout, uid=uid)
        v = judge(run, expect=expect, names=names, line=line, check=(lambda r: check(ctx, r, art)) if check else None)
        return worst([v, leftover_verdict(ctx.dir, "left behind")]) if v.held else v

    return Case(kind, name, fn, timeout=max(CASE_TIMEOUT, timeout * 3))


def fit_sane(ctx: Ctx, run: Run, art: Path | None) -> str | None:
    """A fit that succeeded must have written a loadable model with finite predictions."""
    sig = ctx.signature(ctx.dir / "OUT")
    if not sig.get("ok"):
        return f"exit 0 but the artifact written does not load: {sig.get('error', '')[:150]}"
    if not sig.get("finite"):
        return "exit 0 and wrote a model whose predictions are NaN / infinite"
    return None


def _fit(extra: list, *, implicit: bool = False, ratings: str = "ratings") -> Callable[[Ctx, Path | None], list]:
    if implicit:
        return lambda ctx, art: [
            "fit-implicit",
            ctx.world.data[ratings],
            "--out",
            ctx.dir / "OUT",
            "--n-factors",
            "4",
            "--iterations",
            "2",
            *extra,
        ]
    return lambda ctx, art: [
        "fit",
        ctx.world.data[ratings],
        "--out",
        ctx.dir / "OUT",
        "--epochs",
        "2",
        "--n-factors",
        "4",
        "--threads",
        "1",
        "--no-progress",
        *extra,
    ]


def _q(*argv) -> Callable[[Ctx, Path | None], list]:
    """A command on the case's artifact copy: ``ART`` in ``argv`` is replaced by its path, ``RATINGS`` by the ratings file."""

    def argv_of(ctx: Ctx, art: Path | None) -> list:
        return [_subst(ctx, art, a) for a in argv]

    return argv_of


BIG = "1000000000"
HUGE = str(2**63)


def traceback_cases(world: World) -> list[Case]:
    cases: list[Case] = []

    def add(name, argv_of, **kw):
        cases.append(cli_case("tracebacks", name, argv_of, **kw))

    # similar / recommend / evaluate / export / plot / index: absurd numbers
    for flag, value, expect in [
        ("-k", BIG, "sane"),
        ("-k", "2.5", "refuse"),
        ("-k", "0", "sane"),
        ("-k", "-1", "refuse"),
        ("-k", HUGE, "sane"),
        ("--threads", "0", "sane"),
        ("--threads", "-1", "sane"),
        ("--threads", BIG, "sane"),
    ]:
        add(f"similar {flag} {value}", _q("similar", "ART", "1", "2", flag, value), expect=expect)
        add(f"recommend --user 1 2 {flag} {value}", _q("recommend", "ART", "--user", "1", "2", flag, value), expect=expect)
    add(f"similar --index-type hnsw --threads {BIG}", _q("similar", "ART", "1", "--index-type", "hnsw", "--threads", BIG), expect="sane")
    add(
        f"recommend --index-type ivf --user 1 -k {BIG}",
        _q("recommend", "ART", "--user", "1", "--index-type", "ivf", "-k", BIG),
        expect="sane",
    )
    add(f"recommend --anonymous -k {BIG}", _q("recommend", "ART", "--anonymous", "-k", BIG), expect="sane")
    add(f"similar --table user 1 -k {BIG}", _q("similar", "ART", "--table", "user", "1", "-k", BIG), expect="sane")
    for ident in ("abc", "99999", "1e3", str(2**64), "-0", "07"):
        add(f"similar {ident} (int model)", _q("similar", "ART", ident))
        add(f"recommend --user {ident} (int model)", _q("recommend", "ART", "--user", ident))
    for flag, value, expect in [
        ("-k", BIG, "sane"),
        ("-k", "0", "sane"),
        ("-k", "-1", "refuse"),
        ("--threshold", "nan", "refuse"),
        ("--threshold", "inf", "sane"),
        ("--threshold", "-1e308", "sane"),
    ]:
        add(f"evaluate {flag} {value}", _q("evaluate", "ART", "RATINGS", flag, value), expect=expect)
    for value, expect in [("-1", "refuse"), ("0", "sane"), (BIG, "sane"), ("2.5", "refuse")]:
        add(f"export --digits {value}", _q("export", "ART", "--table", "item", "--out", "DIR/emb.csv", "--digits", value), expect=expect)
    for value, expect in [("-1", "refuse"), ("0", "sane"), (BIG, "sane")]:
        add(f"plot pca --n {value}", _q("plot", "ART", "pca", "--out", "DIR/p.png", "--n", value), expect=expect)
    for value, expect in [("-1", "sane"), (BIG, "sane")]:
        add(
            f"plot bias --min-ratings {value}",
            _q("plot", "ART", "bias", "--out", "DIR/p.png", "--ratings", "RATINGS", "--min-ratings", value),
            expect=expect,
        )
    for value, expect in [("0", "sane"), ("-1", "sane"), (BIG, "sane")]:
        add(f"index --threads {value}", _q("index", "ART", "--threads", value), expect=expect)
    add(
        "predict --unknown raise with unknown IDs",
        _q("predict", "ART", "PAIRS", "--unknown", "raise"),
        names=["pairs.csv", "999999", "888888"],
    )

    # fit: every numeric option
    fit_bad = [
        ("--lr", "-1", "refuse"), ("--lr", "nan", "refuse"), ("--lr", "inf", "refuse"), ("--lr", "0", "refuse"), ("--lr", "1e30", "sane"),
        ("--weight-decay", "-5", "refuse"), ("--weight-decay", "nan", "refuse"), ("--weight-decay", "inf", "refuse"), ("--weight-decay", "1e30", "sane"),
        ("--epochs", "0", "refuse"), ("--epochs", "-1", "refuse"), ("--epochs", "2.5", "refuse"), ("--epochs", HUGE, "sane"),
        ("--n-factors", "0", "refuse"), ("--n-factors", "-1", "refuse"), ("--n-factors", str(10**12), "sane"), ("--n-factors", HUGE, "sane"),
        ("--unknown-frac", "nan", "refuse"), ("--unknown-frac", "0.7", "refuse"), ("--unknown-frac", "-0.1", "refuse"),
        ("--early-stopping", "0", "refuse"), ("--early-stopping", "-1", "refuse"), ("--early-stopping", BIG, "sane"),
        ("--seed", "-1", "sane"), ("--seed", str(2**64), "sane"), ("--seed", "nan", "refuse"),
        ("--threads", "0", "sane"), ("--threads", "-1", "sane"), ("--threads", BIG, "sane"),
        ("--valid-sample", "0", "refuse"), ("--valid-sample", "-1", "refuse"), ("--valid-sample", str(10**12), "sane"),
        ("--valid-frac", "0", "sane"), ("--valid-frac", "1", "refuse"), ("--valid-frac", "-0.5", "refuse"), ("--valid-frac", "nan", "refuse"), ("--valid-frac", "2", "refuse"),
        ("--device", "foo", "refuse"), ("--device", "cuda:99", "sane"), ("--device", "", "refuse"),
    ]  # fmt: skip
    for flag, value, expect in fit_bad:
        timeout = 20.0 if value in (HUGE, BIG) or flag == "--epochs" else FIT_TIMEOUT
        add(f"fit {flag} {value!r}", _fit([flag, value]), expect=expect, base=None, timeout=timeout, check=fit_sane)
    for extra, expect in [
        (["--y-range", "nan", "5"], "refuse"), (["--y-range", "5", "1"], "refuse"), (["--y-range", "-inf", "inf"], "refuse"), (["--y-range", "1", "1e308"], "sane"),
        (["--engine", "autograd", "--batch-size", "0"], "refuse"), (["--engine", "autograd", "--batch-size", "-1"], "refuse"),
        (["--engine", "autograd", "--batch-size", str(10**12)], "sane"), (["--engine", "autograd", "--device", "foo"], "refuse"),
        (["--valid-frac", "0.5", "--valid", "RATINGS"], "refuse"),
    ]:  # fmt: skip
        add(
            f"fit {' '.join(extra)}",
            lambda ctx, art, e=extra: _fit([str(ctx.world.data["ratings"]) if a == "RATINGS" else a for a in e])(ctx, art),
            expect=expect,
            base=None,
            timeout=FIT_TIMEOUT,
            check=fit_sane,
        )
    imp_bad = [
        (["--n-factors", "0"], "refuse"), (["--n-factors", "-1"], "refuse"), (["--n-factors", str(10**12)], "sane"),
        (["--iterations", "0"], "refuse"), (["--iterations", "-1"], "refuse"), (["--iterations", HUGE], "sane"),
        (["--regularization", "nan"], "refuse"), (["--regularization", "-1"], "refuse"), (["--alpha", "nan"], "refuse"), (["--alpha", "-1"], "refuse"),
        (["--model", "bpr", "--learning-rate", "nan"], "refuse"), (["--model", "bpr", "--learning-rate", "-1"], "refuse"),
        (["--threshold", "nan"], "refuse"), (["--threshold", "inf"], "refuse"), (["--model", "popularity", "--threshold", "1e308"], "refuse"),
        (["--threads", "-1"], "sane"), (["--threads", BIG], "sane"), (["--seed", "-1"], "sane"), (["--seed", str(2**64)], "sane"),
    ]  # fmt: skip
    for extra, expect in imp_bad:
        timeout = 20.0 if HUGE in extra or BIG in extra else FIT_TIMEOUT
        add(f"fit-implicit {' '.join(extra)}", _fit(extra, implicit=True), expect=expect, base=None, timeout=timeout, check=fit_sane)
    add("demo --epochs 0", lambda ctx, art: ["demo", "--out", ctx.dir / "OUT", "--epochs", "0"], base=None, timeout=FIT_TIMEOUT)

    # missing files, directories where files are expected, a file where a directory is expected
    for label, argv in [
        ("fit MISSING.csv", ["fit", "DIR/missing.csv", "--out", "DIR/OUT"]),
        ("fit --valid MISSING.csv", ["fit", "RATINGS", "--out", "DIR/OUT", "--valid", "DIR/missing.csv"]),
        ("fit --items MISSING.csv", ["fit", "RATINGS", "--out", "DIR/OUT", "--items", "DIR/missing.csv", *FIT_ARGS]),
        ("fit --resume MISSING_CK", ["fit", "RATINGS", "--out", "DIR/OUT", "--resume", "DIR/missing_ck", *FIT_ARGS]),
        ("predict ART MISSING.csv", ["predict", "ART", "DIR/missing.csv"]),
        ("evaluate ART MISSING.csv", ["evaluate", "ART", "DIR/missing.csv"]),
        ("evaluate --train MISSING.csv", ["evaluate", "ART", "RATINGS", "--train", "DIR/missing.csv"]),
        ("recommend --ratings MISSING.csv", ["recommend", "ART", "--ratings", "DIR/missing.csv"]),
        ("recommend --seen MISSING.csv", ["recommend", "ART", "--user", "1", "--seen", "DIR/missing.csv"]),
        ("export --metadata MISSING.csv", ["export", "ART", "--table", "item", "--out", "DIR/e.csv", "--metadata", "DIR/missing.csv"]),
        ("plot bias --ratings MISSING.csv", ["plot", "ART", "bias", "--out", "DIR/p.png", "--ratings", "DIR/missing.csv"]),
        ("info MISSING_DIR", ["info", "DIR/missing"]),
        ("similar MISSING_DIR 1", ["similar", "DIR/missing", "1"]),
    ]:
        missing = next(Path(x).name for x in argv if "missing" in x)
        add(label, lambda ctx, art, a=argv: [_subst(ctx, art, x) for x in a], names=[missing], timeout=FIT_TIMEOUT)
    for label, argv, name in [
        ("fit DIRECTORY", ["fit", "DIR/adir", "--out", "DIR/OUT"], "adir"),
        ("fit --valid DIRECTORY", ["fit", "RATINGS", "--out", "DIR/OUT", "--valid", "DIR/adir"], "adir"),
        ("fit --items DIRECTORY", ["fit", "RATINGS", "--out", "DIR/OUT", "--items", "DIR/adir", *FIT_ARGS], "adir"),
        ("predict ART DIRECTORY", ["predict", "ART", "DIR/adir"], "adir"),
        ("evaluate ART DIRECTORY", ["evaluate", "ART", "DIR/adir"], "adir"),
        ("recommend --ratings DIRECTORY", ["recommend", "ART", "--ratings", "DIR/adir"], "adir"),
        ("recommend --seen DIRECTORY", ["recommend", "ART", "--user", "1", "--seen", "DIR/adir"], "adir"),
        ("predict -o DIRECTORY", ["predict", "ART", "PAIRS", "-o", "DIR/adir"], "adir"),
        ("export --out DIRECTORY.csv", ["export", "ART", "--table", "item", "--out", "DIR/adir.csv"], "adir.csv"),
        ("plot --out DIRECTORY.png", ["plot", "ART", "pca", "--out", "DIR/adir.png"], "adir.png"),
        ("info REGULAR_FILE", ["info", "DIR/afile"], "afile"),
        ("index REGULAR_FILE", ["index", "DIR/afile"], "afile"),
    ]:
        add(label, lambda ctx, art, a=argv: [_subst(ctx, art, x) for x in a], names=[name], prepare=_dirs_and_files, timeout=FIT_TIMEOUT)

    def replace_by_dir(file: str) -> Callable[[Path], list[str]]:
        def prepare(art: Path) -> list[str]:
            path = _one(art, file)
            path.unlink()
            path.mkdir()
            return [file]

        return prepare

    for file in ("config.json", "tensors.safetensors", "users.json"):
        cases.append(tamper_case(f"artifact whose {file} is a directory", replace_by_dir(file), kind="tracebacks"))
    variants = [(False, "")] + ([(True, ", manifest recomputed")] if world.has_manifest else [])
    for manifest, suffix in variants:
        cases.append(
            tamper_case(f"config.json is a JSON list{suffix}", config_change(lambda cfg: [cfg], manifest=manifest), kind="tracebacks")
        )
        cases.append(
            tamper_case(
                f"config.json is a JSON string{suffix}",
                config_change(lambda cfg: "collabemb-artifact", manifest=manifest),
                kind="tracebacks",
            )
        )

    # unreadable (chmod 000), run as nobody when the harness is root
    def chmod(target: str, mode: int) -> Callable[[Ctx, Path | None], None]:
        def prepare(ctx: Ctx, art: Path | None) -> None:
            hc.chmod_tree(ctx.dir)
            if target == "ART":
                os.chmod(art, mode)
            elif target in ("ratings", "pairs"):
                (ctx.dir / "w").mkdir()
                os.chmod(ctx.dir / "w", 0o777)  # nobody may write its --out there: only the input is unreadable
                copy = shutil.copyfile(ctx.world.data[target], ctx.dir / "w" / f"{target}.csv")
                os.chmod(copy, mode)
            elif target == "outdir":
                (ctx.dir / "ro").mkdir()
                os.chmod(ctx.dir / "ro", mode)
            else:
                os.chmod(_one(art, target), mode)

        return prepare

    for label, argv, target, mode, name in [
        ("info ART with config.json chmod 000", ["info", "ART"], "config.json", 0, "config.json"),
        ("predict ART with tensors.safetensors chmod 000", ["predict", "ART", "PAIRS"], "tensors.safetensors", 0, "tensors.safetensors"),
        ("info ART with the artifact directory chmod 000", ["info", "ART"], "ART", 0, "ART"),
        ("similar ART with items.json chmod 000", ["similar", "ART", "1"], "items.json", 0, "items.json"),
        ("fit RATINGS chmod 000", ["fit", "DIR/w/ratings.csv", "--out", "DIR/w/OUT"], "ratings", 0, "ratings.csv"),
        ("predict PAIRS chmod 000", ["predict", "ART", "DIR/w/pairs.csv"], "pairs", 0, "pairs.csv"),
        ("index ART whose directory is read-only (chmod 555)", ["index", "ART"], "ART", 0o555, "ART"),
    ]:
        add(
            label,
            lambda ctx, art, a=argv: [_subst(ctx, art, x) for x in a],
            names=[name],
            prepare=chmod(target, mode),
            nobody=True,
            timeout=FIT_TIMEOUT,
        )
    return cases


def _subst(ctx: Ctx, art: Path | None, token: str) -> str:
    if token == "ART":
        return str(art)
    if token == "RATINGS":
        return str(ctx.world.data["ratings"])
    if token == "PAIRS":
        return str(ctx.world.data["pairs"])
    return token.replace("DIR/", str(ctx.dir) + "/")


def _dirs_and_files(ctx: Ctx, art: Path | None) -> None:
    for name in ("adir", "adir.csv", "adir.png"):
        (ctx.dir / name).mkdir()
    (ctx.dir / "afile").write_text("not an artifact\n")


# --- kind: bad input files -------------------------------------------------------------------------------

BAD_LINE = 1234  # the physical line (the header is line 1) that carries the bad value


def same_as_a(ctx: Ctx, run: Run, art: Path | None) -> str | None:
    """A fit that succeeded on a file holding A's ratings must give A's predictions."""
    pred = ctx.cli(["predict", ctx.dir / "OUT", ctx.world.data["pairs"]])
    if pred.rc != 0:
        return f"exit 0 but the model written cannot predict: {pred.short()}"
    if pred.stdout != ctx.world.baseline[("A", "predict")]:
        return f"exit 0 but the model differs from the one trained on the clean file ({_diff(ctx.world.baseline[('A', 'predict')], pred.stdout)})"
    return None


def file_case(
    name: str, make: Callable[[World], str | bytes], filename: str, *, expect: str = "refuse", line: int | None = None, args=(), check=None
) -> Case:
    """``collabemb fit FILE`` (A's settings) on a hostile file; ``expect="same"``: success must train model A."""

    def fn(ctx: Ctx) -> Verdict:
        path = hc.write_text(ctx.dir / filename, make(ctx.world))
        argv = ["fit", path, "--out", ctx.dir / "OUT", *FIT_ARGS, "--seed", "0", *[_subst(ctx, None, a) for a in args]]
        run = ctx.cli(argv, timeout=FIT_TIMEOUT)
        chk = check or (same_as_a if expect == "same" else fit_sane)
        v = judge(run, expect="sane" if expect == "same" else expect, names=[filename], line=line, check=lambda r: chk(ctx, r, None))
        return worst([v, leftover_verdict(ctx.dir, "left behind")]) if v.held else v

    return Case("inputs", name, fn)


def _base_text(w: World, *, timestamp: bool = False) -> str:
    return (w.data["ratings_ts"] if timestamp else w.data["ratings"]).read_text()


def _bad(value: str, *, timestamp: bool = False, column: int = 2) -> Callable[[World], str]:
    """A's ratings with one field of line BAD_LINE replaced by ``value``."""

    def make(w: World) -> str:
        text = _base_text(w, timestamp=timestamp)
        fields = text.split("\n")[BAD_LINE - 1].split(",")
        fields[column] = value
        return hc.with_line(text, BAD_LINE, ",".join(fields))

    return make


def _str_ids(w: World) -> list[str]:
    """A's ratings with string IDs (u1, i1...), one line per rating, header first."""
    lines = _base_text(w).rstrip("\n").split("\n")
    out = [lines[0]]
    for ln in lines[1:]:
        u, i, r = ln.split(",")
        out.append(f"u{u},i{i},{r}")
    return out


def _multiline(w: World) -> str:
    """String IDs; lines 3-4 and 6-8 hold records whose quoted user ID spans lines; line 12 has a bad rating."""
    lines = _str_ids(w)
    body = [lines[0], lines[1], '"multi\nline",i5,4', lines[2], '"x\ny\nz",i6,3', lines[3], lines[4], lines[5], "u7,i7,abc", *lines[6:]]
    return "\n".join(body) + "\n"


MULTILINE_BAD_LINE = 12


def _latin1(w: World) -> bytes:
    lines = _str_ids(w)
    text = "\n".join(lines[: BAD_LINE - 1]) + "\n"
    _u, i, r = lines[BAD_LINE - 1].split(",")
    return text.encode() + f"caf\xe9,{i},{r}\n".encode("latin-1") + ("\n".join(lines[BAD_LINE:]) + "\n").encode()


def latin1_check(ctx: Ctx, run: Run, art: Path | None) -> str | None:
    """Accepting a non-UTF-8 file is fine only if the ID is then usable as the user would write it."""
    q = ctx.cli(["recommend", ctx.dir / "OUT", "--user", "caf\xe9", "-k", "1"])
    if q.rc != 0:
        return f"exit 0, but the Latin-1 ID of line {BAD_LINE} became something else (recommend --user 'caf\\xe9': {q.short()})"
    return None


def compare_case(name: str, files: dict[str, str], argv: list[str], ref_files: dict[str, str], *, names: list[str]) -> Case:
    """A command on hostile ``files``: refused cleanly, or the same answer as with ``ref_files`` (the IDs written plainly)."""

    def fn(ctx: Ctx) -> Verdict:
        art = ctx.copy("A")
        for fname, text in files.items():
            hc.write_text(ctx.dir / fname, text)
        ref_dir = ctx.dir / "ref"
        for fname, text in ref_files.items():
            hc.write_text(ref_dir / fname, text)
        sub = lambda d: [str(art) if a == "ART" else a.replace("DIR/", f"{d}/") for a in argv]  # noqa: E731
        ref = ctx.cli(sub(ref_dir))
        if ref.rc != 0:
            return Verdict(HARNESS, f"the reference run with plain IDs failed: {ref.short()}")
        run = ctx.cli(sub(ctx.dir))
        if run.rc != 0 or TRACEBACK in run.stderr:
            return judge(run, names=names)
        ok = run.stdout == ref.stdout
        return (
            Verdict(HELD, "answered as for the plain IDs")
            if ok
            else Verdict("silent wrong result", f"exit 0, answers differ from those for the plain IDs ({_diff(ref.stdout, run.stdout)})")
        )

    return Case("inputs", name, fn)


def seen_padded_case(which: str) -> Case:
    """``recommend --user 1 --seen FILE`` where FILE names user 1's top item T with a zero-padded ID
    (``00T`` / user ``001``): refused, or T left out exactly as with the plain ID (never silently kept)."""

    def fn(ctx: Ctx) -> Verdict:
        art = ctx.copy("A")
        argv = lambda f: ["recommend", art, "--user", "1", "-k", "10", "--seen", f]  # noqa: E731
        other = hc.write_text(ctx.dir / "other.csv", "user,item,rating\n2,1,4\n")  # replaces the stored pairs, excludes nothing of user 1
        free = ctx.cli(argv(other))
        rows = [ln.split() for ln in free.stdout.splitlines()[1:] if ln.strip()]
        if free.rc != 0 or not rows:
            return Verdict(HARNESS, f"recommend with a --seen file failed: {free.short()}")
        top = int(rows[0][1])
        plain = hc.write_text(ctx.dir / "plain.csv", f"user,item,rating\n1,{top},4\n")
        padded = f"user,item,rating\n1,00{top},4\n" if which == "item" else f"user,item,rating\n001,{top},4\n"
        hostile = hc.write_text(ctx.dir / "seen.csv", padded)
        ref = ctx.cli(argv(plain))
        if ref.rc != 0 or ref.stdout == free.stdout:
            return Verdict(HARNESS, f"the plain --seen file changed nothing or failed: {ref.short()}")
        run = ctx.cli(argv(hostile))
        if run.rc != 0 or TRACEBACK in run.stderr:
            return judge(run, names=["seen.csv"])
        if run.stdout == ref.stdout:
            return Verdict(HELD, f"the padded {which} ID was read as the plain one (item {top} left out)")
        if run.stdout == free.stdout:
            return Verdict(
                "silent wrong result",
                f"exit 0, the {which} ID {padded.split(chr(10))[1].split(',')[0 if which == 'user' else 1]!r} was silently ignored: item {top} still recommended",
            )
        return Verdict("silent wrong result", f"exit 0, answers differ from those for the plain ID ({_diff(ref.stdout, run.stdout)})")

    return Case("inputs", f"recommend --seen FILE naming user 1's top item with a zero-padded {which} ID (int model)", fn)


def bad_out_case(
    name: str,
    out_of: Callable[[Ctx], str],
    *,
    names: list[str],
    prepare: Callable[[Ctx], None] | None = None,
    nobody: bool = False,
    checkpoint: bool = False,
) -> Case:
    """``fit --out BAD`` (a fit whose training takes seconds) must be refused before training."""

    def fn(ctx: Ctx) -> Verdict:
        if prepare is not None:
            prepare(ctx)
        uid = None
        if nobody and os.geteuid() == 0:
            if not ctx.world.nobody_ok:
                return Verdict(HELD, "not applicable: a child cannot run as nobody here")
            hc.chmod_tree(ctx.dir)
            os.chmod(ctx.dir / "ro", 0o555)
            uid = NOBODY
        bad = out_of(ctx)
        target = ["--out", ctx.dir / "OUT", "--checkpoint", bad] if checkpoint else ["--out", bad]
        argv = [
            "fit",
            ctx.world.data["ratings"],
            *target,
            "--epochs",
            str(LONG_EPOCHS),
            "--n-factors",
            "8",
            "--threads",
            "1",
            "--no-progress",
        ]
        run = ctx.cli(argv, timeout=FIT_TIMEOUT, uid=uid)
        v = judge(run, names=names)
        if (ctx.dir / "afile").exists() and (ctx.dir / "afile").read_text() != "precious\n":
            return Verdict("silent wrong result", f"the regular file at --out was overwritten ({v.detail[:120]})")
        if (ctx.dir / "notes").is_dir() and not (ctx.dir / "notes" / "notes.txt").exists():
            return Verdict("silent wrong result", f"the non-artifact directory's notes.txt is gone ({v.detail[:120]})")
        w = ctx.world
        train = w.long_fit_cpu - w.short_fit_cpu
        limit = w.short_fit_cpu + 0.25 * train  # an early refusal costs less than a whole 3-epoch fit
        if run.rc != 0 and v.outcome in (HELD, "vague error") and run.cpu >= limit:
            why = f"refused only after training: {run.cpu:.1f} CPU s (the fit takes {w.long_fit_cpu:.1f}, {train:.1f} of them training)"
            return Verdict("vague error", f"{why}: {run.short()[:120]}")
        if v.held:
            v.detail += f" (after {run.cpu:.1f} CPU s; training alone takes {train:.1f})"
            v = worst([v, leftover_verdict(ctx.dir, "left behind")])
        return v

    return Case("inputs", name, fn)


def input_cases(world: World) -> list[Case]:
    cases: list[Case] = []
    L = BAD_LINE
    for value in ("1e39", "nan", "inf", "-inf", "", "5 stars"):
        cases.append(file_case(f"rating {value!r} on line {L}", _bad(value), "ratings.csv", line=L))
    cases.append(file_case(f"rating '1e-50' on line {L} (tiny but finite)", _bad("1e-50"), "ratings.csv", expect="sane", line=L))
    cases.append(
        file_case("clean file with a timestamp column (control)", lambda w: _base_text(w, timestamp=True), "ratings.csv", expect="same")
    )
    for value in ("1e30", "-1e30", "nan", "2.5"):
        cases.append(
            file_case(f"timestamp {value!r} on line {L}", _bad(value, timestamp=True, column=3), "ratings.csv", expect="same", line=L)
        )
    cases.append(file_case(f"user ID 2**63 on line {L} (beyond int64)", _bad(str(2**63), column=0), "ratings.csv", expect="sane", line=L))
    cases.append(_valid_case(L))
    cases.append(file_case("header user,item,rating,rating (the two differ)", lambda w: _dup_column(w, "rating"), "ratings.csv"))
    cases.append(file_case("header user,item,item,rating", lambda w: _dup_column(w, "item"), "ratings.csv"))
    for method, ext, honest in [
        ("gzip", ".csv", False), ("bz2", ".gz", False), ("xz", ".bz2", False), ("zstd", ".csv", False), ("gzip", ".xz", False),
        ("gzip", ".csv.gz", True), ("zstd", ".csv.zst", True), ("xz", ".csv.xz", True),
    ]:  # fmt: skip
        label = f"{method}-compressed as ratings{ext}" + (" (honest extension)" if honest else " (misleading extension)")
        cases.append(file_case(label, lambda w, m=method: hc.compress(_base_text(w).encode(), m), f"ratings{ext}", expect="same"))
    cases.append(file_case("plain CSV named ratings.csv.gz", lambda w: _base_text(w), "ratings.csv.gz", expect="same"))
    cases.append(
        file_case(
            f"quoted multi-line IDs, then a bad rating on line {MULTILINE_BAD_LINE}", _multiline, "ratings.csv", line=MULTILINE_BAD_LINE
        )
    )
    cases.append(
        file_case(
            f"string IDs, a bad rating on line {L}",
            lambda w: hc.with_line("\n".join(_str_ids(w)) + "\n", L, "u1,i1,abc"),
            "ratings.csv",
            line=L,
        )
    )
    cases.append(file_case("UTF-8 BOM", lambda w: "\ufeff" + _base_text(w), "ratings.csv", expect="same"))
    cases.append(file_case("CRLF line ends", lambda w: _base_text(w).replace("\n", "\r\n"), "ratings.csv", expect="same"))
    cases.append(file_case("CR-only line ends (old Mac)", lambda w: _base_text(w).replace("\n", "\r"), "ratings.csv", expect="same"))
    cases.append(file_case(f"NUL byte inside line {L}", lambda w: _nul(w), "ratings.csv", line=L))
    cases.append(file_case("NUL bytes after the last line", lambda w: _base_text(w) + "\x00" * 16, "ratings.csv", expect="same"))
    cases.append(
        file_case(f"Latin-1 byte in a string ID on line {L} (not UTF-8)", _latin1, "ratings.csv", expect="sane", line=L, check=latin1_check)
    )
    cases.append(file_case("empty file (0 bytes)", lambda w: "", "ratings.csv"))
    cases.append(file_case("header only", lambda w: "user,item,rating\n", "ratings.csv"))
    cases.append(file_case("blank lines only", lambda w: "\n\n\n", "ratings.csv"))
    cases.append(file_case(f"4 fields on line {L}", lambda w: hc.with_line(_base_text(w), L, "1,2,3,4"), "ratings.csv", line=L))
    cases.append(file_case(f"2 fields on line {L}", lambda w: hc.with_line(_base_text(w), L, "1,2"), "ratings.csv", line=L))
    cases.append(
        file_case(
            f"--duplicates raise, line {L} repeats line 2's pair",
            lambda w: _dup_pair(w),
            "ratings.csv",
            line=L,
            args=["--duplicates", "raise"],
        )
    )

    cases.append(seen_padded_case("item"))
    cases.append(seen_padded_case("user"))
    new_user = "item,rating\n050,5\n12,4\n33,1\n"
    cases.append(
        compare_case(
            "recommend --ratings FILE with item '050' (int model)",
            {"new.csv": new_user},
            ["recommend", "ART", "--ratings", "DIR/new.csv", "-k", "10"],
            {"new.csv": new_user.replace("050", "50")},
            names=["new.csv"],
        )
    )
    cases.append(
        compare_case(
            "predict PAIRS with user '007' (int model)",
            {"p.csv": "user,item\n007,5\n"},
            ["predict", "ART", "DIR/p.csv"],
            {"p.csv": "user,item\n7,5\n"},
            names=["p.csv"],
        )
    )

    def afile(ctx: Ctx) -> None:
        (ctx.dir / "afile").write_text("precious\n")

    def notes(ctx: Ctx) -> None:
        (ctx.dir / "notes").mkdir()
        (ctx.dir / "notes" / "notes.txt").write_text("mine\n")

    def ro(ctx: Ctx) -> None:
        (ctx.dir / "ro").mkdir()

    cases.append(bad_out_case("fit --out under a regular file", lambda ctx: f"{ctx.dir}/afile/ART", names=["afile"], prepare=afile))
    cases.append(bad_out_case("fit --out an existing regular file", lambda ctx: f"{ctx.dir}/afile", names=["afile"], prepare=afile))
    cases.append(
        bad_out_case(
            "fit --out a non-empty directory that is not an artifact", lambda ctx: f"{ctx.dir}/notes", names=["notes"], prepare=notes
        )
    )
    cases.append(bad_out_case("fit --out the ratings file itself", lambda ctx: str(ctx.world.data["ratings"]), names=["ratings.csv"]))
    cases.append(bad_out_case("fit --out ''", lambda ctx: "", names=[]))
    cases.append(bad_out_case("fit --out /dev/null", lambda ctx: "/dev/null", names=["/dev/null"]))
    cases.append(
        bad_out_case(
            "fit --checkpoint under a regular file", lambda ctx: f"{ctx.dir}/afile/CK", names=["afile"], prepare=afile, checkpoint=True
        )
    )
    cases.append(
        bad_out_case(
            "fit --out in a read-only directory (chmod 555)", lambda ctx: f"{ctx.dir}/ro/ART", names=["ro"], prepare=ro, nobody=True
        )
    )
    return cases


def _valid_case(line: int) -> Case:
    def fn(ctx: Ctx) -> Verdict:
        valid = hc.write_text(ctx.dir / "valid.csv", _bad("nan")(ctx.world))
        argv = ["fit", ctx.world.data["ratings"], "--out", ctx.dir / "OUT", *FIT_ARGS, "--valid", valid]
        return judge(ctx.cli(argv, timeout=FIT_TIMEOUT), names=["valid.csv"], line=line)

    return Case("inputs", f"--valid file with rating 'nan' on line {line}", fn)


def _dup_column(w: World, col: str) -> str:
    lines = _base_text(w).rstrip("\n").split("\n")
    head = "user,item,rating,rating" if col == "rating" else "user,item,item,rating"
    out = [head]
    for ln in lines[1:]:
        u, i, r = ln.split(",")
        out.append(f"{u},{i},{r},{6 - int(r)}" if col == "rating" else f"{u},{i},{(int(i) % N_ITEMS) + 1},{r}")
    return "\n".join(out) + "\n"


def _nul(w: World) -> str:
    text = _base_text(w)
    line = text.split("\n")[BAD_LINE - 1]
    return hc.with_line(text, BAD_LINE, line[:1] + "\x00" + line[1:])


def _dup_pair(w: World) -> str:
    text = _base_text(w)
    second = text.split("\n")[1]
    u, i, r = second.split(",")
    return hc.with_line(text, BAD_LINE, f"{u},{i},{6 - int(r)}")


# --- kind: crash and concurrency ---------------------------------------------------------------------------


def leftovers(d: Path) -> list[str]:
    """Temporary files and directories, and snapshots no pointer names, under ``d``."""
    found = []
    for p in sorted(d.rglob("*")):
        n = p.name
        if n == ".lock":
            continue
        if n.startswith(".") or any(t in n for t in (".tmp-", ".old-", ".ckpt-", ".partial")):
            found.append(hc.normalise(str(p.relative_to(d))))
    for pointer in d.rglob("CURRENT"):
        text = pointer.read_text(errors="replace")
        for snap in pointer.parent.iterdir():
            if snap.is_dir() and snap.name.startswith("snap-") and snap.name not in text:
                found.append(hc.normalise(str(snap.relative_to(d))) + " (a snapshot CURRENT does not name)")
    return sorted(set(found))


def leftover_verdict(d: Path, when: str) -> Verdict:
    left = leftovers(d)
    if left:
        return Verdict("leftover", f"{when}: {', '.join(left[:4])}" + (f" (+{len(left) - 4})" if len(left) > 4 else ""))
    return Verdict(HELD, "")


def _sig_key(sig: dict) -> tuple:
    return (sig.get("pred"), sig.get("seen"), sig.get("tables"), sig.get("index"))


def state_of(ctx: Ctx, art: Path, states: dict[str, dict], *, absent_ok: bool) -> tuple[str, Verdict]:
    """Which known model ``art`` loads as (``states``: name -> signature); a verdict when none."""
    sig = ctx.signature(art)
    if sig.get("ok"):
        for name, ref in states.items():
            if _sig_key(sig) == _sig_key(ref):
                return name, Verdict(HELD, f"loads as the complete {name} model")

        def whose(key: str) -> str:
            return next((n for n, ref in states.items() if ref.get(key) == sig.get(key)), "neither")

        return "mixed", Verdict(
            "silent wrong result",
            f"loads as a MIXED model: predictions of {whose('pred')}, seen pairs of {whose('seen')}, index {'present' if sig.get('index') else 'absent'}",
        )
    if sig.get("type") in ("hang", "crash"):
        return "error", Verdict(sig["type"], f"loading it: {sig.get('error')}")
    if absent_ok and sig.get("clean"):
        return "absent", Verdict(HELD, f"not there yet, as before the fit (clean refusal: {sig.get('error', '')[:100]})")
    kind = "vague error" if sig.get("clean") else "traceback"
    return "error", Verdict(
        kind,
        f"unreadable: the old model is lost ({sig.get('error', '')[:150]})"
        if not absent_ok
        else f"unreadable ({sig.get('error', '')[:150]})",
    )


def _event_label(events: list[dict], n: int) -> str:
    e = next((e for e in events if e["n"] == n), None)
    return f"{e['event']} {hc.normalise(e['path'])}" if e else "?"


def kill_points(events: list[dict], cap: int) -> list[int]:
    """The events to kill at: a run of consecutive events of one kind in one directory (writing the
    files of a snapshot, removing an old one) is one moment to a reader, so only its first and last
    are kept; then at most ``cap`` of those, evenly spaced, the first and the last included."""

    def key(e: dict) -> tuple:
        return (e["event"], os.path.dirname(hc.normalise(e["path"].split(" -> ")[0])))

    keep = [
        e["n"]
        for k, e in enumerate(events)
        if k == 0 or k == len(events) - 1 or key(e) != key(events[k - 1]) or key(e) != key(events[k + 1])
    ]
    if len(keep) > cap:
        keep = sorted({keep[round(k * (len(keep) - 1) / (cap - 1))] for k in range(cap)})
    return keep


def kill_case(series: str, n: int, events: list[dict]) -> Case:
    """SIGKILL at write event n of a fit (``series``: save_over_old, save_fresh, checkpoint)."""
    total = len(events)
    what = {
        "save_over_old": "`fit --out ART` over an existing artifact",
        "save_fresh": "`fit --out ART` into a new path",
        "checkpoint": "`fit --checkpoint CK --out ART` over an existing artifact",
    }[series]
    name = f"SIGKILL at write event {n}/{total} of {what} ({_event_label(events, n)})"

    def fn(ctx: Ctx) -> Verdict:
        w = ctx.world
        d = ctx.dir / "w"
        d.mkdir()
        if series != "save_fresh":
            hc.copy_tree(w.arts["A"], d / "ART")
        extra = ["--checkpoint", str(d / "CK")] if series == "checkpoint" else []
        argv = w.fit_argv("ratings_b", d / "ART", 1, *extra)
        run = ctx.launcher.run(**audit_spawn(d, argv, n=n, log=ctx.dir / "events.jsonl", cwd=ctx.dir))
        if run.rc != -signal.SIGKILL:
            v = judge(run, expect="sane", label="the fit was not killed", check=lambda r: None)
            if not v.held:
                return v
        new = w.sigs["CK_FINAL" if series == "checkpoint" else "NEW"]
        states = {"new": new} if series == "save_fresh" else {"old": w.sigs["A"], "new": new}
        state, verdict = state_of(ctx, d / "ART", states, absent_ok=series == "save_fresh")
        verdicts = [Verdict(verdict.outcome, f"after the kill, ART {verdict.detail}")]
        extra_info = {"state": state}
        if series == "checkpoint":
            resume = ctx.cli(
                w.fit_argv("ratings_b", d / "ART", 1, "--checkpoint", str(d / "CK"), "--resume", str(d / "CK")), timeout=FIT_TIMEOUT
            )
            if resume.rc == 0:
                extra_info["resumed"] = True
                _, v2 = state_of(ctx, d / "ART", {"new": new}, absent_ok=False)
                verdicts.append(Verdict(v2.outcome, f"after --resume, ART {v2.detail}") if not v2.held else v2)
            else:
                v2 = judge(resume, names=["CK"], label="--resume")
                extra_info["resumed"] = False
                extra_info["resume_refusal"] = v2.detail[:160]
                if not v2.held:
                    verdicts.append(v2)
                rerun = ctx.cli(w.fit_argv("ratings_b", d / "ART", 1, "--checkpoint", str(d / "CK")), timeout=FIT_TIMEOUT)
                verdicts.append(
                    judge(
                        rerun, expect="sane", check=lambda r: None, label="a fresh fit with the same --checkpoint after the refused resume"
                    )
                )
        else:
            rerun = ctx.cli(argv, timeout=FIT_TIMEOUT)
            verdicts.append(judge(rerun, expect="sane", check=lambda r: None, label="the same fit rerun"))
            if rerun.rc == 0:
                _state2, v2 = state_of(ctx, d / "ART", {"new": new}, absent_ok=False)
                if not v2.held:
                    verdicts.append(Verdict(v2.outcome, f"after the rerun, ART {v2.detail}"))
        verdicts.append(leftover_verdict(d, "after the kill and a successful rerun"))
        v = worst(verdicts)
        if v.held:
            was = "not there yet (as before the fit)" if state == "absent" else f"the complete {state} model"
            v = Verdict(
                HELD, f"ART was {was} after the kill" + ("; --resume continued from the checkpoint" if extra_info.get("resumed") else "")
            )
        v.extra = extra_info
        return v

    return Case("crash", name, fn, group=series if series == "checkpoint" else "")


def sigint_case(
    name: str, setup: Callable[[Ctx, Path], tuple[list, Path, int, str]], after: Callable[[Ctx, Path, Run], list[Verdict]]
) -> Case:
    """Ctrl-C (SIGINT) at a deterministic moment: exit 130, one stderr line, nothing already written lost."""

    def fn(ctx: Ctx) -> Verdict:
        d = ctx.dir / "w"
        d.mkdir()
        argv, root, n, match = setup(ctx, d)
        run = ctx.launcher.run(**audit_spawn(root, argv, n=n, log=ctx.dir / "events.jsonl", cwd=ctx.dir, sig=signal.SIGINT, match=match))
        verdicts = [judge_interrupt(run)]
        verdicts += after(ctx, d, run)
        return worst(verdicts)

    return Case("crash", name, fn)


def judge_interrupt(run: Run) -> Verdict:
    if run.timed_out:
        return Verdict("hang", f"no exit {run.seconds:.0f} s after Ctrl-C")
    if TRACEBACK in run.stderr:
        return Verdict("traceback", f"exit {run.rc}: {run.lines[-1][:160] if run.lines else ''}")
    if run.rc is not None and run.rc < 0:
        return Verdict("crash", f"killed by {signal.Signals(-run.rc).name}")
    if run.rc != 130 or len(run.lines) != 1:
        return Verdict("vague error", f"exit {run.rc} (expected 130), {len(run.lines)} stderr lines: {' | '.join(run.lines)[:160]}")
    return Verdict(HELD, f"exit 130: {run.lines[0][:120]}")


def crash_cases(world: World) -> list[Case]:
    cases: list[Case] = []
    for series, cap in (("save_over_old", 20), ("save_fresh", 10), ("checkpoint", 14)):
        events = world.probes[series]
        points = kill_points(events, cap)
        cases += [kill_case(series, n, events) for n in points]

    w = world

    def old_art(ctx: Ctx, d: Path) -> Path:
        return hc.copy_tree(w.arts["A"], d / "ART")

    def old_or_new(ctx: Ctx, d: Path, run: Run) -> list[Verdict]:
        _state, v = state_of(ctx, d / "ART", {"old": w.sigs["A"], "new": w.sigs["NEW"]}, absent_ok=False)
        return [Verdict(v.outcome, f"ART {v.detail}"), leftover_verdict(d, "after the interrupted fit")]

    def reading(ctx: Ctx, d: Path):
        old_art(ctx, d)
        return w.fit_argv("ratings_b", d / "ART", 1), d, 1, "ratings_b.csv"

    cases.append(sigint_case("Ctrl-C while the ratings file is read", reading, old_or_new))

    def training(ctx: Ctx, d: Path):
        old_art(ctx, d)
        return w.fit_argv("ratings_b", d / "ART", 1, "--checkpoint", str(d / "CK")), d / "CK", 1, ""

    def training_after(ctx: Ctx, d: Path, run: Run) -> list[Verdict]:
        sig = ctx.signature(d / "ART")
        out = []
        if not sig.get("ok") or not sig.get("finite"):
            out.append(Verdict("vague error", f"ART unreadable after Ctrl-C: {sig.get('error', 'NaN predictions')[:150]}"))
        if (d / "CK").exists() and any(p.name != ".lock" for p in (d / "CK").iterdir()):
            resume = ctx.cli(w.fit_argv("ratings_b", d / "ART2", 1, "--resume", str(d / "CK")), timeout=FIT_TIMEOUT)
            out.append(judge(resume, expect="sane", check=lambda r: None, label="--resume from the checkpoint written before Ctrl-C"))
        out.append(leftover_verdict(d, "after Ctrl-C"))
        return out

    cases.append(sigint_case("Ctrl-C during training (as the first checkpoint is written)", training, training_after))
    events = w.probes["save_over_old"]
    for n in sorted({1, (len(events) + 1) // 2, len(events)}):

        def saving(ctx: Ctx, d: Path, n=n):
            old_art(ctx, d)
            return w.fit_argv("ratings_b", d / "ART", 1), d, n, ""

        cases.append(sigint_case(f"Ctrl-C at write event {n}/{len(events)} of the save ({_event_label(events, n)})", saving, old_or_new))
    ievents = w.probes["index"]
    if ievents:
        n = (len(ievents) + 1) // 2

        def indexing(ctx: Ctx, d: Path, n=n):
            old_art(ctx, d)
            return ["index", str(d / "ART"), "--index-type", "hnsw"], d, n, ""

        def index_after(ctx: Ctx, d: Path, run: Run) -> list[Verdict]:
            sig = ctx.signature(d / "ART")
            if not sig.get("ok") or (sig.get("pred"), sig.get("seen")) != (w.sigs["A"]["pred"], w.sigs["A"]["seen"]):
                return [
                    Verdict(
                        "vague error" if not sig.get("ok") else "silent wrong result",
                        f"ART after Ctrl-C: {sig.get('error', 'another model')[:150]}",
                    )
                ]
            return [leftover_verdict(d, "after the interrupted index")]

        cases.append(
            sigint_case(
                f"Ctrl-C at write event {n}/{len(ievents)} of `collabemb index` ({_event_label(ievents, n)})", indexing, index_after
            )
        )

    def exporting(ctx: Ctx, d: Path):
        art = hc.copy_tree(w.arts["A"], ctx.dir / "ART")
        return ["export", str(art), "--table", "item", "--out", str(d / "emb.parquet")], d, 1, ""

    def export_after(ctx: Ctx, d: Path, run: Run) -> list[Verdict]:
        out = [leftover_verdict(d, "after the interrupted export")]
        if (d / "emb.parquet").exists():
            out.append(Verdict("silent wrong result", "a file is at --out after the interrupted export"))
        return out

    cases.append(sigint_case("Ctrl-C at the first write of `collabemb export`", exporting, export_after))

    # closed stdout pipe
    for label, argv in [
        ("recommend --user ALL -k 100 | head -1", lambda a: ["recommend", a, "--user", *w.user_ids, "-k", "100"]),
        ("similar ALL ITEMS -k 100 | head -1", lambda a: ["similar", a, *w.item_ids, "-k", "100"]),
        ("predict ART 30,000 pairs | head -1", lambda a: ["predict", a, str(w.data["big_pairs"])]),
    ]:
        cases.append(pipe_case(label, argv))

    cases.append(two_writers_case("a second `fit --out SAME` while the first trains", "fit"))
    cases.append(two_writers_case("a second `collabemb index SAME` while the first loads", "index"))
    cases.append(reader_case())
    return cases


def pipe_case(name: str, argv_of: Callable[[str], list[str]]) -> Case:
    """A real ``collabemb`` process whose stdout reader stops after one line: no 'Broken pipe' message."""

    def fn(ctx: Ctx) -> Verdict:
        art = ctx.copy("A")
        head = subprocess.Popen(["head", "-1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        proc = ctx.launcher.spawn(argv=argv_of(str(art)), cwd=ctx.dir, timeout=120, fresh=True, stdout_fd=head.stdin.fileno())
        head.stdin.close()
        run = ctx.launcher.wait(proc)
        head.wait()
        if run.timed_out:
            return Verdict("hang", f"no exit in {run.seconds:.0f} s")
        if TRACEBACK in run.stderr:
            return Verdict("traceback", run.lines[-1][:160])
        if run.rc is not None and run.rc < 0 and run.rc != -signal.SIGPIPE:
            return Verdict("crash", f"killed by {signal.Signals(-run.rc).name}")
        pipe = [ln for ln in run.lines if re.search(r"broken ?pipe|errno 32|epipe|exception ignored", ln, re.IGNORECASE)]
        if pipe:
            return Verdict("vague error", f"exit {run.rc}, stderr: {' | '.join(pipe)[:160]}")
        return Verdict(HELD, f"exit {run.rc}, no pipe error on stderr" + (f" ({len(run.lines)} other lines)" if run.lines else ""))

    return Case("crash", name, fn)


def two_writers_case(name: str, what: str) -> Case:
    """Two writers of the same artifact, the second started while the first is busy: one refused
    cleanly, or serialised (said so); never both exiting 0 in silence (last writer wins).

    fit: the first is a long fit (LONG_EPOCHS) and the second starts once the first has opened its
    ratings file (the audit hook logs it), so it runs while the first trains. index: the first pauses
    3 s as it opens config.json (loading), and the second indexes meanwhile."""

    def fn(ctx: Ctx) -> Verdict:
        w = ctx.world
        d = ctx.dir / "w"
        d.mkdir()
        log = ctx.dir / "first.jsonl"
        if what == "fit":
            first = ["fit", str(w.data["ratings"]), "--out", str(d / "ART"), "--epochs", str(LONG_EPOCHS), *FIT_ARGS[2:]]
            p1 = ctx.launcher.spawn(**audit_spawn(ctx.dir, first, n=0, log=log, cwd=ctx.dir, match="ratings.csv"))
            second = w.fit_argv("ratings_b", d / "ART", 1)
            states = {f"first ({LONG_EPOCHS} epochs)": w.sigs["LONG"], "second (seed 1)": w.sigs["NEW"]}
        else:
            hc.copy_tree(w.arts["A"], d / "ART")
            first = ["index", str(d / "ART"), "--index-type", "hnsw"]
            p1 = ctx.launcher.spawn(**audit_spawn(ctx.dir, first, n=1, log=log, cwd=ctx.dir, sig=0, match="config.json"))
            second = ["index", str(d / "ART"), "--index-type", "exact", "--metric", "dot"]
            states = {"re-indexed": w.sigs["A"]}
        t0 = time.monotonic()
        while not read_events(log) and time.monotonic() - t0 < FIT_TIMEOUT and p1.status is None:
            time.sleep(0.05)
        time.sleep(0.3)
        p2 = ctx.launcher.spawn(argv=second, cwd=ctx.dir, timeout=FIT_TIMEOUT)
        runs = [ctx.launcher.wait(p) for p in (p1, p2)]
        bad = [judge(r, expect="sane", check=lambda r: None, label=f"writer {k + 1}") for k, r in enumerate(runs)]
        serious = [v for v in bad if v.outcome in ("crash", "hang", "traceback")]
        if serious:
            return worst(serious)
        state, v = state_of(ctx, d / "ART", states, absent_ok=False)
        verdicts = [Verdict(v.outcome, f"final ART {v.detail}") if not v.held else v, leftover_verdict(d, "after both writers")]
        ok = [r.rc == 0 for r in runs]
        if all(ok):
            said = [r for r in runs if re.search(r"\bwait", r.stdout + r.stderr, re.IGNORECASE)]
            if not said:
                verdicts.append(
                    Verdict(
                        "silent wrong result",
                        f"both exited 0 without a word; ART is one writer's ({state}): the other's work was replaced (last writer wins)",
                    )
                )
        elif any(ok):
            refused = runs[ok.index(False)]
            verdicts.append(judge(refused, names=["ART"], label=f"the {'first' if ok.index(False) == 0 else 'second'} writer"))
        else:
            verdicts.append(Verdict("vague error", f"both writers failed: {runs[0].short()[:80]} / {runs[1].short()[:80]}"))
        result = worst(verdicts)
        if result.held:
            result = Verdict(
                HELD,
                "one writer refused cleanly: " + next((x.detail for x in verdicts if "refused" in x.detail), "")
                if not all(ok)
                else "serialised (said so)",
            )
        return result

    return Case("crash", name, fn)


def reader_case() -> Case:
    """A reader loading in a loop while two writers save different models (A and C) to the same path."""

    def fn(ctx: Ctx) -> Verdict:
        w = ctx.world
        d = ctx.dir / "w"
        d.mkdir()
        target = hc.copy_tree(w.arts["A"], d / "ART")
        sigs = ctx.dir / "sigs.json"
        sigs.write_text(json.dumps({"a": [w.sigs["A"]["pred"], w.sigs["A"]["seen"]], "b": [w.sigs["C"]["pred"], w.sigs["C"]["seen"]]}))
        stop = ctx.dir / "stop"
        reader = ctx.launcher.spawn(
            snippet=hc.READER_SNIPPET, args=[target, w.data["pairs_json"], sigs, stop, 90], cwd=ctx.dir, timeout=120
        )
        writers = [
            ctx.launcher.spawn(snippet=hc.WRITER_SNIPPET, args=[w.arts[src], target, 15], cwd=ctx.dir, timeout=90) for src in ("A", "C")
        ]
        wruns = [ctx.launcher.wait(p) for p in writers]
        stop.write_text("")
        rrun = ctx.launcher.wait(reader)
        verdicts = [
            judge(r, expect="sane", check=lambda r: None, label=lab)
            for r, lab in ((rrun, "reader"), (wruns[0], "writer A"), (wruns[1], "writer C"))
        ]
        if not all(v.held for v in verdicts):
            return worst(verdicts)
        res = json.loads(rrun.stdout.strip().splitlines()[-1])
        saves = [json.loads(r.stdout.strip().splitlines()[-1]) for r in wruns]
        c = res["counts"]
        summary = f"{sum(c.values())} loads: {c['a']} A, {c['b']} C, {c['mixed']} mixed, {c['failed']} failed; saves {saves[0]['saved']}+{saves[1]['saved']} ({saves[0]['refused'] + saves[1]['refused']} refused and retried)"
        if c["mixed"]:
            verdicts.append(Verdict("silent wrong result", f"{summary}; e.g. {res['examples'][0] if res['examples'] else ''}"))
        if c["failed"]:
            kinds = ", ".join(res["errors"].values())
            clean = all(k in _CLEAN_TYPES for k in res["errors"])
            verdicts.append(Verdict("vague error" if clean else "traceback", f"{summary}; reader errors: {kinds[:160]}"))
        if min(s["saved"] for s in saves) == 0:
            verdicts.append(Verdict("vague error", f"{summary}; a writer never saved: {saves}"))
        verdicts.append(leftover_verdict(d, "after the writers finished"))
        v = worst(verdicts)
        if v.held:
            v = Verdict(HELD, summary)
        elif v.outcome == "leftover":
            v.detail = f"{summary}; {v.detail}"
        return v

    return Case("crash", "a reader loading in a loop while two writers save different models to the same path", fn, timeout=240)


_CLEAN_TYPES = {
    "ArtifactError",
    "StaleIndexError",
    "StoreLockedError",
    "ValueError",
    "OSError",
    "FileNotFoundError",
    "NotADirectoryError",
    "IsADirectoryError",
    "PermissionError",
    "TypeError",
    "RatingsError",
    "UnknownIdError",
}


def postprocess(results: list[dict]) -> None:
    """The checkpoint series: a resume refused after a kill later than one that resumed lost a checkpoint."""
    series = [r for r in results if r.get("group") == "checkpoint"]
    series.sort(key=lambda r: int(re.search(r"event (\d+)/", r["name"]).group(1)))
    resumed_at = None
    for r in series:
        extra = r.get("extra") or {}
        if extra.get("resumed"):
            resumed_at = resumed_at or r["name"]
        elif extra.get("resumed") is False and resumed_at and _RANK[r["outcome"]] > _RANK["vague error"]:
            r["outcome"] = "vague error"
            r["detail"] = (
                f"--resume refused although a kill earlier in the run already left a resumable checkpoint (the checkpoint was lost): {extra.get('resume_refusal', '')}"
            )


# --- running the cases ------------------------------------------------------------------------------------


def run_cases(world: World, cases: list[Case], jobs: int, on_result: Callable[[dict], None], subdir: str = "cases") -> list[dict]:
    """Each case in its own forked process (its own process group), ``jobs`` at a time; results in case order."""
    results: dict[int, dict] = {}
    pending = list(enumerate(cases))
    running: dict[int, tuple[int, Case, float, Path]] = {}
    next_out = 0
    cases_dir = world.root / subdir
    cases_dir.mkdir(exist_ok=True)
    os.chmod(cases_dir, 0o755)
    try:
        while pending or running:
            while pending and len(running) < jobs:
                i, case = pending.pop(0)
                d = cases_dir / f"{i:04d}"
                d.mkdir()
                out = cases_dir / f"{i:04d}.json"
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _case_process(world, case, d, out)
                running[pid] = (i, case, time.monotonic(), out)
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                now = time.monotonic()
                for p, (_, case, t0, _) in list(running.items()):
                    if now - t0 > case.timeout:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(p, signal.SIGKILL)
                time.sleep(0.02)
                continue
            if pid not in running:
                continue
            i, case, t0, out = running.pop(pid)
            try:
                result = json.loads(out.read_text())
            except (OSError, ValueError):
                code = os.waitstatus_to_exitcode(status)
                result = {
                    "outcome": HARNESS,
                    "detail": f"the case process ended without a result (status {code}; over {case.timeout:.0f} s?)",
                }
            result.update(kind=case.kind, name=case.name, group=case.group, seconds=round(time.monotonic() - t0, 2), index=i)
            results[i] = result
            while next_out in results:
                on_result(results[next_out])
                next_out += 1
    finally:
        for p in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p, signal.SIGKILL)
    return [results[i] for i in sorted(results)]


def _case_process(world: World, case: Case, d: Path, out: Path) -> None:
    try:
        os.setpgid(0, 0)
        os.chmod(d, 0o755)
        v = case.fn(Ctx(world, d))
        payload = {"outcome": v.outcome, "detail": v.detail, "extra": v.extra}
    except BaseException:
        payload = {"outcome": HARNESS, "detail": traceback.format_exc()[-1200:]}
    try:
        out.write_text(json.dumps(payload))
    finally:
        os._exit(0)


# --- report ----------------------------------------------------------------------------------------------


def format_line(r: dict) -> str:
    state = "HELD" if r["outcome"] == HELD else f"NOT HELD ({r['outcome']})" if r["outcome"] != HARNESS else "HARNESS ERROR"
    return f"[{r['kind']}] {r['name']}: {state}: {r['detail']}"


def table(results: list[dict], kinds: list[str]) -> str:
    rows = ["| kind | cases | held | not held | worst outcome | example of the worst |", "| --- | ---: | ---: | ---: | --- | --- |"]
    for kind in kinds:
        rs = [r for r in results if r["kind"] == kind]
        if not rs:
            continue
        held = sum(r["outcome"] == HELD for r in rs)
        bad = [r for r in rs if r["outcome"] != HELD]
        if bad:
            w = min(bad, key=lambda r: _RANK[r["outcome"]])
            worst_text, example = w["outcome"], f"{w['name']}: {w['detail']}"
            example = example if len(example) <= 200 else example[:197] + "..."
        else:
            worst_text, example = "-", ""
        counts = ", ".join(
            f"{sum(r['outcome'] == o for r in bad)} {o}" for o in (HARNESS, *SEVERITY) if any(r["outcome"] == o for r in bad)
        )
        worst_cell = f"{worst_text} ({counts})" if bad else "-"
        rows.append(f"| {KINDS[kind]} | {len(rs)} | {held} | {len(bad)} | {worst_cell} | {example.replace('|', '/')} |")
    return "\n".join(rows)


def not_held_list(results: list[dict]) -> list[str]:
    bad = [r for r in results if r["outcome"] != HELD]
    bad.sort(key=lambda r: (list(KINDS).index(r["kind"]), _RANK[r["outcome"]], r["index"]))
    return [f"- [{KINDS[r['kind']]}] **{r['outcome']}**: {r['name']}: {r['detail']}".replace("\n", " ") for r in bad]


# --- main ---------------------------------------------------------------------------------------------------


def self_check(world: World, jobs: int) -> str | None:
    """Controls with known outcomes: an untampered copy must hold, a copy with the seed-1 tensors
    (every recorded hash recomputed) must give a silent wrong result, and so must one with a
    single low mantissa bit flipped (invisible as printed: the exact comparison must see it)."""

    def other_tensors(art: Path) -> list[str]:
        a, b = _one(art, "tensors.safetensors"), _one(world.arts["B"], "tensors.safetensors")
        old, new = a.read_bytes(), b.read_bytes()
        a.write_bytes(new)
        hc.rehash(art, [(a, old, new)], scope="manifest")
        return ["tensors.safetensors"]

    def low_bit(art: Path) -> list[str]:
        a = _one(art, "tensors.safetensors")
        old = a.read_bytes()
        new = bytearray(old)
        new[8 + int.from_bytes(old[:8], "little") + 4 * 700] ^= 0x01  # a float's lowest mantissa byte, past the header
        a.write_bytes(bytes(new))
        hc.rehash(art, [(a, old, bytes(new))], scope="manifest")
        return ["tensors.safetensors"]

    controls = [
        (tamper_case("control: untampered copy", lambda art: ["config.json"]), HELD),
        (tamper_case("control: seed-1 tensors, hashes recomputed", other_tensors), "silent wrong result"),
        (tamper_case("control: one low mantissa bit, hashes recomputed", low_bit), "silent wrong result"),
    ]
    results = run_cases(world, [c for c, _ in controls], jobs, lambda r: None, subdir="self-check")
    for (case, expected), r in zip(controls, results, strict=True):
        if r["outcome"] != expected:
            return f"{case.name}: {r['outcome']} ({r['detail'][:200]}), expected {expected}"
    return None


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


def _preload() -> str | None:
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="append a section to this RESULTS.md")
    p.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS), help="which kinds of cases to run")
    p.add_argument("--only", help="run only the cases whose name matches this regex")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="cases at a time (default: CPU count)")
    p.add_argument("--fresh", action="store_true", help="start every child as a new process (slow; checks the fork shortcut)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--workdir", type=Path, help="work directory (default: a new temporary one)")
    p.add_argument("--list", action="store_true", help="build the world, list the cases, run none")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    command = "python benchmarks/robustness.py " + shlex.join(sys.argv[1:] if argv is None else argv)

    fresh = args.fresh
    if not fresh:
        problem = _preload()
        if problem:
            print(f"robustness: collabemb does not import ({problem}); every child is a fresh process", file=sys.stderr)
            fresh = True
    if args.workdir and args.workdir.exists() and any(args.workdir.iterdir()):
        p.error(f"--workdir {args.workdir} is not empty")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="collabemb-robustness-"))
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    io_dir = root / "io"
    io_dir.mkdir(exist_ok=True)
    launcher = Launcher(io_dir, fresh=fresh)
    try:
        print(f"robustness: building the world in {root} ({'fresh processes' if fresh else 'forked children'}) ...", flush=True)
        try:
            world = build_world(root, launcher)
        except HarnessError as exc:
            print(f"robustness: {exc}", file=sys.stderr)
            return 1
        layout = "snapshot store (manifest.json, CURRENT)" if world.has_manifest else "flat artifact directory"
        probes = ", ".join(f"{k} {len(v)}" for k, v in world.probes.items())
        print(
            f"robustness: world ready in {time.monotonic() - t0:.0f} s; artifact layout: {layout}; write events per probe: {probes}",
            flush=True,
        )
        problem = self_check(world, args.jobs)
        if problem:
            print(f"robustness: the harness's own controls failed, not running the cases: {problem}", file=sys.stderr)
            return 1
        print("robustness: self-check passed (untampered copy held; seed-1 tensors and a one-bit flip, hashes recomputed, caught)")
        builders = {"tamper": tamper_cases, "tracebacks": traceback_cases, "inputs": input_cases, "crash": crash_cases}
        cases = [c for kind in KINDS if kind in args.kinds for c in builders[kind](world)]
        if args.only:
            cases = [c for c in cases if re.search(args.only, c.name)]
        for note in world.notes:
            print(f"robustness: note: {note}")
        if args.list:
            for c in cases:
                print(f"[{c.kind}] {c.name}")
            print(f"{len(cases)} cases")
            return 0
        print(f"robustness: {len(cases)} cases, {args.jobs} at a time", flush=True)
        results = run_cases(world, cases, args.jobs, lambda r: print(format_line(r), flush=True))
        postprocess(results)
    finally:
        if not args.keep and not args.workdir:
            _rmtree(root)
    seconds = time.monotonic() - t0
    kinds = [k for k in KINDS if k in args.kinds]
    text = table(results, kinds)
    bad = not_held_list(results)
    print()
    print(text)
    print()
    if bad:
        print(f"NOT HELD ({len(bad)}):")
        print("\n".join(bad))
    slow = sorted(results, key=lambda r: -r["seconds"])[:5]
    print("\nslowest cases: " + "; ".join(f"{r['name'][:60]} {r['seconds']:.0f} s" for r in slow))
    per_kind = ", ".join(f"{k} {sum(r['seconds'] for r in results if r['kind'] == k):.0f} s" for k in kinds)
    print(f"case seconds per kind (summed over {args.jobs} workers): {per_kind}")
    print(f"\n{len(results)} cases in {seconds / 60:.1f} min ({'fresh processes' if fresh else 'forked children'}, {args.jobs} at a time)")
    if args.out:
        from machine import append_results

        body = (
            f"{len(results)} cases in {seconds / 60:.1f} min; artifact layout: {layout}; children: "
            f"{'fresh processes' if fresh else 'forked from a warm interpreter'}, {args.jobs} at a time.\n\n{text}\n\n"
            + (f"Not held ({len(bad)}):\n\n" + "\n".join(bad) if bad else "Every case held.")
            + ("\n\nNotes: " + "; ".join(world.notes) if world.notes else "")
        )
        append_results(args.out, title="Robustness: hostile cases (benchmarks/robustness.py)", command=command, body=body)
    return 0


def _rmtree(root: Path) -> None:
    for p in [root, *root.rglob("*")]:  # the permission cases leave directories nobody may enter
        try:
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)
        except OSError:
            pass
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
