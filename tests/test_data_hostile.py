"""read_ratings on hostile input (issue 10: no input that ends in a traceback).

Every case ends in a valid Ratings or in one RatingsError naming the file, the line and the
column (a DataFrame's row position and column) and what was expected. The files are written into
tmp_path by the test; the property tests feed arbitrary bytes and generated CSVs.
"""

from __future__ import annotations

import bz2
import csv
import datetime as dt
import gzip
import io
import lzma
import os
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collabemb import data
from collabemb.data import Ratings, RatingsError, read_ratings

COMPRESS = {"gzip": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress, "zstd": lambda raw: zstandard.ZstdCompressor().compress(raw)}


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def error_of(source, **kwargs) -> str:
    with pytest.raises(RatingsError) as exc:
        read_ratings(source, **kwargs)
    return str(exc.value)


def frame_dict(ratings: Ratings) -> dict[str, list]:
    return {col: ratings.frame[col].tolist() for col in ratings.frame.columns}


def frame(**columns) -> pd.DataFrame:
    base = {"user": [1, 2], "item": [10, 20], "rating": [4.0, 3.0]}
    return pd.DataFrame({**base, **columns})


# --- 1. ratings beyond float32 ----------------------------------------------------------------


@pytest.mark.parametrize("big", ["1e39", "-3.5e38", "3.41e38"])
def test_rating_beyond_float32_is_refused_naming_value_line_and_column(tmp_path, big):
    path = write(tmp_path, "r.csv", f"user,item,rating\n1,1,4\n2,2,{big}\n")
    assert error_of(path) == (
        f"{path}, line 3, column 'rating': expected a finite number within float32's range (±3.4028235e+38), found {big!r}"
    )


def test_rating_beyond_float32_in_a_dataframe_names_the_row():
    assert error_of(frame(rating=[4.0, 1e39])) == (
        "DataFrame, row 1, column 'rating': expected a finite number within float32's range (±3.4028235e+38), found 1e+39"
    )


