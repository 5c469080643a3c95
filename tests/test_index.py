"""SimilarityIndex: exact search against numpy, HNSW recall, recommendations in predict order,
exclusions, unknown IDs and ID types, persistence through the artifact and the stale-index guard,
and the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest
import torch

import collabemb as ce
from collabemb.cli import main
from collabemb.faiss_files import bytes_checksum
from collabemb.fitted import StoredIndex
from collabemb.index import SimilarityIndex, StaleIndexError, index_of
from collabemb.interactions import SeenItems

from conftest import planted_ratings, reseal, snapshot_of

K = 10


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int, metric: str, exclude_rows=None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k positions and scores by numpy (float64), excluding position ``exclude_rows[j]`` per query."""
    x, q = vectors.astype(np.float64), queries.astype(np.float64)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-300)
    scores = q @ x.T
    if exclude_rows is not None:
        scores[np.arange(len(q)), exclude_rows] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return top, np.take_along_axis(scores, top, axis=1)


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.arange(600) * 13 + 5)  # sparse IDs in shuffled order
    return ids, rng.standard_normal((600, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def fitted():
    """A small fitted model, which stores its training pairs (module-scoped: tests search copies
    or leave it as it was)."""
    frame = planted_ratings(n_users=150, n_items=200, per_user=40, seed=3)
    model = ce.fit(frame, n_factors=8, epochs=6, seed=0, threads=1, progress=False)
    return model, frame


def unindexed(model: ce.FittedModel, *, seen: bool = True) -> ce.FittedModel:
    """Another FittedModel around the same module, without an index (and without training pairs
    unless ``seen``): the shared fixture is left as it is."""
    return ce.FittedModel(model.module, model.identity, model.history, model.seen_items if seen else None, model.item_metadata)


def fresh_copy(model: ce.FittedModel, tmp_path: Path, name: str = "copy") -> ce.FittedModel:
    """The model saved without an index and loaded again: a copy tests may change."""
    ce.save_model(unindexed(model), tmp_path / name)
    return ce.load_model(tmp_path / name)


def item_table(model: ce.FittedModel) -> np.ndarray:
    return model.module.i_weight.weight.detach().numpy()


# --- exact and approximate search ---------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_exact_index_equals_numpy_top_k_for_every_query(vectors, metric):
    ids, x = vectors
    index = SimilarityIndex.from_vectors(ids, x, index_type="exact", metric=metric)
    found = index.similar_items(ids, k=K)
    top, scores = brute_force(x, x, K, metric, exclude_rows=np.arange(len(x)))
    assert len(found) == len(ids) * K
    assert found["query"].tolist() == np.repeat(ids, K).tolist()
    assert found["item"].to_numpy().reshape(-1, K).tolist() == ids[top].tolist()
    np.testing.assert_allclose(found["score"].to_numpy().reshape(-1, K), scores, rtol=1e-5, atol=1e-5)
    assert found["rank"].tolist() == list(range(1, K + 1)) * len(ids)
    assert set(found["source"]) == {"known"}


def test_one_id_gives_the_same_rows_as_that_id_in_a_batch(vectors):
    ids, x = vectors
    index = SimilarityIndex.from_vectors(ids, x, index_type="exact")
    batch = index.similar_items(ids[:20], k=K)
    for raw in ids[:20]:
        one = index.similar_items(int(raw), k=K)
        part = batch[batch["query"] == raw].reset_index(drop=True)
        pd.testing.assert_frame_equal(one, part)


def test_cosine_search_keeps_zero_vectors_finite_and_scores_them_zero(vectors):
    ids, x = vectors
    x = x.copy()
    x[3] = 0.0
    index = SimilarityIndex.from_vectors(ids, x, index_type="exact")
    own = index.similar_items(int(ids[3]), k=5)
    assert len(own) == 5 and np.all(own["score"] == 0.0)
    everything = index.similar_items(ids, k=len(ids) - 1)
    assert np.isfinite(everything["score"]).all()
    assert (everything.loc[everything["item"] == ids[3], "score"] == 0.0).all()


def test_hnsw_recall_at_10_against_exact_on_a_small_set():
    rng = np.random.default_rng(1)
    spectrum = np.linspace(1.0, 0.1, 32)
    x = (rng.standard_normal((4000, 32)) * spectrum).astype(np.float32)
    ids = np.arange(4000)
    exact = SimilarityIndex.from_vectors(ids, x, index_type="exact").similar_items(ids[:300], k=K)
    hnsw_index = SimilarityIndex.from_vectors(ids, x, index_type="hnsw", ef_search=64, threads=1)
    approx = hnsw_index.similar_items(ids[:300], k=K)
    truth = exact["item"].to_numpy().reshape(-1, K)
    got = approx["item"].to_numpy().reshape(-1, K)
    recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(truth, got, strict=True)])
    assert recall >= 0.95, recall
    assert hnsw_index.parts == {"items": "hnsw"}


