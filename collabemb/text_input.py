"""Delimited rating files as bytes: decompression, separator, header row and line numbers.

:mod:`collabemb.data` parses and validates the records; this module finds them. A compressed file
(gzip, bz2, xz or zstd) is recognised by its first bytes whatever its name and decompressed in
memory before anything looks at it, so the separator, the header and every line number in an
error message are those of the text inside. Line numbers are physical lines of that text
(1-based; ``\\n``, ``\\r\\n`` and a lone ``\\r`` each end a line), counted the way pandas' C
parser tokenises records: a field that opens with ``"`` runs to the next lone ``"``, across lines.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import mmap
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

PARQUET_MAGIC = b"PAR1"
_GZIP, _XZ, _ZSTD = b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd"
_BZ2 = re.compile(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)")  # stream header, then a block or the end-of-stream magic
_QUOTED_REST = re.compile(rb'[^"]*+(?:""[^"]*+)*+"')  # the rest of a quoted field, through its closing quote


class RatingsError(ValueError):
    """Malformed rating input. The message names file, line and column where known."""


def compression_of(head: bytes) -> str | None:
    """``"gzip"``, ``"bz2"``, ``"xz"`` or ``"zstd"`` from a file's first 10 bytes, or None."""
    for kind, magic in (("gzip", _GZIP), ("xz", _XZ), ("zstd", _ZSTD)):
        if head.startswith(magic):
            return kind
    return "bz2" if _BZ2.match(head) else None


@dataclass(frozen=True, eq=False)
class TextFile:
    """A delimited text file: read from disk (``data`` is None) or decompressed into ``data``."""

    path: Path
    data: bytes | None = None
    compression: str | None = None

    @classmethod
    def of(cls, source: str | Path | TextFile) -> TextFile:
        """The file, decompressed when its first bytes say it is compressed (RatingsError if corrupt)."""
        if isinstance(source, TextFile):
            return source
        path = Path(source)
        with open(path, "rb") as fh:
            kind = compression_of(fh.read(10))
        return cls(path) if kind is None else cls(path, _decompress(path, kind), kind)

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data) if self.data is not None else open(self.path, "rb")

    def read_bytes(self) -> bytes:
        return self.data if self.data is not None else self.path.read_bytes()

    def find(self, needle: bytes) -> int:
        """Offset of the first ``needle`` (memchr speed, without reading a file into memory), or -1."""
        if self.data is not None:
            return self.data.find(needle)
        if self.path.stat().st_size == 0:
            return -1
        with open(self.path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return mapped.find(needle)

    def check_text(self) -> None:
        """RatingsError for what is surely not UTF-8 text: a UTF-16 byte-order mark or a NUL byte."""
        with self.open() as fh:
            head = fh.read(2)
        if head in (b"\xff\xfe", b"\xfe\xff"):
            raise RatingsError(
                f"{self.path}, line 1: UTF-16 text (byte-order mark {head.hex(' ')}); expected UTF-8 (save the file as UTF-8)"
            )
        nul = self.find(b"\x00")
        if nul >= 0:
            with self.open() as fh:
                line = line_at_offset(fh.read(nul))
            raise RatingsError(f"{self.path}, line {line}: NUL byte at byte {nul}; expected UTF-8 text (is it a binary or UTF-16 file?)")


def _decompress(path: Path, kind: str) -> bytes:
    try:
        if kind == "zstd":
            return _unzstd(path)
        opener = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}[kind]
        with opener(path, "rb") as fh:
            return fh.read()
    except RatingsError:
        raise
    except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as exc:
        raise RatingsError(f"{path}: corrupt {kind} data ({exc}); expected a complete {kind}-compressed text file") from None


def _unzstd(path: Path) -> bytes:
    """Every frame of a zstd file; ValueError when the data is corrupt or ends inside a frame."""
    try:
        import zstandard
    except ImportError:
        raise RatingsError(f"{path}: zstd-compressed; reading it needs the 'zstandard' package (pip install zstandard)") from None
    data, parts = path.read_bytes(), []
    try:
        while data:
            frame = zstandard.ZstdDecompressor().decompressobj()
            parts.append(frame.decompress(data))
            if not frame.eof:
                raise ValueError("the data ends inside a frame")
            data = frame.unused_data
    except zstandard.ZstdError as exc:
        raise ValueError(str(exc)) from None
    return b"".join(parts)


