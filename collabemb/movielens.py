"""MovieLens data sets: find, download, verify and read them.

:func:`load_movielens` takes a known name (``"ml-100k"``, ``"ml-1m"``, ``"ml-10m"``, ``"ml-20m"``,
``"ml-25m"``, ``"ml-latest-small"``, ``"ml-latest"``), a directory holding an extracted set, or a
downloaded ``.zip``, and returns a :class:`MovieLens` with the ratings (read by
:func:`collabemb.data.read_ratings`), the movies and, where the set has them, the users.

The file layout is recognised by the ratings file a directory holds:

=================  ============================  ==========================  ===========
ratings file       sets                          movies                      users
=================  ============================  ==========================  ===========
``u.data``         ml-100k                       ``u.item`` + ``u.genre``    ``u.user``
``ratings.dat``    ml-1m, ml-10m (``::``)        ``movies.dat``              ``users.dat`` (ml-1m)
``ratings.csv``    ml-20m, ml-25m, ml-latest*    ``movies.csv``              none
=================  ============================  ==========================  ===========

Downloads go to ``<cache>/<name>/``, where the cache is ``cache_dir``, else ``$COLLABEMB_CACHE``,
else ``~/.cache/collabemb``. An archive is streamed into a hidden temporary file, its MD5 is
checked, and it is extracted into a hidden temporary directory that is renamed into place only
when complete; so an interrupted or corrupt download never leaves a directory that looks usable.
Remove ``<cache>/<name>/`` to fetch a set again (ml-latest* change over time).
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from collabemb.atomic import atomic_dir
from collabemb.data import Ratings, read_ratings

__all__ = ["ChecksumError", "DownloadError", "MovieLens", "load_movielens", "load_movielens_fold"]

_DEFAULT_BASE_URL = "https://files.grouplens.org/datasets/movielens/"

# GroupLens's published MD5 of each fixed archive. ml-latest and ml-latest-small are rebuilt from
# time to time, so their digest is read from the ``<name>.zip.md5`` file published beside them.
_MD5: dict[str, str | None] = {
    "ml-100k": "0e33842e24a9c977be4e0107933c0723",
    "ml-1m": "c4d9eecfca2ab87c1945afe126590906",
    "ml-10m": "ce571fd55effeba0271552578f2648bd",
    "ml-20m": "cd245b17a1ae2cc31bb14903e1204af3",
    "ml-25m": "6b51fb2759a8657d3bfcbfc42b592ada",
    "ml-latest-small": None,
    "ml-latest": None,
}

# Ratings file -> the read_ratings layout it is written in. Checked in this order.
_RATINGS_FILES: dict[str, str] = {"u.data": "ml-100k", "ratings.dat": "ml-1m", "ratings.csv": "ml-latest"}

# ml-1m users.dat gives occupations as codes; these are the names listed in the ml-1m README.
_ML1M_OCCUPATIONS: tuple[str, ...] = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)

_ML100K_FOLDS = ("1", "2", "3", "4", "5", "a", "b")

# The release year is the last "(YYYY)" in a title; ml-latest series are written "(YYYY-YYYY)".
_YEAR = re.compile(r".*\((\d{4})(?:\s*[-\u2013]\s*(?:\d{4})?\s*)?\)")

_CHUNK = 1 << 20


class DownloadError(OSError):
    """A MovieLens archive or its checksum file could not be fetched."""


class ChecksumError(ValueError):
    """An archive's MD5 digest is not the published one."""


