"""A directory that holds one verified snapshot at a time: artifacts and checkpoints are stored here.

Layout of a store at ``PATH``::

    PATH/
      CURRENT              the pointer: {"snapshot": "snap-000007-1a2b3c4d", "manifest_sha256": ...}
      .lock                writers hold an exclusive ``flock`` on it (its text: the holder's pid)
      snap-000007-1a2b3c4d/
        manifest.json      every other file of the snapshot with its size and SHA-256 (written last)
        config.json, tensors.safetensors, ...

**Writing** (:func:`write_snapshot`): the writer takes the lock (a second process is refused at
once, naming the holder; one process may nest), removes what a killed writer left (``.tmp-*``),
writes every file through :meth:`SnapshotWriter.write` (hashed as written, fsynced), writes the
manifest last, fsyncs the directory, renames it to ``snap-*``, and then replaces ``CURRENT`` in
one ``os.replace``: that rename is the commit. Until it, readers see the old snapshot; after it,
the new one. Nothing under ``PATH`` is ever modified in place, so a kill at any moment leaves the
complete old or the complete new artifact.

**Reading** (:func:`open_snapshot`): the reader reads ``CURRENT`` once, takes a shared ``flock``
on that snapshot's manifest, checks the manifest against the pointer's hash, and reads each file
through :meth:`Snapshot.read`, which checks its size before reading and its SHA-256 after. A
snapshot is deleted only by a writer that gets an exclusive lock on its manifest (no reader holds
it), after the pointer has moved on; a reader whose snapshot vanished before it locked it starts
again from the pointer. So a reader sees one complete snapshot, never a mix.

Artifacts written before stores existed (files directly in ``PATH``, no ``CURRENT``) are read
as they are, unverified (:attr:`Snapshot.verified` is False); the next save converts them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from collabemb.atomic import fsync_dir, umask
from collabemb.schema import (
    FILE_NAME_PATTERN,
    MANIFEST,
    MANIFEST_MAX_BYTES,
    POINTER,
    POINTER_MAX_BYTES,
    SNAPSHOT_PATTERN,
    ArtifactError,
    parse_json,
)

log = logging.getLogger(__name__)

POINTER_FILE = "CURRENT"
LOCK_FILE = ".lock"
MANIFEST_FILE = "manifest.json"
_SNAPSHOT = re.compile(SNAPSHOT_PATTERN)
_FILE_NAME = re.compile(FILE_NAME_PATTERN)
_READ_ATTEMPTS = 50
_HASH_CHUNK = 8 << 20


class StoreLockedError(ArtifactError):
    """Another process is writing the same artifact or checkpoint."""


# --- the writer lock ----------------------------------------------------------------------------

_held: dict[str, list] = {}  # real path -> [fd, depth, owning thread]
_held_guard = threading.Lock()


@contextlib.contextmanager
def writer_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive writer lock of the store at ``path`` (created if missing).

    Another process holding it: :class:`StoreLockedError` at once, naming its pid. The same
    process may take it again (nested); another thread of this process waits for it.
    """
    root = store_path(path)
    _check_store_dir(root)
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(root)
    with _held_guard:
        entry = _held.get(key)
        if entry is not None and entry[2] == threading.get_ident():
            entry[1] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield
        finally:
            with _held_guard:
                _held[key][1] -= 1
        return
    with _thread_gate(key):
        fd = _lock_exclusive(root)
        with _held_guard:
            _held[key] = [fd, 1, threading.get_ident()]
        try:
            if not created:
                remove_leftovers(root)  # what killed writers left, and snapshots readers have let go
            yield
        finally:
            with _held_guard:
                del _held[key]
            if created and os.listdir(root) == [LOCK_FILE]:  # nothing was written: leave no empty store behind
                with contextlib.suppress(OSError):
                    os.unlink(root / LOCK_FILE)
                    os.rmdir(root)
            os.close(fd)  # releases the flock


_gates: dict[str, threading.Lock] = {}


@contextlib.contextmanager
def _thread_gate(key: str) -> Iterator[None]:
    with _held_guard:
        gate = _gates.setdefault(key, threading.Lock())
    with gate:
        yield


