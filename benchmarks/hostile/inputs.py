"""Kind ``inputs``: bad input files given to ``collabemb fit`` and to the commands that read IDs.

1e39 / nan / inf ratings, 1e30 timestamps, a repeated header column, compressed files under
misleading extensions, quoted multi-line fields before an error (the line number named must be
right), BOM, NUL bytes, CRLF, non-UTF-8, empty and header-only files, ``007`` IDs on an int model,
a bad ``--out`` that must be refused before training (measured in CPU seconds of the child against a
3-epoch and a LONG_EPOCHS fit: steadier than wall time on a shared machine).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from . import files
from .case import Case, Ctx, fit_sane
from .children import Run
from .verdicts import HARNESS, HELD, TRACEBACK, Verdict, describe_diff, judge, with_leftovers
from .world import FIT_ARGS, FIT_TIMEOUT, N_ITEMS, World

BAD_LINE = 1234  # the physical line (the header is line 1) that carries the bad value


def same_as_a(ctx: Ctx, run: Run, art: Path | None) -> str | None:
    """A fit that succeeded on a file holding A's ratings must give A's predictions."""
    pred = ctx.cli(["predict", ctx.dir / "OUT", ctx.world.data["pairs"]])
    if pred.rc != 0:
        return f"exit 0 but the model written cannot predict: {pred.short()}"
    if pred.stdout != ctx.world.baseline[("A", "predict")]:
        return f"exit 0 but the model differs from the one trained on the clean file ({describe_diff(ctx.world.baseline[('A', 'predict')], pred.stdout)})"
    return None


def file_case(
    name: str, make: Callable[[World], str | bytes], filename: str, *, expect: str = "refuse", line: int | None = None, args=(), check=None
) -> Case:
    """``collabemb fit FILE`` (A's settings) on a hostile file; ``expect="same"``: success must train model A."""

    def fn(ctx: Ctx) -> Verdict:
        path = files.write_text(ctx.dir / filename, make(ctx.world))
        argv = ["fit", path, "--out", ctx.dir / "OUT", *FIT_ARGS, "--seed", "0", *args]
        run = ctx.cli(argv, timeout=FIT_TIMEOUT)
        chk = check or (same_as_a if expect == "same" else fit_sane)
        v = judge(run, expect="sane" if expect == "same" else expect, names=[filename], line=line, check=lambda r: chk(ctx, r, None))
        return with_leftovers(v, ctx.dir, "left behind")

    return Case("inputs", name, fn)


def _base_text(w: World, *, timestamp: bool = False) -> str:
    return (w.data["ratings_ts"] if timestamp else w.data["ratings"]).read_text()


def _bad(value: str, *, timestamp: bool = False, column: int = 2) -> Callable[[World], str]:
    """A's ratings with one field of line BAD_LINE replaced by ``value``."""

    def make(w: World) -> str:
        text = _base_text(w, timestamp=timestamp)
        fields = text.split("\n")[BAD_LINE - 1].split(",")
        fields[column] = value
        return files.with_line(text, BAD_LINE, ",".join(fields))

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


def compare_case(name: str, fname: str, text: str, plain: str, argv: list[str]) -> Case:
    """A command (``DIR/fname`` in ``argv``) on a hostile file: refused cleanly, or the same answer as with ``plain`` (the IDs written plainly)."""

    def fn(ctx: Ctx) -> Verdict:
        art = ctx.copy("A")
        files.write_text(ctx.dir / fname, text)
        ref_dir = ctx.dir / "ref"
        files.write_text(ref_dir / fname, plain)
        sub = lambda d: [str(art) if a == "ART" else a.replace("DIR/", f"{d}/") for a in argv]  # noqa: E731
        ref = ctx.cli(sub(ref_dir))
        if ref.rc != 0:
            return Verdict(HARNESS, f"the reference run with plain IDs failed: {ref.short()}")
        run = ctx.cli(sub(ctx.dir))
        if run.rc != 0 or TRACEBACK in run.stderr:
            return judge(run, names=[fname])
        ok = run.stdout == ref.stdout
        return (
            Verdict(HELD, "answered as for the plain IDs")
            if ok
            else Verdict(
                "silent wrong result", f"exit 0, answers differ from those for the plain IDs ({describe_diff(ref.stdout, run.stdout)})"
            )
        )

    return Case("inputs", name, fn)


def seen_padded_case(which: str) -> Case:
    """``recommend --user 1 --seen FILE`` where FILE names user 1's top item T with a zero-padded ID
    (``00T`` / user ``001``): refused, or T left out exactly as with the plain ID (never silently kept)."""

    def fn(ctx: Ctx) -> Verdict:
        art = ctx.copy("A")
        argv = lambda f: ["recommend", art, "--user", "1", "-k", "10", "--seen", f]  # noqa: E731
        other = files.write_text(
            ctx.dir / "other.csv", "user,item,rating\n2,1,4\n"
        )  # replaces the stored pairs, excludes nothing of user 1
        free = ctx.cli(argv(other))
        rows = [ln.split() for ln in free.stdout.splitlines()[1:] if ln.strip()]
        if free.rc != 0 or not rows:
            return Verdict(HARNESS, f"recommend with a --seen file failed: {free.short()}")
        top = int(rows[0][1])
        plain = files.write_text(ctx.dir / "plain.csv", f"user,item,rating\n1,{top},4\n")
        padded = f"user,item,rating\n1,00{top},4\n" if which == "item" else f"user,item,rating\n001,{top},4\n"
        hostile = files.write_text(ctx.dir / "seen.csv", padded)
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
        return Verdict(
            "silent wrong result", f"exit 0, answers differ from those for the plain ID ({describe_diff(ref.stdout, run.stdout)})"
        )

    return Case("inputs", f"recommend --seen FILE naming user 1's top item with a zero-padded {which} ID (int model)", fn)


def bad_out_case(
    name: str, out: str, *, names: list[str], prepare: Callable[[Ctx], None] | None = None, nobody: bool = False, checkpoint: bool = False
) -> Case:
    """``fit --out OUT`` (a fit whose training takes seconds; ``OUT`` as :meth:`Ctx.subst` reads it) must be refused before training."""

    def fn(ctx: Ctx) -> Verdict:
        if prepare is not None:
            prepare(ctx)
        uid = ctx.nobody() if nobody else None
        if uid is not None:
            files.chmod_tree(ctx.dir)
            os.chmod(ctx.dir / "ro", 0o555)
        bad = ctx.subst(None, out)
        target = ["--out", ctx.dir / "OUT", "--checkpoint", bad] if checkpoint else ["--out", bad]
        run = ctx.cli(ctx.world.long_fit_argv(*target), timeout=FIT_TIMEOUT, uid=uid)
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
        return with_leftovers(v, ctx.dir, "left behind")

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
        cases.append(file_case(label, lambda w, m=method: files.compress(_base_text(w).encode(), m), f"ratings{ext}", expect="same"))
    cases.append(file_case("plain CSV named ratings.csv.gz", lambda w: _base_text(w), "ratings.csv.gz", expect="same"))
    cases.append(
        file_case(
            f"quoted multi-line IDs, then a bad rating on line {MULTILINE_BAD_LINE}", _multiline, "ratings.csv", line=MULTILINE_BAD_LINE
        )
    )
    cases.append(
        file_case(
            f"string IDs, a bad rating on line {L}",
            lambda w: files.with_line("\n".join(_str_ids(w)) + "\n", L, "u1,i1,abc"),
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
    cases.append(file_case(f"4 fields on line {L}", lambda w: files.with_line(_base_text(w), L, "1,2,3,4"), "ratings.csv", line=L))
    cases.append(file_case(f"2 fields on line {L}", lambda w: files.with_line(_base_text(w), L, "1,2"), "ratings.csv", line=L))
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
            "new.csv",
            new_user,
            new_user.replace("050", "50"),
            ["recommend", "ART", "--ratings", "DIR/new.csv", "-k", "10"],
        )
    )
    cases.append(
        compare_case(
            "predict PAIRS with user '007' (int model)", "p.csv", "user,item\n007,5\n", "user,item\n7,5\n", ["predict", "ART", "DIR/p.csv"]
        )
    )

    def afile(ctx: Ctx) -> None:
        (ctx.dir / "afile").write_text("precious\n")

    def notes(ctx: Ctx) -> None:
        (ctx.dir / "notes").mkdir()
        (ctx.dir / "notes" / "notes.txt").write_text("mine\n")

    def ro(ctx: Ctx) -> None:
        (ctx.dir / "ro").mkdir()

    cases.append(bad_out_case("fit --out under a regular file", "DIR/afile/ART", names=["afile"], prepare=afile))
    cases.append(bad_out_case("fit --out an existing regular file", "DIR/afile", names=["afile"], prepare=afile))
    cases.append(bad_out_case("fit --out a non-empty directory that is not an artifact", "DIR/notes", names=["notes"], prepare=notes))
    cases.append(bad_out_case("fit --out the ratings file itself", "RATINGS", names=["ratings.csv"]))
    cases.append(bad_out_case("fit --out ''", "", names=[]))
    cases.append(bad_out_case("fit --out /dev/null", "/dev/null", names=["/dev/null"]))
    cases.append(bad_out_case("fit --checkpoint under a regular file", "DIR/afile/CK", names=["afile"], prepare=afile, checkpoint=True))
    cases.append(bad_out_case("fit --out in a read-only directory (chmod 555)", "DIR/ro/ART", names=["ro"], prepare=ro, nobody=True))
    return cases


def _valid_case(line: int) -> Case:
    def fn(ctx: Ctx) -> Verdict:
        valid = files.write_text(ctx.dir / "valid.csv", _bad("nan")(ctx.world))
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
    return files.with_line(text, BAD_LINE, line[:1] + "\x00" + line[1:])


def _dup_pair(w: World) -> str:
    text = _base_text(w)
    second = text.split("\n")[1]
    u, i, r = second.split(",")
    return files.with_line(text, BAD_LINE, f"{u},{i},{6 - int(r)}")
