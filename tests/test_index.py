"""SimilarityIndex: exact search against numpy, HNSW recall, recommendations in predict order,
exclusions, unknown IDs, persistence and the stale-index guard, and the CLI."""

from __future__ import annotations

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
from collabemb.index import SeenItems, SimilarityIndex, StaleIndexError
from conftest import planted_ratings

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
    """A small fitted model with its training pairs remembered (module-scoped: never mutated)."""
    frame = planted_ratings(n_users=150, n_items=200, per_user=40, seed=3)
    model = ce.fit(frame, n_factors=8, epochs=6, seed=0, threads=1, progress=False)
    model.set_seen_items(frame)
    return model, frame


def fresh_copy(model: ce.EmbeddingDotBias, tmp_path: Path) -> ce.EmbeddingDotBias:
    model.index = None
    model.save(tmp_path / "copy")
    return ce.load_model(tmp_path / "copy")


# --- exact and approximate search ---------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_exact_index_equals_numpy_top_k_for_every_query(vectors, metric):
    ids, x = vectors
    index = SimilarityIndex.from_vectors(ids, x, kind="exact", metric=metric)
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
    index = SimilarityIndex.from_vectors(ids, x, kind="exact")
    batch = index.similar_items(ids[:20], k=K)
    for raw in ids[:20]:
        one = index.similar_items(int(raw), k=K)
        part = batch[batch["query"] == raw].reset_index(drop=True)
        pd.testing.assert_frame_equal(one, part)


def test_cosine_search_keeps_zero_vectors_finite_and_scores_them_zero(vectors):
    ids, x = vectors
    x = x.copy()
    x[3] = 0.0
    index = SimilarityIndex.from_vectors(ids, x, kind="exact")
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
    exact = SimilarityIndex.from_vectors(ids, x, kind="exact").similar_items(ids[:300], k=K)
    hnsw_index = SimilarityIndex.from_vectors(ids, x, kind="hnsw", ef_search=64, threads=1)
    approx = hnsw_index.similar_items(ids[:300], k=K)
    truth = exact["item"].to_numpy().reshape(-1, K)
    got = approx["item"].to_numpy().reshape(-1, K)
    recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(truth, got, strict=True)])
    assert recall >= 0.95, recall
    assert hnsw_index.parts == {"items": "hnsw"}


def test_every_faiss_index_is_built_with_an_explicit_metric(fitted):
    model, _ = fitted
    for kind in ("exact", "hnsw", "ivf"):
        index = SimilarityIndex(model, kind=kind, threads=1).build("items", "users", "recommend")
        for name in ("items", "users"):
            assert index._parts[name].index.metric_type == faiss.METRIC_INNER_PRODUCT, (kind, name)
        lifted = kind != "exact"
        expected = faiss.METRIC_L2 if lifted else faiss.METRIC_INNER_PRODUCT
        assert index._parts["recommend"].index.metric_type == expected, kind
        assert index._parts["recommend"].index.d == model.n_factors + (2 if lifted else 1)


def test_hnsw_beam_is_never_narrower_than_the_results_asked_for(vectors):
    ids, x = vectors
    exact = SimilarityIndex.from_vectors(ids, x, kind="exact").similar_items(ids[:5], k=200)
    narrow = SimilarityIndex.from_vectors(ids, x, kind="hnsw", ef_search=4, threads=1).similar_items(ids[:5], k=200)
    assert narrow.groupby("query").size().tolist() == [200] * 5
    overlap = np.mean([len(set(exact.item[exact["query"] == q]) & set(narrow.item[narrow["query"] == q])) / 200 for q in ids[:5]])
    assert overlap >= 0.95


def test_default_kind_follows_catalogue_size(vectors):
    ids, x = vectors
    assert SimilarityIndex.from_vectors(ids, x).build("items").parts == {"items": "exact"}
    assert SimilarityIndex.from_vectors(ids, x, exact_max=100, threads=1).build("items").parts == {"items": "hnsw"}


def test_exclude_and_exclude_self_never_cost_results(vectors):
    ids, x = vectors
    index = SimilarityIndex.from_vectors(ids, x, kind="exact")
    plain = index.similar_items(int(ids[0]), k=K)
    banned = plain["item"].tolist()[:7] + [123456789]  # an unseen ID in exclude is ignored
    again = index.similar_items(int(ids[0]), k=K, exclude=banned)
    assert len(again) == K and not set(banned) & set(again["item"])
    assert again["item"].tolist()[:3] == plain["item"].tolist()[7:]
    with_self = index.similar_items(int(ids[0]), k=K, exclude_self=False)
    assert with_self["item"].iloc[0] == ids[0] and with_self["score"].iloc[0] == pytest.approx(1.0, abs=1e-6)


