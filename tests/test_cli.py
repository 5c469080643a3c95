"""The command line: run for real in a subprocess where a user would see it, in this process for the rest."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import collabemb
from collabemb import cli

from conftest import planted_ratings, snapshot_of

#: Every command, in the order --help lists them (those there were before this CLI was rewritten, and cross-validate and tune).
COMMANDS = (
    "fit",
    "fit-implicit",
    "demo",
    "cross-validate",
    "tune",
    "predict",
    "evaluate",
    "info",
    "export",
    "plot",
    "similar",
    "recommend",
    "index",
    "serve",
    "explore",
)
SCRIPT = Path(sys.executable).with_name("collabemb")
#: The installed console script, as a user runs it; else the module.
COMMAND = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "collabemb"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collabemb", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def run_here(capsys, *args: str) -> tuple[int, str, str]:
    """The same entry point in this process (no interpreter start-up): exit status, stdout, stderr."""
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code: int, stderr: str) -> str:
    assert code == 2
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("collabemb: error: ")
    return lines[0]


def error_here(capsys, *args: str) -> str:
    code, _, err = run_here(capsys, *args)
    return one_line_error(code, err)


def metric_table(stdout: str) -> dict[str, float]:
    """The metric table of ``collabemb evaluate``: the lines after the blank one."""
    lines = stdout.split("\n\n", 1)[1].strip().splitlines()[1:]
    return {name: float(value) for name, value in (line.split() for line in lines)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    frame = planted_ratings().rename(columns={"user": "userId", "item": "movieId", "rating": "stars"})
    frame.to_csv(root / "ratings.csv", index=False)
    columns = ["--user-col", "userId", "--item-col", "movieId", "--rating-col", "stars"]
    settings = ["--epochs", "4", "--n-factors", "8", "--threads", "1"]
    result = run("fit", str(root / "ratings.csv"), *columns, "--out", str(root / "art"), "--valid-frac", "0.1", *settings)
    return root, result


@pytest.fixture(scope="module")
def split_files(tmp_path_factory):
    """ratings.csv (all), train.csv (90%, random) and test.csv (the other 10%)."""
    root = tmp_path_factory.mktemp("cli-split")
    frame = planted_ratings()
    test = np.random.default_rng(1).permutation(len(frame))[: len(frame) // 10]
    frame.to_csv(root / "ratings.csv", index=False)
    frame.drop(index=test).to_csv(root / "train.csv", index=False)
    frame.iloc[np.sort(test)].to_csv(root / "test.csv", index=False)
    return root, len(frame) - len(test), len(test)


@pytest.fixture(scope="module")
def fitted_with_valid(split_files):
    root, _, _ = split_files
    settings = ["--epochs", "6", "--n-factors", "8", "--threads", "1", "--no-progress"]
    result = run("fit", str(root / "train.csv"), "--valid", str(root / "test.csv"), "--out", str(root / "art"), *settings)
    assert result.returncode == 0, result.stderr
    return root, result


# --- starting up and help ----------------------------------------------------------------------


def best_of_three(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    times, result = [], None
    for _ in range(3):
        t0 = time.perf_counter()
        result = subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=60)
        times.append(time.perf_counter() - t0)
    return min(times), result


def test_help_starts_in_under_half_a_second():
    seconds, result = best_of_three("--help")
    assert result.returncode == 0 and "fit-implicit" in result.stdout
    assert seconds < 0.5, f"collabemb --help took {seconds:.2f} s (best of 3)"


def test_version_starts_in_under_half_a_second_and_names_the_package_version():
    seconds, result = best_of_three("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"collabemb {collabemb.__version__}"
    assert seconds < 0.5, f"collabemb --version took {seconds:.2f} s (best of 3)"


def test_building_the_parser_imports_no_heavy_module():
    heavy = "('torch', 'numpy', 'pandas', 'faiss', 'numba')"
    code = f"import sys, collabemb.cli as c; c._parser(); print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = (a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_help_shows_its_default():
    commands = subcommands()
    assert tuple(commands) == COMMANDS
    missing = []
    for name, parser in {"collabemb": cli._parser(), **commands}.items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            text = formatter._expand_help(action)
            if "default" not in text and not (action.required and "(required)" in text):
                missing.append(f"{name} {action.option_strings[0]}: {text!r}")
    assert not missing
    fit_help = commands["fit"].format_help()
    assert "(default: 64)" in fit_help and "--progress, --no-progress" in fit_help and "--y-range LO HI" in fit_help


def test_fit_and_demo_options_are_the_fit_settings_fields():
    commands = subcommands()
    for name in ("fit", "demo"):
        dests = {a.dest for a in commands[name]._actions}
        assert set(collabemb.FitSettings.names()) <= dests, name
    flags = ["--n-factors", "8", "--weight-decay", "0.05", "--y-range", "1", "5", "--no-progress", "--engine", "autograd"]
    flags += ["--batch-size", "128", "--lr-schedule", "cosine", "--valid-sample", "100"]
    args = cli._parser().parse_args(["fit", "r.csv", "--out", "a", *flags])
    settings = collabemb.FitSettings(**{name: getattr(args, name) for name in collabemb.FitSettings.names()})
    expected = {"engine": "autograd", "batch_size": 128, "lr_schedule": "cosine", "valid_sample": 100}
    assert settings == collabemb.FitSettings(n_factors=8, weight_decay=0.05, y_range=(1.0, 5.0), progress=False, **expected)
    assert cli._parser().parse_args(["demo"]).epochs == 10
    assert cli._parser().parse_args(["fit", "r.csv", "--out", "a"]).epochs == collabemb.FitSettings().epochs
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["fit", "r.csv", "--out", "a", "--engine", "turbo"])


def test_choices_written_into_the_parser_are_the_librarys():
    from collabemb import cli_options, data, export, faiss_parts, implicit_mf, registry, train

    assert cli.FORMATS == export.FORMATS and cli.TEXT_DIGITS == export.TEXT_DIGITS
    assert cli.INDEX_TYPES == faiss_parts.INDEX_TYPES and cli.METRICS == faiss_parts.METRICS
    assert tuple(faiss_parts.PARTS) == cli.INDEX_PARTS
    assert set(cli.UNKNOWN) == set(registry.UNKNOWN_CHOICES)
    assert tuple(data.LAYOUTS) == cli_options.LAYOUTS  # the reading options' choices live with the other option words
    assert cli.IMPLICIT_MODELS == implicit_mf.FAMILIES and cli.WEIGHTINGS == implicit_mf.WEIGHTINGS
    assert cli_options.READ_OPTIONS == train.READ_OPTIONS
    defaults = ", ".join(f"{family} {implicit_mf.DEFAULTS[family]['regularization']:g}" for family in implicit_mf.FAMILIES)
    assert defaults == cli.IMPLICIT_DEFAULTS_HELP


def test_library_words_become_the_command_lines_flags():
    assert cli.cli_words("1 unseen item ID(s): 9; pass unknown='unknown_slot'") == "1 unseen item ID(s): 9; pass --unknown unknown_slot"
    assert cli.cli_words("pass train= (or store them with fitted.set_seen_items(train)), or exclude_seen=False to rank") == (
        "pass --train FILE (or store them with collabemb fit), or --include-seen to rank"
    )
    expected = "--early-stopping needs validation ratings (--valid FILE)"
    assert cli.cli_words("early_stopping needs validation ratings (valid=...)") == expected
    assert cli.cli_words("use engine='autograd' on device='cuda:0'") == "use --engine autograd on --device cuda:0"
    assert cli.cli_words("n_factors must be >= 1, got 0") == "--n-factors must be >= 1, got 0"
    assert cli.cli_words("unknown_row=False leaves row 0 out; index_type='hnsw'") == "--no-unknown-row leaves row 0 out; --index-type hnsw"
    assert cli.cli_words("n_train=5, retrain= and the training pairs") == "n_train=5, retrain= and the training pairs"  # whole words only


# --- training ---------------------------------------------------------------------------------


def test_fit_writes_an_artifact_and_reports_what_it_did(trained):
    root, result = trained
    assert result.returncode == 0, result.stderr
    assert "read 3600 ratings" in result.stdout
    assert "trained 4 epochs" in result.stdout and "validation RMSE" in result.stdout
    assert "row 0, the unknown slot" in result.stdout
    assert "seen pairs: 3240 training (user, item) pairs stored" in result.stdout  # --valid-frac 0.1 held out 360
    assert (snapshot_of(root / "art") / "config.json").is_file()


def test_fit_with_valid_stores_only_the_training_pairs_and_evaluate_on_them_is_honest(fitted_with_valid, split_files):
    root, n_train, n_test = split_files
    _, result = fitted_with_valid
    config = json.loads((snapshot_of(root / "art") / "config.json").read_text())
    assert config["seen_items"]["n_pairs"] == n_train
    assert "validation RMSE" in result.stdout and f"({n_test} ratings)" in result.stdout
    evaluated = run("evaluate", str(root / "art"), str(root / "test.csv"))
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stderr == ""
    table = metric_table(evaluated.stdout)
    assert table["excluded_test_pairs"] == 0
    assert table["hit_rate@10"] > 0 and table["ndcg@10"] > 0 and table["precision@10"] > 0


def test_evaluate_prints_the_librarys_warning_when_train_holds_test_pairs(fitted_with_valid, split_files):
    root, _, n_test = split_files
    result = run("evaluate", str(root / "art"), str(root / "test.csv"), "--train", str(root / "ratings.csv"))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("collabemb: warning: ") and "can never be hit" in lines[0]
    assert metric_table(result.stdout)["excluded_test_pairs"] == n_test
    assert metric_table(result.stdout)["hit_rate@10"] == 0


def test_fit_implicit_takes_n_factors_and_info_prints_its_identity(split_files, tmp_path, capsys):
    root, _, _ = split_files
    options = ["--n-factors", "6", "--threshold", "3", "--no-progress"]
    code, out, err = run_here(capsys, "fit-implicit", str(root / "train.csv"), "--out", str(tmp_path / "als"), *options)
    assert code == 0, err
    assert "trained als" in out and "6 factors" in out and "row 0, the unknown slot: the mean of the known rows" in out
    code, out, err = run_here(capsys, "info", str(tmp_path / "als"))
    assert code == 0, err
    assert "# Model card: als model (EmbeddingDotBias, 6 factors)" in out
    assert "What it holds: the mean of the known rows (not trained)." in out
    assert "with ALS's closed-form solve (collabemb.fold_in_als), regularization 20, alpha 5." in out
    for setting in ("| threshold      | 3 |", "| weighting      | binary |", "| regularization | 20 |", "| alpha          | 5 |"):
        assert setting in out
    code, out, err = run_here(capsys, "evaluate", str(tmp_path / "als"), str(root / "test.csv"), "-k", "5")
    assert code == 0, err
    assert "relevant: rating >= 3 (the model's training threshold)" in out and "rmse" not in metric_table(out)


def test_demo_trains_on_the_bundled_sample_and_says_where_it_wrote(tmp_path):
    result = run("demo", "--out", str(tmp_path / "demo"), "--epochs", "2", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "demo: 90000 ratings" in result.stdout
    assert f"wrote artifact {tmp_path / 'demo'}" in result.stdout
    assert pd.read_json(snapshot_of(tmp_path / "demo") / "users.json", typ="series")["id_type"] == "int"
    info = run("info", str(tmp_path / "demo"))
    assert "- Item metadata: 1600 rows; columns item, title, genres" in info.stdout


# --- using an artifact -------------------------------------------------------------------------


def test_predict_prints_csv_with_known_flags(trained):
    root, _ = trained
    (root / "pairs.tsv").write_text("user\titem\n1\t1\n5\t2\n9999\t1\n")
    result = run("predict", str(root / "art"), str(root / "pairs.tsv"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "user,item,prediction,user_known,item_known"
    assert lines[3].startswith("9999,1,") and lines[3].endswith(",False,True")


def test_info_prints_the_path_and_the_model_card_with_rows_the_unknown_slot_and_the_seen_pairs(trained):
    root, _ = trained
    result = run("info", str(root / "art"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"artifact      {(root / 'art').resolve()}"
    assert lines[2] == "family        rating; fold-in for new IDs: rating"
    assert lines[3].startswith("row 0         the unknown slot, trained: routed training ratings")
    assert lines[4] == "index         none stored (collabemb index builds one)"
    card = (snapshot_of(root / "art") / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert result.stdout.endswith(card)  # the stored card, as written
    assert "- Users: 120 int IDs (rows 1..120); first: 1, 2, 3, 4, 5, ..." in card
    assert "What it holds: trained: routed training ratings" in card
    assert "New users and items can be folded in from a few of their ratings" in card
    assert "- Training (user, item) pairs stored: 3240" in card
    assert "- Validation ratings: 360" in card


def test_export_writes_a_table_without_row_0(trained, capsys):
    root, _ = trained
    code, out, err = run_here(capsys, "export", str(root / "art"), "--table", "user", "--no-unknown-row", "--out", str(root / "users.csv"))
    assert code == 0, err
    assert out.startswith("wrote 120 user rows x 8 factors + bias to ")
    frame = pd.read_csv(root / "users.csv")
    assert frame["row"].tolist() == list(range(1, 121)) and frame["user"].tolist() == list(range(1, 121))


def test_plot_takes_the_plot_type_as_a_positional_choice(trained, capsys):
    root, _ = trained
    code, out, err = run_here(capsys, "plot", str(root / "art"), "history", "--out", str(root / "history.png"))
    assert code == 0, err
    assert out.strip() == f"wrote {root / 'history.png'}" and (root / "history.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["plot", str(root / "art"), "--kind", "pca", "--out", "x.png"])


def test_index_similar_and_recommend_use_one_vocabulary(fitted_with_valid, split_files, capsys):
    root, _, _ = split_files
    code, out, err = run_here(capsys, "index", str(root / "art"), "--index-type", "exact", "--parts", "items", "users", "--threads", "1")
    assert code == 0, err
    assert out.startswith("built items (exact), users (exact) in ") and "metric cosine" in out
    stored = collabemb.load_model(root / "art")
    assert stored.index is not None
    code, out, err = run_here(capsys, "similar", str(root / "art"), "3", "--table", "user", "-k", "2")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split()[:2] == ["query", "user"] and len(lines) == 3
    code, out, err = run_here(capsys, "recommend", str(root / "art"), "--user", "3", "9999", "--unknown", "unknown_slot", "-k", "2")
    assert code == 0, err
    assert out.count("unknown_slot") == 2 and out.count(" known") == 2
    train = pd.read_csv(root / "train.csv")
    code, out, err = run_here(capsys, "recommend", str(root / "art"), "--user", "3", "-k", "5", "-o", str(root / "rec.csv"))
    assert code == 0, err
    assert not set(pd.read_csv(root / "rec.csv")["item"]) & set(train.loc[train["user"] == 3, "item"])  # the stored training pairs
    (root / "new_user.csv").write_text("item,rating\n1,5\n2,5\n3,1\n")
    code, out, err = run_here(
        capsys, "recommend", str(root / "art"), "--ratings", str(root / "new_user.csv"), "-k", "4", "-o", str(root / "new.csv")
    )
    assert code == 0, err
    folded = pd.read_csv(root / "new.csv")
    assert len(folded) == 4 and set(folded["source"]) == {"fold_in"} and not {1, 2, 3} & set(folded["item"])
    code, out, err = run_here(capsys, "recommend", str(root / "art"), "--anonymous", "-k", "2", "--metric", "dot")
    assert code == 0 and out.count("unknown_slot") == 2


# --- errors ----------------------------------------------------------------------------------


def test_bad_rating_is_one_line_naming_file_line_and_column(tmp_path):
    (tmp_path / "bad.csv").write_text("user,item,rating\n1,1,4\n2,1,lots\n")
    result = run("fit", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "art"))
    line = one_line_error(result.returncode, result.stderr)
    assert line == f"collabemb: error: {tmp_path / 'bad.csv'}, line 3, column 'rating': expected a finite number, found 'lots'"
    assert not (tmp_path / "art").exists()


def test_missing_column_and_missing_file_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "r.csv").write_text("user,item,score\n1,1,4\n")
    line = error_here(capsys, "fit", str(tmp_path / "r.csv"), "--out", str(tmp_path / "a"))
    assert "missing rating column 'rating' (found columns: user, item, score)" in line
    line = error_here(capsys, "info", str(tmp_path / "nothing"))
    assert "no such artifact directory" in line


def test_setting_errors_name_the_flag(tmp_path, capsys):
    (tmp_path / "r.csv").write_text("user,item,rating\n1,1,4\n2,1,3\n")
    line = error_here(capsys, "fit", str(tmp_path / "r.csv"), "--out", str(tmp_path / "a"), "--n-factors", "0")
    assert line == "collabemb: error: --n-factors must be >= 1, got 0"
    line = error_here(capsys, "fit", str(tmp_path / "r.csv"), "--out", str(tmp_path / "a"), "--early-stopping", "2")
    assert line.startswith("collabemb: error: --early-stopping needs validation ratings (--valid FILE")


def test_predict_with_unparseable_id_names_the_line(trained, tmp_path):
    root, _ = trained
    (tmp_path / "pairs.csv").write_text("user,item\n1,1\nabc,2\n")
    result = run("predict", str(root / "art"), str(tmp_path / "pairs.csv"))
    line = one_line_error(result.returncode, result.stderr)
    assert "line 3, column 'user': expected an integer ID, found 'abc'" in line


def test_an_unseen_id_without_unknown_slot_fails_naming_the_flag(fitted_with_valid, split_files, tmp_path, capsys):
    root, _, _ = split_files
    result = run("similar", str(root / "art"), "4242")
    line = one_line_error(result.returncode, result.stderr)
    assert line.startswith("collabemb: error: 1 unseen item ID(s): 4242") and "--unknown unknown_slot" in line
    assert "unknown=" not in line
    (tmp_path / "pairs.csv").write_text("user,item\n1,1\n9999,1\n")
    code, _, err = run_here(capsys, "predict", str(root / "art"), str(tmp_path / "pairs.csv"), "--unknown", "raise")
    assert "9999" in one_line_error(code, err) and "--unknown unknown_slot" in err
    code, _, err = run_here(capsys, "recommend", str(root / "art"), "--user", "9999")
    assert "--unknown unknown_slot" in one_line_error(code, err)
    code, _, err = run_here(capsys, "recommend", str(root / "art"), "--user", "abc")
    assert "'abc' is not one" in one_line_error(code, err)


def test_debug_flag_shows_the_traceback(tmp_path):
    result = run("--debug", "info", str(tmp_path / "nothing"))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_ctrl_c_exits_130_with_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_info", interrupted)
    code, out, err = run_here(capsys, "info", "anything")
    assert code == 130 and out == "" and err == "collabemb: interrupted\n"
