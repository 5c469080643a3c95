"""Running the cases: each in its own forked process (its own process group) with a timeout, ``jobs`` at a time."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from .case import Case, Ctx, Skip
from .crash import crash_cases
from .inputs import input_cases
from .tamper import control_cases, tamper_cases
from .tracebacks import traceback_cases
from .verdicts import HARNESS, HELD
from .world import World

#: The kinds of cases, in the order they run, and their titles.
KINDS: dict[str, str] = {
    "tamper": "artifact tampering",
    "tracebacks": "tracebacks",
    "inputs": "bad input files",
    "crash": "crash and concurrency",
}
_BUILDERS: dict[str, Callable[[World], list[Case]]] = {
    "tamper": tamper_cases,
    "tracebacks": traceback_cases,
    "inputs": input_cases,
    "crash": crash_cases,
}


def build_cases(world: World, kinds: list[str], only: str | None) -> list[Case]:
    """The cases of ``kinds`` (in KINDS order) whose name matches ``only``."""
    cases = [c for kind in KINDS if kind in kinds for c in _BUILDERS[kind](world)]
    return [c for c in cases if re.search(only, c.name)] if only else cases


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
    except Skip as exc:
        payload = {"outcome": HELD, "detail": f"not applicable: {exc}", "extra": {}}
    except BaseException:
        payload = {"outcome": HARNESS, "detail": traceback.format_exc()[-1200:]}
    try:
        out.write_text(json.dumps(payload))
    finally:
        os._exit(0)


def self_check(world: World, jobs: int) -> str | None:
    """The harness's own controls (tamper.control_cases): None, or the first that did not come out as it must."""
    controls = control_cases(world)
    results = run_cases(world, [c for c, _ in controls], jobs, lambda r: None, subdir="self-check")
    for (case, expected), r in zip(controls, results, strict=True):
        if r["outcome"] != expected:
            return f"{case.name}: {r['outcome']} ({r['detail'][:200]}), expected {expected}"
    return None
