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
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hostile import files
from hostile.children import Launcher, preload
from hostile.crash import postprocess
from hostile.report import format_line, print_summary, results_section
from hostile.runner import KINDS, build_cases, run_cases, self_check
from hostile.world import HarnessError, build_world


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
        problem = preload()
        if problem:
            print(f"robustness: collabemb does not import ({problem}); every child is a fresh process", file=sys.stderr)
            fresh = True
    children = "fresh processes" if fresh else "forked children"
    if args.workdir and args.workdir.exists() and any(args.workdir.iterdir()):
        p.error(f"--workdir {args.workdir} is not empty")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="collabemb-robustness-"))
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    io_dir = root / "io"
    io_dir.mkdir(exist_ok=True)
    try:
        print(f"robustness: building the world in {root} ({children}) ...", flush=True)
        try:
            world = build_world(root, Launcher(io_dir, fresh=fresh))
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
        cases = build_cases(world, args.kinds, args.only)
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
            files.remove_tree(root)
    seconds = time.monotonic() - t0
    kinds = [k for k in KINDS if k in args.kinds]
    print_summary(results, kinds, seconds=seconds, jobs=args.jobs, fresh=fresh)
    if args.out:
        from machine import append_results

        body = results_section(results, kinds, seconds=seconds, jobs=args.jobs, fresh=fresh, layout=layout, notes=world.notes)
        append_results(args.out, title="Robustness: hostile cases (benchmarks/robustness.py)", command=command, body=body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
