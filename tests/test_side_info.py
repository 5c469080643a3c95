"""Side information: the ridge map recovers vectors and biases planted as a linear function of
features; the encoding of flags, categories, numbers with gaps, multi-valued and free-text columns;
unseen values ignored; fold-ins and predict placing new items (and users) from their metadata; the
errors; and on a real fit, side-info placement beats the mean item for held-out items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import collabemb as ce
from collabemb.coldstart import fold_in_items, fold_in_users
from collabemb.fitted import ModelIdentity
from collabemb.registry import IdRegistry, UnknownIdError
from collabemb.side_info import RIDGE_GRID, FeatureEncoding, SideInfoMap, side_info_map

Y_RANGE = (0.6, 5.4)
K = 4
KINDS = np.array(["drama", "comedy", "horror"])
TAGS = np.array(["space", "love", "war", "robots", "music"])


def planted_features(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Item metadata: a categorical, a multi-valued tag column, a year with gaps, a 0/1 flag, a free-text title."""
    tags = ["|".join(TAGS[rng.random(len(TAGS)) < 0.35]) for _ in range(n)]
    year = rng.integers(1950, 2020, n).astype(float)
    year[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "kind": rng.choice(KINDS, n),
            "tags": tags,
            "year": pd.array(year, dtype="Float64"),
            "colour": rng.integers(0, 2, n),
            "title": [f"film number {i} {rng.integers(1_000_000)}" for i in range(n)],
        }
    )


def planted_truth(meta: pd.DataFrame, seed: int = 7) -> np.ndarray:
    """(n, K + 1) [vector, bias]: a fixed linear function of the features (a missing year adds its own term)."""
    rng = np.random.default_rng(seed)
    per_kind, per_tag = rng.normal(0, 0.6, (len(KINDS), K + 1)), rng.normal(0, 0.5, (len(TAGS), K + 1))
    per_decade, if_missing, colour, base = (
        rng.normal(0, 0.3, K + 1),
        rng.normal(0, 0.5, K + 1),
        rng.normal(0, 0.4, K + 1),
        rng.normal(0, 0.2, K + 1),
    )
    kind = (meta["kind"].to_numpy()[:, None] == KINDS).astype(float)
    tags = np.array([[t in set(s.split("|")) for t in TAGS] for s in meta["tags"]], dtype=float)
    year = meta["year"].to_numpy(dtype=float, na_value=np.nan)
    decades = np.where(np.isnan(year), 0.0, (year - 1985) / 10)
    missing = np.isnan(year).astype(float)
    return (
        base
        + kind @ per_kind
        + tags @ per_tag
        + decades[:, None] * per_decade
        + missing[:, None] * if_missing
        + meta["colour"].to_numpy()[:, None] * colour
    )


def planted_model(n_items: int = 400, n_new: int = 40, n_users: int = 30, noise: float = 0.01, seed: int = 0):
    """A model whose known items' [vector, bias] are the planted function of their metadata plus
    small noise; returns the model (metadata stored for known and new items) and the new items' truth."""
    rng = np.random.default_rng(seed)
    meta = planted_features(n_items + n_new, rng)
    meta.insert(0, "item", np.arange(1, n_items + n_new + 1))
    truth = planted_truth(meta)
    users, items = IdRegistry(np.arange(1, n_users + 1), name="user"), IdRegistry(np.arange(1, n_items + 1), name="item")
    module = ce.EmbeddingDotBias(users, items, n_factors=K, y_range=Y_RANGE)
    known = truth[:n_items] + rng.normal(0, noise, (n_items, K + 1))
    with torch.no_grad():
        module.i_weight.weight[1:] = torch.from_numpy(known[:, :K].astype(np.float32))
        module.i_bias.weight[1:, 0] = torch.from_numpy(known[:, K].astype(np.float32))
        module.u_weight.weight.copy_(torch.from_numpy(rng.normal(0, 0.5, (n_users + 1, K)).astype(np.float32)))
        module.u_bias.weight.copy_(torch.from_numpy(rng.normal(0, 0.3, (n_users + 1, 1)).astype(np.float32)))
    model = ce.FittedModel(module, ModelIdentity("rating", "trained", weight_decay=0.05))
    model.set_item_metadata(meta)
    return model, meta.iloc[n_items:].reset_index(drop=True), truth[n_items:]


def link(z: np.ndarray) -> np.ndarray:
    lo, hi = Y_RANGE
    return lo + (hi - lo) / (1 + np.exp(-z))


# --- the map ---------------------------------------------------------------------------------------