def _lock_exclusive(root: Path) -> int:
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise StoreLockedError(
            f"{root}: another process (pid {holder}) is writing it; wait for it to finish or choose another path"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def store_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path; an empty one (``--out ''``, which would mean the working directory) is refused."""
    if not os.fspath(path).strip():
        raise ArtifactError("an empty path was given for the artifact or checkpoint directory")
    return Path(path)


def _check_store_dir(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise ArtifactError(f"{root}: exists and is not a directory")
    if root.is_dir() and not is_store(root) and any(p.name != LOCK_FILE for p in root.iterdir()):
        raise ArtifactError(f"{root}: exists and is not a collabemb artifact or checkpoint; refusing to write into it")


def is_store(root: Path) -> bool:
    """Whether ``root`` holds a store (a pointer), an old flat artifact, or only leftovers of one."""
    if (root / POINTER_FILE).is_file() or (root / "config.json").is_file() or (root / MANIFEST_FILE).is_file():
        return True
    return (root / LOCK_FILE).is_file() and all(
        p.name == LOCK_FILE or p.name.startswith(".tmp-") or _SNAPSHOT.fullmatch(p.name) for p in root.iterdir()
    )


# --- writing --------------------------------------------------------------------------------------


@dataclass
class SnapshotWriter:
    """Writes the files of one new snapshot (flat names only); each is hashed and fsynced."""

    directory: Path
    files: dict[str, dict] = field(default_factory=dict)

    def write(self, name: str, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` as file ``name`` of the snapshot."""
        if not _FILE_NAME.fullmatch(name) or name in (MANIFEST_FILE, *self.files):
            raise ValueError(f"cannot write {name!r} into a snapshot (not a plain new file name)")
        view = memoryview(data).cast("B")
        digest = hashlib.sha256()
        with open(self.directory / name, "wb") as fh:
            for start in range(0, len(view), _HASH_CHUNK):
                chunk = view[start : start + _HASH_CHUNK]
                digest.update(chunk)
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        self.files[name] = {"size": len(view), "sha256": digest.hexdigest()}


@contextlib.contextmanager
def write_snapshot(path: str | os.PathLike, kind: str) -> Iterator[SnapshotWriter]:
    """Yield a :class:`SnapshotWriter` for a new snapshot of the store at ``path``; commit it on success.

    ``kind`` is ``"artifact"`` or ``"checkpoint"`` (recorded in the manifest). On an exception the
    new snapshot is removed and the store is left as it was.
    """
    root = store_path(path)
    with writer_lock(root):
        tmp = root / f".tmp-{secrets.token_hex(4)}"
        tmp.mkdir(mode=0o777 & ~umask())
        try:
            writer = SnapshotWriter(tmp)
            yield writer
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        with _interrupts_deferred():  # from here to the end, Ctrl-C waits: the commit and the cleanup run whole
            _commit(root, tmp, writer, kind)


def _commit(root: Path, tmp: Path, writer: SnapshotWriter, kind: str) -> None:
    """Seal the written snapshot ``tmp`` with its manifest, name it, and swap the pointer to it."""
    name = f"snap-{_current_seq(root) + 1:06d}-{secrets.token_hex(4)}"
    try:
        manifest = {"format": "collabemb-manifest", "version": 1, "kind": kind, "files": writer.files}
        manifest_bytes = json.dumps(manifest, ensure_ascii=True, allow_nan=False, sort_keys=True).encode()
        _write_synced(tmp / MANIFEST_FILE, manifest_bytes)
        fsync_dir(tmp)
        os.rename(tmp, root / name)
        fsync_dir(root)
        pointer = {"format": "collabemb-pointer", "snapshot": name, "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest()}
        pointer_tmp = root / f".tmp-{secrets.token_hex(4)}-{POINTER_FILE}"
        _write_synced(pointer_tmp, json.dumps(pointer).encode())
        os.replace(pointer_tmp, root / POINTER_FILE)  # the commit
    except BaseException:  # not committed: the old pointer stands; leave nothing of the new snapshot
        for leftover in (tmp, root / name):
            _remove(leftover)
        raise
    fsync_dir(root)
    log.info("wrote %s %s: %d files, %d bytes", kind, root / name, len(writer.files), sum(f["size"] for f in writer.files.values()))
    remove_leftovers(root)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) and SIGTERM back inside the block: their Python handlers are swapped for
    one that notes the signal, and a noted signal is sent again once the old handlers are back (so
    it acts exactly as it would have, just after the block). Signal masks would not do: another
    thread (torch's, a thread pool's) may take the signal. A no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is not None:  # None: installed outside Python, left alone
            previous[signum] = signal.signal(signum, lambda number, frame: noted.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if noted:
            os.kill(os.getpid(), noted[0])


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o666 & ~umask())


def _current_seq(root: Path) -> int:
    seqs = [int(m.group(1)) for p in root.iterdir() if (m := _SNAPSHOT.fullmatch(p.name))]
    return max(seqs, default=0)


def remove_leftovers(root: Path) -> None:
    """Remove what killed writers left (``.tmp-*``), the files of an old flat artifact, and every
    snapshot but the current one that no reader holds. Call only with the writer lock held. With
    no readable pointer, snapshots are left alone: which one is current cannot be told."""
    current = _pointer_target(root)
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".tmp-"):
            _remove(entry)
        elif current is not None and _SNAPSHOT.fullmatch(entry.name) and entry.name != current:
            _remove_snapshot(root, entry)
        elif current is not None and entry.is_file() and entry.name not in (POINTER_FILE, LOCK_FILE):
            entry.unlink()  # an old flat artifact's file, replaced by the snapshot
    fsync_dir(root)


