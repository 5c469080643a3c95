"""The history-aware model (``model="svdpp"``): its kernel against a numpy reference, what it learns,
new users from their history, determinism, checkpoints and the artifact."""

from __future__ import annotations

import hashlib
import json
import math
import struct
import threading

import numpy as np
import pandas as pd
import pytest
import torch

import collabemb as ce
from collabemb.artifact import HISTORY_TABLE, TENSORS_FILE, read_model_card
from collabemb.engines.svdpp import SvdppEngine
from collabemb.interactions import encode
from collabemb.models import EmbeddingDotBias

from conftest import planted_ratings, reseal, snapshot_of


def load_metadata(data: bytes) -> dict:
    """A safetensors file's own metadata (what the artifact binds to config.json)."""
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length])["__metadata__"]


def _schedule(lr: float):
    return lambda steps, per_epoch: np.full(len(steps), lr)


def _engine(frame: pd.DataFrame, *, threads: int = 1, k: int = 4, seed: int = 3):
    data = encode(ce.read_ratings(frame))
    module = EmbeddingDotBias(data.users, data.items, n_factors=k, y_range=(0.5, 5.5))
    module.reset_parameters(torch.Generator().manual_seed(seed))
    engine = SvdppEngine(
        module,
        data,
        seed=seed,
        lr_at=_schedule(0.1),
        weight_decay=0.05,
        unknown_frac=0.0,
        threads=threads,
        seen=data.seen(),
        history_lr=0.5,
        history_weight_decay=0.3,
    )
    return module, engine, data


def _reference_epoch(engine: SvdppEngine, epoch: int, state: dict) -> dict:
    """One epoch written out in numpy (float64), in the engine's own group order: Koren's per-user
    pass with row-wise Adagrad, the history sum formed once per user, then one step per history vector."""
    rng = np.random.default_rng(np.random.SeedSequence([engine.seed, 1, epoch]))
    rng.integers(0, 2**63)  # the routing key (nothing is routed here)
    groups = engine._cell_groups[0] + rng.permutation(engine._cell_groups[1] - engine._cell_groups[0])
    p, q, bu, bi, y = (state[n].astype(np.float64) for n in ("p", "q", "bu", "bi", "y"))
    gp, gq, gbu, gbi, gy = (state[n].astype(np.float64) for n in ("gp", "gq", "gbu", "gbi", "gy"))
    lo, span, wd, ywd, ylr, lr, eps = 0.5, 5.0, 0.05, 0.3, 0.5, 0.1, 1e-8
    k = p.shape[1]
    for g in groups:
        a, b = engine._gstart[g], engine._gstart[g + 1]
        u = engine.users[a]
        hist = engine._hist_items[engine._hist_ptr[u, 0] : engine._hist_ptr[u, 1]]
        c = 1 / math.sqrt(len(hist))
        v = p[u] + c * y[hist].sum(axis=0)
        grad = np.zeros(k)
        for r in range(a, b):
            i = engine.items[r]
            s = 1 / (1 + math.exp(-(v @ q[i] + bu[u] + bi[i])))
            e = engine.ratings[r] - (lo + span * s)
            gr = e * span * s * (1 - s)
            gbu[u] += gr * gr
            bu[u] += lr * gr / math.sqrt(gbu[u] + eps)
            gbi[i] += gr * gr
            bi[i] += lr * gr / math.sqrt(gbi[i] + eps)
            du, di = gr * q[i] - wd * p[u], gr * v - wd * q[i]
            gp[u] += du @ du / k
            gq[i] += di @ di / k
            step_u, step_i = lr / math.sqrt(gp[u] + eps), lr / math.sqrt(gq[i] + eps)
            grad += gr * q[i]
            p[u], v, q[i] = p[u] + step_u * du, v + step_u * du, q[i] + step_i * di
        n2 = (c * grad) @ (c * grad) / k  # each history row's accumulator takes the user's gradient
        for j in hist:
            gy[j] += n2
            y[j] += ylr * lr / math.sqrt(gy[j] + eps) * (c * grad - ywd * y[j])
    effective = p.copy()
    for u in range(1, len(p)):
        hist = engine._hist_items[engine._hist_ptr[u, 0] : engine._hist_ptr[u, 1]]
        effective[u] += y[hist].sum(axis=0) / math.sqrt(len(hist))
    return {"p": p, "q": q, "bu": bu, "bi": bi, "y": y, "effective": effective}


def _state(engine: SvdppEngine) -> dict:
    gp, gq, gbu, gbi = engine._acc
    tables = {"p": engine._p, "q": engine._q, "bu": engine._bu, "bi": engine._bi, "y": engine._y}
    return {**tables, "gp": gp, "gq": gq, "gbu": gbu, "gbi": gbi, "gy": engine._gy}


