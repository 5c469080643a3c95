"""MODEL_CARD.md: written with every artifact from what the model holds, printed by ``collabemb info``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import version

import numpy as np
import pandas as pd
import pytest
import torch

import collabemb as ce
from collabemb.artifact import MODEL_CARD_FILE, read_model_card
from collabemb.fitted import FittedModel
from collabemb.history import FitHistory
from collabemb.model_card import info_report, model_card

from conftest import planted_ratings, reseal, snapshot_of

N_USERS, N_ITEMS, PER_USER = 40, 30, 12


def iso(seconds: int) -> str:
    return datetime.fromtimestamp(int(seconds), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def info(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collabemb", "info", str(path)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training ratings (with timestamps) and 60 validation ratings of the same users and items."""
    frame = planted_ratings(n_users=N_USERS, n_items=N_ITEMS, per_user=PER_USER)
    valid = frame.sample(60, random_state=0).sort_index()
    return frame.drop(index=valid.index).reset_index(drop=True), valid


@pytest.fixture(scope="module")
def saved(frames, tmp_path_factory):
    """A rating model fitted with validation, saved: (model, artifact path)."""
    train, valid = frames
    model = ce.fit(train, valid=valid, epochs=3, n_factors=4, threads=1)
    path = tmp_path_factory.mktemp("card") / "art"
    ce.save_model(model, path)
    return model, path


def test_the_fit_records_its_data_facts_and_versions_and_they_survive_save_and_load(frames, saved):
    train, _ = frames
    model, path = saved
    params = model.history.params
    assert (params["rating_min"], params["rating_max"]) == (float(train["rating"].min()), float(train["rating"].max()))
    assert (params["time_min"], params["time_max"]) == (iso(train["timestamp"].min()), iso(train["timestamp"].max()))
    assert (params["n_users"], params["n_items"]) == (N_USERS, N_ITEMS)
    assert params["versions"]["collabemb"] == version("collabemb") and params["versions"]["torch"] == torch.__version__
    assert params["versions"]["numpy"] == np.__version__ and params["versions"]["pandas"] == pd.__version__
    assert "implicit" not in params["versions"]  # a rating fit does not use it
    assert ce.load_model(path).history.params == params


def test_the_card_is_a_file_of_the_snapshot_covered_by_its_manifest(saved):
    model, path = saved
    snap = snapshot_of(path)
    manifest = json.loads((snap / "manifest.json").read_text())
    assert MODEL_CARD_FILE in manifest["files"]
    stored = (snap / MODEL_CARD_FILE).read_text(encoding="utf-8")
    assert stored == model_card(model) == read_model_card(path)


def test_the_card_states_counts_range_time_span_validation_row_0_and_versions(frames, saved):
    train, valid = frames
    model, path = saved
    card = read_model_card(path)
    h = model.history
    assert card.startswith("# Model card: rating model (EmbeddingDotBias, 4 factors)\n")
    assert f"- Users: {N_USERS} int IDs (rows 1..{N_USERS}); first: 1, 2, 3, 4, 5, ..." in card
    assert f"- Items: {N_ITEMS} int IDs (rows 1..{N_ITEMS})" in card
    assert f"- Training ratings: {len(train)}\n" in card and f"- Validation ratings: {len(valid)}\n" in card
    assert f"- Training (user, item) pairs stored: {len(train)}" in card
    assert f"- Rating range: {train['rating'].min():g} to {train['rating'].max():g}\n" in card
    assert f"- Time span (UTC): {iso(train['timestamp'].min())} to {iso(train['timestamp'].max())}\n" in card
    best = min(h.valid_rmse)
    assert f"Validation RMSE after the last epoch (3): {h.valid_rmse[-1]:.4f}" in card
    assert f"best {best:.4f} at epoch {h.valid_rmse.index(best) + 1}" in card
    for setting, value in (("n_factors", "4"), ("engine", "fast"), ("y_range", "0.6, 5.4"), ("model", "dot")):
        assert re.search(rf"^\| {setting} +\| {re.escape(value)} \|$", card, re.M), setting
    assert "Recorded at fit time." in card
    assert f"| collabemb | {version('collabemb')} |" in card and f"| torch     | {torch.__version__} |" in card
    assert f"What it holds: {model.identity.row0_text}." in card
    assert "Any user or item ID not in training maps there" in card
    assert "y_range 0.6 to 5.4 (the training ratings ranged 1 to 5)" in card
    assert "collabemb.EmbeddingFeatures" in card and "leak the target" in card
    per_user = np.bincount(model.users.encode(train["user"]))[1:]
    assert f"Here {int(np.sum(per_user < 5))} of {N_USERS} users" in card