def test_every_faiss_index_is_built_with_an_explicit_metric(fitted):
    model, _ = fitted
    for index_type in ("exact", "hnsw", "ivf"):
        index = SimilarityIndex(model, index_type=index_type, threads=1).build("items", "users", "recommend")
        for name in ("items", "users"):
            assert index._parts[name].index.metric_type == faiss.METRIC_INNER_PRODUCT, (index_type, name)
        lifted = index_type == "ivf"  # HNSW searches the inner product itself (see faiss_parts.Part)
        expected = faiss.METRIC_L2 if lifted else faiss.METRIC_INNER_PRODUCT
        assert index._parts["recommend"].index.metric_type == expected, index_type
        assert index._parts["recommend"].index.d == model.n_factors + (2 if lifted else 1)


def test_hnsw_beam_is_never_narrower_than_the_results_asked_for(vectors):
    ids, x = vectors
    exact = SimilarityIndex.from_vectors(ids, x, index_type="exact").similar_items(ids[:5], k=200)
    narrow = SimilarityIndex.from_vectors(ids, x, index_type="hnsw", ef_search=4, threads=1).similar_items(ids[:5], k=200)
    assert narrow.groupby("query").size().tolist() == [200] * 5
    overlap = np.mean([len(set(exact.item[exact["query"] == q]) & set(narrow.item[narrow["query"] == q])) / 200 for q in ids[:5]])
    assert overlap >= 0.95


def test_default_index_type_follows_catalogue_size(vectors):
    ids, x = vectors
    assert SimilarityIndex.from_vectors(ids, x).build("items").parts == {"items": "exact"}
    assert SimilarityIndex.from_vectors(ids, x, exact_max=100, threads=1).build("items").parts == {"items": "hnsw"}


def test_exclude_and_exclude_self_never_cost_results(vectors):
    ids, x = vectors
    index = SimilarityIndex.from_vectors(ids, x, index_type="exact")
    plain = index.similar_items(int(ids[0]), k=K)
    banned = plain["item"].tolist()[:7] + [123456789]  # an unseen ID in exclude is ignored
    again = index.similar_items(int(ids[0]), k=K, exclude=banned)
    assert len(again) == K and not set(banned) & set(again["item"])
    assert again["item"].tolist()[:3] == plain["item"].tolist()[7:]
    with_self = index.similar_items(int(ids[0]), k=K, exclude_self=False)
    assert with_self["item"].iloc[0] == ids[0] and with_self["score"].iloc[0] == pytest.approx(1.0, abs=1e-6)


def test_string_ids_in_and_out_and_id_types_never_coerced():
    rng = np.random.default_rng(2)
    ids = np.array([f"tt{i:07d}" for i in rng.permutation(300)], dtype=object)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    index = SimilarityIndex.from_vectors(ids, x, index_type="exact")
    out = index.similar_items(["tt0000007", "tt0000011"], k=3)
    top, _ = brute_force(x, x[[list(ids).index("tt0000007"), list(ids).index("tt0000011")]], 4, "cosine")
    assert out["item"].tolist() == [v for row in ids[top][:, 1:] for v in row]
    assert all(type(v) is str for v in out["item"])
    with pytest.raises(TypeError, match="'7' and 7 are different IDs"):
        index.similar_items([7], k=3)


def test_metadata_columns_are_joined_onto_results(vectors):
    ids, x = vectors
    meta = pd.DataFrame({"item": ids[::-1], "title": [f"title of {v}" for v in ids[::-1]]})
    index = SimilarityIndex.from_vectors(ids, x, index_type="exact", item_metadata=meta.iloc[:-1])  # one item without a row
    out = index.similar_items(ids, k=3)
    have = out["item"] != ids[0]
    assert (out.loc[have, "title"] == "title of " + out.loc[have, "item"].astype(str)).all()
    assert out.loc[~have, "title"].isna().all()


# --- unknown IDs and ID types ----------------------------------------------------------------------


def test_unknown_query_id_is_a_clear_error_naming_the_id_and_the_way_out(fitted):
    model, _ = fitted
    index = SimilarityIndex(model)
    with pytest.raises(ce.UnknownIdError) as err:
        index.similar_items([1, 987654], k=3)
    message = str(err.value)
    assert "987654" in message and "pass unknown='unknown_slot' to answer from the trained unknown slot" in message
    assert "fold" in message
    with pytest.raises(ce.UnknownIdError, match="unseen user ID"):
        index.recommend([424242], k=3)
    with pytest.raises(ValueError, match="unknown must be 'raise' or 'unknown_slot'"):
        index.similar_items([987654], k=3, unknown="fallback")


