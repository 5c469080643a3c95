"""Kind ``tamper``: silent wrong results from a loadable artifact.

Every file under the artifact directory truncated, emptied, deleted, byte-flipped, replaced by the
seed-1 artifact's; config.json values edited; NaN, int64 and float64 weights written as proper
safetensors; registries edited with their fingerprints recomputed; .npy files mislabelled; IVF labels
out of range. Coherent edits are also tried with every recorded hash recomputed. Each tampered copy
is asked the world's queries (as printed, checksums masked) and, when it answers, its loaded model
is compared exactly with the untampered one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import files, snippets
from .case import Case, Ctx, Skip
from .verdicts import HELD, Verdict, judge, normalise_output, worst
from .world import QUERY_TIMEOUT, World, sig_key

#: A tampering: ``prepare(ctx, copy)`` edits the copy and returns the file names a refusal should name.
Prepare = Callable[[Ctx, Path], list[str]]


def ask_all(ctx: Ctx, art: Path, base: str, names: list[str]) -> Verdict:
    """The four queries on a tampered copy, each identical to the untampered answers or cleanly refused."""
    queries = ctx.world.queries(art)
    verdicts = []
    for q, argv in queries:
        run = ctx.cli(argv)
        run.stdout = normalise_output(run.stdout, art)
        verdicts.append(judge(run, expect="same", same=ctx.world.baseline[(base, q)], names=names, label=q))
    v = worst(verdicts)
    answered = [q for (q, _), x in zip(queries, verdicts, strict=True) if x.held and "identical" in x.detail]
    if v.held and answered:  # answers identical as printed (4 decimals): compare the loaded model exactly too
        sig = ctx.signature(art)
        ref = ctx.world.sigs[base]
        if sig.get("ok") and sig_key(sig) != sig_key(ref):
            parts = (
                ("pred", "predictions (exact float32)"),
                ("tables", "weights (bit for bit)"),
                ("seen", "seen pairs"),
                ("index", "index"),
            )
            what = ", ".join(label for key, label in parts if sig.get(key) != ref.get(key))
            return Verdict("silent wrong result", f"{', '.join(answered)} answered as printed, but the model loaded differs in its {what}")
    if v.held:
        refused = sum(1 for x in verdicts if x.detail.split(": ", 1)[-1].startswith("refused"))
        first = next((x.detail.split("refused: ", 1)[1][:150] for x in verdicts if "refused: " in x.detail), "")
        v = Verdict(HELD, f"{refused} of 4 queries refused cleanly, the others identical" + (f"; {first}" if refused else ""))
    return v


def tamper_case(name: str, prepare: Prepare, *, base: str = "A", kind: str = "tamper") -> Case:
    """A case: copy ``base``, ``prepare`` tampers with the copy, then :func:`ask_all`."""

    def fn(ctx: Ctx) -> Verdict:
        art = ctx.copy(base)
        return ask_all(ctx, art, base, prepare(ctx, art))

    return Case(kind, name, fn)


def manifest_variants(world: World) -> list[tuple[bool, str]]:
    """``(recompute the manifest, case-name suffix)``: without, and with when the artifact has one."""
    return [(False, "")] + ([(True, ", manifest recomputed")] if world.has_manifest else [])


def one_file(art: Path, name: str) -> Path:
    found = files.find_named(art, name)
    if not found:
        raise Skip(f"no {name} in this artifact")
    return found[-1]


def _configs(rewritten: list[str]) -> list[str]:
    """config.json when a rehash rewrote it (it records the edited file's checksum: an edited file too)."""
    return ["config.json"] if any(Path(r).name == "config.json" for r in rewritten) else []


def file_change(file: str, make: Callable[[Path], bytes], *, manifest: bool) -> Prepare:
    """The file named ``file`` replaced by ``make(path)``, every recorded hash recomputed when ``manifest``."""

    def prepare(ctx: Ctx, art: Path) -> list[str]:
        path = one_file(art, file)
        old = path.read_bytes()
        new = make(path)
        path.write_bytes(new)
        rewritten = files.rehash(art, [(path, old, new)], scope="manifest") if manifest else []
        return [file, *_configs(rewritten)]

    return prepare


def config_bytes(make: Callable[[bytes], bytes], *, manifest: bool, sparse_to: int = 0) -> Prepare:
    """Every config.json replaced by ``make(old bytes)`` (then NUL-padded to ``sparse_to`` bytes)."""

    def prepare(ctx: Ctx, art: Path) -> list[str]:
        edits = []
        for p in files.find_named(art, "config.json"):
            old = p.read_bytes()
            p.write_bytes(make(old))
            if sparse_to:
                files.truncate(p, sparse_to)
            edits.append((p, old, p.read_bytes() if manifest else b""))
        if not edits:
            raise Skip("no config.json")
        if manifest:
            files.rehash(art, edits, scope="manifest")
        return ["config.json"]

    return prepare


def config_change(change: Callable[[dict], object], *, manifest: bool) -> Prepare:
    """Every config.json's JSON changed by ``change`` (in place, or it returns a replacement)."""
    return config_bytes(lambda old: files.edited_json(old, change), manifest=manifest)


def _set_key(key: str, value_of: Callable[[object], object] | None) -> Callable[[dict], None]:
    """Set (``value_of`` None: delete) the first ``key`` found in the config tree."""

    def change(cfg: dict) -> None:
        holder = files.key_holder(cfg, key)
        if holder is None:
            raise Skip(f"config.json has no {key!r}")
        if value_of is None:
            del holder[key]
        else:
            holder[key] = value_of(holder[key])

    return change


def _parts_as_list(cfg: dict) -> None:
    index = cfg.get("index")
    if not isinstance(index, dict) or not isinstance(index.get("parts"), dict):
        raise Skip("config.json has no index.parts object")
    index["parts"] = [{"name": k, **v} for k, v in index["parts"].items()]


CONFIG_EDITS: list[tuple[str, Callable[[dict], object]]] = [
    ("n_factors missing", _set_key("n_factors", None)),
    ("n_factors 4 (the tensors have 8)", _set_key("n_factors", lambda v: 4)),
    ("n_factors 8.0 (a float)", _set_key("n_factors", lambda v: float(v))),
    ('n_factors "8" (a string)', _set_key("n_factors", lambda v: str(v))),
    ("n_user_rows + 1", _set_key("n_user_rows", lambda v: v + 1)),
    ("history: 5", _set_key("history", lambda v: 5)),
    ("index.parts a list", _parts_as_list),
    ("y_range null", _set_key("y_range", lambda v: None)),
    ("y_range [-Infinity, Infinity]", _set_key("y_range", lambda v: [float("-inf"), float("inf")])),
    ("y_range [NaN, NaN]", _set_key("y_range", lambda v: [float("nan"), float("nan")])),
    ("y_range reversed", _set_key("y_range", lambda v: list(reversed(v)))),
    ("schema_version 999", _set_key("schema_version", lambda v: 999)),
]


def _fingerprint(registry: dict) -> str:
    from collabemb.registry import IdRegistry

    return IdRegistry.from_dict(registry).fingerprint()


def registry_swap(file: str, *, fingerprint: str, manifest: bool) -> Prepare:
    """Swap the first two IDs of a registry (rows 1 and 2 trade places); ``fingerprint``: "none",
    "key" (the config's own fingerprint field) or "everywhere" (every copy in config.json, the index's too)."""

    def prepare(ctx: Ctx, art: Path) -> list[str]:
        path = one_file(art, file)
        old = path.read_bytes()
        new = files.edited_json(old, lambda reg: reg["ids"].__setitem__(slice(0, 2), reg["ids"][1::-1]))
        path.write_bytes(new)
        old_fp, new_fp = _fingerprint(json.loads(old)), _fingerprint(json.loads(new))
        edits = [(path, old, new)]
        names = [file]
        if fingerprint != "none":
            for cfg in files.find_named(art, "config.json"):
                before = cfg.read_bytes()
                if fingerprint == "everywhere":
                    cfg.write_bytes(before.replace(old_fp.encode(), new_fp.encode()))
                else:
                    obj = json.loads(before)
                    for key in [k for k, v in obj.items() if "fingerprint" in k and v == old_fp]:
                        obj[key] = new_fp
                    cfg.write_bytes(json.dumps(obj).encode())
                edits.append((cfg, before, cfg.read_bytes()))
            names.append("config.json")
        if manifest:
            files.rehash(art, edits, scope="manifest")
        return names

    return prepare


def tensors_change(change: Callable[[dict], dict], *, manifest: bool) -> Prepare:
    return file_change("tensors.safetensors", lambda p: files.changed_safetensors(p, change), manifest=manifest)


def _weight(tensors: dict, hint: str) -> str:
    names = [n for n in tensors if hint in n]
    if not names:
        raise Skip(f"no tensor named like {hint!r}")
    return names[0]


def _nan_item_row(t: dict) -> dict:
    name = _weight(t, "i_weight")
    t[name] = t[name].copy()
    t[name][3, :] = np.nan
    return t


def _inf_user_bias(t: dict) -> dict:
    name = _weight(t, "u_bias")
    t[name] = t[name].copy()
    t[name][5] = np.inf
    return t


def _as_dtype(dtype) -> Callable[[dict], dict]:
    return lambda t: {k: v.astype(dtype) for k, v in t.items()}


def header_claims(size: int, *, manifest: bool) -> Prepare:
    """The safetensors header length field set to ``size``."""
    return file_change("tensors.safetensors", lambda p: size.to_bytes(8, "little") + p.read_bytes()[8:], manifest=manifest)


def npy_change(file: str, make: Callable[[dict, bytes], bytes], *, manifest: bool) -> Prepare:
    return file_change(file, lambda p: make(*files.npy_parts(p.read_bytes())), manifest=manifest)


NPY_EDITS: list[tuple[str, str, Callable[[dict, bytes], bytes]]] = [
    ("seen_items.npy", "empty (0 items)", lambda h, raw: files.npy_bytes("<i4", (0,), b"")),
    ("seen_items.npy", "mislabelled big-endian ('>i4')", lambda h, raw: files.npy_bytes(">i4", h["shape"], raw)),
    ("seen_items.npy", "mislabelled unsigned ('<u4')", lambda h, raw: files.npy_bytes("<u4", h["shape"], raw)),
    ("seen_items.npy", "mislabelled float ('<f4')", lambda h, raw: files.npy_bytes("<f4", h["shape"], raw)),
    ("seen_items.npy", "header claims 10**10 items", lambda h, raw: files.npy_bytes(h["descr"], (10**10,), raw)),
    ("seen_indptr.npy", "int64 data labelled int32 (twice the rows)", lambda h, raw: files.npy_bytes("<i4", (h["shape"][0] * 2,), raw)),
]


def ivf_label(file: str, label_of: Callable[[World], int], *, checksum: bool, manifest: bool) -> Prepare:
    """An IVF index file with one stored label changed through FAISS (a valid index, lying labels)."""

    def prepare(ctx: Ctx, art: Path) -> list[str]:
        path = one_file(art, file)
        old = path.read_bytes()
        run = ctx.launcher.run(
            snippet=snippets.IVF_LABEL_SNIPPET, args=[str(path), label_of(ctx.world)], cwd=ctx.dir, timeout=QUERY_TIMEOUT
        )
        if run.rc != 0:
            raise Skip(f"could not edit the IVF labels: {run.short()}")
        edits = [(path, old, path.read_bytes())]
        rewritten = files.rehash(art, edits, scope="manifest" if manifest else "config") if checksum else []
        return [file, *_configs(rewritten)]

    return prepare


def _file_cases(world: World) -> list[Case]:
    """Every file of artifact A truncated, emptied, byte-flipped, deleted, replaced by the seed-1 artifact's."""
    a, b = world.arts["A"], world.arts["B"]
    cases: list[Case] = []
    for f in files.files_under(a):
        rel, size, fname = f.relative_to(a), f.stat().st_size, f.name
        label = files.normalise(str(rel))

        def named(op: Callable[[Path], object], rel=rel, fname=fname) -> Prepare:
            def prepare(ctx: Ctx, art: Path) -> list[str]:
                op(art / rel)
                return [fname]

            return prepare

        if size:
            cases.append(
                tamper_case(f"{label}: truncated to half ({size // 2} of {size} bytes)", named(lambda p, s=size: files.truncate(p, s // 2)))
            )
            cases.append(tamper_case(f"{label}: last byte cut", named(lambda p, s=size: files.truncate(p, s - 1))))
            cases.append(tamper_case(f"{label}: emptied", named(lambda p: files.truncate(p, 0))))
            for off in files.flip_offsets(size):
                cases.append(tamper_case(f"{label}: byte {off} of {size} flipped", named(lambda p, o=off: files.flip(p, o))))
        cases.append(tamper_case(f"{label}: deleted", named(lambda p: p.unlink())))
        other = files.counterpart(f, a, b)
        if other is not None and other.read_bytes() != f.read_bytes():
            cases.append(tamper_case(f"{label}: replaced by the seed-1 artifact's", named(lambda p, o=other: shutil.copyfile(o, p))))
        elif other is not None:
            world.notes.append(f"{label}: the seed-1 artifact's file is byte-identical (replacement case not run)")
    return cases


def tamper_cases(world: World) -> list[Case]:
    cases = _file_cases(world)
    variants = manifest_variants(world)
    cfg = json.loads(files.find_named(world.arts["A"], "config.json")[-1].read_bytes())
    for label, change in CONFIG_EDITS:
        try:
            change(json.loads(json.dumps(cfg)))
        except Skip as exc:
            world.notes.append(f"config edit {label!r} not applicable: {exc}")
            continue
        for manifest, suffix in variants:
            cases.append(tamper_case(f"config.json: {label}{suffix}", config_change(change, manifest=manifest)))
    for base, key in (("A_HNSW", "ef_search"), ("A_IVF", "nprobe"), ("A_IVF", "nlist")):
        change = _set_key(key, lambda v: 2**40)
        try:
            change(json.loads(files.find_named(world.arts[base], "config.json")[-1].read_bytes()))
        except Skip as exc:
            world.notes.append(f"config edit {key} 2**40 not applicable: {exc}")
            continue
        for manifest, suffix in variants:
            cases.append(tamper_case(f"{base} config.json: {key} 2**40{suffix}", config_change(change, manifest=manifest), base=base))
    deep = b'{"a":' * 200_000 + b"1" + b"}" * 200_000
    for manifest, suffix in variants:
        cases.append(tamper_case(f"config.json: nested 200,000 deep{suffix}", config_bytes(lambda old: deep, manifest=manifest)))
        cases.append(
            tamper_case(f"config.json: 256 MiB (NUL-padded){suffix}", config_bytes(lambda old: old, manifest=manifest, sparse_to=1 << 28))
        )
        cases.append(
            tamper_case(
                f"config.json: 80 MB of spaces after the object (valid JSON){suffix}",
                config_bytes(lambda old: old + b" " * 80_000_000, manifest=manifest),
            )
        )
        for label, change in [
            ("one item row NaN", _nan_item_row),
            ("one user bias +inf", _inf_user_bias),
            ("weights stored as int64", _as_dtype(np.int64)),
            ("weights stored as float64 (same values)", _as_dtype(np.float64)),
        ]:
            cases.append(tamper_case(f"tensors.safetensors: {label}{suffix}", tensors_change(change, manifest=manifest)))
        cases.append(
            tamper_case(f"tensors.safetensors: header length field claims 2**40 bytes{suffix}", header_claims(2**40, manifest=manifest))
        )
        for file, label, make in NPY_EDITS:
            cases.append(tamper_case(f"{file}: {label}{suffix}", npy_change(file, make, manifest=manifest)))
    cases.append(tamper_case("items.json: first two IDs swapped", registry_swap("items.json", fingerprint="none", manifest=False)))
    for fp, what in (("key", "config's item_fingerprint recomputed"), ("everywhere", "every item fingerprint in config.json recomputed")):
        for manifest, suffix in variants:
            cases.append(
                tamper_case(
                    f"items.json: first two IDs swapped, {what}{suffix}", registry_swap("items.json", fingerprint=fp, manifest=manifest)
                )
            )
    for manifest, suffix in variants:
        cases.append(
            tamper_case(
                f"users.json: first two IDs swapped, every user fingerprint in config.json recomputed{suffix}",
                registry_swap("users.json", fingerprint="everywhere", manifest=manifest),
            )
        )
    big = lambda w: 10**9  # noqa: E731
    past_end = lambda w: len(w.item_ids) + 5  # noqa: E731
    cases.append(
        tamper_case(
            "IVF index-items.faiss: a label set to 10**9 (file checksum not recomputed)",
            ivf_label("index-items.faiss", big, checksum=False, manifest=False),
            base="A_IVF",
        )
    )
    for manifest, suffix in variants:
        cases.append(
            tamper_case(
                f"IVF index-items.faiss: a label set to 10**9, file checksum recomputed{suffix}",
                ivf_label("index-items.faiss", big, checksum=True, manifest=manifest),
                base="A_IVF",
            )
        )
        cases.append(
            tamper_case(
                f"IVF index-recommend.faiss: a label set to n_items + 5, file checksum recomputed{suffix}",
                ivf_label("index-recommend.faiss", past_end, checksum=True, manifest=manifest),
                base="A_IVF",
            )
        )
    return cases


def control_cases(world: World) -> list[tuple[Case, str]]:
    """The harness's own controls, with the outcome each must have: an untampered copy must hold, a copy
    with the seed-1 tensors (every recorded hash recomputed) must give a silent wrong result, and so must
    one with a single low mantissa bit flipped (invisible as printed: the exact comparison must see it)."""

    def low_bit(path: Path) -> bytes:
        new = bytearray(path.read_bytes())
        new[8 + int.from_bytes(new[:8], "little") + 4 * 700] ^= 0x01  # a float's lowest mantissa byte, past the header
        return bytes(new)

    seed1 = lambda p: one_file(world.arts["B"], "tensors.safetensors").read_bytes()  # noqa: E731
    return [
        (tamper_case("control: untampered copy", lambda ctx, art: ["config.json"]), HELD),
        (
            tamper_case("control: seed-1 tensors, hashes recomputed", file_change("tensors.safetensors", seed1, manifest=True)),
            "silent wrong result",
        ),
        (
            tamper_case("control: one low mantissa bit, hashes recomputed", file_change("tensors.safetensors", low_bit, manifest=True)),
            "silent wrong result",
        ),
    ]
