"""The fast training engine, engine choice, checkpoints, resume and Ctrl-C.

Every data set is built here (planted ratings from conftest, or collabemb.sample); nothing is
read from outside the test. The SIGINT test runs a real training process and interrupts it.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pandas as pd
import pytest
import torch

import collabemb as ce
from collabemb.engines import fast, row_decays
from collabemb.history import FitHistory
from collabemb.interactions import _registry_and_rows, encode
from collabemb.models import EmbeddingDotBias
from collabemb.registry import IdRegistry
from collabemb.sample import generate_sample
from collabemb.settings import ENGINE_DEFAULTS
from collabemb.train import default_y_range, read_checkpoint_state

from conftest import planted_ratings, snapshot_of

TABLES = ("u_weight", "i_weight", "u_bias", "i_bias")
SMALL = {"n_factors": 8, "threads": 1, "progress": False}


@pytest.fixture(scope="module")
def split():
    ratings = ce.read_ratings(planted_ratings(n_users=300, n_items=200, per_user=40))
    return ce.split_random(ratings, 0.2, seed=1)


def tables_equal(a, b) -> bool:
    """Whether two fitted models (or modules) have identical tables."""
    a, b = getattr(a, "module", a), getattr(b, "module", b)
    return all(torch.equal(getattr(a, n).weight, getattr(b, n).weight) for n in TABLES)


# --- the kernel ----------------------------------------------------------------------------


def reference_adagrad(users, items, ratings, p, q, bu, bi, lr, wd, lo, span):
    """Row-wise Adagrad, one rating at a time, in float64 numpy: what the kernel must compute."""
    p, q, bu, bi = (np.array(a, dtype=np.float64) for a in (p, q, bu, bi))
    gp, gq, gbu, gbi = np.zeros(len(p)), np.zeros(len(q)), np.zeros(len(p)), np.zeros(len(q))
    for u, i, r in zip(users, items, ratings):
        z = bu[u] + bi[i] + p[u] @ q[i]
        s = 1 / (1 + math.exp(-z))
        g = (r - (lo + span * s)) * span * s * (1 - s)
        gbu[u] += g * g
        bu[u] += lr * g / math.sqrt(gbu[u] + fast.ADAGRAD_EPS)
        gbi[i] += g * g
        bi[i] += lr * g / math.sqrt(gbi[i] + fast.ADAGRAD_EPS)
        du, di = g * q[i] - wd * p[u], g * p[u] - wd * q[i]
        gp[u] += np.mean(du**2)
        gq[i] += np.mean(di**2)
        p[u], q[i] = p[u] + lr / math.sqrt(gp[u] + fast.ADAGRAD_EPS) * du, q[i] + lr / math.sqrt(gq[i] + fast.ADAGRAD_EPS) * di
    return p, q, bu, bi


def run_kernel(users, items, ratings, p, q, bu, bi, *, lr, wd, lo, span, route_below=0):
    acc = [np.zeros(len(p), np.float32), np.zeros(len(q), np.float32), np.zeros(len(p), np.float32), np.zeros(len(q), np.float32)]
    return fast._adagrad_blocks(
        np.asarray(users, np.int32),
        np.asarray(items, np.int32),
        np.asarray(ratings, np.float32),
        np.zeros(1, np.int64),
        np.full(1, len(ratings), np.int64),
        np.full(1, lr, np.float32),
        p,
        q,
        bu,
        bi,
        *acc,
        np.float32(lo),
        np.float32(span),
        np.full(len(p), wd, np.float32),  # every row the same L2 strength (frequency_exponent 1)
        np.full(len(q), wd, np.float32),
        np.uint64(route_below),
        np.uint64(12345),
        np.uint64(678),
    )


def test_kernel_update_matches_row_wise_adagrad_written_out_in_python():
    rng = np.random.default_rng(0)
    p = rng.normal(0, 0.3, (4, 20)).astype(np.float32)  # 20 factors: not a multiple of the 16-float prefetch line
    q = rng.normal(0, 0.3, (3, 20)).astype(np.float32)
    bu = rng.normal(0, 0.1, 4).astype(np.float32)
    bi = rng.normal(0, 0.1, 3).astype(np.float32)
    users, items, ratings = [1, 2, 1, 3, 1, 2, 3], [1, 1, 2, 2, 1, 2, 1], [5, 1, 3, 4, 4.5, 2, 1]
    want = reference_adagrad(users, items, ratings, p, q, bu, bi, lr=0.1, wd=0.05, lo=0.6, span=4.8)
    row0 = p[0].copy()
    sq, count = run_kernel(users, items, ratings, p, q, bu, bi, lr=0.1, wd=0.05, lo=0.6, span=4.8)
    for got, expected in zip((p, q, bu, bi), want):
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)
    assert count == len(ratings) and sq > 0
    np.testing.assert_array_equal(p[0], row0)  # row 0 untouched without routing


def test_kernel_routes_every_rating_to_row_zero_when_asked_to():
    rng = np.random.default_rng(1)
    p, q = rng.normal(0, 0.1, (3, 8)).astype(np.float32), rng.normal(0, 0.1, (3, 8)).astype(np.float32)
    bu, bi = np.zeros(3, np.float32), np.zeros(3, np.float32)
    before = p.copy(), q.copy()
    sq, count = run_kernel([1, 2], [1, 2], [5, 5], p, q, bu, bi, lr=0.1, wd=0.0, lo=0.5, span=5.0, route_below=2**32)
    assert count == 0 and sq == 0.0  # routed ratings are not counted in the training RMSE
    np.testing.assert_array_equal(p[1:], before[0][1:])
    np.testing.assert_array_equal(q[1:], before[1][1:])
    assert bu[0] > 0 and bi[0] > 0 and bu[1:].tolist() == [0, 0]  # both slots learned "5 is above the midpoint"


def make_engine(model, frame, **kwargs):
    data = encode(ce.read_ratings(frame), model.users, model.items)
    args = {"seed": 0, "lr_at": lambda steps, per_epoch: np.full(len(steps), 0.1), "weight_decay": 0.1, "unknown_frac": 0.02, "threads": 1}
    return fast.FastEngine(model, data, **{**args, **kwargs})


def test_fast_engine_trains_the_modules_own_tensors_in_place():
    frame = planted_ratings()
    model = EmbeddingDotBias(IdRegistry(frame["user"]), IdRegistry(frame["item"]), n_factors=8, y_range=(0.6, 5.4))
    pointers = {n: getattr(model, n).weight.data_ptr() for n in TABLES}
    before = {n: getattr(model, n).weight.detach().clone() for n in TABLES}
    engine = make_engine(model, frame)
    result = engine.run_epoch(1, threading.Event(), lambda n: None)
    assert {n: getattr(model, n).weight.data_ptr() for n in TABLES} == pointers
    assert all(not torch.equal(getattr(model, n).weight, before[n]) for n in TABLES)
    assert result.count > 0.9 * len(frame) and math.isfinite(result.sq_sum)


def test_unknown_routing_share_follows_unknown_frac_whatever_the_thread_count():
    frame = ce.read_ratings(generate_sample(2000, 400, 60_000, seed=3).ratings).frame
    counts = {}
    for threads in (1, 2):
        model = EmbeddingDotBias(IdRegistry(frame["user"]), IdRegistry(frame["item"]), n_factors=8, y_range=(0.6, 5.4))
        engine = make_engine(model, frame, unknown_frac=0.2, threads=threads)
        ticks = []
        counts[threads] = engine.run_epoch(1, threading.Event(), ticks.append).count
        engine.close()
        assert sum(ticks) == len(frame)  # progress saw every rating once
    assert counts[1] == counts[2]  # the routing draws hash (epoch, position), not thread order
    assert counts[1] / len(frame) == pytest.approx(0.8 * 0.8, abs=0.01)  # neither user nor item routed


def test_a_set_stop_event_ends_the_epoch_without_a_result():
    frame = planted_ratings()
    model = EmbeddingDotBias(IdRegistry(frame["user"]), IdRegistry(frame["item"]), n_factors=8, y_range=(0.6, 5.4))
    stop = threading.Event()
    stop.set()
    for threads in (1, 2):
        engine = make_engine(model, frame, threads=threads)
        assert engine.run_epoch(1, stop, lambda n: None) is None
        engine.close()


def test_jit_falls_back_to_no_cache_when_numba_has_no_writable_cache_dir(monkeypatch):
    real = fast.numba.njit

    def njit(**kwargs):
        if kwargs.get("cache"):
            raise RuntimeError("cannot cache function 'twice': no locator available for file 'x.py'")
        return real(**kwargs)

    monkeypatch.setattr(fast.numba, "njit", njit)

    def twice(x):
        return 2 * x

    assert fast._jit(twice)(21) == 42


# --- fit with the fast engine ----------------------------------------------------------------


@pytest.mark.parametrize("exponent", [1.0, 0.5])
def test_fast_and_autograd_engines_reach_the_same_rmse_on_planted_data(split, exponent):
    train, valid = split
    baseline = math.sqrt(np.mean((valid.frame["rating"] - train.frame["rating"].mean()) ** 2))
    kw = {"threads": 1, "progress": False, "frequency_exponent": exponent}
    own = {"fast": {"weight_decay": 0.1}, "autograd": {}}  # each optimiser at its ml-100k strength of the plain penalty
    rmse = {name: ce.fit(train, valid=valid, engine=name, **own[name], **kw).history.valid_rmse[-1] for name in own}
    assert rmse["fast"] < 0.6 * baseline and rmse["autograd"] < 0.6 * baseline
    assert rmse["fast"] == pytest.approx(rmse["autograd"], abs=0.015)


def test_row_decays_scale_the_penalty_with_the_rating_count():
    users, items = np.array([1, 1, 1, 1, 2, 0]), np.array([1, 2, 1, 1, 2, 1])  # user 1: 4 ratings, user 2: 1; item 1: 4, item 2: 2
    flat_u, flat_i = row_decays(users, items, 4, 3, 0.2, 1.0)
    assert flat_u.tolist() == pytest.approx([0.2] * 4) and flat_i.tolist() == pytest.approx([0.2] * 3)
    du, di = row_decays(users, items, 4, 3, 0.2, 0.5)
    mean_u = 2.5  # users 1 and 2 rated; row 0 and the unrated row 3 keep weight_decay
    assert du.tolist() == pytest.approx([0.2, 0.2 * (4 / mean_u) ** -0.5, 0.2 * (1 / mean_u) ** -0.5, 0.2], rel=1e-6)
    assert di[0] == pytest.approx(0.2) and di[1] < di[2]  # the more often rated item, the less per rating
    totals = du[1:3] * np.array([4, 1])  # a pass's total penalty grows as n ** 0.5
    assert totals[0] / totals[1] == pytest.approx(2.0, rel=1e-6)


def test_fast_engine_with_one_thread_is_deterministic_for_a_seed(split):
    train, _ = split
    a, b, c = (ce.fit(train, engine="fast", seed=s, epochs=3, **SMALL) for s in (5, 5, 6))
    assert tables_equal(a, b)
    assert not torch.equal(a.module.u_weight.weight, c.module.u_weight.weight)
    assert a.history.train_rmse == b.history.train_rmse


def test_fast_engine_with_two_threads_is_deterministic_for_a_seed(split):
    train, _ = split
    runs = [ce.fit(train, engine="fast", seed=5, epochs=3, **{**SMALL, "threads": 2}) for _ in range(4)]
    for other in runs[1:]:
        assert tables_equal(runs[0], other)  # stratified: no two threads share a row, whatever the timing
        assert other.history.train_rmse == runs[0].history.train_rmse
    other_seed = ce.fit(train, engine="fast", seed=6, epochs=3, **{**SMALL, "threads": 2})
    assert not torch.equal(runs[0].module.u_weight.weight, other_seed.module.u_weight.weight)


def test_bucketing_puts_each_routed_rating_in_its_cell_in_chunk_order():
    rng = np.random.default_rng(4)
    n, rows, T, n_chunks = 5000, 50, 3, 40
    users, items = rng.integers(1, rows, n).astype(np.int32), rng.integers(1, rows, n).astype(np.int32)
    order, chunk_start = fast._hash_order(users, items, np.uint64(7), n_chunks)
    users, items = users[order], items[order]
    ratings = np.arange(n, dtype=np.float32)  # the rating is the place: shows where each went
    ublock, iblock = rng.integers(0, T, rows).astype(np.int32), rng.integers(0, T, rows).astype(np.int32)
    chunks = rng.permutation(n_chunks).astype(np.int64)
    route = (ublock, iblock, T, np.uint64(2**31), np.uint64(99), np.uint64(7))  # about half of each side routed to row 0
    counts = np.zeros(T * T, np.int64)
    empty_i, empty_f = np.empty(0, np.int32), np.empty(0, np.float32)
    fast._bucket_cells(users, items, ratings, chunk_start, chunks, *route, counts, empty_i, empty_i, empty_f)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out_u, out_i, out_r = np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, np.float32)
    fast._bucket_cells(users, items, ratings, chunk_start, chunks, *route, starts.copy(), out_u, out_i, out_r)
    visit = np.concatenate([np.arange(chunk_start[c], chunk_start[c + 1]) for c in chunks])
    cell = ublock[out_u] * T + iblock[out_i]
    assert np.array_equal(cell, np.repeat(np.arange(T * T), counts))  # cells laid out one after another
    m = out_r.astype(np.int64)
    assert sorted(m) == list(range(n))
    assert np.all((out_u == users[m]) | (out_u == 0)) and np.all((out_i == items[m]) | (out_i == 0))
    assert 0.4 < np.mean(out_u == 0) < 0.6
    rank = np.empty(n, np.int64)
    rank[visit] = np.arange(n)
    for c in range(T * T):  # within a cell: the epoch's chunk order
        assert np.all(np.diff(rank[m[starts[c] : starts[c] + counts[c]]]) > 0)


def test_the_layout_of_the_ratings_depends_on_their_pairs_not_on_their_input_order():
    rng = np.random.default_rng(5)
    n, n_chunks = 4000, 7
    users, items = rng.integers(1, 60, n).astype(np.int32), rng.integers(1, 90, n).astype(np.int32)
    order, chunk_start = fast._hash_order(users, items, np.uint64(11), n_chunks)
    assert sorted(order) == list(range(n)) and chunk_start[0] == 0 and chunk_start[-1] == n
    assert np.all(np.diff(chunk_start) > n / n_chunks / 2)  # chunks of about n / n_chunks ratings
    shuffled = rng.permutation(n)  # the same ratings read in another order, or split between processes
    order2, chunk_start2 = fast._hash_order(users[shuffled], items[shuffled], np.uint64(11), n_chunks)
    assert np.array_equal(chunk_start, chunk_start2)
    pairs = np.stack([users[order], items[order]])
    assert np.array_equal(pairs, np.stack([users[shuffled][order2], items[shuffled][order2]]))
    mine = users % 2 == 0  # one process's users: their layout is the whole layout, restricted to them
    order3, chunk_start3 = fast._hash_order(users[mine], items[mine], np.uint64(11), n_chunks)
    assert np.array_equal(np.stack([users[mine][order3], items[mine][order3]]), pairs[:, pairs[0] % 2 == 0])
    other_key, _ = fast._hash_order(users, items, np.uint64(12), n_chunks)
    assert not np.array_equal(order, other_key)


def test_fast_engine_with_two_threads_trains_as_well_as_with_one(split):
    train, valid = split
    one = ce.fit(train, valid=valid, engine="fast", threads=1, progress=False)
    two = ce.fit(train, valid=valid, engine="fast", threads=2, progress=False)
    assert two.history.params["threads"] == 2
    assert two.history.valid_rmse[-1] == pytest.approx(one.history.valid_rmse[-1], abs=0.01)


def test_auto_engine_is_the_fast_one_on_cpu_and_each_records_its_optimiser(split):
    train, _ = split
    auto = ce.fit(train, epochs=1, **SMALL)
    grad = ce.fit(train, epochs=1, engine="autograd", **SMALL)
    assert (auto.history.params["engine"], auto.history.params["optimizer"]) == ("fast", "adagrad-rowwise")
    assert (grad.history.params["engine"], grad.history.params["optimizer"]) == ("autograd", "adam")
    assert auto.history.params["lr"] == ENGINE_DEFAULTS["fast"]["lr"]
    assert grad.history.params["weight_decay"] == ENGINE_DEFAULTS["autograd"]["weight_decay"]
    assert auto.history.params["batch_size"] is None and grad.history.params["batch_size"] == len(train) // 50
    assert len(auto.history.train_seconds) == 1 and auto.history.train_seconds[0] <= auto.history.seconds[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"engine": "warp"}, "engine must be one of"),
        ({"engine": "fast", "batch_size": 256}, "batch_size applies to the autograd engine only"),
        ({"engine": "fast", "device": "meta"}, "the fast engine trains on the CPU"),
        ({"threads": 0}, "threads must be >= 1"),
        ({"valid_sample": 0}, "valid_sample must be"),
    ],
)
def test_fit_rejects_engine_arguments_that_cannot_work(ratings_frame, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ce.fit(ratings_frame, **{**SMALL, **kwargs})


def test_validation_is_scored_on_a_fixed_sample_when_it_is_large(split):
    train, valid = split
    model = ce.fit(train, valid=valid, epochs=2, valid_sample=500, **SMALL)
    assert model.history.params["valid_sample"] == 500 and model.history.params["n_valid"] == len(valid)
    full = ce.rmse(model, valid)
    assert model.history.valid_rmse[-1] != full and model.history.valid_rmse[-1] == pytest.approx(full, abs=0.05)


def test_progress_bar_reports_ratings_per_second(split, capsys):
    train, _ = split
    ce.fit(train, epochs=2, n_factors=8, threads=1, progress=True)
    assert "rating/s" in capsys.readouterr().err


def test_training_ids_are_encoded_as_the_registry_would(ratings_frame):
    cases = {
        "dense ints": pd.Series([5, 3, 5, 9, 3], dtype=np.int64),
        "sparse ints": pd.Series([10**15, -(10**15), 7, 10**15], dtype=np.int64),
        "strings": pd.Series(["b", "a", "007", "b"], dtype=object),
    }
    for name, column in cases.items():
        registry, rows = _registry_and_rows(column, "user")
        expected = IdRegistry(column, name="user")
        assert registry == expected, name
        assert rows.dtype == np.int32 and rows.tolist() == expected.encode(column).tolist(), name


def test_history_of_an_older_artifact_loads_without_the_new_fields():
    old = {
        "epoch": [1],
        "lr": [0.01],
        "train_rmse": [1.0],
        "valid_rmse": [None],
        "seconds": [0.5],
        "best_epoch": None,
        "stopped_early": False,
        "params": {},
    }
    h = FitHistory.from_dict({**old, "some_future_field": 1})
    assert h.train_seconds == [] and h.stop_reason is None and h.epoch == [1]


# --- checkpoints, resume, Ctrl-C --------------------------------------------------------------


def stop_after(epoch: int):
    return lambda history: history.epoch[-1] == epoch


@pytest.mark.parametrize(("engine", "threads"), [("fast", 1), ("fast", 2), ("autograd", 1)])
def test_resume_continues_the_epoch_count_and_the_schedule_to_the_same_weights(split, tmp_path, engine, threads):
    train, valid = split
    kw = {"valid": valid, "epochs": 5, "engine": engine, **SMALL, "threads": threads}
    whole = ce.fit(train, **kw)
    first = ce.fit(train, checkpoint=tmp_path / "ck", on_epoch=stop_after(2), **kw)
    assert first.history.epoch == [1, 2] and first.history.stop_reason == "callback"
    assert read_checkpoint_state(tmp_path / "ck")["epoch"] == 2
    rest = ce.fit(train, resume=tmp_path / "ck", checkpoint=tmp_path / "ck", **kw)
    assert rest.history.epoch == [1, 2, 3, 4, 5] and rest.history.stop_reason is None
    assert rest.history.lr == pytest.approx(whole.history.lr, rel=1e-12)
    assert rest.history.train_rmse == pytest.approx(whole.history.train_rmse, rel=1e-12)
    assert tables_equal(rest, whole)
    assert read_checkpoint_state(tmp_path / "ck")["epoch"] == 5
    again = ce.fit(train, resume=tmp_path / "ck", **kw)  # a finished checkpoint: nothing left to do
    assert again.history.epoch == [1, 2, 3, 4, 5] and tables_equal(again, whole)


def test_resume_keeps_early_stopping_state_and_the_best_weights(split, tmp_path):
    train, valid = split
    kw = {"valid": valid, "epochs": 40, "weight_decay": 0.0, "lr": 0.3, "lr_schedule": "constant", "early_stopping": 2, **SMALL}
    whole = ce.fit(train, **kw)
    assert whole.history.stopped_early and whole.history.best_epoch > 1
    ce.fit(train, checkpoint=tmp_path / "ck", on_epoch=stop_after(whole.history.best_epoch + 1), **kw)
    rest = ce.fit(train, resume=tmp_path / "ck", **kw)
    assert rest.history.epoch == whole.history.epoch and rest.history.best_epoch == whole.history.best_epoch
    assert rest.history.stop_reason == "early_stopping"
    assert tables_equal(rest, whole)


def test_resume_refuses_other_settings_or_other_data(split, tmp_path):
    train, valid = split
    ce.fit(train, epochs=3, checkpoint=tmp_path / "ck", on_epoch=stop_after(1), **SMALL)
    with pytest.raises(ValueError, match=r"trained with lr=0\.1 \(this call: 0\.2\)"):
        ce.fit(train, epochs=3, lr=0.2, resume=tmp_path / "ck", **SMALL)
    with pytest.raises(ValueError, match=r"epochs=3 \(this call: 4\)"):
        ce.fit(train, epochs=4, resume=tmp_path / "ck", **SMALL)
    other = train.frame.copy()
    other.loc[0, "rating"] = 6 - other.loc[0, "rating"] if other.loc[0, "rating"] != 3 else 1
    with pytest.raises(ValueError, match="training ratings differ"):
        ce.fit(other, epochs=3, y_range=default_y_range(train.frame["rating"].to_numpy()), resume=tmp_path / "ck", **SMALL)
    with pytest.raises(ValueError, match="no complete collabemb checkpoint here"):
        ce.fit(train, epochs=3, resume=tmp_path, **SMALL)


def test_checkpoint_is_a_loadable_artifact_replaced_after_every_epoch(split, tmp_path):
    train, valid = split
    seen = []
    model = ce.fit(
        train,
        valid=valid,
        epochs=3,
        checkpoint=tmp_path / "ck",
        on_epoch=lambda h: seen.append(read_checkpoint_state(tmp_path / "ck")["epoch"]),
        **SMALL,
    )
    assert seen == [1, 2, 3]
    loaded = ce.load_model(tmp_path / "ck")
    assert tables_equal(loaded, model)
    assert loaded.history.epoch == [1, 2, 3] and loaded.history.params["engine"] == "fast"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary directories left behind
    state = json.loads((snapshot_of(tmp_path / "ck") / "training_state.json").read_text())
    assert state["format"] == "collabemb-checkpoint" and state["settings"]["epochs"] == 3
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a collabemb artifact or checkpoint; refusing"):
        ce.fit(train, epochs=1, checkpoint=tmp_path / "other", **SMALL)


SIGINT_SCRIPT = textwrap.dedent(
    """
    import sys
    import collabemb as ce
    from collabemb.sample import generate_sample

    data = generate_sample(3000, 800, 300_000, seed=1).ratings
    def on_epoch(history):
        print(f"epoch {history.epoch[-1]}", flush=True)
    model = ce.fit(data, epochs=400, n_factors=16, threads=1, checkpoint=sys.argv[1], on_epoch=on_epoch, progress=False)
    print(f"stopped {model.history.stop_reason} after {model.history.epoch[-1]}", flush=True)
    ce.save_model(model, sys.argv[2])
    """
)


def test_ctrl_c_keeps_the_last_finished_epoch_and_leaves_a_loadable_checkpoint(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SIGINT_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "ck"), str(tmp_path / "final")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        for line in proc.stdout:
            if line.strip() == "epoch 2":
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped interrupted after" in out and "Ctrl-C" in err
    kept = int(out.split("stopped interrupted after")[1].split()[0])
    assert 2 <= kept < 400
    checkpoint = ce.load_model(tmp_path / "ck")
    final = ce.load_model(tmp_path / "final")
    assert read_checkpoint_state(tmp_path / "ck")["epoch"] == kept == len(final.history.epoch)
    assert final.history.stop_reason == "interrupted"
    assert tables_equal(checkpoint, final)  # the model kept exactly the checkpointed epoch


def test_cli_fit_checkpoints_and_refuses_to_resume_with_other_settings(tmp_path, capsys):
    from collabemb.cli import main

    planted_ratings().to_csv(tmp_path / "r.csv", index=False)
    args = [
        "fit",
        str(tmp_path / "r.csv"),
        "--out",
        str(tmp_path / "art"),
        "--epochs",
        "3",
        "--n-factors",
        "8",
        "--threads",
        "1",
        "--no-progress",
    ]
    assert main([*args, "--engine", "fast", "--checkpoint", str(tmp_path / "ck")]) == 0
    assert read_checkpoint_state(tmp_path / "ck")["epoch"] == 3
    assert main([*args, "--resume", str(tmp_path / "ck")]) == 0  # finished: the saved model, nothing more to train
    assert tables_equal(ce.load_model(tmp_path / "art"), ce.load_model(tmp_path / "ck"))
    capsys.readouterr()
    assert main([*args, "--lr", "0.5", "--resume", str(tmp_path / "ck")]) == 2
    assert "cannot resume: the checkpoint was trained with lr=0.1 (this call: 0.5)" in capsys.readouterr().err
