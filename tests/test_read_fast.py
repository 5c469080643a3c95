"""read_ratings' pyarrow path for text files gives exactly what the careful pandas path gives.

The fast path (collabemb.data._read_text_fast) reads well-formed files; anything unusual goes
to the careful path, which owns every error message (tests/test_data.py checks those). Here: the
two agree on generated files, and the fast path really is the one taking plain files.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collabemb import data
from collabemb.data import RatingsError, read_ratings


def careful(path: Path, **kwargs):
    with mock.patch.object(data, "_read_text_fast", return_value=None):
        return read_ratings(path, **kwargs)


def outcome(read, path: Path, **kwargs):
    """(frame, n_duplicates) or the error message."""
    try:
        r = read(path, **kwargs)
    except RatingsError as exc:
        return str(exc)
    return r.frame, r.n_duplicates


def assert_same(a, b) -> None:
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    (fa, na), (fb, nb) = a, b
    assert na == nb
    assert list(fa.columns) == list(fb.columns)
    for col in fa.columns:
        assert fa[col].dtype == fb[col].dtype, col
        assert fa[col].tolist() == fb[col].tolist(), col
        assert [type(v) for v in fa[col].tolist()[:5]] == [type(v) for v in fb[col].tolist()[:5]], col


ID_TEXT = st.one_of(
    st.integers(-50, 400).map(str),
    st.sampled_from(
        ["007", "0", "-0", "+5", "9223372036854775807", "-9223372036854775808", "9223372036854775808", "u1", "x y", "NA", "", " 3"]
    ),
    st.text("abc019", min_size=1, max_size=4),
)
RATING_TEXT = st.one_of(
    st.sampled_from(["1", "2", "3", "4", "5", "0.5", "3.5", "4.", ".5", "1e0", " 4", "-0", "nan", "inf", "lots", "", "+4"]),
    st.floats(0, 5, allow_nan=False).map(lambda v: f"{v:.3g}"),
)


@st.composite
def rating_files(draw):
    sep = draw(st.sampled_from([",", "\t", ";"]))
    n = draw(st.integers(1, 12))
    id_pool_u = draw(st.lists(ID_TEXT, min_size=1, max_size=5))
    id_pool_i = draw(st.lists(ID_TEXT, min_size=1, max_size=5))
    with_ts = draw(st.booleans())
    header = ["user", "item", "rating"] + (["timestamp"] if with_ts else [])
    lines = [sep.join(header)]
    for _ in range(n):
        fields = [draw(st.sampled_from(id_pool_u)), draw(st.sampled_from(id_pool_i)), draw(RATING_TEXT)]
        if with_ts:
            fields.append(draw(st.sampled_from(["100", "1500000000", "1.5e9", "7.9", "x", "-3"])))
        lines.append(sep.join(fields))
    if draw(st.booleans()):
        lines.insert(draw(st.integers(1, len(lines))), "")  # a blank line
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    return eol.join(lines) + eol


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=rating_files(), duplicates=st.sampled_from(["last", "mean", "raise"]), id_type=st.sampled_from([None, "int", "str"]))
def test_fast_and_careful_readers_agree_on_generated_files(tmp_path, text, duplicates, id_type):
    path = tmp_path / "r.csv"
    path.write_bytes(text.encode())
    assert_same(
        outcome(read_ratings, path, duplicates=duplicates, id_type=id_type), outcome(careful, path, duplicates=duplicates, id_type=id_type)
    )


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


@pytest.mark.parametrize(
    ("name", "text", "kwargs"),
    [
        ("r.csv", "user,item,rating,timestamp\n1,10,4,100\n2,20,2.5,200\n", {}),
        ("r.csv", '"user","item","rating"\n"1","2","3"\n', {}),
        ("r.tsv", "who\twhat\tstars\nu1\ti1\t4\nu2\ti1\t1\n", {"user_col": "who", "item_col": "what", "rating_col": "stars"}),
        ("u.data", "1\t10\t4\t881250949\n2\t20\t3\t881250950\n", {"layout": "ml-100k"}),
        ("ratings.dat", "1::10::4::978300760\n2::20::3::978300761\n", {"layout": "ml-1m"}),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.5,100\n", {"layout": "ml-latest"}),
    ],
)
def test_plain_files_take_the_fast_path_and_match_the_careful_one(tmp_path, name, text, kwargs):
    path = write(tmp_path, name, text)
    with mock.patch.object(data, "_read_text", side_effect=AssertionError("careful path used")):
        fast = read_ratings(path, **kwargs)
    assert_same((fast.frame, fast.n_duplicates), outcome(careful, path, **kwargs))


@pytest.mark.parametrize(
    "text",
    [
        "\ufeffuser,item,rating\n1,2,3\n",  # a byte-order mark
        "user,item,rating\n,2,3\n",  # a missing ID
        "user,item,rating\n1,2,nan\n",  # a non-finite rating
        "user,item,rating\n1,2,3,4\n",  # an extra field
        "user,item,rating\n",  # no rows
        "user,user,rating\n1,2,3\n",  # a repeated column name
    ],
)
def test_odd_files_are_left_to_the_careful_path(tmp_path, text):
    path = write(tmp_path, "r.csv", text)
    assert data._read_text_fast(path, None, None, "user", "item", "rating", None, None) is None


def test_duplicate_precheck_is_sure_only_without_duplicates():
    frame = pd.DataFrame({"user": np.array([1, 1, 2], np.int64), "item": np.array([5, 6, 5], np.int64)})
    assert data._surely_no_duplicates(frame)
    assert not data._surely_no_duplicates(frame.assign(item=np.array([5, 5, 6], np.int64)))
    assert not data._surely_no_duplicates(frame.assign(user=["a", "a", "b"]))  # strings: the full check decides