def quotes_are_plain(text: TextFile, delim: str, chunk_size: int = 1 << 24) -> bool:
    """True when every ``"`` opens a field, closes one or doubles one inside it, and none is left open.

    Then the quote state anywhere is the parity of the quotes before it, and every CSV reader
    splits the records as pandas' C parser does. False (a literal quote inside an unquoted field,
    text after a closing quote, a quote left open at the end) means "maybe not": the caller takes
    the careful path. ``delim``: one byte. Vectorised, chunk by chunk (about 0.2 s per 10M quotes).
    """
    beside = np.zeros(256, dtype=bool)  # what may stand before an opening quote or after a closing one
    beside[list(b'\n\r"' + delim.encode())] = True
    seen, before_chunk = 0, 10  # quotes so far; the byte before the chunk (the start of the file counts as a line end)
    with text.open() as fh:
        chunk = fh.read(chunk_size)
        while chunk:
            after_chunk = fh.read(chunk_size)
            arr = np.frombuffer(chunk, np.uint8)
            at = np.flatnonzero(arr == 34)
            if len(at):
                before, after = arr[at - 1], np.take(arr, at + 1, mode="clip")  # the ends are set just below
                if at[0] == 0:
                    before[0] = before_chunk
                if at[-1] == len(arr) - 1:
                    after[-1] = after_chunk[0] if after_chunk else 10
                first = seen % 2  # quote k (counting from the start of the file) opens a field when k is even
                if not (beside[before[first::2]].all() and beside[after[1 - first :: 2]].all()):
                    return False
                seen += len(at)
            before_chunk, chunk = chunk[-1], after_chunk
    return seen % 2 == 0


def line_at_offset(prefix: bytes) -> int:
    """The line number of the byte just after ``prefix``, the file's first bytes."""
    return prefix.count(b"\n") + prefix.count(b"\r") - prefix.count(b"\r\n") + 1


def sniff_sep(source: str | Path | TextFile) -> str:
    """The separator guessed from the first line that is not blank: tab, ``::``, ``;`` or comma (the default)."""
    head = b""
    with TextFile.of(source).open() as fh:
        for line in _physical_lines(fh):
            if line.strip():
                head = line
                break
    for candidate in ("\t", "::", ";", ","):
        if candidate.encode() in head:
            return candidate
    return ","


def header_of(text: TextFile, file_sep: str, sep: str) -> list[str] | None:
    """The first line's fields (``file_sep`` read as ``sep``), or None when it has a byte-order mark
    or does not decode (the careful path's turn)."""
    with text.open() as fh:
        head = fh.readline()
    if head.startswith(b"\xef\xbb\xbf"):  # a byte-order mark: leave it to pandas
        return None
    try:
        line = head.decode("utf-8").rstrip("\r\n").replace(file_sep, sep)
        return next(csv.reader([line], delimiter=sep))
    except (UnicodeDecodeError, csv.Error, StopIteration):
        return None


def header_fields(text: TextFile, sep: str) -> tuple[int, list[str]] | None:
    """(line, fields) of the header: the first record that is not blank, quotes and all; None if
    there is none or it does not parse."""
    for start, blank, record in _records(text, sep):
        if blank:
            continue
        try:
            fields = next(csv.reader(io.StringIO(record.decode("utf-8-sig"), newline=""), delimiter=_delimiter(sep), strict=False))
        except (UnicodeDecodeError, csv.Error, StopIteration):
            return None
        return start, fields
    return None


def _delimiter(sep: str) -> str:
    """The one-character delimiter the readers see (a longer separator is swapped for a tab)."""
    return sep if len(sep.encode()) == 1 else "\t"


def _physical_lines(fh: BinaryIO) -> Iterator[bytes]:
    """The lines without their ends, split at ``\\n``, ``\\r\\n`` and a lone ``\\r`` as pandas does."""
    for line in fh:
        body = line[:-1] if line.endswith(b"\n") else line
        if body.endswith(b"\r"):
            body = body[:-1]
        if b"\r" in body:
            yield from body.split(b"\r")
        else:
            yield body


def _ends_quoted(line: bytes, delim: bytes, inside: bool) -> bool:
    """Whether a quoted field is still open at the end of ``line`` (``inside``: one was open before it)."""
    pos = 0
    while True:
        if inside or line.startswith(b'"', pos):
            match = _QUOTED_REST.match(line, pos if inside else pos + 1)
            if match is None:
                return True
            inside, pos = False, match.end()
        end = line.find(delim, pos)  # an unquoted field, or what follows a closing quote: literal
        if end < 0:
            return False
        pos = end + len(delim)


def _records(text: TextFile, sep: str) -> Iterator[tuple[int, bool, bytes]]:
    """(line where it starts, blank, bytes) of every record, blank ones included, in file order.

    A blank record is a line of spaces and tabs (other than the separator): pandas skips those.
    """
    sep_bytes = sep.encode()
    delim = _delimiter(sep).encode()
    whitespace = b" \t".replace(delim, b"")
    inside, start, parts = False, 1, []
    with text.open() as fh:
        for number, line in enumerate(_physical_lines(fh), start=1):
            if delim != sep_bytes:
                line = line.replace(sep_bytes, delim)
            if not inside:
                start, parts = number, []
            parts.append(line)
            if inside or b'"' in line:
                inside = _ends_quoted(line, delim, inside)
            if not inside:
                yield start, not line.strip(whitespace) and len(parts) == 1, b"\n".join(parts)
    if inside:  # the file ends inside a quoted field
        yield start, False, b"\n".join(parts)


