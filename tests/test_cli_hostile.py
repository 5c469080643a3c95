"""No input ends in a traceback (issue 10): the command line run for real, in a subprocess, with what a
careless or hostile user would give it.

* Any exception leaving a command is one ``collabemb: error:`` line: exit 2 for what is refused, 1
  (naming the exception, asking for --debug) for a bug.
* A closed stdout ends quietly with 141; Ctrl-C at any moment ends with 130 and one line.
* Every option is checked with its range before any work starts (FitSettings for fit's, so the
  Python API refuses the same); -k is clamped to the catalogue before anything is allocated.
* IDs are read as the type of the registry they are looked up in, the same way for predict,
  recommend --ratings, --seen, the Python ``exclude=`` and evaluate.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import collabemb as ce
from collabemb.cli import main
from collabemb.implicit_mf import fit_implicit
from collabemb.metrics import evaluate, top_k_rows

from conftest import planted_ratings

PYTHON = [sys.executable, "-m", "collabemb"]
SCRIPT = Path(sys.executable).with_name("collabemb")
N_USERS, N_ITEMS = 60, 50


def run(*args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The command line in this process (``collabemb.cli.main``, as the console script calls it) with its
    output captured; a real process when an environment is given. Signals and pipes use real processes below."""
    if env is not None:
        return subprocess.run([*PYTHON, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's own exits (--help, an argument error)
            code = exc.code if isinstance(exc.code, int) else 2
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def stderr_lines(stderr: str) -> list[str]:
    """stderr without the library's warning lines and ``-X importtime``'s lines."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(("collabemb: warning:", "import time:"))]


def refused(result: subprocess.CompletedProcess, *words: str) -> str:
    """The one ``collabemb: error:`` line of a refusal (exit 2), which names every one of ``words``."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = stderr_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("collabemb: error: "), (result.returncode, result.stderr)
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Ratings files and four small artifacts: int IDs, str users with int items, str IDs written as digits, ALS."""
    root = tmp_path_factory.mktemp("hostile")
    frame = planted_ratings(n_users=N_USERS, n_items=N_ITEMS, per_user=20, seed=4)
    frame.to_csv(root / "ratings.csv", index=False)
    small = {"n_factors": 4, "epochs": 2, "threads": 1, "progress": False}
    ce.save_model(ce.fit(frame, **small), root / "int")
    mixed = frame.assign(user=[f"u{v:03d}" for v in frame["user"]])
    mixed.to_csv(root / "mixed.csv", index=False)
    ce.save_model(ce.fit(mixed, **small), root / "mixed")
    digits = frame.assign(user=frame["user"].astype(str), item=frame["item"].astype(str))
    ce.save_model(ce.fit(digits, **small), root / "str")
    ce.save_model(fit_implicit(frame, model="als", n_factors=4), root / "als")
    return root


@pytest.fixture(scope="module")
def models(world) -> dict[str, ce.FittedModel]:
    return {name: ce.load_model(world / name) for name in ("int", "mixed", "str")}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- 1. no traceback unless --debug --------------------------------------------------------------


PLANTED = """
import sys
import collabemb.cli as cli
def command(args):
{body}
cli.cmd_info = command
sys.exit(cli.main(sys.argv[1:]))
"""


def planted(body: str, *args: str) -> subprocess.CompletedProcess:
    """``collabemb info`` whose command is ``body``: the real command line around an exception of our choosing."""
    code = PLANTED.format(body="\n".join("    " + line for line in body.splitlines()))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ("raise RuntimeError('something broke\\non two lines')", "RuntimeError"),
        ("return {}['missing']", "KeyError"),
        ("return 1 // 0", "ZeroDivisionError"),
        ("return command(args)", "RecursionError"),
        ("raise AssertionError", "AssertionError"),
    ],
)
def test_a_bug_is_one_line_naming_the_exception_and_exits_1(body, name):
    result = planted(body, "info", "x")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = stderr_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("collabemb: error: ") and name in lines[0], result.stderr
    assert "rerun with --debug for the traceback" in lines[0]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("raise MemoryError", ["out of memory"]),
        ("raise MemoryError('Unable to allocate 8.00 TiB for an array')", ["out of memory (Unable to allocate 8.00 TiB"]),
        ("import math; math.exp(1000)", ["OverflowError"]),
        ("raise OSError(28, 'No space left on device')", ["No space left"]),
        ("raise ValueError('first line\\n  second line')", ["first line second line"]),
    ],
)
def test_an_expected_error_is_one_line_and_exits_2(body, words):
    refused(planted(body, "info", "x"), *words)


def test_debug_shows_the_traceback_of_a_bug():
    result = planted("raise RuntimeError('boom')", "--debug", "info", "x")
    assert result.returncode == 1 and "Traceback" in result.stderr and "RuntimeError: boom" in result.stderr


def test_argument_errors_are_one_line_too():
    refused(run("similar"), "required", "--help")
    refused(run("nope"), "invalid choice")
    refused(run("fit", "r.csv", "--out", "o", "--epochs", "2.5"), "--epochs", "2.5")


# --- 2. a closed pipe --------------------------------------------------------------------------------


def closed_pipe(command: list[str]) -> subprocess.CompletedProcess:
    """Run ``command`` with stdout a pipe whose read end is closed before it writes anything."""
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(command, stdout=write_end, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
        os.close(read_end)
    _, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(command, proc.returncode, "", err)


@pytest.mark.parametrize(
    "args",
    [
        ["similar", "{int}", "1", "-k", "50"],
        ["recommend", "{int}", "--user", "1", "2", "-k", "50"],
        ["predict", "{int}", "{ratings}"],
        ["export", "{int}", "--table", "item", "--out", "-"],
    ],
    ids=["similar", "recommend", "predict", "export"],
)
def test_a_closed_stdout_ends_quietly_with_141(world, args):
    args = [a.format(int=world / "int", ratings=world / "ratings.csv") for a in args]
    result = closed_pipe([*PYTHON, *args])
    assert result.returncode == 141, result.stderr
    assert stderr_lines(result.stderr) == [], result.stderr  # no "Broken pipe", no "Exception ignored", no traceback


@pytest.mark.skipif(not SCRIPT.is_file(), reason="the console script is not installed")
def test_the_console_script_ends_quietly_on_a_closed_stdout_too(world):
    result = closed_pipe([str(SCRIPT), "info", str(world / "int")])
    assert result.returncode == 141 and stderr_lines(result.stderr) == [], result.stderr


def test_export_to_stdout_writes_the_table_there_and_the_report_to_stderr(world):
    result = run("export", world / "int", "--table", "item", "--out", "-", env=dict(os.environ))  # a real stdout
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("row,item,bias,emb_0") and len(lines) == N_ITEMS + 2  # header, row 0, the items
    assert stderr_lines(result.stderr)[0].startswith(f"wrote {N_ITEMS + 1} item rows")
    refused(run("export", world / "int", "--table", "item", "--out", "-", "--format", "npy"), "--out -", "npy")


# --- 3. Ctrl-C -------------------------------------------------------------------------------------


def interrupt_when(command: list[str], marker: str, *, stream: str = "stderr", delay: float = 0.0) -> tuple[int, list[str], str]:
    """Start ``command``, send SIGINT once ``marker`` shows on its ``stream`` (then ``delay`` s); returns
    the exit status, its stderr lines (warnings and -X importtime lines left out) and its stdout."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    watched, seen = (proc.stderr if stream == "stderr" else proc.stdout), b""
    try:
        while marker.encode() not in seen:
            chunk = watched.read1(1 << 16)
            assert chunk, f"{marker!r} never came: {seen.decode(errors='replace')[-2000:]}"
            seen += chunk
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    if stream == "stderr":
        err = seen + err
    else:
        out = seen + out
    text = err.decode(errors="replace")
    assert "Traceback" not in text, text
    return proc.returncode, stderr_lines(text), out.decode(errors="replace")


@pytest.mark.parametrize(
    ("entry", "marker"),
    [("module", "argparse"), ("module", "collabemb.cli"), ("module", "torch"), ("script", "argparse")],
    ids=["start-up", "parser-imported", "heavy-imports", "script-start-up"],
)
def test_ctrl_c_during_start_up_and_imports_exits_130_with_one_line(world, entry, marker):
    if entry == "script" and not SCRIPT.is_file():
        pytest.skip("the console script is not installed")
    start = [sys.executable, "-X", "importtime", *(["-m", "collabemb"] if entry == "module" else [str(SCRIPT)])]
    code, lines, _ = interrupt_when([*start, "info", str(world / "int")], marker)
    assert (code, lines) == (130, ["collabemb: interrupted"])


SLOW = """
import sys, time
import collabemb.cli as cli
real = cli.{name}
def slow(*args):
    print("MARK", file=sys.stderr, flush=True)
    time.sleep(60)
    return real(*args)
cli.{name} = slow
from collabemb.__main__ import entry
sys.exit(entry(sys.argv[1:]))
"""


@pytest.mark.parametrize("name", ["_parser", "cmd_info"], ids=["argument-parsing", "in-a-command"])
def test_ctrl_c_while_parsing_arguments_or_in_a_command_exits_130_with_one_line(world, name):
    command = [sys.executable, "-c", SLOW.format(name=name), "info", str(world / "int")]
    code, lines, _ = interrupt_when(command, "MARK")
    assert (code, lines) == (130, ["MARK", "collabemb: interrupted"])


def test_ctrl_c_while_writing_the_output_exits_130_with_one_line(world, tmp_path):
    pairs = pd.DataFrame({"user": np.tile(np.arange(1, N_USERS + 1), 400), "item": 1})
    pairs.to_csv(tmp_path / "pairs.csv", index=False)  # 24,000 predictions: far more than a pipe holds
    code, lines, out = interrupt_when(
        [*PYTHON, "predict", str(world / "int"), str(tmp_path / "pairs.csv")], "user,item", stream="stdout", delay=1.0
    )
    assert (code, lines) == (130, ["collabemb: interrupted"])
    assert len(out.splitlines()) < len(pairs)


def test_ctrl_c_during_a_long_fit_saves_the_last_epoch_and_exits_130_with_one_line(world, tmp_path):
    ck, out = tmp_path / "ck", tmp_path / "out"
    command = [*PYTHON, "fit", str(world / "ratings.csv"), "--out", str(out), "--epochs", "100000", "--threads", "1", "--no-progress"]
    proc = subprocess.Popen([*command, "--checkpoint", str(ck)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not ((ck / "CURRENT").exists() or (ck / "config.json").exists()):  # an epoch has finished
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert "Traceback" not in stderr, stderr
    assert (proc.returncode, stderr_lines(stderr)) == (130, ["collabemb: interrupted"])
    assert "interrupted (Ctrl-C): kept epoch" in stdout and f"--resume {ck}" in stdout
    kept = ce.load_model(out)
    assert 1 <= len(kept.history.epoch) < 100000


def test_ctrl_c_as_the_fit_starts_exits_130_with_one_line(world, tmp_path):
    command = [
        *PYTHON,
        "fit",
        str(world / "ratings.csv"),
        "--out",
        str(tmp_path / "o"),
        "--epochs",
        "100000",
        "--threads",
        "1",
        "--no-progress",
    ]
    code, lines, _ = interrupt_when(command, "read ", stream="stdout")
    assert (code, lines) == (130, ["collabemb: interrupted"])


# --- 4. every argument checked, with its range, before any work --------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"lr": -1.0}, ["lr must be a finite number > 0", "-1"]),
        ({"lr": math.nan}, ["lr must", "NaN"]),
        ({"lr": math.inf}, ["lr must", "inf (infinite)"]),
        ({"lr": 1e30}, ["lr must", "<= 10"]),
        ({"weight_decay": -5.0}, ["weight_decay must be a finite number >= 0"]),
        ({"weight_decay": math.nan}, ["weight_decay must", "NaN"]),
        ({"epochs": 0}, ["epochs must be >= 1"]),
        ({"epochs": 2**63}, ["epochs must be <= 100000"]),
        ({"n_factors": 0}, ["n_factors must be >= 1"]),
        ({"n_factors": 10**12}, ["n_factors must be <= 4096"]),
        ({"batch_size": 0}, ["batch_size must be >= 1"]),
        ({"batch_size": 10**12}, ["batch_size must be <="]),
        ({"unknown_frac": math.nan}, ["unknown_frac must be in [0, 0.5)", "NaN"]),
        ({"y_range": (1.0, math.inf)}, ["y_range must"]),
        ({"y_range": (-1e308, 1e308)}, ["y_range must"]),
        ({"early_stopping": 0}, ["early_stopping must be >= 1"]),
        ({"seed": -1}, ["seed must be >= 0"]),
        ({"seed": 2**64}, ["seed must be <="]),
        ({"threads": 0}, ["threads must be >= 1"]),
        ({"threads": 10**9}, ["threads must be <= 256"]),
        ({"valid_sample": 0}, ["valid_sample must be >= 1"]),
        ({"device": "foo"}, ["device must be cpu, cuda, cuda:N", "mps", "'foo'"]),
        ({"device": ""}, ["device must be"]),
        ({"progress": 1}, ["progress must be True, False or None"]),
    ],
)
def test_fit_settings_refuse_each_bad_value_naming_the_field(kwargs, words):
    with pytest.raises(ValueError) as info:
        ce.FitSettings(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_python_fit_refuses_before_reading_anything(tmp_path):
    with pytest.raises(ValueError, match="lr must be a finite number > 0.*NaN"):
        ce.fit(tmp_path / "missing.csv", lr=math.nan)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--lr", "-1"], ["--lr must be a finite number > 0"]),
        (["--lr", "nan"], ["--lr must", "NaN (not a number)"]),
        (["--lr", "inf"], ["--lr must", "infinite"]),
        (["--weight-decay", "-5"], ["--weight-decay must be a finite number >= 0"]),
        (["--epochs", "0"], ["--epochs must be >= 1"]),
        (["--epochs", str(2**63)], ["--epochs must be <= 100000"]),
        (["--n-factors", "0"], ["--n-factors must be >= 1"]),
        (["--batch-size", "0"], ["--batch-size must be >= 1"]),
        (["--unknown-frac", "0.7"], ["--unknown-frac must be in [0, 0.5)"]),
        (["--seed", str(2**64)], ["--seed must be <="]),
        (["--threads", "100000"], ["--threads must be <= 256"]),
        (["--valid-sample", "0"], ["--valid-sample must be >= 1"]),
        (["--y-range", "5", "1"], ["--y-range must"]),
        (["--device", "foo"], ["--device must be cpu, cuda, cuda:N", "mps", "'foo'"]),
        (["--device", "cuda:99"], ["--device cuda:99", "CUDA device"]),
        (["--valid-frac", "1"], ["--valid-frac", "> 0 and < 1"]),
        (["--valid-frac", "nan"], ["--valid-frac", "NaN"]),
    ],
)
def test_fit_refuses_each_bad_setting_before_reading_the_ratings(tmp_path, flags, words):
    result = run("fit", tmp_path / "missing.csv", "--out", tmp_path / "out", *flags)
    line = refused(result, *words)
    assert "missing.csv" not in line  # refused before the (missing) file was read
    assert not (tmp_path / "out").exists()


def test_demo_refuses_a_bad_setting_before_training():
    refused(run("demo", "--out", "unused", "--epochs", "0"), "--epochs must be >= 1")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["similar", "ART", "1", "-k", "2.5"], ["-k", "integer >= 1", "'2.5'"]),
        (["similar", "ART", "1", "-k", "0"], ["-k", "integer >= 1"]),
        (["similar", "ART", "1", "-k", "-3"], ["-k", "integer >= 1"]),
        (["recommend", "ART", "--user", "1", "-k", "0"], ["-k"]),
        (["evaluate", "ART", "test.csv", "-k", "nan"], ["-k"]),
        (["similar", "ART", "1", "--threads", "0"], ["--threads", ">= 1 and <= 256"]),
        (["index", "ART", "--threads", "1000000000"], ["--threads", "<= 256"]),
        (["evaluate", "ART", "test.csv", "--threshold", "nan"], ["--threshold", "NaN"]),
        (["export", "ART", "--table", "item", "--out", "e.csv", "--digits", "0"], ["--digits", ">= 1 and <= 17"]),
        (["plot", "ART", "pca", "--out", "p.png", "--n", "0"], ["--n", ">= 1"]),
        (["plot", "ART", "bias", "--out", "p.png", "--min-ratings", "-1"], ["--min-ratings", ">= 0"]),
        (["fit-implicit", "r.csv", "--out", "o", "--alpha", "nan"], ["--alpha", "> 0", "NaN"]),
        (["fit-implicit", "r.csv", "--out", "o", "--regularization", "-1"], ["--regularization", ">= 0"]),
        (["fit-implicit", "r.csv", "--out", "o", "--iterations", "0"], ["--iterations", ">= 1"]),
        (["fit-implicit", "r.csv", "--out", "o", "--learning-rate", "inf"], ["--learning-rate", "infinite"]),
        (["fit-implicit", "r.csv", "--out", "o", "--seed", str(2**64)], ["--seed", "<= 4294967295"]),
        (["fit-implicit", "r.csv", "--out", "o", "--threads", "-1"], ["--threads", ">= 0"]),
        (["fit-implicit", "r.csv", "--out", "o", "--threshold", "inf"], ["--threshold", "infinite"]),
        (["fit-implicit", "r.csv", "--out", "o", "--n-factors", str(10**12)], ["--n-factors", "<= 4096"]),
    ],
)
def test_every_other_numeric_option_has_a_range(args, words):
    refused(run(*args), *words)


