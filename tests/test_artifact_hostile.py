"""Artifacts that cannot lie: every edited, corrupted or swapped file is refused with one
ArtifactError naming the file (and the key), or loads to identical predictions.

Two kinds of tamperer: one who edits a file (the manifest's SHA-256 catches it), and one who also
rewrites the manifest and the pointer (``reseal``): then the file's own checks must catch it
(schema, dtype, shape, finiteness, bounds, the index's binding to the tensors).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import collabemb as ce
from collabemb.index import index_of

from conftest import planted_ratings, reseal, snapshot_of

PAIRS = ([1, 2, 3, 4, 999], [1, 5, 9, 12, 999])


@pytest.fixture(scope="module")
def model():
    m = ce.fit(planted_ratings(n_users=40, n_items=30, per_user=12), epochs=2, n_factors=4, threads=1, progress=False)
    ce.build_index(m, index_type="exact", parts=("items", "recommend"))
    return m


@pytest.fixture
def art(model, tmp_path):
    ce.save_model(model, tmp_path / "art")
    return tmp_path / "art"


def _edit_config(art, edit, *, seal: bool = True) -> None:
    path = snapshot_of(art) / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))
    if seal:
        reseal(art)


def _load_and_search(art):
    fitted = ce.load_model(art)
    index_of(fitted)
    return fitted.predict(*PAIRS)["prediction"].to_numpy()


def test_nan_weights_are_refused_at_save_and_at_load(model, art, tmp_path):
    broken = ce.load_model(art)
    with torch.no_grad():
        broken.module.i_weight.weight[3, 1] = float("nan")
    with pytest.raises(ce.ArtifactError, match=r"i_weight table holds NaN or infinity \(in 1 row\(s\), first row 3\)"):
        ce.save_model(broken, tmp_path / "nan")
    assert not (tmp_path / "nan").exists() or not any((tmp_path / "nan").glob("snap-*"))
    path = snapshot_of(art) / "tensors.safetensors"
    tensors = load_file(str(path))
    tensors["u_weight"][2, 0] = float("inf")
    save_file(tensors, str(path))
    with pytest.raises(ce.ArtifactError, match="tensors.safetensors: contents do not match manifest.json|bytes, manifest.json says"):
        ce.load_model(art)
    _edit_config(art, lambda c: c.pop("tensors_sha256"))
    with pytest.raises(ce.ArtifactError, match=r"tensors.safetensors: tensor 'u_weight' holds NaN or infinity \(first in row 2\)"):
        ce.load_model(art)


def test_weights_of_another_dtype_are_refused_at_save_not_cast(model, tmp_path):
    double = ce.load_model(ce.save_model(model, tmp_path / "art"))
    double.module.double()
    with pytest.raises(ce.ArtifactError, match="u_weight table is float64; artifacts store float32"):
        ce.save_model(double, tmp_path / "double")


def test_weights_of_another_dtype_are_refused_not_cast(art):
    path = snapshot_of(art) / "tensors.safetensors"
    tensors = load_file(str(path))
    tensors["i_bias"] = tensors["i_bias"].to(torch.int64)
    save_file(tensors, str(path))
    _edit_config(art, lambda c: c.pop("tensors_sha256"))
    with pytest.raises(ce.ArtifactError, match="tensor 'i_bias' is int64, expected float32"):
        ce.load_model(art)


CONFIG_EDITS = [
    (lambda c: c.pop("n_factors"), r"config.json: key 'n_factors': required key is missing"),
    (lambda c: c.update(history=5), r"config.json: key 'history': expected an object, found 5"),
    (lambda c: c["index"].update(parts=[1, 2]), r"config.json: key 'index.parts': expected an object, found a list of 2"),
    (lambda c: c.update(y_range=[float("-inf"), float("inf")]), r"key 'y_range\[0\]': expected a finite number, found -Infinity"),
    (lambda c: c.update(y_range=[5.0, 1.0]), r"key 'y_range': the low end 5.0 must be below the high end 1.0"),
    (lambda c: c.update(n_factors=2.5), r"key 'n_factors': expected an integer in \[1, 65536\], found 2.5"),
    (lambda c: c["index"]["params"].update(ef_search=2**40), r"key 'index.params.ef_search': expected an integer in \[1, 65536\]"),
    (lambda c: c["identity"].update(family="magic"), r"key 'identity.family': expected one of 'rating'"),
    (lambda c: c["seen_items"].update(indices="../../etc/passwd"), r"key 'seen_items.indices': expected one of 'seen_items.npy'"),
    (lambda c: c.update(surprise=1), r"key 'surprise': unexpected key"),
    (lambda c: c.update(n_item_rows=10**6), r"items.json: 30 IDs, config.json says 999999"),
]


@pytest.mark.parametrize(("edit", "message"), CONFIG_EDITS)
def test_every_edit_of_config_json_is_one_error_naming_the_file_and_the_key(art, edit, message):
    _edit_config(art, edit, seal=False)
    with pytest.raises(ce.ArtifactError, match=r"config.json: .*manifest.json"):
        ce.load_model(art)
    reseal(art)
    with pytest.raises(ce.ArtifactError, match=message):
        _load_and_search(art)


def test_json_depth_and_size_are_bounded_before_parsing(art):
    path = snapshot_of(art) / "config.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    reseal(art)
    with pytest.raises(ce.ArtifactError, match="config.json: JSON nested 200000 deep; at most 16 is allowed"):
        ce.load_model(art)
    path.write_bytes(b" " * (65 << 20))
    reseal(art)
    with pytest.raises(ce.ArtifactError, match="config.json: 68157440 bytes, more than the 67108864 this file may hold"):
        ce.load_model(art)


def test_an_edited_registry_is_refused_even_with_its_fingerprint_and_the_manifest_recomputed(art):
    from collabemb.registry import IdRegistry

    path = snapshot_of(art) / "users.json"
    data = json.loads(path.read_text())
    data["ids"][0], data["ids"][1] = data["ids"][1], data["ids"][0]
    path.write_text(json.dumps(data))
    _edit_config(art, lambda c: c.update(user_fingerprint=IdRegistry.from_dict(data).fingerprint()), seal=False)
    with pytest.raises(ce.ArtifactError, match="contents do not match manifest.json"):
        ce.load_model(art)
    reseal(art)  # the tensors file recorded the registry it was written with
    with pytest.raises(ce.ArtifactError, match="users.json: not the user registry tensors.safetensors was written with"):
        ce.load_model(art)


@pytest.mark.parametrize(("key", "value"), [("y_range", None), ("y_range", [0.0, 10.0]), ("n_factors", 8)])
def test_config_values_the_tensors_file_recorded_cannot_be_edited_even_with_the_manifest(art, key, value):
    _edit_config(art, lambda c: c.update({key: value}))
    with pytest.raises(ce.ArtifactError, match=rf"config.json: key '{key}': .* does not match the .* tensors.safetensors was written with"):
        ce.load_model(art)


def _npy_with_header(shape_text: str, dtype: str = "<i4", body: bytes = b"") -> bytes:
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape_text}, }}".encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", r"seen_items.npy: not a .npy array"),
        (_npy_with_header("(10000000000,)"), r"seen_items.npy: 10000000000 entries, config.json and the registries say"),
        (_npy_with_header("(480,)", "<f8", b"\0" * 3840), r"seen_items.npy: a float64 array of shape \(480,\), expected a 1-d int32 array"),
        (_npy_with_header("(480,)", "<i4", b"\0" * 100), r"seen_items.npy: 100 bytes of data, its header says 1920"),
        (_npy_with_header("(480,)", "<i4", b"\0" * 1920), r"seen_items.npy: item rows outside 1..30"),
    ],
)
def test_seen_items_that_are_empty_mislabelled_or_oversized_are_refused_before_allocating(art, data, message):
    (snapshot_of(art) / "seen_items.npy").write_bytes(data)
    reseal(art)
    with pytest.raises(ce.ArtifactError, match=message):
        ce.load_model(art)


def _swap_index_file(art, part: str, data: bytes) -> None:
    """Replace an index file, and (the careful tamperer) its recorded hash and the manifest."""
    (snapshot_of(art) / f"index-{part}.faiss").write_bytes(data)
    _edit_config(art, lambda c: c["index"]["parts"][part].update(file_sha256=hashlib.sha256(data).hexdigest()))


def test_an_index_from_another_model_on_the_same_data_is_refused(model, art, tmp_path):
    other = ce.fit(planted_ratings(n_users=40, n_items=30, per_user=12), epochs=2, n_factors=4, threads=1, seed=7, progress=False)
    ce.build_index(other, index_type="exact", parts=("items", "recommend"))
    ce.save_model(other, tmp_path / "other")
    data = (snapshot_of(tmp_path / "other") / "index-items.faiss").read_bytes()
    (snapshot_of(art) / "index-items.faiss").write_bytes(data)
    with pytest.raises(ce.ArtifactError, match="index-items.faiss: contents do not match manifest.json"):
        ce.load_model(art)
    reseal(art)
    with pytest.raises(ce.ArtifactError, match="index-items.faiss: not the bytes config.json recorded for it"):
        _load_and_search(art)
    _swap_index_file(art, "items", data)  # the hash recorded too: the tensors it was built from differ
    other_tensors = json.loads((snapshot_of(tmp_path / "other") / "config.json").read_text())["tensors_sha256"]
    _edit_config(art, lambda c: c["index"]["parts"]["items"].update(tensors_sha256=other_tensors))
    with pytest.raises(ce.ArtifactError, match="index-items.faiss: built from other tensors than this artifact's"):
        _load_and_search(art)


def test_ivf_labels_out_of_range_are_refused(art, tmp_path):
    model = ce.load_model(art)
    ivf = ce.build_index(model, index_type="ivf", parts=("items",), nlist=2, threads=1)
    ce.save_model(model, tmp_path / "ivf")
    index = ivf._parts["items"].index
    lists = index.invlists
    first = next(i for i in range(index.nlist) if lists.list_size(i))
    faiss.rev_swig_ptr(lists.get_ids(first), lists.list_size(first))[0] = 10**6
    _swap_index_file(tmp_path / "ivf", "items", faiss.serialize_index(index).tobytes())
    with pytest.raises(
        ce.ArtifactError, match=r"index-items.faiss: the FAISS index is inconsistent inside \(labels do not fit its 30 vectors\)"
    ):
        _load_and_search(tmp_path / "ivf")


def test_hnsw_neighbour_ids_out_of_range_are_refused(art, tmp_path):
    model = ce.load_model(art)
    hnsw = ce.build_index(model, index_type="hnsw", parts=("items",), threads=1)
    ce.save_model(model, tmp_path / "hnsw")
    index = hnsw._parts["items"].index
    neighbors = faiss.rev_swig_ptr(index.hnsw.neighbors.data(), index.hnsw.neighbors.size())
    neighbors[0] = 10**6
    _swap_index_file(tmp_path / "hnsw", "items", faiss.serialize_index(index).tobytes())
    # FAISS's reader checks this one itself; check_structure stands behind it for the other tables
    with pytest.raises(ce.ArtifactError, match=r"index-items.faiss: (unreadable FAISS index .*out of range|.*inconsistent inside)"):
        _load_and_search(tmp_path / "hnsw")


def test_a_flat_index_whose_size_field_lies_is_refused(art):
    data = bytearray((snapshot_of(art) / "index-items.faiss").read_bytes())
    assert data[:4] == b"IxFI"
    data[37:45] = struct.pack("<Q", 2**31)  # the codes vector's length
    _swap_index_file(art, "items", bytes(data))
    with pytest.raises(ce.ArtifactError, match="index-items.faiss: unreadable FAISS index"):
        _load_and_search(art)


# --- the server's read without torch refuses the same -------------------------------------------


def _read_as_the_server_does(art) -> None:
    """What ``collabemb serve`` reads before it answers, without torch: the model's view, and the stored index
    parts read back against it."""
    from collabemb.faiss_files import read_stored_parts
    from collabemb.model_view import read_model_view
    from collabemb.store import open_snapshot

    with open_snapshot(art, "artifact") as snapshot:
        view = read_model_view(snapshot)
    if view.index is not None:
        read_stored_parts(view.index, view)


def _retensor(art, edit) -> None:
    """Edit the tensors file (``edit(tensors)``), and drop config.json's record of its hash (the careful tamperer)."""
    path = snapshot_of(art) / "tensors.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))
    _edit_config(art, lambda c: c.pop("tensors_sha256"))


