"""The command line, run for real in a subprocess."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import planted_ratings


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collabemb", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    frame = planted_ratings().rename(columns={"user": "userId", "item": "movieId", "rating": "stars"})
    frame.to_csv(root / "ratings.csv", index=False)
    result = run(
        "fit", str(root / "ratings.csv"), "--user-col", "userId", "--item-col", "movieId", "--rating-col", "stars",
        "--out", str(root / "art"), "--epochs", "4", "--factors", "8", "--valid-frac", "0.1", "--threads", "1",
    )
    return root, result


def test_fit_writes_an_artifact_and_reports_what_it_did(trained):
    root, result = trained
    assert result.returncode == 0, result.stderr
    assert "read 3600 ratings" in result.stdout
    assert "trained 4 epochs" in result.stdout and "validation RMSE" in result.stdout
    assert "row 0, the unknown slot" in result.stdout
    assert (root / "art" / "config.json").is_file()


def test_predict_prints_csv_with_known_flags(trained):
    root, _ = trained
    (root / "pairs.tsv").write_text("user\titem\n1\t1\n5\t2\n9999\t1\n")
    result = run("predict", str(root / "art"), str(root / "pairs.tsv"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "user,item,prediction,user_known,item_known"
    assert lines[3].startswith("9999,1,") and lines[3].endswith(",False,True")


def test_info_describes_rows_and_the_unknown_slot(trained):
    root, _ = trained
    result = run("info", str(root / "art"))
    assert result.returncode == 0, result.stderr
    assert "users         120 int IDs, rows 1..120; first: 1, 2, 3, 4, 5, ..." in result.stdout
    assert "row 0         the unknown slot" in result.stdout


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_bad_rating_is_one_line_naming_file_line_and_column(tmp_path):
    (tmp_path / "bad.csv").write_text("user,item,rating\n1,1,4\n2,1,lots\n")
    line = _one_line_error(run("fit", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "art")))
    assert line == f"collabemb: error: {tmp_path / 'bad.csv'}, line 3, column 'rating': expected a finite number, found 'lots'"
    assert not (tmp_path / "art").exists()


def test_missing_column_and_missing_file_are_one_line_errors(tmp_path):
    (tmp_path / "r.csv").write_text("user,item,score\n1,1,4\n")
    line = _one_line_error(run("fit", str(tmp_path / "r.csv"), "--out", str(tmp_path / "a")))
    assert "missing rating column 'rating' (found columns: user, item, score)" in line
    line = _one_line_error(run("info", str(tmp_path / "nothing")))
    assert "no such artifact directory" in line


def test_predict_with_unparseable_id_names_the_line(trained, tmp_path):
    root, _ = trained
    (tmp_path / "pairs.csv").write_text("user,item\n1,1\nabc,2\n")
    line = _one_line_error(run("predict", str(root / "art"), str(tmp_path / "pairs.csv")))
    assert "line 3, column 'user': expected an integer ID, found 'abc'" in line


def test_debug_flag_shows_the_traceback(tmp_path):
    result = run("--debug", "info", str(tmp_path / "nothing"))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_demo_trains_on_the_bundled_sample_and_says_where_it_wrote(tmp_path):
    result = run("demo", "--out", str(tmp_path / "demo"), "--epochs", "2", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "demo: 90000 ratings" in result.stdout
    assert f"wrote artifact {tmp_path / 'demo'}" in result.stdout
    assert pd.read_json(tmp_path / "demo" / "users.json", typ="series")["kind"] == "int"
    info = run("info", str(tmp_path / "demo"))
    assert "item metadata 1600 rows; columns item, title, genres" in info.stdout