def test_a_huge_k_is_clamped_to_the_catalogue(world):
    result = run("similar", world / "int", "1", "-k", "1000000000")
    assert result.returncode == 0 and stderr_lines(result.stderr) == [], result.stderr
    assert len(result.stdout.strip().splitlines()) == 1 + N_ITEMS - 1  # header, every other item
    result = run("evaluate", world / "int", world / "ratings.csv", "-k", str(2**63), "--include-seen")
    assert result.returncode == 0 and f"precision@{2**63}" in result.stdout, result.stderr


@pytest.mark.parametrize("bad", [2.5, 0, -3, True, "10", None])
def test_python_k_must_be_a_positive_integer(models, world, bad):
    fitted = models["int"]
    expected = TypeError if not isinstance(bad, int) or isinstance(bad, bool) else ValueError
    calls = [
        lambda: ce.similar_items(fitted, [1], k=bad),
        lambda: ce.similar_users(fitted, [1], k=bad),
        lambda: ce.recommend(fitted, [1], k=bad),
        lambda: ce.recommend_from_ratings(fitted, pd.DataFrame({"item": [1, 2], "rating": [5.0, 1.0]}), k=bad),
        lambda: evaluate(fitted, world / "ratings.csv", k=bad),
        lambda: top_k_rows(fitted, np.array([1]), bad),
    ]
    for call in calls:
        with pytest.raises(expected, match="k must be an integer >= 1"):
            call()


