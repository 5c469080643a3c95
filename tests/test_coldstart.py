"""Cold start: fold-in recovers planted vectors and minimises the training objective; new IDs
added to the registry, tables, seen items and index (a stored one too); the unknown-slot and
mean-of-items paths; IDs never coerced; fold-ins refused where they do not apply."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import collabemb as ce
from collabemb.coldstart import FoldIn, fold_in_items, fold_in_items_like, fold_in_users, recommend_from_ratings, solve_one
from collabemb.fitted import ModelIdentity, StoredIndex
from collabemb.index import SimilarityIndex
from collabemb.registry import IdRegistry

from conftest import planted_ratings

Y_RANGE = (0.6, 5.4)


def planted_model(n_users: int = 40, n_items: int = 300, k: int = 6, seed: int = 0) -> ce.FittedModel:
    """A rating model whose tables are set by hand (no training), so the right answer is known."""
    rng = np.random.default_rng(seed)
    users, items = IdRegistry(np.arange(1, n_users + 1), name="user"), IdRegistry(np.arange(1, n_items + 1), name="item")
    module = ce.EmbeddingDotBias(users, items, n_factors=k, y_range=Y_RANGE)
    with torch.no_grad():
        module.u_weight.weight.copy_(torch.from_numpy(rng.normal(0, 0.5, (n_users + 1, k)).astype(np.float32)))
        module.i_weight.weight.copy_(torch.from_numpy(rng.normal(0, 0.5, (n_items + 1, k)).astype(np.float32)))
        module.u_bias.weight.copy_(torch.from_numpy(rng.normal(0, 0.3, (n_users + 1, 1)).astype(np.float32)))
        module.i_bias.weight.copy_(torch.from_numpy(rng.normal(0, 0.3, (n_items + 1, 1)).astype(np.float32)))
    return ce.FittedModel(module, ModelIdentity("rating", "trained", weight_decay=0.05))


def table(model: ce.FittedModel, name: str) -> np.ndarray:
    """One of the module's four tables as numpy (``u_weight``, ``i_weight``, ``u_bias``, ``i_bias``)."""
    return getattr(model.module, name).weight.detach().numpy()


def exact_ratings(model: ce.FittedModel, items: np.ndarray, vector: np.ndarray, bias: float) -> np.ndarray:
    """Noise-free ratings of ``items`` by a user with ``vector`` and ``bias``, through the model's link."""
    w = model.weight(items, "item").astype(np.float64)
    z = w @ vector + bias + model.bias(items, "item")
    lo, hi = model.y_range
    return lo + (hi - lo) / (1 + np.exp(-z))


def test_fold_in_recovers_a_planted_user_vector_and_bias():
    model = planted_model()
    rng = np.random.default_rng(1)
    p, b = rng.normal(0, 0.5, 6), 0.4
    items = rng.choice(np.arange(1, 301), 120, replace=False)
    ratings = pd.DataFrame({"user": "new", "item": items, "rating": exact_ratings(model, items, p, b)})
    fold = fold_in_users(model, ratings, weight_decay=1e-9)
    np.testing.assert_allclose(fold.vectors[0], p, atol=1e-3)
    assert fold.biases[0] == pytest.approx(b, abs=1e-3)
    assert fold.converged.all() and fold.iterations[0] <= 15
    assert fold.source.tolist() == ["fold_in"] and fold.ids.tolist() == ["new"]


def test_fold_in_recovers_a_planted_item_vector_from_known_users():
    model = planted_model(n_users=200, n_items=30)
    rng = np.random.default_rng(2)
    q, b = rng.normal(0, 0.5, 6), -0.3
    users = rng.choice(np.arange(1, 201), 150, replace=False)
    w = model.weight(users, "user").astype(np.float64)
    z = w @ q + b + model.bias(users, "user")
    ratings = pd.DataFrame({"user": users, "item": 777, "rating": 0.6 + 4.8 / (1 + np.exp(-z))})
    fold = fold_in_items(model, ratings, weight_decay=1e-9)
    assert fold.table == "item" and fold.ids.tolist() == [777]
    np.testing.assert_allclose(fold.vectors[0], q, atol=1e-3)
    assert fold.biases[0] == pytest.approx(b, abs=1e-3)