def test_largest_float32_rating_is_kept(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\n1,1,3.4028234e38\n")
    assert read_ratings(path).frame["rating"].tolist() == [float(np.finfo(np.float32).max)]


@pytest.mark.parametrize(("bad", "shown"), [("NaN", "'NaN'"), ("inf", "'inf'"), ("-Infinity", "'-Infinity'")])
def test_nan_and_infinite_ratings_are_named_by_their_value(tmp_path, bad, shown):
    path = write(tmp_path, "r.csv", f"user,item,rating\n1,1,{bad}\n")
    assert error_of(path) == f"{path}, line 2, column 'rating': expected a finite number, found {shown}"


def test_a_python_int_beyond_float64_in_a_rating_column_is_refused_not_an_overflow_error():
    msg = error_of(frame(rating=pd.Series([4.0, 10**400], dtype=object)))
    assert msg.startswith("DataFrame, row 1, column 'rating': expected a finite number, found 1000")
    assert len(msg) < 200


def test_booleans_among_python_objects_are_no_ratings():
    assert (
        error_of(frame(rating=pd.Series([2.0, True], dtype=object)))
        == "DataFrame, row 1, column 'rating': expected a finite number, found True"
    )


@pytest.mark.parametrize(
    ("values", "shown", "dtype"),
    [([True, False], "True", "bool"), ([1 + 2j, 3 + 0j], "(1+2j)", "complex128"), (pd.to_timedelta([1, 2], unit="s"), None, None)],
)
def test_ratings_that_are_not_real_numbers_are_refused_not_converted(values, shown, dtype):
    msg = error_of(frame(rating=values))
    assert msg.startswith("DataFrame, row 0, column 'rating': expected a finite number, found ")
    if shown is not None:
        assert msg == f"DataFrame, row 0, column 'rating': expected a finite number, found {shown} (the column holds {dtype} values)"


# --- 2. timestamps beyond int64 seconds; datetimes with a time zone -------------------------------------


@pytest.mark.parametrize("big", ["1e30", "-1e19", "9.3e18"])
def test_timestamp_beyond_int64_is_refused_naming_line_and_column(tmp_path, big):
    path = write(tmp_path, "r.csv", f"user,item,rating,timestamp\n1,1,4,100\n2,2,4,{big}\n")
    assert error_of(path) == (
        f"{path}, line 3, column 'timestamp': expected a timestamp in unix seconds within int64's range (|t| < 9.22e18), found {big!r}"
    )


@pytest.mark.parametrize(("values", "shown"), [([1.0, 1e30], "1e+30"), (np.array([1, 2**64 - 1], dtype=np.uint64), "18446744073709551615")])
def test_timestamp_beyond_int64_in_a_dataframe_names_the_row(values, shown):
    assert error_of(frame(timestamp=values)) == (
        f"DataFrame, row 1, column 'timestamp': expected a timestamp in unix seconds within int64's range (|t| < 9.22e18), found {shown}"
    )


def test_integer_timestamps_stay_exact_up_to_int64_max():
    r = read_ratings(frame(timestamp=np.array([2**53 + 1, 2**63 - 1], dtype=np.int64)))
    assert r.frame["timestamp"].tolist() == [2**53 + 1, 2**63 - 1]


def test_timezone_aware_datetimes_become_utc_seconds_as_naive_ones_are_read_as_utc():
    when = pd.to_datetime(["2020-01-01 01:00", "2020-07-01 02:00"])
    paris = read_ratings(frame(timestamp=when.tz_localize("Europe/Paris")))
    naive_utc = read_ratings(frame(timestamp=when.tz_localize("Europe/Paris").tz_convert("UTC").tz_localize(None)))
    assert paris.frame["timestamp"].tolist() == [1577836800, 1593561600]  # 00:00 UTC, 00:00 UTC (summer time)
    assert naive_utc.frame["timestamp"].tolist() == paris.frame["timestamp"].tolist()
    assert paris.frame["timestamp"].dtype == np.int64


def test_timezone_aware_timestamps_in_parquet_become_utc_seconds(tmp_path):
    path = tmp_path / "r.parquet"
    frame(timestamp=pd.to_datetime(["2020-01-01", "2021-01-01"]).tz_localize("America/New_York")).to_parquet(path)
    assert read_ratings(path).frame["timestamp"].tolist() == [1577854800, 1609477200]


def test_python_datetimes_in_several_time_zones_become_utc_seconds():
    utc = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    plus_one = dt.datetime(2020, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    r = read_ratings(frame(timestamp=pd.Series([utc, plus_one], dtype=object)))
    assert r.frame["timestamp"].tolist() == [1577836800, 1577836800]


def test_arrow_timestamps_with_a_time_zone_become_utc_seconds():
    import pyarrow as pa

    when = pd.array([dt.datetime(2020, 1, 1, tzinfo=dt.UTC)] * 2, dtype=pd.ArrowDtype(pa.timestamp("s", tz="Europe/Paris")))
    assert read_ratings(frame(timestamp=when)).frame["timestamp"].tolist() == [1577836800, 1577836800]


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        (pd.to_timedelta([1, 2], unit="s"), "timedelta64"),
        ([True, False], "bool"),
        (pd.period_range("2020-01-01", periods=2, freq="D"), "period[D]"),
    ],
)
def test_timestamps_that_are_not_seconds_or_datetimes_are_refused_not_misread(values, dtype):
    msg = error_of(frame(timestamp=values))
    assert msg.startswith("DataFrame, row 0, column 'timestamp': expected unix seconds or datetimes, found ")
    assert f"(the column holds {dtype}" in msg


# --- 3. repeated column names ----------------------------------------------------------------------------