def _swap_registry(art) -> None:
    from collabemb.registry import IdRegistry

    path = snapshot_of(art) / "users.json"
    data = json.loads(path.read_text())
    data["ids"][0], data["ids"][1] = data["ids"][1], data["ids"][0]
    path.write_text(json.dumps(data))
    _edit_config(art, lambda c: c.update(user_fingerprint=IdRegistry.from_dict(data).fingerprint()))


def _seen_items_outside(art) -> None:
    (snapshot_of(art) / "seen_items.npy").write_bytes(_npy_with_header("(480,)", "<i4", b"\0" * 1920))  # item row 0
    reseal(art)


def _lying_flat_index(art) -> None:
    data = bytearray((snapshot_of(art) / "index-items.faiss").read_bytes())
    data[37:45] = struct.pack("<Q", 2**31)
    _swap_index_file(art, "items", bytes(data))


TAMPERINGS = {
    **{f"edited config ({message})": lambda art, edit=edit: _edit_config(art, edit) for edit, message in CONFIG_EDITS},
    "config.json: n_factors the tensors were not written with": lambda art: _edit_config(art, lambda c: c.update(n_factors=8)),
    "users.json swapped, its fingerprint too": _swap_registry,
    "i_bias as int64": lambda art: _retensor(art, lambda t: t.update(i_bias=t["i_bias"].to(torch.int64))),
    "u_weight with an infinity": lambda art: _retensor(art, lambda t: t["u_weight"].__setitem__((2, 0), float("inf"))),
    "a tensor more": lambda art: _retensor(art, lambda t: t.update(extra=torch.zeros(2))),
    "a tensor less": lambda art: _retensor(art, lambda t: t.pop("u_bias")),
    "i_weight of another shape": lambda art: _retensor(art, lambda t: t.update(i_weight=t["i_weight"][:-1].clone())),
    "seen items outside the items": _seen_items_outside,
    "an index whose size field lies": _lying_flat_index,
}


