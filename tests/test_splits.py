"""collabemb.splits: seeded random splits, per-user leave-last-n, and predefined train/test files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from collabemb.data import Ratings, RatingsError, read_ratings
from collabemb.splits import read_split, split_leave_last, split_random


def ratings_of(rows: list[tuple], with_timestamp: bool = True) -> Ratings:
    cols = ["user", "item", "rating", "ts"] if with_timestamp else ["user", "item", "rating"]
    df = pd.DataFrame(rows, columns=cols)
    return read_ratings(df, timestamp_col="ts" if with_timestamp else None)


def many(n: int = 200) -> Ratings:
    """n distinct (user, item) ratings; the item number doubles as a row label."""
    return ratings_of([(i % 7, i, float(i % 5 + 1), 1000 + i) for i in range(n)])


def triples(r: Ratings) -> list[tuple]:
    return list(zip(r.frame["user"].tolist(), r.frame["item"].tolist(), r.frame["rating"].tolist(), strict=True))


# --- split_random ---------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "frac", "n_test"), [(200, 0.2, 40), (200, 0.5, 100), (10, 0.25, 2), (7, 0.1, 1)])
def test_split_random_test_size_is_the_rounded_fraction(n, frac, n_test):
    train, test = split_random(many(n), frac, seed=3)
    assert len(test) == n_test
    assert len(train) == n - n_test


def test_split_random_parts_are_disjoint_and_their_union_is_the_input():
    r = many()
    train, test = split_random(r, 0.3, seed=1)
    train_items, test_items = set(train.frame["item"]), set(test.frame["item"])
    assert not train_items & test_items
    assert train_items | test_items == set(range(200))
    assert sorted(triples(train) + triples(test)) == sorted(triples(r))


def test_split_random_keeps_input_order_and_all_columns_within_each_part():
    train, test = split_random(many(), 0.2, seed=2)
    for part in (train, test):
        items = part.frame["item"].tolist()
        assert items == sorted(items)
        assert list(part.frame.columns) == ["user", "item", "rating", "timestamp"]
        assert part.frame["timestamp"].tolist() == [1000 + i for i in items]
        assert isinstance(part.frame.index, pd.RangeIndex)


def test_split_random_same_seed_same_split():
    a_train, a_test = split_random(many(), 0.2, seed=42)
    b_train, b_test = split_random(many(), 0.2, seed=42)
    assert a_test.frame["item"].tolist() == b_test.frame["item"].tolist()
    assert a_train.frame["item"].tolist() == b_train.frame["item"].tolist()


def test_split_random_different_seed_different_split():
    _, test_0 = split_random(many(), 0.2, seed=0)
    _, test_1 = split_random(many(), 0.2, seed=1)
    assert set(test_0.frame["item"]) != set(test_1.frame["item"])


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1, 1.5])
def test_split_random_rejects_fractions_outside_zero_one(frac):
    with pytest.raises(ValueError, match=rf"test_frac must be in \(0, 1\), got {frac}"):
        split_random(many(10), frac)


# --- split_leave_last -----------------------------------------------------------------------


def test_leave_last_puts_each_users_latest_rating_in_test():
    r = ratings_of([("u1", "a", 1.0, 30), ("u1", "b", 2.0, 10), ("u1", "c", 3.0, 20), ("u2", "a", 4.0, 5), ("u2", "d", 5.0, 50)])
    train, test = split_leave_last(r)
    assert triples(test) == [("u1", "a", 1.0), ("u2", "d", 5.0)]
    assert triples(train) == [("u1", "b", 2.0), ("u1", "c", 3.0), ("u2", "a", 4.0)]
    assert test.frame["timestamp"].tolist() == [30, 50]


def test_leave_last_n_takes_the_n_latest_per_user():
    rows = [(1, item, 1.0, ts) for item, ts in [(10, 4), (11, 1), (12, 3), (13, 2), (14, 5)]]
    rows += [(2, item, 1.0, ts) for item, ts in [(20, 9), (21, 8), (22, 7)]]
    train, test = split_leave_last(ratings_of(rows), n=2)
    assert test.frame["item"].tolist() == [10, 14, 20, 21]
    assert train.frame["item"].tolist() == [11, 12, 13, 22]


def test_leave_last_keeps_users_with_n_or_fewer_ratings_entirely_in_train():
    rows = [
        (1, 1, 1.0, 1),
        (1, 2, 1.0, 2),
        (1, 3, 1.0, 3),  # 3 ratings: 1 goes to test with n=2
        (2, 1, 1.0, 1),
        (2, 2, 1.0, 2),  # exactly n: stays in train
        (3, 1, 1.0, 1),  # fewer than n: stays in train
    ]
    train, test = split_leave_last(ratings_of(rows), n=2)
    assert list(zip(test.frame["user"], test.frame["item"], strict=True)) == [(1, 2), (1, 3)]
    assert sorted(set(train.frame["user"])) == [1, 2, 3]
    assert len(train) == 4
    assert set(test.frame["user"]) <= set(train.frame["user"])


def test_leave_last_breaks_timestamp_ties_by_input_order_later_row_is_later():
    rows = [(1, "first", 1.0, 100), (1, "second", 1.0, 100), (1, "third", 1.0, 100), (1, "old", 1.0, 1)]
    train, test = split_leave_last(ratings_of(rows))
    assert test.frame["item"].tolist() == ["third"]
    _, test2 = split_leave_last(ratings_of(rows), n=2)
    assert test2.frame["item"].tolist() == ["second", "third"]


def test_leave_last_works_with_string_user_ids_and_keeps_them_strings():
    rows = [("007", "a", 1.0, 1), ("7", "a", 1.0, 1), ("007", "b", 1.0, 2), ("7", "b", 1.0, 0)]
    train, test = split_leave_last(ratings_of(rows))
    assert list(zip(test.frame["user"], test.frame["item"], strict=True)) == [("7", "a"), ("007", "b")]
    assert test.frame["user"].dtype == object
    assert all(type(u) is str for u in train.frame["user"])


def test_leave_last_parts_are_disjoint_and_cover_the_input():
    r = many()
    train, test = split_leave_last(r, n=3)
    assert len(test) == 7 * 3
    assert sorted(triples(train) + triples(test)) == sorted(triples(r))


def test_leave_last_needs_a_timestamp_column():
    with pytest.raises(ValueError, match=r"^DataFrame: leave-last-n needs a timestamp column$"):
        split_leave_last(ratings_of([(1, 1, 1.0)], with_timestamp=False))


def test_leave_last_rejects_n_below_one():
    with pytest.raises(ValueError, match=r"n must be >= 1, got 0"):
        split_leave_last(many(10), n=0)


# --- read_split --------------------------------------------------------------------------------


def test_read_split_reads_predefined_train_and_test_files(tmp_path: Path):
    base = tmp_path / "u1.base"
    test = tmp_path / "u1.test"
    base.write_text("1\t10\t5\t100\n2\t20\t3\t200\n")
    test.write_text("1\t20\t4\t300\n")
    train_r, test_r = read_split(base, test, layout="ml-100k")
    assert train_r.frame.to_dict("list") == {"user": [1, 2], "item": [10, 20], "rating": [5.0, 3.0], "timestamp": [100, 200]}
    assert test_r.frame.to_dict("list") == {"user": [1], "item": [20], "rating": [4.0], "timestamp": [300]}
    assert (train_r.source, test_r.source) == (str(base), str(test))


def test_read_split_passes_options_to_both_files(tmp_path: Path):
    train_path = tmp_path / "train.csv"
    test_path = tmp_path / "test.csv"
    train_path.write_text("u,i,r\n1,007,5\n")
    test_path.write_text("u,i,r\n1,7,5\n")
    train_r, test_r = read_split(train_path, test_path, user_col="u", item_col="i", rating_col="r", id_type="str")
    assert train_r.frame["item"].tolist() == ["007"]
    assert test_r.frame["item"].tolist() == ["7"]
    assert train_r.frame["user"].tolist() == ["1"]


def test_read_split_names_the_bad_file(tmp_path: Path):
    good = tmp_path / "train.csv"
    bad = tmp_path / "test.csv"
    good.write_text("user,item,rating\n1,1,5\n")
    bad.write_text("user,item,rating\n1,1,lots\n")
    with pytest.raises(RatingsError) as exc:
        read_split(good, bad)
    assert str(exc.value) == f"{bad}, line 2, column 'rating': expected a finite number, found 'lots'"
    assert np.isfinite(read_split(good, good)[0].frame["rating"]).all()