def test_repeated_rating_column_in_a_csv_header_is_refused(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating,rating\n1,2,3,4\n")
    assert error_of(path) == f"{path}, line 1: rating column 'rating' appears 2 times (fields 3 and 4); expected each column name once"


def test_repeated_user_column_in_a_csv_header_is_refused(tmp_path):
    path = write(tmp_path, "r.tsv", "user\titem\tuser\trating\n1\t2\t3\t4\n")
    assert error_of(path) == f"{path}, line 1: user column 'user' appears 2 times (fields 1 and 3); expected each column name once"


def test_repeated_movielens_column_is_named_as_in_the_file(tmp_path):
    path = write(tmp_path, "ratings.csv", "userId,movieId,rating,movieId,timestamp\n1,2,3,4,5\n")
    assert error_of(path, layout="ml-latest") == (
        f"{path}, line 1: item column 'movieId' appears 2 times (fields 2 and 4); expected each column name once"
    )


def test_repeated_column_in_a_dataframe_is_refused():
    df = pd.DataFrame([[1, 2, 3.0, 4.0]], columns=["user", "item", "rating", "rating"])
    assert error_of(df) == "DataFrame: rating column 'rating' appears 2 times (positions 2 and 3); expected each column name once"


def test_repeated_column_in_parquet_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "r.parquet"
    table = pa.table([pa.array([1]), pa.array([2]), pa.array([3.0]), pa.array([4.0])], names=["user", "item", "rating", "rating"])
    pq.write_table(table, path)
    assert error_of(path) == f"{path}: rating column 'rating' appears 2 times (positions 2 and 3); expected each column name once"


def test_a_repeated_column_that_is_not_read_is_no_error(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating,tag,tag\n1,2,3,a,b\n")
    assert frame_dict(read_ratings(path)) == {"user": [1], "item": [2], "rating": [3.0]}


# --- 4. compressed files, told by their first bytes -----------------------------------------------------

PLAIN = "user\titem\trating\ttimestamp\n1\t10\t4\t100\n2\t20\t2.5\t200\n"


@pytest.mark.parametrize("kind", list(COMPRESS))
@pytest.mark.parametrize("name", ["ratings.csv", "ratings.tsv.gz", "ratings.bz2", "ratings"])
def test_compressed_files_are_read_whatever_their_name(tmp_path, kind, name):
    path = write(tmp_path, name, COMPRESS[kind](PLAIN.encode()))  # a tab-separated file: the separator is sniffed inside
    r = read_ratings(path)
    assert frame_dict(r) == {"user": [1, 2], "item": [10, 20], "rating": [4.0, 2.5], "timestamp": [100, 200]}
    assert r.source == str(path)


@pytest.mark.parametrize("kind", list(COMPRESS))
def test_compressed_files_take_the_fast_path(tmp_path, kind):
    path = write(tmp_path, "r.csv", COMPRESS[kind](PLAIN.encode()))
    with mock.patch.object(data, "_read_text", side_effect=AssertionError("careful path used")):
        assert len(read_ratings(path)) == 2


@pytest.mark.parametrize("name", ["r.gz", "r.bz2", "r.xz", "r.zst"])
def test_a_plain_file_with_a_compressed_extension_is_read_as_plain_text(tmp_path, name):
    path = write(tmp_path, name, "user,item,rating\n1,2,3\n")
    assert frame_dict(read_ratings(path)) == {"user": [1], "item": [2], "rating": [3.0]}
    bad = write(tmp_path, "bad" + name, "user,item,rating\n1,2,3\n2,3,x\n")  # and the careful path too
    assert error_of(bad) == f"{bad}, line 3, column 'rating': expected a finite number, found 'x'"


@pytest.mark.parametrize("kind", list(COMPRESS))
def test_line_numbers_in_compressed_files_are_those_of_the_text(tmp_path, kind):
    text = 'user,item,rating,title\n1,1,4,"a\nb"\n\n2,2,x,c\n'
    path = write(tmp_path, "ratings.csv", COMPRESS[kind](text.encode()))
    assert error_of(path) == f"{path}, line 5, column 'rating': expected a finite number, found 'x'"
    extra = write(tmp_path, "extra.csv", COMPRESS[kind](b"user,item,rating\n1,1,4\n2,2,4,9\n"))
    assert error_of(extra) == f"{extra}, line 3: expected 3 fields, found 4"
    latin = write(tmp_path, "latin.csv", COMPRESS[kind](b"user,item,rating\n1,1,4\n\xe9,2,3\n"))
    assert error_of(latin) == f"{latin}, line 3: not UTF-8 text (invalid continuation byte at byte 23)"


def test_movielens_dat_file_compressed(tmp_path):
    path = write(tmp_path, "ratings.dat", gzip.compress(b"1::1193::5::978300760\n1::661::x::978302109\n"))
    assert error_of(path, layout="ml-1m") == f"{path}, line 2, column 'rating': expected a finite number, found 'x'"


def test_zstd_file_of_several_frames_is_read_whole(tmp_path):
    raw = PLAIN.encode()
    path = write(tmp_path, "r.csv", COMPRESS["zstd"](raw[:30]) + COMPRESS["zstd"](raw[30:]))
    assert read_ratings(path).frame["user"].tolist() == [1, 2]


@pytest.mark.parametrize("kind", list(COMPRESS))
def test_truncated_compressed_file_is_refused(tmp_path, kind):
    path = write(tmp_path, "r.csv", COMPRESS[kind](PLAIN.encode() * 20)[:-8])
    msg = error_of(path)
    assert msg.startswith(f"{path}: corrupt {kind} data (")
    assert msg.endswith(f"); expected a complete {kind}-compressed text file")


@pytest.mark.parametrize("kind", list(COMPRESS))
def test_compressed_empty_and_header_only_files_are_empty_input(tmp_path, kind):
    empty = write(tmp_path, "empty.csv", COMPRESS[kind](b""))
    assert error_of(empty) == f"{empty}: empty input, expected a header row"
    header = write(tmp_path, "header.csv", COMPRESS[kind](b"user,item,rating\n"))
    assert error_of(header) == f"{header}: empty input, expected at least one rating"


def test_zstd_without_the_zstandard_package_is_a_clear_error(tmp_path):
    path = write(tmp_path, "r.csv", COMPRESS["zstd"](PLAIN.encode()))
    with mock.patch.dict(sys.modules, {"zstandard": None}):
        assert error_of(path) == f"{path}: zstd-compressed; reading it needs the 'zstandard' package (pip install zstandard)"


def test_a_parquet_file_with_a_text_name_is_read_as_parquet(tmp_path):
    path = tmp_path / "ratings.csv"
    frame().to_parquet(path)
    assert frame_dict(read_ratings(path)) == {"user": [1, 2], "item": [10, 20], "rating": [4.0, 3.0]}


# --- 5. line numbers after quoted fields that span lines -------------------------------------------------

TITLED = 'user,item,rating,title\n1,1,4,"Three\nline\ntitle"\n2,2,5,plain\n3,3,x,plain\n'


def test_bad_value_after_a_multi_line_field_names_its_physical_line(tmp_path):
    path = write(tmp_path, "r.csv", TITLED)
    assert error_of(path) == f"{path}, line 6, column 'rating': expected a finite number, found 'x'"


@pytest.mark.parametrize("eol", ["\r\n", "\r"])
def test_physical_lines_count_crlf_and_lone_cr(tmp_path, eol):
    path = write(tmp_path, "r.csv", TITLED.replace("\n", eol))
    assert error_of(path) == f"{path}, line 6, column 'rating': expected a finite number, found 'x'"
    blank = write(tmp_path, "blank.csv", eol.join(["user,item,rating", "1,2,3", "", "2,3,x", ""]))
    assert error_of(blank) == f"{blank}, line 4, column 'rating': expected a finite number, found 'x'"


def test_doubled_quotes_and_literal_quotes_do_not_confuse_the_line_count(tmp_path):
    text = 'user,item,rating,title\n1,1,4,"say ""hi""\nthere"\n2,2,4,6" tall\n3,3,4,"a"""\n4,4,x,b\n'
    path = write(tmp_path, "r.csv", text)
    assert error_of(path) == f"{path}, line 6, column 'rating': expected a finite number, found 'x'"


def test_duplicate_pair_after_a_multi_line_field_names_physical_lines(tmp_path):
    path = write(tmp_path, "r.csv", 'user,item,rating,title\n1,1,4,"a\nb"\n2,2,4,c\n1,1,5,d\n')
    assert error_of(path, duplicates="raise") == (
        f"{path}, line 5: duplicate (user, item) pair (1, 1), first at line 2; 1 duplicate row(s) in all (use duplicates='last' or 'mean')"
    )


def test_extra_field_after_a_multi_line_field_names_its_physical_line(tmp_path):
    path = write(tmp_path, "r.csv", 'user,item,rating,title\n1,1,4,"a\n\nb"\n2,2,4,c,9\n')
    assert error_of(path) == f"{path}, line 5: expected 4 fields, found 5"


def test_unclosed_quote_names_the_line_where_it_opens(tmp_path):
    path = write(tmp_path, "r.csv", 'user,item,rating\n1,1,4\n\n2,"2,4\n3,3,3\n')
    assert error_of(path) == f"{path}, line 4: a quoted field opens here and never closes; expected a closing '\"'"


def test_fast_path_reads_multi_line_fields_across_its_blocks(tmp_path):
    rows = ["user,item,rating,title"]
    for i in range(40):
        rows.append(f'{i},{i},3,"t{i}\n{100 + i},{100 + i},1,y"' if i % 7 == 3 else f"{i},{i},4,plain")
    path = write(tmp_path, "r.csv", "\n".join(rows) + "\n")
    for block_size in (64, 100, 128):  # a quoted newline falls on a block boundary: no made-up rows
        with mock.patch.object(data, "_BLOCK_SIZE", block_size), mock.patch.object(data, "_read_text", side_effect=AssertionError):
            r = read_ratings(path)
        assert r.frame["user"].tolist() == list(range(40))


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('user,item,rating,title\n1,1,4,"never closed\n2,2,4,x\n3,3,4,y\n', 2),  # would swallow the rows after it
        ('user,item,rating\n1,1,4\n2,2,"3', 3),  # open at the very end
        ('user,item,rating\n1,1,4\n2,2,"3\n', 3),
    ],
)
def test_a_quote_left_open_is_refused_not_read_to_the_end_of_the_file(tmp_path, text, line):
    path = write(tmp_path, "r.csv", text)
    assert error_of(path) == f"{path}, line {line}: a quoted field opens here and never closes; expected a closing '\"'"


