"""The hostile material of benchmarks/robustness.py: data, file tampering, and the snippets its child processes run.

Nothing here imports collabemb: these are bytes-level tools (generate ratings, truncate / flip /
replace files, rewrite a safetensors or .npy file, recompute checksums the way an attacker who
edits an artifact coherently would) and the source text of the Python snippets that the harness
runs as child processes (an audit hook that kills or interrupts a command at its Nth write, an
artifact signature, a reader and a writer for the concurrency cases). Everything is
deterministic: seeded data, fixed offsets, sorted file lists.
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
from collections.abc import Callable, Iterator
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


def ratings_csv(rows, *, timestamp: bool = False, header: str | None = None) -> str:
    head = header if header is not None else ("user,item,rating,timestamp" if timestamp else "user,item,rating")
    body = [f"{u},{i},{r},{t}" if timestamp else f"{u},{i},{r}" for u, i, r, t in rows]
    return head + "\n" + "\n".join(body) + "\n"


def with_line(text: str, line_no: int, new_line: str) -> str:
    """``text`` with physical line ``line_no`` (1-based, the header is line 1) replaced."""
    lines = text.split("\n")
    lines[line_no - 1] = new_line
    return "\n".join(lines)


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


def flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def flip_offsets(size: int) -> list[int]:
    """Deterministic offsets: first byte, a third, the middle, last byte."""
    return sorted({0, size // 3, size // 2, size - 1}) if size else []


def truncate(path: Path, size: int) -> None:
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


def edit_json(path: Path, change: Callable[[dict], object]) -> tuple[bytes, bytes]:
    """Apply ``change`` to the parsed JSON of ``path`` (it edits in place or returns a replacement)."""
    old = path.read_bytes()
    obj = json.loads(old)
    result = change(obj)
    new = json.dumps(obj if result is None else result).encode()
    path.write_bytes(new)
    return old, new


def json_paths(node, key: str, prefix: tuple = ()) -> Iterator[tuple]:
    """Paths (tuples of keys) to every ``key`` in a JSON tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield (*prefix, k)
            yield from json_paths(v, key, (*prefix, k))


def get_path(node, path: tuple):
    for k in path:
        node = node[k]
    return node


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