def _pointer_target(root: Path) -> str | None:
    try:
        return _read_pointer(root)["snapshot"]
    except ArtifactError:
        return None


def _remove_snapshot(root: Path, snapshot: Path) -> None:
    """Delete ``snapshot`` if no reader holds its manifest; a reader that holds it keeps it."""
    try:
        fd = os.open(snapshot / MANIFEST_FILE, os.O_RDONLY)
    except FileNotFoundError:
        _remove(snapshot)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return  # a reader holds it: a later writer removes it
    try:
        trash = root / f".tmp-{secrets.token_hex(4)}-old"
        os.rename(snapshot, trash)
    finally:
        os.close(fd)
    _remove(trash)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# --- reading ---------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """One snapshot being read. ``files``: ``{name: {"size", "sha256"}}`` from its manifest (empty
    when ``verified`` is False: an artifact written before manifests existed)."""

    directory: Path
    kind: str
    files: dict[str, dict]
    verified: bool

    def has(self, name: str) -> bool:
        return name in self.files if self.verified else (self.directory / name).is_file()

    def read(self, name: str, *, max_bytes: int | None = None) -> bytes:
        """The bytes of file ``name``, checked against the manifest (size before reading, SHA-256 after);
        a file larger than ``max_bytes`` is refused before it is read."""
        path = self.directory / name
        if self.verified and name not in self.files:
            raise ArtifactError(f"{path}: not listed in {MANIFEST_FILE}")
        try:
            with os.fdopen(open_regular(path), "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if max_bytes is not None and size > max_bytes:
                    raise ArtifactError(f"{path}: {size} bytes, more than the {max_bytes} this file may hold")
                if not self.verified:
                    return fh.read()
                expected = self.files[name]
                if size != expected["size"]:
                    raise ArtifactError(f"{path}: {size} bytes, {MANIFEST_FILE} says {expected['size']}; the file was changed or truncated")
                data = fh.read(size + 1)
        except FileNotFoundError:
            raise ArtifactError(f"{path}: missing") from None
        if len(data) != expected["size"] or hashlib.sha256(data).hexdigest() != expected["sha256"]:
            raise ArtifactError(f"{path}: contents do not match {MANIFEST_FILE} (SHA-256 differs); the file was changed")
        return data

    def read_many(self, names: list[str]) -> dict[str, bytes]:
        """:meth:`read` of several files, two at a time (hashing releases the GIL)."""
        if len(names) < 2:
            return {name: self.read(name) for name in names}
        with ThreadPoolExecutor(max_workers=2) as pool:
            return dict(zip(names, pool.map(self.read, names), strict=True))


def open_regular(path: Path) -> int:
    """A read-only descriptor of ``path`` if it is a regular file: a symlink, a FIFO (which would block),
    a device or a directory inside a store is refused, naming it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise FileNotFoundError(exc.errno, exc.strerror, str(path)) from None
        raise ArtifactError(f"{path}: cannot be opened as a plain file ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ArtifactError(f"{path}: not a regular file")
    return fd


@contextlib.contextmanager
def open_snapshot(path: str | os.PathLike, kind: str, *, also: tuple[str, ...] = ()) -> Iterator[Snapshot]:
    """Hold the current snapshot of the store at ``path`` for reading inside the block; writers
    leave it in place until the block ends. Its manifest's kind must be ``kind`` (``"artifact"``
    or ``"checkpoint"``) or one of ``also``.

    ``path`` may also be one snapshot directory (with its manifest) or an old flat artifact.
    """
    kinds = (kind, *also)
    root = Path(path)
    if not root.is_dir():
        raise ArtifactError(f"{root}: no such {kind} directory")
    if not (root / POINTER_FILE).exists():
        if (root / MANIFEST_FILE).is_file():  # a snapshot directory given directly
            with _held_snapshot(root, None, kinds) as snapshot:
                yield snapshot
            return
        if (root / "config.json").is_file():
            yield Snapshot(root, kind, {}, verified=False)
            return
        raise ArtifactError(f"{root}: no complete collabemb {kind} here ({POINTER_FILE} missing)")
    before = None
    for _ in range(_READ_ATTEMPTS):
        pointer = _read_pointer(root)
        stack = contextlib.ExitStack()
        try:
            snapshot = stack.enter_context(_held_snapshot(root / pointer["snapshot"], pointer["manifest_sha256"], kinds))
        except _Vanished:
            if pointer == before:  # the pointer stands still: what it names is missing, not replaced
                raise ArtifactError(
                    f"{root / POINTER_FILE}: names {pointer['snapshot']}, but {root / pointer['snapshot'] / MANIFEST_FILE} is missing"
                ) from None
            before = pointer
            continue  # a writer moved the pointer and removed this snapshot: read the pointer again
        with stack:
            yield snapshot
        _let_go(root, snapshot.directory)
        return
    raise ArtifactError(f"{root}: the {kind} kept changing while being read ({_READ_ATTEMPTS} attempts)")


def _let_go(root: Path, directory: Path) -> None:
    """After reading ``directory``: if the pointer has moved on meanwhile and no writer is at work,
    remove the old snapshot (a writer could not while it was held). Quietly nothing when the
    store is read-only to this process or busy."""
    try:
        fd = os.open(root / LOCK_FILE, os.O_RDWR)
    except OSError:
        return
    try:
        for attempt in range(5):  # a writer that just cleaned up may be a moment from letting go
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == 4:
                    return  # a writer at work: its own cleanup removes the snapshot, no longer held
                time.sleep(0.01)
        if _pointer_target(root) not in (None, directory.name):
            _remove_snapshot(root, directory)
    except OSError:
        pass  # the store cannot be changed by this process
    finally:
        os.close(fd)


class _Vanished(Exception):
    pass


@contextlib.contextmanager
def _held_snapshot(directory: Path, manifest_sha256: str | None, kinds: tuple[str, ...]) -> Iterator[Snapshot]:
    manifest_path = directory / MANIFEST_FILE
    try:
        fd = open_regular(manifest_path)
    except FileNotFoundError:
        if manifest_sha256 is None:
            raise ArtifactError(f"{manifest_path}: missing") from None
        raise _Vanished() from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(manifest_path))
        except FileNotFoundError:
            same = False
        if not same:
            raise _Vanished()
        data = os.pread(fd, MANIFEST_MAX_BYTES + 1, 0)
        if manifest_sha256 is not None and hashlib.sha256(data).hexdigest() != manifest_sha256:
            raise ArtifactError(f"{manifest_path}: does not match the hash in {POINTER_FILE}; the manifest was changed")
        if len(data) > MANIFEST_MAX_BYTES:
            raise ArtifactError(f"{manifest_path}: larger than {MANIFEST_MAX_BYTES} bytes")
        manifest = parse_json(data, manifest_path, MANIFEST)
        if manifest["kind"] not in kinds:
            raise ArtifactError(f"{directory}: a collabemb {manifest['kind']}, expected a {kinds[0]}")
        yield Snapshot(directory, manifest["kind"], manifest["files"], verified=True)
    finally:
        os.close(fd)


def _read_pointer(root: Path) -> dict:
    path = root / POINTER_FILE
    try:
        with os.fdopen(open_regular(path), "rb") as fh:
            data = fh.read(POINTER_MAX_BYTES + 1)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: unreadable ({exc.strerror or exc})") from None
    if len(data) > POINTER_MAX_BYTES:
        raise ArtifactError(f"{path}: larger than {POINTER_MAX_BYTES} bytes")
    return parse_json(data, path, POINTER)
