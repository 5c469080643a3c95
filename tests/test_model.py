import math

import numpy as np
import pandas as pd
import pytest
import torch

import collabemb as ce
from collabemb.registry import IdRegistry

from conftest import planted_ratings

FAST = {"epochs": 8, "n_factors": 8, "threads": 1}


@pytest.fixture(scope="module")
def split():
    ratings = ce.read_ratings(planted_ratings(), timestamp_col="timestamp")
    return ce.split_random(ratings, 0.2, seed=1)


@pytest.fixture(scope="module")
def fitted(split):
    train, valid = split
    return ce.fit(train, valid=valid, **FAST)


def test_forward_takes_rows_and_stays_inside_y_range():
    model = ce.EmbeddingDotBias(IdRegistry([1, 2, 3], name="user"), IdRegistry(["a", "b"], name="item"), n_factors=4, y_range=(1.0, 5.0))
    with torch.no_grad():
        model.u_bias.weight.fill_(100.0)
        out = model(torch.tensor([0, 1, 3]), torch.tensor([0, 2, 1]))
    assert out.shape == (3,)
    assert torch.all(out <= 5.0) and torch.all(out >= 1.0)
    assert model.u_weight.weight.shape == (4, 4)  # 3 known users + row 0
    assert model.i_weight.weight.shape == (3, 4)


def test_weight_and_bias_by_raw_id_are_the_registry_rows(fitted):
    ids = fitted.users.ids[[5, 0, 17]]
    rows = fitted.users.encode(ids)
    assert rows.tolist() == [6, 1, 18]
    table = fitted.module.u_weight.weight.detach().numpy()
    np.testing.assert_array_equal(fitted.weight(ids, "user"), table[rows])
    np.testing.assert_array_equal(fitted.bias(fitted.items.ids[:3], "item"), fitted.module.i_bias.weight.detach().numpy()[[1, 2, 3], 0])
    assert fitted.weight(ids, "user").dtype == np.float32 and fitted.weight(ids, "user").shape == (3, FAST["n_factors"])


def test_weight_of_unseen_id_is_the_unknown_row_or_raises(fitted):
    np.testing.assert_array_equal(fitted.weight([10**9], "user"), fitted.module.u_weight.weight.detach().numpy()[[0]])
    with pytest.raises(ce.UnknownIdError, match="1 unseen user ID"):
        fitted.weight([10**9], "user", unknown="raise")


def test_fit_learns_planted_structure_well_beyond_the_global_mean(split, fitted):
    train, valid = split
    baseline = math.sqrt(np.mean((valid.frame["rating"] - train.frame["rating"].mean()) ** 2))
    assert fitted.history.valid_rmse[-1] < 0.8 * baseline
    assert ce.rmse(fitted, valid) == pytest.approx(fitted.history.valid_rmse[-1], rel=1e-6)


def test_predict_reports_known_flags_and_stays_finite_inside_y_range_for_unseen_ids(fitted):
    users = [fitted.users.ids[0], 99_999, fitted.users.ids[1], 99_998]
    items = [fitted.items.ids[0], fitted.items.ids[0], 88_888, 88_887]
    out = fitted.predict(users, items)
    assert list(out.columns) == ["user", "item", "prediction", "user_known", "item_known"]
    assert out["user"].tolist() == users and out["item"].tolist() == items
    assert out["user_known"].tolist() == [True, False, True, False]
    assert out["item_known"].tolist() == [True, True, False, False]
    lo, hi = fitted.y_range
    assert np.isfinite(out["prediction"]).all()
    assert ((out["prediction"] > lo) & (out["prediction"] < hi)).all()