def test_unknown_slot_answers_unknown_ids_with_the_trained_row_zero(fitted):
    model, _ = fitted
    index = SimilarityIndex(model, index_type="exact")
    out = index.similar_items([1, 987654], k=3, unknown="unknown_slot")
    assert out["source"].tolist() == ["known"] * 3 + ["unknown_slot"] * 3
    q0 = item_table(model)[0:1]
    top, _ = brute_force(item_table(model)[1:], q0, 3, "cosine")
    assert out["item"].tolist()[3:] == model.items.decode(top[0] + 1).tolist()
    rec = index.recommend([424242], k=5, unknown="unknown_slot")
    anonymous = index.recommend(None, k=5)
    assert rec["item"].tolist() == anonymous["item"].tolist()
    assert set(rec["source"]) == {"unknown_slot"} and anonymous["user"].isna().all()
    pred = model.predict(np.full(len(model.items), 424242), model.items.ids)["prediction"].to_numpy()
    assert rec["item"].tolist() == model.items.ids[np.argsort(-pred, kind="stable")[:5]].tolist()


def test_vectors_without_an_unknown_slot_refuse_to_answer_from_it(vectors):
    ids, x = vectors
    index = SimilarityIndex.from_vectors(ids, x)
    with pytest.raises(ValueError, match="no trained unknown item"):
        index.similar_items([-1], unknown="unknown_slot")
    with pytest.raises(ce.UnknownIdError, match="no unknown slot") as err:
        index.similar_items([-1])
    assert "unknown_slot'" not in str(err.value)  # no advice that cannot work


def test_unseen_item_described_by_known_items_is_searched_from_their_mean(fitted):
    model, _ = fitted
    index = SimilarityIndex(model, index_type="exact")
    like = [1, 2, 3]
    out = index.similar_items(-5, k=K, like={-5: like})
    w = item_table(model)
    mean = w[model.items.encode(like)].mean(axis=0, keepdims=True)
    candidates = np.setdiff1d(np.arange(1, len(model.items) + 1), model.items.encode(like))
    top, scores = brute_force(w[candidates], mean, K, "cosine")
    assert out["item"].tolist() == model.items.decode(candidates[top[0]]).tolist()
    np.testing.assert_allclose(out["score"], scores[0], atol=1e-5)
    assert set(out["source"]) == {"mean_of_items"}


def test_exclude_of_the_other_id_type_raises_and_never_drops_the_look_alike():
    """The bug this guards against: exclude=[7] on a str-ID model silently dropped item "7"."""
    rng = np.random.default_rng(4)
    ids = np.array([str(i) for i in range(40)], dtype=object)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    x[7] = x[8] + 0.01 * rng.standard_normal(6).astype(np.float32)  # "7" is the nearest neighbour of "8"
    index = SimilarityIndex.from_vectors(ids, x, index_type="exact")
    plain = index.similar_items("8", k=5)
    assert plain["item"].iloc[0] == "7"
    with pytest.raises(TypeError, match="'7' and 7 are different IDs"):
        index.similar_items("8", k=5, exclude=[7])
    with pytest.raises(TypeError):
        index.similar_items("8", k=5, exclude=7)
    dropped = index.similar_items("8", k=5, exclude=["7", "no such item"])  # unseen IDs of the right type are ignored
    assert "7" not in set(dropped["item"]) and len(dropped) == 5
    assert dropped["item"].tolist() == plain["item"].tolist()[1:] + [dropped["item"].iloc[-1]]


def test_a_fitted_str_model_refuses_other_id_types_in_every_argument(tmp_path):
    frame = planted_ratings(n_users=40, n_items=30, per_user=12, seed=8, string_ids=True)
    model = ce.fit(frame, n_factors=4, epochs=2, seed=0, threads=1, progress=False)
    near = ce.similar_items(model, "i008", k=3)
    first = near["item"].iloc[0]
    with pytest.raises(TypeError):
        ce.similar_items(model, "i008", k=3, exclude=[8])
    assert first not in set(ce.similar_items(model, "i008", k=3, exclude=[first])["item"])
    with pytest.raises(TypeError):
        ce.similar_items(model, [8], k=3)
    with pytest.raises(TypeError):
        ce.similar_items(model, "new", k=3, like={8: ["i001"]})
    with pytest.raises(TypeError):
        ce.similar_items(model, "new", k=3, like={"new": [1]})
    with pytest.raises(TypeError):
        ce.similar_users(model, ["u001"], k=3, exclude=[2])
    with pytest.raises(TypeError):
        ce.recommend(model, ["u001"], k=3, exclude=[1])
    numeric = frame.assign(user=range(len(frame)))  # int user IDs for a str-ID model
    with pytest.raises(TypeError):
        ce.recommend(model, ["u001"], k=3, seen=numeric)
    rated = set(frame.loc[frame["user"] == "u001", "item"])
    assert not rated & set(ce.recommend(model, ["u001"], k=5, seen=frame)["item"])