def test_map_recovers_vectors_and_biases_planted_as_a_linear_function_of_features():
    model, new, truth = planted_model()
    side = SideInfoMap.fit(model)  # the stored metadata; its rows of new items are not trained on
    assert side.n_train == 400 and side.weighting == "uniform"  # the hand-set model records no training pairs
    vectors, biases = side.vectors(new)
    placed = np.hstack([vectors, biases[:, None]])
    assert vectors.shape == (40, K) and vectors.dtype == np.float32 and biases.dtype == np.float32
    assert np.abs(placed - truth).max() < 0.05
    assert 1 - ((placed - truth) ** 2).sum() / ((truth - truth.mean(0)) ** 2).sum() > 0.99
    assert side.r2 > 0.95 and side.encoding.ignored == ("title",)
    assert len(side.loo_error) == len(RIDGE_GRID) and side.ridge in side.ridge_grid
    assert side.ridge == side.ridge_grid[np.argmin(side.loo_error)]


def test_ridge_search_is_deterministic_and_picks_more_shrinkage_for_noisier_targets():
    quiet, noisy = planted_model(noise=0.01)[0], planted_model(noise=1.0)[0]
    a, b = SideInfoMap.fit(quiet), SideInfoMap.fit(quiet)
    np.testing.assert_array_equal(a.coef, b.coef)
    assert a.ridge == b.ridge
    assert SideInfoMap.fit(noisy).ridge > a.ridge
    fixed = SideInfoMap.fit(quiet, ridge=123.0)
    assert fixed.ridge == 123.0 and not np.allclose(fixed.coef, a.coef)


def test_rows_are_weighted_by_their_training_ratings_when_the_model_records_them():
    model, new, _ = planted_model()
    rng = np.random.default_rng(3)
    popular = np.repeat(np.arange(1, 401), np.where(np.arange(1, 401) <= 20, 30, 1))
    model.seen_items = ce.SeenItems.from_rows(rng.integers(1, 31, len(popular)), popular, model.users.n_rows)
    weighted, uniform = SideInfoMap.fit(model), SideInfoMap.fit(model, weighting="uniform")
    assert weighted.weighting == "ratings" and uniform.weighting == "uniform"
    assert not np.allclose(weighted.intercept, uniform.intercept)
    with pytest.raises(ValueError, match="weighting must be"):
        SideInfoMap.fit(model, weighting="popular")


# --- the encoding ----------------------------------------------------------------------------------


def encoding_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item": [1, 2, 3, 4],
            "flag": [0, 1, 1, 0],
            "seen": [True, False, True, True],
            "kind": ["a", "b", "a", "a"],
            "year": [1990.0, np.nan, 2000.0, 2010.0],
            "tags": ["x|y", "y", "", "z|x"],
            "title": ["Alpha one", "Beta two", "Gamma one", "Delta two"],
            "empty": [np.nan] * 4,
        }
    )


def test_each_column_kind_is_inferred_and_encoded():
    frame = encoding_frame()
    enc = FeatureEncoding.fit(frame, id_col="item")
    assert [(c.name, c.kind) for c in enc.columns] == [
        ("flag", "flag"),
        ("seen", "flag"),
        ("kind", "categorical"),
        ("year", "numeric"),
        ("tags", "multi"),
    ]
    assert enc.ignored == ("title", "empty")  # free text (one value per row) and all missing
    assert enc.names == ["flag", "seen", "kind=a", "kind=b", "year", "year:missing", "tags:x", "tags:y", "tags:z"]
    x = enc.transform(frame)
    z = (np.array([1990.0, 2000.0, 2010.0]) - 2000.0) / np.std([1990.0, 2000.0, 2010.0])
    np.testing.assert_allclose(
        x,
        [
            [0, 1, 1, 0, z[0], 0, 1, 1, 0],
            [1, 0, 0, 1, 0, 1, 0, 1, 0],  # the missing year: the training mean (0) and the indicator
            [1, 1, 1, 0, z[1], 0, 0, 0, 0],  # "" tags: none
            [0, 1, 1, 0, z[2], 0, 1, 0, 1],
        ],
    )


def test_unseen_categories_and_tags_are_ignored_and_lists_are_multi_valued():
    enc = FeatureEncoding.fit(encoding_frame(), id_col="item")
    new = pd.DataFrame({"flag": [1], "seen": [False], "kind": ["never seen"], "year": [None], "tags": ["x|brand new"]})
    np.testing.assert_allclose(enc.transform(new), [[1, 0, 0, 0, 0, 1, 1, 0, 0]])
    as_lists = pd.DataFrame({"item": [1, 2, 3], "tags": [["x", "y"], ["y"], []]})
    lists = FeatureEncoding.fit(as_lists, id_col="item")
    assert lists.columns[0].kind == "multi" and lists.names == ["tags:x", "tags:y"]
    np.testing.assert_allclose(lists.transform(pd.DataFrame({"tags": [("y", "q")]})), [[0, 1]])