def test_unseen_user_and_item_get_the_trained_unknown_slot_near_the_global_mean(split):
    train, _ = split
    mean = train.frame["rating"].mean()
    trained = ce.fit(train, unknown_frac=0.05, **FAST)
    untrained = ce.fit(train, unknown_frac=0.0, **FAST)
    both_unseen = trained.predict([-1], [-1])["prediction"].iloc[0]
    assert abs(both_unseen - mean) < 0.15
    # without routing, row 0 keeps its init: the sigmoid midpoint, far from the mean here
    lo, hi = untrained.y_range
    assert untrained.predict([-1], [-1])["prediction"].iloc[0] == pytest.approx((lo + hi) / 2, abs=0.01)
    # an unseen user on a known item follows the item: good items score above bad ones
    item_means = train.frame.groupby("item")["rating"].mean()
    best, worst = item_means.idxmax(), item_means.idxmin()
    pred = trained.predict([-1, -1], [best, worst])["prediction"].to_numpy()
    assert pred[0] > pred[1] + 0.5


def test_same_seed_and_threads_give_identical_weights(split):
    train, _ = split
    a = ce.fit(train, seed=7, **FAST)
    b = ce.fit(train, seed=7, **FAST)
    c = ce.fit(train, seed=8, **FAST)
    for name in ("u_weight", "i_weight", "u_bias", "i_bias"):
        assert torch.equal(getattr(a.module, name).weight, getattr(b.module, name).weight)
    assert not torch.equal(a.module.u_weight.weight, c.module.u_weight.weight)


def test_history_has_one_entry_per_epoch_and_follows_the_schedule(fitted):
    h = fitted.history
    assert h.epoch == list(range(1, FAST["epochs"] + 1))
    assert len(h.train_rmse) == len(h.valid_rmse) == len(h.lr) == len(h.seconds) == FAST["epochs"]
    assert h.train_rmse[-1] < h.train_rmse[0]
    assert h.lr[-1] == pytest.approx(h.params["lr"] / 100, rel=1e-6)  # onecycle ends at lr/100
    assert h.params["n_train"] == 2880
    frame = h.to_frame()
    assert list(frame.columns) == ["epoch", "lr", "train_rmse", "valid_rmse", "seconds"]


def test_early_stopping_keeps_the_best_epoch(split):
    train, valid = split
    model = ce.fit(
        train, valid=valid, epochs=40, n_factors=32, weight_decay=0.0, lr=0.05, lr_schedule="constant", early_stopping=2, threads=1
    )
    h = model.history
    assert h.stopped_early and len(h.epoch) < 40
    assert h.best_epoch == int(np.argmin(h.valid_rmse)) + 1
    assert ce.rmse(model, valid) == pytest.approx(min(h.valid_rmse), rel=1e-6)