def test_string_ids_in_and_out_and_kinds_never_coerced():
    rng = np.random.default_rng(2)
    ids = np.array([f"tt{i:07d}" for i in rng.permutation(300)], dtype=object)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    index = SimilarityIndex.from_vectors(ids, x, kind="exact")
    out = index.similar_items(["tt0000007", "tt0000011"], k=3)
    top, _ = brute_force(x, x[[list(ids).index("tt0000007"), list(ids).index("tt0000011")]], 4, "cosine")
    assert out["item"].tolist() == [v for row in ids[top][:, 1:] for v in row]
    assert all(type(v) is str for v in out["item"])
    with pytest.raises(TypeError, match="'7' and 7 are different IDs"):
        index.similar_items([7], k=3)


def test_metadata_columns_are_joined_onto_results(vectors):
    ids, x = vectors
    meta = pd.DataFrame({"item": ids[::-1], "title": [f"title of {v}" for v in ids[::-1]]})
    index = SimilarityIndex.from_vectors(ids, x, kind="exact", item_metadata=meta.iloc[:-1])  # one item without a row
    out = index.similar_items(ids, k=3)
    have = out["item"] != ids[0]
    assert (out.loc[have, "title"] == "title of " + out.loc[have, "item"].astype(str)).all()
    assert out.loc[~have, "title"].isna().all()


# --- unknown IDs and fallbacks ---------------------------------------------------------------------


def test_unknown_query_id_is_a_clear_error_naming_the_id_and_the_way_out(fitted):
    model, _ = fitted
    index = SimilarityIndex(model)
    with pytest.raises(ce.UnknownIdError) as err:
        index.similar_items([1, 987654], k=3)
    message = str(err.value)
    assert "987654" in message and "fallback='unknown_slot'" in message and "fold" in message
    with pytest.raises(ce.UnknownIdError, match="unseen user ID"):
        index.recommend([424242], k=3)


def test_fallback_answers_unknown_ids_with_the_trained_unknown_slot(fitted):
    model, _ = fitted
    index = SimilarityIndex(model, kind="exact")
    out = index.similar_items([1, 987654], k=3, fallback="unknown_slot")
    assert out["source"].tolist() == ["known"] * 3 + ["unknown_slot"] * 3
    q0 = model.i_weight.weight.detach().numpy()[0:1]
    top, _ = brute_force(model.i_weight.weight.detach().numpy()[1:], q0, 3, "cosine")
    assert out["item"].tolist()[3:] == model.items.decode(top[0] + 1).tolist()
    rec = index.recommend([424242], k=5, fallback="unknown_slot")
    anonymous = index.recommend(None, k=5)
    assert rec["item"].tolist() == anonymous["item"].tolist()
    assert set(rec["source"]) == {"unknown_slot"} and anonymous["user"].isna().all()
    pred = model.predict(np.full(len(model.items), 424242), model.items.ids)["prediction"].to_numpy()
    assert rec["item"].tolist() == model.items.ids[np.argsort(-pred, kind="stable")[:5]].tolist()


def test_vectors_without_an_unknown_slot_refuse_the_fallback(vectors):
    ids, x = vectors
    with pytest.raises(ValueError, match="no trained unknown item"):
        SimilarityIndex.from_vectors(ids, x).similar_items([-1], fallback="unknown_slot")


def test_unseen_item_described_by_known_items_is_searched_from_their_mean(fitted):
    model, _ = fitted
    index = SimilarityIndex(model, kind="exact")
    like = [1, 2, 3]
    out = index.similar_items(-5, k=K, like={-5: like})
    w = model.i_weight.weight.detach().numpy()
    mean = w[model.items.encode(like)].mean(axis=0, keepdims=True)
    candidates = np.setdiff1d(np.arange(1, len(model.items) + 1), model.items.encode(like))
    top, scores = brute_force(w[candidates], mean, K, "cosine")
    assert out["item"].tolist() == model.items.decode(candidates[top[0]]).tolist()
    np.testing.assert_allclose(out["score"], scores[0], atol=1e-5)
    assert set(out["source"]) == {"mean_of_items"}


# --- recommendations ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_recommend_equals_argsort_of_predict_over_all_items(fitted, kind):
    model, _ = fitted
    index = SimilarityIndex(model, kind=kind, threads=1)
    users = [1, 7, 42, 99, 150]
    out = index.recommend(users, k=K, exclude_seen=False)
    for user in users:
        pred = model.predict(np.full(len(model.items), user), model.items.ids)["prediction"].to_numpy()
        order = np.argsort(-pred, kind="stable")[:K]
        mine = out[out["user"] == user]
        assert mine["item"].tolist() == model.items.ids[order].tolist(), (kind, user)
        np.testing.assert_allclose(mine["score"], pred[order], rtol=1e-6, atol=1e-5)