def test_python_k_beyond_the_catalogue_allocates_nothing_of_its_size(models, world):
    fitted, huge = models["int"], 10**15  # (1, 10**15) int64 would be 8 PB
    assert len(ce.similar_items(fitted, [1], k=huge)) == N_ITEMS - 1
    assert len(ce.similar_users(fitted, [1], k=2**63)) == N_USERS - 1
    assert len(ce.recommend(fitted, [1, 2], k=huge, exclude_seen=False)) == 2 * N_ITEMS
    assert len(ce.recommend_from_ratings(fitted, pd.DataFrame({"item": [1, 2], "rating": [5.0, 1.0]}), k=huge)) == N_ITEMS - 2
    rows, _ = top_k_rows(fitted, np.array([1, 2, 3]), huge)
    assert rows.shape == (3, N_ITEMS)
    small, large = (
        evaluate(fitted, world / "ratings.csv", k=N_ITEMS, exclude_seen=False),
        evaluate(fitted, world / "ratings.csv", k=huge, exclude_seen=False),
    )
    assert large[f"recall@{huge}"] == small[f"recall@{N_ITEMS}"] == 1.0
    assert large[f"precision@{huge}"] == pytest.approx(small[f"precision@{N_ITEMS}"] * N_ITEMS / huge)


# --- 5. IDs judged by the registry they are looked up in, the same way everywhere ------------------------


