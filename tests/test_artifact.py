import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

import collabemb as ce
import collabemb.artifact as artifact
from collabemb.models import TABLE_NAMES

from conftest import flatten, planted_ratings, reseal, snapshot_of


@pytest.fixture(scope="module")
def model():
    return ce.fit(planted_ratings(string_ids=True), epochs=3, n_factors=6, threads=1)


def _predictions(m):
    users = list(m.users.ids[:20]) + ["nobody"]
    items = list(m.items.ids[:20]) + ["nothing"]
    return m.predict(users, items)


def test_save_then_load_gives_identical_predictions_registries_and_history(model, tmp_path):
    ce.save_model(model, tmp_path / "art")
    loaded = ce.load_model(tmp_path / "art")
    assert loaded.users == model.users and loaded.items == model.items
    assert loaded.users.id_type == "str"
    for name in TABLE_NAMES:
        assert torch.equal(getattr(loaded.module, name).weight, getattr(model.module, name).weight)
    assert _predictions(loaded).equals(_predictions(model))
    assert loaded.history.train_rmse == model.history.train_rmse
    assert loaded.y_range == model.y_range
    snap = snapshot_of(tmp_path / "art")
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == [".lock", "CURRENT", snap.name]
    assert sorted(p.name for p in snap.iterdir()) == [
        "MODEL_CARD.md",
        "config.json",
        "items.json",
        "manifest.json",
        "seen_indptr.npy",
        "seen_items.npy",
        "tensors.safetensors",
        "users.json",
    ]
    assert loaded.seen_items.items_of(loaded.users.encode(["u001"]))[1].tolist() == sorted(
        loaded.items.encode(planted_ratings(string_ids=True).query("user == 'u001'")["item"]).tolist()
    )


def test_loading_never_unpickles(model, tmp_path, monkeypatch):
    ce.save_model(model, tmp_path / "art")

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert ce.load_model(tmp_path / "art").n_factors == 6


def test_a_crash_while_saving_keeps_the_previous_artifact_and_leaves_no_temp_dir(model, tmp_path, monkeypatch):
    target = tmp_path / "art"
    ce.save_model(model, target)
    before = sorted((target).iterdir())

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(artifact, "save_safetensors", crash)
    with pytest.raises(OSError, match="disk full"):
        ce.save_model(model, target)
    assert sorted(target.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    assert ce.load_model(target).n_factors == 6


def test_saving_over_an_artifact_replaces_it_whole(model, tmp_path):
    target = tmp_path / "art"
    other = ce.fit(planted_ratings(n_users=30, n_items=20, per_user=10), epochs=2, n_factors=3, threads=1)
    ce.save_model(other, target)
    ce.save_model(model, target)
    assert ce.load_model(target).users.id_type == "str"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_refuses_to_replace_a_directory_that_is_not_an_artifact(model, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(ce.ArtifactError, match="not a collabemb artifact or checkpoint; refusing"):
        ce.save_model(model, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_tensor_shape_that_disagrees_with_the_registry_is_refused(model, tmp_path):
    ce.save_model(model, tmp_path / "art")
    path = snapshot_of(tmp_path / "art") / "tensors.safetensors"
    tensors = load_file(str(path))
    tensors["i_weight"] = tensors["i_weight"][:-1].contiguous()
    save_file(tensors, str(path))
    with pytest.raises(ce.ArtifactError, match="tensors.safetensors: .* bytes, manifest.json says"):
        ce.load_model(tmp_path / "art")
    reseal(tmp_path / "art")
    with pytest.raises(ce.ArtifactError, match="not the tensors config.json was written with"):
        ce.load_model(tmp_path / "art")
    config_path = path.parent / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "tensors_sha256": "0" * 64}))
    reseal(tmp_path / "art")
    with pytest.raises(ce.ArtifactError, match="not the tensors config.json was written with"):
        ce.load_model(tmp_path / "art")
    config = json.loads(config_path.read_text())
    del config["tensors_sha256"]
    config_path.write_text(json.dumps(config))
    reseal(tmp_path / "art")
    n = len(model.items)
    with pytest.raises(ce.ArtifactError, match=rf"tensor 'i_weight' has shape \({n}, 6\), expected \({n + 1}, 6\)"):
        ce.load_model(tmp_path / "art")