def test_recommend_never_returns_seen_items_and_still_returns_k(fitted):
    model, frame = fitted
    index = SimilarityIndex(model, kind="exact")
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


def test_seen_items_can_be_passed_instead_of_stored(fitted):
    model, frame = fitted
    index = SimilarityIndex(model, kind="exact")
    stored = index.recommend([3, 4], k=K)
    given = index.recommend([3, 4], k=K, seen=frame)
    pd.testing.assert_frame_equal(stored, given)


def test_exclude_seen_without_any_record_of_what_was_seen_is_refused(fitted, tmp_path):
    model, _ = fitted
    bare = fresh_copy(model, tmp_path)
    bare.seen_items = None
    with pytest.raises(ValueError, match="set_seen_items"):
        SimilarityIndex(bare).recommend([1], k=3)
    assert len(SimilarityIndex(bare).recommend([1], k=3, exclude_seen=False)) == 3


def test_a_user_who_saw_almost_everything_gets_the_rest(fitted, tmp_path):
    model, frame = fitted
    model = fresh_copy(model, tmp_path)
    items = model.items.ids
    heavy = pd.DataFrame({"user": 1, "item": items[: len(items) - 4], "rating": 3.0})
    model.set_seen_items(pd.concat([frame, heavy], ignore_index=True))
    out = model.recommend([1], k=K)
    assert sorted(out["item"]) == sorted(items[-4:])


def test_seen_items_csr_round_trips_pairs(fitted):
    model, frame = fitted
    seen = SeenItems.from_ratings(model, frame)
    query, rows = seen.items_of(model.users.encode([5, 6]))
    pairs = set(zip(np.array([5, 6])[query], model.items.decode(rows), strict=True))
    expected = set(frame.loc[frame["user"].isin([5, 6]), ["user", "item"]].itertuples(index=False, name=None))
    assert pairs == expected
    assert seen.indices.dtype == np.int32 and len(seen) == len(frame)


# --- persistence -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_save_and_load_give_the_same_results(fitted, tmp_path, kind):
    model, _ = fitted
    model = fresh_copy(model, tmp_path)
    model.build_index(kind=kind, parts=("items", "users", "recommend"), threads=1)
    before = (model.similar_items([1, 2], k=K), model.similar_users([3], k=K), model.recommend([4, 5], k=K))
    model.save(tmp_path / "art")
    config = json.loads((tmp_path / "art" / "config.json").read_text())
    assert set(config["index"]["parts"]) == {"items", "users", "recommend"}
    assert (tmp_path / "art" / "seen_items.npy").is_file()
    loaded = ce.load_model(tmp_path / "art")
    assert loaded.index.parts == {"items": kind, "users": kind, "recommend": kind}
    after = (loaded.similar_items([1, 2], k=K), loaded.similar_users([3], k=K), loaded.recommend([4, 5], k=K))
    for b, a in zip(before, after, strict=True):
        pd.testing.assert_frame_equal(b, a)
    assert np.load(tmp_path / "art" / "seen_indptr.npy", allow_pickle=False).dtype == np.int64


def test_artifact_without_index_or_seen_items_still_loads(fitted, tmp_path):
    model, _ = fitted
    model = fresh_copy(model, tmp_path)
    model.seen_items = None
    model.save(tmp_path / "plain")
    config = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert "index" not in config and "seen_items" not in config
    loaded = ce.load_model(tmp_path / "plain")
    assert loaded.index is None and loaded.seen_items is None
    assert len(loaded.similar_items([1], k=3)) == 3  # builds one on first use


def test_index_copied_from_another_artifact_is_refused(fitted, tmp_path):
    model, frame = fitted
    other = ce.fit(frame, n_factors=8, epochs=6, seed=1, threads=1, progress=False)  # same IDs, other vectors
    for m, name in ((fresh_copy(model, tmp_path), "a"), (other, "b")):
        m.build_index(kind="exact")
        m.save(tmp_path / name)
    config_a = json.loads((tmp_path / "a" / "config.json").read_text())
    config_b = json.loads((tmp_path / "b" / "config.json").read_text())
    for part in ("items", "recommend"):
        shutil.copy(tmp_path / "a" / f"index-{part}.faiss", tmp_path / "b" / f"index-{part}.faiss")
    config_b["index"] = config_a["index"]
    (tmp_path / "b" / "config.json").write_text(json.dumps(config_b))
    with pytest.raises(StaleIndexError, match="other item vectors.*rebuild"):
        ce.load_model(tmp_path / "b")


