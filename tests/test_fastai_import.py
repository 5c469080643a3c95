"""from_fastai / from_fastai_parts / fit_unknown_rows (collabemb/fastai_import.py).

The real-fastai round trip runs in its own process (tests/fastai_roundtrip.py: fastai patches torch
when imported); the other tests build fastai-shaped pieces by hand, so they run without fastai.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import expit

import collabemb as ce

HERE = Path(__file__).resolve().parent
# CI installs fastai (.ci/install); elsewhere the real-fastai test is skipped when it is missing
HAVE_FASTAI = importlib.util.find_spec("fastai") is not None
needs_fastai = pytest.mark.skipif(not HAVE_FASTAI and os.environ.get("CI") != "true", reason="fastai is not installed")


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("fastai")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(HERE / "fastai_roundtrip.py"), str(out)], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_fastai
def test_a_real_fastai_learner_predicts_the_same_after_import(roundtrip: dict) -> None:
    assert roundtrip["untrained"]["known_max_diff"] <= 1e-5
    assert roundtrip["untrained"]["unseen_max_diff"] <= 1e-5  # fastai's #na# row, kept as it is
    assert roundtrip["mean"]["known_max_diff"] <= 1e-5 and roundtrip["fitted"]["known_max_diff"] <= 1e-5
    assert roundtrip["mean"]["unseen_max_diff"] > 1e-4 and roundtrip["fitted"]["unseen_max_diff"] > 1e-4  # row 0 replaced
    assert [roundtrip[r]["row0"] for r in ("untrained", "mean", "fitted")] == ["untrained", "mean", "fitted"]
    assert roundtrip["untrained"]["known_flags"] == [False, False]  # the unseen pairs are flagged as such


@needs_fastai
def test_fastai_weight_and_bias_habits_give_fastais_numbers(roundtrip: dict) -> None:
    """weight(ids) / bias(ids) default to items, and is_item=False to users, exactly as fastai's model."""
    assert roundtrip["weight_diff"] == 0.0 and roundtrip["user_weight_diff"] == 0.0 and roundtrip["bias_diff"] == 0.0


@needs_fastai
def test_import_keeps_training_pairs_and_survives_save_and_load(roundtrip: dict) -> None:
    assert roundtrip["seen_equals_train_pairs"] and roundtrip["n_seen"] > 0
    assert roundtrip["reloaded_max_diff"] <= 1e-5
    assert roundtrip["reloaded_row0"] == "untrained" and roundtrip["reloaded_params_source"] == "fastai"
    assert len(roundtrip["similar"]) == 3 and "movie 003" not in roundtrip["similar"]
    assert roundtrip["parts_max_diff"] <= 1e-5  # learn.save's {"model": state_dict} shape, plus dls.classes


@needs_fastai
def test_an_embedding_nn_learner_is_refused_saying_why(roundtrip: dict) -> None:
    assert "EmbeddingNN" in roundtrip["embedding_nn"] and "use_nn=False" in roundtrip["embedding_nn"]


# --- fastai-shaped pieces built by hand ------------------------------------------------------------


def fastai_pieces(seed: int = 0, k: int = 4, shuffle: bool = True) -> tuple[dict, dict]:
    """A fastai-shaped state_dict and classes whose ID order is NOT sorted (so rows must be relabelled)."""
    rng = np.random.default_rng(seed)
    users = [int(v) for v in rng.choice(1000, 12, replace=False)]
    items = [f"item {v}" for v in rng.choice(1000, 15, replace=False)]
    if not shuffle:
        users, items = sorted(users), sorted(items)
    classes = {"user_id": ["#na#", *users], "movie": ["#na#", *items]}
    state = {
        "u_weight.weight": torch.randn(13, k, generator=torch.Generator().manual_seed(seed)),
        "i_weight.weight": torch.randn(16, k, generator=torch.Generator().manual_seed(seed + 1)),
        "u_bias.weight": torch.randn(13, 1, generator=torch.Generator().manual_seed(seed + 2)),
        "i_bias.weight": torch.randn(16, 1, generator=torch.Generator().manual_seed(seed + 3)),
    }
    return state, classes


def fastai_forward(state: dict, u: np.ndarray, i: np.ndarray, y_range) -> np.ndarray:
    """fastai's EmbeddingDotBias.forward, written out on fastai's own rows."""
    uw, iw = state["u_weight.weight"].numpy(), state["i_weight.weight"].numpy()
    z = (uw[u] * iw[i]).sum(1) + state["u_bias.weight"].numpy()[u, 0] + state["i_bias.weight"].numpy()[i, 0]
    return z if y_range is None else expit(z) * (y_range[1] - y_range[0]) + y_range[0]


@pytest.mark.parametrize("y_range", [(0.5, 5.5), None])
def test_rows_are_relabelled_when_fastais_order_differs_from_ours(y_range) -> None:
    state, classes = fastai_pieces()
    fitted = ce.from_fastai_parts(state, classes, y_range=y_range)
    u = np.repeat(np.arange(1, 13), 15)
    i = np.tile(np.arange(1, 16), 12)
    users = [classes["user_id"][r] for r in u]
    items = [classes["movie"][r] for r in i]
    ours = fitted.predict(users, items).prediction.to_numpy()
    np.testing.assert_allclose(ours, fastai_forward(state, u, i, y_range), atol=1e-5)
    assert fitted.users.ids.tolist() == sorted(classes["user_id"][1:])  # our registry sorted, rows moved with it
    np.testing.assert_array_equal(fitted.weight([classes["movie"][5]])[0], state["i_weight.weight"][5].numpy())


