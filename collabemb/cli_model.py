"""The commands that use a fitted model: ``collabemb predict | evaluate | info | export | plot | similar |
recommend | index | serve | explore``, each ``cmd_NAME(args)`` taking the parsed arguments of
:mod:`collabemb.cli`, which builds the parser and reports errors. Standard library at import, as the
parser; every command imports the library modules it needs when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from collabemb.cli_options import read_options, writing


def load_artifact(artifact: str):
    """The fitted model saved in the artifact directory ``artifact``."""
    from collabemb.artifact import load_model

    return load_model(artifact)


def cmd_predict(args: argparse.Namespace) -> int:
    from collabemb.inputs import read_pairs

    fitted = load_artifact(args.artifact)
    id_types = {"user_id_type": fitted.users.id_type, "item_id_type": fitted.items.id_type}
    pairs = read_pairs(args.pairs, user_col=args.user_col, item_col=args.item_col, sep=args.sep, **id_types)
    _show(fitted.predict(pairs["user"], pairs["item"], unknown=args.unknown), args, table=False)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numbers

    from collabemb.inputs import read_ratings_for
    from collabemb.metrics import evaluate

    fitted = load_artifact(args.artifact)
    test = read_ratings_for(fitted, args.test, **read_options(args))  # each ID column in its registry's type
    train = read_ratings_for(fitted, args.train, **read_options(args)) if args.train else None
    threshold, why = args.threshold, ""
    if threshold is None and fitted.identity.threshold is not None:
        threshold, why = float(fitted.identity.threshold), " (the model's training threshold)"
    results = evaluate(fitted, test, train=train, k=args.k, threshold=threshold, exclude_seen=not args.include_seen)
    seen = f"excluded (from {args.train})" if train is not None else f"excluded (the artifact's {len(fitted.seen_items)} training pairs)"
    seen = "not excluded (--include-seen)" if args.include_seen else seen
    relevant = f"rating >= {threshold:g}{why}" if threshold is not None else "every test row"
    print(f"model     {fitted.identity.family}: {len(fitted.users)} users, {len(fitted.items)} items, {fitted.n_factors} factors")
    print(f"test      {len(test)} rows from {test.source}, {test.frame['user'].nunique()} users; relevant: {relevant}")
    print(f"seen      training items {seen}")
    print()
    print(f"{'metric':<20}{'value':>8}")
    for name, value in results.items():
        print(f"{name:<20}{value:>8}" if isinstance(value, numbers.Integral) else f"{name:<20}{value:>8.4f}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from collabemb.artifact import read_config, read_model_card
    from collabemb.model_card import info_report

    fitted = load_artifact(args.artifact)
    print(info_report(fitted, read_config(args.artifact), Path(args.artifact).resolve(), read_model_card(args.artifact)))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    t0, target = time.perf_counter(), Path(args.out)
    stream = args.out == "-" or (target.exists() and not target.is_file() and not target.is_dir())  # stdout, a pipe, a device
    if stream and args.format in ("npy", "projector"):
        raise ValueError(f"--out {args.out}: a {args.format} export is a directory; only csv and parquet can be streamed")
    if args.metadata and args.stored_metadata:
        raise ValueError("give --metadata or --stored-metadata, not both")
    from collabemb.export import write_embeddings
    from collabemb.inputs import read_item_metadata

    fitted = load_artifact(args.artifact)
    registry = fitted.registry(args.table)
    metadata, id_col = (True, None) if args.stored_metadata else (None, None)
    if args.metadata:  # read_item_metadata names the ID column "item", whatever the table
        metadata, id_col = read_item_metadata(args.metadata, id_col=args.metadata_id_col or args.table, id_type=registry.id_type), "item"
    options = {"format": args.format or ("csv" if stream else None), "unknown_row": args.unknown_row, "digits": args.digits}
    with tempfile.TemporaryDirectory() as tmp:  # a stream gets the finished file: never a rename onto a device
        out = write_embeddings(
            fitted, Path(tmp) / "export" if stream else target, args.table, metadata=metadata, metadata_id_col=id_col, **options
        )
        if stream:
            sys.stdout.flush()
            with open(sys.stdout.fileno() if args.out == "-" else target, "wb", closefd=args.out != "-") as sink:
                sink.write(out.read_bytes())
    rows, row0 = len(registry) + (1 if args.unknown_row else 0), " (row 0, the unknown slot, first)" if args.unknown_row else ""
    said = f"wrote {rows} {args.table} rows{row0} x {fitted.n_factors} factors + bias to {args.out if stream else out}"
    print(f"{said} in {time.perf_counter() - t0:.2f} s", file=sys.stderr if stream else sys.stdout)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from collabemb.inputs import read_item_metadata, read_ratings_for
    from collabemb.plots import plot_bias, plot_history, plot_pca

    fitted = load_artifact(args.artifact)
    ratings = read_ratings_for(fitted, args.ratings, **read_options(args)) if args.ratings else None
    metadata = read_item_metadata(args.metadata, id_col=args.metadata_id_col, id_type=fitted.items.id_type) if args.metadata else None
    common = {"ratings": ratings, "metadata": metadata, "label_col": args.label_col, "out": args.out}
    if args.plot == "pca":
        plot_pca(fitted, n=args.n or 40, color_by=args.color_by, **common)
    elif args.plot == "bias":
        plot_bias(fitted, n=args.n or 15, min_ratings=args.min_ratings, **common)
    else:
        plot_history(fitted, out=args.out)
    print(f"wrote {args.out}")
    return 0


# --- similar IDs and recommendations (collabemb.index, collabemb.coldstart) ---------------------


def _use_index(fitted, args: argparse.Namespace, parts: tuple[str, ...]) -> None:
    """Search with the artifact's stored index, unless it has none or the options ask for another:
    then build that one now (it is not saved; ``collabemb index`` saves one)."""
    from collabemb.index import build_index

    if fitted.index is None or args.index_type is not None or args.metric is not None:
        metric = args.metric or "cosine"
        fitted.index = build_index(fitted, parts=parts, index_type=args.index_type, metric=metric, threads=args.threads)


def _show(frame, args: argparse.Namespace, *, table: bool = True) -> None:
    """CSV to ``--output``, else a table (or CSV) on stdout."""
    import pandas as pd

    if args.output or not table:
        frame.to_csv(args.output or sys.stdout, index=False, float_format="%.4f")
        if args.output:
            print(f"wrote {len(frame)} rows to {args.output}", file=sys.stderr)
    else:
        with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200, "display.max_colwidth", 60):
            print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def cmd_similar(args: argparse.Namespace) -> int:
    from collabemb.index import similar_items, similar_users

    fitted = load_artifact(args.artifact)
    ids = fitted.registry(args.table).from_text(args.ids)  # by the rule for files (collabemb.inputs)
    _use_index(fitted, args, ("items",) if args.table == "item" else ("users",))
    search = similar_items if args.table == "item" else similar_users
    _show(search(fitted, ids, args.k, unknown=args.unknown), args)
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from collabemb.coldstart import recommend_from_ratings
    from collabemb.index import recommend

    fitted = load_artifact(args.artifact)
    _use_index(fitted, args, ("recommend",))
    if args.ratings:
        frame = recommend_from_ratings(fitted, args.ratings, args.k, exclude_seen=not args.include_seen)
    else:
        users = fitted.users.from_text(args.user) if args.user else None  # None: the anonymous user
        frame = recommend(fitted, users, args.k, exclude_seen=not args.include_seen, seen=args.seen, unknown=args.unknown)
    _show(frame, args)
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from collabemb.artifact import save_model
    from collabemb.index import build_index

    if not Path(args.artifact).is_dir():
        raise ValueError(f"{args.artifact}: no such artifact directory")
    with writing(args.artifact):  # load, build and save as one update: another writer meanwhile is refused
        fitted = load_artifact(args.artifact)
        t0 = time.perf_counter()
        fitted.index = build_index(fitted, parts=tuple(args.parts), index_type=args.index_type, metric=args.metric, threads=args.threads)
        save_model(fitted, args.artifact)
    built = ", ".join(f"{name} ({index_type})" for name, index_type in fitted.index.parts.items())
    print(f"built {built} in {time.perf_counter() - t0:.1f} s, metric {args.metric}; stored in {Path(args.artifact).resolve()}")
    return 0


# --- applications ----------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from collabemb.serve import run_server

    token = args.token if args.token is not None else os.environ.get("COLLABEMB_TOKEN")
    return run_server(Path(args.artifact), host=args.host, port=args.port, workers=args.workers, token=token)


def cmd_explore(args: argparse.Namespace) -> int:
    from collabemb.explorer import write_explorer

    out = write_explorer(load_artifact(args.artifact), Path(args.html), top=args.top)
    print(f"wrote {out}")
    return 0
