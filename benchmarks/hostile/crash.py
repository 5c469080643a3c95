"""Kind ``crash``: crash and concurrency.

``fit --out ART`` over an existing artifact SIGKILLed at its Nth write event (the audit hook counts
write-opens, renames, removes, mkdir/rmdir and rmtree under the work directory), then ART must load
as the complete old or the complete new model, a rerun must succeed and leave no leftovers; the same
into a fresh path and with ``--checkpoint`` followed by ``--resume``; Ctrl-C at fixed moments (exit
130, one line, nothing already written lost); a second writer started while the first is busy; a
reader loading in a loop while two writers save different models; ``| head -1`` (no "Broken pipe").
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from . import files, snippets
from .case import Case, Ctx
from .children import Run
from .verdicts import HELD, RANK, TRACEBACK, Verdict, judge, leftover_verdict, worst
from .world import FIT_TIMEOUT, LONG_EPOCHS, World, audit_spawn, read_events, sig_key


def state_of(ctx: Ctx, art: Path, states: dict[str, dict], *, absent_ok: bool) -> tuple[str, Verdict]:
    """Which known model ``art`` loads as (``states``: name -> signature); a verdict when none."""
    sig = ctx.signature(art)
    if sig.get("ok"):
        for name, ref in states.items():
            if sig_key(sig) == sig_key(ref):
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


def ran(run: Run, label: str) -> Verdict:
    """A command that must exit 0 (whatever it prints) or be refused cleanly."""
    return judge(run, expect="sane", check=lambda r: None, label=label)


def _event_label(events: list[dict], n: int) -> str:
    e = next((e for e in events if e["n"] == n), None)
    return f"{e['event']} {files.normalise(e['path'])}" if e else "?"


def kill_points(events: list[dict], cap: int) -> list[int]:
    """The events to kill at: a run of consecutive events of one kind in one directory (writing the
    files of a snapshot, removing an old one) is one moment to a reader, so only its first and last
    are kept; then at most ``cap`` of those, evenly spaced, the first and the last included."""

    def key(e: dict) -> tuple:
        return (e["event"], os.path.dirname(files.normalise(e["path"].split(" -> ")[0])))

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
            files.copy_tree(w.arts["A"], d / "ART")
        extra = ["--checkpoint", str(d / "CK")] if series == "checkpoint" else []
        argv = w.fit_argv("ratings_b", d / "ART", 1, *extra)
        run = ctx.launcher.run(**audit_spawn(d, argv, n=n, log=ctx.dir / "events.jsonl", cwd=ctx.dir))
        if run.rc != -signal.SIGKILL:
            v = ran(run, "the fit was not killed")
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
                verdicts.append(ran(rerun, "a fresh fit with the same --checkpoint after the refused resume"))
        else:
            rerun = ctx.cli(argv, timeout=FIT_TIMEOUT)
            verdicts.append(ran(rerun, "the same fit rerun"))
            if rerun.rc == 0:
                _, v2 = state_of(ctx, d / "ART", {"new": new}, absent_ok=False)
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
        return files.copy_tree(w.arts["A"], d / "ART")

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
            out.append(ran(resume, "--resume from the checkpoint written before Ctrl-C"))
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
        art = files.copy_tree(w.arts["A"], ctx.dir / "ART")
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
            first = w.long_fit_argv("--out", d / "ART")
            p1 = ctx.launcher.spawn(**audit_spawn(ctx.dir, first, n=0, log=log, cwd=ctx.dir, match="ratings.csv"))
            second = w.fit_argv("ratings_b", d / "ART", 1)
            states = {f"first ({LONG_EPOCHS} epochs)": w.sigs["LONG"], "second (seed 1)": w.sigs["NEW"]}
        else:
            files.copy_tree(w.arts["A"], d / "ART")
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
        bad = [ran(r, f"writer {k + 1}") for k, r in enumerate(runs)]
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
        target = files.copy_tree(w.arts["A"], d / "ART")
        sigs = ctx.dir / "sigs.json"
        sigs.write_text(json.dumps({"a": [w.sigs["A"]["pred"], w.sigs["A"]["seen"]], "b": [w.sigs["C"]["pred"], w.sigs["C"]["seen"]]}))
        stop = ctx.dir / "stop"
        reader = ctx.launcher.spawn(
            snippet=snippets.READER_SNIPPET, args=[target, w.data["pairs_json"], sigs, stop, 90], cwd=ctx.dir, timeout=120
        )
        writers = [
            ctx.launcher.spawn(snippet=snippets.WRITER_SNIPPET, args=[w.arts[src], target, 15], cwd=ctx.dir, timeout=90)
            for src in ("A", "C")
        ]
        wruns = [ctx.launcher.wait(p) for p in writers]
        stop.write_text("")
        rrun = ctx.launcher.wait(reader)
        verdicts = [ran(r, lab) for r, lab in ((rrun, "reader"), (wruns[0], "writer A"), (wruns[1], "writer C"))]
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
        elif extra.get("resumed") is False and resumed_at and RANK[r["outcome"]] > RANK["vague error"]:
            r["outcome"] = "vague error"
            r["detail"] = (
                f"--resume refused although a kill earlier in the run already left a resumable checkpoint (the checkpoint was lost): {extra.get('resume_refusal', '')}"
            )