def test_named_columns_free_text_as_words_and_kinds_by_mapping():
    frame = encoding_frame()
    words = FeatureEncoding.fit(frame, id_col="item", columns=["title"])
    assert words.names == ["title:one", "title:two"]  # words of at least two training rows
    np.testing.assert_allclose(words.transform(pd.DataFrame({"title": ["Two of ONE", None]})), [[1, 1], [0, 0]])
    by_kind = FeatureEncoding.fit(frame, id_col="item", columns={"year": "categorical", "kind": "multi"})
    assert by_kind.names == ["year=1990.0", "year=2000.0", "year=2010.0", "kind:a", "kind:b"]
    with pytest.raises(ValueError, match="kind must be one of"):
        FeatureEncoding.fit(frame, id_col="item", columns={"year": "ordinal"})
    with pytest.raises(ValueError, match="no feature column 'genre'"):
        FeatureEncoding.fit(frame, id_col="item", columns=["genre"])
    with pytest.raises(ValueError, match="no usable feature column.*left out: title"):
        FeatureEncoding.fit(frame[["item", "title"]], id_col="item")
    with pytest.raises(ValueError, match="no column 'kind'"):
        FeatureEncoding.fit(frame, id_col="item").transform(frame.drop(columns=["kind"]))


# --- fold-ins --------------------------------------------------------------------------------------


def test_fold_in_items_places_items_from_features_and_adds_them():
    model, new, truth = planted_model()
    fold = fold_in_items(model, features=new)
    assert fold.source.tolist() == ["side_info"] * 40 and fold.ids.tolist() == new["item"].tolist()
    vectors, biases = SideInfoMap.fit(model).vectors(new)
    np.testing.assert_array_equal(fold.vectors, vectors)
    np.testing.assert_array_equal(fold.biases, biases)
    assert (fold.n_ratings == 0).all() and fold.converged.all() and fold.rows is None
    added = fold_in_items(model, features=new.iloc[:5], add=True)
    assert len(model.items) == 405 and added.rows.tolist() == [401, 402, 403, 404, 405]
    np.testing.assert_allclose(model.weight(new["item"][:5]), vectors[:5])
    users = np.arange(1, 6)
    np.testing.assert_allclose(model.predict(users, new["item"][:5])["prediction"], added.predict(model, users, of=np.arange(5)), rtol=1e-5)


def test_ratings_and_features_together_fold_in_the_rated_and_place_the_rest():
    model, new, _ = planted_model()
    ids = new["item"].to_numpy()
    ratings = pd.DataFrame({"item": [ids[0]] * 6 + [ids[1]] * 2, "user": [1, 2, 3, 4, 5, 6, 999, 998], "rating": [4, 5, 3, 4, 2, 5, 3, 3]})
    side = SideInfoMap.fit(model).vectors(new.iloc[1:2])
    fold = fold_in_items(model, ratings, features=new.iloc[:4], add=True)
    assert fold.ids.tolist() == ids[:4].tolist()  # the rated first, then those with features only
    assert fold.source.tolist() == ["fold_in", "side_info", "side_info", "side_info"]  # ids[1]'s users are all unknown
    assert fold.n_ratings.tolist() == [6, 0, 0, 0] and fold.n_ignored.tolist() == [0, 2, 0, 0]
    np.testing.assert_array_equal(fold.vectors[1], side[0][0])
    assert model.items.known(ids[:4]).all() and len(model.seen_items) == 6


def test_fold_in_users_from_attributes_with_a_map_learned_on_known_users():
    model, _, _ = planted_model()
    rng = np.random.default_rng(5)
    attributes = pd.DataFrame({"user": np.arange(1, 41), "age": rng.integers(18, 70, 40), "job": rng.choice(["a", "b", "c"], 40)})
    fold = fold_in_users(model, features=attributes.iloc[30:], side_info=attributes.iloc[:30])
    assert fold.table == "user" and fold.source.tolist() == ["side_info"] * 10
    side = SideInfoMap.fit(model, "user", metadata=attributes)
    assert side.n_train == 30  # rows of users the model does not know are not trained on
    np.testing.assert_allclose(fold.vectors, side.vectors(attributes.iloc[30:])[0], rtol=1e-6)
    same = fold_in_users(model, features=attributes)  # the map learned from the known rows of features
    np.testing.assert_allclose(same.vectors[30:], fold.vectors, rtol=1e-6)