def test_fit_accepts_a_dataframe_with_named_columns_and_string_ids():
    frame = planted_ratings(string_ids=True).rename(columns={"user": "who", "item": "what", "rating": "stars"})
    model = ce.fit(frame, user_col="who", item_col="what", rating_col="stars", **FAST)
    assert model.users.id_type == "str" and model.users.ids[0] == "u001"
    out = model.predict(["u001", "nobody"], ["i001", "i001"])
    assert out["user_known"].tolist() == [True, False]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"unknown_frac": 0.7}, "unknown_frac must be in"),
        ({"early_stopping": 2}, "early_stopping needs validation"),
        ({"lr_schedule": "warp"}, "lr_schedule must be"),
        ({"device": "cuda:7"} if not torch.cuda.is_available() else {"epochs": 0}, "cuda|epochs"),
        ({"lr": -1.0}, "lr must be a finite number > 0"),
        ({"weight_decay": float("nan")}, "weight_decay must be a finite number >= 0"),
        ({"epochs": 2.5}, "epochs must be an integer"),
        ({"engine": "warp"}, "engine must be one of"),
    ],
)
def test_fit_rejects_bad_arguments_with_a_clear_message(ratings_frame, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ce.fit(ratings_frame, **{**FAST, **kwargs})


def test_predict_rejects_mismatched_lengths(fitted):
    with pytest.raises(ValueError, match="same length"):
        fitted.predict([1, 2], [1])


def test_predict_from_pandas_series_keeps_ids(fitted):
    users = pd.Series(fitted.users.ids[:4])
    out = fitted.predict(users, pd.Series(fitted.items.ids[:4]))
    assert out["user"].tolist() == users.tolist()


def test_fit_refuses_an_unknown_setting_by_name(ratings_frame):
    with pytest.raises(TypeError, match="unknown training setting.*n_factor"):
        ce.fit(ratings_frame, n_factor=8)


def test_settings_object_and_keywords_give_the_same_model(ratings_frame):
    a = ce.fit(ratings_frame, settings=ce.FitSettings(**FAST))
    b = ce.fit(ratings_frame, **FAST)
    assert torch.equal(a.module.u_weight.weight, b.module.u_weight.weight)
    assert a.history.params == b.history.params


def test_validation_pairs_are_not_stored_as_training_pairs(split):
    train, valid = split
    fitted = ce.fit(train, valid=valid, **FAST)
    assert len(fitted.seen_items) == len(train)
    vu, vi = fitted.users.encode(valid.frame["user"]), fitted.items.encode(valid.frame["item"])
    known = (vu > 0) & (vi > 0)
    assert not fitted.seen_items.contains(vu[known], vi[known]).any()


def test_module_knows_no_fit_state_and_the_fitted_model_types_every_field(fitted):
    module = fitted.module
    for name in ("history", "seen_items", "index", "item_metadata", "save", "build_index", "recommend"):
        assert not hasattr(module, name)
    assert isinstance(fitted.identity, ce.ModelIdentity) and fitted.identity.family == "rating"
    assert fitted.identity.weight_decay == fitted.history.params["weight_decay"]
    assert isinstance(fitted.seen_items, ce.SeenItems) and fitted.item_metadata.empty and fitted.index is None


def test_append_rows_grows_a_table_by_copy_and_leaves_old_registries_valid(fitted):
    module = ce.fit(planted_ratings(20, 15, 6), **FAST).module
    old_users = module.users
    rows = module.append_rows("user", [10_001, 10_000], np.ones((2, FAST["n_factors"]), np.float32), [0.5, -0.5])
    assert rows.tolist() == [len(old_users) + 2, len(old_users) + 1]
    assert module.users is not old_users and len(old_users) == 20 and 10_000 not in old_users
    assert module.u_weight.weight.shape[0] == old_users.n_rows + 2
    np.testing.assert_array_equal(module.bias([10_000, 10_001], "user"), np.array([-0.5, 0.5], np.float32))
    with pytest.raises(ValueError, match="new user IDs only"):
        module.append_rows("user", [10_000], np.ones((1, FAST["n_factors"])), [0.0])


def test_weight_and_bias_take_fastais_is_item_as_well_as_table():
    from collabemb.registry import IdRegistry

    m = ce.EmbeddingDotBias(IdRegistry([1, 2, 3]), IdRegistry([1, 2]), n_factors=3)
    item_rows, user_rows = m.tables("item"), m.tables("user")
    np.testing.assert_array_equal(m.weight([2]), item_rows[0][[2]])  # the default is items, as fastai's
    np.testing.assert_array_equal(m.weight([2], is_item=True), item_rows[0][[2]])
    np.testing.assert_array_equal(m.weight([2], is_item=False), user_rows[0][[2]])
    np.testing.assert_array_equal(m.bias([3], is_item=False), user_rows[1][[3]])
    np.testing.assert_array_equal(m.bias([3], "user", is_item=False), user_rows[1][[3]])
    with pytest.raises(ValueError, match="table='user' and is_item=True name different tables"):
        m.weight([1], "user", is_item=True)
    fitted = ce.FittedModel(m)
    np.testing.assert_array_equal(fitted.weight([1], is_item=False), user_rows[0][[1]])