def test_edited_registry_is_refused(model, tmp_path):
    ce.save_model(model, tmp_path / "art")
    path = snapshot_of(tmp_path / "art") / "users.json"
    data = json.loads(path.read_text())
    data["ids"][0], data["ids"][1] = data["ids"][1], data["ids"][0]
    path.write_text(json.dumps(data))
    with pytest.raises(ce.ArtifactError, match="users.json: contents do not match manifest.json"):
        ce.load_model(tmp_path / "art")
    reseal(tmp_path / "art")
    with pytest.raises(ce.ArtifactError, match="users.json: registry does not match config.json"):
        ce.load_model(tmp_path / "art")


def test_newer_schema_and_foreign_json_are_refused(model, tmp_path):
    ce.save_model(model, tmp_path / "art")
    config_path = snapshot_of(tmp_path / "art") / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "schema_version": 99}))
    reseal(tmp_path / "art")
    with pytest.raises(ce.ArtifactError, match="schema_version 99 is newer"):
        ce.load_model(tmp_path / "art")
    config_path.write_text(json.dumps({**config, "format": "something-else"}))
    reseal(tmp_path / "art")
    with pytest.raises(ce.ArtifactError, match="key 'format': expected one of 'collabemb-artifact'"):
        ce.load_model(tmp_path / "art")
    config_path.write_text("{not json")
    reseal(tmp_path / "art")
    with pytest.raises(ce.ArtifactError, match=r"config.json, line 1, column 2: invalid JSON"):
        ce.load_model(tmp_path / "art")


def test_missing_pieces_are_named(model, tmp_path):
    with pytest.raises(ce.ArtifactError, match="no such artifact directory"):
        ce.load_model(tmp_path / "absent")
    ce.save_model(model, tmp_path / "art")
    (snapshot_of(tmp_path / "art") / "tensors.safetensors").unlink()
    with pytest.raises(ce.ArtifactError, match="tensors.safetensors: missing"):
        ce.load_model(tmp_path / "art")


def test_loaded_model_keeps_int_ids_as_ints(tmp_path):
    m = ce.fit(planted_ratings(n_users=30, n_items=20, per_user=10), epochs=2, n_factors=3, threads=1)
    ce.save_model(m, tmp_path / "art")
    loaded = ce.load_model(tmp_path / "art")
    assert loaded.users.id_type == "int" and loaded.users.ids.dtype == np.int64
    with pytest.raises(TypeError, match="'7' and 7 are different IDs"):
        loaded.predict(["1"], [1])


def test_item_metadata_is_saved_and_loaded_as_parquet(model, tmp_path):

    meta = pd.DataFrame(
        {"movie": list(model.items.ids[:3]) + ["i999"], "title": ["A", "B", "C", "Later"], "year": [1990, 1991, 1992, 2001]}
    )
    model.set_item_metadata(meta, id_col="movie")
    try:
        ce.save_model(model, tmp_path / "art")
    finally:
        model.item_metadata = pd.DataFrame({"item": np.empty(0, dtype=object)})
    loaded = ce.load_model(tmp_path / "art")
    assert (snapshot_of(tmp_path / "art") / "item_metadata.parquet").is_file()
    assert loaded.item_metadata["item"].tolist() == list(model.items.ids[:3]) + ["i999"]
    assert loaded.item_metadata["title"].tolist() == ["A", "B", "C", "Later"]
    assert loaded.item_metadata["year"].tolist() == [1990, 1991, 1992, 2001]


def test_item_metadata_with_the_wrong_id_kind_is_refused(model):

    with pytest.raises(TypeError, match="item metadata IDs are int, the model's item IDs are str"):
        model.set_item_metadata(pd.DataFrame({"item": [1, 2], "title": ["a", "b"]}))
    with pytest.raises(ValueError, match="repeats item 'x'"):
        model.set_item_metadata(pd.DataFrame({"item": ["x", "x"], "title": ["a", "b"]}))