@dataclass(frozen=True, eq=False)
class MovieLens:
    """One MovieLens data set, read into memory.

    Attributes:
        name: the set's name (``"ml-100k"``, ...) when loaded by name, otherwise the name of the
            directory holding the files (for a ``.zip``, the directory stored in the archive).
        path: the directory holding the extracted files (absolute).
        ratings: ``ratings.frame`` has ``user``, ``item`` (int64), ``rating`` (float32) and
            ``timestamp`` (int64, unix seconds), as read by :func:`collabemb.data.read_ratings`.
        items: one row per movie, in file order: ``item`` (int64), ``title`` (str, surrounding
            blanks removed), ``genres`` (str, ``"Action|Comedy"``; ``""`` when none is listed) and
            ``year`` (Int64, the last ``(YYYY)`` in the title, ``<NA>`` when there is none).
            ml-100k genre names are those in ``u.genre``, including its own genre ``"unknown"``.
        users: ``user`` (int64), ``age`` (int64), ``gender`` (str, ``"M"``/``"F"``),
            ``occupation`` (str) and ``zip`` (str), or None where the set has no user file
            (ml-10m and the csv sets). ml-1m ages are the README's bucket codes (1 = under 18,
            18 = 18-24, ..., 56 = 56+) and its occupation codes are turned into the README's
            names, so both sets spell occupations as words.
    """

    name: str
    path: Path
    ratings: Ratings
    items: pd.DataFrame
    users: pd.DataFrame | None


def load_movielens(
    name_or_path: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    base_url: str | None = None,
    md5: str | None = None,
) -> MovieLens:
    """Load a MovieLens set by name, from an extracted directory, or from a downloaded ``.zip``.

    Args:
        name_or_path: a known name (a ``str`` equal to one of ``"ml-100k"``, ``"ml-1m"``,
            ``"ml-10m"``, ``"ml-20m"``, ``"ml-25m"``, ``"ml-latest-small"``, ``"ml-latest"``), or a
            path. A known name is always a name, never a relative path: to load a directory
            ``./ml-100k`` pass ``Path("ml-100k")`` or ``"./ml-100k"``. A ``.zip`` is extracted
            once into ``<cache>/unzipped/<md5 of the zip>/``.
        cache_dir: where downloads and extracted archives live; default ``$COLLABEMB_CACHE``,
            else ``~/.cache/collabemb``.
        download: fetch a named set that is not in the cache yet. With False, a missing set is
            a FileNotFoundError.
        base_url: where ``<name>.zip`` is fetched from; default ``$COLLABEMB_MOVIELENS_URL``,
            else GroupLens (``https://files.grouplens.org/datasets/movielens/``).
        md5: the expected MD5 hex digest of the archive, instead of the built-in one (for a
            name) or of none (a ``.zip`` path is not checked unless this is given). It is checked
            when an archive is downloaded or unpacked, not when a set is already in the cache.

    Raises:
        FileNotFoundError: the path does not exist, holds no MovieLens ratings file (the message
            names the files looked for), or lacks the set's movies file.
        DownloadError: the archive or its ``.md5`` file could not be fetched.
        ChecksumError: the archive's digest differs from the expected one; a downloaded archive
            is deleted first.
        ValueError: a movies or users file is malformed (the message names file, line, column).
        collabemb.data.RatingsError: the ratings file is malformed.
    """
    directory, name, ratings_file = _locate(name_or_path, cache_dir=cache_dir, download=download, base_url=base_url, md5=md5)
    layout = _RATINGS_FILES[ratings_file]
    return MovieLens(
        name=name,
        path=directory,
        ratings=read_ratings(directory / ratings_file, layout=layout),
        items=_read_items(directory, layout),
        users=_read_users(directory, layout),
    )


