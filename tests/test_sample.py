"""Tests for collabemb.sample: the synthetic MovieLens-style generator and the committed sample."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from collabemb.sample import (
    GENRES,
    MIN_RATINGS_PER_USER,
    N_FREE_FACTORS,
    WINDOW_END,
    WINDOW_START,
    SampleData,
    generate_sample,
    main,
    write_sample,
)

REPO_ROOT = Path(__file__).parent.parent
SAMPLE_DIR = REPO_ROOT / "datasets" / "sample"
SMALL = {"n_users": 40, "n_items": 120, "n_ratings": 2_000}


@pytest.fixture(scope="module")
def default() -> SampleData:
    return generate_sample()


def _planted_scores(data: SampleData) -> np.ndarray:
    """Noise-free planted score of every rating row, float64."""
    u = data.ratings["user"].to_numpy() - 1
    i = data.ratings["item"].to_numpy() - 1
    dot = np.einsum("ij,ij->i", data.user_factors[u], data.item_factors[i], dtype=np.float64)
    return data.global_mean + data.user_bias[u] + data.item_bias[i] + dot


def _assert_same_data(a: SampleData, b: SampleData) -> None:
    pd.testing.assert_frame_equal(a.ratings, b.ratings)
    pd.testing.assert_frame_equal(a.items, b.items)
    for name in ("user_factors", "item_factors", "user_bias", "item_bias"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.global_mean == b.global_mean


# --- determinism -------------------------------------------------------------------------


def test_same_seed_gives_identical_data():
    _assert_same_data(generate_sample(**SMALL, seed=7), generate_sample(**SMALL, seed=7))


def test_different_seeds_give_different_data():
    a, b = generate_sample(**SMALL, seed=1), generate_sample(**SMALL, seed=2)
    assert not a.ratings.equals(b.ratings)
    assert not a.items["title"].equals(b.items["title"])
    assert not np.array_equal(a.user_factors, b.user_factors)


def test_catalogue_depends_only_on_n_items_and_seed():
    a = generate_sample(n_users=30, n_items=200, n_ratings=900, seed=4)
    b = generate_sample(n_users=80, n_items=200, n_ratings=5_000, seed=4)
    pd.testing.assert_frame_equal(a.items, b.items)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    np.testing.assert_array_equal(a.item_bias, b.item_bias)


# --- shapes, dtypes, ranges --------------------------------------------------------------


def test_ratings_have_int64_columns_in_range(default):
    r = default.ratings
    assert list(r.columns) == ["user", "item", "rating", "timestamp"]
    assert all(r[c].dtype == np.int64 for c in r.columns)
    assert isinstance(r.index, pd.RangeIndex)
    assert len(r) == 90_000
    assert set(r["user"]) == set(range(1, 901))  # every user id occurs
    assert r["item"].between(1, 1600).all()
    assert sorted(r["rating"].unique()) == [1, 2, 3, 4, 5]
    assert r["timestamp"].between(WINDOW_START, WINDOW_END - 1).all()


def test_ratings_are_sorted_by_user_then_timestamp_then_item(default):
    r = default.ratings
    expected = r.sort_values(["user", "timestamp", "item"], kind="stable", ignore_index=True)
    pd.testing.assert_frame_equal(r, expected)


def test_items_have_unique_titles_and_movielens_genres(default):
    items = default.items
    assert list(items.columns) == ["item", "title", "genres"]
    assert items["item"].dtype == np.int64
    assert items["item"].tolist() == list(range(1, 1601))
    assert pd.api.types.is_string_dtype(items["title"])
    assert pd.api.types.is_string_dtype(items["genres"])
    assert items["title"].is_unique
    title = re.compile(r"\S.* \((19[3-9]\d|20[01]\d)\)")  # "The Silent Harbor (1994)"
    assert all(title.fullmatch(t) for t in items["title"])
    for genres in items["genres"]:
        names = genres.split("|")
        assert 1 <= len(names) <= 3
        assert set(names) <= set(GENRES)
        assert names == sorted(set(names), key=GENRES.index)  # no repeats, GENRES order
    counts = pd.Series(items["genres"].str.split("|").explode()).value_counts()
    assert counts.index[0] == "Drama"  # popular genres are more frequent
    assert counts["Drama"] > 5 * counts.get("Film-Noir", 0)


def test_planted_arrays_have_documented_shapes_and_dtypes(default):
    k = len(GENRES) + N_FREE_FACTORS
    assert default.user_factors.shape == (900, k)
    assert default.item_factors.shape == (1600, k)
    assert default.user_bias.shape == (900,)
    assert default.item_bias.shape == (1600,)
    for name in ("user_factors", "item_factors", "user_bias", "item_bias"):
        assert getattr(default, name).dtype == np.float32


def test_item_genre_factors_encode_the_item_genres(default):
    indicator = np.array([[g in genres.split("|") for g in GENRES] for genres in default.items["genres"]])
    expected = indicator / np.sqrt(indicator.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(default.item_factors[:, : len(GENRES)], expected, rtol=1e-6)


# --- who rated what ----------------------------------------------------------------------


def test_no_user_item_pair_occurs_twice(default):
    assert not default.ratings.duplicated(["user", "item"]).any()


def test_every_user_has_at_least_20_ratings_and_at_most_half_the_items(default):
    per_user = default.ratings.groupby("user").size()
    assert per_user.min() >= MIN_RATINGS_PER_USER == 20
    assert per_user.max() <= 1600 // 2


@pytest.mark.parametrize(
    ("n_users", "n_items", "n_ratings"), [(1, 20, 20), (5, 20, 100), (30, 60, 900), (50, 500, 1_234), (200, 1_000, 37_777)]
)
def test_n_ratings_is_hit_exactly(n_users, n_items, n_ratings):
    data = generate_sample(n_users, n_items, n_ratings, seed=3)
    assert len(data.ratings) == n_ratings
    assert not data.ratings.duplicated(["user", "item"]).any()
    assert data.ratings.groupby("user").size().min() >= 20


def test_item_popularity_is_skewed(default):
    per_item = default.ratings["item"].value_counts().reindex(range(1, 1601), fill_value=0)
    top_tenth = per_item.sort_values(ascending=False).iloc[:160].sum() / per_item.sum()
    assert top_tenth > 0.3  # uniform popularity would give 0.1


def test_user_activity_is_skewed(default):
    per_user = default.ratings.groupby("user").size()
    assert per_user.median() < 0.75 * per_user.mean()
    assert per_user.max() > 5 * per_user.median()


def test_users_rate_more_items_of_genres_they_like(default):
    """Exposure follows taste: planted genre affinity is higher on rated pairs than at random."""
    n_genres = len(GENRES)
    u = default.ratings["user"].to_numpy() - 1
    i = default.ratings["item"].to_numpy() - 1
    genre_affinity = np.einsum("ij,ij->i", default.user_factors[u, :n_genres], default.item_factors[i, :n_genres])
    shuffled = np.random.default_rng(0).permutation(i)
    random_affinity = np.einsum("ij,ij->i", default.user_factors[u, :n_genres], default.item_factors[shuffled, :n_genres])
    assert genre_affinity.mean() > random_affinity.mean() + 0.05


def test_each_user_is_active_within_one_period_shorter_than_the_window(default):
    span = default.ratings.groupby("user")["timestamp"].agg(lambda t: t.max() - t.min())
    assert span.max() < WINDOW_END - WINDOW_START
    assert span.median() < 180 * 86_400  # most users are active for a few months at most


# --- ratings -----------------------------------------------------------------------------


def test_rating_distribution_looks_like_movielens(default):
    share = default.ratings["rating"].value_counts(normalize=True)
    assert share.idxmax() == 4
    assert share.idxmin() == 1
    assert 3.4 < default.ratings["rating"].mean() < 3.7


def test_ratings_follow_the_planted_scores(default):
    rating = default.ratings["rating"].to_numpy().astype(np.float64)
    score = _planted_scores(default)
    assert np.corrcoef(rating, score)[0, 1] > 0.7
    # the interaction term alone explains rating beyond the biases
    u = default.ratings["user"].to_numpy() - 1
    i = default.ratings["item"].to_numpy() - 1
    residual = rating - default.global_mean - default.user_bias[u] - default.item_bias[i]
    dot = np.einsum("ij,ij->i", default.user_factors[u], default.item_factors[i])
    assert np.corrcoef(residual, dot)[0, 1] > 0.5


def test_rounding_error_of_planted_scores_is_the_noise_level(default):
    rating = default.ratings["rating"].to_numpy()
    rmse = np.sqrt(np.mean((rating - np.clip(_planted_scores(default), 1, 5)) ** 2))
    assert 0.55 < rmse < 0.8  # noise sd about 0.67 plus rounding; far below the rating sd 1.1


# --- invalid arguments -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_users": 0}, "n_users must be a positive integer"),
        ({"n_items": 10.0}, "n_items must be a positive integer"),
        ({"n_ratings": True}, "n_ratings must be a positive integer"),
        ({"n_items": 19, "n_ratings": 18_000}, "n_items must be at least 20"),
        ({"n_users": 10, "n_items": 100, "n_ratings": 199}, r"\[200, 500\]"),
        ({"n_users": 10, "n_items": 100, "n_ratings": 501}, r"\[200, 500\]"),
    ],
)
def test_invalid_sizes_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_sample(**kwargs)


# --- files -------------------------------------------------------------------------------


def _read_sample_dir(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_csv(directory / "ratings.csv"), pd.read_csv(directory / "items.csv")


def test_committed_sample_equals_generator_output_with_defaults(default):
    ratings, items = _read_sample_dir(SAMPLE_DIR)
    pd.testing.assert_frame_equal(ratings, default.ratings)
    pd.testing.assert_frame_equal(items, default.items)


def test_committed_ratings_file_is_under_3_mb():
    assert (SAMPLE_DIR / "ratings.csv").stat().st_size < 3_000_000


def test_write_sample_writes_both_files_and_leaves_no_temp_files(tmp_path):
    out = tmp_path / "new" / "dir"
    assert write_sample(out, **SMALL, seed=9) == out
    assert sorted(os.listdir(out)) == ["items.csv", "ratings.csv"]
    ratings, items = _read_sample_dir(out)
    expected = generate_sample(**SMALL, seed=9)
    pd.testing.assert_frame_equal(ratings, expected.ratings)
    pd.testing.assert_frame_equal(items, expected.items)
    assert (out / "ratings.csv").read_bytes().startswith(b"user,item,rating,timestamp\n")
    assert b"\r" not in (out / "items.csv").read_bytes()


def test_write_sample_replaces_existing_files(tmp_path):
    write_sample(tmp_path, **SMALL, seed=1)
    write_sample(tmp_path, **SMALL, seed=2)
    assert sorted(os.listdir(tmp_path)) == ["items.csv", "ratings.csv"]
    ratings, _ = _read_sample_dir(tmp_path)
    pd.testing.assert_frame_equal(ratings, generate_sample(**SMALL, seed=2).ratings)


def test_write_sample_removes_its_temp_file_when_writing_fails(tmp_path, monkeypatch):
    (tmp_path / "ratings.csv").write_text("old\n")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", fail)
    with pytest.raises(OSError, match="disk full"):
        write_sample(tmp_path, **SMALL)
    assert os.listdir(tmp_path) == ["ratings.csv"]
    assert (tmp_path / "ratings.csv").read_text() == "old\n"  # the old file is untouched


# --- command line ------------------------------------------------------------------------


def test_cli_writes_a_sample_into_the_given_directory(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    out = tmp_path / "cli"
    args = ["--users", "30", "--items", "60", "--ratings", "900", "--seed", "5"]
    proc = subprocess.run(
        [sys.executable, "-m", "collabemb.sample", str(out), *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "ratings.csv" in proc.stdout
    ratings, items = _read_sample_dir(out)
    expected = generate_sample(30, 60, 900, seed=5)
    pd.testing.assert_frame_equal(ratings, expected.ratings)
    pd.testing.assert_frame_equal(items, expected.items)


def test_cli_rejects_out_of_range_sizes_with_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "x"), "--users", "10", "--items", "100", "--ratings", "50"])
    assert exit_info.value.code == 2
    assert "n_ratings must lie in" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