def test_a_score_model_without_y_range_round_trips_with_the_identity_link(tmp_path):
    from collabemb.registry import IdRegistry

    m = ce.EmbeddingDotBias(IdRegistry([1, 2]), IdRegistry([5, 6, 7]), n_factors=2, y_range=None)
    with torch.no_grad():
        m.u_weight.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 2.0], [0.5, -1.0]]))
        m.i_weight.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [-1.0, 3.0]]))
        m.i_bias.weight.copy_(torch.tensor([[0.0], [0.5], [0.0], [0.0]]))
    assert m.predict([1, 1], [5, 7])["prediction"].tolist() == [3.5, 5.0]  # raw dot + biases
    ce.save_model(ce.FittedModel(m), tmp_path / "art")
    loaded = ce.load_model(tmp_path / "art")
    assert loaded.y_range is None
    assert loaded.predict([1, 1], [5, 7])["prediction"].tolist() == [3.5, 5.0]


def test_the_identity_is_its_own_record_in_config_json(model, tmp_path):
    ce.save_model(model, tmp_path / "art")
    config = json.loads((snapshot_of(tmp_path / "art") / "config.json").read_text())
    assert config["identity"]["family"] == "rating" and config["identity"]["row0"] == "trained"
    assert config["identity"]["weight_decay"] == model.history.params["weight_decay"]
    assert ce.load_model(tmp_path / "art").identity == model.identity


def test_implicit_models_carry_their_identity_and_a_history_without_epochs(tmp_path):
    als = ce.fit_implicit(planted_ratings(n_users=30, n_items=20, per_user=10), n_factors=4, threshold=4)
    ce.save_model(als, tmp_path / "als")
    loaded = ce.load_model(tmp_path / "als")
    assert loaded.identity.family == "als" and loaded.identity.row0 == "mean" and loaded.identity.threshold == 4.0
    assert loaded.identity.regularization == als.identity.regularization and loaded.identity.fold_in == "als"
    assert loaded.history.epoch == [] and loaded.history.params["n_interactions"] == len(als.seen_items)
    pop = ce.fit_popularity(planted_ratings(n_users=30, n_items=20, per_user=10))
    assert pop.identity.family == "popularity" and pop.identity.fold_in is None


def test_an_artifact_of_schema_1_reads_its_identity_from_the_history(model, tmp_path):
    ce.save_model(model, tmp_path / "art")
    path = flatten(tmp_path / "art") / "config.json"
    config = json.loads(path.read_text())
    del config["identity"]
    del config["tensors_sha256"]
    config["schema_version"] = 1
    config["history"]["params"]["model"] = "als"
    config["history"]["params"].update(regularization=20.0, alpha=5.0, threshold=None)
    path.write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="written before artifacts carried a manifest"):
        loaded = ce.load_model(tmp_path / "art")
    assert loaded.identity.family == "als" and loaded.identity.regularization == 20.0 and loaded.identity.alpha == 5.0


def test_a_schema_1_index_of_imported_vectors_loads_as_vectors_without_an_unknown_slot(tmp_path):
    index = ce.SimilarityIndex.from_vectors([10, 20, 30], np.eye(3, dtype=np.float32)).build("items")
    index.fitted.index = index
    ce.save_model(index.fitted, tmp_path / "art")
    path = flatten(tmp_path / "art") / "config.json"
    config = json.loads(path.read_text())
    del config["identity"]
    del config["tensors_sha256"]
    config["schema_version"] = 1
    config["index"]["has_unknown_slot"] = False  # how schema 1 said "row 0 is zeros"
    path.write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="written before artifacts carried a manifest"):
        loaded = ce.load_model(tmp_path / "art")
    assert loaded.identity.family == "vectors" and loaded.identity.row0 == "none"
    assert not ce.index_of(loaded).has_unknown_slot
    with pytest.raises(ValueError, match="no trained unknown item"):
        ce.similar_items(loaded, 99, unknown="unknown_slot")