def test_literal_quotes_inside_unquoted_fields_are_kept(tmp_path):
    path = write(tmp_path, "r.csv", 'user,item,rating\n6" tall,"a""b",4\nx"y,c,5\n')
    assert frame_dict(read_ratings(path)) == {"user": ['6" tall', 'x"y'], "item": ['a"b', "c"], "rating": [4.0, 5.0]}


# --- 6. IDs that are not valid Unicode ----------------------------------------------------------------------


@pytest.mark.parametrize("col", ["user", "item"])
def test_lone_surrogate_in_a_dataframe_id_is_refused_naming_row_and_column(col):
    df = frame(**{col: pd.Series(["a", "b\ud800c"], dtype=object)})
    assert error_of(df) == (
        f"DataFrame, row 1, column {col!r}: ID 'b\\ud800c' holds a lone surrogate (U+D800) at character 1; "
        "expected text that can be written as UTF-8"
    )


def test_lone_surrogate_is_refused_with_id_type_str_too():
    df = frame(user=pd.Series(["\udcff", "x"], dtype=object))
    assert error_of(df, id_type="str").startswith("DataFrame, row 0, column 'user': ID '\\udcff' holds a lone surrogate (U+DCFF)")


def test_lone_surrogate_in_a_categorical_id_is_refused():
    df = frame(item=pd.Categorical(pd.Series(["a", "\ud800"], dtype=object)))
    assert error_of(df).startswith("DataFrame, row 1, column 'item': ID '\\ud800' holds a lone surrogate (U+D800)")