def test_info_prints_the_stored_card_after_the_artifact_path(saved):
    _, path = saved
    result = info(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"artifact      {path.resolve()}"
    assert result.stdout.endswith(read_model_card(path))
    assert "generated now" not in result.stdout


def test_an_implicit_model_gets_a_card_of_its_family_with_the_implicit_version(frames, tmp_path):
    train, _ = frames
    als = ce.fit_implicit(train, model="als", n_factors=4, iterations=3, threshold=4, progress=False)
    ce.save_model(als, tmp_path / "als")
    card = read_model_card(tmp_path / "als")
    kept = int((train["rating"] >= 4).sum())
    assert card.startswith("# Model card: als model (EmbeddingDotBias, 4 factors)\n")
    assert f"- Input interactions: {len(train)}\n  ({kept} kept, {len(train) - kept} below the threshold 4 dropped)" in card
    assert f"- Value range of the input rows: {train['rating'].min():g} to {train['rating'].max():g}" in card
    assert f"| implicit  | {version('implicit')} |" in card
    assert "One-solve model" in card and "Validation RMSE" not in card
    assert "Ranks items for a user" in card and "collabemb.fold_in_als" in card
    assert "Cross-fit them" in card  # EmbeddingFeatures cross-fits rating models, not this one
    bpr = ce.fit_implicit(train, model="bpr", n_factors=4, iterations=3, progress=False)
    assert "No fold-in applies to this family" in model_card(bpr) and "bpr model" in model_card(bpr)
    popularity = model_card(ce.fit_popularity(train))
    assert "# Model card: popularity model" in popularity and "| implicit" not in popularity


def test_ratings_without_timestamps_say_so(frames):
    train, _ = frames
    model = ce.fit(train.drop(columns="timestamp"), epochs=1, n_factors=2, threads=1)
    assert model.history.params["time_min"] is None
    card = model_card(model)
    assert "- Time span: no timestamps\n" in card
    assert "No validation set" in card and "- Validation ratings: none" in card


def test_a_model_that_recorded_nothing_gets_an_honest_card(saved):
    model, _ = saved
    bare = FittedModel(model.module, model.identity, FitHistory(params={"n_factors": 4}), model.seen_items)
    card = model_card(bare)
    assert "- Training ratings: not recorded" in card and "- Rating range: not recorded" in card
    assert "- Time span: not recorded" in card
    assert "Not recorded at fit time: these are the versions of the process that wrote this card" in card
    assert "No epochs recorded" in card


def test_odd_params_of_a_loaded_history_never_break_the_card_and_counts_print_whole(saved, tmp_path):
    model, _ = saved
    params = {"n_train": 25_000_095, "n_valid": "many", "rating_min": "low", "rating_max": 5.0, "epochs": "all"}
    odd = FittedModel(model.module, model.identity, FitHistory(params=params), model.seen_items)
    card = model_card(odd)
    assert "- Training ratings: 25000095\n" in card and "- Rating range: not recorded" in card
    assert "Validation ratings" not in card  # not a count: not stated
    ce.save_model(odd, tmp_path / "odd")
    assert read_model_card(tmp_path / "odd") == card


def test_users_folded_in_after_the_fit_are_counted_apart(saved):
    fresh = ce.load_model(saved[1])
    ce.fold_in_users(fresh, pd.DataFrame({"user": [9001, 9001], "item": [1, 2], "rating": [5.0, 1.0]}), add=True)
    assert f"- Users: {N_USERS + 1} int IDs (rows 1..{N_USERS + 1}; {N_USERS} at fit time, 1 added since)" in model_card(fresh)


def test_an_artifact_without_a_card_loads_and_info_generates_one(saved, tmp_path):
    model, _ = saved
    path = tmp_path / "old"
    ce.save_model(model, path)
    (snapshot_of(path) / MODEL_CARD_FILE).unlink()
    reseal(path)
    assert read_model_card(path) is None
    loaded = ce.load_model(path)
    assert loaded.predict([1], [2]).equals(model.predict([1], [2]))
    result = info(path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "has no MODEL_CARD.md" in lines[0] and "generated now" in lines[0]
    assert lines[1] == f"artifact      {path.resolve()}"
    assert result.stdout.endswith(model_card(loaded))


def test_info_shows_control_characters_of_a_card_escaped(saved):
    model, path = saved
    report = info_report(model, {"model": "EmbeddingDotBias", "schema_version": 2}, path, "# card\x1b[2J\n")
    assert report.endswith("# card\\x1b[2J") and "\x1b" not in report
    assert "created not recorded" in report
