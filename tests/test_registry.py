"""collabemb.registry: raw ID <-> embedding row, with row 0 the unknown slot.

Everything here builds its own IDs in memory; nothing reads files or the network.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collabemb.registry import UNKNOWN_ROW, IdRegistry, UnknownIdError, id_type_of

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# --- strategies -------------------------------------------------------------------

int_ids = st.one_of(
    st.integers(INT64_MIN, INT64_MAX),
    st.integers(INT64_MAX - 3, INT64_MAX),  # the edges of int64, often
    st.integers(INT64_MIN, INT64_MIN + 3),
    st.integers(-10, 10),
)
# any code point, lone surrogates included (hypothesis leaves category Cs out by default)
any_char = st.one_of(st.characters(exclude_categories=[]), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=[]))
str_ids = st.one_of(
    st.text(any_char, max_size=8),
    st.sampled_from(["7", "007", "0007", "0", "00", "-7", " 7", "7 ", "", "\x00", "a\x00", "\ud800", "\udfff"]),
    st.from_regex(r"0*[0-9]{1,3}", fullmatch=True),  # numeric-looking strings with leading zeros
)
int_id_lists = st.lists(int_ids, min_size=1, max_size=30)
str_id_lists = st.lists(str_ids, min_size=1, max_size=30)
id_lists = st.one_of(int_id_lists, str_id_lists)

FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])


def json_round_trip(reg: IdRegistry) -> IdRegistry:
    """to_dict -> real JSON text -> from_dict, as an artifact would store it."""
    text = json.dumps(reg.to_dict())
    assert isinstance(text, str)
    return IdRegistry.from_dict(json.loads(text))


# --- layout: row 0 unknown, rows 1..n in sorted order ---------------------------------


def test_known_ids_take_rows_one_to_n_in_sorted_order_whatever_the_input_order():
    reg = IdRegistry([30, 10, 20, 10], name="user")
    assert len(reg) == 3
    assert reg.n_rows == 4
    assert reg.ids.tolist() == [10, 20, 30]
    assert reg.encode([10, 20, 30]).tolist() == [1, 2, 3]
    assert UNKNOWN_ROW == 0


def test_string_ids_are_sorted_by_code_point_not_numerically():
    reg = IdRegistry(["b", "10", "9", "a", "B"])
    assert reg.ids.tolist() == ["10", "9", "B", "a", "b"]
    assert reg.encode(["10", "9", "B", "a", "b"]).tolist() == [1, 2, 3, 4, 5]


def test_negative_and_int64_edge_ids_sort_numerically():
    reg = IdRegistry([INT64_MAX, 0, INT64_MIN, -1])
    assert reg.ids.tolist() == [INT64_MIN, -1, 0, INT64_MAX]
    assert reg.ids.dtype == np.int64


def test_empty_registry_has_only_the_unknown_row():
    reg = IdRegistry(name="item")
    assert len(reg) == 0
    assert reg.n_rows == 1
    assert reg.encode([5]).tolist() == [0]


# --- kinds: never coerced ------------------------------------------------------------


def test_leading_zero_strings_are_distinct_ids_and_stay_strings():
    reg = IdRegistry(["007", "7", "0007"])
    assert reg.id_type == "str"
    assert reg.ids.tolist() == ["0007", "007", "7"]
    assert all(type(v) is str for v in reg.ids)
    assert reg.encode(["7", "007", "0007"]).tolist() == [3, 2, 1]


def test_int_ids_stay_ints_as_int64():
    reg = IdRegistry([7, 8])
    assert reg.id_type == "int"
    assert reg.ids.dtype == np.int64
    assert reg.decode([1, 2]).tolist() == [7, 8]


@pytest.mark.parametrize("ids", [["a", 7], [7, "a"], ["007", 7]])
def test_mixed_int_and_str_ids_are_rejected_naming_both_kinds(ids):
    with pytest.raises(TypeError) as exc:
        IdRegistry(ids, name="user")
    msg = str(exc.value)
    assert msg.startswith("user IDs mix types (")
    assert "int 7" in msg
    assert "str '" in msg
    assert "IDs must be all ints or all strings, never coerced" in msg


def test_float_ids_are_rejected_in_a_list_and_in_a_float_array():
    with pytest.raises(TypeError, match=r"^id IDs must be ints or strings, found float 1\.0$"):
        IdRegistry([1.0, 2.0])
    with pytest.raises(TypeError, match=r"found floats \(float64\); convert integral floats with \.astype\('int64'\)"):
        IdRegistry(np.array([1.0, 2.0]))


def test_bool_ids_are_rejected_in_a_list_and_in_a_bool_array():
    with pytest.raises(TypeError, match=r"^id IDs must be ints or strings, found bool True$"):
        IdRegistry([True, False])
    with pytest.raises(TypeError, match=r"must be ints or strings, found booleans"):
        IdRegistry(np.array([True, False]))
    with pytest.raises(TypeError, match=r"found int 1, bool True"):
        IdRegistry([1, True])


def test_bytes_ids_are_rejected():
    with pytest.raises(TypeError, match=r"must be ints or strings, found bytes b'a'"):
        IdRegistry([b"a"])


def test_a_single_string_is_not_taken_as_a_sequence_of_characters():
    with pytest.raises(TypeError, match=r"must be a sequence of IDs, not a single str"):
        IdRegistry("abc")


@pytest.mark.parametrize("big", [2**63, -(2**63) - 1, 2**100])
def test_ints_beyond_int64_are_rejected_suggesting_strings(big):
    with pytest.raises(ValueError) as exc:
        IdRegistry([1, big], name="user")
    assert str(exc.value) == f"user IDs must fit in int64; found {big} (pass very large IDs as strings)"


def test_uint64_array_beyond_int64_is_rejected_suggesting_strings():
    with pytest.raises(ValueError, match=r"must fit in int64; found 18446744073709551615 \(pass very large IDs as strings\)"):
        IdRegistry(np.array([1, 2**64 - 1], dtype=np.uint64))


def test_very_large_ids_work_as_strings():
    reg = IdRegistry([str(2**100), "1"])
    assert reg.encode([str(2**100)]).tolist() == [2]


def test_missing_id_is_rejected_with_its_position():
    with pytest.raises(ValueError, match=r"^id IDs contain a missing value at position 1$"):
        IdRegistry(["a", None])


def test_explicit_kind_mismatch_is_rejected():
    with pytest.raises(TypeError, match=r"^user IDs must be int, found str$"):
        IdRegistry(["a"], id_type="int", name="user")


def test_pandas_inputs_of_each_dtype_give_the_plain_kind():
    assert IdRegistry(pd.Series([3, 1], dtype="Int64")).ids.tolist() == [1, 3]
    assert IdRegistry(pd.Series([3, 1], dtype=np.int32)).ids.dtype == np.int64
    strs = IdRegistry(pd.Series(["b", "a"], dtype="str"))
    assert strs.id_type == "str" and strs.ids.dtype == object and strs.ids.tolist() == ["a", "b"]
    cats = IdRegistry(pd.Series(["b", "a", "b"], dtype="category"))
    assert cats.id_type == "str" and cats.ids.tolist() == ["a", "b"]
    assert IdRegistry(np.array(["y", "x"])).ids.tolist() == ["x", "y"]
    assert all(type(v) is str for v in IdRegistry(np.array(["y", "x"])).ids)


def test_id_type_of_returns_int64_or_object_arrays():
    arr, kind = id_type_of([3, 1])
    assert kind == "int" and arr.dtype == np.int64 and arr.tolist() == [3, 1]
    arr, kind = id_type_of(["3", "1"])
    assert kind == "str" and arr.dtype == object and arr.tolist() == ["3", "1"]


# --- querying ------------------------------------------------------------------------


def test_querying_an_int_registry_with_strings_says_str_and_int_differ():
    reg = IdRegistry([7, 8], name="item")
    with pytest.raises(TypeError) as exc:
        reg.encode(["7"])
    assert str(exc.value) == "this registry holds int item IDs, got str IDs (e.g. '7'); '7' and 7 are different IDs"


def test_querying_a_str_registry_with_ints_is_a_type_error_too():
    reg = IdRegistry(["7"], name="item")
    with pytest.raises(TypeError, match=r"holds str item IDs, got int IDs \(e\.g\. 7\); '7' and 7 are different IDs"):
        reg.encode([7])


def test_encode_maps_unseen_ids_to_the_unknown_row_by_default():
    reg = IdRegistry(["a", "b"])
    assert reg.encode(["b", "zzz", "a", "A"]).tolist() == [2, 0, 1, 0]
    assert reg.encode(["b", "zzz"], unknown="unknown_slot").dtype == np.int64


def test_encode_raise_names_the_unseen_ids_and_counts_them():
    reg = IdRegistry([1, 2], name="user")
    with pytest.raises(UnknownIdError) as exc:
        reg.encode([1, 9, 2, 9], unknown="raise")
    assert str(exc.value) == "1 unseen user ID(s): 9"
    assert isinstance(exc.value, KeyError)


def test_encode_raise_shows_the_first_five_unseen_and_how_many_more():
    reg = IdRegistry(["a"], name="item")
    unseen = ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u5"]
    with pytest.raises(UnknownIdError) as exc:
        reg.encode(["a", *unseen], unknown="raise")
    assert str(exc.value) == "7 unseen item ID(s): 'u1', 'u2', 'u3', 'u4', 'u5' and 2 more"


def test_encode_rejects_an_unknown_policy_name():
    with pytest.raises(ValueError, match=r"unknown must be 'unknown_slot' or 'raise', got 'skip'"):
        IdRegistry([1]).encode([1], unknown="skip")


def test_encode_and_decode_of_empty_input_give_empty_arrays():
    reg = IdRegistry([1, 2])
    assert reg.encode([]).tolist() == []
    assert reg.decode([]).tolist() == []
    assert reg.decode(np.array([], dtype=np.int64)).dtype == np.int64
    assert IdRegistry(["a"]).encode([]).tolist() == []


def test_decode_refuses_the_unknown_row_with_a_clear_message():
    reg = IdRegistry([5, 6], name="user")
    with pytest.raises(IndexError) as exc:
        reg.decode([1, 0, 2])
    assert str(exc.value) == "row 0 is the unknown user slot and has no raw ID"


@pytest.mark.parametrize("row", [3, 100, -1])
def test_decode_refuses_rows_out_of_range_naming_the_valid_range(row):
    reg = IdRegistry([5, 6], name="user")
    with pytest.raises(IndexError) as exc:
        reg.decode([1, row])
    assert str(exc.value) == f"row {row} is out of range for 2 known user IDs (rows 1..2)"


def test_decode_refuses_float_rows():
    with pytest.raises(TypeError, match=r"rows must be integers, got float64"):
        IdRegistry([5]).decode([1.0])


def test_contains_and_known_never_raise_for_foreign_values():
    reg = IdRegistry([7])
    assert 7 in reg
    assert 8 not in reg
    assert "7" not in reg
    assert None not in reg
    assert 2**64 not in reg
    assert 7.0 not in reg
    assert reg.known([7, 8]).tolist() == [True, False]


def test_repr_shows_plain_ids():
    assert repr(IdRegistry([3, 1, 2, 4], name="user")) == "IdRegistry(name='user', id_type='int', n=4, ids=[1, 2, 3, ...])"
    assert repr(IdRegistry(["x"], name="item")) == "IdRegistry(name='item', id_type='str', n=1, ids=['x'])"


# --- growth ----------------------------------------------------------------------------


def test_extended_appends_new_ids_after_existing_rows_sorted_among_themselves():
    reg = IdRegistry([10, 30])
    grown, rows = reg.extended([30, 25, 5, 25])
    assert rows.tolist() == [2, 4, 3, 4]
    assert grown.ids.tolist() == [10, 30, 5, 25]
    assert grown.encode([10, 30, 5, 25]).tolist() == [1, 2, 3, 4]


def test_extended_leaves_the_original_registry_untouched():
    reg = IdRegistry([10, 30])
    ids_before, fingerprint = reg.ids.copy(), reg.fingerprint()
    grown, _ = reg.extended([5])
    assert reg.ids.tolist() == ids_before.tolist() and reg.fingerprint() == fingerprint
    assert reg.encode([5]).tolist() == [0] and grown.encode([5]).tolist() == [3]
    with pytest.raises(ValueError):
        reg.ids[0] = 99  # the ID array is read-only: nobody can change a registry in place


def test_extended_with_known_ids_only_changes_nothing():
    reg = IdRegistry(["a", "b"])
    grown, rows = reg.extended(["b", "a"])
    assert rows.tolist() == [2, 1]
    assert grown == reg and grown.ids.tolist() == ["a", "b"]


def test_extended_refuses_the_other_id_type():
    reg = IdRegistry([1])
    with pytest.raises(TypeError, match="'7' and 7 are different IDs"):
        reg.extended(["7"])
    assert reg.ids.tolist() == [1]


def test_extending_an_empty_registry_takes_the_id_type_of_the_ids():
    reg = IdRegistry(name="user")
    grown, rows = reg.extended(["b", "a"])
    assert rows.tolist() == [2, 1]
    assert grown.id_type == "str" and grown.name == "user"


def test_extending_by_nothing_keeps_an_explicit_id_type():
    reg = IdRegistry(id_type="str")
    grown, rows = reg.extended([])
    assert rows.tolist() == []
    assert grown.id_type == "str"
    assert IdRegistry.from_dict(json.loads(json.dumps(grown.to_dict()))).id_type == "str"


# --- persistence -----------------------------------------------------------------------


def test_to_dict_is_plain_json_with_ids_in_row_order():
    reg, _ = IdRegistry([30, 10], name="user").extended([20])
    data = reg.to_dict()
    assert data == {"name": "user", "id_type": "int", "ids": [10, 30, 20]}
    assert json.loads(json.dumps(data)) == data
    assert all(type(v) is int for v in data["ids"])


def test_from_dict_keeps_stored_row_order_without_resorting():
    reg = IdRegistry.from_dict({"name": "item", "kind": "str", "ids": ["z", "a"]})
    assert reg.name == "item"
    assert reg.encode(["z", "a"]).tolist() == [1, 2]


def test_json_round_trip_keeps_kind_rows_and_fingerprint():
    for ids in ([5, 2**62, -3], ["007", "7", "é", "\ud83d", "😀"]):
        reg = IdRegistry(ids, name="user")
        back = json_round_trip(reg)
        assert back == reg
        assert back.id_type == reg.id_type
        assert back.name == "user"
        assert back.encode(ids).tolist() == reg.encode(ids).tolist()
        assert back.fingerprint() == reg.fingerprint()


def test_fingerprint_differs_between_kinds_and_orders():
    assert IdRegistry([1, 2]).fingerprint() != IdRegistry(["1", "2"]).fingerprint()
    grown, _ = IdRegistry([2]).extended([1])
    assert grown.fingerprint() != IdRegistry([1, 2]).fingerprint()
    assert len(IdRegistry([1]).fingerprint()) == 16


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "float", "ids": []}, "registry id_type must be 'int' or 'str', found 'float'"),
        ({"kind": "int", "ids": "1,2"}, "registry 'ids' must be a list"),
        ({"kind": "int", "ids": [1, "2"]}, "registry of id_type 'int' holds a non-integer ID"),
        ({"kind": "int", "ids": [1, True]}, "registry of id_type 'int' holds a non-integer ID"),
        ({"kind": "int", "ids": [1, 2.0]}, "registry of id_type 'int' holds a non-integer ID"),
        ({"kind": "int", "ids": [2**63]}, "registry of id_type 'int' holds an ID outside the int64 range"),
        ({"kind": "str", "ids": ["1", 2]}, "registry of id_type 'str' holds a non-string ID"),
        ({"kind": "str", "ids": ["a", "a"]}, "registry holds a duplicated ID"),
    ],
)
def test_from_dict_rejects_malformed_data_with_a_clear_message(data, message):
    with pytest.raises(ValueError) as exc:
        IdRegistry.from_dict(data)
    assert str(exc.value) == message


def test_registries_of_different_kinds_or_ids_are_not_equal():
    assert IdRegistry([1]) != IdRegistry(["1"])
    assert IdRegistry([1]) != IdRegistry([1, 2])
    assert IdRegistry(id_type="int") != IdRegistry(id_type="str")
    assert IdRegistry([2, 1]) == IdRegistry([1, 2])


# --- speed (sanity bounds only) -----------------------------------------------------------

N_BIG = 1_000_000


def test_one_million_int_ids_encode_and_decode_quickly_and_exactly():
    rng = np.random.default_rng(0)
    ids = rng.permutation(N_BIG).astype(np.int64) * 7919 - 2**40
    reg = IdRegistry(ids)
    query = ids[rng.integers(0, N_BIG, N_BIG)]
    start = time.perf_counter()
    rows = reg.encode(query)
    back = reg.decode(rows)
    elapsed = time.perf_counter() - start
    assert rows.min() >= 1 and rows.max() <= N_BIG
    assert np.array_equal(back, query)
    assert np.array_equal(reg.encode(np.sort(ids)), np.arange(1, N_BIG + 1))
    assert elapsed < 5.0, f"1M int IDs took {elapsed:.2f} s"


def test_one_million_string_ids_encode_and_decode_quickly_and_exactly():
    rng = np.random.default_rng(1)
    ids = np.char.zfill(rng.permutation(N_BIG).astype(str), 7).astype(object)  # leading zeros
    reg = IdRegistry(ids)
    query = ids[rng.integers(0, N_BIG, N_BIG)]
    start = time.perf_counter()
    rows = reg.encode(query)
    back = reg.decode(rows)
    elapsed = time.perf_counter() - start
    assert rows.min() >= 1
    assert np.array_equal(back, query)
    assert reg.encode(["0000000", "0999999", "999999"]).tolist() == [1, N_BIG, 0]
    assert elapsed < 5.0, f"1M string IDs took {elapsed:.2f} s"


# --- properties -----------------------------------------------------------------------------


@FAST
@given(id_lists)
def test_property_encode_then_decode_gives_the_ids_back(ids):
    reg = IdRegistry(ids)
    rows = reg.encode(ids, unknown="raise")
    assert rows.min() >= 1 and rows.max() <= len(reg)
    back = reg.decode(rows)
    assert back.tolist() == ids
    assert all(type(a) is type(b) for a, b in zip(back.tolist(), ids, strict=True))


@FAST
@given(id_lists)
def test_property_rows_follow_sorted_unique_ids(ids):
    reg = IdRegistry(ids)
    expected = sorted(set(ids))
    assert reg.ids.tolist() == expected
    assert reg.encode(expected).tolist() == list(range(1, len(expected) + 1))


@FAST
@given(id_lists)
def test_property_json_round_trip_keeps_ids_and_rows(ids):
    reg = IdRegistry(ids, name="user")
    back = json_round_trip(reg)
    assert back == reg
    assert back.ids.tolist() == reg.ids.tolist()
    assert back.encode(ids).tolist() == reg.encode(ids).tolist()
    assert back.fingerprint() == reg.fingerprint()


@FAST
@given(st.one_of(st.tuples(int_id_lists, int_id_lists), st.tuples(str_id_lists, str_id_lists)))
def test_property_add_preserves_old_rows_and_appends_new_ones(pair):
    first, more = pair
    reg = IdRegistry(first)
    old_ids = reg.ids.tolist()
    old_rows = reg.encode(old_ids).tolist()
    grown, rows = reg.extended(more)
    assert grown.encode(old_ids).tolist() == old_rows
    assert grown.ids.tolist()[: len(old_ids)] == old_ids
    new = sorted(set(more) - set(old_ids))
    assert grown.ids.tolist()[len(old_ids) :] == new
    assert grown.decode(rows).tolist() == more
    assert json_round_trip(grown) == grown
    assert reg.ids.tolist() == old_ids


@FAST
@given(int_id_lists)
def test_property_string_forms_of_int_ids_are_never_found_in_an_int_registry(ids):
    reg = IdRegistry(ids)
    with pytest.raises(TypeError, match="'7' and 7 are different IDs"):
        reg.encode([str(v) for v in ids])
    assert all(str(v) not in reg for v in ids)


@FAST
@given(str_id_lists, st.lists(str_ids, max_size=10))
def test_property_unseen_strings_encode_to_the_unknown_row(ids, queries):
    reg = IdRegistry(ids)
    known = set(ids)
    expected = [reg.encode([q]).item() if q in known else 0 for q in queries]
    assert reg.encode(queries).tolist() == expected
    assert all((reg.encode([q]).item() == 0) == (q not in known) for q in queries)