@pytest.mark.parametrize("tamper", sorted(TAMPERINGS))
def test_the_servers_read_without_torch_refuses_what_load_model_refuses_with_the_same_error(art, tamper):
    TAMPERINGS[tamper](art)
    with pytest.raises(ce.ArtifactError) as by_load_model:
        _load_and_search(art)
    with pytest.raises(ce.ArtifactError) as by_view:
        _read_as_the_server_does(art)
    assert str(by_view.value) == str(by_load_model.value)


# --- property: any byte-level corruption of any file --------------------------------------------

CORRUPTIONS = st.tuples(st.sampled_from(["flip", "truncate", "append", "zero", "empty"]), st.floats(0, 1), st.integers(1, 255))


def _corrupt(path, how: str, where: float, byte: int) -> None:
    data = bytearray(path.read_bytes())
    at = min(int(where * len(data)), max(len(data) - 1, 0))
    if how == "flip" and data:
        data[at] ^= byte
    elif how == "truncate":
        data = data[:at]
    elif how == "append":
        data += bytes([byte]) * 7
    elif how == "zero":
        data[at : at + 16] = bytes(len(data[at : at + 16]))
    else:
        data = bytearray()
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def pristine(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    ce.save_model(model, root / "art")
    return root / "art", _load_and_search(root / "art")


def _files(store):
    return sorted([p for p in snapshot_of(store).iterdir()] + [store / "CURRENT"])


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 20), corruption=CORRUPTIONS, seal=st.booleans())
def test_any_corruption_of_any_file_is_refused_or_changes_nothing(pristine, tmp_path, which, corruption, seal):
    import shutil
    import tempfile

    source, expected = pristine
    art = Path(tempfile.mkdtemp(dir=tmp_path)) / "art"
    shutil.copytree(source, art)
    files = _files(art)
    target = files[which % len(files)]
    _corrupt(target, *corruption)
    if seal and target.name not in ("CURRENT", "manifest.json") and not target.name.endswith(".faiss"):
        reseal(art)  # FAISS's own reader is not asked to survive arbitrary bytes: the manifest stands before it
    try:
        got = _load_and_search(art)
    except ce.ArtifactError:
        return
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory"])
def test_a_file_that_is_not_a_regular_file_is_refused_without_blocking(art, tmp_path, kind):
    target = snapshot_of(art) / "tensors.safetensors"
    kept = tmp_path / "kept.safetensors"
    target.rename(kept)
    if kind == "fifo":
        os.mkfifo(target)  # opening it for reading would block until a writer came
    elif kind == "symlink":
        target.symlink_to(kept)  # the same bytes, through a link: still refused
    else:
        target.mkdir()
    with pytest.raises(ce.ArtifactError, match=r"tensors.safetensors: (not a regular file|cannot be opened as a plain file)"):
        ce.load_model(art)
