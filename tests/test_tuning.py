"""Cross-validation, the optuna search over FitSettings, settings files and their command lines."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import collabemb
from collabemb import cli, cli_options
from collabemb.settings import FitSettings
from collabemb.settings_file import read_settings, write_settings
from collabemb.splits import split_folds
from collabemb.tuning import DEFAULT_SPACE, SVDPP_SPACE, cross_validate, search_space, tune

from conftest import planted_ratings

#: Tiny fits: a few milliseconds each once the compiled kernel is loaded.
SMALL = {"n_factors": 4, "epochs": 3, "threads": 1}
#: A space where a small lr is clearly bad, so the median pruner has trials to stop.
PRUNABLE = {"lr": ("log", 1e-4, 0.3), "epochs": ("int", 4, 12)}


@pytest.fixture(scope="module")
def ratings() -> collabemb.Ratings:
    return collabemb.read_ratings(planted_ratings(60, 40, 20))


@pytest.fixture(scope="module")
def tuned(ratings):
    """The same search run twice with one seed."""
    return [tune(ratings, folds=3, trials=12, seed=3, threads=1, space=PRUNABLE, n_factors=4) for _ in range(2)]


def pairs_of(ratings: collabemb.Ratings) -> pd.Series:
    return ratings.frame["user"].astype(str) + "/" + ratings.frame["item"].astype(str)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collabemb", *args], capture_output=True, text=True, timeout=300)


def one_line_error(code: int, stderr: str) -> str:
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("collabemb: error: ")
    return lines[0]


# --- folds and cross_validate ------------------------------------------------------------------


def test_random_folds_put_every_rating_in_exactly_one_test_part(ratings):
    folds = list(split_folds(ratings, 4, seed=0))
    everything = set(pairs_of(ratings))
    tests = [set(pairs_of(test)) for _, test in folds]
    assert sum(len(t) for t in tests) == len(ratings) and set().union(*tests) == everything
    assert sorted(len(t) for t in tests) == [300, 300, 300, 300]
    for (train, test), test_pairs in zip(folds, tests):
        assert set(pairs_of(train)) == everything - test_pairs and len(train) + len(test) == len(ratings)
    again = [set(pairs_of(test)) for _, test in split_folds(ratings, 4, seed=0)]
    other = [set(pairs_of(test)) for _, test in split_folds(ratings, 4, seed=1)]
    assert again == tests and other != tests
    with pytest.raises(ValueError, match=r"folds must be an integer from 2 to the number of ratings \(1200\), got 1"):
        split_folds(ratings, 1)


def test_cross_validate_gives_a_row_per_fold_then_their_mean_and_std(ratings):
    table = cross_validate(ratings, 5, seed=0, **SMALL)
    assert list(table.columns) == ["fold", "rmse", "mae", "fit_seconds", "n_train", "n_test"]
    assert table["fold"].tolist() == [1, 2, 3, 4, 5, "mean", "std"]
    folds = table.iloc[:5, 1:].astype(float)
    np.testing.assert_allclose(table.iloc[5, 1:].astype(float), folds.mean(), rtol=1e-12)
    np.testing.assert_allclose(table.iloc[6, 1:].astype(float), folds.std(ddof=0), rtol=1e-12, atol=1e-15)
    assert folds["n_test"].sum() == len(ratings) and (folds["n_train"] + folds["n_test"] == len(ratings)).all()
    assert ((folds["rmse"] > 0.3) & (folds["rmse"] < 1.5) & (folds["mae"] < folds["rmse"])).all()
    same = cross_validate(ratings, 5, seed=0, **SMALL)
    pd.testing.assert_frame_equal(same.drop(columns="fit_seconds"), table.drop(columns="fit_seconds"))
    other = cross_validate(ratings, 5, seed=1, **SMALL)
    assert other["rmse"].iloc[5] != table["rmse"].iloc[5]


def test_cross_validate_takes_predefined_train_test_files_like_movielens_u1_to_u5(ratings, tmp_path):
    files = []
    for number, (train, test) in enumerate(split_folds(ratings, 3, seed=0), start=1):
        train.frame.to_csv(tmp_path / f"u{number}.base", index=False)
        test.frame.to_csv(tmp_path / f"u{number}.test", index=False)
        files.append(collabemb.read_split(tmp_path / f"u{number}.base", tmp_path / f"u{number}.test"))
    given = cross_validate(None, files, seed=0, **SMALL)
    drawn = cross_validate(ratings, 3, seed=0, **SMALL)
    assert given["fold"].tolist() == [1, 2, 3, "mean", "std"]
    np.testing.assert_allclose(given["rmse"].astype(float), drawn["rmse"].astype(float), rtol=1e-6)
    with pytest.raises(ValueError, match="not both"):
        cross_validate(ratings, files, **SMALL)


def test_cross_validate_refuses_an_unknown_setting_listing_the_fitsettings_fields(ratings):
    with pytest.raises(ValueError, match=r"unknown setting\(s\): n_factor; the settings are the FitSettings fields: model, n_factors, "):
        cross_validate(ratings, 3, n_factor=8)
    with pytest.raises(ValueError, match="n_factors must be >= 1"):
        cross_validate(ratings, 3, n_factors=0)


# --- tune -------------------------------------------------------------------------------------


def test_tune_with_one_seed_gives_the_same_trials_and_best_settings(tuned):
    first, second = tuned
    pd.testing.assert_frame_equal(first.trials.drop(columns="seconds"), second.trials.drop(columns="seconds"))
    assert first.best_settings == second.best_settings and first.best_rmse == second.best_rmse
    assert list(first.trials.columns) == [
        "number",
        "state",
        "rmse",
        "folds",
        "lr",
        "weight_decay",
        "frequency_exponent",
        "epochs",
        "seconds",
    ]
    assert first.trials["number"].tolist() == list(range(12)) and (first.trials["seconds"] > 0).all()


def test_tune_prunes_bad_trials_after_a_fold_and_keeps_the_best_complete_one(tuned):
    result = tuned[0]
    trials = result.trials
    pruned, complete = trials[trials["state"] == "pruned"], trials[trials["state"] == "complete"]
    assert len(pruned) >= 1 and len(pruned) + len(complete) == 12
    assert (pruned["folds"] < 3).all() and (complete["folds"] == 3).all()
    assert result.best_rmse == complete["rmse"].min() and result.folds == 3
    best = complete.loc[complete["rmse"].idxmin()]
    assert result.best_trial == best["number"]
    searched = ("lr", "weight_decay", "frequency_exponent", "epochs")
    assert result.best_settings == {"n_factors": 4, **{k: best[k] for k in searched}}
    assert pruned["lr"].median() < complete["lr"].median()  # what the pruner stopped were the slow learners


def test_a_trial_whose_fit_diverges_is_marked_fail_and_the_search_goes_on(ratings, monkeypatch):
    from collabemb import tuning

    real_fit = tuning.fit

    def diverging(train, *, settings):
        if settings.lr > 0.1:
            raise FloatingPointError("training diverged in epoch 1 (non-finite loss); lower lr")
        return real_fit(train, settings=settings)

    monkeypatch.setattr(tuning, "fit", diverging)
    result = tune(ratings, folds=2, trials=6, seed=0, threads=1, space={"lr": ("log", 0.01, 1.0)}, n_factors=4, epochs=3)
    failed = result.trials[result.trials["state"] == "fail"]
    assert len(failed) >= 1 and (failed["lr"] > 0.1).all() and failed["rmse"].isna().all()
    assert result.best_settings["lr"] <= 0.1 and len(result.trials) == 6


def test_the_search_space_defaults_overrides_and_svdpp_dimensions():
    assert search_space(None, {}) == DEFAULT_SPACE
    assert search_space(None, {"epochs": 10, "lr": 0.1}) == {k: v for k, v in DEFAULT_SPACE.items() if k not in ("epochs", "lr")}
    assert search_space(None, {"model": "svdpp"}) == {**DEFAULT_SPACE, **SVDPP_SPACE}
    assert set(search_space({"model": ("choice", ["dot", "svdpp"])}, {})) == {*DEFAULT_SPACE, *SVDPP_SPACE, "model"}
    custom = search_space({"lr": ("log", 0.01, 0.3), "epochs": None, "unknown_frac": ("float", 0.0, 0.1)}, {})
    kept = {k: DEFAULT_SPACE[k] for k in ("n_factors", "weight_decay", "frequency_exponent")}
    assert custom == {**kept, "lr": ("log", 0.01, 0.3), "unknown_frac": ("float", 0.0, 0.1)}


@pytest.mark.parametrize(
    ("space", "fixed", "message"),
    [
        ({"lr": ("log", 0.0, 0.3)}, {}, r"space\['lr'\]: a log dimension needs lo > 0"),
        ({"lr": ("uniform", 0.1, 0.3)}, {}, r"space\['lr'\]: expected \('float' \| 'log'"),
        ({"epochs": ("int", 10, 5)}, {}, r"space\['epochs'\]: lo and hi must be integers with lo < hi"),
        ({"n_factors": ("int", 0, 8)}, {}, r"space\['n_factors'\]: key 'n_factors': must be >= 1, got 0"),
        ({"n_factors": ("choice", [])}, {}, r"space\['n_factors'\]: the choices must be a non-empty list"),
        ({"seed": ("int", 0, 9)}, {}, r"space\['seed'\]: not a setting tune searches"),
        ({"lr": ("log", 0.01, 0.3)}, {"lr": 0.1}, r"lr is both fixed \(lr=0.1\) and in space"),
    ],
)
def test_a_bad_search_space_is_refused_naming_the_dimension(space, fixed, message):
    with pytest.raises(ValueError, match=message):
        search_space(space, fixed)


def test_tune_without_optuna_says_how_to_install_it(ratings, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    with pytest.raises(ImportError, match=r"pip install collabemb\[tune\]"):
        tune(ratings, trials=1)


# --- settings files ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_settings_files_round_trip_every_kind_of_value(tmp_path, suffix):
    settings = {"model": "dot", "n_factors": 16, "lr": 0.123456789012345, "y_range": (0.5, 5.5), "progress": False, "lr_schedule": "cosine"}
    write_settings(tmp_path / f"s{suffix}", settings, comment="a comment\non two lines")
    back = read_settings(tmp_path / f"s{suffix}")
    assert FitSettings(**back) == FitSettings(**settings) and set(back) == set(settings)
    assert back["lr"] == 0.123456789012345  # floats are written exactly
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically: no temporary file left


def test_toml_leaves_out_none_only_where_none_is_the_default(tmp_path):
    write_settings(tmp_path / "s.toml", {"epochs": 5, "lr": None})
    assert read_settings(tmp_path / "s.toml") == {"epochs": 5}
    with pytest.raises(ValueError, match=r"TOML has no null for valid_sample=None .*write \.json"):
        write_settings(tmp_path / "t.toml", {"valid_sample": None})
    write_settings(tmp_path / "t.json", {"valid_sample": None})
    assert read_settings(tmp_path / "t.json") == {"valid_sample": None}


def test_the_best_settings_saved_by_tune_train_the_same_model_with_fit_config(tuned, tmp_path):
    result = tuned[0]
    frame = planted_ratings(60, 40, 20)
    frame.to_csv(tmp_path / "ratings.csv", index=False)
    saved = result.save(tmp_path / "best.toml")
    assert saved.read_text().startswith("# collabemb tune: mean validation RMSE")
    assert read_settings(saved) == result.best_settings
    done = run(
        "fit", str(tmp_path / "ratings.csv"), "--config", str(saved), "--out", str(tmp_path / "art"), "--threads", "1", "--no-progress"
    )
    assert done.returncode == 0, done.stderr
    assert f"settings ({saved}, then the options given): n_factors=4, epochs={result.best_settings['epochs']}" in done.stdout
    params = collabemb.load_model(tmp_path / "art").history.params
    assert {name: params[name] for name in result.best_settings} == result.best_settings
    direct = collabemb.fit(frame, threads=1, progress=False, **result.best_settings)
    assert np.array_equal(direct.weight(frame["item"].unique()), collabemb.load_model(tmp_path / "art").weight(frame["item"].unique()))


def test_options_given_on_the_command_line_override_the_config_file(tmp_path):
    write_settings(tmp_path / "s.json", {"epochs": 3, "n_factors": 8, "progress": True})
    args = cli._parser().parse_args(["fit", "r.csv", "--out", "a", "--config", str(tmp_path / "s.json"), "--epochs", "2", "--no-progress"])
    assert cli_options.settings_from_options(args) == FitSettings(epochs=2, n_factors=8, progress=False)
    args = cli._parser().parse_args(["demo", "--config", str(tmp_path / "s.json")])  # the file beats demo's default of 10 epochs
    assert cli_options.settings_from_options(args).epochs == 3


def test_a_bad_config_file_is_one_error_line_naming_the_file_and_key(tmp_path, capsys):
    (tmp_path / "ratings.csv").write_text("user,item,rating\n1,1,4\n2,1,3\n")
    (tmp_path / "typo.toml").write_text("n_factors = 8\nepoch = 3\n")
    result = run("fit", str(tmp_path / "ratings.csv"), "--config", str(tmp_path / "typo.toml"), "--out", str(tmp_path / "art"))
    line = one_line_error(result.returncode, result.stderr)
    assert line.startswith(f"collabemb: error: {tmp_path / 'typo.toml'}: unknown key 'epoch'; the keys are FitSettings fields: model, ")
    assert not (tmp_path / "art").exists()
    (tmp_path / "type.json").write_text('{"n_factors": "64"}')
    code = cli.main(["fit", str(tmp_path / "ratings.csv"), "--config", str(tmp_path / "type.json"), "--out", str(tmp_path / "art")])
    line = one_line_error(code, capsys.readouterr().err)
    assert line == f"collabemb: error: {tmp_path / 'type.json'}: key 'n_factors': must be an integer, got '64'"
    (tmp_path / "broken.toml").write_text("lr = \n")
    code = cli.main(["cross-validate", str(tmp_path / "ratings.csv"), "--config", str(tmp_path / "broken.toml")])
    assert one_line_error(code, capsys.readouterr().err).startswith(f"collabemb: error: {tmp_path / 'broken.toml'}: not valid TOML")


# --- the command lines ------------------------------------------------------------------------


def test_cross_validate_command_prints_the_fold_table(tmp_path, capsys):
    planted_ratings(60, 40, 20).to_csv(tmp_path / "ratings.csv", index=False)
    code = cli.main(
        ["cross-validate", str(tmp_path / "ratings.csv"), "--folds", "3", "--n-factors", "4", "--epochs", "3", "--threads", "1"]
    )
    out = capsys.readouterr().out
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[1] == "3-fold cross-validation, seed 0: n_factors=4, epochs=3, threads=1"
    assert lines[2].split() == ["fold", "rmse", "mae", "fit_seconds", "n_train", "n_test"]
    assert [line.split()[0] for line in lines[3:]] == ["1", "2", "3", "mean", "std"]
    assert lines[3].split()[-2:] == ["800", "400"] and lines[7].split()[-2:] == ["0", "0"]
    table = cross_validate(tmp_path / "ratings.csv", 3, seed=0, **SMALL)
    assert float(lines[6].split()[1]) == pytest.approx(table["rmse"].iloc[3], abs=5e-5)


def test_tune_command_prints_the_trials_and_writes_the_best_settings(tmp_path, capsys):
    planted_ratings(60, 40, 20).to_csv(tmp_path / "ratings.csv", index=False)
    out_file = tmp_path / "best.json"
    argv = ["tune", str(tmp_path / "ratings.csv"), "--trials", "4", "--folds", "2", "--seed", "5", "--threads", "1", "--n-factors", "4"]
    code = cli.main([*argv, "--epochs", "3", "--out", str(out_file)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "tuning: 4 trials, each 2-fold cross-validation, seed 5; fixed settings: n_factors=4, epochs=3" in out
    assert out.splitlines()[2].split() == ["number", "state", "rmse", "folds", "lr", "weight_decay", "frequency_exponent", "seconds"]
    best = json.loads(out_file.read_text())
    assert (
        set(best) == {"n_factors", "epochs", "lr", "weight_decay", "frequency_exponent"} and best["n_factors"] == 4 and best["epochs"] == 3
    )
    assert f"wrote {out_file}; train with: collabemb fit" in out
    code = cli.main([*argv, "--out", str(tmp_path / "best.yaml")])
    assert one_line_error(code, capsys.readouterr().err).endswith("best.yaml: a settings file is .toml or .json, got '.yaml'")
