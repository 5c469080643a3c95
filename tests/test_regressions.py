"""Three wrong answers the layout change fixed, each reproduced as its user met it.

These were written first against the old API (commit a879718: `model.to_torch`,
`model.similar_items`, the CLI's `fit --valid`) and failed there:

* an ``IdEmbedding`` made before a fold-in with ``add=True`` raised ``IndexError`` for the new ID,
  because it held the live registry that the fold-in grew under it;
* ``similar_items("8", exclude=[7])`` on a model with string item IDs silently dropped item
  ``"7"``: the exclusion list was coerced to strings, against the registry's promise;
* ``collabemb fit TRAIN --valid TEST`` stored the validation pairs as "seen", so
  ``collabemb evaluate DIR TEST`` excluded every test pair and printed all-zero ranking metrics
  without a word.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import collabemb as ce

from conftest import planted_ratings

SMALL = {"n_factors": 4, "epochs": 3, "threads": 1, "progress": False}


def test_an_embedding_made_before_a_fold_in_keeps_answering_for_every_id():
    model = ce.fit(planted_ratings(40, 30, 10), **SMALL)
    emb = ce.to_torch(model, "user")
    before = emb.lookup([3, 1000]).detach().numpy().copy()  # 1000 is unseen: row 0
    ce.fold_in_users(model, pd.DataFrame({"user": [1000], "item": [1], "rating": [4.0]}), add=True)
    np.testing.assert_array_equal(emb.lookup([3, 1000]).detach().numpy(), before)
    assert 1000 in model.users and 1000 not in emb.registry  # the model grew, the embedding's snapshot did not
    assert ce.to_torch(model, "user").rows([1000]).item() == len(model.users)


def test_an_exclusion_list_of_the_other_id_type_is_refused_not_coerced():
    frame = planted_ratings(40, 30, 10)
    frame["item"] = frame["item"].astype(str)  # string IDs "1".."30"
    model = ce.fit(frame, **SMALL)
    everything = ce.similar_items(model, "8", k=29)
    assert "7" in set(everything["item"])
    with pytest.raises(TypeError, match="'7' and 7 are different IDs"):
        ce.similar_items(model, "8", k=29, exclude=[7])
    assert "7" not in set(ce.similar_items(model, "8", k=29, exclude=["7"])["item"])


def test_validation_pairs_are_not_seen_pairs_and_evaluate_warns_about_excluded_test_pairs(tmp_path):
    frame = planted_ratings(60, 40, 15)
    pick = np.random.default_rng(0).random(len(frame)) < 0.8
    frame[pick].to_csv(tmp_path / "train.csv", index=False)
    frame[~pick].to_csv(tmp_path / "test.csv", index=False)
    cli = [sys.executable, "-m", "collabemb"]
    fit = [*cli, "fit", str(tmp_path / "train.csv"), "--valid", str(tmp_path / "test.csv"), "--out", str(tmp_path / "m")]
    subprocess.run([*fit, "--epochs", "3", "--n-factors", "4", "--no-progress"], check=True, capture_output=True)
    assert len(ce.load_model(tmp_path / "m").seen_items) == int(pick.sum())
    out = subprocess.run([*cli, "evaluate", str(tmp_path / "m"), str(tmp_path / "test.csv")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    metrics = dict(line.split()[:2] for line in out.stdout.splitlines() if line.startswith(("ndcg@", "hit_rate@")))
    assert float(metrics["ndcg@10"]) > 0 and float(metrics["hit_rate@10"]) > 0, out.stdout
    assert "warning" not in out.stderr

    # the lie the old CLI told, now said out loud: test pairs among the excluded pairs are counted
    model = ce.load_model(tmp_path / "m")
    model.set_seen_items(frame)  # what `fit --valid` used to store: training and validation pairs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ce.evaluate(model, frame[~pick])
    assert result["excluded_test_pairs"] == int((~pick).sum())
    assert any(issubclass(w.category, ce.ExcludedTestPairsWarning) for w in caught)