def npy_bytes(descr: str, shape: tuple, raw: bytes, fortran_order: bool = False) -> bytes:
    """A version-1.0 .npy file with this header over ``raw``, whatever they say: mislabelled on purpose."""
    header = repr({"descr": descr, "fortran_order": fortran_order, "shape": tuple(shape)})
    pad = 64 - (10 + len(header) + 1) % 64
    text = (header + " " * (pad % 64) + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + raw


def rewrite_safetensors(path: Path, change: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> tuple[bytes, bytes]:
    """Load every tensor, apply ``change``, save a proper safetensors file with the same metadata."""
    from safetensors import safe_open
    from safetensors.numpy import save

    old = path.read_bytes()
    with safe_open(str(path), framework="np") as fh:
        metadata = fh.metadata()
        tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    new = save(change(tensors), metadata=metadata)
    path.write_bytes(new)
    return old, new


# --- snippets run as child processes (python -c, or exec in a forked interpreter) ---------------------

#: argv: ROOT N SIGNAL LOG MATCH ENTRY -- CLI ARGS... (ENTRY: the console script's ``module:function``,
#: called as the script calls it). Counts write-opens, renames/replaces, removes,
#: rmtree, mkdir/rmdir under ROOT (or, with MATCH, any open of a path ending in MATCH); at the Nth
#: sends SIGNAL to itself, or with SIGNAL 0 sleeps 3 s (N=0: only log). Each counted event is logged as a JSON line to LOG.
AUDIT_SNIPPET = r"""
import json, os, signal, sys
_root = os.path.realpath(sys.argv[1]); _n = int(sys.argv[2]); _sig = int(sys.argv[3])
_log = os.open(sys.argv[4], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644); _match = sys.argv[5]
_argv = sys.argv[sys.argv.index("--") + 1:]
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_state = {"count": 0, "busy": False, "fired": False}
def _path(p, dir_fd=None):
    if isinstance(p, int) or p is None:
        return None
    p = os.fsdecode(p)
    if dir_fd is not None and not os.path.isabs(p):
        try:
            p = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), p)
        except OSError:
            return None
    return os.path.realpath(p)
def _inside(p):
    return p is not None and (p == _root or p.startswith(_root + os.sep))
def _hook(event, args):
    if _state["busy"] or _state["fired"]:
        return
    _state["busy"] = True
    try:
        what = None
        if event == "open":
            path, mode, flags = args
            p = _path(path)
            if _match:
                if p is not None and p.endswith(_match):
                    what = p
            elif _inside(p) and ((mode is not None and any(c in mode for c in "wax+")) or (mode is None and flags & _WRITE)):
                what = p
        elif not _match and event in ("os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.symlink", "os.link", "os.truncate"):
            dir_fd = args[-1] if event in ("os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree") and isinstance(args[-1], int) else None
            p = _path(args[0], dir_fd)
            if _inside(p):
                what = p if event not in ("os.rename", "os.symlink", "os.link") else f"{p} -> {_path(args[1])}"
        if what is None:
            return
        _state["count"] += 1
        rel = what.replace(_root + os.sep, "").replace(_root, ".")
        os.write(_log, (json.dumps({"n": _state["count"], "event": event, "path": rel}) + "\n").encode())
        if _state["count"] == _n:
            _state["fired"] = True
            if _sig:
                os.kill(os.getpid(), _sig)
            else:
                import time
                time.sleep(3.0)
    finally:
        _state["busy"] = False
sys.addaudithook(_hook)
import importlib
_module, _func = sys.argv[6].split(":")
sys.argv = ["collabemb", *_argv]
sys.exit(getattr(importlib.import_module(_module), _func)())
"""

#: argv: ARTIFACT PAIRS_JSON. Prints one JSON line: a signature of what the artifact answers
#: (predictions over fixed pairs, the stored training pairs, the weight and bias tables bit for
#: bit, whether it has an index), or the error.
SIGNATURE_SNIPPET = r"""
import hashlib, json, sys
import numpy as np
pairs = json.load(open(sys.argv[2]))
try:
    from collabemb import load_model
    fitted = load_model(sys.argv[1])
    pred = fitted.predict(pairs["users"], pairs["items"])["prediction"].to_numpy()
    seen = fitted.seen_items
    seen_hash = hashlib.sha256(np.asarray(seen.indptr, np.int64).tobytes() + np.asarray(seen.indices, np.int32).tobytes()).hexdigest()[:16]
    tables = hashlib.sha256()
    for table in ("user", "item"):
        for array in fitted.tables(table):
            tables.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    out = {"ok": True, "pred": hashlib.sha256(pred.astype(np.float32).tobytes()).hexdigest()[:16], "seen": seen_hash,
           "tables": tables.hexdigest()[:16], "index": fitted.index is not None, "finite": bool(np.isfinite(pred).all()),
           "epochs": len(fitted.history.epoch)}
except Exception as exc:
    try:
        from collabemb.cli_options import expected_errors
        clean = isinstance(exc, expected_errors())
    except Exception:
        clean = isinstance(exc, (ValueError, TypeError, OSError))
    out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300], "type": type(exc).__name__, "clean": clean}
print(json.dumps(out))
"""

#: argv: ARTIFACT PAIRS_JSON SIGS_JSON STOP_FILE SECONDS. Loads in a loop until STOP_FILE exists
#: (at most SECONDS); classifies each load against the two known signatures.
READER_SNIPPET = r"""
import hashlib, json, os, sys, time
import numpy as np
from collabemb import load_model
pairs = json.load(open(sys.argv[2])); sigs = json.load(open(sys.argv[3])); stop = sys.argv[4]; limit = float(sys.argv[5])
counts = {"a": 0, "b": 0, "mixed": 0, "failed": 0}; errors = {}; examples = []
t0 = time.monotonic()
while not os.path.exists(stop) and time.monotonic() - t0 < limit:
    try:
        fitted = load_model(sys.argv[1])
        pred = fitted.predict(pairs["users"], pairs["items"])["prediction"].to_numpy()
        seen = fitted.seen_items
        sig = [hashlib.sha256(pred.astype(np.float32).tobytes()).hexdigest()[:16],
               hashlib.sha256(np.asarray(seen.indptr, np.int64).tobytes() + np.asarray(seen.indices, np.int32).tobytes()).hexdigest()[:16]]
        if sig == sigs["a"]:
            counts["a"] += 1
        elif sig == sigs["b"]:
            counts["b"] += 1
        else:
            counts["mixed"] += 1
            if len(examples) < 3:
                examples.append(f"pred of {'a' if sig[0] == sigs['a'][0] else 'b' if sig[0] == sigs['b'][0] else '?'}, "
                                f"seen of {'a' if sig[1] == sigs['a'][1] else 'b' if sig[1] == sigs['b'][1] else '?'}")
    except Exception as exc:
        counts["failed"] += 1
        key = type(exc).__name__
        errors.setdefault(key, f"{key}: {exc}"[:200])
print(json.dumps({"counts": counts, "errors": errors, "examples": examples}))
"""

#: argv: SOURCE_ARTIFACT TARGET N. Loads SOURCE once, then saves it to TARGET N times (a save
#: refused because another writer holds TARGET is retried, and counted).
WRITER_SNIPPET = r"""
import json, sys, time
from collabemb import load_model, save_model
fitted = load_model(sys.argv[1]); target = sys.argv[2]; n = int(sys.argv[3])
done, refused, errors = 0, 0, {}
t0 = time.monotonic()
while done < n and time.monotonic() - t0 < 60:
    try:
        save_model(fitted, target)
        done += 1
    except Exception as exc:
        refused += 1
        errors.setdefault(type(exc).__name__, f"{type(exc).__name__}: {exc}"[:200])
        time.sleep(0.005)
print(json.dumps({"saved": done, "refused": refused, "errors": errors}))
"""

#: argv: FAISS_FILE LABEL. Sets the first stored label of the first non-empty inverted list of an
#: IVF index file to LABEL (through FAISS, so the file stays a valid index).
IVF_LABEL_SNIPPET = r"""
import sys
import faiss, numpy as np
path, label = sys.argv[1], int(sys.argv[2])
index = faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
ivf = faiss.extract_index_ivf(index)
inv = ivf.invlists
for l in range(ivf.nlist):
    if inv.list_size(l):
        code = faiss.rev_swig_ptr(inv.get_single_code(l, 0), inv.code_size).copy()
        inv.update_entry(l, 0, label, faiss.swig_ptr(code))
        break
else:
    sys.exit("no stored vector")
faiss.serialize_index(index).tofile(path)
print(f"list {l}: label set to {label}")
"""


def write_text(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", newline="")
    else:
        path.write_bytes(text)
    return path


def sparse_pad(path: Path, size: int) -> None:
    """Extend ``path`` to ``size`` bytes with NULs (a sparse file: no disk used)."""
    with open(path, "r+b") as fh:
        fh.truncate(size)


def chmod_tree(root: Path, mode_dirs: int = 0o755) -> None:
    """Make ``root`` and everything in it readable by others (the permission cases run as nobody)."""
    os.chmod(root, mode_dirs)
    for p in root.rglob("*"):
        if p.is_dir():
            os.chmod(p, mode_dirs)
        elif p.is_file():
            os.chmod(p, 0o644)
