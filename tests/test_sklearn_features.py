"""EmbeddingFeatures: the scikit-learn transformer (collabemb/sklearn_features.py).

Small planted data and tiny fits (4 factors, 5 epochs, one thread), so the file runs in seconds.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from threadpoolctl import threadpool_limits

import collabemb as ce
from collabemb.sklearn_features import EmbeddingFeatures, _rotation_onto

from conftest import planted_ratings

SETTINGS = {"n_factors": 4, "epochs": 5, "threads": 1}
K = SETTINGS["n_factors"]
NAMES = [f"{side}_{name}" for side in ("user", "item") for name in [*(f"emb_{j}" for j in range(K)), "bias", "known"]]
LONER_USER, LONER_ITEM = 10_001, 20_001


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    """X (user, item, timestamp; a shuffled non-default index) and y, with one user and one item rated once."""
    frame = planted_ratings(60, 40, 15)
    frame = pd.concat([frame, pd.DataFrame({"user": [LONER_USER, 1], "item": [1, LONER_ITEM], "rating": [5.0, 1.0], "timestamp": [0, 0]})])
    frame.index = np.random.default_rng(0).permutation(len(frame)) + 1000
    return frame[["user", "item", "timestamp"]], frame["rating"]


def features(**params) -> EmbeddingFeatures:
    return EmbeddingFeatures(**{"settings": SETTINGS, **params})


def test_fit_transform_shape_names_and_fitted_attributes(data):
    X, y = data
    est = features()
    out = est.fit_transform(X, y)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (len(X), len(NAMES))
    assert list(est.get_feature_names_out()) == NAMES
    assert isinstance(est.fitted_, ce.FittedModel) and est.fitted_.n_factors == K
    assert est.n_features_in_ == 3 and list(est.feature_names_in_) == ["user", "item", "timestamp"]
    assert set(np.unique(out[:, NAMES.index("user_known")])) <= {0.0, 1.0}
    later = est.transform(X.iloc[:7])
    assert later.shape == (7, len(NAMES)) and np.isfinite(later).all()


def test_bias_and_known_columns_can_be_left_out(data):
    X, y = data
    est = features(bias=False, known=False).fit(X, y)
    assert list(est.get_feature_names_out()) == [n for n in NAMES if not n.endswith(("bias", "known"))]
    assert est.transform(X).shape == (len(X), 2 * K)
    assert est.fit_transform(X, y).shape == (len(X), 2 * K)


def test_other_id_column_names_and_string_ids():
    frame = planted_ratings(40, 30, 10, string_ids=True).rename(columns={"user": "customer", "item": "product"})
    est = features(user_col="customer", item_col="product", cv=3)
    out = est.fit_transform(frame[["customer", "product"]], frame["rating"])
    assert out.shape == (len(frame), len(NAMES)) and np.isfinite(out).all()
    unseen = est.transform(pd.DataFrame({"customer": ["nobody"], "product": ["i001"]}))
    assert unseen[0, NAMES.index("user_known")] == 0.0 and unseen[0, NAMES.index("item_known")] == 1.0


def test_clone_gives_equal_params_and_an_unfitted_copy(data):
    X, y = data
    est = features(cv=3, bias=False, random_state=7, user_col="user").fit(X, y)
    copy = clone(est)
    assert copy.get_params() == est.get_params()
    assert not hasattr(copy, "fitted_")
    with pytest.raises(NotFittedError):
        copy.transform(X)
    if hasattr(est, "__sklearn_tags__") and hasattr(EmbeddingFeatures.__mro__[1], "__sklearn_tags__"):  # scikit-learn >= 1.6
        assert est.__sklearn_tags__().target_tags.required


def test_a_fitted_transformer_pickles(data):
    X, y = data
    est = features().fit(X, y)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.transform(X), est.transform(X))


def test_set_output_pandas_gives_feature_names_and_the_input_index(data):
    X, y = data
    est = features().set_output(transform="pandas")
    crossed = est.fit_transform(X, y)
    later = est.transform(X)
    for frame in (crossed, later):
        assert isinstance(frame, pd.DataFrame)
        assert list(frame.columns) == NAMES
        assert frame.index.equals(X.index)


def test_a_user_whose_ratings_all_fall_in_one_fold_is_unknown_in_fit_transform_only(data):
    X, y = data
    est = features()
    crossed = pd.DataFrame(est.fit_transform(X, y), columns=NAMES, index=X.index)
    leaky = pd.DataFrame(est.transform(X), columns=NAMES, index=X.index)
    loner_user, loner_item = X["user"] == LONER_USER, X["item"] == LONER_ITEM
    assert (crossed.loc[loner_user, "user_known"] == 0).all() and (leaky.loc[loner_user, "user_known"] == 1).all()
    assert (crossed.loc[loner_item, "item_known"] == 0).all() and (leaky.loc[loner_item, "item_known"] == 1).all()
    # an unknown ID gets the fold model's row 0, not its own (trained) vector
    assert not np.allclose(crossed.loc[loner_user, "user_bias"], leaky.loc[loner_user, "user_bias"])
    # every row differs from the leaky version: its features come from another model
    assert (np.abs(crossed.to_numpy() - leaky.to_numpy()).max(axis=1) > 0).all()


def test_each_fold_is_encoded_by_a_model_fitted_without_it(data):
    """Fold by fold, rebuild the model that never saw the fold's rows; the rotation-free columns
    (biases, known flags and the user-item dot product) of fit_transform's rows are that model's."""
    X, y = data
    crossed = pd.DataFrame(features(cv=3, random_state=5).fit_transform(X, y), columns=NAMES)
    ratings = pd.DataFrame({"user": X["user"].to_numpy(), "item": X["item"].to_numpy(), "rating": y.to_numpy()})
    for train_rows, fold_rows in KFold(3, shuffle=True, random_state=5).split(X):
        model = ce.fit(ratings.iloc[train_rows], seed=5, progress=False, **SETTINGS)
        own = ce.to_features(model, ratings.iloc[fold_rows]).reset_index(drop=True)
        got = crossed.iloc[fold_rows].reset_index(drop=True)
        for col in ("user_bias", "item_bias"):
            np.testing.assert_allclose(got[col], own[col], rtol=1e-6, atol=1e-7)
        for col in ("user_known", "item_known"):
            np.testing.assert_array_equal(got[col], own[col].astype(float))
        user, item = [f"user_emb_{j}" for j in range(K)], [f"item_emb_{j}" for j in range(K)]
        dots = (got[user].to_numpy() * got[item].to_numpy()).sum(axis=1)
        np.testing.assert_allclose(dots, (own[user].to_numpy() * own[item].to_numpy()).sum(axis=1), rtol=1e-4, atol=1e-6)


def test_fold_embeddings_are_turned_into_the_full_models_coordinates(data):
    """The cross-fitted embedding columns mean what transform's columns mean (same coordinates):
    without the rotation these correlations average about 0.2 on this data, with it about 0.7."""
    X, y = data
    est = features()
    crossed, leaky = est.fit_transform(X, y), est.transform(X)
    corr = [np.corrcoef(crossed[:, j], leaky[:, j])[0, 1] for j in [*range(K), *range(K + 2, 2 * K + 2)]]
    assert np.mean(corr) > 0.5 and min(corr) > 0.3, np.round(corr, 2)


def test_the_rotation_finds_a_planted_one_and_keeps_predictions(data):
    X, y = data
    model = features().fit(X, y).fitted_
    q = np.linalg.qr(np.random.default_rng(1).normal(size=(K, K)))[0]
    turned = copy.deepcopy(model)
    with torch.no_grad():
        for table in (turned.module.u_weight, turned.module.i_weight):
            table.weight.copy_(table.weight @ torch.from_numpy(q).float())
    np.testing.assert_allclose(_rotation_onto(model, turned), q, atol=1e-5)
    np.testing.assert_allclose(turned.predict([1, 2], [3, 4])["prediction"], model.predict([1, 2], [3, 4])["prediction"], rtol=1e-5)


def test_deterministic_for_a_fixed_random_state(data):
    X, y = data
    first = features(random_state=3).fit_transform(X, y)
    np.testing.assert_array_equal(first, features(random_state=3).fit_transform(X, y))
    assert not np.array_equal(first, features(random_state=4).fit_transform(X, y))


def test_pipeline_with_column_transformer_and_gradient_boosting(data):
    X, y = data
    with threadpool_limits(limits=1):  # boosting's OpenMP threads on a 2-core machine: slower, not faster
        _pipelines_fit_and_predict(X, y)


def _pipelines_fit_and_predict(X, y):
    cf = ColumnTransformer([("cf", features(cv=3), ["user", "item"])], remainder="passthrough")
    pipe = make_pipeline(cf, HistGradientBoostingRegressor(max_iter=20, random_state=0)).fit(X, y)
    new = pd.DataFrame({"user": [1, 2, 99_999], "item": [3, 88_888, 4], "timestamp": [5, 6, 7]})
    pred = pipe.predict(pd.concat([X.iloc[:20], new]))
    assert pred.shape == (23,) and np.isfinite(pred).all()
    assert list(cf.get_feature_names_out()) == [*(f"cf__{n}" for n in NAMES), "remainder__timestamp"]
    plain = make_pipeline(features(cv=2), HistGradientBoostingRegressor(max_iter=20, random_state=0)).fit(X[["user", "item"]], y)
    assert np.isfinite(plain.predict(new[["user", "item"]])).all()


def test_pipeline_with_xgboost_and_pandas_output(data):
    """XGBoost, the library users name, behind a ColumnTransformer with pandas output (column names kept)."""
    xgboost = pytest.importorskip("xgboost")
    X, y = data
    cf = ColumnTransformer([("cf", features(cv=3), ["user", "item"])], remainder="passthrough").set_output(transform="pandas")
    booster = xgboost.XGBRegressor(n_estimators=20, max_depth=3, tree_method="hist", n_jobs=1, random_state=0)
    pipe = make_pipeline(cf, booster).fit(X, y)
    assert list(booster.get_booster().feature_names) == [*(f"cf__{n}" for n in NAMES), "remainder__timestamp"]
    new = pd.DataFrame({"user": [1, 99_999], "item": [88_888, 4], "timestamp": [5, 6]})
    pred = pipe.predict(new)
    assert pred.shape == (2,) and np.isfinite(pred).all()
    # the training rows' features were cross-fitted: they differ from what the full model gives them
    crossed = cf.fit_transform(X, y)
    assert not np.allclose(crossed.to_numpy(), cf.transform(X).to_numpy())


def test_exported_lazily_from_the_package():
    assert ce.EmbeddingFeatures is EmbeddingFeatures
    assert "EmbeddingFeatures" in ce.__all__


def test_feature_names_in_only_for_string_column_names(data):
    X, y = data
    numbered = X[["user", "item"]].set_axis([0, 1], axis=1)
    est = EmbeddingFeatures(user_col=0, item_col=1, settings=SETTINGS).fit(numbered, y)
    assert est.n_features_in_ == 2 and not hasattr(est, "feature_names_in_")
    assert list(est.get_feature_names_out()) == NAMES
    with pytest.raises(ValueError, match="input_features"):
        features().fit(X, y).get_feature_names_out(["user", "item"])


@pytest.mark.parametrize(
    ("params", "change", "error", "match"),
    [
        ({}, lambda X, y: (X.drop(columns="item"), y), ValueError, "no ID column.*'item'"),
        ({"user_col": "customer"}, lambda X, y: (X, y), ValueError, "no ID column.*'customer'"),
        ({}, lambda X, y: (X, y.iloc[:-1]), ValueError, "rows but y has"),
        ({}, lambda X, y: (X, y.where(y.index != y.index[3])), ValueError, "y has 1 missing or infinite"),
        ({}, lambda X, y: (X, y.replace(5.0, np.inf)), ValueError, "missing or infinite"),
        ({}, lambda X, y: (X, None), ValueError, "needs the target y"),
        ({}, lambda X, y: (X, np.array(["a"] * len(y))), ValueError, "y must be numbers"),
        ({}, lambda X, y: (X, np.ones((len(y), 2))), ValueError, "one column"),
        ({}, lambda X, y: (X.iloc[:0], y.iloc[:0]), ValueError, "empty"),
        ({}, lambda X, y: (X.to_numpy(), y), TypeError, "pandas DataFrame"),
        ({"item_col": "user"}, lambda X, y: (X, y), ValueError, "same column"),
        ({"cv": 1}, lambda X, y: (X, y), ValueError, "cv must be an int >= 2"),
        ({"cv": 2.5}, lambda X, y: (X, y), ValueError, "cv must be an int >= 2"),
        ({"cv": True}, lambda X, y: (X, y), ValueError, "cv must be an int >= 2"),
        ({"cv": 5}, lambda X, y: (X.iloc[:3], y.iloc[:3]), ValueError, "at least 5 rows"),
        ({"random_state": -1}, lambda X, y: (X, y), ValueError, "random_state"),
        ({"settings": {"n_factor": 4}}, lambda X, y: (X, y), ValueError, "unknown setting.*n_factor"),
        ({"settings": {"seed": 1}}, lambda X, y: (X, y), ValueError, "random_state"),
        ({"settings": {"epochs": 0}}, lambda X, y: (X, y), ValueError, "epochs"),
        ({"settings": [("epochs", 2)]}, lambda X, y: (X, y), TypeError, "dict"),
    ],
)
def test_bad_input_is_refused_clearly(data, params, change, error, match):
    X, y = change(*data)
    with pytest.raises(error, match=match):
        EmbeddingFeatures(**{"settings": SETTINGS, **params}).fit_transform(X, y)
    if match != "at least 5 rows":  # fit fits one model, no folds
        with pytest.raises(error, match=match):
            EmbeddingFeatures(**{"settings": SETTINGS, **params}).fit(X, y)


def test_a_missing_id_is_named_with_its_column_and_row(data):
    X, y = data
    X = X.rename(columns={"user": "customer"}).astype({"customer": float})
    X.iloc[4, 0] = np.nan
    with pytest.raises(ValueError, match="row 4, column 'customer': missing ID"):
        EmbeddingFeatures(user_col="customer", settings=SETTINGS).fit_transform(X, y)


def test_transform_refuses_what_it_cannot_encode(data):
    X, y = data
    est = features().fit(X, y)
    with pytest.raises(ValueError, match="no ID column"):
        est.transform(X[["user"]])
    with pytest.raises(TypeError):
        est.transform(pd.DataFrame({"user": ["1"], "item": ["2"]}))  # string IDs for an int model
    with pytest.raises(NotFittedError):
        features().transform(X)