def test_an_int_model_refuses_str_ids_in_exclude():
    frame = planted_ratings(n_users=30, n_items=25, per_user=10, seed=9)
    model = ce.fit(frame, n_factors=4, epochs=2, seed=0, threads=1, progress=False)
    with pytest.raises(TypeError):
        ce.similar_items(model, 8, k=3, exclude=["7"])
    assert len(ce.similar_items(model, 8, k=3, exclude=[7, 123456])) == 3


# --- recommendations ----------------------------------------------------------------------------------


@pytest.mark.parametrize("index_type", ["exact", "hnsw"])
def test_recommend_equals_argsort_of_predict_over_all_items(fitted, index_type):
    model, _ = fitted
    index = SimilarityIndex(model, index_type=index_type, threads=1)
    users = [1, 7, 42, 99, 150]
    out = index.recommend(users, k=K, exclude_seen=False)
    for user in users:
        pred = model.predict(np.full(len(model.items), user), model.items.ids)["prediction"].to_numpy()
        order = np.argsort(-pred, kind="stable")[:K]
        mine = out[out["user"] == user]
        assert mine["item"].tolist() == model.items.ids[order].tolist(), (index_type, user)
        np.testing.assert_allclose(mine["score"], pred[order], rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_an_approximate_recommend_scores_the_items_of_largest_bias_too_exactly_and_once(index_type):
    """Even a search that finds almost nothing (HNSW beam 1, IVF one list) returns the items whose bias puts them on
    top, with their exact scores, each once, and leaves out the rows excluded."""
    rng = np.random.default_rng(3)
    n, k_factors = 5000, 16
    vectors = (0.1 * rng.standard_normal((n, k_factors))).astype(np.float32)
    biases = (0.01 * rng.standard_normal(n)).astype(np.float32)
    stars = rng.choice(n, 12, replace=False)
    biases[stars] = 5.0 + np.arange(12, dtype=np.float32)  # 12 items every user's list must start with
    users = (0.1 * rng.standard_normal((40, k_factors))).astype(np.float32)
    index = SimilarityIndex.from_vectors(
        np.arange(n),
        vectors,
        item_bias=biases,
        user_ids=np.arange(40),
        user_vectors=users,
        index_type=index_type,
        ef_search=1,
        nprobe=1,
        threads=1,
    )
    part = index.part("recommend")
    weights, table_biases = index.fitted.module.tables("item")
    excluded = np.array([stars[-1] + 1])  # the largest bias of all, as a table row
    rows, scores = part.recommend(weights, table_biases, users, 11, global_rows=excluded)
    exact = users @ vectors.T + biases
    exact[:, stars[-1]] = -np.inf
    truth = np.argsort(-exact, axis=1, kind="stable")[:, :11] + 1
    assert np.array_equal(rows, truth)
    np.testing.assert_allclose(scores, np.take_along_axis(exact, truth - 1, axis=1), rtol=1e-5)
    assert all(len(set(r)) == len(r) for r in rows.tolist())


def test_recommend_vectors_ranks_given_user_vectors_as_recommend_ranks_known_users(fitted):
    model, _ = fitted
    index = SimilarityIndex(model, index_type="exact")
    users = [7, 42]
    weights, biases = model.tables("user")
    rows = model.users.encode(users)
    given = index.recommend_vectors(weights[rows], biases[rows], K, ids=users)
    known = index.recommend(users, k=K, exclude_seen=False)
    pd.testing.assert_frame_equal(given.drop(columns="source"), known.drop(columns="source"))
    assert set(given["source"]) == {"given"} and set(known["source"]) == {"known"}
    anonymous = index.recommend_vectors(weights[rows[:1]], biases[rows[:1]], 3, source="fold_in", exclude=known["item"].iloc[:2].tolist())
    assert anonymous["user"].isna().all() and anonymous["item"].tolist() == known["item"].tolist()[2:5]
    with pytest.raises(ValueError, match="vectors must be"):
        index.recommend_vectors(weights[rows, :3], biases[rows], K)


def test_faiss_threads_can_be_changed_between_calls_and_are_restored(vectors):
    ids, x = vectors
    index = SimilarityIndex.from_vectors(ids, x, index_type="hnsw", threads=1).build("items")
    before = faiss.omp_get_max_threads()
    one = index.similar_items(ids[:50], k=K)
    index.threads = 2
    assert index.settings.threads == 2 and index._parts["items"].settings.threads == 2
    pd.testing.assert_frame_equal(index.similar_items(ids[:50], k=K), one)
    assert faiss.omp_get_max_threads() == before
    with pytest.raises(ValueError, match=r"threads must be an integer in \[1, 4096\] or None, got 0"):
        index.threads = 0


def test_recommend_never_returns_seen_items_and_still_returns_k(fitted):
    model, frame = fitted
    index = SimilarityIndex(model, index_type="exact")
    users = model.users.ids[:40]
    out = index.recommend(users, k=K)
    assert (out.groupby("user").size() == K).all()
    seen = set(zip(frame["user"], frame["item"], strict=True))
    assert not any((u, i) in seen for u, i in zip(out["user"], out["item"], strict=True))
    # the same as ranking predict over the items each user has not rated
    user = int(users[0])
    unrated = np.array(sorted(set(model.items.ids) - set(frame.loc[frame["user"] == user, "item"])))
    pred = model.predict(np.full(len(unrated), user), unrated)["prediction"].to_numpy()
    assert out.loc[out["user"] == user, "item"].tolist() == unrated[np.argsort(-pred, kind="stable")[:K]].tolist()


def test_seen_items_can_be_passed_instead_of_stored(fitted, tmp_path):
    model, frame = fitted
    index = SimilarityIndex(model, index_type="exact")
    stored = index.recommend([3, 4], k=K)
    pd.testing.assert_frame_equal(stored, index.recommend([3, 4], k=K, seen=frame))
    pd.testing.assert_frame_equal(stored, index.recommend([3, 4], k=K, seen=frame[["user", "item"]]))  # the pairs are enough
    frame.to_csv(tmp_path / "seen.csv", index=False)
    pd.testing.assert_frame_equal(stored, index.recommend([3, 4], k=K, seen=tmp_path / "seen.csv"))
    pd.testing.assert_frame_equal(stored, index.recommend([3, 4], k=K, seen=model.seen_items))


def test_exclude_seen_without_any_record_of_what_was_seen_is_refused(fitted):
    model, frame = fitted
    bare = unindexed(model, seen=False)  # a model that stores no pairs
    assert len(bare.seen_items) == 0
    with pytest.raises(ValueError, match="set_seen_items"):
        ce.recommend(bare, [1], k=3)
    assert len(ce.recommend(bare, [1], k=3, exclude_seen=False)) == 3
    assert len(ce.recommend(bare, [1], k=3, seen=frame)) == 3
    assert len(ce.recommend(bare, None, k=3)) == 3  # the anonymous user has seen nothing


def test_a_user_who_saw_almost_everything_gets_the_rest(fitted, tmp_path):
    model, frame = fitted
    model = fresh_copy(model, tmp_path)
    items = model.items.ids
    heavy = pd.DataFrame({"user": 1, "item": items[: len(items) - 4], "rating": 3.0})
    model.set_seen_items(pd.concat([frame[["user", "item", "rating"]], heavy], ignore_index=True))
    out = ce.recommend(model, [1], k=K)
    assert sorted(out["item"]) == sorted(items[-4:])


def test_seen_items_csr_round_trips_pairs(fitted):
    model, frame = fitted
    seen = SeenItems.from_ratings(ce.read_ratings(frame), model.users, model.items)
    query, rows = seen.items_of(model.users.encode([5, 6]))
    pairs = set(zip(np.array([5, 6])[query], model.items.decode(rows), strict=True))
    expected = set(frame.loc[frame["user"].isin([5, 6]), ["user", "item"]].itertuples(index=False, name=None))
    assert pairs == expected
    assert seen.indices.dtype == np.int32 and len(seen) == len(frame)
    assert seen == model.seen_items  # what fit stored


# --- persistence -----------------------------------------------------------------------------------


@pytest.mark.parametrize("index_type", ["exact", "hnsw", "ivf"])
def test_save_and_load_give_the_same_results(fitted, tmp_path, index_type):
    model, _ = fitted
    model = fresh_copy(model, tmp_path)
    ce.build_index(model, index_type=index_type, parts=("items", "users", "recommend"), threads=1)
    before = (ce.similar_items(model, [1, 2], k=K), ce.similar_users(model, [3], k=K), ce.recommend(model, [4, 5], k=K))
    ce.save_model(model, tmp_path / "art")
    config = json.loads((snapshot_of(tmp_path / "art") / "config.json").read_text())
    assert set(config["index"]["parts"]) == {"items", "users", "recommend"}
    assert (snapshot_of(tmp_path / "art") / "seen_items.npy").is_file()
    loaded = ce.load_model(tmp_path / "art")
    assert isinstance(loaded.index, StoredIndex)
    assert index_of(loaded).parts == {"items": index_type, "users": index_type, "recommend": index_type}
    after = (ce.similar_items(loaded, [1, 2], k=K), ce.similar_users(loaded, [3], k=K), ce.recommend(loaded, [4, 5], k=K))
    for b, a in zip(before, after, strict=True):
        pd.testing.assert_frame_equal(b, a)
    assert np.load(snapshot_of(tmp_path / "art") / "seen_indptr.npy", allow_pickle=False).dtype == np.int64


def test_a_loaded_index_answers_from_the_stored_faiss_bytes_without_rebuilding(fitted, tmp_path):
    model, _ = fitted
    model = fresh_copy(model, tmp_path)
    built = ce.build_index(model, index_type="hnsw", parts=("items", "recommend"), threads=1)
    before = (ce.similar_items(model, [1, 2], k=K), ce.recommend(model, [4, 5], k=K))
    ce.save_model(model, tmp_path / "art")
    stored = {part: np.fromfile(snapshot_of(tmp_path / "art") / f"index-{part}.faiss", dtype=np.uint8) for part in ("items", "recommend")}
    for part, data in stored.items():
        np.testing.assert_array_equal(faiss.serialize_index(built._parts[part].index), data)
    loaded = ce.load_model(tmp_path / "art")
    after = (ce.similar_items(loaded, [1, 2], k=K), ce.recommend(loaded, [4, 5], k=K))
    for b, a in zip(before, after, strict=True):
        pd.testing.assert_frame_equal(b, a)
    index = loaded.index  # attached by the first search
    assert isinstance(index, SimilarityIndex) and index.parts == {"items": "hnsw", "recommend": "hnsw"}
    for part, data in stored.items():  # the very FAISS indexes of the artifact, not rebuilt ones
        np.testing.assert_array_equal(faiss.serialize_index(index._parts[part].index), data)
    # saving a loaded model that was never searched writes the same bytes back
    ce.save_model(ce.load_model(tmp_path / "art"), tmp_path / "again")
    for part, data in stored.items():
        np.testing.assert_array_equal(np.fromfile(snapshot_of(tmp_path / "again") / f"index-{part}.faiss", dtype=np.uint8), data)


def test_artifact_without_index_or_seen_items_still_loads(fitted, tmp_path):
    model, _ = fitted
    plain = unindexed(model, seen=False)
    ce.save_model(plain, tmp_path / "plain")
    config = json.loads((snapshot_of(tmp_path / "plain") / "config.json").read_text())
    assert "index" not in config and config["seen_items"]["n_pairs"] == 0
    loaded = ce.load_model(tmp_path / "plain")
    assert loaded.index is None and len(loaded.seen_items) == 0
    assert len(ce.similar_items(loaded, [1], k=3)) == 3  # builds one on first use
    assert isinstance(loaded.index, SimilarityIndex) and loaded.index.parts == {"items": "exact"}


def test_index_copied_from_another_artifact_is_refused_naming_the_file(fitted, tmp_path):
    model, frame = fitted
    other = ce.fit(frame, n_factors=8, epochs=6, seed=1, threads=1, progress=False)  # same IDs, other vectors
    for m, name in ((fresh_copy(model, tmp_path), "a"), (other, "b")):
        ce.build_index(m, index_type="exact")
        ce.save_model(m, tmp_path / name)
    config_a = json.loads((snapshot_of(tmp_path / "a") / "config.json").read_text())
    config_b = json.loads((snapshot_of(tmp_path / "b") / "config.json").read_text())
    for part in ("items", "recommend"):
        shutil.copy(snapshot_of(tmp_path / "a") / f"index-{part}.faiss", snapshot_of(tmp_path / "b") / f"index-{part}.faiss")
    config_b["index"] = config_a["index"]
    (snapshot_of(tmp_path / "b") / "config.json").write_text(json.dumps(config_b))
    with pytest.raises(ce.ArtifactError, match=r"contents do not match manifest\.json"):
        ce.load_model(tmp_path / "b")
    reseal(tmp_path / "b")  # an attacker who also rewrites the manifest meets the index's own checks
    loaded = ce.load_model(tmp_path / "b")
    with pytest.raises(StaleIndexError, match=r"index-items\.faiss: built from other tensors than this artifact.*rebuild"):
        ce.similar_items(loaded, [1], k=3)
    with pytest.raises(StaleIndexError, match=r"index-items\.faiss"):
        index_of(loaded)
    assert isinstance(loaded.index, StoredIndex)  # left as it was
    ce.build_index(loaded, index_type="exact")  # the way out the message names
    assert len(ce.similar_items(loaded, [1], k=3)) == 3


def test_an_index_file_alone_copied_from_another_artifact_is_refused(fitted, tmp_path):
    """Same IDs, same sizes, same index type: only the stored checksum of the bytes tells them apart."""
    model, frame = fitted
    other = ce.fit(frame, n_factors=8, epochs=6, seed=1, threads=1, progress=False)
    for m, name in ((fresh_copy(model, tmp_path), "a"), (other, "b")):
        ce.build_index(m, index_type="exact")
        ce.save_model(m, tmp_path / name)
    shutil.copy(snapshot_of(tmp_path / "a") / "index-recommend.faiss", snapshot_of(tmp_path / "b") / "index-recommend.faiss")
    with pytest.raises(ce.ArtifactError, match=r"index-recommend\.faiss: contents do not match manifest\.json"):
        ce.load_model(tmp_path / "b")
    reseal(tmp_path / "b")
    loaded = ce.load_model(tmp_path / "b")
    with pytest.raises(StaleIndexError, match=r"index-recommend\.faiss: .*copied from another artifact"):
        ce.recommend(loaded, [1], k=3)


def test_index_for_another_registry_is_refused(fitted, tmp_path):
    model, frame = fitted
    small = ce.fit(frame[frame["item"] <= 150], n_factors=8, epochs=2, threads=1, progress=False)
    ce.build_index(small, index_type="exact")
    ce.save_model(small, tmp_path / "small")
    ce.save_model(unindexed(model), tmp_path / "big")
    config = json.loads((snapshot_of(tmp_path / "big") / "config.json").read_text())
    config["index"] = json.loads((snapshot_of(tmp_path / "small") / "config.json").read_text())["index"]
    (snapshot_of(tmp_path / "big") / "config.json").write_text(json.dumps(config))
    for part in ("items", "recommend"):
        shutil.copy(snapshot_of(tmp_path / "small") / f"index-{part}.faiss", snapshot_of(tmp_path / "big") / f"index-{part}.faiss")
    reseal(tmp_path / "big")
    with pytest.raises(StaleIndexError, match=r"index-items\.faiss: built for another item registry"):
        ce.similar_items(ce.load_model(tmp_path / "big"), [1], k=3)


def test_a_stored_index_that_is_not_what_its_entry_says_is_refused(fitted, tmp_path):
    model, _ = fitted
    model = fresh_copy(model, tmp_path)
    ce.build_index(model, index_type="exact", parts=("items", "users"))
    ce.save_model(model, tmp_path / "art")
    config_path = snapshot_of(tmp_path / "art") / "config.json"
    config = json.loads(config_path.read_text())
    parts = config["index"]["parts"]

    def swap_items_file(data: bytes) -> None:
        """Replace the items part's bytes and (as a hand-edited artifact might) their recorded checksum."""
        (snapshot_of(tmp_path / "art") / "index-items.faiss").write_bytes(data)
        parts["items"]["file_checksum"] = bytes_checksum(np.frombuffer(data, dtype=np.uint8))
        parts["items"]["file_sha256"] = hashlib.sha256(data).hexdigest()
        config_path.write_text(json.dumps(config))
        reseal(tmp_path / "art")

    swap_items_file((snapshot_of(tmp_path / "art") / "index-users.faiss").read_bytes())  # 150 user vectors as the items
    with pytest.raises(StaleIndexError, match=r"index-items\.faiss: holds 150 vectors of dimension 8, expected 200"):
        index_of(ce.load_model(tmp_path / "art"))
    swap_items_file(b"not a faiss index")
    with pytest.raises(ce.ArtifactError, match=r"index-items\.faiss: unreadable FAISS index"):
        index_of(ce.load_model(tmp_path / "art"))
    hnsw = SimilarityIndex(model, index_type="hnsw", threads=1).build("items")
    swap_items_file(faiss.serialize_index(hnsw._parts["items"].index).tobytes())  # the right vectors, another index type
    with pytest.raises(ce.ArtifactError, match=r"index-items\.faiss: a IndexHNSWFlat, expected index_type 'exact'"):
        index_of(ce.load_model(tmp_path / "art"))


def test_ids_added_behind_the_index_make_it_stale_until_rebuilt(fitted, tmp_path):
    model, _ = fitted
    model = fresh_copy(model, tmp_path)
    ce.build_index(model, index_type="exact")
    # grow the tables without extending the index, as something other than a fold-in might
    model.module.append_rows("item", [99999], np.zeros((1, model.n_factors)), np.zeros(1))
    with pytest.raises(StaleIndexError, match="rebuild it"):
        ce.similar_items(model, [1], k=3)
    with pytest.raises(StaleIndexError, match="rebuild it"):
        ce.save_model(model, tmp_path / "stale")
    ce.build_index(model, index_type="exact")
    assert len(ce.similar_items(model, [1], k=3)) == 3


def test_saving_refuses_an_index_whose_model_changed_after_building(fitted, tmp_path):
    model, _ = fitted
    model = fresh_copy(model, tmp_path)
    ce.build_index(model, index_type="exact")
    with torch.no_grad():
        model.module.i_weight.weight[1] += 1.0
    with pytest.raises(StaleIndexError, match="changed after"):
        ce.save_model(model, tmp_path / "changed")
    assert not (tmp_path / "changed").exists()


def test_an_index_of_another_fitted_model_is_not_used_silently(fitted, tmp_path):
    model, _ = fitted
    one, two = fresh_copy(model, tmp_path, "one"), fresh_copy(model, tmp_path, "two")
    two.index = ce.build_index(one)
    with pytest.raises(ValueError, match="another FittedModel"):
        ce.similar_items(two, [1], k=3)


# --- command line ------------------------------------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess:
    """The real command line, in a subprocess (each start imports torch: used sparingly)."""
    return subprocess.run([sys.executable, "-m", "collabemb", *args], capture_output=True, text=True, timeout=300)


def run_here(capsys, *args: str) -> tuple[int, str, str]:
    """The same entry point, in this process."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def cli_artifact(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-search")
    frame = planted_ratings(n_users=60, n_items=50, per_user=20, seed=4)
    frame.to_csv(root / "ratings.csv", index=False)
    pd.DataFrame({"item": np.arange(1, 51), "title": [f"Movie {i}" for i in range(1, 51)]}).to_csv(root / "items.csv", index=False)
    settings = ["--epochs", "3", "--n-factors", "4", "--threads", "1", "--no-progress"]
    result = run("fit", str(root / "ratings.csv"), "--out", str(root / "art"), "--items", str(root / "items.csv"), *settings)
    assert result.returncode == 0, result.stderr
    return root, frame


def test_cli_similar_prints_a_table_with_titles(cli_artifact):
    root, _ = cli_artifact
    result = run("similar", str(root / "art"), "7", "8", "-k", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["query", "item", "score", "rank", "source", "title"]
    assert len(lines) == 1 + 6 and lines[1].split()[0] == "7" and "Movie" in lines[1]


def test_cli_recommend_folds_in_a_new_users_ratings_file(cli_artifact):
    root, _ = cli_artifact
    (root / "new_user.csv").write_text("item,rating\n1,5\n2,5\n3,1\n999,4\n")
    result = run("recommend", str(root / "art"), "--ratings", str(root / "new_user.csv"), "-k", "4", "-o", str(root / "new.csv"))
    assert result.returncode == 0, result.stderr
    rec = pd.read_csv(root / "new.csv")
    assert len(rec) == 4 and set(rec["source"]) == {"fold_in"} and not {1, 2, 3} & set(rec["item"])
    model = ce.load_model(root / "art")
    expected = ce.recommend_from_ratings(model, pd.DataFrame({"item": [1, 2, 3, 999], "rating": [5.0, 5, 1, 4]}), 4)
    assert rec["item"].tolist() == expected["item"].tolist()


def test_cli_index_stores_an_index_that_recommend_uses(cli_artifact, capsys):
    root, frame = cli_artifact
    code, out, err = run_here(capsys, "index", str(root / "art"), "--index-type", "hnsw", "--threads", "1")
    assert code == 0, err
    assert "items (hnsw), recommend (hnsw)" in out and (snapshot_of(root / "art") / "index-recommend.faiss").is_file()
    code, out, err = run_here(capsys, "recommend", str(root / "art"), "--user", "3", "-k", "5", "-o", str(root / "rec.csv"))
    assert code == 0, err
    rec = pd.read_csv(root / "rec.csv")
    assert len(rec) == 5 and not set(rec["item"]) & set(frame.loc[frame["user"] == 3, "item"])  # seen pairs stored by fit
    assert set(rec.columns) >= {"user", "item", "score", "rank", "source", "title"}
    model = ce.load_model(root / "art")
    assert index_of(model).parts == {"items": "hnsw", "recommend": "hnsw"}
    assert rec["item"].tolist() == ce.recommend(model, [3], k=5)["item"].tolist()
    code, out, err = run_here(capsys, "recommend", str(root / "art"), "--anonymous", "-k", "2")
    assert code == 0 and out.count("unknown_slot") == 2


def test_cli_unknown_or_malformed_ids_are_one_line_errors(cli_artifact, capsys):
    root, _ = cli_artifact
    code, _, err = run_here(capsys, "similar", str(root / "art"), "4242")
    assert code == 2 and err.startswith("collabemb: error: 1 unseen item ID(s): 4242") and len(err.strip().splitlines()) == 1
    code, _, err = run_here(capsys, "recommend", str(root / "art"), "--user", "abc")
    assert code == 2 and "'abc' is not one" in err


def test_cli_recommend_asks_for_seen_pairs_when_the_artifact_has_none(fitted, tmp_path, capsys):
    model, frame = fitted
    ce.save_model(unindexed(model, seen=False), tmp_path / "bare")
    code, _, err = run_here(capsys, "recommend", str(tmp_path / "bare"), "--user", "1")
    assert code == 2 and "--seen FILE" in err and "--include-seen" in err and "exclude_seen" not in err
    frame.to_csv(tmp_path / "seen.csv", index=False)
    code, out, err = run_here(capsys, "recommend", str(tmp_path / "bare"), "--user", "1", "-k", "3", "--seen", str(tmp_path / "seen.csv"))
    assert code == 0, err
    rated = set(frame.loc[frame["user"] == 1, "item"])
    shown = [int(line.split()[1]) for line in out.strip().splitlines()[1:]]
    assert len(shown) == 3 and not rated & set(shown)
