"""Ranking metrics against hand-computed cases, top-k ranking, evaluate, and the per-user random split."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import collabemb as ce
from collabemb.implicit_mf import fit_popularity
from collabemb.metrics import (
    ExcludedTestPairsWarning,
    average_precision_at_k,
    catalogue_coverage,
    evaluate,
    hit_rate_at_k,
    hits,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    rating_errors,
    recall_at_k,
    top_k_rows,
)
from collabemb.splits import split_random, split_random_per_user

from conftest import planted_ratings

# User 0: hits at positions 1 and 3 of 4, three relevant items (9 is never recommended).
# User 1: no hit, one relevant item, a list padded with -1.  User 2: nothing relevant.
RECOMMENDED = np.array([[1, 2, 3, 4], [5, 6, 7, -1], [1, 2, 3, 4]])
RELEVANT = [np.array([2, 4, 9]), np.array([8]), np.array([], dtype=np.int64)]
L2, L3, L5 = math.log2(2), math.log2(3), math.log2(5)


def test_precision_recall_hit_rate_match_hand_computed_values():
    np.testing.assert_allclose(precision_at_k(RECOMMENDED, RELEVANT), [2 / 4, 0.0, np.nan])
    np.testing.assert_allclose(recall_at_k(RECOMMENDED, RELEVANT), [2 / 3, 0.0, np.nan])
    np.testing.assert_allclose(hit_rate_at_k(RECOMMENDED, RELEVANT), [1.0, 0.0, np.nan])


def test_ndcg_discounts_by_log2_position_and_normalises_by_the_ideal_list():
    dcg = 1 / L3 + 1 / L5  # hits at 0-based positions 1 and 3
    ideal = 1 / L2 + 1 / L3 + 1 / math.log2(4)  # three relevant items fill the first three places
    np.testing.assert_allclose(ndcg_at_k(RECOMMENDED, RELEVANT), [dcg / ideal, 0.0, np.nan])


def test_average_precision_sums_precision_at_each_hit_over_min_k_and_relevant():
    ap0 = (1 / 2 + 2 / 4) / min(4, 3)
    np.testing.assert_allclose(average_precision_at_k(RECOMMENDED, RELEVANT), [ap0, 0.0, np.nan])


def test_perfect_list_scores_one_everywhere():
    rec = np.array([[3, 1, 2]])
    rel = [np.array([1, 2, 3])]
    for metric in (precision_at_k, recall_at_k, ndcg_at_k, average_precision_at_k, hit_rate_at_k):
        assert metric(rec, rel)[0] == pytest.approx(1.0), metric.__name__


def test_ideal_dcg_is_capped_at_k_when_there_are_more_relevant_items_than_k():
    rec = np.array([[0, 1]])
    rel = [np.arange(10)]
    assert ndcg_at_k(rec, rel)[0] == pytest.approx(1.0)
    assert average_precision_at_k(rec, rel)[0] == pytest.approx(1.0)
    assert recall_at_k(rec, rel)[0] == pytest.approx(0.2)


def test_catalogue_coverage_counts_distinct_items_and_ignores_padding():
    assert catalogue_coverage(RECOMMENDED, 10) == pytest.approx(7 / 10)
    assert catalogue_coverage(np.array([[-1, -1]]), 5) == 0.0


def test_ranking_metrics_average_only_users_with_relevant_items():
    out = ranking_metrics(RECOMMENDED, RELEVANT, n_items=10)
    ndcg0 = (1 / L3 + 1 / L5) / (1 / L2 + 1 / L3 + 0.5)
    assert out == pytest.approx(
        {
            "precision@4": (0.5 + 0) / 2,
            "recall@4": (2 / 3 + 0) / 2,
            "ndcg@4": ndcg0 / 2,
            "map@4": (1 / 3) / 2,
            "hit_rate@4": 0.5,
            "coverage@4": 0.7,
            "users": 2,
        }
    )


def test_relevant_as_sparse_matrix_or_lists_with_repeats_give_the_same_hits():
    matrix = sp.csr_matrix((np.ones(4), ([0, 0, 0, 1], [2, 4, 9, 8])), shape=(3, 12))
    repeated = [np.array([4, 2, 2, 9, 4]), np.array([8, 8]), np.array([], dtype=np.int64)]
    hit_lists, n_lists = hits(RECOMMENDED, RELEVANT)
    for other in (matrix, repeated):
        hit, n = hits(RECOMMENDED, other)
        np.testing.assert_array_equal(hit, hit_lists)
        np.testing.assert_array_equal(n, n_lists)
    np.testing.assert_array_equal(n_lists, [3, 1, 0])
    np.testing.assert_array_equal(hit_lists[0], [False, True, False, True])


def test_metrics_refuse_misaligned_inputs():
    with pytest.raises(ValueError, match="sequence of 3 arrays"):
        hits(RECOMMENDED, RELEVANT[:2])
    with pytest.raises(ValueError, match="2-D"):
        hits(np.array([1, 2, 3]), RELEVANT)
    with pytest.raises(ValueError, match="no user has a relevant item"):
        ranking_metrics(RECOMMENDED[2:], RELEVANT[2:], n_items=10)


def _scored_model(item_scores: list[float], n_users: int = 2) -> ce.EmbeddingDotBias:
    """Identity-link model whose item score is its bias (factors zero), items 10, 11, ..."""
    users = ce.IdRegistry(np.arange(1, n_users + 1), name="user")
    items = ce.IdRegistry(np.arange(10, 10 + len(item_scores)), name="item")
    model = ce.EmbeddingDotBias(users, items, n_factors=2, y_range=None)
    with torch.no_grad():
        model.u_weight.weight.zero_()
        model.i_weight.weight.zero_()
        model.i_bias.weight[1:, 0] = torch.tensor(item_scores)
    return model


def test_top_k_rows_ranks_by_score_breaks_ties_by_row_and_drops_excluded_items():
    model = _scored_model([0.5, 2.0, 2.0, -1.0, 1.0])  # rows 1..5
    exclude = sp.csr_matrix((np.ones(2), ([1, 1], [2, 5])), shape=(2, 6))  # user 1 has seen rows 2 and 5
    rows, scores = top_k_rows(model, np.array([1, 2]), 3, exclude=exclude)
    np.testing.assert_array_equal(rows, [[2, 3, 5], [3, 1, 4]])
    np.testing.assert_allclose(scores, [[2.0, 2.0, 1.0], [2.0, 0.5, -1.0]])


def test_top_k_rows_pads_with_minus_one_when_fewer_items_are_left_than_k_and_no_list_outgrows_the_catalogue():
    model = _scored_model([1.0, 3.0])
    exclude = sp.csr_matrix((np.ones(1), ([0], [2])), shape=(1, 3))
    for k in (2, 4, 10**12):  # k beyond the 2 items: 2 columns, nothing of size k allocated
        rows, scores = top_k_rows(model, np.array([1]), k, exclude=exclude)
        np.testing.assert_array_equal(rows, [[1, -1]])
        assert scores[0, 0] == 1.0 and np.all(np.isneginf(scores[0, 1:]))


def test_top_k_rows_of_a_rating_model_follow_its_predicted_ratings():
    ratings = ce.read_ratings(pd.DataFrame({"user": [1, 1, 2, 2, 3], "item": [1, 2, 2, 3, 1], "rating": [5.0, 1, 4, 2, 3]}))
    model = ce.fit(ratings, n_factors=2, epochs=3, progress=False)
    rows, _ = top_k_rows(model, model.users.encode([1, 2, 3]), 3)
    np.testing.assert_array_equal(top_k_rows(model.module, model.users.encode([1, 2, 3]), 3)[0], rows)  # module or fitted
    all_items = model.items.ids
    for u, user in enumerate([1, 2, 3]):
        pred = model.predict([user] * 3, all_items)["prediction"].to_numpy()
        np.testing.assert_array_equal(model.items.decode(rows[u]), all_items[np.argsort(-pred, kind="stable")])


def test_evaluate_popularity_on_a_hand_built_case():
    train = pd.DataFrame({"user": [1, 1, 2, 2, 3, 3, 3], "item": [10, 11, 10, 12, 10, 13, 11], "rating": 5.0})
    # counts: 10 -> 3, 11 -> 2, 12 -> 1, 13 -> 1. User 1 unseen: 12, 13 (tie, row order); user 2: 11, 13.
    test = pd.DataFrame({"user": [1, 1, 2], "item": [12, 13, 11], "rating": [2.0, 5.0, 5.0]})
    model = fit_popularity(train)
    out = evaluate(model, test, train=train, k=2, threshold=4)
    # user 1 gets [12, 13], only 13 relevant (hit at position 2); user 2 gets [11, 13], hit at 1
    assert out == pytest.approx(
        {
            "precision@2": 0.5,
            "recall@2": 1.0,
            "ndcg@2": (1 / L3 + 1.0) / 2,
            "map@2": (0.5 + 1.0) / 2,
            "hit_rate@2": 1.0,
            "coverage@2": 3 / 4,
            "users": 2,
            "excluded_test_pairs": 0,
        }
    )
    everything = evaluate(model, test, train=train, k=2)  # no threshold: 12 is relevant too
    assert everything["precision@2"] == pytest.approx((1.0 + 0.5) / 2)


def test_evaluate_counts_relevant_items_the_model_never_saw_as_misses():
    train = pd.DataFrame({"user": [1, 2], "item": [10, 11], "rating": 1.0})
    test = pd.DataFrame({"user": [1, 1], "item": [11, 99], "rating": 1.0})
    out = evaluate(fit_popularity(train), test, train=train, k=1)
    assert out["recall@1"] == pytest.approx(0.5)  # 11 found, 99 cannot be
    assert out["precision@1"] == pytest.approx(1.0)


def test_evaluate_refuses_to_leave_seen_items_in_silently():
    train = pd.DataFrame({"user": [1, 2], "item": [10, 11], "rating": 1.0})
    test = pd.DataFrame({"user": [1], "item": [11], "rating": 1.0})
    model = fit_popularity(train)
    # the fitted model remembers its training pairs: user 1's item 10 is left out, 11 is the hit
    assert evaluate(model, test, k=1)["precision@1"] == 1.0
    model.seen_items = ce.SeenItems.empty(model.users.n_rows)  # a model that holds no training pairs
    with pytest.raises(ValueError, match="train="):
        evaluate(model, test)
    # without exclusion user 1's own item 10 comes first (tie with 11, lower row)
    assert evaluate(model, test, k=1, exclude_seen=False)["precision@1"] == 0.0


def test_rating_errors_of_a_constant_model():
    module = _scored_model([0.0, 0.0], n_users=2)
    module.y_range = (0.0, 5.0)  # every prediction is the sigmoid midpoint, 2.5
    model = ce.FittedModel(module)
    test = ce.read_ratings(pd.DataFrame({"user": [1, 2, 3], "item": [10, 11, 10], "rating": [5.0, 2.0, 5.0]}))
    errors = rating_errors(model, test)
    assert errors == pytest.approx({"rmse": math.sqrt((2.5**2 + 0.5**2 + 2.5**2) / 3), "mae": (2.5 + 0.5 + 2.5) / 3})
    assert set(evaluate(model, test, k=1, exclude_seen=False)) >= {"rmse", "mae", "ndcg@1"}
    with pytest.raises(ValueError, match="rating model"):
        rating_errors(ce.FittedModel(_scored_model([0.0])), test)


@pytest.fixture(scope="module")
def split():
    ratings = ce.read_ratings(planted_ratings(n_users=50, n_items=40, per_user=12, seed=4))
    return ratings, *split_random(ratings, 0.2, seed=0)


def test_evaluate_warns_when_test_pairs_are_among_the_excluded_seen_items(split):
    ratings, _, test = split
    model = ce.fit(ratings, n_factors=4, epochs=2, seed=0, progress=False)  # trained on the test pairs too
    with pytest.warns(ExcludedTestPairsWarning) as caught:
        out = evaluate(model, test, k=5)
    assert out["excluded_test_pairs"] == len(test)
    assert out["recall@5"] == 0.0  # every relevant item was excluded as seen
    assert str(caught[0].message) == (
        f"{len(test)} of {len(test)} test pairs are among the excluded training pairs (seen items) and can never be hit; "
        "were validation/test pairs stored as training pairs?"
    )
    with pytest.warns(ExcludedTestPairsWarning, match=f"^{len(test)} of {len(test)} test pairs"):
        assert evaluate(model, test, train=ratings, k=5)["excluded_test_pairs"] == len(test)  # train= excludes them too


def test_evaluate_counts_exactly_the_test_pairs_stored_as_training_pairs(split):
    _, train, test = split
    model = ce.fit(train, n_factors=4, epochs=2, seed=0, progress=False)
    leaked = test.frame.iloc[:37]
    model.set_seen_items(pd.concat([train.frame, leaked]))
    with pytest.warns(ExcludedTestPairsWarning, match=f"^37 of {len(test)} test pairs"):
        assert evaluate(model, test, k=5)["excluded_test_pairs"] == 37
    relevant = int((test.frame["rating"] >= 4).sum())
    leaked_relevant = int((leaked["rating"] >= 4).sum())
    with pytest.warns(ExcludedTestPairsWarning, match=f"^{leaked_relevant} of {relevant} relevant test pairs"):
        assert evaluate(model, test, k=5, threshold=4)["excluded_test_pairs"] == leaked_relevant
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExcludedTestPairsWarning)
        assert evaluate(model, test, k=5, exclude_seen=False)["excluded_test_pairs"] == 0  # nothing is excluded


def test_evaluate_of_a_model_trained_on_the_train_split_does_not_warn(split):
    _, train, test = split
    model = ce.fit(train, n_factors=4, epochs=2, seed=0, progress=False)
    assert len(model.seen_items) == len(train)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExcludedTestPairsWarning)
        out = evaluate(model, test, k=5)
        assert evaluate(model, test, train=train, k=5) == pytest.approx(out)
    assert out["excluded_test_pairs"] == 0 and out["recall@5"] > 0


def test_split_random_per_user_holds_out_n_per_user_reproducibly():
    frame = pd.DataFrame({"user": np.repeat([1, 2, 3], [6, 3, 2]), "item": np.arange(11), "rating": np.arange(11, dtype=float)})
    ratings = ce.read_ratings(frame)
    train, test = split_random_per_user(ratings, 2, seed=3)
    assert test.frame["user"].value_counts().to_dict() == {1: 2, 2: 2}  # user 3 has only 2: all in train
    assert len(train) + len(test) == 11
    assert set(train.frame["item"]).isdisjoint(test.frame["item"])
    again, _ = split_random_per_user(ratings, 2, seed=3)
    pd.testing.assert_frame_equal(train.frame, again.frame)
    picks = {tuple(sorted(split_random_per_user(ratings, 2, seed=s)[1].frame["item"])) for s in range(10)}
    assert len(picks) > 1  # the seed changes the draw
    with pytest.raises(ValueError, match="n must be >= 1"):
        split_random_per_user(ratings, 0)
