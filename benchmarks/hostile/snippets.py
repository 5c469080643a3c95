"""The source text of the Python snippets the harness runs as child processes (``python -c``, or exec in a forked interpreter).

An audit hook that kills or interrupts a command at its Nth write, an artifact signature, a reader
and a writer for the concurrency cases, an IVF label editor. Each reads its arguments from sys.argv.
"""

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

#: What the signature and the reader compare: hashes of the predictions over fixed pairs (exact
#: float32) and of the stored training pairs; the predictions too.
_HASHES = r"""
import hashlib, json, sys
import numpy as np
def pred_and_seen(fitted, pairs):
    pred = fitted.predict(pairs["users"], pairs["items"])["prediction"].to_numpy()
    seen = fitted.seen_items
    seen_bytes = np.asarray(seen.indptr, np.int64).tobytes() + np.asarray(seen.indices, np.int32).tobytes()
    return [hashlib.sha256(pred.astype(np.float32).tobytes()).hexdigest()[:16], hashlib.sha256(seen_bytes).hexdigest()[:16]], pred
"""

#: argv: ARTIFACT PAIRS_JSON. Prints one JSON line: a signature of what the artifact answers
#: (predictions over fixed pairs, the stored training pairs, the weight and bias tables bit for
#: bit, whether it has an index), or the error.
SIGNATURE_SNIPPET = (
    _HASHES
    + r"""
pairs = json.load(open(sys.argv[2]))
try:
    from collabemb import load_model
    fitted = load_model(sys.argv[1])
    (pred_hash, seen_hash), pred = pred_and_seen(fitted, pairs)
    tables = hashlib.sha256()
    for table in ("user", "item"):
        for array in fitted.tables(table):
            tables.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    out = {"ok": True, "pred": pred_hash, "seen": seen_hash,
           "tables": tables.hexdigest()[:16], "index": fitted.index is not None, "finite": bool(np.isfinite(pred).all())}
except Exception as exc:
    try:
        from collabemb.cli_options import expected_errors
        clean = isinstance(exc, expected_errors())
    except Exception:
        clean = isinstance(exc, (ValueError, TypeError, OSError))
    out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300], "type": type(exc).__name__, "clean": clean}
print(json.dumps(out))
"""
)

#: argv: ARTIFACT PAIRS_JSON SIGS_JSON STOP_FILE SECONDS. Loads in a loop until STOP_FILE exists
#: (at most SECONDS); classifies each load against the two known signatures.
READER_SNIPPET = (
    _HASHES
    + r"""
import os, time
from collabemb import load_model
pairs = json.load(open(sys.argv[2])); sigs = json.load(open(sys.argv[3])); stop = sys.argv[4]; limit = float(sys.argv[5])
counts = {"a": 0, "b": 0, "mixed": 0, "failed": 0}; errors = {}; examples = []
t0 = time.monotonic()
while not os.path.exists(stop) and time.monotonic() - t0 < limit:
    try:
        sig, _ = pred_and_seen(load_model(sys.argv[1]), pairs)
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
)

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