def test_row0_untrained_kept_or_mean_of_known_rows() -> None:
    state, classes = fastai_pieces()
    kept = ce.from_fastai_parts(state, classes, y_range=(0.5, 5.5))
    assert kept.identity.row0 == "untrained"
    np.testing.assert_array_equal(kept.tables("user")[0][0], state["u_weight.weight"][0].numpy())
    mean = ce.from_fastai_parts(state, classes, y_range=(0.5, 5.5), unknown_row="mean")
    weights, biases = mean.tables("item")
    np.testing.assert_allclose(weights[0], weights[1:].mean(0), atol=1e-6)
    np.testing.assert_allclose(biases[0], biases[1:].mean(), atol=1e-6)
    assert mean.identity.row0 == "mean"


def test_integral_float_classes_become_int_ids() -> None:
    state, classes = fastai_pieces(shuffle=False)
    classes["user_id"] = ["#na#", *(float(v) for v in classes["user_id"][1:])]  # an int column fastai read as float
    fitted = ce.from_fastai_parts(state, classes, y_range=None)
    assert fitted.users.id_type == "int" and fitted.users.ids.tolist() == [int(v) for v in classes["user_id"][1:]]


@pytest.mark.parametrize("y_range", [(0.5, 5.5), None])
def test_fit_unknown_rows_solves_the_average_user_and_item(y_range) -> None:
    """Row 0 ends at the minimum of the rating objective over all given ratings (gradient ~ 0),
    better than the mean row on those ratings; every other row is left as it was."""
    state, classes = fastai_pieces()
    fitted = ce.from_fastai_parts(state, classes, y_range=y_range)
    before = {t: [a.copy() for a in fitted.tables(t)] for t in ("user", "item")}
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "user": rng.choice(classes["user_id"][1:], 300),
            "item": rng.choice(classes["movie"][1:], 300),
            "rating": rng.integers(1, 6, 300).astype(float),
        }
    )
    frame = frame.drop_duplicates(["user", "item"])
    wd = 0.05
    ce.fit_unknown_rows(fitted, frame, weight_decay=wd)
    assert fitted.identity.row0 == "fitted"
    item_w, item_b = fitted.tables("item")
    rows = fitted.items.encode(frame["item"])
    v, b = fitted.tables("user")[0][0].astype(np.float64), float(fitted.tables("user")[1][0])
    z = item_w[rows] @ v + b + item_b[rows]
    r = frame["rating"].to_numpy()
    if y_range is None:
        e, dz = z - r, np.ones_like(z)
    else:
        s = expit(z)
        e, dz = y_range[0] + (y_range[1] - y_range[0]) * s - r, (y_range[1] - y_range[0]) * s * (1 - s)
    grad_v = 2 * (item_w[rows].T @ (e * dz)) + 2 * wd * len(r) * v
    grad_b = 2 * float(np.sum(e * dz))
    assert np.abs(grad_v).max() < 1e-4 * len(r) and abs(grad_b) < 1e-4 * len(r)
    for table in ("user", "item"):
        np.testing.assert_array_equal(fitted.tables(table)[0][1:], before[table][0][1:])
        assert not np.array_equal(fitted.tables(table)[0][0], before[table][0][0])
    unknown = fitted.predict([123456] * len(frame), frame["item"].to_list()).prediction.to_numpy()
    mean_model = ce.from_fastai_parts(state, classes, y_range=y_range, unknown_row="mean")
    mean_unknown = mean_model.predict([123456] * len(frame), frame["item"].to_list()).prediction.to_numpy()
    assert np.mean((unknown - r) ** 2) < np.mean((mean_unknown - r) ** 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s, c: s.update({"embeds.0.weight": torch.zeros(3, 2)}), "EmbeddingNN"),
        (lambda s, c: s.pop("i_bias.weight"), "missing i_bias.weight"),
        (lambda s, c: c.update({"movie": c["movie"][1:]}), "must start with '#na#'"),
        (lambda s, c: c.update({"movie": c["movie"][:-1]}), "has 15 entries but the item tables have 16 rows"),
        (lambda s, c: c.update({"movie": [*c["movie"][:-1], c["movie"][1]]}), "repeats an ID"),
        (lambda s, c: c.update({"user_id": ["#na#", "a", *c["user_id"][2:]]}), "IDs must be all ints or all strings"),
    ],
)
def test_pieces_that_do_not_fit_are_refused_saying_what(change, message) -> None:
    state, classes = fastai_pieces()
    change(state, classes)
    with pytest.raises((ValueError, TypeError), match=message):
        ce.from_fastai_parts(state, classes, y_range=(0.5, 5.5))


def test_a_non_learner_and_bad_unknown_row_are_refused() -> None:
    with pytest.raises(TypeError, match="fastai collab Learner"):
        ce.from_fastai(object())
    state, classes = fastai_pieces()
    with pytest.raises(ValueError, match="unknown_row"):
        ce.from_fastai_parts(state, classes, y_range=None, unknown_row="fitted")