def test_predict_refuses_050_for_int_items_naming_file_line_and_column(world, tmp_path):
    pairs = write(tmp_path / "pairs.csv", "user,item\n1,1\n2,050\n")
    refused(run("predict", world / "int", pairs), "pairs.csv, line 3, column 'item'", "'050'")


@pytest.mark.parametrize("model", ["int", "mixed", "als"])
def test_recommend_ratings_refuses_050_for_int_items_naming_file_line_and_column(world, tmp_path, model):
    user = {"int": "1001", "mixed": "u1001", "als": "1001"}[model]
    ratings = write(tmp_path / "new.csv", f"user,item,rating\n{user},1,5\n{user},050,4\n")
    refused(run("recommend", world / model, "--ratings", ratings), "new.csv, line 3, column 'item'", "'050'")


def test_recommend_ratings_without_a_user_column_works_for_als_and_refuses_050(world, tmp_path):
    result = run("recommend", world / "als", "--ratings", write(tmp_path / "new.csv", "item,rating\n1,5\n2,4\n"), "-k", "3")
    assert result.returncode == 0 and "fold_in" in result.stdout, result.stderr
    refused(run("recommend", world / "als", "--ratings", write(tmp_path / "bad.csv", "item,rating\n1,5\n050,4\n")), "line 3", "'050'")


