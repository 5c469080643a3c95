"""The world every case starts from, built once: data files, artifacts, baselines, signatures, probes.

A generated ratings CSV of 4,000 ratings (200 users x 150 items); ``collabemb fit`` at seed 0 and
seed 1, single-threaded so that a fit is reproducible; ``collabemb index``: exact, IVF and HNSW;
the answers of the untampered artifacts; the write events of the commands the crash cases interrupt.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import files, snippets
from .children import Launcher, Run, console_entry
from .verdicts import TRACEBACK, normalise_output

N_USERS, N_ITEMS, N_RATINGS = 200, 150, 4000
#: The artifacts tampered with: A (exact index), and A with an IVF and with an HNSW index.
BASES = ("A", "A_IVF", "A_HNSW")
#: Every fit of the harness (A, B, the crash series): small, single-threaded (deterministic).
FIT_ARGS = ["--epochs", "3", "--n-factors", "8", "--threads", "1", "--no-progress"]
LONG_EPOCHS = 3000  # the bad --out cases: a fit whose training takes seconds
QUERY_TIMEOUT = 30.0
FIT_TIMEOUT = 60.0
NOBODY = 65534


class HarnessError(RuntimeError):
    """The harness itself cannot go on (its own setup failed)."""


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
    short_fit_cpu: float = 0.0  # CPU seconds of fit A (3 epochs) and of the same fit at LONG_EPOCHS
    long_fit_cpu: float = 0.0
    nobody_ok: bool = False

    @property
    def has_manifest(self) -> bool:
        return bool(files.find_named(self.arts["A"], "manifest.json"))

    def fit_argv(self, ratings: str, out: Path | str, seed: int, *extra: str) -> list[str]:
        return ["fit", str(self.data[ratings]), "--out", str(out), *FIT_ARGS, "--seed", str(seed), *extra]

    def long_fit_argv(self, *target: Path | str) -> list[str]:
        """A fit of the ratings whose training takes seconds (LONG_EPOCHS), default seed; ``target``: ``--out ...``."""
        return ["fit", str(self.data["ratings"]), *map(str, target), "--epochs", str(LONG_EPOCHS), *FIT_ARGS[2:]]

    def queries(self, art: Path) -> list[tuple[str, list[str]]]:
        """The questions every tampered artifact is asked; together they read every file of it."""
        return [
            ("predict", ["predict", str(art), str(self.data["pairs"])]),
            ("similar", ["similar", str(art), *self.item_ids, "-k", "5"]),
            ("recommend", ["recommend", str(art), "--user", *self.user_ids, "-k", "5"]),
            ("info", ["info", str(art)]),
        ]

    def signature(self, art: Path, *, cwd: Path) -> dict:
        """What ``art`` loads as (snippets.SIGNATURE_SNIPPET), or the error and its kind."""
        run = self.launcher.run(
            snippet=snippets.SIGNATURE_SNIPPET, args=[str(art), str(self.data["pairs_json"])], cwd=cwd, timeout=QUERY_TIMEOUT
        )
        if run.timed_out:
            return {"ok": False, "error": "timed out", "type": "hang"}
        if run.rc != 0 or not run.stdout.strip():
            return {"ok": False, "error": f"exit {run.rc}: {run.short()}", "type": "crash" if (run.rc or 0) < 0 else "traceback"}
        return json.loads(run.stdout.strip().splitlines()[-1])


def sig_key(sig: dict) -> tuple:
    """What two signatures must share to be the same model."""
    return (sig.get("pred"), sig.get("seen"), sig.get("tables"), sig.get("index"))


def audit_spawn(root: Path, argv: list[str], *, n: int, log: Path, cwd: Path, sig: int = signal.SIGKILL, match: str = "") -> dict:
    """Spawn arguments: ``collabemb ARGV`` under the audit hook (snippets.AUDIT_SNIPPET)."""
    entry = ":".join(console_entry())
    return {
        "snippet": snippets.AUDIT_SNIPPET,
        "args": [str(root), n, int(sig), str(log), match, entry, "--", *argv],
        "cwd": cwd,
        "timeout": FIT_TIMEOUT,
    }


def read_events(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _check(runs: dict[object, Run]) -> dict[object, Run]:
    for run in runs.values():
        if run.rc != 0:
            raise HarnessError(f"setup: {run.what} failed (exit {run.rc}): {run.stderr[-1500:]}")
    return runs


def build_world(root: Path, launcher: Launcher) -> World:
    """Data files, artifacts A (seed 0), B (seed 1), A-IVF, NEW (seed 1 on other ratings), baselines, probes."""
    w = World(root, launcher)
    _write_data(w, root / "data")

    arts = root / "arts"
    arts.mkdir()
    fits = {
        "A": w.fit_argv("ratings", arts / "A", 0),
        "B": w.fit_argv("ratings", arts / "B", 1),
        "A2": w.fit_argv("ratings", arts / "A2", 0),
        "NEW": w.fit_argv("ratings_b", arts / "NEW", 1),
        "LONG": w.long_fit_argv("--out", arts / "LONG"),
    }
    done = _check(launcher.run_many([(name, {"argv": argv, "cwd": root, "timeout": 120}) for name, argv in fits.items()]))
    w.arts.update((name, arts / name) for name in done)
    w.short_fit_cpu, w.long_fit_cpu = done["A"].cpu, done["LONG"].cpu
    w.arts["C"] = files.copy_tree(w.arts["NEW"], arts / "C")  # C: NEW with an index (the second model of the reader case)
    _check(launcher.run_many([(n, {"argv": ["index", str(arts / n)], "cwd": root, "timeout": 60}) for n in ("A", "B", "C")]))
    jobs = []
    for name, index_type in (("A_IVF", "ivf"), ("A_HNSW", "hnsw")):
        w.arts[name] = files.copy_tree(w.arts["A"], arts / name)
        argv = ["index", str(arts / name), "--index-type", index_type, "--parts", "items", "recommend"]
        jobs.append((name, {"argv": argv, "cwd": root, "timeout": 60}))
    _check(launcher.run_many(jobs))

    # baselines: each base artifact asked the queries from a copy (as the cases do)
    jobs = []
    for base in BASES:
        copy = files.copy_tree(w.arts[base], root / "baseline" / base / "ART")
        jobs += [((base, q), {"argv": argv, "cwd": root, "timeout": QUERY_TIMEOUT}) for q, argv in w.queries(copy)]
    for key, run in launcher.run_many(jobs).items():
        if run.rc != 0 or TRACEBACK in run.stderr:
            raise HarnessError(f"setup: baseline {run.what} failed (exit {run.rc}): {run.stderr[-1500:]}")
        w.baseline[key] = normalise_output(run.stdout, root / "baseline" / key[0] / "ART")
    det = launcher.run(argv=["predict", str(w.arts["A2"]), str(w.data["pairs"])], cwd=root, timeout=QUERY_TIMEOUT)
    if det.rc != 0 or det.stdout != w.baseline[("A", "predict")]:
        w.notes.append(
            "two fits with the same seed and --threads 1 gave different predictions: crash cases compare signatures of loaded models only"
        )

    for name in ("A", "NEW", "C", "B", "A_IVF", "A_HNSW", "LONG"):
        w.sigs[name] = w.signature(w.arts[name], cwd=root)
        if not w.sigs[name].get("ok"):
            raise HarnessError(f"setup: signature of {name}: {w.sigs[name]}")
    if w.sigs["A"]["pred"] == w.sigs["NEW"]["pred"] or w.sigs["A"]["seen"] == w.sigs["NEW"]["seen"]:
        raise HarnessError("setup: the old and new models of the crash cases are not distinguishable")
    _probe(w, root / "probes")
    _check_nobody(w)
    return w


def _write_data(w: World, data: Path) -> None:
    data.mkdir(parents=True)
    rows = files.make_ratings(0, N_USERS, N_ITEMS, N_RATINGS)
    w.data["ratings"] = files.write_text(data / "ratings.csv", files.ratings_csv(rows))
    w.data["ratings_ts"] = files.write_text(data / "ratings_ts.csv", files.ratings_csv(rows, timestamp=True))
    # model NEW / C: other ratings (every 10th row dropped, every user and item kept) -> other seen pairs
    w.data["ratings_b"] = files.write_text(data / "ratings_b.csv", files.ratings_csv(_thin(rows)))
    w.user_ids = [str(u) for u in range(1, N_USERS + 1)]
    w.item_ids = [str(i) for i in range(1, N_ITEMS + 1)]
    pairs_u = [u for u in range(1, N_USERS + 1) for j in range(6)] + [1] * N_ITEMS + [999_999, 3, 999_999]
    pairs_i = (
        [(u * 7 + j * 23) % N_ITEMS + 1 for u in range(1, N_USERS + 1) for j in range(6)]
        + list(range(1, N_ITEMS + 1))
        + [5, 888_888, 888_888]
    )
    w.data["pairs"] = files.write_text(
        data / "pairs.csv", "user,item\n" + "".join(f"{u},{i}\n" for u, i in zip(pairs_u, pairs_i, strict=True))
    )
    w.data["pairs_json"] = files.write_text(data / "pairs.json", json.dumps({"users": pairs_u, "items": pairs_i}))
    big = [(u, i) for u in range(1, N_USERS + 1) for i in range(1, N_ITEMS + 1)]
    w.data["big_pairs"] = files.write_text(data / "big_pairs.csv", "user,item\n" + "".join(f"{u},{i}\n" for u, i in big))


def _thin(rows: list) -> list:
    """Every 10th row dropped, unless its user or item would be left with fewer than 2 ratings."""
    users, items = Counter(r[0] for r in rows), Counter(r[1] for r in rows)
    keep = []
    for n, r in enumerate(rows):
        if n % 10 == 0 and users[r[0]] > 2 and items[r[1]] > 2:
            users[r[0]] -= 1
            items[r[1]] -= 1
            continue
        keep.append(r)
    return keep


def _probe(w: World, probe_dir: Path) -> None:
    """The write events of the commands the crash cases interrupt (audit hook, nothing killed)."""
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
            files.copy_tree(w.arts[base], d / "ART")
        jobs.append((name, audit_spawn(d, argv_of(d), n=0, log=d / "events.jsonl", cwd=w.root)))
    for name, run in w.launcher.run_many(jobs).items():
        if run.rc != 0:
            raise HarnessError(f"setup: probe {name} failed (exit {run.rc}): {run.stderr[-1500:]}")
        w.probes[name] = read_events(probe_dir / name / "events.jsonl")
    w.sigs["CK_FINAL"] = w.signature(probe_dir / "checkpoint" / "ART", cwd=w.root)


def _check_nobody(w: World) -> None:
    """Can a child running as nobody read the world? (the permission cases need it)"""
    if os.geteuid() != 0:
        w.nobody_ok = True
        return
    files.chmod_tree(w.root)
    control = files.copy_tree(w.arts["A"], w.root / "nobody-control")
    files.chmod_tree(control)
    try:
        run = w.launcher.run(argv=["info", str(control)], cwd=w.root, timeout=QUERY_TIMEOUT, uid=NOBODY)
        w.nobody_ok, why = run.rc == 0, run.short()
    except OSError as exc:  # a fresh process as nobody cannot reach the interpreter (under /root, say)
        w.nobody_ok, why = False, str(exc)
    if not w.nobody_ok:
        w.notes.append(f"permission cases not run: `info` as nobody fails on an untouched artifact ({why})")
