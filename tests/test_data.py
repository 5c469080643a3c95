"""collabemb.data: reading ratings from DataFrames, CSV / TSV / parquet and the MovieLens layouts.

Every input is a tiny file the test writes into tmp_path (or an in-memory DataFrame).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from collabemb.data import Ratings, RatingsError, read_ratings
from collabemb.inputs import read_pairs
from collabemb.registry import IdRegistry


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def frame_dict(ratings: Ratings) -> dict[str, list]:
    return {col: ratings.frame[col].tolist() for col in ratings.frame.columns}


def error_of(source, **kwargs) -> str:
    with pytest.raises(RatingsError) as exc:
        read_ratings(source, **kwargs)
    return str(exc.value)


# --- sources ---------------------------------------------------------------------------


def test_dataframe_gives_typed_columns_and_a_range_index():
    df = pd.DataFrame({"user": [1, 2], "item": [10, 20], "rating": [4, 3.5], "ts": [100, 200]}, index=[7, 3])
    r = read_ratings(df, timestamp_col="ts")
    assert frame_dict(r) == {"user": [1, 2], "item": [10, 20], "rating": [4.0, 3.5], "timestamp": [100, 200]}
    assert r.frame.dtypes.to_dict() == {"user": np.int64, "item": np.int64, "rating": np.float32, "timestamp": np.int64}
    assert isinstance(r.frame.index, pd.RangeIndex)
    assert r.source == "DataFrame"
    assert r.n_duplicates == 0
    assert len(r) == 2
    assert r.has_timestamp


def test_a_column_named_timestamp_is_kept_without_asking():
    r = read_ratings(pd.DataFrame({"user": [1], "item": [2], "rating": [3.0], "timestamp": [5]}))
    assert list(r.frame.columns) == ["user", "item", "rating", "timestamp"]
    assert r.frame["timestamp"].tolist() == [5]


def test_without_a_timestamp_there_is_no_timestamp_column():
    r = read_ratings(pd.DataFrame({"user": [1], "item": [2], "rating": [3.0], "when": [5]}))
    assert list(r.frame.columns) == ["user", "item", "rating"]
    assert not r.has_timestamp


def test_custom_column_names_are_mapped_to_the_standard_ones(tmp_path):
    path = write(tmp_path, "r.csv", "uid,iid,stars,when\n1,2,5,99\n")
    r = read_ratings(path, user_col="uid", item_col="iid", rating_col="stars", timestamp_col="when")
    assert frame_dict(r) == {"user": [1], "item": [2], "rating": [5.0], "timestamp": [99]}
    assert r.source == str(path)


def test_csv_with_header(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating,timestamp\n1,10,4,100\n2,20,2.5,200\n")
    r = read_ratings(path, timestamp_col="timestamp")
    assert frame_dict(r) == {"user": [1, 2], "item": [10, 20], "rating": [4.0, 2.5], "timestamp": [100, 200]}


def test_tsv_separator_is_guessed_from_the_header(tmp_path):
    path = write(tmp_path, "r.tsv", "user\titem\trating\nu1\ti1\t4\nu2\ti1\t1\n")
    r = read_ratings(path)
    assert frame_dict(r) == {"user": ["u1", "u2"], "item": ["i1", "i1"], "rating": [4.0, 1.0]}


def test_semicolon_separator_is_guessed_and_explicit_sep_works(tmp_path):
    semi = write(tmp_path, "semi.csv", "user;item;rating\n1;2;3\n")
    assert frame_dict(read_ratings(semi)) == {"user": [1], "item": [2], "rating": [3.0]}
    pipe = write(tmp_path, "pipe.txt", "user|item|rating\n1|2|3\n")
    assert frame_dict(read_ratings(pipe, sep="|")) == {"user": [1], "item": [2], "rating": [3.0]}


def test_crlf_line_endings_and_blank_lines_are_accepted(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\r\n1,2,3\r\n\r\n2,3,4\r\n\n")
    assert frame_dict(read_ratings(path)) == {"user": [1, 2], "item": [2, 3], "rating": [3.0, 4.0]}


def test_quoted_fields_keep_their_separator(tmp_path):
    path = write(tmp_path, "r.csv", 'user,item,rating\n"a,b",x,3\n')
    assert frame_dict(read_ratings(path)) == {"user": ["a,b"], "item": ["x"], "rating": [3.0]}


def test_parquet_keeps_int_and_string_ids(tmp_path):
    path = tmp_path / "r.parquet"
    pd.DataFrame({"user": ["007", "7"], "item": [1, 2], "rating": [5.0, 1.0], "ts": [10, 20]}).to_parquet(path)
    r = read_ratings(path, timestamp_col="ts")
    assert frame_dict(r) == {"user": ["007", "7"], "item": [1, 2], "rating": [5.0, 1.0], "timestamp": [10, 20]}
    assert r.frame["user"].dtype == object
    assert r.source == str(path)


def test_ratings_input_is_returned_as_is():
    r = read_ratings(pd.DataFrame({"user": [1], "item": [2], "rating": [3.0]}))
    assert read_ratings(r) is r


# --- MovieLens layouts ---------------------------------------------------------------------


def test_ml_100k_layout_reads_tab_separated_u_data_without_header(tmp_path):
    path = write(tmp_path, "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    r = read_ratings(path, layout="ml-100k")
    assert frame_dict(r) == {"user": [196, 186], "item": [242, 302], "rating": [3.0, 3.0], "timestamp": [881250949, 891717742]}
    assert r.frame["user"].dtype == np.int64


def test_ml_1m_layout_reads_double_colon_ratings_dat(tmp_path):
    path = write(tmp_path, "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    r = read_ratings(path, layout="ml-1m")
    assert frame_dict(r) == {"user": [1, 1], "item": [1193, 661], "rating": [5.0, 3.0], "timestamp": [978300760, 978302109]}


def test_ml_latest_layout_reads_ratings_csv_with_movielens_header(tmp_path):
    path = write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n")
    r = read_ratings(path, layout="ml-latest")
    assert frame_dict(r) == {"user": [1, 1], "item": [1, 3], "rating": [4.0, 4.5], "timestamp": [964982703, 964981247]}


def test_ml_latest_layout_names_the_movielens_column_that_is_missing(tmp_path):
    path = write(tmp_path, "ratings.csv", "userId,itemId,rating,timestamp\n1,1,4.0,9\n")
    assert error_of(path, layout="ml-latest") == (
        f"{path}, line 1: missing item column 'movieId' (found columns: userId, itemId, rating, timestamp)"
    )


def test_layouts_force_integer_ids(tmp_path):
    path = write(tmp_path, "u.data", "1\t2\t3\t4\nu7\t2\t3\t4\n")
    assert error_of(path, layout="ml-100k") == f"{path}, line 2, column 'user': expected an integer ID, found 'u7'"


def test_unknown_layout_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match=r"unknown layout 'ml-2k'; expected one of ml-100k, ml-1m, ml-latest"):
        read_ratings(write(tmp_path, "u.data", "1\t2\t3\t4\n"), layout="ml-2k")


# --- ID kinds from text ------------------------------------------------------------------------


def test_canonical_integer_ids_become_ints(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\n-5,0,1\n12,3,2\n")
    r = read_ratings(path)
    assert frame_dict(r) == {"user": [-5, 12], "item": [0, 3], "rating": [1.0, 2.0]}
    assert r.frame["user"].dtype == np.int64


@pytest.mark.parametrize("odd", ["007", "+7", " 7", "7.0", "1e3", "-0", "00"])
def test_one_non_canonical_integer_makes_the_whole_column_strings(tmp_path, odd):
    path = write(tmp_path, "r.csv", f"user,item,rating\n7,1,1\n{odd},1,2\n")
    r = read_ratings(path)
    assert r.frame["user"].tolist() == ["7", odd]
    assert all(type(v) is str for v in r.frame["user"])
    assert r.frame["user"].dtype == object
    assert r.frame["item"].tolist() == [1, 1]


def test_leading_zero_id_stays_distinct_from_the_integer(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\n007,1,1\n7,1,2\n")
    r = read_ratings(path)
    assert r.n_duplicates == 0
    reg = IdRegistry(r.frame["user"])
    assert reg.ids.tolist() == ["007", "7"]
    assert "7" in reg and 7 not in reg


def test_id_type_str_keeps_canonical_integers_as_strings(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\n1,10,1\n2,20,2\n")
    r = read_ratings(path, id_type="str")
    assert frame_dict(r) == {"user": ["1", "2"], "item": ["10", "20"], "rating": [1.0, 2.0]}


def test_id_type_int_refuses_non_canonical_ids_naming_line_and_value(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\n1,1,1\n007,1,2\n")
    assert error_of(path, id_type="int") == f"{path}, line 3, column 'user': expected an integer ID, found '007'"


def test_integer_ids_beyond_int64_name_the_line_and_suggest_strings(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\n9223372036854775807,1,1\n9223372036854775808,1,2\n")
    assert error_of(path) == (
        f"{path}, line 3, column 'user': integer ID 9223372036854775808 does not fit in int64 (pass id_type='str' to keep IDs as strings)"
    )
    r = read_ratings(path, id_type="str")
    assert r.frame["user"].tolist() == ["9223372036854775807", "9223372036854775808"]


def test_int64_edge_ids_from_text_are_exact(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\n9223372036854775807,-9223372036854775808,1\n")
    r = read_ratings(path)
    assert frame_dict(r) == {"user": [2**63 - 1], "item": [-(2**63)], "rating": [1.0]}


def test_na_like_strings_are_ids_not_missing_values(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\nNA,null,1\nnan,None,2\n")
    r = read_ratings(path)
    assert frame_dict(r) == {"user": ["NA", "nan"], "item": ["null", "None"], "rating": [1.0, 2.0]}


def test_dataframe_id_type_str_turns_int_ids_into_strings():
    r = read_ratings(pd.DataFrame({"user": [1, 2], "item": [3, 4], "rating": [1.0, 2.0]}), id_type="str")
    assert frame_dict(r) == {"user": ["1", "2"], "item": ["3", "4"], "rating": [1.0, 2.0]}


def test_dataframe_id_type_int_refuses_string_ids():
    df = pd.DataFrame({"user": ["1"], "item": [3], "rating": [1.0]})
    assert error_of(df, id_type="int") == "DataFrame, column 'user': expected integer IDs, found str"


def test_dataframe_mixing_int_and_str_ids_is_refused_not_coerced():
    df = pd.DataFrame({"user": ["a", 7], "item": [1, 2], "rating": [1.0, 2.0]})
    msg = error_of(df)
    assert msg == "DataFrame, column 'user': IDs mix types (str 'a', int 7); IDs must be all ints or all strings, never coerced"


def test_dataframe_float_ids_are_refused():
    df = pd.DataFrame({"user": [1.0, 2.0], "item": [1, 2], "rating": [1.0, 2.0]})
    assert "DataFrame, column 'user': IDs must be ints or strings, found floats (float64)" in error_of(df)


# --- errors: missing column, empty input ----------------------------------------------------------


def test_missing_column_in_a_file_lists_the_columns_found(tmp_path):
    path = write(tmp_path, "r.csv", "user,movie,rating\n1,2,3\n")
    assert error_of(path) == f"{path}, line 1: missing item column 'item' (found columns: user, movie, rating)"


def test_missing_timestamp_column_is_named(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\n1,2,3\n")
    assert error_of(path, timestamp_col="ts") == (f"{path}, line 1: missing timestamp column 'ts' (found columns: user, item, rating)")


def test_missing_column_in_a_dataframe_lists_the_columns_found():
    df = pd.DataFrame({"uid": [1], "item": [2], "rating": [3.0]})
    assert error_of(df) == "DataFrame: missing user column 'user' (found columns: uid, item, rating)"


def test_zero_byte_file_is_empty_input(tmp_path):
    path = write(tmp_path, "r.csv", "")
    assert error_of(path) == f"{path}: empty input, expected a header row"


def test_zero_byte_movielens_file_is_empty_input(tmp_path):
    path = write(tmp_path, "u.data", "")
    assert error_of(path, layout="ml-100k") == f"{path}: empty input, expected at least one rating"


def test_header_only_file_is_empty_input(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\n")
    assert error_of(path) == f"{path}: empty input, expected at least one rating"


def test_empty_dataframes_are_empty_input():
    assert error_of(pd.DataFrame({"user": [], "item": [], "rating": []})) == ("DataFrame: empty input, expected at least one rating")
    assert error_of(pd.DataFrame()) == "DataFrame: empty input, expected at least one rating"


def test_missing_file_and_directory_are_named(tmp_path):
    assert error_of(tmp_path / "nope.csv") == f"{tmp_path / 'nope.csv'}: no such file"
    assert error_of(tmp_path) == f"{tmp_path}: is a directory, expected a ratings file"


def test_non_utf8_file_is_refused_with_line_and_byte_offset_in_the_file(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes(b"user,item,rating\n1,1,2\n\xff,1,2\n")
    assert error_of(path) == f"{path}, line 3: not UTF-8 text (invalid start byte at byte 23)"


def test_unreadable_parquet_is_refused(tmp_path):
    path = tmp_path / "r.parquet"
    path.write_bytes(b"not parquet at all")
    assert error_of(path).startswith(f"{path}: not a readable parquet file (")


# --- errors: bad ratings, missing IDs ---------------------------------------------------------------


@pytest.mark.parametrize("bad", ["abc", "NaN", "nan", "inf", "-inf", "1e999", ""])
def test_bad_rating_in_a_file_names_line_column_and_value(tmp_path, bad):
    path = write(tmp_path, "r.csv", f"user,item,rating\n1,1,4\n2,2,5\n3,3,{bad}\n")
    assert error_of(path) == f"{path}, line 4, column 'rating': expected a finite number, found {bad!r}"


def test_bad_rating_line_number_counts_the_header_as_line_one(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\n1,1,abc\n")
    assert error_of(path) == f"{path}, line 2, column 'rating': expected a finite number, found 'abc'"


def test_bad_rating_line_number_counts_blank_lines(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\n1,1,4\n\n   \n2,2,abc\n")
    assert error_of(path) == f"{path}, line 5, column 'rating': expected a finite number, found 'abc'"


def test_bad_rating_in_a_headerless_layout_counts_from_line_one(tmp_path):
    path = write(tmp_path, "u.data", "1\t1\t4\t100\n2\t2\tx\t100\n")
    assert error_of(path, layout="ml-100k") == f"{path}, line 2, column 'rating': expected a finite number, found 'x'"


def test_bad_timestamp_is_named(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating,ts\n1,1,4,yesterday\n")
    assert error_of(path, timestamp_col="ts") == f"{path}, line 2, column 'ts': expected a finite number, found 'yesterday'"


@pytest.mark.parametrize(("value", "shown"), [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_rating_in_a_dataframe_names_the_row(value, shown):
    df = pd.DataFrame({"user": [1, 2, 3], "item": [1, 2, 3], "rating": [4.0, 5.0, value]})
    assert error_of(df) == f"DataFrame, row 2, column 'rating': expected a finite number, found {shown}"


def test_non_numeric_rating_in_a_dataframe_names_the_row_and_value():
    df = pd.DataFrame({"user": [1, 2], "item": [1, 2], "rating": ["4", "great"]})
    assert error_of(df) == "DataFrame, row 1, column 'rating': expected a finite number, found 'great'"


def test_rows_of_a_dataframe_are_positions_not_index_labels():
    df = pd.DataFrame({"user": [1, 2], "item": [1, 2], "rating": [4.0, np.nan]}, index=[100, 50])
    assert error_of(df) == "DataFrame, row 1, column 'rating': expected a finite number, found nan"


def test_parquet_errors_name_rows(tmp_path):
    path = tmp_path / "r.parquet"
    pd.DataFrame({"user": [1, 2], "item": [1, 2], "rating": [1.0, np.nan]}).to_parquet(path)
    assert error_of(path) == f"{path}, row 1, column 'rating': expected a finite number, found nan"


@pytest.mark.parametrize("blank", ["", "  "])
def test_empty_id_field_is_a_missing_id_naming_line_and_column(tmp_path, blank):
    path = write(tmp_path, "r.csv", f"user,item,rating\n1,1,4\n2,{blank},4\n")
    assert error_of(path) == f"{path}, line 3, column 'item': missing ID"


@pytest.mark.parametrize("missing", [None, np.nan, ""])
def test_missing_id_in_a_dataframe_names_the_row(missing):
    df = pd.DataFrame({"user": ["a", "b", missing], "item": [1, 2, 3], "rating": [1.0, 2.0, 3.0]})
    assert error_of(df) == "DataFrame, row 2, column 'user': missing ID"


def test_missing_int_id_in_a_dataframe_names_the_row():
    df = pd.DataFrame({"user": [1, 2], "item": pd.array([1, None], dtype="Int64"), "rating": [1.0, 2.0]})
    assert error_of(df) == "DataFrame, row 1, column 'item': missing ID"


# --- errors: unparseable lines ------------------------------------------------------------------------


def test_line_with_an_extra_field_names_line_and_counts(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating,timestamp\n1,1,4,100\n2,2,4,100,9\n")
    assert error_of(path, timestamp_col="timestamp") == f"{path}, line 3: expected 4 fields, found 5"


def test_extra_field_on_every_line_is_refused_not_shifted(tmp_path):
    # pandas would quietly make the first field an index and shift every column left
    path = write(tmp_path, "r.csv", "user,item,rating\n1,2,3,4\n5,6,7,8\n")
    assert error_of(path) == f"{path}, line 2: expected 3 fields, found 4"


def test_ml_100k_line_with_five_fields_is_refused(tmp_path):
    later = write(tmp_path, "later.data", "1\t2\t3\t4\n1\t3\t3\t4\t5\n")
    assert error_of(later, layout="ml-100k") == f"{later}, line 2: expected 4 fields, found 5"
    every = write(tmp_path, "every.data", "1\t2\t3\t4\t5\n1\t3\t3\t4\t5\n")
    assert error_of(every, layout="ml-100k") == f"{every}, line 1: expected 4 fields, found 5"


def test_ml_1m_line_with_five_fields_is_refused(tmp_path):
    path = write(tmp_path, "ratings.dat", "1::2::3::4\n1::2::3::4\n1::3::3::4::5\n")
    assert error_of(path, layout="ml-1m") == f"{path}, line 3: expected 4 fields, found 5"


def test_extra_field_after_a_blank_line_names_the_physical_line(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\n1,1,4\n\n2,2,4,9\n")
    assert error_of(path) == f"{path}, line 4: expected 3 fields, found 4"


def test_short_line_fails_on_the_missing_field_with_its_line(tmp_path):
    path = write(tmp_path, "u.data", "1\t1\t4\t100\n2\t2\t4\n")
    assert error_of(path, layout="ml-100k") == f"{path}, line 2, column 'timestamp': expected a finite number, found ''"


# --- duplicates ----------------------------------------------------------------------------------------

DUPS = "user,item,rating,ts\n1,1,1,10\n1,2,2,11\n1,1,3,12\n2,1,4,13\n1,1,5,9\n"


def test_duplicates_keep_the_last_in_input_order_and_are_counted(tmp_path):
    r = read_ratings(write(tmp_path, "r.csv", DUPS), timestamp_col="ts")
    assert frame_dict(r) == {"user": [1, 2, 1], "item": [2, 1, 1], "rating": [2.0, 4.0, 5.0], "timestamp": [11, 13, 9]}
    assert r.n_duplicates == 2


def test_duplicates_raise_names_the_pair_the_repeating_line_and_the_first(tmp_path):
    path = write(tmp_path, "r.csv", DUPS)
    assert error_of(path, timestamp_col="ts", duplicates="raise") == (
        f"{path}, line 4: duplicate (user, item) pair (1, 1), first at line 2; 2 duplicate row(s) in all (use duplicates='last' or 'mean')"
    )


def test_duplicates_raise_in_a_dataframe_names_rows_and_string_pairs():
    df = pd.DataFrame({"user": ["a", "b", "b"], "item": ["x", "y", "y"], "rating": [1.0, 2.0, 3.0]})
    assert error_of(df, duplicates="raise") == (
        "DataFrame, row 2: duplicate (user, item) pair ('b', 'y'), first at row 1; "
        "1 duplicate row(s) in all (use duplicates='last' or 'mean')"
    )


def test_duplicates_mean_averages_ratings_keeps_latest_timestamp_and_first_order(tmp_path):
    r = read_ratings(write(tmp_path, "r.csv", DUPS), timestamp_col="ts", duplicates="mean")
    assert frame_dict(r) == {"user": [1, 1, 2], "item": [1, 2, 1], "rating": [3.0, 2.0, 4.0], "timestamp": [12, 11, 13]}
    assert r.n_duplicates == 2
    assert r.frame["rating"].dtype == np.float32
    assert r.frame["timestamp"].dtype == np.int64


def test_duplicates_mean_keeps_string_ids_as_python_strings():
    df = pd.DataFrame({"user": ["a", "a", "b"], "item": ["x", "x", "x"], "rating": [1.0, 2.0, 5.0]})
    r = read_ratings(df, duplicates="mean")
    assert frame_dict(r) == {"user": ["a", "b"], "item": ["x", "x"], "rating": [1.5, 5.0]}
    assert r.frame["user"].dtype == object


def test_duplicates_without_any_repeats_report_zero(tmp_path):
    r = read_ratings(write(tmp_path, "r.csv", "user,item,rating\n1,1,1\n1,2,1\n"), duplicates="raise")
    assert r.n_duplicates == 0


def test_same_digits_with_different_spelling_are_not_duplicates(tmp_path):
    r = read_ratings(write(tmp_path, "r.csv", "user,item,rating\n7,1,1\n007,1,2\n"), duplicates="raise")
    assert r.frame["user"].tolist() == ["7", "007"]


def test_unknown_duplicates_policy_is_a_value_error():
    with pytest.raises(ValueError, match=r"duplicates must be 'last', 'raise' or 'mean', got 'first'"):
        read_ratings(pd.DataFrame({"user": [1], "item": [1], "rating": [1.0]}), duplicates="first")


# --- subset ----------------------------------------------------------------------------------------------


def test_subset_by_mask_and_positions_resets_the_index():
    r = read_ratings(pd.DataFrame({"user": [1, 2, 3], "item": [1, 1, 1], "rating": [1.0, 2.0, 3.0]}))
    assert r.subset(np.array([True, False, True])).frame["user"].tolist() == [1, 3]
    sub = r.subset(np.array([2, 0]))
    assert sub.frame["user"].tolist() == [3, 1]
    assert isinstance(sub.frame.index, pd.RangeIndex)


# --- read_pairs ---------------------------------------------------------------------------------------------


def test_read_pairs_from_a_file_converts_to_the_registry_kinds(tmp_path):
    path = write(tmp_path, "pairs.csv", "user,item\n1,007\n2,7\n")
    pairs = read_pairs(path, user_id_type="int", item_id_type="str")
    assert pairs.to_dict("list") == {"user": [1, 2], "item": ["007", "7"]}
    assert pairs["user"].dtype == np.int64
    assert pairs["item"].dtype == object


def test_read_pairs_refuses_non_integer_ids_for_an_int_registry(tmp_path):
    path = write(tmp_path, "pairs.csv", "user,item\n1,1\n007,1\n")
    with pytest.raises(RatingsError) as exc:
        read_pairs(path)
    assert str(exc.value) == f"{path}, line 3, column 'user': expected an integer ID, found '007'"


def test_read_pairs_with_custom_columns_and_tsv(tmp_path):
    path = write(tmp_path, "pairs.tsv", "u\ti\tscore\na\tb\t1\n")
    pairs = read_pairs(path, user_col="u", item_col="i", user_id_type="str", item_id_type="str")
    assert pairs.to_dict("list") == {"user": ["a"], "item": ["b"]}


def test_read_pairs_from_a_dataframe():
    pairs = read_pairs(pd.DataFrame({"user": [3, 4], "item": ["x", "y"]}), item_id_type="str")
    assert pairs.to_dict("list") == {"user": [3, 4], "item": ["x", "y"]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user,movie\n1,2\n", "{path}, line 1: missing column 'item' (found columns: user, movie)"),
        ("user,item\n", "{path}: empty input, expected at least one (user, item) pair"),
        ("", "{path}: empty input, expected a header row"),
        ("user,item\n1,\n", "{path}, line 2, column 'item': missing ID"),
    ],
)
def test_read_pairs_errors_name_file_line_and_column(tmp_path, text, expected):
    path = write(tmp_path, "pairs.csv", text)
    with pytest.raises(RatingsError) as exc:
        read_pairs(path)
    assert str(exc.value) == expected.format(path=path)


def test_read_pairs_missing_file(tmp_path):
    with pytest.raises(RatingsError, match=r"nope\.csv: no such file"):
        read_pairs(tmp_path / "nope.csv")
