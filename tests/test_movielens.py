"""collabemb.movielens: reading each MovieLens layout, zips, folds, and the offline download path.

Every data set here is a tiny fake written by the test; downloads come from a loopback HTTP server.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from collabemb.movielens import ChecksumError, DownloadError, load_movielens, load_movielens_fold

ML100K_OFFICIAL_MD5 = "0e33842e24a9c977be4e0107933c0723"

# (user, item, rating, timestamp); u1 / ua split these 4 + 2.
ML100K_RATINGS = [
    (1, 1, 5, 881250949),
    (1, 3, 3, 881250950),
    (2, 2, 4, 891717742),
    (2, 5, 1, 891717743),
    (3, 1, 2, 878887116),
    (3, 4, 4, 878887117),
]


def _tsv(rows: list[tuple[int, int, int, int]]) -> str:
    return "".join("\t".join(map(str, row)) + "\n" for row in rows)


def write_ml100k(directory: Path) -> Path:
    """A five-movie ml-100k with only four genres, a Latin-1 title and the u1 / ua splits."""
    directory.mkdir(parents=True)
    (directory / "u.data").write_text(_tsv(ML100K_RATINGS))
    (directory / "u1.base").write_text(_tsv(ML100K_RATINGS[:4]))
    (directory / "u1.test").write_text(_tsv(ML100K_RATINGS[4:]))
    (directory / "ua.base").write_text(_tsv(ML100K_RATINGS[1:5]))
    (directory / "ua.test").write_text(_tsv([ML100K_RATINGS[0], ML100K_RATINGS[5]]))
    (directory / "u.genre").write_text("unknown|0\nAction|1\nComedy|2\nDrama|3\n\n")
    u_item = (
        "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|0|0|1|0\n"
        "2|Misérables, Les (1995)|01-Jan-1995||http://us.imdb.com/M/x|0|0|0|1\n"
        "3|GoldenEye (1995)|01-Jan-1995||http://us.imdb.com/M/y|0|1|1|0\n"
        "4|unknown||||1|0|0|0\n"
        "5|Two Friends (1986) |01-Jan-1986||http://us.imdb.com/M/z|0|0|0|0\n"
    )
    (directory / "u.item").write_bytes(u_item.encode("latin-1"))
    (directory / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|T8H1N\n")
    return directory


def write_ml1m(directory: Path, *, with_users: bool = True) -> Path:
    """An ml-1m ('::' files, Latin-1 movies, users with occupation codes); without users it is ml-10m."""
    directory.mkdir(parents=True)
    (directory / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    movies = "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n1193::Crónica (1975)::Drama\n"
    (directory / "movies.dat").write_bytes(movies.encode("latin-1"))
    if with_users:
        (directory / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    return directory


def write_ml_latest(directory: Path) -> Path:
    """An ml-latest: csv with header, half-star ratings, quoted titles holding commas and quotes."""
    directory.mkdir(parents=True)
    (directory / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,11,3.5,964981247\n7,200,0.5,1106635946\n")
    (directory / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '11,"American President, The (1995)",Comedy|Drama|Romance\n'
        '143,"""Great Performances"" Cats (1998)",Musical\n'
        "150,Babylon 5,(no genres listed)\n"
        "200,(500) Days of Summer (2009),Comedy|Drama|Romance\n"
        '210,"Amélie (Fabuleux destin d\'Amélie Poulain, Le) (2001)",Comedy|Romance\n',
        encoding="utf-8",
    )
    return directory