def load_movielens_fold(
    name_or_path: str | os.PathLike[str],
    fold: int | str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    base_url: str | None = None,
    md5: str | None = None,
) -> tuple[Ratings, Ratings]:
    """The ``(base, test)`` ratings of one of ml-100k's predefined splits.

    ``fold`` 1..5 reads ``u1.base``/``u1.test`` .. ``u5.*`` (five disjoint 80/20 splits whose test
    sets partition ``u.data``); ``"a"``/``"b"`` read ``ua.*``/``ub.*`` (exactly 10 ratings per
    user in test). ``name_or_path`` and the keywords mean what they mean in
    :func:`load_movielens`. Only ratings are read; frames are as in ``MovieLens.ratings``.

    Raises:
        ValueError: ``fold`` is not one of 1..5, "a", "b", or the set is not laid out like ml-100k.
        FileNotFoundError: the split's files are missing.
    """
    if isinstance(fold, bool) or not isinstance(fold, (int, str)) or str(fold).lower() not in _ML100K_FOLDS:
        raise ValueError(f"fold must be one of 1, 2, 3, 4, 5, 'a', 'b'; got {fold!r}")
    key = str(fold).lower()
    directory, _, ratings_file = _locate(name_or_path, cache_dir=cache_dir, download=download, base_url=base_url, md5=md5)
    if ratings_file != "u.data":
        raise ValueError(
            f"{directory}: predefined folds exist only in ml-100k (u.data with u1.base .. ub.test); this directory holds {ratings_file}"
        )
    base, test = directory / f"u{key}.base", directory / f"u{key}.test"
    for path in (base, test):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (fold {fold!r} of {directory})")
    return read_ratings(base, layout="ml-100k"), read_ratings(test, layout="ml-100k")


# --- finding the files ------------------------------------------------------------------


def _locate(
    name_or_path: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None, download: bool, base_url: str | None, md5: str | None
) -> tuple[Path, str, str]:
    """The absolute directory holding a set's files, the set's name, and its ratings file's name."""
    cache = _cache_dir(cache_dir)
    if isinstance(name_or_path, str) and name_or_path in _MD5:
        name = name_or_path
        target = cache / name
        if _ratings_file(target) is None:
            if not download:
                raise FileNotFoundError(f"{name} is not in the cache ({target}) and download=False")
            _download_set(name, target, base_url=_base_url(base_url), md5=md5)
        directory = target.resolve()
    elif (path := Path(name_or_path).expanduser()).is_file():
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"{path}: not a zip archive; pass a MovieLens directory or .zip "
                "(to read a single ratings file, use collabemb.data.read_ratings)"
            )
        directory = _unpack_user_zip(path, cache, md5)
        name = directory.name
    elif path.is_dir():
        directory = path.resolve()
        name = directory.name
    else:
        raise FileNotFoundError(f"{str(name_or_path)!r} is neither a MovieLens name ({', '.join(_MD5)}) nor an existing path")
    ratings_file = _ratings_file(directory)
    if ratings_file is None:
        raise FileNotFoundError(_no_ratings_message(directory))
    return directory, name, ratings_file


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("COLLABEMB_CACHE") or "~/.cache/collabemb").expanduser()


def _base_url(base_url: str | None) -> str:
    url = base_url or os.environ.get("COLLABEMB_MOVIELENS_URL") or _DEFAULT_BASE_URL
    return url if url.endswith("/") else url + "/"


def _ratings_file(directory: Path) -> str | None:
    """The name of the first known ratings file in ``directory``, or None."""
    for filename in _RATINGS_FILES:
        if (directory / filename).is_file():
            return filename
    return None


def _no_ratings_message(path: Path) -> str:
    return f"{path}: no MovieLens ratings file found (looked for {', '.join(_RATINGS_FILES)})"


# --- downloading and unpacking ------------------------------------------------------------


def _download_set(name: str, target: Path, *, base_url: str, md5: str | None) -> None:
    """Fetch ``<base_url><name>.zip``, verify its MD5 and extract it to ``target`` atomically."""
    url = f"{base_url}{name}.zip"
    expected = md5 or _MD5[name] or _published_md5(url + ".md5", name)
    target.parent.mkdir(parents=True, exist_ok=True)
    archive, actual = _fetch(url, target.parent, name)
    try:
        if actual != expected.lower():
            raise ChecksumError(f"{name}.zip from {url}: MD5 mismatch, expected {expected.lower()}, got {actual}; the download was deleted")
        _extract_into(archive, target, what=url, flatten=True)
    finally:
        archive.unlink(missing_ok=True)