@pytest.mark.parametrize(("model", "user"), [("int", "1"), ("mixed", "u001")])
def test_seen_file_refuses_007_for_int_items_naming_file_line_and_column(world, tmp_path, model, user):
    seen = write(tmp_path / "seen.csv", f"user,item,rating\n{user},5,4\n{user},007,4\n")
    refused(run("recommend", world / model, "--user", user, "--seen", seen), "seen.csv, line 3, column 'item'", "'007'")


def test_digit_ids_of_a_str_model_are_its_ids_in_every_path(world, tmp_path):
    """A model of str IDs "1".."60": text is its IDs as written, on the command line and in every file."""
    seen = write(tmp_path / "seen.csv", "user,item,rating\n7,3,4\n7,5,4\n")
    result = run("recommend", world / "str", "--user", "7", "--seen", seen, "-k", "100", "-o", tmp_path / "rec.csv")
    assert result.returncode == 0, result.stderr
    recs = pd.read_csv(tmp_path / "rec.csv", dtype={"item": str})
    assert len(recs) == N_ITEMS - 2 and not {"3", "5"} & set(recs["item"])
    result = run("evaluate", world / "str", world / "ratings.csv", "-k", "5")
    assert result.returncode == 0 and "excluded_test_pairs" in result.stdout, result.stderr


