"""Atomic writes: a file or a directory appears under its final name complete, or not at all.

Every file collabemb writes outside an artifact or checkpoint (exports, plots, sample data,
downloads) goes through :func:`atomic_file` or :func:`atomic_dir`: the content is written under a
temporary name beside the target (same filesystem), fsynced, and renamed into place (a directory
by an atomic exchange on Linux). A crash leaves at most a hidden ``.NAME.tmp-*`` sibling, never a
half-written target; a target that is not a regular file (``/dev/stdout``, a FIFO) is refused,
never renamed over. Permissions follow the umask, as for any ordinary file (``mkstemp`` would
make 0600). Artifacts and checkpoints are snapshot stores (:mod:`collabemb.store`), built on
:func:`fsync_dir` and :func:`umask` from here.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


def umask() -> int:
    """The process's current umask (read without changing it for longer than one call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is fsynced and renamed onto ``target``.

    On an exception the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    if target.exists() and not target.is_file():  # /dev/stdout, a FIFO, a directory: never renamed over
        raise ValueError(f"{target}: exists and is not a regular file; refusing to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success it replaces ``target``.

    An existing ``target`` is renamed aside first and removed only once the new directory is in
    place (it is put back if the second rename fails). On an exception the temporary directory is
    removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~umask())
        for path in tmp.rglob("*"):
            if path.is_file():
                _fsync_file(path)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(source: Path, target: Path) -> None:
    """Move the finished directory ``source`` to ``target``; an old ``target`` is removed afterwards.

    On Linux the two are swapped in one ``renameat2(RENAME_EXCHANGE)``, so ``target`` always names
    a complete directory; elsewhere (or where the filesystem refuses the exchange) the old one is
    renamed aside first, which leaves a moment without ``target``.
    """
    if not target.exists():
        os.replace(source, target)
        fsync_dir(target.parent)
        return
    if _exchange(source, target):
        fsync_dir(target.parent)
        shutil.rmtree(source, ignore_errors=True)  # now the old directory
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rmdir(old)
    os.replace(target, old)
    try:
        os.replace(source, target)
    except BaseException:
        os.replace(old, target)
        raise
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory, so the renames inside it survive a power cut (a no-op where the OS refuses)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a directory
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as strict JSON (no NaN), ASCII, to ``path``, atomically."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=True, allow_nan=False)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