def test_fold_in_minimises_the_training_objective_with_the_models_weight_decay():
    """The solution is where the gradient of sum (r - y)^2 + wd * n * |v|^2 vanishes (bias unpenalised)."""
    model = planted_model()
    rng = np.random.default_rng(3)
    items = rng.choice(np.arange(1, 301), 12, replace=False)
    r = rng.integers(1, 6, len(items)).astype(np.float64)
    fold = fold_in_users(model, pd.DataFrame({"item": items, "rating": r}))  # weight_decay from the identity: 0.05
    wd, n = 0.05, len(items)
    v = torch.tensor(fold.vectors[0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor(float(fold.biases[0]), dtype=torch.float64, requires_grad=True)
    w = torch.from_numpy(model.weight(items, "item").astype(np.float64))
    bi = torch.from_numpy(model.bias(items, "item").astype(np.float64))
    y = 0.6 + 4.8 * torch.sigmoid(w @ v + b + bi)
    loss = ((torch.from_numpy(r) - y) ** 2).sum() + wd * n * (v * v).sum()
    loss.backward()
    assert float(v.grad.abs().max()) < 1e-4 and abs(float(b.grad)) < 1e-4
    # and a different weight decay gives a different (smaller) vector
    stronger = fold_in_users(model, pd.DataFrame({"item": items, "rating": r}), weight_decay=1.0)
    assert np.linalg.norm(stronger.vectors[0]) < np.linalg.norm(fold.vectors[0])


def test_solver_handles_saturated_ratings_without_nan():
    model = planted_model()
    items = np.arange(1, 6)
    v, b, _, _ = solve_one(model.weight(items, "item"), model.bias(items, "item"), np.full(5, 5.4), weight_decay=0.1, y_range=Y_RANGE)
    assert np.isfinite(v).all() and np.isfinite(b) and b > 3


def test_weight_decay_must_come_from_the_model_or_the_caller():
    model = planted_model()
    model.identity = ModelIdentity("rating", "trained")  # no weight_decay recorded
    with pytest.raises(ValueError, match="pass weight_decay="):
        fold_in_users(model, pd.DataFrame({"item": [1, 2], "rating": [4.0, 5.0]}))
    assert len(fold_in_users(model, pd.DataFrame({"item": [1, 2], "rating": [4.0, 5.0]}), weight_decay=0.1)) == 1


def test_fold_in_matches_what_training_learns_for_a_user_on_generated_data():
    """Refolding a trained user from their own ratings lands close to their trained vector's predictions."""
    frame = planted_ratings(n_users=120, n_items=80, per_user=30, seed=5)
    model = ce.fit(frame, n_factors=8, epochs=10, seed=0, threads=1, progress=False)
    mine = frame[frame["user"] == 7]
    fold = fold_in_users(model, mine[["item", "rating"]])
    trained = model.predict(np.full(80, 7), np.arange(1, 81))["prediction"].to_numpy()
    folded = fold.predict(model, np.arange(1, 81))
    assert np.corrcoef(trained, folded)[0, 1] > 0.95
    assert np.sqrt(np.mean((folded - trained) ** 2)) < 0.25


def test_unknown_items_are_skipped_and_a_user_with_none_known_gets_the_unknown_slot():
    model = planted_model()
    ratings = pd.DataFrame({"user": ["a", "a", "a", "b"], "item": [1, 2, 9999, 8888], "rating": [5.0, 4.0, 1.0, 3.0]})
    fold = fold_in_users(model, ratings)
    frame = fold.to_frame()
    assert frame["user"].tolist() == ["a", "b"]
    assert frame["n_ratings"].tolist() == [2, 0] and frame["n_ignored"].tolist() == [1, 1]
    assert frame["source"].tolist() == ["fold_in", "unknown_slot"]
    np.testing.assert_array_equal(fold.vectors[1], table(model, "u_weight")[0])
    assert fold.rated_rows.tolist() == model.items.encode([1, 2]).tolist() and fold.rated_query.tolist() == [0, 0]


def test_add_makes_a_new_user_searchable_predictable_and_savable(tmp_path):
    frame = planted_ratings(n_users=60, n_items=70, per_user=25, seed=6)
    model = ce.fit(frame, n_factors=6, epochs=4, seed=0, threads=1, progress=False)
    ce.build_index(model, index_type="exact")
    users_before = model.users
    rows_before = model.users.encode([1, 60]).tolist()
    liked = pd.DataFrame({"user": 5000, "item": [3, 4, 5, 6], "rating": [5.0, 5.0, 4.0, 1.0]})
    fold = fold_in_users(model, liked, add=True)
    assert fold.rows.tolist() == [61] and model.users.encode([5000]).tolist() == [61]
    assert model.users.encode([1, 60]).tolist() == rows_before  # rows never move
    assert 5000 not in users_before and len(users_before) == 60  # the old registry is not changed under its holders
    assert table(model, "u_weight").shape == (62, 6) and table(model, "u_bias").shape == (62, 1)
    np.testing.assert_allclose(model.weight([5000], "user")[0], fold.vectors[0])
    np.testing.assert_allclose(model.predict([5000] * 3, [10, 11, 12])["prediction"], fold.predict(model, [10, 11, 12]), rtol=1e-5)
    seen_query, seen_rows = model.seen_items.items_of(model.users.encode([5000]))
    assert sorted(model.items.decode(seen_rows).tolist()) == [3, 4, 5, 6] and set(seen_query.tolist()) == {0}
    rec = ce.recommend(model, [5000], k=5)
    assert len(rec) == 5 and not {3, 4, 5, 6} & set(rec["item"]) and set(rec["source"]) == {"known"}
    assert recommend_from_ratings(model.index, liked.drop(columns="user"), k=5)["item"].tolist() == rec["item"].tolist()
    ce.save_model(model, tmp_path / "grown")
    loaded = ce.load_model(tmp_path / "grown")
    pd.testing.assert_frame_equal(ce.recommend(loaded, [5000], k=5), rec)
    assert 5000 in loaded.users


def test_add_refuses_ids_the_model_already_knows_and_anonymous_ratings():
    model = planted_model()
    with pytest.raises(ValueError, match="already known"):
        fold_in_users(model, pd.DataFrame({"user": [3], "item": [1], "rating": [4.0]}), add=True)
    with pytest.raises(ValueError, match="needs user IDs"):
        fold_in_users(model, pd.DataFrame({"item": [1], "rating": [4.0]}), add=True)


def test_new_item_added_by_fold_in_becomes_a_neighbour_and_a_recommendation():
    model = planted_model(n_users=100, n_items=60)
    ce.build_index(model, index_type="exact", parts=("items", "recommend"))
    twin = 10
    users = np.arange(1, 101)
    w = model.weight(users, "user").astype(np.float64)
    z = w @ model.weight([twin], "item")[0] + model.bias([twin], "item")[0] + model.bias(users, "user")
    ratings = pd.DataFrame({"user": users, "item": "not-an-int", "rating": 0.6 + 4.8 / (1 + np.exp(-z))})
    with pytest.raises(TypeError):  # the registry holds int item IDs
        fold_in_items(model, ratings, add=True, weight_decay=1e-9)
    assert len(model.items) == 60 and model.index.parts == {"items": "exact", "recommend": "exact"}  # nothing half-added
    fold = fold_in_items(model, ratings.assign(item=900), add=True, weight_decay=1e-9)
    assert fold.rows.tolist() == [61]
    near = ce.similar_items(model, [twin], k=1)
    assert near["item"].tolist() == [900] and near["score"].iloc[0] == pytest.approx(1.0, abs=1e-4)
    ranking = ce.recommend(model, [int(np.argmax(z)) + 1], k=61, exclude_seen=False)  # every item
    scores = dict(zip(ranking["item"], ranking["score"], strict=True))
    assert scores[900] == pytest.approx(scores[twin], abs=1e-4)  # recommended exactly where its twin is
    assert abs(ranking.set_index("item").loc[900, "rank"] - ranking.set_index("item").loc[twin, "rank"]) == 1


def test_item_described_by_known_items_is_their_mean_and_can_be_added():
    model = planted_model()
    fold = fold_in_items_like(model, {1000: [1, 2, 3], 1001: 4})
    w = table(model, "i_weight")
    np.testing.assert_allclose(fold.vectors[0], w[[1, 2, 3]].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(fold.vectors[1], w[4])
    assert fold.biases[0] == pytest.approx(table(model, "i_bias")[[1, 2, 3], 0].mean(), rel=1e-6)
    assert fold.source.tolist() == ["mean_of_items"] * 2
    with pytest.raises(ce.UnknownIdError):
        fold_in_items_like(model, {1002: [1, 424242]})
    with pytest.raises(ValueError, match="already known"):
        fold_in_items_like(model, {5: [1, 2]}, add=True)
    with pytest.raises(TypeError):
        fold_in_items_like(model, {1002: ["1"]})
    index = ce.build_index(model, index_type="exact", parts=("items",))
    fold_in_items_like(model, {1000: [1, 2, 3]}, add=True)
    assert 1000 in model.items and index.parts == {"items": "exact"}
    assert len(index.similar_items([1000], k=3)) == 3
    assert len(model.seen_items) == 0  # describing items are not ratings


def test_anonymous_ratings_file_without_a_user_column(tmp_path):
    model = planted_model()
    path = tmp_path / "me.tsv"
    path.write_text("item\trating\n1\t5\n2\t4\n2\t1\n")  # a repeated item keeps its last rating
    fold = fold_in_users(model, path)
    assert fold.ids is None and fold.n_ratings.tolist() == [2]
    same = fold_in_users(model, pd.DataFrame({"item": [1, 2], "rating": [5.0, 1.0]}))
    np.testing.assert_allclose(fold.vectors, same.vectors)


def test_recommend_from_ratings_for_several_new_users_in_one_call():
    model = planted_model(n_users=50, n_items=80)
    index = SimilarityIndex(model, index_type="exact")
    ratings = pd.DataFrame({"user": ["a"] * 3 + ["b"] * 2 + ["c"], "item": [1, 2, 3, 4, 5, 9999], "rating": [5.0, 4, 2, 1, 5, 3]})
    out = recommend_from_ratings(index, ratings, k=4)
    assert out.groupby("user", sort=False).size().to_dict() == {"a": 4, "b": 4, "c": 4}
    assert out.groupby("user", sort=False)["source"].first().to_dict() == {"a": "fold_in", "b": "fold_in", "c": "unknown_slot"}
    assert not {1, 2, 3} & set(out.loc[out["user"] == "a", "item"])
    fold = fold_in_users(model, ratings)
    pred = fold.predict(model, model.items.ids, of=np.zeros(80, dtype=np.int64))
    top = model.items.ids[[i for i in np.argsort(-pred, kind="stable") if model.items.ids[i] not in (1, 2, 3)][:4]]
    assert out.loc[out["user"] == "a", "item"].tolist() == top.tolist()
    pd.testing.assert_frame_equal(recommend_from_ratings(model, ratings, k=4), out)  # through index_of(model)
    assert model.index.parts == {"recommend": "exact"} and len(model.users) == 50  # add=False: the model is unchanged
    everything = recommend_from_ratings(index, ratings, k=4, exclude_seen=False)
    assert everything.loc[everything["user"] == "a", "item"].tolist() == model.items.ids[np.argsort(-pred, kind="stable")[:4]].tolist()


def test_implicit_feedback_models_are_pointed_elsewhere():
    model = planted_model()
    model.identity = ModelIdentity("als", "mean", regularization=1.0, alpha=1.0)
    with pytest.raises(ValueError, match="fold_in_als"):
        fold_in_users(model, pd.DataFrame({"item": [1], "rating": [1.0]}))
    model.identity = ModelIdentity("bpr", "mean")
    with pytest.raises(ValueError, match="'bpr' model has no fold-in") as err:
        fold_in_items(model, pd.DataFrame({"user": [1], "rating": [1.0]}))
    assert "fold_in_als" not in str(err.value)


def test_counterpart_ids_of_the_other_type_raise_instead_of_being_skipped():
    model = planted_model()
    with pytest.raises(TypeError, match="'7' and 7 are different IDs"):
        fold_in_users(model, pd.DataFrame({"item": ["1", "2"], "rating": [5.0, 4.0]}))
    with pytest.raises(TypeError):
        fold_in_items(model, pd.DataFrame({"user": ["1"], "item": [900], "rating": [5.0]}))
    fold = fold_in_users(model, pd.DataFrame({"item": [1], "rating": [5.0]}))
    assert isinstance(fold, FoldIn) and fold.table == "user"
    with pytest.raises(TypeError):
        fold.predict(model, ["1"])


def test_a_ratings_file_is_read_with_the_models_id_type(tmp_path):
    frame = planted_ratings(n_users=30, n_items=20, per_user=10, seed=7)
    frame["user"], frame["item"] = frame["user"].astype(str), frame["item"].astype(str)  # str IDs that look like ints
    model = ce.fit(frame, n_factors=4, epochs=2, seed=0, threads=1, progress=False)
    assert model.items.id_type == "str"
    (tmp_path / "new.csv").write_text("user,item,rating\n900,1,5\n900,2,4\n")
    fold = fold_in_users(model, tmp_path / "new.csv")
    assert fold.ids.tolist() == ["900"] and fold.n_ratings.tolist() == [2]
    (tmp_path / "me.csv").write_text("item,rating\n1,5\n2,4\n")
    np.testing.assert_allclose(fold_in_users(model, tmp_path / "me.csv").vectors, fold.vectors)
    with pytest.raises(TypeError):  # a DataFrame's Python ints are not the model's str IDs
        fold_in_users(model, pd.DataFrame({"item": [1, 2], "rating": [5.0, 4.0]}))


def test_add_to_a_loaded_model_extends_its_stored_index(tmp_path):
    frame = planted_ratings(n_users=50, n_items=60, per_user=20, seed=11)
    model = ce.fit(frame, n_factors=6, epochs=3, seed=0, threads=1, progress=False)
    ce.build_index(model, index_type="hnsw", parts=("items", "recommend"), threads=1)
    ce.save_model(model, tmp_path / "art")
    loaded = ce.load_model(tmp_path / "art")
    assert isinstance(loaded.index, StoredIndex)
    liked = pd.DataFrame({"user": [7001, 7001, 7002], "item": [3, 4, 5], "rating": [5.0, 4.0, 2.0]})
    fold = fold_in_users(loaded, liked, add=True)
    assert isinstance(loaded.index, SimilarityIndex) and loaded.index.parts == {"items": "hnsw", "recommend": "hnsw"}
    rec = ce.recommend(loaded, [7001, 7002], k=5)
    assert len(rec) == 10 and not {3, 4} & set(rec.loc[rec["user"] == 7001, "item"])
    for user in fold.ids:  # the predicted ratings of each new user's five best unrated items
        pred = loaded.predict(np.full(len(loaded.items), user), loaded.items.ids)["prediction"].to_numpy()
        unrated = ~np.isin(loaded.items.ids, liked.loc[liked["user"] == user, "item"])
        np.testing.assert_allclose(rec.loc[rec["user"] == user, "score"], np.sort(pred[unrated])[::-1][:5], rtol=1e-5)
    other = SimilarityIndex(loaded, index_type="exact").build("items")
    fold_in_items_like(loaded, {9001: [1, 2]}, add=True, index=other)
    assert other.parts == {"items": "exact"} and 9001 in set(other.similar_items([1], k=len(loaded.items) - 1)["item"])
    assert 9001 in set(ce.similar_items(loaded, [1], k=len(loaded.items) - 1)["item"])
    ce.save_model(loaded, tmp_path / "grown")
    again = ce.load_model(tmp_path / "grown")
    pd.testing.assert_frame_equal(ce.recommend(again, [7001, 7002], k=5), rec)


def test_index_of_another_model_is_refused_before_anything_is_added():
    model, stranger = planted_model(), planted_model(seed=1)
    with pytest.raises(ValueError, match="another model"):
        fold_in_users(model, pd.DataFrame({"user": [900], "item": [1], "rating": [5.0]}), add=True, index=SimilarityIndex(stranger))
    assert 900 not in model.users