def zip_directory(source: Path, archive: Path, folder: str) -> str:
    """Zip ``source``'s files under ``folder/`` (as GroupLens's archives do); return the zip's MD5."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(source.iterdir()):
            zf.write(path, f"{folder}/{path.name}")
    return hashlib.md5(archive.read_bytes()).hexdigest()


# --- reading extracted directories ----------------------------------------------------------


def test_ml100k_directory_gives_ratings_items_with_genres_from_u_genre_and_users(tmp_path):
    ml = load_movielens(write_ml100k(tmp_path / "ml-100k"))

    assert ml.name == "ml-100k"
    assert ml.path == (tmp_path / "ml-100k").resolve()
    frame = ml.ratings.frame
    assert list(frame.columns) == ["user", "item", "rating", "timestamp"]
    assert frame["rating"].dtype == np.float32 and frame["timestamp"].dtype == np.int64
    assert list(frame.itertuples(index=False, name=None)) == ML100K_RATINGS

    items = ml.items
    assert list(items.columns) == ["item", "title", "genres", "year"]
    assert items["item"].dtype == np.int64 and items["year"].dtype == "Int64"
    assert items["item"].tolist() == [1, 2, 3, 4, 5]
    assert items["title"].tolist() == ["Toy Story (1995)", "Misérables, Les (1995)", "GoldenEye (1995)", "unknown", "Two Friends (1986)"]
    assert items["genres"].tolist() == ["Comedy", "Drama", "Action|Comedy", "unknown", ""]
    assert items["year"].tolist() == [1995, 1995, 1995, pd.NA, 1986]

    users = ml.users
    assert users is not None
    assert users["user"].tolist() == [1, 2, 3] and users["age"].tolist() == [24, 53, 23]
    assert users["age"].dtype == np.int64
    assert users["gender"].tolist() == ["M", "F", "M"]
    assert users["occupation"].tolist() == ["technician", "other", "writer"]
    assert users["zip"].tolist() == ["85711", "94043", "T8H1N"]


def test_ml1m_directory_reads_double_colon_files_and_names_occupation_codes(tmp_path):
    ml = load_movielens(write_ml1m(tmp_path / "ml-1m"))

    assert ml.name == "ml-1m"
    assert ml.ratings.frame[["user", "item", "rating"]].values.tolist() == [[1, 1193, 5], [1, 661, 3], [2, 1193, 4]]
    assert ml.ratings.frame["timestamp"].tolist() == [978300760, 978302109, 978298413]
    assert ml.items["item"].tolist() == [661, 1193]
    assert ml.items["title"].tolist() == ["James and the Giant Peach (1996)", "Crónica (1975)"]
    assert ml.items["genres"].tolist() == ["Animation|Children's|Musical", "Drama"]
    assert ml.items["year"].tolist() == [1996, 1975]
    assert ml.users is not None
    assert ml.users.to_dict("list") == {
        "user": [1, 2],
        "age": [1, 56],
        "gender": ["F", "M"],
        "occupation": ["K-12 student", "self-employed"],
        "zip": ["48067", "70072"],
    }


def test_ml10m_directory_has_no_users(tmp_path):
    ml = load_movielens(write_ml1m(tmp_path / "ml-10M100K", with_users=False))

    assert ml.name == "ml-10M100K"
    assert ml.users is None
    assert len(ml.ratings) == 3 and ml.items["item"].tolist() == [661, 1193]


def test_ml_latest_directory_keeps_quoted_commas_and_blanks_no_genres_listed(tmp_path):
    ml = load_movielens(write_ml_latest(tmp_path / "ml-latest-small"))

    assert ml.name == "ml-latest-small"
    assert ml.users is None
    assert ml.ratings.frame["rating"].tolist() == [4.0, 3.5, 0.5]
    assert ml.ratings.frame["user"].tolist() == [1, 1, 7]
    assert ml.items["item"].tolist() == [1, 11, 143, 150, 200, 210]
    assert ml.items["title"].tolist() == [
        "Toy Story (1995)",
        "American President, The (1995)",
        '"Great Performances" Cats (1998)',
        "Babylon 5",
        "(500) Days of Summer (2009)",
        "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)",
    ]
    assert ml.items["genres"].tolist() == [
        "Adventure|Animation|Children|Comedy|Fantasy",
        "Comedy|Drama|Romance",
        "Musical",
        "",
        "Comedy|Drama|Romance",
        "Comedy|Romance",
    ]
    assert ml.items["year"].tolist() == [1995, 1995, 1998, pd.NA, 2009, 2001]


@pytest.mark.parametrize(
    ("title", "year"),
    [
        ("Land Before Time III: The Time of the Great Giving (1995) (V)", 1995),
        ("2001: A Space Odyssey (1968)", 1968),
        ("Fawlty Towers (1975-1979)", 1975),
        ("Death Note: Desu nôto (2006\u20132007)", 2006),
        ("Stranger Things (2016\u2013 )", 2016),
        ("Hyena Road", None),
        ("Nine Queens (Nueve reinas) (2000) ", 2000),
    ],
)
def test_year_is_the_last_parenthesised_year_in_the_title(tmp_path, title, year):
    directory = tmp_path / "set"
    directory.mkdir()
    (directory / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,1\n")
    (directory / "movies.csv").write_text(f'movieId,title,genres\n1,"{title}",Drama\n', encoding="utf-8")

    got = load_movielens(directory).items["year"].iloc[0]

    assert (got is pd.NA) if year is None else (got == year)


# --- paths that are not a set -------------------------------------------------------------


def test_directory_without_ratings_names_the_path_and_the_files_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()

    with pytest.raises(FileNotFoundError) as info:
        load_movielens(tmp_path / "empty")

    message = str(info.value)
    assert str(tmp_path / "empty") in message
    for filename in ("u.data", "ratings.dat", "ratings.csv"):
        assert filename in message


def test_unknown_name_that_is_no_path_lists_the_known_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    with pytest.raises(FileNotFoundError, match="neither a MovieLens name .*ml-100k.*ml-25m.* nor an existing path"):
        load_movielens("ml-100kk", cache_dir=tmp_path / "cache")


def test_missing_movies_file_is_named(tmp_path):
    directory = write_ml1m(tmp_path / "ml-1m")
    (directory / "movies.dat").unlink()

    with pytest.raises(FileNotFoundError, match=r"movies\.dat: no such file"):
        load_movielens(directory)


def test_malformed_movies_line_names_file_line_and_column(tmp_path):
    directory = write_ml100k(tmp_path / "ml-100k")
    with open(directory / "u.item", "ab") as fh:
        fh.write(b"6|Broken (1990)|||url|0|2|0|0\n")

    with pytest.raises(ValueError, match=r"u\.item, line 6, column 'Action': expected a 0/1 genre flag, found '2'"):
        load_movielens(directory)


def test_name_not_in_cache_with_download_false_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ml-1m is not in the cache .* download=False"):
        load_movielens("ml-1m", cache_dir=tmp_path, download=False)


def test_name_already_in_cache_is_loaded_without_download(tmp_path):
    write_ml100k(tmp_path / "cache" / "ml-100k")

    ml = load_movielens("ml-100k", cache_dir=tmp_path / "cache", download=False)

    assert ml.name == "ml-100k" and len(ml.ratings) == len(ML100K_RATINGS)


def test_cache_dir_defaults_to_collabemb_cache_environment_variable(tmp_path, monkeypatch):
    write_ml100k(tmp_path / "env-cache" / "ml-100k")
    monkeypatch.setenv("COLLABEMB_CACHE", str(tmp_path / "env-cache"))

    ml = load_movielens("ml-100k", download=False)

    assert ml.path == (tmp_path / "env-cache" / "ml-100k").resolve()


# --- a downloaded .zip given by path ----------------------------------------------------------


def test_zip_path_is_extracted_once_into_the_cache_and_named_after_its_folder(tmp_path):
    archive = tmp_path / "downloads" / "movielens.zip"
    archive.parent.mkdir()
    digest = zip_directory(write_ml_latest(tmp_path / "src"), archive, "ml-latest-small")
    cache = tmp_path / "cache"

    ml = load_movielens(archive, cache_dir=cache)

    assert ml.name == "ml-latest-small"
    assert ml.path == (cache / "unzipped" / digest / "ml-latest-small").resolve()
    assert ml.items["title"].iloc[1] == "American President, The (1995)"
    (ml.path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n9,9,1.0,1\n")
    again = load_movielens(archive, cache_dir=cache)
    assert again.ratings.frame["user"].tolist() == [9]  # the extracted copy was reused, not re-extracted
    assert sorted(p.name for p in (cache / "unzipped").iterdir()) == [digest]


def test_zip_path_with_wrong_md5_raises_with_both_digests(tmp_path):
    archive = tmp_path / "ml-100k.zip"
    digest = zip_directory(write_ml100k(tmp_path / "src"), archive, "ml-100k")

    with pytest.raises(ChecksumError) as info:
        load_movielens(archive, cache_dir=tmp_path / "cache", md5="0" * 32)

    assert "0" * 32 in str(info.value) and digest in str(info.value)
    assert not (tmp_path / "cache" / "unzipped").exists()


def test_file_that_is_not_a_zip_is_refused_with_a_hint(tmp_path):
    directory = write_ml100k(tmp_path / "ml-100k")

    with pytest.raises(ValueError, match=r"u\.data: not a zip archive.*read_ratings"):
        load_movielens(directory / "u.data", cache_dir=tmp_path / "cache")


# --- ml-100k folds ---------------------------------------------------------------------------


def test_fold_returns_base_and_test_of_the_predefined_split(tmp_path):
    directory = write_ml100k(tmp_path / "ml-100k")

    base, test = load_movielens_fold(directory, 1)
    base_a, test_a = load_movielens_fold(directory, "a")

    assert list(base.frame.itertuples(index=False, name=None)) == ML100K_RATINGS[:4]
    assert list(test.frame.itertuples(index=False, name=None)) == ML100K_RATINGS[4:]
    assert list(base_a.frame.itertuples(index=False, name=None)) == ML100K_RATINGS[1:5]
    assert list(test_a.frame.itertuples(index=False, name=None)) == [ML100K_RATINGS[0], ML100K_RATINGS[5]]
    assert test.source == str(directory / "u1.test")


@pytest.mark.parametrize("fold", [0, 6, "c", True, 1.0])
def test_fold_outside_1_to_5_a_b_is_refused(tmp_path, fold):
    with pytest.raises(ValueError, match="fold must be one of 1, 2, 3, 4, 5, 'a', 'b'"):
        load_movielens_fold(write_ml100k(tmp_path / "ml-100k"), fold)


def test_fold_whose_files_are_missing_names_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"u2\.base: no such file"):
        load_movielens_fold(write_ml100k(tmp_path / "ml-100k"), 2)


def test_fold_of_a_set_without_folds_is_refused(tmp_path):
    with pytest.raises(ValueError, match="predefined folds exist only in ml-100k"):
        load_movielens_fold(write_ml1m(tmp_path / "ml-1m"), 1)


# --- downloading, from a loopback server ---------------------------------------------------------


@dataclass
class Served:
    """Files under ``root`` served at ``url``; ``requests`` records each GET path."""

    root: Path
    url: str
    requests: list[str] = field(default_factory=list)
    truncate: bool = False  # send half of each file under a full Content-Length


@pytest.fixture
def served(tmp_path, monkeypatch) -> Iterator[Served]:
    monkeypatch.setenv("no_proxy", "*")  # a proxy set in the environment must not see loopback requests
    monkeypatch.setenv("NO_PROXY", "*")
    root = tmp_path / "www"
    root.mkdir()
    state = Served(root=root, url="")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            state.requests.append(self.path)
            path = root / self.path.lstrip("/")
            if state.truncate and path.is_file():
                body = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
                return
            super().do_GET()

        def log_message(self, format, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}/"
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def test_download_verifies_md5_extracts_into_cache_and_second_call_uses_the_cache(tmp_path, served):
    digest = zip_directory(write_ml100k(tmp_path / "src"), served.root / "ml-100k.zip", "ml-100k")
    cache = tmp_path / "cache"

    ml = load_movielens("ml-100k", cache_dir=cache, base_url=served.url, md5=digest)

    assert served.requests == ["/ml-100k.zip"]
    assert ml.name == "ml-100k" and ml.path == (cache / "ml-100k").resolve()
    assert list(ml.ratings.frame.itertuples(index=False, name=None)) == ML100K_RATINGS
    assert ml.items["genres"].tolist() == ["Comedy", "Drama", "Action|Comedy", "unknown", ""]
    assert [p.name for p in cache.iterdir()] == ["ml-100k"]  # no temporary file or folder left over

    again = load_movielens("ml-100k", cache_dir=cache, base_url=served.url, md5=digest)

    assert served.requests == ["/ml-100k.zip"]
    assert list(again.ratings.frame.itertuples(index=False, name=None)) == ML100K_RATINGS


def test_download_checks_the_built_in_md5_when_none_is_given(tmp_path, served):
    digest = zip_directory(write_ml100k(tmp_path / "src"), served.root / "ml-100k.zip", "ml-100k")

    with pytest.raises(ChecksumError) as info:
        load_movielens("ml-100k", cache_dir=tmp_path / "cache", base_url=served.url)

    assert f"expected {ML100K_OFFICIAL_MD5}, got {digest}" in str(info.value)


def test_download_with_wrong_md5_names_file_and_digests_and_leaves_nothing(tmp_path, served):
    digest = zip_directory(write_ml100k(tmp_path / "src"), served.root / "ml-100k.zip", "ml-100k")
    cache = tmp_path / "cache"

    with pytest.raises(ChecksumError) as info:
        load_movielens("ml-100k", cache_dir=cache, base_url=served.url, md5="f" * 32)

    message = str(info.value)
    assert "ml-100k.zip" in message and f"expected {'f' * 32}, got {digest}" in message
    assert list(cache.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        load_movielens("ml-100k", cache_dir=cache, download=False)


def test_truncated_download_raises_and_leaves_nothing(tmp_path, served):
    digest = zip_directory(write_ml100k(tmp_path / "src"), served.root / "ml-100k.zip", "ml-100k")
    served.truncate = True
    cache = tmp_path / "cache"

    closed_early = r"could not download .*ml-100k\.zip \(the connection closed after \d+ of \d+ bytes\)"
    with pytest.raises(DownloadError, match=closed_early):
        load_movielens("ml-100k", cache_dir=cache, base_url=served.url, md5=digest)

    assert list(cache.iterdir()) == []


def test_ml10m_archive_folder_is_stored_under_the_set_name(tmp_path, served):
    digest = zip_directory(write_ml1m(tmp_path / "src", with_users=False), served.root / "ml-10m.zip", "ml-10M100K")
    cache = tmp_path / "cache"

    ml = load_movielens("ml-10m", cache_dir=cache, base_url=served.url, md5=digest)

    assert ml.name == "ml-10m" and ml.path == (cache / "ml-10m").resolve()
    assert (cache / "ml-10m" / "ratings.dat").is_file() and ml.users is None


@pytest.mark.parametrize(
    "md5_file", ["MD5 (ml-latest-small.zip) = {digest}\n", "{digest}  ml-latest-small.zip\n"], ids=["bsd-style", "md5sum-style"]
)
def test_ml_latest_small_download_checks_the_published_md5_file(tmp_path, served, md5_file):
    digest = zip_directory(write_ml_latest(tmp_path / "src"), served.root / "ml-latest-small.zip", "ml-latest-small")
    (served.root / "ml-latest-small.zip.md5").write_text(md5_file.format(digest=digest))

    ml = load_movielens("ml-latest-small", cache_dir=tmp_path / "cache", base_url=served.url)

    assert served.requests == ["/ml-latest-small.zip.md5", "/ml-latest-small.zip"]
    assert ml.items["title"].iloc[1] == "American President, The (1995)"


def test_ml_latest_small_download_not_matching_its_md5_file_is_refused(tmp_path, served):
    digest = zip_directory(write_ml_latest(tmp_path / "src"), served.root / "ml-latest-small.zip", "ml-latest-small")
    (served.root / "ml-latest-small.zip.md5").write_text(f"{'a' * 32}  ml-latest-small.zip\n")
    cache = tmp_path / "cache"

    with pytest.raises(ChecksumError, match=f"expected {'a' * 32}, got {digest}"):
        load_movielens("ml-latest-small", cache_dir=cache, base_url=served.url)

    assert list(cache.iterdir()) == []


def test_missing_file_on_server_reports_http_status(tmp_path, served):
    with pytest.raises(DownloadError, match=r"ml-1m\.zip \(HTTP 404"):
        load_movielens("ml-1m", cache_dir=tmp_path / "cache", base_url=served.url)


def test_base_url_defaults_to_collabemb_movielens_url_environment_variable(tmp_path, served, monkeypatch):
    digest = zip_directory(write_ml100k(tmp_path / "src"), served.root / "ml-100k.zip", "ml-100k")
    monkeypatch.setenv("COLLABEMB_MOVIELENS_URL", served.url.rstrip("/"))

    ml = load_movielens("ml-100k", cache_dir=tmp_path / "cache", md5=digest)

    assert served.requests == ["/ml-100k.zip"] and len(ml.ratings) == len(ML100K_RATINGS)


def test_unreachable_server_gives_one_clear_error_suggesting_a_local_path(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    with socket.socket() as bound_not_listening:  # connections to it are refused
        bound_not_listening.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound_not_listening.getsockname()[1]}/"
        cache = tmp_path / "cache"

        with pytest.raises(DownloadError) as info:
            load_movielens("ml-100k", cache_dir=cache, base_url=url)

    message = str(info.value)
    assert message.startswith(f"could not download {url}ml-100k.zip (")
    assert "pass its path" in message and "load_movielens()" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert list(cache.iterdir()) == []