def _unpack_user_zip(archive: Path, cache: Path, md5: str | None) -> Path:
    """Extract a user's ``.zip`` once into ``<cache>/unzipped/<digest>/``; return its data directory."""
    actual = _md5_of(archive)
    if md5 is not None and actual != md5.lower():
        raise ChecksumError(f"{archive}: MD5 mismatch, expected {md5.lower()}, got {actual}")
    root = cache / "unzipped" / actual
    if not root.is_dir():
        _extract_into(archive, root, what=str(archive), flatten=False)
    data_dir = _find_data_dir(root)
    if data_dir is None:  # the cached copy was emptied after it was extracted
        raise FileNotFoundError(_no_ratings_message(root))
    return data_dir.resolve()


def _published_md5(url: str, name: str) -> str:
    """The MD5 hex digest in a published ``.md5`` file (either ``md5sum`` or BSD style)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read(4096).decode("ascii", errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        raise _download_error(url, name, exc) from None
    found = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if found is None:
        raise DownloadError(f"{url}: no MD5 digest found in the checksum file (it starts {text[:80]!r})")
    return found.group(0).lower()


def _fetch(url: str, directory: Path, name: str) -> tuple[Path, str]:
    """Stream ``url`` into a hidden temporary file in ``directory``; return (file, MD5 hex digest)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}-", suffix=".zip.part")
    path = Path(tmp)
    digest = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"{name}.zip", disable=None) as bar:
                received = 0
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:
                raise ConnectionError(f"the connection closed after {received} of {total} bytes")
    except BaseException as exc:
        path.unlink(missing_ok=True)
        if isinstance(exc, (OSError, http.client.HTTPException)):
            raise _download_error(url, name, exc) from None
        raise
    return path, digest.hexdigest()


def _download_error(url: str, name: str, exc: BaseException) -> DownloadError:
    if isinstance(exc, urllib.error.HTTPError):
        reason = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        reason = str(exc.reason)
    else:
        reason = str(exc) or type(exc).__name__
    return DownloadError(
        f"could not download {url} ({reason}). Without network access, fetch {name}.zip elsewhere "
        "and pass its path, or the directory it extracts to, to load_movielens()"
    )


def _md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _extract_into(archive: Path, target: Path, *, what: str, flatten: bool) -> None:
    """Extract ``archive`` to ``target``, atomically (:func:`collabemb.atomic.atomic_dir`).

    ``flatten``: the folder holding the ratings file (the archive's top level or a top-level
    folder) becomes ``target`` itself; otherwise the archive is extracted as it is. Raises
    ValueError for an archive that is not a zip and FileNotFoundError for one without a
    MovieLens ratings file.
    """
    with atomic_dir(target) as tmp:
        unpacked = tmp / ".archive" if flatten else tmp
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(unpacked)  # zipfile drops absolute paths and '..' components
        except zipfile.BadZipFile as exc:
            raise ValueError(f"{what}: not a valid zip archive ({exc})") from None
        data_dir = _find_data_dir(unpacked)
        if data_dir is None:
            raise FileNotFoundError(
                f"{what}: the archive holds no MovieLens ratings file at its top level or in a "
                f"top-level folder (looked for {', '.join(_RATINGS_FILES)})"
            )
        if flatten:
            for child in data_dir.iterdir():
                os.replace(child, tmp / child.name)
            shutil.rmtree(unpacked)


def _find_data_dir(root: Path) -> Path | None:
    """``root`` or the first of its sub-directories (by name) that holds a ratings file."""
    if _ratings_file(root) is not None:
        return root
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith(("__MACOSX", ".")) and _ratings_file(child):
            return child
    return None


# --- movies ---------------------------------------------------------------------------


