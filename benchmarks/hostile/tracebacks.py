"""Kind ``tracebacks``: absurd values of every numeric option of every command, missing files,
directories where files are expected, a config.json that is a list, unreadable files (run as
``nobody`` when the harness is root). Each must be refused cleanly or answered sanely.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from . import files
from .case import CASE_TIMEOUT, Case, Ctx, fit_sane
from .children import Run
from .tamper import config_change, manifest_variants, one_file, tamper_case
from .verdicts import Verdict, judge, with_leftovers
from .world import FIT_ARGS, FIT_TIMEOUT, QUERY_TIMEOUT, World

BIG = "1000000000"
HUGE = str(2**63)


def cli_case(
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
            prepare(ctx, art)
        uid = ctx.nobody() if nobody else None
        run = ctx.cli(argv_of(ctx, art), timeout=timeout, uid=uid)
        v = judge(run, expect=expect, names=names, line=line, check=(lambda r: check(ctx, r, art)) if check else None)
        return with_leftovers(v, ctx.dir, "left behind")

    return Case("tracebacks", name, fn, timeout=max(CASE_TIMEOUT, timeout * 3))


def _fit(extra: list, *, implicit: bool = False) -> Callable[[Ctx, Path | None], list]:
    """A small fit of the ratings into the case's ``OUT`` with ``extra`` options (tokens replaced by :meth:`Ctx.subst`)."""
    command, options = (
        ("fit-implicit", ["--n-factors", "4", "--iterations", "2"])
        if implicit
        else ("fit", ["--epochs", "2", "--n-factors", "4", "--threads", "1", "--no-progress"])
    )
    return lambda ctx, art: [command, ctx.world.data["ratings"], "--out", ctx.dir / "OUT", *options, *(ctx.subst(art, a) for a in extra)]


def _q(*argv) -> Callable[[Ctx, Path | None], list]:
    """A command on the case's artifact copy, its tokens replaced by :meth:`Ctx.subst` (``ART``, ``RATINGS``, ``PAIRS``, ``DIR/``)."""

    def argv_of(ctx: Ctx, art: Path | None) -> list:
        return [ctx.subst(art, a) for a in argv]

    return argv_of


def traceback_cases(world: World) -> list[Case]:
    cases: list[Case] = []

    def add(name, argv_of, **kw):
        cases.append(cli_case(name, argv_of, **kw))

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
        add(f"fit {' '.join(extra)}", _fit(extra), expect=expect, base=None, timeout=FIT_TIMEOUT, check=fit_sane)
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
        add(label, _q(*argv), names=[missing], timeout=FIT_TIMEOUT)
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
        add(label, _q(*argv), names=[name], prepare=_dirs_and_files, timeout=FIT_TIMEOUT)

    def replace_by_dir(file: str) -> Callable[[Ctx, Path], list[str]]:
        def prepare(ctx: Ctx, art: Path) -> list[str]:
            path = one_file(art, file)
            path.unlink()
            path.mkdir()
            return [file]

        return prepare

    for file in ("config.json", "tensors.safetensors", "users.json"):
        cases.append(tamper_case(f"artifact whose {file} is a directory", replace_by_dir(file), kind="tracebacks"))
    for manifest, suffix in manifest_variants(world):
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
            files.chmod_tree(ctx.dir)
            if target == "ART":
                os.chmod(art, mode)
            elif target in ("ratings", "pairs"):
                (ctx.dir / "w").mkdir()
                os.chmod(ctx.dir / "w", 0o777)  # nobody may write its --out there: only the input is unreadable
                copy = shutil.copyfile(ctx.world.data[target], ctx.dir / "w" / f"{target}.csv")
                os.chmod(copy, mode)
            else:
                os.chmod(one_file(art, target), mode)

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
        add(label, _q(*argv), names=[name], prepare=chmod(target, mode), nobody=True, timeout=FIT_TIMEOUT)
    return cases


def _dirs_and_files(ctx: Ctx, art: Path | None) -> None:
    for name in ("adir", "adir.csv", "adir.png"):
        (ctx.dir / name).mkdir()
    (ctx.dir / "afile").write_text("not an artifact\n")