@pytest.mark.parametrize("dtype", ["str", "category", "object"])
def test_blank_text_ids_of_every_dtype_are_missing(dtype):
    assert error_of(frame(user=pd.Series(["a", " \t"], dtype=dtype))) == "DataFrame, row 1, column 'user': missing ID"


# --- 7. other hostile files -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "line", "byte"), [("user,item,rating\n1,2\x00,3\n", 2, 20), ("us\x00er,item,rating\n1,2,3\n", 1, 2)])
def test_nul_byte_is_refused_naming_its_line(tmp_path, text, line, byte):
    path = write(tmp_path, "r.csv", text)
    assert error_of(path) == f"{path}, line {line}: NUL byte at byte {byte}; expected UTF-8 text (is it a binary or UTF-16 file?)"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_utf16_file_is_named_as_such(tmp_path, encoding):
    path = write(tmp_path, "r.csv", ("\ufeff" if encoding == "utf-16-be" else "") + "user,item,rating\n1,2,3\n")
    path.write_bytes(path.read_text(encoding="utf-8").encode(encoding))
    msg = error_of(path)
    assert msg.startswith(f"{path}, line 1: UTF-16 text (byte-order mark ")
    assert msg.endswith("); expected UTF-8 (save the file as UTF-8)")


def test_enormous_integer_id_is_refused_with_a_short_message(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\n" + "1" * 100_000 + ",2,3\n")
    assert error_of(path) == (
        f"{path}, line 2, column 'user': integer ID 11111111111111111111... (100000 characters) does not fit in int64 "
        "(pass id_type='str' to keep IDs as strings)"
    )
    assert read_ratings(path, id_type="str").frame["user"].str.len().tolist() == [100_000]


def test_enormous_bad_rating_is_shown_cut_short(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\n1,2," + "z" * 100_000 + "\n")
    msg = error_of(path)
    assert msg.startswith(f"{path}, line 2, column 'rating': expected a finite number, found 'zzz")
    assert msg.endswith("... (100000 characters)")
    assert len(msg) < len(str(path)) + 200


def test_whitespace_only_lines_are_skipped_and_counted(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\n1,2,3\n\t\n \t \n2,3,x\n")
    assert error_of(path) == f"{path}, line 5, column 'rating': expected a finite number, found 'x'"


def test_blank_lines_before_the_header(tmp_path):
    path = write(tmp_path, "r.tsv", "\n\nuser\titem\trating\n1\t2\t3\n")
    assert frame_dict(read_ratings(path)) == {"user": [1], "item": [2], "rating": [3.0]}
    missing = write(tmp_path, "m.csv", "\n\nuser,movie,rating\n1,2,3\n")
    assert error_of(missing) == f"{missing}, line 3: missing item column 'item' (found columns: user, movie, rating)"


def test_byte_order_mark_is_read_and_lines_still_count(tmp_path):
    path = write(tmp_path, "r.csv", "\ufeffuser,item,rating\n1,2,3\n2,3,x\n")
    assert error_of(path) == f"{path}, line 3, column 'rating': expected a finite number, found 'x'"
    assert frame_dict(read_ratings(write(tmp_path, "ok.csv", "\ufeffuser,item,rating\n1,2,3\n")))["user"] == [1]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_a_ratings_error(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\n1,2,3\n")
    path.chmod(0)
    try:
        assert error_of(path).startswith(f"{path}: cannot read the file (")
    finally:
        path.chmod(0o600)


def test_non_printable_column_names_are_shown_escaped(tmp_path):
    path = write(tmp_path, "r.csv", "user,it\x1bem,rating\n1,2,3\n")
    assert error_of(path) == f"{path}, line 1: missing item column 'item' (found columns: user, 'it\\x1bem', rating)"


# --- properties --------------------------------------------------------------------------------------------------

HOSTILE_TEXT = st.text(alphabet='uiserItmngad,;\t:" \r\n0123456789.-+eEnaNfx\x00\ufeff\u00e9\x1b', max_size=120)
HEADERS = st.sampled_from(
    [b"", b"user,item,rating\n", b"user\titem\trating\ttimestamp\n", b"user;item;rating;rating\n", b'"user","item","rating"\r\n']
)


@st.composite
def hostile_files(draw):
    body = draw(st.one_of(st.binary(max_size=200), HOSTILE_TEXT.map(lambda s: s.encode("utf-8"))))
    raw = draw(HEADERS) + body
    kind = draw(st.sampled_from([None, None, *COMPRESS]))
    if kind is not None:
        raw = COMPRESS[kind](raw)
        if draw(st.booleans()):
            raw = raw[: draw(st.integers(0, len(raw)))]  # perhaps truncated
    return raw, draw(st.sampled_from(["r.csv", "r.gz", "r.parquet", "r.dat"]))


def assert_valid(r: Ratings) -> None:
    f = r.frame
    assert list(f.columns)[:3] == ["user", "item", "rating"]
    assert set(f.columns) <= {"user", "item", "rating", "timestamp"}
    assert len(f) > 0 and isinstance(f.index, pd.RangeIndex)
    assert f["rating"].dtype == np.float32 and np.isfinite(f["rating"].to_numpy()).all()
    for col in ("user", "item"):
        values = f[col].to_numpy()
        assert values.dtype == np.int64 or all(type(v) is str and v.strip() for v in values)
    if "timestamp" in f.columns:
        assert f["timestamp"].dtype == np.int64


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=hostile_files(),
    layout=st.sampled_from([None, None, "ml-100k", "ml-1m"]),
    id_type=st.sampled_from([None, "int", "str"]),
    duplicates=st.sampled_from(["last", "raise", "mean"]),
)
def test_any_bytes_give_valid_ratings_or_a_ratings_error(tmp_path, content, layout, id_type, duplicates):
    raw, name = content
    path = write(tmp_path, name, raw)
    try:
        r = read_ratings(path, layout=layout, id_type=None if layout else id_type, duplicates=duplicates)
    except RatingsError as exc:
        assert str(exc).startswith(str(path))
        return
    assert_valid(r)


ID_STRINGS = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), min_size=1, max_size=8).filter(
    lambda s: s.strip() == s and s.strip() and s.isprintable()
)


@st.composite
def rating_tables(draw):
    kind = draw(st.sampled_from(["int", "str"]))
    ids = st.integers(-(2**63), 2**63 - 1) if kind == "int" else ID_STRINGS
    pairs = draw(st.lists(st.tuples(ids, ids), min_size=1, max_size=15, unique=True))
    ratings = draw(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=len(pairs), max_size=len(pairs)))
    return kind, pairs, ratings


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    table=rating_tables(),
    sep=st.sampled_from([",", "\t", ";"]),
    compress=st.sampled_from([None, "gzip", "zstd"]),
    eol=st.sampled_from(["\n", "\r\n"]),
)
def test_a_valid_ratings_csv_round_trips_exactly(tmp_path, table, sep, compress, eol):
    kind, pairs, ratings = table
    out = io.StringIO()
    writer = csv.writer(out, delimiter=sep, lineterminator=eol)
    writer.writerow(["user", "item", "rating"])
    writer.writerows([u, i, repr(r)] for (u, i), r in zip(pairs, ratings))
    raw = out.getvalue().encode("utf-8")
    path = write(tmp_path, "r.csv", raw if compress is None else COMPRESS[compress](raw))
    r = read_ratings(path, id_type=kind, duplicates="raise")
    assert r.frame["user"].tolist() == [u for u, _ in pairs]
    assert r.frame["item"].tolist() == [i for _, i in pairs]
    assert r.frame["rating"].tolist() == [float(np.float32(v)) for v in ratings]
    assert all(type(v) is (int if kind == "int" else str) for v in r.frame["user"].tolist())


@settings(max_examples=200, deadline=None, derandomize=True)
@given(text=st.text(alphabet='"a,\n\r', max_size=40), chunk_size=st.integers(1, 8))
def test_the_quote_check_does_not_depend_on_where_chunks_end(text, chunk_size):
    from collabemb.text_input import TextFile, quotes_are_plain

    whole = TextFile(Path("r.csv"), text.encode())
    assert quotes_are_plain(whole, ",", chunk_size=chunk_size) == quotes_are_plain(whole, ",")
