"""Judging a case: the outcomes by severity, and what makes a child's run held or not.

**held**: refused with exit 2 and exactly one ``collabemb: error:`` line on stderr (besides
``collabemb: warning:`` lines) naming the file involved and, for bad input, the right line; or
answers identical to the untampered artifact's / a sane answer. Else the worst of SEVERITY.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import files
from .children import Run

HELD = "held"
HARNESS = "harness error"
#: NOT HELD outcomes, most severe first.
SEVERITY: tuple[str, ...] = ("crash", "hang", "silent wrong result", "traceback", "vague error", "leftover")
RANK = {name: n for n, name in enumerate((HARNESS, *SEVERITY, HELD))}
TRACEBACK = "Traceback (most recent call last)"
_NAN = re.compile(r"(?<![\w.])[-+]?(nan|inf|infinity)(?![\w])", re.IGNORECASE)
_HEX = re.compile(r"\b[0-9a-f]{16,}\b")


@dataclass
class Verdict:
    outcome: str
    detail: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def held(self) -> bool:
        return self.outcome == HELD


def worst(verdicts: list[Verdict]) -> Verdict:
    return min(verdicts, key=lambda v: RANK[v.outcome]) if verdicts else Verdict(HELD, "")


def normalise_output(text: str, *paths: Path) -> str:
    """The artifact's path and long hex strings (checksums, fingerprints: what `info` shows of config.json) masked."""
    for p in paths:
        for form in {str(p.resolve()), str(p)}:
            text = text.replace(form, "<ART>")
    return _HEX.sub("<HEX>", text)


def judge(
    run: Run,
    *,
    expect: str = "refuse",
    names: tuple | list = (),
    line: int | None = None,
    same: str | None = None,
    check: Callable[[Run], str | None] | None = None,
    label: str = "",
) -> Verdict:
    """One child's outcome.

    ``expect``: ``"refuse"`` (success is a bad value accepted), ``"same"`` (success must print
    ``same``), ``"sane"`` (success must pass ``check``: None or the problem). A refusal is clean
    with exit 2, one ``collabemb: error:`` line (plus warnings), naming one of ``names``
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
                    "silent wrong result", f"{tag}exit 0, answers differ from the untampered artifact's ({describe_diff(same, run.stdout)})"
                )
            return Verdict(HELD, f"{tag}identical answers")
        problem = check(run) if check is not None else _nan_problem(run)
        if problem:
            return Verdict("silent wrong result", f"{tag}{problem}")
        return Verdict(HELD, f"{tag}sane answer (exit 0)")
    errors = [ln for ln in run.lines if ln.startswith("collabemb: error:")]
    other = [ln for ln in run.lines if not ln.startswith(("collabemb: error:", "collabemb: warning:"))]
    if run.rc != 2 or len(errors) != 1 or other:
        first = (other or errors or ["(no stderr)"])[0]
        why = f"exit {run.rc}" + (" (expected 2)" if run.rc != 2 else "")
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


def describe_diff(a: str, b: str) -> str:
    la, lb = a.splitlines(), b.splitlines()
    n = sum(1 for x, y in zip(la, lb, strict=False) if x != y) + abs(len(la) - len(lb))
    first = next((k for k, (x, y) in enumerate(zip(la, lb, strict=False)) if x != y), min(len(la), len(lb)))
    got = lb[first][:70] if first < len(lb) else "(end)"
    want = la[first][:70] if first < len(la) else "(end)"
    return f"{n} of {len(la)} lines; first: {got!r} instead of {want!r}"


def leftovers(d: Path) -> list[str]:
    """Temporary files and directories, and snapshots no pointer names, under ``d``."""
    found = []
    for p in sorted(d.rglob("*")):
        n = p.name
        if n == ".lock":
            continue
        if n.startswith(".") or any(t in n for t in (".tmp-", ".old-", ".ckpt-", ".partial")):
            found.append(files.normalise(str(p.relative_to(d))))
    for pointer in d.rglob("CURRENT"):
        text = pointer.read_text(errors="replace")
        for snap in pointer.parent.iterdir():
            if snap.is_dir() and snap.name.startswith("snap-") and snap.name not in text:
                found.append(files.normalise(str(snap.relative_to(d))) + " (a snapshot CURRENT does not name)")
    return sorted(set(found))


def leftover_verdict(d: Path, when: str) -> Verdict:
    left = leftovers(d)
    if left:
        return Verdict("leftover", f"{when}: {', '.join(left[:4])}" + (f" (+{len(left) - 4})" if len(left) > 4 else ""))
    return Verdict(HELD, "")


def with_leftovers(v: Verdict, d: Path, when: str) -> Verdict:
    """``v``, or when it held, what is left behind under ``d``."""
    return worst([v, leftover_verdict(d, when)]) if v.held else v