def test_the_kernel_takes_the_steps_of_a_numpy_reference():
    module, engine, _ = _engine(planted_ratings(12, 9, 5, seed=1))
    try:
        for epoch in (1, 2):  # the second epoch starts from non-zero history vectors
            want = _reference_epoch(engine, epoch, {n: a.copy() for n, a in _state(engine).items()})
            assert engine.run_epoch(epoch, threading.Event(), lambda n: None) is not None
            got = _state(engine)
            for name in ("p", "q", "bu", "bi", "y"):
                np.testing.assert_allclose(got[name], want[name], rtol=2e-4, atol=2e-6, err_msg=name)
            np.testing.assert_allclose(module.u_weight.weight.detach().numpy(), want["effective"], rtol=2e-4, atol=2e-6)
            assert np.abs(engine._y).max() > 0
    finally:
        engine.close()


def _history_planted(n_users=600, n_items=40, n_train=6, n_test=8, seed=0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Few ratings per user, whose taste is the normalised sum of the planted item vectors y of the
    items it rated in training: what the history term models (and six ratings hardly teach a dot model)."""
    rng = np.random.default_rng(seed)
    y = rng.normal(0, 1.0, (n_items, 3))
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, n_train + n_test, replace=False)
        taste = y[items[:n_train]].sum(axis=0) / np.sqrt(n_train) * 1.5
        score = 3.0 + (y[items] @ taste) * 0.5 + rng.normal(0, 0.2, len(items))
        stars = np.clip(np.rint(score), 1, 5)
        rows += [(u + 1, i + 1, r, j >= n_train) for j, (i, r) in enumerate(zip(items, stars, strict=True))]
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "test"])
    return frame[~frame.test].drop(columns="test"), frame[frame.test].drop(columns="test")


#: History settings for the planted sets (the defaults are ml-100k's, where the history term is a small correction)
PLANTED = {"epochs": 25, "n_factors": 8, "threads": 1, "seed": 0, "progress": False, "history_lr": 3.0, "history_weight_decay": 0.01}


def test_svdpp_learns_planted_history_structure_the_dot_model_misses():
    train, test = _history_planted()
    dot = ce.rmse(ce.fit(train, **{k: v for k, v in PLANTED.items() if not k.startswith("history")}), test)
    svdpp_model = ce.fit(train, model="svdpp", **PLANTED)
    svdpp = ce.rmse(svdpp_model, test)
    assert svdpp < 0.8 * dot, (svdpp, dot)
    assert svdpp_model.identity.rating_model == "svdpp"
    assert np.abs(svdpp_model.history_vectors[1:]).mean() > 1e-3  # the history vectors carry weight


def test_a_new_users_vector_from_history_is_what_training_gave_them():
    train, test = _history_planted(seed=1)
    model = ce.fit(train, model="svdpp", **PLANTED)
    users = train.user.unique()[:40]
    cosines = []
    for u in users:  # each user folded in afresh from its own training ratings, as if it were new
        fold = ce.fold_in_users(model, train[train.user == u][["item", "rating"]])
        assert fold.source[0] == "fold_in"
        vector = model.weight([u], "user")[0]
        cosines.append(vector @ fold.vectors[0] / (np.linalg.norm(vector) * np.linalg.norm(fold.vectors[0])))
    assert np.median(cosines) > 0.9, np.median(cosines)
    # the history vector alone (no solve): the stored y summed over the user's rated items
    u = users[0]
    rows = model.items.encode(train[train.user == u].item)
    expected = model.history_vectors[np.unique(rows)].astype(np.float64).sum(0) / np.sqrt(len(np.unique(rows)))
    np.testing.assert_allclose(model.history_vector(rows), expected, rtol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_and_threads_give_identical_weights(threads):
    frame = planted_ratings(80, 50, 20, seed=4)
    kw = {"model": "svdpp", "epochs": 3, "n_factors": 8, "threads": threads, "seed": 7, "progress": False, "unknown_frac": 0.1}
    a, b = ce.fit(frame, **kw), ce.fit(frame, **kw)
    for name in ("u_weight", "i_weight", "u_bias", "i_bias"):
        assert torch.equal(getattr(a.module, name).weight, getattr(b.module, name).weight), name
    assert np.array_equal(a.history_vectors, b.history_vectors)
    assert np.isfinite(a.module.u_weight.weight.detach().numpy()).all()
    assert a.module.u_weight.weight[0].abs().sum() > 0  # the unknown slot trained too


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    frame = planted_ratings(60, 40, 15, seed=5)
    kw = {"model": "svdpp", "epochs": 4, "n_factors": 6, "threads": 2, "seed": 1, "progress": False}
    whole = ce.fit(frame, **kw)
    first = ce.fit(frame, checkpoint=tmp_path / "ck", on_epoch=lambda h: len(h.epoch) == 2, **kw)
    # the checkpoint is a model with the history vectors of its epoch (as its effective user vectors are)
    assert np.abs(first.history_vectors).sum() > 0
    assert np.array_equal(ce.load_model(tmp_path / "ck").history_vectors, first.history_vectors)
    rest = ce.fit(frame, resume=tmp_path / "ck", **kw)
    assert rest.history.epoch == [1, 2, 3, 4]
    assert torch.equal(rest.module.u_weight.weight, whole.module.u_weight.weight)
    assert np.array_equal(rest.history_vectors, whole.history_vectors)


def test_the_artifact_keeps_the_history_vectors_and_refuses_tampering(tmp_path):
    frame = planted_ratings(40, 30, 10, seed=6)
    model = ce.fit(frame, model="svdpp", epochs=2, n_factors=4, threads=1, progress=False)
    ce.save_model(model, tmp_path / "m")
    back = ce.load_model(tmp_path / "m")
    assert back.identity.rating_model == "svdpp"
    assert "history-aware" in read_model_card(tmp_path / "m")
    assert np.array_equal(back.history_vectors, model.history_vectors)
    pairs = frame.iloc[:50]
    assert np.array_equal(back.predict(pairs.user, pairs.item).prediction, model.predict(pairs.user, pairs.item).prediction)
    # the fifth tensor removed (and the snapshot resealed): refused, naming the tensor
    from safetensors.torch import load, save

    path = snapshot_of(tmp_path / "m") / TENSORS_FILE
    tensors = load(path.read_bytes())
    del tensors[HISTORY_TABLE]
    data = save(tensors, metadata=load_metadata(path.read_bytes()))
    path.write_bytes(data)
    config_path = path.parent / "config.json"
    config = json.loads(config_path.read_text())
    config["tensors_sha256"] = hashlib.sha256(data).hexdigest()
    config_path.write_text(json.dumps(config))
    reseal(tmp_path / "m")
    with pytest.raises(ce.ArtifactError, match=HISTORY_TABLE):
        ce.load_model(tmp_path / "m")


def test_new_items_have_no_history_and_the_table_grows_with_them():
    frame = planted_ratings(40, 30, 10, seed=8)
    model = ce.fit(frame, model="svdpp", epochs=2, n_factors=4, threads=1, progress=False)
    n = model.items.n_rows
    ce.fold_in_items(model, pd.DataFrame({"item": [999, 999], "user": [1, 2], "rating": [4.0, 5.0]}), add=True)
    assert model.history_vectors.shape == (n + 1, 4)
    assert not model.history_vectors[-1].any()


def test_svdpp_refusals():
    frame = planted_ratings(20, 15, 5)
    with pytest.raises(ValueError, match="fast engine"):
        ce.fit(frame, model="svdpp", engine="autograd", epochs=1, progress=False)
    with pytest.raises(ValueError, match="early_stopping"):
        ce.fit(frame, valid=frame, model="svdpp", early_stopping=2, epochs=2, progress=False)
    with pytest.raises(ValueError, match="model must be one of"):
        ce.fit(frame, model="svd++", epochs=1, progress=False)
    dot = ce.fit(frame, epochs=1, progress=False)
    with pytest.raises(ValueError, match="svdpp"):
        dot.history_vectors = np.zeros((dot.items.n_rows, 64), np.float32)


def test_the_server_folds_a_new_user_in_from_history_as_fold_in_users_does(tmp_path):
    from collabemb.serve_app import load_served

    frame = planted_ratings(60, 40, 12, seed=9)
    model = ce.fit(frame, model="svdpp", epochs=3, n_factors=6, threads=1, progress=False)
    ce.save_model(model, tmp_path / "m")
    served = load_served(tmp_path / "m")
    items, ratings = [3, 7, 11, 19], [5.0, 4.0, 1.0, 3.0]
    vector, bias, query, rated = served.fold_in(items, ratings)
    want = ce.fold_in_users(model, pd.DataFrame({"item": items, "rating": ratings}))
    assert query["source"] == "fold_in" and query["n_ratings"] == 4
    np.testing.assert_allclose(vector[0], want.vectors[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(bias, want.biases, rtol=1e-6, atol=1e-7)