def test_command_line_ids_follow_the_same_rule(world):
    refused(run("similar", world / "int", "1", "050", "-0"), "'050' is not one")
    refused(run("recommend", world / "int", "--user", str(2**64)), "int64")


def test_python_seen_file_and_ratings_file_follow_the_rule_for_each_column(models, tmp_path):
    mixed = models["mixed"]  # str users, int items
    with pytest.raises(ce.RatingsError, match=r"seen.csv, line 3, column 'item': expected an integer ID, found '007'"):
        ce.recommend(mixed, ["u001"], seen=write(tmp_path / "seen.csv", "user,item,rating\nu001,5,4\nu001,007,4\n"))
    seen = write(tmp_path / "ok.csv", "user,item,rating\n7,3,4\n7,5,4\n")  # user "7": a str ID, unseen; items 3, 5
    assert len(ce.recommend(mixed, ["u001"], seen=seen, k=3)) == 3
    with pytest.raises(ce.RatingsError, match=r"new.csv, line 2, column 'item'"):
        ce.recommend_from_ratings(mixed, write(tmp_path / "new.csv", "user,item,rating\nu900,050,5\n"))


@pytest.mark.parametrize("exclude", [["2"], [2.0], [1, "2"], "2", [True]])
def test_python_exclude_of_the_wrong_type_raises_type_error_naming_it(models, exclude):
    fitted = models["int"]
    for call in (
        lambda: ce.similar_items(fitted, [1], exclude=exclude),
        lambda: ce.recommend(fitted, [1], exclude=exclude),
        lambda: ce.recommend_from_ratings(fitted, pd.DataFrame({"item": [1], "rating": [5.0]}), exclude=exclude),
    ):
        with pytest.raises(TypeError, match="'2'|float|bool|str"):
            call()


def test_python_exclude_of_the_right_type_leaves_items_out(models):
    recs = ce.recommend(models["str"], ["7"], k=N_ITEMS, exclude=["3", "5", "not-an-item"], exclude_seen=False)
    assert len(recs) == N_ITEMS - 2 and not {"3", "5"} & set(recs["item"])