def _read_items(directory: Path, layout: str) -> pd.DataFrame:
    needed = {"ml-100k": ("u.item", "u.genre"), "ml-1m": ("movies.dat",), "ml-latest": ("movies.csv",)}[layout]
    for filename in needed:
        if not (directory / filename).is_file():
            raise FileNotFoundError(
                f"{directory / filename}: no such file; the set's movies file is missing "
                "(to read only the ratings, use collabemb.data.read_ratings with layout=...)"
            )
    if layout == "ml-100k":
        ids, titles, genres = _read_u_item(directory / "u.item", _read_u_genre(directory / "u.genre"))
    elif layout == "ml-1m":
        ids, titles, genres = _read_movies_dat(directory / "movies.dat")
    else:
        ids, titles, genres = _read_movies_csv(directory / "movies.csv")
    items = pd.DataFrame(
        {"item": np.asarray(ids, dtype=np.int64), "title": pd.Series(titles, dtype="str"), "genres": pd.Series(genres, dtype="str")}
    )
    year = items["title"].str.extract(_YEAR, expand=False)
    items["year"] = pd.to_numeric(year).astype("Int64")
    return items


def _read_u_genre(path: Path) -> list[str]:
    """Genre names of ``u.genre`` (``name|index`` lines), in index order."""
    by_index: dict[int, str] = {}
    for lineno, line in _lines(path):
        fields = line.split("|")
        if len(fields) != 2:
            raise ValueError(f"{path}, line {lineno}: expected 2 '|'-separated fields (name|index), found {len(fields)}")
        by_index[_int(fields[1], path, lineno, "index")] = fields[0]
    if sorted(by_index) != list(range(len(by_index))):
        raise ValueError(f"{path}: expected genre indices 0..{len(by_index) - 1}, found {sorted(by_index)}")
    return [by_index[i] for i in range(len(by_index))]


def _read_u_item(path: Path, genre_names: list[str]) -> tuple[list[int], list[str], list[str]]:
    """ml-100k ``u.item``: id|title|release date|video release date|IMDb URL|one 0/1 flag per genre."""
    n_fields = 5 + len(genre_names)
    ids, titles, genres = [], [], []
    for lineno, line in _lines(path):
        fields = line.split("|")
        if len(fields) != n_fields:
            raise ValueError(
                f"{path}, line {lineno}: expected {n_fields} '|'-separated fields (id, title, release date, "
                f"video release date, IMDb URL and {len(genre_names)} genre flags), found {len(fields)}"
            )
        flags = fields[5:]
        for genre, flag in zip(genre_names, flags, strict=False):
            if flag not in ("0", "1"):
                raise ValueError(f"{path}, line {lineno}, column {genre!r}: expected a 0/1 genre flag, found {flag!r}")
        ids.append(_int(fields[0], path, lineno, "item"))
        titles.append(fields[1].strip())
        genres.append("|".join(g for g, flag in zip(genre_names, flags, strict=False) if flag == "1"))
    _check_unique(path, ids)
    return ids, titles, genres


def _read_movies_dat(path: Path) -> tuple[list[int], list[str], list[str]]:
    """ml-1m / ml-10m ``movies.dat``: id::title::genres."""
    ids, titles, genres = [], [], []
    for lineno, line in _lines(path):
        fields = line.split("::")
        if len(fields) < 3:
            raise ValueError(f"{path}, line {lineno}: expected 3 '::'-separated fields (id::title::genres), found {len(fields)}")
        ids.append(_int(fields[0], path, lineno, "item"))
        titles.append("::".join(fields[1:-1]).strip())
        genres.append(_genres(fields[-1]))
    _check_unique(path, ids)
    return ids, titles, genres


def _read_movies_csv(path: Path) -> tuple[list[int], list[str], list[str]]:
    """ml-20m / ml-25m / ml-latest ``movies.csv``: header movieId,title,genres; titles may be quoted."""
    rows = csv.reader(io.StringIO(_text(path), newline=""))
    header = next(rows, None)
    if header != ["movieId", "title", "genres"]:
        raise ValueError(f"{path}, line 1: expected the header movieId,title,genres, found {header!r}")
    ids, titles, genres = [], [], []
    for row in rows:
        if not row:
            continue
        lineno = rows.line_num
        if len(row) != 3:
            raise ValueError(f"{path}, line {lineno}: expected 3 comma-separated fields (movieId,title,genres), found {len(row)}")
        ids.append(_int(row[0], path, lineno, "movieId"))
        titles.append(row[1].strip())
        genres.append(_genres(row[2]))
    _check_unique(path, ids)
    return ids, titles, genres