def test_index_for_another_registry_is_refused(fitted, tmp_path):
    model, frame = fitted
    model.index = None
    small = ce.fit(frame[frame["item"] <= 150], n_factors=8, epochs=2, threads=1, progress=False)
    small.build_index(kind="exact")
    small.save(tmp_path / "small")
    model.save(tmp_path / "big")
    config = json.loads((tmp_path / "big" / "config.json").read_text())
    config["index"] = json.loads((tmp_path / "small" / "config.json").read_text())["index"]
    (tmp_path / "big" / "config.json").write_text(json.dumps(config))
    for part in ("items", "recommend"):
        shutil.copy(tmp_path / "small" / f"index-{part}.faiss", tmp_path / "big" / f"index-{part}.faiss")
    with pytest.raises(StaleIndexError, match="another item registry"):
        ce.load_model(tmp_path / "big")


def test_ids_added_behind_the_index_make_it_stale_until_rebuilt(fitted, tmp_path):
    model, _ = fitted
    model = fresh_copy(model, tmp_path)
    model.build_index(kind="exact")
    model.items.add([99999])
    with torch.no_grad():  # grow the tables by hand, as something other than fold-in might
        model.i_weight = torch.nn.Embedding.from_pretrained(torch.cat([model.i_weight.weight, torch.zeros(1, model.n_factors)]), freeze=False)
        model.i_bias = torch.nn.Embedding.from_pretrained(torch.cat([model.i_bias.weight, torch.zeros(1, 1)]), freeze=False)
    with pytest.raises(StaleIndexError, match="rebuild it"):
        model.similar_items([1], k=3)
    model.build_index(kind="exact")
    assert len(model.similar_items([1], k=3)) == 3


def test_saving_refuses_an_index_whose_model_changed_after_building(fitted, tmp_path):
    model, _ = fitted
    model = fresh_copy(model, tmp_path)
    model.build_index(kind="exact")
    with torch.no_grad():
        model.i_weight.weight[1] += 1.0
    with pytest.raises(StaleIndexError, match="changed after"):
        model.save(tmp_path / "changed")
    assert not (tmp_path / "changed").exists()


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
    result = run("fit", str(root / "ratings.csv"), "--out", str(root / "art"), "--items", str(root / "items.csv"),
                 "--epochs", "3", "--factors", "4", "--threads", "1", "--no-progress")
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
    expected = SimilarityIndex(model).recommend_from_ratings(pd.DataFrame({"item": [1, 2, 3, 999], "rating": [5.0, 5, 1, 4]}), 4)
    assert rec["item"].tolist() == expected["item"].tolist()


def test_cli_index_stores_an_index_that_recommend_uses(cli_artifact, capsys):
    root, frame = cli_artifact
    code, out, err = run_here(capsys, "index", str(root / "art"), "--kind", "hnsw", "--threads", "1")
    assert code == 0, err
    assert "items (hnsw), recommend (hnsw)" in out and (root / "art" / "index-recommend.faiss").is_file()
    code, out, err = run_here(capsys, "recommend", str(root / "art"), "--user", "3", "-k", "5", "-o", str(root / "rec.csv"))
    assert code == 0, err
    rec = pd.read_csv(root / "rec.csv")
    assert len(rec) == 5 and not set(rec["item"]) & set(frame.loc[frame["user"] == 3, "item"])  # seen pairs stored by fit
    assert set(rec.columns) >= {"user", "item", "score", "rank", "source", "title"}
    model = ce.load_model(root / "art")
    assert model.index.parts == {"items": "hnsw", "recommend": "hnsw"}
    assert rec["item"].tolist() == model.recommend([3], k=5)["item"].tolist()
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
    bare = fresh_copy(model, tmp_path)
    bare.seen_items = None
    bare.save(tmp_path / "bare")
    code, _, err = run_here(capsys, "recommend", str(tmp_path / "bare"), "--user", "1")
    assert code == 2 and "--seen RATINGS or --include-seen" in err
    frame.to_csv(tmp_path / "seen.csv", index=False)
    code, out, err = run_here(capsys, "recommend", str(tmp_path / "bare"), "--user", "1", "-k", "3", "--seen", str(tmp_path / "seen.csv"))
    assert code == 0, err
    rated = set(frame.loc[frame["user"] == 1, "item"])
    shown = [int(line.split()[1]) for line in out.strip().splitlines()[1:]]
    assert len(shown) == 3 and not rated & set(shown)
