"""The hostile material: generated ratings and bytes-level tampering of files.

Nothing here imports collabemb: generate ratings, truncate / flip / replace files, rewrite a
safetensors or .npy file, recompute checksums the way an attacker who edits an artifact coherently
would. Everything is deterministic: seeded data, fixed offsets, sorted file lists.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

# --- data -----------------------------------------------------------------------------------------


def make_ratings(seed: int, n_users: int, n_items: int, n_ratings: int) -> list[tuple[int, int, int, int]]:
    """``(user, item, rating 1..5, timestamp)`` rows: unique pairs, every user and item present, seeded.

    Ratings follow a small low-rank model plus noise, so a fit learns something and two seeds give
    visibly different models.
    """
    rng = np.random.default_rng(seed)
    pairs = set()
    for u in range(1, n_users + 1):  # every user and every item at least once
        pairs.add((u, int(rng.integers(1, n_items + 1))))
    for i in range(1, n_items + 1):
        pairs.add((int(rng.integers(1, n_users + 1)), i))
    while len(pairs) < n_ratings:
        pairs.add((int(rng.integers(1, n_users + 1)), int(rng.integers(1, n_items + 1))))
    pu, qi = rng.normal(size=(n_users + 1, 3)), rng.normal(size=(n_items + 1, 3))
    bu, bi = rng.normal(0, 0.5, n_users + 1), rng.normal(0, 0.5, n_items + 1)
    rows = []
    for n, (u, i) in enumerate(sorted(pairs)):
        score = 3.2 + bu[u] + bi[i] + 0.6 * float(pu[u] @ qi[i]) + rng.normal(0, 0.4)
        rows.append((u, i, int(np.clip(round(score), 1, 5)), 1_500_000_000 + 3_600 * n))
    order = rng.permutation(len(rows))  # a file in no particular order
    return [rows[k] for k in order]


def ratings_csv(rows, *, timestamp: bool = False) -> str:
    head = "user,item,rating,timestamp" if timestamp else "user,item,rating"
    body = [f"{u},{i},{r},{t}" if timestamp else f"{u},{i},{r}" for u, i, r, t in rows]
    return head + "\n" + "\n".join(body) + "\n"


def with_line(text: str, line_no: int, new_line: str) -> str:
    """``text`` with physical line ``line_no`` (1-based, the header is line 1) replaced."""
    lines = text.split("\n")
    lines[line_no - 1] = new_line
    return "\n".join(lines)


def write_text(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", newline="")
    else:
        path.write_bytes(text)
    return path


def compress(data: bytes, method: str) -> bytes:
    """``data`` compressed with gzip, bz2, xz or zstd (mtime 0: the same bytes every run)."""
    if method == "gzip":
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as fh:
            fh.write(data)
        return buf.getvalue()
    if method == "bz2":
        return bz2.compress(data)
    if method == "xz":
        return lzma.compress(data)
    if method == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    raise ValueError(method)


# --- artifact files -----------------------------------------------------------------------------

_RANDOM_PARTS = re.compile(r"(snap-)[0-9]+-[0-9a-f]+|(\.tmp-|\.old-|\.ckpt-)[A-Za-z0-9_]+")


def normalise(text: str) -> str:
    """Path text with its random parts (snapshot and temporary names) replaced by ``*``: stable case names."""
    return _RANDOM_PARTS.sub(lambda m: (m.group(1) or m.group(2)) + "*", text)


def files_under(root: Path) -> list[Path]:
    """Every regular file under ``root``, recursively, in a stable order (by normalised relative path)."""
    found = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    return sorted(found, key=lambda p: (normalise(str(p.relative_to(root))), str(p)))


def find_named(root: Path, name: str) -> list[Path]:
    return [p for p in files_under(root) if p.name == name]


def counterpart(path: Path, root: Path, other_root: Path) -> Path | None:
    """The file of ``other_root`` at the place ``path`` has in ``root`` (snapshot names matched by pattern)."""
    here, there = root, other_root
    for part in path.relative_to(root).parts:
        here = here / part
        if (there / part).exists():
            there = there / part
            continue
        pattern = normalise(part)
        candidates = sorted(p for p in there.iterdir() if normalise(p.name) == pattern) if there.is_dir() else []
        if len(candidates) != 1:
            return None
        there = candidates[0]
    return there if there.is_file() else None


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def chmod_tree(root: Path) -> None:
    """Make ``root`` and everything in it readable by others (the permission cases run as nobody)."""
    os.chmod(root, 0o755)
    for p in root.rglob("*"):
        if p.is_dir():
            os.chmod(p, 0o755)
        elif p.is_file():
            os.chmod(p, 0o644)


def remove_tree(root: Path) -> None:
    """``rm -rf root``, the directories nobody may enter (the permission cases leave some) included."""
    for p in [root, *root.rglob("*")]:
        try:
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)
        except OSError:
            pass
    shutil.rmtree(root, ignore_errors=True)


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def flip_offsets(size: int) -> list[int]:
    """Deterministic offsets: first byte, a third, the middle, last byte."""
    return sorted({0, size // 3, size // 2, size - 1}) if size else []


def truncate(path: Path, size: int) -> None:
    """Cut ``path`` to ``size`` bytes, or extend it with NULs (a sparse file: no disk used)."""
    with open(path, "r+b") as fh:
        fh.truncate(size)


# --- coherent edits: recompute what an attacker would recompute ----------------------------------


def digests(data: bytes) -> dict[str, str]:
    """The checksums a file's bytes may be recorded under: SHA-256 and BLAKE2b-128, hex."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "blake2b128": hashlib.blake2b(data, digest_size=16).hexdigest()}