def _genres(field: str) -> str:
    field = field.strip()
    return "" if field == "(no genres listed)" else field


# --- users ----------------------------------------------------------------------------


def _read_users(directory: Path, layout: str) -> pd.DataFrame | None:
    if layout == "ml-100k" and (directory / "u.user").is_file():
        return _read_u_user(directory / "u.user")
    if layout == "ml-1m" and (directory / "users.dat").is_file():
        return _read_users_dat(directory / "users.dat")
    return None


def _read_u_user(path: Path) -> pd.DataFrame:
    """ml-100k ``u.user``: user|age|gender|occupation|zip."""
    rows = []
    for lineno, line in _lines(path):
        fields = line.split("|")
        if len(fields) != 5:
            raise ValueError(
                f"{path}, line {lineno}: expected 5 '|'-separated fields (user|age|gender|occupation|zip), found {len(fields)}"
            )
        user, age, gender, occupation, zip_code = fields
        rows.append((_int(user, path, lineno, "user"), _int(age, path, lineno, "age"), gender, occupation, zip_code))
    return _users_frame(path, rows)


def _read_users_dat(path: Path) -> pd.DataFrame:
    """ml-1m ``users.dat``: user::gender::age::occupation code::zip."""
    rows = []
    for lineno, line in _lines(path):
        fields = line.split("::")
        if len(fields) != 5:
            raise ValueError(
                f"{path}, line {lineno}: expected 5 '::'-separated fields (user::gender::age::occupation::zip), found {len(fields)}"
            )
        user, gender, age, code, zip_code = fields
        occupation = _int(code, path, lineno, "occupation")
        if not 0 <= occupation < len(_ML1M_OCCUPATIONS):
            raise ValueError(f"{path}, line {lineno}, column 'occupation': expected a code 0..{len(_ML1M_OCCUPATIONS) - 1}, found {code!r}")
        user_id, age_value = _int(user, path, lineno, "user"), _int(age, path, lineno, "age")
        rows.append((user_id, age_value, gender, _ML1M_OCCUPATIONS[occupation], zip_code))
    return _users_frame(path, rows)


def _users_frame(path: Path, rows: list[tuple[int, int, str, str, str]]) -> pd.DataFrame:
    users, ages, genders, occupations, zips = zip(*rows, strict=True) if rows else ((), (), (), (), ())
    _check_unique(path, list(users))
    return pd.DataFrame(
        {
            "user": np.asarray(users, dtype=np.int64),
            "age": np.asarray(ages, dtype=np.int64),
            "gender": pd.Series(genders, dtype="str"),
            "occupation": pd.Series(occupations, dtype="str"),
            "zip": pd.Series(zips, dtype="str"),
        }
    )


# --- small text helpers -----------------------------------------------------------------


def _text(path: Path) -> str:
    """A file's text: UTF-8 when it decodes as such, else Latin-1 (ml-100k and ml-1m are Latin-1)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, line) for each non-blank line. Splits on newlines only: Latin-1 text
    may hold characters that ``str.splitlines`` would also treat as line breaks."""
    lines = _text(path).split("\n")
    return [(i, line.rstrip("\r")) for i, line in enumerate(lines, start=1) if line.strip()]


def _int(value: str, path: Path, lineno: int, column: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{path}, line {lineno}, column {column!r}: expected an integer, found {value!r}") from None


def _check_unique(path: Path, ids: list[int]) -> None:
    seen: set[int] = set()
    for value in ids:
        if value in seen:
            raise ValueError(f"{path}: ID {value} appears on more than one line")
        seen.add(value)
