def ask_all(ctx: Ctx, art: Path, base: str, names: list[str]) -> Verdict:
    """The four queries on a tampered copy, each identical to the untampered answers or cleanly refused."""
    verdicts = []
    for q, argv in queries(ctx.world, art):
        run = ctx.cli(argv)
        run.stdout = normalise_output(run.stdout, art)
        verdicts.append(judge(run, expect="same", same=ctx.world.baseline[(base, q)], names=names, label=q))
    v = worst(verdicts)
    answered = [q for (q, _), x in zip(queries(ctx.world, art), verdicts, strict=True) if x.held and "identical" in x.detail]
    if v.held and answered:  # answers identical as printed (4 decimals): compare the loaded model exactly too
        sig = ctx.signature(art)
        if sig.get("ok") and _sig_key(sig) != _sig_key(ctx.world.sigs[base]):
            ref = ctx.world.sigs[base]
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
        v = Verdict(
            HELD, f"{refused} of 4 queries refused cleanly, the others identical" + (f"; {_first_refusal(verdicts)}" if refused else "")
        )
    return v


def _first_refusal(verdicts: list[Verdict]) -> str:
    for v in verdicts:
        if "refused: " in v.detail:
            return v.detail.split("refused: ", 1)[1][:150]
    return ""


def tamper_case(name: str, prepare: Callable[[Path], list[str]], *, base: str = "A", kind: str = "tamper") -> Case:
    """A case: copy ``base``, ``prepare(copy)`` tampers it and returns the file names a refusal should name."""

    def fn(ctx: Ctx) -> Verdict:
        art = ctx.copy(base)
        try:
            names = prepare(art)
        except Skip as exc:
            return Verdict(HELD, f"not applicable: {exc}")
        return ask_all(ctx, art, base, names)

    return Case(kind, name, fn)


def _one(art: Path, name: str) -> Path:
    found = hc.find_named(art, name)
    if not found:
        raise Skip(f"no {name} in this artifact")
    return found[-1]


def config_change(change: Callable[[dict], object], *, manifest: bool) -> Callable[[Path], list[str]]:
    def prepare(art: Path) -> list[str]:
        edits = [(p, *hc.edit_json(p, change)) for p in hc.find_named(art, "config.json")]
        if not edits:
            raise Skip("no config.json")
        if manifest:
            hc.rehash(art, edits, scope="manifest")
        return ["config.json"]

    return prepare


def config_bytes(make: Callable[[bytes], bytes], *, manifest: bool, sparse_to: int = 0) -> Callable[[Path], list[str]]:
    def prepare(art: Path) -> list[str]:
        edits = []
        for p in hc.find_named(art, "config.json"):
            old = p.read_bytes()
            p.write_bytes(make(old))
            if sparse_to:
                hc.sparse_pad(p, sparse_to)
            edits.append((p, old, p.read_bytes() if manifest else b""))
        if not edits:
            raise Skip("no config.json")
        if manifest:
            hc.rehash(art, edits, scope="manifest")
        return ["config.json"]

    return prepare


def _set_key(key: str, value_of: Callable[[object], object], *, delete: bool = False) -> Callable[[dict], object]:
    """Set (or delete) the first ``key`` found in the config tree."""

    def change(cfg: dict) -> None:
        paths = list(hc.json_paths(cfg, key))
        if not paths:
            raise Skip(f"config.json has no {key!r}")
        path = paths[0]
        parent = hc.get_path(cfg, path[:-1])
        if delete:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value_of(parent[path[-1]])

    return change


def _parts_as_list(cfg: dict) -> None:
    index = cfg.get("index")
    if not isinstance(index, dict) or not isinstance(index.get("parts"), dict):
        raise Skip("config.json has no index.parts object")
    index["parts"] = [{"name": k, **v} for k, v in index["parts"].items()]