def _replace_sizes(node, new_hex: set[str], old_size: int, new_size: int) -> bool:
    """In every JSON object holding one of ``new_hex`` as a value, a size field equal to ``old_size`` becomes ``new_size``."""
    changed = False
    if isinstance(node, dict):
        if any(isinstance(v, str) and v in new_hex for v in node.values()):
            for key, value in node.items():
                if ("size" in key or "bytes" in key) and value == old_size and type(value) is int:
                    node[key] = new_size
                    changed = True
        for value in node.values():
            changed |= _replace_sizes(value, new_hex, old_size, new_size)
    elif isinstance(node, list):
        for value in node:
            changed |= _replace_sizes(value, new_hex, old_size, new_size)
    return changed


def rehash(root: Path, edits: list[tuple[Path, bytes, bytes]], *, scope: str) -> list[str]:
    """Record edited files' new checksums wherever their old ones are written, as a thorough attacker would.

    ``edits``: ``(file, old bytes, new bytes)``. Every small text file under ``root`` that contains
    an old checksum (SHA-256 or BLAKE2b-128 hex) gets the new one, and a size recorded beside it is
    updated; a file changed this way is itself an edit whose checksum is propagated in turn (a
    manifest listing config.json, a pointer holding the manifest's hash). ``scope``: ``"config"``
    rewrites only files named config.json (the index's file checksums), ``"manifest"`` every
    text file (manifests and pointers too). Returns the files rewritten (relative, normalised).
    """
    rewritten: list[str] = []
    queue = list(edits)
    seen_rounds = 0
    while queue and seen_rounds < 20:
        seen_rounds += 1
        path, old, new = queue.pop(0)
        old_d, new_d = digests(old), digests(new)
        if old_d == new_d:
            continue
        for target in files_under(root):
            if target == path or target.stat().st_size > 1 << 20 or (scope == "config" and target.name != "config.json"):
                continue
            try:
                text = target.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if not any(old_d[k] in text for k in old_d):
                continue
            before = target.read_bytes()
            for k in old_d:
                text = text.replace(old_d[k], new_d[k])
            try:
                obj = json.loads(text)
                if _replace_sizes(obj, set(new_d.values()), len(old), len(new)):
                    text = json.dumps(obj)
            except ValueError:
                pass
            target.write_text(text, encoding="utf-8")
            after = target.read_bytes()
            rewritten.append(normalise(str(target.relative_to(root))))
            queue.append((target, before, after))
    return rewritten


def edited_json(old: bytes, change: Callable[[dict], object]) -> bytes:
    """JSON ``old`` as ``change`` leaves it (it edits the parsed object in place or returns a replacement)."""
    obj = json.loads(old)
    result = change(obj)
    return json.dumps(obj if result is None else result).encode()


def key_holder(node, key: str) -> dict | None:
    """The first JSON object of a tree (depth first, in order, not inside lists) that has ``key``."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                return node
            found = key_holder(v, key)
            if found is not None:
                return found
    return None


# --- .npy and safetensors -------------------------------------------------------------------------


def npy_parts(data: bytes) -> tuple[dict, bytes]:
    """``(header dict, raw array bytes)`` of a .npy file."""
    import ast

    if data[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy file")
    major = data[6]
    if major == 1:
        hlen, start = int.from_bytes(data[8:10], "little"), 10
    else:
        hlen, start = int.from_bytes(data[8:12], "little"), 12
    header = ast.literal_eval(data[start : start + hlen].decode("latin1"))
    return header, data[start + hlen :]


def npy_bytes(descr: str, shape: tuple, raw: bytes) -> bytes:
    """A version-1.0 .npy file with this header over ``raw``, whatever they say: mislabelled on purpose."""
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    pad = 64 - (10 + len(header) + 1) % 64
    text = (header + " " * (pad % 64) + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + raw


def changed_safetensors(path: Path, change: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> bytes:
    """Every tensor of ``path`` loaded and passed to ``change``: a proper safetensors file with the same metadata."""
    from safetensors import safe_open
    from safetensors.numpy import save

    with safe_open(str(path), framework="np") as fh:
        metadata = fh.metadata()
        tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    return save(change(tensors), metadata=metadata)