def test_side_info_errors_say_what_is_missing():
    model, new, _ = planted_model()
    with pytest.raises(ValueError, match="no 'item' ID column"):
        fold_in_items(model, features=new.drop(columns=["item"]))
    with pytest.raises(ValueError, match="item 1 is already known"):
        fold_in_items(model, features=pd.concat([new.iloc[:2], model.item_metadata.iloc[:1]]), add=True)
    assert len(model.items) == 400
    with pytest.raises(ValueError, match="repeat item"):
        fold_in_items(model, features=pd.concat([new.iloc[:2], new.iloc[:1]]))
    with pytest.raises(TypeError, match="str"):
        fold_in_items(model, features=new.assign(item=new["item"].astype(str)))
    with pytest.raises(ValueError, match="ratings, their features"):
        fold_in_items(model)
    with pytest.raises(ValueError, match="stores no user metadata"):
        SideInfoMap.fit(model, "user")
    with pytest.raises(ValueError, match="no metadata of known users"):
        fold_in_users(model, features=pd.DataFrame({"user": [100, 101], "age": [20, 30]}))
    bare = ce.FittedModel(model.module)  # no item metadata at all
    with pytest.raises(ValueError, match="stores no item metadata"):
        SideInfoMap.fit(bare)
    with pytest.raises(ValueError, match="no metadata of known items"):
        fold_in_items(bare, features=new)
    with pytest.raises(ValueError, match="side_info maps user features"):
        side_info_map(model, "item", SideInfoMap.fit(model, "user", metadata=pd.DataFrame({"user": [1, 2, 3], "age": [20, 30, 40]})))


# --- predict ---------------------------------------------------------------------------------------


def test_predict_answers_unseen_items_with_features_through_the_map():
    model, new, _ = planted_model()
    users, items = [1, 2, 3, 4], [7, new["item"][0], 999_999, new["item"][1]]
    out = model.predict(users, items, item_features=new)
    plain = model.predict(users, items)
    assert "item_source" not in plain.columns
    assert out["item_source"].tolist() == ["known", "side_info", "unknown_slot", "side_info"]
    assert out["item_known"].tolist() == [True, False, False, False]
    vectors, biases = SideInfoMap.fit(model).vectors(new.iloc[[0, 1]])
    u = model.weight([2, 4], "user").astype(np.float64)
    want = link((u * vectors).sum(1) + model.bias([2, 4], "user") + biases)
    np.testing.assert_allclose(out["prediction"].to_numpy()[[1, 3]], want, rtol=1e-5)
    np.testing.assert_array_equal(out["prediction"].to_numpy()[[0, 2]], plain["prediction"].to_numpy()[[0, 2]])
    with pytest.raises(UnknownIdError, match="999999"):
        model.predict(users, items, unknown="raise", item_features=new)
    covered = model.predict(users[:2], items[:2], unknown="raise", item_features=new)
    assert covered["item_source"].tolist() == ["known", "side_info"]


def test_predict_learns_from_the_features_rows_of_known_items_when_the_model_stores_none():
    model, new, _ = planted_model()
    everything = model.item_metadata
    bare = ce.FittedModel(model.module)
    out = bare.predict([1, 2], new["item"][:2], item_features=everything)
    np.testing.assert_allclose(out["prediction"], model.predict([1, 2], new["item"][:2], item_features=new)["prediction"], rtol=1e-5)
    with pytest.raises(ValueError, match="no metadata of known items"):
        bare.predict([1, 2], new["item"][:2], item_features=new)


# --- a real fit ------------------------------------------------------------------------------------


def test_on_a_real_fit_side_info_beats_the_mean_item_for_held_out_items():
    rng = np.random.default_rng(0)
    n_users, n_items, per_user = 300, 200, 40
    meta = planted_features(n_items, rng)
    meta.insert(0, "item", np.arange(1, n_items + 1))
    truth = planted_truth(meta) * 0.8
    p, bu = rng.normal(0, 0.6, (n_users, K)), rng.normal(0, 0.3, n_users)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    score = 3.5 + bu[users] + truth[items, K] + (p[users] * truth[items, :K]).sum(1) + rng.normal(0, 0.3, len(users))
    ratings = pd.DataFrame({"user": users + 1, "item": items + 1, "rating": np.clip(np.rint(score), 1, 5)})
    held = rng.choice(np.arange(1, n_items + 1), n_items // 10, replace=False)
    test = ratings[ratings["item"].isin(held)]
    model = ce.fit(ratings[~ratings["item"].isin(held)], n_factors=8, epochs=15, seed=0, threads=2, progress=False)
    model.set_item_metadata(meta)

    def rmse(pred) -> float:
        return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - test["rating"].to_numpy()) ** 2)))

    side = model.predict(test["user"], test["item"], item_features=meta[meta["item"].isin(held)])
    assert (side["item_source"] == "side_info").all()
    mean_item = ce.fold_in_items_like(model, {-1: model.items.ids}).predict(model, test["user"])
    slot = rmse(model.predict(test["user"], test["item"])["prediction"])
    assert rmse(side["prediction"]) < rmse(mean_item) - 0.2
    assert rmse(side["prediction"]) < slot - 0.2