CONFIG_EDITS: list[tuple[str, Callable[[dict], object]]] = [
    ("n_factors missing", _set_key("n_factors", None, delete=True)),
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


def _deep(old: bytes) -> bytes:
    return b'{"a":' * 200_000 + b"1" + b"}" * 200_000


def _fingerprint(registry: dict) -> str:
    try:
        from collabemb.registry import IdRegistry

        return IdRegistry.from_dict(registry).fingerprint()
    except Exception:  # the package's own function is preferred; this is its algorithm at the time of writing
        import hashlib

        h = hashlib.sha256(str(registry["id_type"]).encode())
        h.update(json.dumps(registry["ids"], ensure_ascii=True).encode())
        return h.hexdigest()[:16]


def registry_swap(file: str, *, fingerprint: str, manifest: bool) -> Callable[[Path], list[str]]:
    """Swap the first two IDs of a registry (rows 1 and 2 trade places); ``fingerprint``: "none",
    "key" (the config's own fingerprint field) or "everywhere" (every copy in config.json, the index's too)."""

    def prepare(art: Path) -> list[str]:
        path = _one(art, file)
        old_reg = json.loads(path.read_bytes())
        old_fp = _fingerprint(old_reg)
        old, new = hc.edit_json(path, lambda reg: reg["ids"].__setitem__(slice(0, 2), reg["ids"][1::-1]))
        new_fp = _fingerprint(json.loads(new))
        edits = [(path, old, new)]
        names = [file]
        if fingerprint != "none":
            for cfg in hc.find_named(art, "config.json"):
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
            hc.rehash(art, edits, scope="manifest")
        return names

    return prepare


def tensors_change(change: Callable[[dict], dict], *, manifest: bool) -> Callable[[Path], list[str]]:
    def prepare(art: Path) -> list[str]:
        path = _one(art, "tensors.safetensors")
        old, new = hc.rewrite_safetensors(path, change)
        rewritten = hc.rehash(art, [(path, old, new)], scope="manifest") if manifest else []
        return ["tensors.safetensors", *_configs(rewritten)]

    return prepare


def _configs(rewritten: list[str]) -> list[str]:
    """config.json when a rehash rewrote it (it records the edited file's checksum: an edited file too)."""
    return ["config.json"] if any(Path(r).name == "config.json" for r in rewritten) else []


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


def header_claims(size: int, *, manifest: bool) -> Callable[[Path], list[str]]:
    def prepare(art: Path) -> list[str]:
        path = _one(art, "tensors.safetensors")
        old = path.read_bytes()
        new = size.to_bytes(8, "little") + old[8:]
        path.write_bytes(new)
        rewritten = hc.rehash(art, [(path, old, new)], scope="manifest") if manifest else []
        return ["tensors.safetensors", *_configs(rewritten)]

    return prepare


def npy_change(file: str, make: Callable[[dict, bytes], bytes], *, manifest: bool) -> Callable[[Path], list[str]]:
    def prepare(art: Path) -> list[str]:
        path = _one(art, file)
        old = path.read_bytes()
        header, raw = hc.npy_parts(old)
        new = make(header, raw)
        path.write_bytes(new)
        rewritten = hc.rehash(art, [(path, old, new)], scope="manifest") if manifest else []
        return [file, *_configs(rewritten)]

    return prepare


NPY_EDITS: list[tuple[str, str, Callable[[dict, bytes], bytes]]] = [
    ("seen_items.npy", "empty (0 items)", lambda h, raw: hc.npy_bytes("<i4", (0,), b"")),
    ("seen_items.npy", "mislabelled big-endian ('>i4')", lambda h, raw: hc.npy_bytes(">i4", h["shape"], raw)),
    ("seen_items.npy", "mislabelled unsigned ('<u4')", lambda h, raw: hc.npy_bytes("<u4", h["shape"], raw)),
    ("seen_items.npy", "mislabelled float ('<f4')", lambda h, raw: hc.npy_bytes("<f4", h["shape"], raw)),
    ("seen_items.npy", "header claims 10**10 items", lambda h, raw: hc.npy_bytes(h["descr"], (10**10,), raw)),
    ("seen_indptr.npy", "int64 data labelled int32 (twice the rows)", lambda h, raw: hc.npy_bytes("<i4", (h["shape"][0] * 2,), raw)),
]


def ivf_label(file: str, label_of: Callable[[World], int], *, checksum: bool, manifest: bool) -> Callable[[Path], list[str]]:
    """An IVF index file with one stored label changed through FAISS (a valid index, lying labels)."""

    def prepare(art: Path, ctx: Ctx) -> list[str]:
        path = _one(art, file)
        old = path.read_bytes()
        run = ctx.launcher.run(snippet=hc.IVF_LABEL_SNIPPET, args=[str(path), label_of(ctx.world)], cwd=ctx.dir, timeout=QUERY_TIMEOUT)
        if run.rc != 0:
            raise Skip(f"could not edit the IVF labels: {run.short()}")
        edits = [(path, old, path.read_bytes())]
        rewritten = hc.rehash(art, edits, scope="manifest" if manifest else "config") if checksum else []
        return [file, *_configs(rewritten)]

    return prepare


def ivf_case(name: str, prepare) -> Case:
    def fn(ctx: Ctx) -> Verdict:
        art = ctx.copy("A_IVF")
        try:
            names = prepare(art, ctx)
        except Skip as exc:
            return Verdict(HELD, f"not applicable: {exc}")
        return ask_all(ctx, art, "A_IVF", names)

    return Case("tamper", name, fn)


def tamper_cases(world: World) -> list[Case]:
    a, b = world.arts["A"], world.arts["B"]
    cases: list[Case] = []
    for f in hc.files_under(a):
        rel, size, fname = f.relative_to(a), f.stat().st_size, f.name
        label = hc.normalise(str(rel))

        def named(op, rel=rel, fname=fname):
            def prepare(art: Path) -> list[str]:
                op(art / rel)
                return [fname]

            return prepare

        if size:
            cases.append(
                tamper_case(f"{label}: truncated to half ({size // 2} of {size} bytes)", named(lambda p, s=size: hc.truncate(p, s // 2)))
            )
            cases.append(tamper_case(f"{label}: last byte cut", named(lambda p, s=size: hc.truncate(p, s - 1))))
            cases.append(tamper_case(f"{label}: emptied", named(lambda p: hc.truncate(p, 0))))
            for off in hc.flip_offsets(size):
                cases.append(tamper_case(f"{label}: byte {off} of {size} flipped", named(lambda p, o=off: hc.flip(p, o))))
        cases.append(tamper_case(f"{label}: deleted", named(lambda p: p.unlink())))
        other = hc.counterpart(f, a, b)
        if other is not None and other.read_bytes() != f.read_bytes():
            cases.append(tamper_case(f"{label}: replaced by the seed-1 artifact's", named(lambda p, o=other: shutil.copyfile(o, p))))
        elif other is not None:
            world.notes.append(f"{label}: the seed-1 artifact's file is byte-identical (replacement case not run)")

    variants = [(False, "")] + ([(True, ", manifest recomputed")] if world.has_manifest else [])
    cfg = json.loads(hc.find_named(a, "config.json")[-1].read_bytes())
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
            change(json.loads(hc.find_named(world.arts[base], "config.json")[-1].read_bytes()))
        except Skip as exc:
            world.notes.append(f"config edit {key} 2**40 not applicable: {exc}")
            continue
        for manifest, suffix in variants:
            cases.append(tamper_case(f"{base} config.json: {key} 2**40{suffix}", config_change(change, manifest=manifest), base=base))
    for manifest, suffix in variants:
        cases.append(tamper_case(f"config.json: nested 200,000 deep{suffix}", config_bytes(_deep, manifest=manifest)))
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
        ivf_case(
            "IVF index-items.faiss: a label set to 10**9 (file checksum not recomputed)",
            ivf_label("index-items.faiss", big, checksum=False, manifest=False),
        )
    )
    for manifest, suffix in variants:
        cases.append(
            ivf_case(
                f"IVF index-items.faiss: a label set to 10**9, file checksum recomputed{suffix}",
                ivf_label("index-items.faiss", big, checksum=True, manifest=manifest),
            )
        )
        cases.append(
            ivf_case(
                f"IVF index-recommend.faiss: a label set to n_items + 5, file checksum recomputed{suffix}",
                ivf_label("index-recommend.faiss", past_end, checksum=True, manifest=manifest),
            )
        )
    return cases
