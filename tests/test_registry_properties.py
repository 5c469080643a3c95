"""Property tests for the ID registry as an artifact stores and reads it: any registry round-trips
exactly through its JSON file, and any JSON value in that file is read or refused with one error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collabemb.registry import IdRegistry, UnknownIdError
from collabemb.schema import REGISTRY, ArtifactError, parse_json

INT64 = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # no lone surrogates: not UTF-8
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(ids=st.one_of(st.lists(INT64, unique=True, max_size=40), st.lists(TEXT, unique=True, max_size=40)))
def test_any_registry_round_trips_through_its_json_file_exactly(ids):
    registry = IdRegistry(ids, name="item") if ids else IdRegistry(np.empty(0, dtype=np.int64), name="item")
    data = json.dumps(registry.to_dict(), ensure_ascii=True).encode()
    back = IdRegistry.from_dict(parse_json(data, "items.json", REGISTRY))
    assert back == registry and back.fingerprint() == registry.fingerprint() and back.id_type == registry.id_type
    if ids:
        rows = back.encode(ids)
        assert sorted(rows.tolist()) == list(range(1, len(ids) + 1))  # each ID its own row, none row 0
        assert back.decode(rows).tolist() == list(ids)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(ids=st.lists(INT64, unique=True, min_size=1, max_size=20), other=INT64)
def test_an_id_not_in_the_registry_is_row_0_or_an_error_never_another_row(ids, other):
    registry = IdRegistry(ids)
    expected = registry.ids.tolist().index(other) + 1 if other in ids else 0
    assert registry.encode([other], unknown="unknown_slot").tolist() == [expected]
    if other not in ids:
        with pytest.raises(UnknownIdError):
            registry.encode([other], unknown="raise")


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    payload=st.one_of(
        JSON_VALUES,
        st.fixed_dictionaries({"name": JSON_VALUES, "id_type": JSON_VALUES, "ids": JSON_VALUES}),
        st.fixed_dictionaries({"id_type": st.sampled_from(["int", "str"]), "ids": st.lists(JSON_VALUES, max_size=6)}),
    )
)
def test_any_json_in_a_registry_file_is_read_or_refused_with_one_error(payload):
    data = json.dumps(payload).encode()
    try:
        IdRegistry.from_dict(parse_json(data, "users.json", REGISTRY))
    except (ArtifactError, ValueError, TypeError) as exc:
        assert str(exc)