def record_line(text: TextFile, sep: str, index: int) -> int | None:
    """Line where record ``index`` (0-based, blank records counted, as in pandas' parser errors) starts."""
    for i, (start, _, _) in enumerate(_records(text, sep)):
        if i == index:
            return start
    return None


def row_lines(text: TextFile, sep: str, rows: Sequence[int], first_line: int) -> list[int]:
    """Lines where data rows ``rows`` start, in one pass; ``first_line`` 2 when a header comes first.

    Rows count the records that are not blank, as pandas does; a row past the end gets its plain
    arithmetic line.
    """
    wanted = {row + first_line - 1: row for row in rows}  # index among the records that are not blank
    found: dict[int, int] = {}
    seen = -1
    for start, blank, _ in _records(text, sep):
        if not blank:
            seen += 1
            if seen in wanted:
                found[wanted[seen]] = start
                if len(found) == len(wanted):
                    break
    return [found.get(row, row + first_line) for row in rows]


@dataclass
class Locator:
    """Turns a row position into 'file, line N' (text) or 'DataFrame, row N' (tables)."""

    label: str
    first_line: int | None
    path: Path | TextFile | None = None
    sep: str | None = None

    def places(self, rows: Sequence[int]) -> list[str]:
        """'line N' (or 'row N') for each row, from one pass over the file."""
        if self.first_line is None:
            return [f"row {row}" for row in rows]
        if self.path is None:
            return [f"line {row + self.first_line}" for row in rows]
        text = TextFile.of(self.path)
        lines = row_lines(text, self.sep or sniff_sep(text), [int(r) for r in rows], self.first_line)
        return [f"line {line}" for line in lines]

    def where(self, row: int) -> str:
        return f"{self.label}, {self.places([row])[0]}"

    def at(self, row: int, col: str) -> str:
        return f"{self.where(row)}, column {col!r}"


def show(value, limit: int = 80) -> str:
    """repr of a value as the user wrote it (numpy scalars as plain Python values), cut when long."""
    text = repr(value.item() if isinstance(value, np.generic) else value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[: limit - 3]}...{size}"


def read_delimited(text: TextFile, file_sep: str, names: list[str] | None) -> tuple[pd.DataFrame, int]:
    """Every field as a string, with pandas' C parser; ``names`` for a file without a header row.

    Returns (frame, line number of row 0); RatingsError names the line of whatever does not parse.
    """
    text.check_text()
    path = text.path
    data: io.BytesIO | Path = path if text.data is None else io.BytesIO(text.data)
    sep = file_sep
    if len(sep.encode()) > 1:
        # pandas' fast C parser takes one-byte separators only; ratings.dat holds numbers,
        # so '::' can be swapped for a tab without changing any field or line number.
        data = io.BytesIO(text.read_bytes().replace(sep.encode(), b"\t"))
        sep = "\t"
    try:
        frame = pd.read_csv(
            data,
            sep=sep,
            header=None if names else 0,
            names=names,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            engine="c",
            skip_blank_lines=True,
            encoding="utf-8",
            encoding_errors="strict",
            compression=None,  # never guessed from the name: TextFile decompressed by content
        )
    except pd.errors.EmptyDataError:
        raise RatingsError(f"{path}: empty input, expected {'rows' if names else 'a header row'}") from None
    except pd.errors.ParserError as exc:
        raise parser_error(text, file_sep, exc) from None
    except UnicodeDecodeError as exc:
        # pandas decodes in chunks, so exc.start is an offset into a chunk: find the real place
        raw = text.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as real:
            line = line_at_offset(raw[: real.start])
            raise RatingsError(f"{path}, line {line}: not UTF-8 text ({real.reason} at byte {real.start})") from None
        raise RatingsError(f"{path}: not UTF-8 text ({exc.reason})") from None
    first_line = 1 if names else 2
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas silently turns extra leading fields into an index when every data line has
        # more fields than the header (or names); that would shift every column
        want, found = len(frame.columns), len(frame.columns) + frame.index.nlevels
        line = Locator(str(path), first_line, text, file_sep).where(0)
        raise RatingsError(f"{line}: expected {want} fields, found {found}")
    # (short lines cannot be told apart from empty fields here: pandas fills them with "",
    # so they fail later as a missing ID or a non-numeric value on the right line and column)
    return frame, first_line


def parser_error(text: TextFile, sep: str, exc: Exception) -> RatingsError:
    """pandas' tokenizer error with its record number turned into the physical line."""
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
    if fields:
        want, record, saw = map(int, fields.groups())
        line = record_line(text, sep, record - 1) or record
        return RatingsError(f"{text.path}, line {line}: expected {want} fields, found {saw}")
    quote = re.search(r"EOF inside string starting at row (\d+)", str(exc))
    if quote:
        line = record_line(text, sep, int(quote.group(1))) or int(quote.group(1)) + 1
        return RatingsError(f"{text.path}, line {line}: a quoted field opens here and never closes; expected a closing '\"'")
    return RatingsError(f"{text.path}: cannot parse ({exc})")
