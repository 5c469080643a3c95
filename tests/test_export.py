"""Embeddings out: tables by raw ID, file round trips (export.py), features and torch modules (features.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import collabemb as ce
from collabemb import export

from conftest import planted_ratings

K = 5


def id_model(user_ids, item_ids, *, n_factors: int = K) -> ce.FittedModel:
    """A model whose table rows spell out their row number, so a misaligned row cannot go unnoticed.

    Row r holds ``r + (j + 1) / 12`` in column j of the user table (``1000 r + ...`` for items) and
    has bias ``r / 7 - 0.5``.
    """
    users = ce.IdRegistry(user_ids, name="user")
    items = ce.IdRegistry(item_ids, name="item")
    module = ce.EmbeddingDotBias(users, items, n_factors=n_factors)
    with torch.no_grad():
        for reg, w, b, scale in ((users, module.u_weight, module.u_bias, 1.0), (items, module.i_weight, module.i_bias, 1000.0)):
            rows = torch.arange(reg.n_rows, dtype=torch.float32)[:, None]
            w.weight.copy_(scale * rows + 0.25 * torch.arange(1, n_factors + 1, dtype=torch.float32) / 3)
            b.weight.copy_(rows / 7 - 0.5)
    return ce.FittedModel(module)


@pytest.fixture(scope="module")
def fitted() -> ce.FittedModel:
    model = ce.fit(planted_ratings(seed=1), n_factors=K, epochs=3, seed=0, progress=False)
    titles = pd.DataFrame({"item": np.arange(1, 81), "title": [f"Movie\t{i}" for i in range(1, 81)], "genres": ["Drama|Comedy"] * 80})
    model.set_item_metadata(titles)
    return model


def bits(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32)).view(np.uint32)


def table_of(model: ce.FittedModel, name: str) -> np.ndarray:
    """A parameter table of the module as numpy (``u_weight``, ``i_bias``...)."""
    return getattr(model.module, name).weight.detach().numpy()


# --- tables by raw ID -------------------------------------------------------------------------


def test_item_table_puts_the_unknown_row_first_with_a_missing_id(fitted):
    frame = ce.embedding_frame(fitted, "item")
    assert list(frame.columns[:3]) == ["row", "item", "bias"]
    assert list(frame.columns[3:]) == [f"emb_{j}" for j in range(K)]
    assert len(frame) == len(fitted.items) + 1
    assert frame["row"].tolist() == list(range(len(fitted.items) + 1))
    assert frame["item"].dtype == "Int64" and pd.isna(frame["item"].iloc[0])
    assert frame["item"].iloc[1:].astype(np.int64).tolist() == fitted.items.ids.tolist()
    np.testing.assert_array_equal(bits(frame.filter(like="emb_")), bits(table_of(fitted, "i_weight")))
    np.testing.assert_array_equal(bits(frame["bias"]), bits(table_of(fitted, "i_bias")[:, 0]))
    assert all(frame[c].dtype == np.float32 for c in ["bias", *frame.columns[3:]])


def test_the_table_defaults_to_items_and_is_named_user_or_item(fitted):
    assert ce.embedding_frame(fitted).equals(ce.embedding_frame(fitted, "item"))
    for bad in ("items", "users", "kind"):
        with pytest.raises(ValueError, match="table must be 'user' or 'item'"):
            ce.embedding_frame(fitted, bad)
        with pytest.raises(ValueError, match="table must be 'user' or 'item'"):
            ce.embedding_arrays(fitted, bad)
        with pytest.raises(ValueError, match="table must be 'user' or 'item'"):
            ce.to_torch(fitted, bad)


def test_excluding_the_unknown_row_keeps_plain_int64_ids(fitted):
    frame = ce.embedding_frame(fitted, "user", unknown_row=False)
    assert frame["row"].iloc[0] == 1 and frame["user"].dtype == np.int64
    np.testing.assert_array_equal(frame["user"].to_numpy(), fitted.users.ids)
    np.testing.assert_array_equal(frame.filter(like="emb_").to_numpy(), table_of(fitted, "u_weight")[1:])


def test_a_bare_module_exports_the_same_tables_as_its_fitted_model(fitted):
    for table in ("user", "item"):
        assert ce.embedding_frame(fitted.module, table).equals(ce.embedding_frame(fitted, table))
        for got, expected in zip(ce.embedding_arrays(fitted.module, table), ce.embedding_arrays(fitted, table), strict=True):
            np.testing.assert_array_equal(got, expected)


def test_arrays_align_with_table_rows_and_mark_row_zero_with_none():
    model = id_model([30, -4, 7], ["b", "a"])
    ids, matrix, bias = ce.embedding_arrays(model, "user")
    assert ids.tolist() == [None, -4, 7, 30]
    np.testing.assert_array_equal(matrix, table_of(model, "u_weight"))
    np.testing.assert_array_equal(bias, table_of(model, "u_bias")[:, 0])
    ids, matrix, bias = ce.embedding_arrays(model, "item", unknown_row=False)
    assert ids.tolist() == ["a", "b"] and matrix.shape == (2, K)
    assert matrix[0, 0] == pytest.approx(1000 + 0.25 / 3)  # row 1 is "a"
    matrix[0, 0] = -1.0  # a copy: the model is untouched
    assert model.module.i_weight.weight[1, 0].item() == pytest.approx(1000 + 0.25 / 3)


def test_shuffled_ids_come_back_sorted_with_their_own_rows():
    rng = np.random.default_rng(3)
    raw = rng.permutation(np.arange(-50, 950, 7))
    model = id_model(raw, raw.astype(str))
    frame = ce.embedding_frame(model, "user", unknown_row=False)
    assert frame["user"].tolist() == sorted(raw.tolist())
    # the vector on each line is the one the registry maps that ID to
    np.testing.assert_array_equal(frame.filter(like="emb_").to_numpy(), model.weight(frame["user"], "user"))
    asked = rng.permutation(raw)
    looked_up = frame.set_index("user").loc[asked]
    np.testing.assert_array_equal(looked_up.filter(like="emb_").to_numpy(), model.weight(asked, "user"))
    np.testing.assert_array_equal(looked_up["bias"].to_numpy(), model.bias(asked, "user"))


def test_metadata_is_left_joined_by_raw_id_and_row_zero_has_none():
    model = id_model([1, 2], [10, 20, 30])
    meta = pd.DataFrame({"movie": [30, 10, 99], "title": ["C", "A", "not in the model"], "year": [2003, 2001, 1999]})
    frame = ce.embedding_frame(model, "item", metadata=meta, metadata_id_col="movie")
    assert list(frame.columns[:5]) == ["row", "item", "title", "year", "bias"]
    assert frame["title"].tolist() == [None, "A", None, "C"]
    assert frame["title"].dtype == object
    assert frame["year"].iloc[[1, 3]].tolist() == [2001, 2003] and frame["year"].iloc[[0, 2]].isna().all()


def test_stored_item_metadata_joins_with_metadata_true(fitted):
    frame = ce.embedding_frame(fitted, "item", metadata=True, unknown_row=False)
    assert frame["title"].iloc[0] == "Movie\t1" and frame["genres"].iloc[-1] == "Drama|Comedy"


def test_bad_metadata_is_refused_with_the_reason():
    model = id_model([1, 2], [10, 20])
    assert model.item_metadata.empty
    with pytest.raises(TypeError, match="metadata IDs are str"):
        ce.embedding_frame(model, metadata=pd.DataFrame({"item": ["10"], "title": ["x"]}))
    with pytest.raises(ValueError, match="repeats item 10"):
        ce.embedding_frame(model, metadata=pd.DataFrame({"item": [10, 10], "title": ["x", "y"]}))
    with pytest.raises(ValueError, match="clash"):
        ce.embedding_frame(model, metadata=pd.DataFrame({"item": [10], "bias": [1.0]}))
    with pytest.raises(ValueError, match="no item metadata stored"):
        ce.embedding_frame(model, metadata=True)
    with pytest.raises(ValueError, match="no item metadata stored"):
        ce.embedding_frame(model.module, metadata=True)  # a bare module stores none
    with pytest.raises(ValueError, match="for users pass a DataFrame"):
        ce.embedding_frame(model, "user", metadata=True)


# --- writers and readers ----------------------------------------------------------------------


STR_IDS = ["007", "7", "x y", "tab\there", "é", "NA"]


@pytest.mark.parametrize("fmt", ["parquet", "npy", "csv"])
@pytest.mark.parametrize("unknown_row", [True, False])
@pytest.mark.parametrize("ids", [[5, -3, 2**62, 0], STR_IDS], ids=["int", "str"])
def test_every_format_round_trips_ids_biases_and_vectors_exactly(tmp_path, fmt, unknown_row, ids):
    rng = np.random.default_rng(0)
    model = id_model(ids, [1, 2])
    with torch.no_grad():  # awkward float32 values: subnormal, huge, negative zero, many digits
        model.module.u_weight.weight.copy_(torch.from_numpy(rng.standard_normal((len(ids) + 1, K)).astype(np.float32) * 1e-3))
        model.module.u_weight.weight[1, :3] = torch.tensor([1e-40, -0.0, 3.4e38])
    path = tmp_path / ("users." + fmt if fmt != "npy" else "users")
    ce.write_embeddings(model, path, "user", format=fmt, unknown_row=unknown_row)
    back = ce.read_embeddings(path, format=fmt, id_type="str" if isinstance(ids[0], str) else None)
    expected = ce.embedding_frame(model, "user", unknown_row=unknown_row)
    assert list(back.columns) == list(expected.columns)
    assert back["user"].dtype == expected["user"].dtype
    np.testing.assert_array_equal(back["row"].to_numpy(), expected["row"].to_numpy())
    np.testing.assert_array_equal(bits(back.filter(like="emb_")), bits(expected.filter(like="emb_")))
    np.testing.assert_array_equal(bits(back["bias"]), bits(expected["bias"]))
    assert back.equals(expected)


def test_csv_with_fewer_digits_rounds_to_that_precision(tmp_path):
    model = id_model([1, 2, 3], [1])
    with torch.no_grad():
        model.module.u_weight.weight.copy_(torch.tensor([[1 / 3, 2 / 3, 1e-5, -123.456789, 7.0]] * 4))
    ce.write_embeddings(model, tmp_path / "u.csv", "user", digits=4)
    back = ce.read_embeddings(tmp_path / "u.csv")
    assert back.filter(like="emb_").iloc[1].tolist() == pytest.approx([0.3333, 0.6667, 1e-5, -123.5, 7.0], rel=1e-6)
    assert (tmp_path / "u.csv").read_text().splitlines()[2].split(",")[3:8] == ["0.3333", "0.6667", "1e-05", "-123.5", "7"]


def test_csv_ids_are_ints_only_when_every_id_is_a_canonical_integer(tmp_path):
    model = id_model(["1", "2", "10"], [1])
    ce.write_embeddings(model, tmp_path / "u.csv", "user", unknown_row=False)
    assert ce.read_embeddings(tmp_path / "u.csv")["user"].tolist() == [1, 10, 2]  # looks like ints: read as ints
    assert ce.read_embeddings(tmp_path / "u.csv", id_type="str")["user"].tolist() == ["1", "10", "2"]
    model = id_model(["007", "7"], [1])
    ce.write_embeddings(model, tmp_path / "u.csv", "user")
    assert ce.read_embeddings(tmp_path / "u.csv")["user"].tolist() == [None, "007", "7"]


def test_npy_export_is_vectors_bias_and_an_id_file_aligned_by_row(tmp_path):
    model = id_model([40, 10, 20], ["a"])
    ce.write_embeddings(model, tmp_path / "out", "user", format="npy")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bias.npy", "ids.json", "vectors.npy"]
    vectors = np.load(tmp_path / "out" / "vectors.npy", allow_pickle=False)
    doc = json.loads((tmp_path / "out" / "ids.json").read_text())
    assert doc == {"format": "collabemb-embedding-ids", "name": "user", "id_type": "int", "unknown_row": True, "ids": [None, 10, 20, 40]}
    assert vectors.dtype == np.float32 and vectors.shape == (4, K)
    np.testing.assert_array_equal(vectors[model.users.encode([40, 10])], model.weight([40, 10], "user"))
    with pytest.raises(ValueError, match="npy export holds vectors"):
        ce.write_embeddings(model, tmp_path / "out", "user", format="npy", metadata=pd.DataFrame({"user": [10]}))


def test_npy_id_file_written_with_the_old_kind_key_still_reads(tmp_path):
    model = id_model(["b", "a"], [1])
    ce.write_embeddings(model, tmp_path / "out", "user", format="npy")
    doc = json.loads((tmp_path / "out" / "ids.json").read_text())
    doc["kind"] = doc.pop("id_type")  # as exports wrote it before the rename
    (tmp_path / "out" / "ids.json").write_text(json.dumps(doc))
    assert ce.read_embeddings(tmp_path / "out").equals(ce.embedding_frame(model, "user"))
    doc["kind"] = "float"
    (tmp_path / "out" / "ids.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="ids.json: key 'kind': expected one of 'int', 'str'"):
        ce.read_embeddings(tmp_path / "out")


def test_projector_pair_has_a_header_only_with_several_metadata_columns(tmp_path, fitted):
    ce.write_embeddings(fitted, tmp_path / "plain", "item", format="projector")
    labels = (tmp_path / "plain" / "metadata.tsv").read_text().splitlines()
    assert labels[:3] == ["<unknown>", "1", "2"] and len(labels) == len(fitted.items) + 1
    vectors = np.loadtxt(tmp_path / "plain" / "vectors.tsv", delimiter="\t", dtype=np.float32)
    np.testing.assert_array_equal(bits(vectors), bits(table_of(fitted, "i_weight")))

    ce.write_embeddings(fitted, tmp_path / "meta", "item", format="projector", metadata=True, unknown_row=False)
    lines = (tmp_path / "meta" / "metadata.tsv").read_text().splitlines()
    assert lines[0] == "item\ttitle\tgenres"
    assert lines[1] == "1\tMovie 1\tDrama|Comedy"  # the tab inside the title became a space
    assert len(lines) == len(fitted.items) + 1
    assert len((tmp_path / "meta" / "vectors.tsv").read_text().splitlines()) == len(fitted.items)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=30, unique=True),
        st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=8), min_size=1, max_size=30, unique=True),
    )
)
def test_any_ids_survive_parquet_and_npy_exactly(ids):
    model = id_model(ids, [1])
    expected = ce.embedding_frame(model, "user")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, name in (("parquet", "u.parquet"), ("npy", "u")):
            ce.write_embeddings(model, Path(tmp) / name, "user", format=fmt)
            assert ce.read_embeddings(Path(tmp) / name).equals(expected), fmt


def test_a_failed_write_leaves_the_old_export_and_no_temporary_files(tmp_path, monkeypatch):
    model = id_model([1, 2], [1])
    target = tmp_path / "u.parquet"
    ce.write_embeddings(model, target, "user")
    before = target.read_bytes()

    def crash(frame, path):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(export, "_write_parquet", crash)
    with pytest.raises(OSError, match="disk full"):
        ce.write_embeddings(model, target, "user")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.parquet"]


def test_an_export_replaces_its_own_directory_but_not_a_foreign_one(tmp_path):
    model = id_model([1, 2], [1])
    ce.write_embeddings(model, tmp_path / "proj", "user", format="projector")
    ce.write_embeddings(model, tmp_path / "proj", "user", format="projector", unknown_row=False)
    assert len((tmp_path / "proj" / "metadata.tsv").read_text().splitlines()) == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a npy export"):
        ce.write_embeddings(model, tmp_path / "mine", "user", format="npy")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="cannot tell the format"):
        ce.write_embeddings(model, tmp_path / "u.txt", "user")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "proj"]  # no temporary leftovers


# --- features for tabular models ---------------------------------------------------------------


def test_features_take_each_rows_vectors_and_flag_unseen_ids_with_the_unknown_slot():
    model = id_model([1, 2, 3], ["a", "b"])
    df = pd.DataFrame({"user": [3, 99, 1, 3], "item": ["b", "b", "zzz", "a"], "y": [1.0, 2.0, 3.0, 4.0]}, index=[10, 11, 12, 13])
    out = ce.to_features(model, df)
    feature_cols = [f"{side}_{name}" for side in ("user", "item") for name in [*(f"emb_{j}" for j in range(K)), "bias", "known"]]
    assert list(out.columns) == ["user", "item", "y", *feature_cols]
    assert out.index.tolist() == [10, 11, 12, 13] and out["y"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert out["user_known"].tolist() == [True, False, True, True]
    assert out["item_known"].tolist() == [True, True, False, True]
    np.testing.assert_array_equal(out.filter(like="user_emb_").to_numpy(), table_of(model, "u_weight")[[3, 0, 1, 3]])
    np.testing.assert_array_equal(out["user_bias"].to_numpy(), table_of(model, "u_bias")[[3, 0, 1, 3], 0])
    np.testing.assert_array_equal(out.filter(like="item_emb_").to_numpy(), table_of(model, "i_weight")[[2, 2, 0, 1]])
    assert out["user_bias"].dtype == np.float32 and out["item_known"].dtype == bool
    assert list(df.columns) == ["user", "item", "y"]  # the input is left as it was
    assert ce.to_features(model.module, df).equals(out)  # a bare module gives the same columns


def test_features_on_a_fitted_model_match_weight_and_bias_by_raw_id(fitted):
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"customer": rng.integers(-5, 130, 500), "movie": rng.integers(0, 90, 500)})
    out = ce.to_features(fitted, df, user_col="customer", item_col="movie", user_prefix="c_", item_prefix="m_")
    np.testing.assert_array_equal(out.filter(like="c_emb_").to_numpy(), fitted.weight(df["customer"], "user"))
    np.testing.assert_array_equal(out["m_bias"].to_numpy(), fitted.bias(df["movie"], "item"))
    np.testing.assert_array_equal(out["c_known"].to_numpy(), fitted.users.known(df["customer"]))


def test_features_accept_ratings_as_well_as_a_frame(fitted):
    ratings = ce.read_ratings(planted_ratings(n_users=10, n_items=8, per_user=4, seed=7))
    from_ratings = ce.to_features(fitted, ratings)
    assert from_ratings.equals(ce.to_features(fitted, ratings.frame))
    assert list(from_ratings.columns[: len(ratings.frame.columns)]) == list(ratings.frame.columns)
    np.testing.assert_array_equal(from_ratings.filter(like="item_emb_").to_numpy(), fitted.weight(ratings.frame["item"], "item"))


def test_features_for_one_side_only_and_refusals():
    model = id_model([1, 2], ["a"])
    df = pd.DataFrame({"item": ["a", "q"]})
    out = ce.to_features(model, df, user_col=None, bias=False, known=False)
    assert list(out.columns) == ["item", *[f"item_emb_{j}" for j in range(K)]]
    with pytest.raises(TypeError, match="'7' and 7 are different IDs"):
        ce.to_features(model, pd.DataFrame({"user": ["1"], "item": ["a"]}))
    with pytest.raises(ValueError, match="no user ID column 'user'"):
        ce.to_features(model, df)
    with pytest.raises(ValueError, match="already exist"):
        ce.to_features(model, pd.DataFrame({"user": [1], "item": ["a"], "user_bias": [0.0]}))
    with pytest.raises(ValueError, match="nothing to add"):
        ce.to_features(model, df, user_col=None, item_col=None)


# --- torch modules --------------------------------------------------------------------------


def test_torch_embedding_carries_weights_biases_and_registry(fitted):
    emb = ce.to_torch(fitted, "item")
    module = fitted.module
    assert isinstance(emb, nn.Embedding) and emb.padding_idx is None
    assert emb.registry == fitted.items and emb.num_embeddings == len(fitted.items) + 1
    assert not emb.weight.requires_grad and not emb.bias.weight.requires_grad
    rows = torch.tensor([[0, 3], [5, 1]])
    assert torch.equal(emb(rows), module.i_weight(rows))
    assert torch.equal(emb.bias(rows), module.i_bias(rows))
    np.testing.assert_array_equal(emb.lookup([5, 12345]).numpy(), fitted.weight([5, 12345], "item"))
    assert emb.rows([5, 12345]).tolist() == [5, 0]
    assert set(emb.state_dict()) == {"weight", "bias.weight"}
    assert "80 int IDs + unknown row 0" in repr(emb)
    with torch.no_grad():
        emb.weight[1] = 0.0  # a copy: changing the module leaves the model as it was
    assert module.i_weight.weight[1].abs().sum() > 0


def test_torch_lookup_raises_on_unseen_ids_when_asked(fitted):
    emb = ce.to_torch(fitted, "user")
    with pytest.raises(ce.UnknownIdError, match="unseen user ID"):
        emb.lookup([1, 4242], unknown="raise")
    with pytest.raises(ce.UnknownIdError, match="4242"):
        emb.rows([4242], unknown="raise")
    assert emb.rows([1, 4242], unknown="unknown_slot").tolist() == [1, 0]
    with pytest.raises(ValueError, match="unknown must be 'unknown_slot' or 'raise'"):
        emb.lookup([1], unknown="zero")


def test_torch_embedding_keeps_its_registry_when_the_model_grows():
    model = ce.fit(planted_ratings(n_users=20, n_items=15, per_user=6, seed=3), n_factors=K, epochs=2, seed=0, progress=False)
    emb = ce.to_torch(model, "user")
    new_id = int(model.users.ids.max()) + 1
    before = emb.lookup([3, new_id]).clone()
    np.testing.assert_array_equal(before[1].numpy(), table_of(model, "u_weight")[0])  # unseen: row 0
    rng = np.random.default_rng(0)
    model.module.append_rows("user", [new_id], rng.standard_normal((1, K)).astype(np.float32), np.array([0.5], np.float32))
    assert new_id in model.users and new_id not in emb.registry
    after = emb.lookup([3, new_id])  # the old table has no row for the new ID: row 0, never an IndexError
    assert torch.equal(after, before)
    assert emb.rows([new_id]).tolist() == [0]
    grown = ce.to_torch(model, "user")  # a new embedding sees the new user
    assert grown.num_embeddings == emb.num_embeddings + 1
    np.testing.assert_array_equal(grown.lookup([new_id]).numpy(), model.weight([new_id], "user"))


def test_soft_lookup_of_one_hot_rows_equals_the_hard_lookup():
    model = id_model([1, 2, 3, 4], [1])
    emb = ce.to_torch(model, "user")
    rows = torch.tensor([0, 2, 4, 2])
    one_hot = torch.nn.functional.one_hot(rows, emb.num_embeddings).float()
    assert torch.equal(emb.soft(one_hot), emb(rows))
    assert torch.equal(emb.soft_bias(one_hot), emb.bias(rows).squeeze(-1))
    known_only = torch.nn.functional.one_hot(rows[1:] - 1, len(emb.registry)).float()  # columns = known IDs 1..n
    assert torch.equal(emb.soft(known_only), emb(rows[1:]))
    with pytest.raises(ValueError, match="expected 5 \\(row 0 first\\) or 4"):
        emb.soft(torch.ones(2, 3))


def test_soft_lookup_is_differentiable_in_the_probabilities_and_trains_when_unfrozen():
    model = id_model([1, 2, 3], [1])
    emb = ce.to_torch(model, "user")
    logits = torch.zeros(2, emb.num_embeddings, requires_grad=True)
    probs = torch.softmax(logits, dim=-1)
    out = emb.soft(probs)
    expected_mean = emb.weight.mean(dim=0)
    assert torch.allclose(out, expected_mean.expand(2, -1))
    probs.retain_grad()
    out.sum().backward()
    # d sum(p @ W) / d p = row sums of W, the same for each of the 2 inputs
    assert torch.allclose(probs.grad, emb.weight.sum(dim=1).expand(2, -1))
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert emb.weight.grad is None  # frozen

    trainable = ce.to_torch(model, "user", freeze=False)
    trainable.soft(torch.full((1, 4), 0.25)).sum().backward()
    assert torch.allclose(trainable.weight.grad, torch.full((4, K), 0.25))
    assert model.module.u_weight.weight.grad is None  # the model's own table is not what trained


# --- the command line ------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collabemb", *args], capture_output=True, text=True, timeout=300)


def test_cli_exports_parquet_and_projector_in_a_subprocess(tmp_path, fitted):
    ce.save_model(fitted, tmp_path / "art")
    result = run_cli("export", str(tmp_path / "art"), "--table", "item", "--out", str(tmp_path / "items.parquet"))
    assert result.returncode == 0, result.stderr
    assert f"wrote {len(fitted.items) + 1} item rows (row 0, the unknown slot, first) x {K} factors" in result.stdout
    assert ce.read_embeddings(tmp_path / "items.parquet").equals(ce.embedding_frame(fitted, "item"))

    args = ["--table", "item", "--format", "projector", "--stored-metadata", "--out", str(tmp_path / "proj")]
    result = run_cli("export", str(tmp_path / "art"), *args)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "proj" / "metadata.tsv").read_text().splitlines()[:2] == ["item\ttitle\tgenres", "<unknown>\t\t"]

    result = run_cli("export", str(tmp_path / "art"), "--table", "user", "--out", str(tmp_path / "users.txt"))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"collabemb: error: {tmp_path / 'users.txt'}: cannot tell the format from the name; give it (format= or --format): "
        "one of parquet, csv, npy, projector (npy and projector write a directory)"
    ]


def test_cli_exports_users_as_npy_and_csv_with_a_metadata_file(tmp_path, fitted):
    from collabemb.cli import main as cli_main

    ce.save_model(fitted, tmp_path / "art")
    args = ["export", str(tmp_path / "art"), "--table", "user", "--format", "npy", "--no-unknown-row", "--out", str(tmp_path / "u")]
    assert cli_main(args) == 0
    assert ce.read_embeddings(tmp_path / "u").equals(ce.embedding_frame(fitted, "user", unknown_row=False))
    pd.DataFrame({"uid": [1, 2], "gender": ["F", "M"]}).to_csv(tmp_path / "users.csv", index=False)
    args = ["export", str(tmp_path / "art"), "--table", "user", "--out", str(tmp_path / "u.csv")]
    assert cli_main([*args, "--metadata", str(tmp_path / "users.csv"), "--metadata-id-col", "uid"]) == 0
    back = ce.read_embeddings(tmp_path / "u.csv")
    assert back["gender"].iloc[:4].tolist() == [None, "F", "M", None]


def test_the_projector_export_carries_a_config_that_names_its_files(tmp_path, fitted):
    import re

    ce.write_embeddings(fitted, tmp_path / "proj", "item", format="projector")
    config = (tmp_path / "proj" / "projector_config.pbtxt").read_text()
    block = re.fullmatch(r'embeddings \{\n((?:  \w+: "[^"]*"\n)+)\}\n', config)
    assert block is not None, config
    fields = dict(re.findall(r'  (\w+): "([^"]*)"', block.group(1)))
    assert fields == {"tensor_name": "item embeddings", "tensor_path": "vectors.tsv", "metadata_path": "metadata.tsv"}
    for name in ("tensor_path", "metadata_path"):
        assert (tmp_path / "proj" / fields[name]).is_file()
    n_vectors = len((tmp_path / "proj" / "vectors.tsv").read_text().splitlines())
    assert n_vectors == len((tmp_path / "proj" / "metadata.tsv").read_text().splitlines())  # one column: no header
