"""Implicit-feedback models through `implicit`: planted structure, equality with implicit itself,
the registry-aligned artifact, ALS fold-in, confidence options, and the command line."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

import collabemb as ce
from collabemb.coldstart import fold_in_als
from collabemb.fitted import ModelIdentity
from collabemb.implicit_mf import DEFAULTS, fit_implicit, fit_popularity
from collabemb.metrics import evaluate
from collabemb.splits import split_random_per_user

N_GROUPS = 4


def planted_interactions(n_users: int = 240, n_items: int = 120, per_user: int = 16, noise: int = 2, *, seed: int = 0) -> pd.DataFrame:
    """Users and items in 4 taste groups (ID mod 4); each user touches ``per_user`` items of their
    own group and ``noise`` items anywhere. Every item is about equally popular, so popularity
    cannot tell a user's held-out items from others; the groups can. IDs start at 1; the rating
    column is a play count 1..5 (the group's items tend to get more plays)."""
    rng = np.random.default_rng(seed)
    item_group = np.arange(n_items) % N_GROUPS
    users, items, plays = [], [], []
    for u in range(n_users):
        own = rng.choice(np.flatnonzero(item_group == u % N_GROUPS), per_user, replace=False)
        other = rng.choice(np.setdiff1d(np.arange(n_items), own), noise, replace=False)
        users += [u + 1] * (per_user + noise)
        items += [*own, *other]
        plays += [*rng.integers(2, 6, per_user), *rng.integers(1, 3, noise)]
    return pd.DataFrame({"user": users, "item": np.asarray(items) + 1, "rating": np.asarray(plays, dtype=float)})


@pytest.fixture(scope="module")
def split():
    ratings = ce.read_ratings(planted_interactions())
    return split_random_per_user(ratings, 3, seed=0)


def table(model: ce.FittedModel, name: str) -> np.ndarray:
    """One of the module's four tables as numpy (``u_weight``, ``i_weight``, ``u_bias``, ``i_bias``)."""
    return getattr(model.module, name).weight.detach().numpy()


def pairwise_auc(model: ce.FittedModel, train: ce.Ratings, test: ce.Ratings, *, seed: int = 0) -> float:
    """Share of (held-out item, random untouched item) pairs the model orders correctly."""
    rng = np.random.default_rng(seed)
    scores = table(model, "u_weight") @ table(model, "i_weight")[1:].T
    scores += table(model, "i_bias")[1:, 0]
    touched = pd.concat([train.frame, test.frame])
    u_rows = model.users.encode(test.frame["user"])
    pos = model.items.encode(test.frame["item"]) - 1
    neg = rng.integers(0, len(model.items), size=(len(pos), 20))
    touched_set = set(zip(model.users.encode(touched["user"]).tolist(), (model.items.encode(touched["item"]) - 1).tolist(), strict=True))
    valid = np.array([[(u, j) not in touched_set for j in row] for u, row in zip(u_rows.tolist(), neg, strict=True)])
    better = scores[u_rows, pos][:, None] > scores[u_rows[:, None], neg]
    return float(better[valid].mean())


@pytest.mark.parametrize("family", ["als", "bpr", "lmf"])
def test_each_model_ranks_held_out_positives_above_random_items(split, family):
    train, test = split
    model = fit_implicit(train, model=family, n_factors=8, seed=0)
    assert model.y_range is None and model.identity.family == family
    assert pairwise_auc(model, train, test) > 0.8
    assert pairwise_auc(fit_popularity(train), train, test) < 0.6  # the structure is not popularity


def test_als_beats_popularity_on_ndcg_of_the_planted_data(split):
    train, test = split
    als = evaluate(fit_implicit(train, model="als", n_factors=8), test, train=train, k=10)
    pop = evaluate(fit_popularity(train), test, train=train, k=10)
    assert als["ndcg@10"] > 2 * pop["ndcg@10"]
    assert als["coverage@10"] > pop["coverage@10"]


def _direct(family: str, matrix: sp.csr_matrix, k: int, **hyper):
    """implicit's own CPU model, fitted as a user of the library would."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from implicit.cpu.lmf import LogisticMatrixFactorization

    cls = {"als": AlternatingLeastSquares, "bpr": BayesianPersonalizedRanking, "lmf": LogisticMatrixFactorization}[family]
    with threadpool_limits(1, "blas"):
        algo = cls(factors=k, num_threads=1, random_state=7, **hyper)
        algo.fit(matrix, show_progress=False)
    return algo


def _user_items(frame: pd.DataFrame, values: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    users, u = np.unique(frame["user"].to_numpy(), return_inverse=True)
    items, i = np.unique(frame["item"].to_numpy(), return_inverse=True)
    return sp.csr_matrix((values.astype(np.float32), (u, i)), shape=(len(users), len(items))), users, items


def test_als_factors_are_implicits_own_rows_shifted_by_one(split):
    train, _ = split
    model = fit_implicit(train, model="als", n_factors=6, seed=7, weighting="raw")
    matrix, users, items = _user_items(train.frame, train.frame["rating"].to_numpy())
    algo = _direct("als", matrix, 6, **DEFAULTS["als"])
    np.testing.assert_array_equal(model.users.ids, users)
    np.testing.assert_array_equal(table(model, "u_weight")[1:], algo.user_factors)
    np.testing.assert_array_equal(table(model, "i_weight")[1:], algo.item_factors)
    assert not table(model, "u_bias").any() and not table(model, "i_bias").any()


@pytest.mark.parametrize("family", ["bpr", "lmf"])
def test_bias_columns_move_into_the_bias_tables_and_scores_equal_implicits(split, family):
    train, _ = split
    model = fit_implicit(train, model=family, n_factors=6, seed=7)
    matrix, users, items = _user_items(train.frame, np.ones(len(train)))
    algo = _direct(family, matrix, 6, **DEFAULTS[family])
    assert table(model, "i_weight").shape == (len(items) + 1, 6)  # the bias columns are gone from the factors
    expected = algo.user_factors @ algo.item_factors.T  # implicit's score: the full vectors' dot product
    pairs = model.predict(np.repeat(users, len(items)), np.tile(items, len(users)))
    np.testing.assert_allclose(pairs["prediction"].to_numpy().reshape(len(users), len(items)), expected, rtol=1e-5, atol=1e-5)
    assert np.abs(table(model, "i_bias")[1:]).sum() > 0


def test_row_zero_is_the_mean_of_the_known_rows_so_unseen_users_get_average_taste(split):
    train, _ = split
    model = fit_implicit(train, model="bpr", n_factors=6)
    assert model.identity.row0 == "mean"
    for name in ("u_weight", "i_weight", "u_bias", "i_bias"):
        w = table(model, name)
        np.testing.assert_allclose(w[0], w[1:].mean(axis=0), rtol=1e-5, atol=1e-7)
    cold = model.predict([-5, -5], model.items.ids[:2])
    assert not cold["user_known"].any()
    mean_scores = model.predict(np.repeat(model.users.ids, 2), np.tile(model.items.ids[:2], len(model.users)))
    expected = mean_scores["prediction"].to_numpy().reshape(-1, 2).mean(axis=0)  # the dot product is linear
    np.testing.assert_allclose(cold["prediction"].to_numpy(), expected, rtol=1e-4, atol=1e-5)


def test_artifact_round_trip_keeps_scores_and_the_recorded_hyperparameters(split, tmp_path):
    train, test = split
    model = fit_implicit(train, model="als", n_factors=8, threshold=3, weighting="log", alpha=2.0, regularization=0.5)
    ce.save_model(model, tmp_path / "als")
    loaded = ce.load_model(tmp_path / "als")
    pairs = (test.frame["user"], test.frame["item"])
    pd.testing.assert_frame_equal(model.predict(*pairs), loaded.predict(*pairs))
    expected = ModelIdentity(family="als", row0="mean", threshold=3.0, weighting="log", regularization=0.5, alpha=2.0)
    assert loaded.identity == model.identity == expected
    assert loaded.identity.fold_in == "als"
    params = loaded.history.params
    recorded = {k: params[k] for k in ("n_factors", "regularization", "alpha", "iterations")}
    assert recorded == {"n_factors": 8, "regularization": 0.5, "alpha": 2.0, "iterations": 15}
    assert params["n_interactions"] + params["n_dropped"] == len(train)
    assert loaded.y_range is None


def test_fold_in_equals_implicits_recalculate_user_from_a_loaded_artifact(split, tmp_path):
    train, test = split
    model = fit_implicit(train, model="als", n_factors=8, threshold=2, weighting="raw", seed=7)
    ce.save_model(model, tmp_path / "als")
    loaded = ce.load_model(tmp_path / "als")
    kept = train.frame[train.frame["rating"] >= 2]
    matrix, _, items = _user_items(kept, kept["rating"].to_numpy())
    algo = _direct("als", matrix, 8, **DEFAULTS["als"])

    new = test.frame.assign(user=test.frame["user"] + 1000)  # unseen users, each with 3 interactions
    new = pd.concat([new, pd.DataFrame({"user": [1001], "item": [99_999], "rating": [5.0]})])  # an unknown item
    fold = fold_in_als(loaded, new)
    kept_new = new[(new["rating"] >= 2) & new["item"].isin(items)]
    order = pd.unique(new["user"])
    rows = pd.Index(order).get_indexer(kept_new["user"])
    cols = pd.Index(items).get_indexer(kept_new["item"])
    user_items = sp.csr_matrix((kept_new["rating"].to_numpy(np.float32), (rows, cols)), shape=(len(order), len(items)))
    with threadpool_limits(1, "blas"):
        expected = algo.recalculate_user(np.arange(len(order)), user_items)
    solved = fold.source == "fold_in"
    assert solved.sum() == (np.diff(user_items.indptr) > 0).sum() > 50
    np.testing.assert_allclose(fold.vectors[solved], expected[solved], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(fold.ids, order)
    assert fold.n_ignored[list(order).index(1001)] == 1
    np.testing.assert_array_equal(fold.vectors[~solved], np.repeat(table(loaded, "u_weight")[:1], (~solved).sum(), 0))
    assert fold.table == "user" and (fold.source[~solved] == "unknown_slot").all()


def test_fold_in_with_add_appends_users_whose_scores_match_the_solve(split):
    train, test = split
    model = fit_implicit(train, model="als", n_factors=8)
    n_before = len(model.users)
    new = test.frame.assign(user=test.frame["user"] + 1000)
    fold = fold_in_als(model, new, add=True)
    assert len(model.users) == n_before + len(fold.ids)
    np.testing.assert_array_equal(fold.rows, model.users.encode(fold.ids))
    np.testing.assert_allclose(model.weight(fold.ids, "user"), fold.vectors)
    query, rows = model.seen_items.items_of(fold.rows[:1])  # the new users' interactions are stored as seen pairs
    first = new[new["user"] == fold.ids[0]]
    assert sorted(model.items.decode(rows).tolist()) == sorted(first.loc[first["item"].isin(model.items.ids), "item"].tolist())
    with pytest.raises(ValueError, match="already known"):
        fold_in_als(model, new, add=True)
    anonymous = fold_in_als(model, new[new["user"] == fold.ids[0]].drop(columns="user"))
    assert anonymous.ids is None
    np.testing.assert_allclose(anonymous.vectors[0], fold.vectors[0], rtol=1e-6)


def test_fold_in_refuses_models_without_a_closed_form(split):
    train, test = split
    for model in (fit_implicit(train, model="bpr", n_factors=4, iterations=2), fit_popularity(train)):
        with pytest.raises(ValueError, match="needs an ALS model"):
            fold_in_als(model, test.frame)
        assert model.identity.fold_in is None


def test_threshold_keeps_only_users_and_items_with_a_positive():
    frame = pd.DataFrame({"user": [1, 1, 2, 3, 3], "item": [10, 11, 10, 12, 10], "rating": [5.0, 2.0, 1.0, 4.0, 4.0]})
    model = fit_implicit(frame, model="als", n_factors=2, threshold=4)
    assert model.users.ids.tolist() == [1, 3] and model.items.ids.tolist() == [10, 12]
    assert model.history.params["n_dropped"] == 2
    popular = fit_popularity(frame, threshold=4)
    np.testing.assert_array_equal(popular.bias([10, 12, 11], "item"), [2.0, 1.0, 1.5])  # 11 unknown: the mean
    assert popular.identity == ModelIdentity(family="popularity", row0="mean_count", threshold=4.0)
    with pytest.raises(ValueError, match="no interaction is >= threshold 6"):
        fit_implicit(frame, threshold=6)


def test_a_dataframe_without_a_rating_column_weighs_every_interaction_one():
    frame = planted_interactions(n_users=40, n_items=40, per_user=8)
    with_ones = fit_implicit(frame.assign(rating=1.0), model="als", n_factors=4)
    without = fit_implicit(frame.drop(columns="rating"), model="als", n_factors=4)
    np.testing.assert_array_equal(table(with_ones, "i_weight"), table(without, "i_weight"))


def test_raw_weighting_changes_als_and_refuses_non_positive_values():
    frame = planted_interactions(n_users=40, n_items=40, per_user=8)
    binary = fit_implicit(frame, model="als", n_factors=4)
    raw = fit_implicit(frame, model="als", n_factors=4, weighting="raw")
    assert not np.allclose(table(binary, "i_weight"), table(raw, "i_weight"))
    with pytest.raises(ValueError, match="weighting='log' needs positive values; 1 kept"):
        fit_implicit(frame.assign(rating=np.r_[0.0, frame["rating"].to_numpy()[1:]]), weighting="log")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "bpr", "alpha": 3.0}, "alpha does not apply to model='bpr'"),
        ({"model": "als", "learning_rate": 0.1}, "learning_rate does not apply to model='als'"),
        ({"model": "svd"}, "model must be one of"),
        ({"weighting": "square"}, "weighting must be one of"),
        ({"iterations": 0}, "iterations must be an integer >= 1"),
    ],
)
def test_bad_options_are_refused_with_what_was_expected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit_implicit(planted_interactions(n_users=8, n_items=20, per_user=4), **kwargs)


def test_same_seed_gives_identical_factors_and_blas_is_limited_without_a_warning(split):
    import implicit.utils

    train, _ = split
    implicit.utils._checked_blas_config = False  # implicit warns once per process; make it look again
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        a = fit_implicit(train, model="bpr", n_factors=4, iterations=5, seed=3)
    b = fit_implicit(train, model="bpr", n_factors=4, iterations=5, seed=3)
    c = fit_implicit(train, model="bpr", n_factors=4, iterations=5, seed=4)
    np.testing.assert_array_equal(table(a, "u_weight"), table(b, "u_weight"))
    assert not np.array_equal(table(a, "u_weight"), table(c, "u_weight"))
    one, two = (fit_implicit(train, model="als", n_factors=4, iterations=3, threads=t) for t in (1, 2))
    np.testing.assert_array_equal(table(one, "i_weight"), table(two, "i_weight"))  # ALS: any threads


def test_string_ids_keep_their_rows_and_predict_by_raw_id():
    frame = planted_interactions(n_users=40, n_items=40, per_user=8)
    frame["user"] = [f"u{v:03d}" for v in frame["user"]]
    frame["item"] = [f"i{v:03d}" for v in frame["item"]]
    model = fit_implicit(frame, model="als", n_factors=4)
    assert model.users.id_type == "str" and model.items.ids[0] == "i001"
    pred = model.predict(["u001", "nobody"], ["i001", "i001"])
    assert pred["user_known"].tolist() == [True, False]


def test_ranking_by_score_and_similar_items_from_a_loaded_als_artifact(split, tmp_path):
    """What ``recommend`` and ``similar_items`` compute, checked from the artifact by brute force."""
    train, _ = split
    model = fit_implicit(train, model="als", n_factors=8)
    ce.save_model(model, tmp_path / "als")
    loaded = ce.load_model(tmp_path / "als")
    from collabemb.metrics import top_k_rows

    user = 5
    rows, _ = top_k_rows(loaded, loaded.users.encode([user]), 10)
    scores = loaded.predict([user] * len(loaded.items), loaded.items.ids)
    best = scores.sort_values("prediction", ascending=False, kind="stable")["item"].to_numpy()[:10]
    np.testing.assert_array_equal(loaded.items.decode(rows[0]), best)
    group = (loaded.items.decode(rows[0]) - 1) % N_GROUPS
    assert (group == (user - 1) % N_GROUPS).mean() >= 0.9  # the user's own taste group

    similar = ce.similar_items(loaded, [1], k=5)
    vectors = table(loaded, "i_weight")[1:]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = unit @ unit[0]
    cosine[0] = -np.inf  # the query itself is excluded
    np.testing.assert_array_equal(similar["item"].to_numpy(), loaded.items.decode(np.argsort(-cosine)[:5] + 1))
    assert ((similar["item"].to_numpy() - 1) % N_GROUPS == 0).all()  # item 1's taste group


def test_recommend_from_a_loaded_als_artifact_excludes_seen_items(split, tmp_path):
    train, _ = split
    model = fit_implicit(train, model="als", n_factors=8)
    ce.save_model(model, tmp_path / "als")
    loaded = ce.load_model(tmp_path / "als")
    recs = ce.recommend(loaded, [5], k=10, seen=train)
    seen = set(train.frame.loc[train.frame["user"] == 5, "item"])
    assert len(recs) == 10 and not seen & set(recs["item"])
    from collabemb.metrics import top_k_rows

    exclude = sp.csr_matrix((np.ones(len(seen)), ([0] * len(seen), loaded.items.encode(list(seen)))), shape=(1, loaded.items.n_rows))
    rows, scores = top_k_rows(loaded, loaded.users.encode([5]), 10, exclude=exclude)
    np.testing.assert_array_equal(recs["item"].to_numpy(), loaded.items.decode(rows[0]))
    np.testing.assert_allclose(recs["score"].to_numpy(), scores[0], rtol=1e-5)
    pd.testing.assert_frame_equal(ce.recommend(loaded, [5], k=10), recs)  # the stored training pairs are train's


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collabemb", *args], capture_output=True, text=True, timeout=300)


def _main(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process (no interpreter start-up): exit status, stdout, stderr."""
    from collabemb.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def _table(stdout: str) -> dict[str, str]:
    """The metric table of ``collabemb evaluate``: the lines after the blank one."""
    lines = stdout.split("\n\n", 1)[1].strip().splitlines()
    return dict(line.split() for line in lines)


def test_cli_fits_implicit_models_and_evaluates_them(split, tmp_path, capsys):
    train, test = split
    train.frame.to_csv(tmp_path / "train.csv", index=False)
    test.frame.to_csv(tmp_path / "test.csv", index=False)
    options = ["--out", str(tmp_path / "als"), "--model", "als", "--n-factors", "8", "--threshold", "2", "--no-progress"]
    fitted = _cli("fit-implicit", str(tmp_path / "train.csv"), *options)  # once through the real entry point
    assert fitted.returncode == 0, fitted.stderr
    assert "trained als" in fitted.stdout and "row 0, the unknown slot: the mean of the known rows (not trained)" in fitted.stdout
    train_file, test_file = str(tmp_path / "train.csv"), str(tmp_path / "test.csv")
    code, out, err = _main(capsys, "evaluate", str(tmp_path / "als"), test_file, "--train", train_file, "--k", "5")
    assert code == 0, err
    assert "relevant: rating >= 2 (the model's training threshold)" in out
    table = _table(out)
    expected = evaluate(ce.load_model(tmp_path / "als"), test, train=train, k=5, threshold=2)
    assert set(table) == {"metric"} | set(expected)
    for name, value in expected.items():
        assert float(table[name]) == pytest.approx(value, abs=5e-5), name
    code, out, _ = _main(capsys, "info", str(tmp_path / "als"))
    assert code == 0 and "row 0         the unknown slot, the mean of the known rows (not trained)" in out


def test_cli_evaluate_of_a_rating_model_reports_rmse_and_refuses_without_seen_items(tmp_path, capsys):
    frame = planted_interactions(n_users=30, n_items=40, per_user=8)
    frame.to_csv(tmp_path / "r.csv", index=False)
    code, _, err = _main(capsys, "fit-implicit", str(tmp_path / "r.csv"), "--out", str(tmp_path / "pop"), "--model", "popularity")
    assert code == 0, err
    pop = ce.load_model(tmp_path / "pop")
    assert len(pop.seen_items) == len(frame)  # fit records every training pair
    pop.seen_items = ce.SeenItems.empty(pop.users.n_rows)
    with pytest.raises(ValueError, match="pass train="):
        evaluate(pop, ce.read_ratings(frame), k=3)
    settings = ["--epochs", "2", "--n-factors", "4", "--no-progress"]
    code, _, err = _main(capsys, "fit", str(tmp_path / "r.csv"), "--out", str(tmp_path / "edb"), *settings)
    assert code == 0, err
    code, out, err = _main(capsys, "evaluate", str(tmp_path / "edb"), str(tmp_path / "r.csv"), "--include-seen", "--k", "3")
    assert code == 0, err
    ranking = ["precision@3", "recall@3", "ndcg@3", "map@3", "hit_rate@3", "coverage@3"]
    assert list(_table(out)) == ["metric", "rmse", "mae", *ranking, "users", "excluded_test_pairs"]
