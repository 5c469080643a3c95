"""Command line: ``collabemb fit | fit-implicit | predict | evaluate | info | demo | export | plot | similar | recommend | index``.

A thin layer over the Python API, in its words: ``--table user|item``, ``--unknown
raise|unknown_slot``, ``--no-unknown-row``, ``--index-type exact|hnsw|ivf``. The training options
are the fields of :class:`~collabemb.settings.FitSettings`, one option each.

Only the standard library and light collabemb modules are imported here, so ``--help`` and
``--version`` answer at once; torch, pandas and the heavy modules are imported by the command
functions that need them. Every option is checked, with its range, before any work starts.

Exit status, and stderr (one line each; ``--debug`` shows a traceback instead): 0 done (each
library warning a ``collabemb: warning:`` line); 2 refused (a bad option or input, a missing
file, an unseen ID, out of memory: ``collabemb: error: ...``); 1 a bug (any other exception,
named, with "rerun with --debug"); 130 Ctrl-C at any moment (``collabemb: interrupted``; a fit
saves its last finished epoch first); 141 stdout closed early (``| head``): nothing said.
:mod:`collabemb.__main__` adds what only the process can: Ctrl-C during start-up, the last flush.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import collabemb.cli_options as cli_options
import collabemb.settings as settings
from collabemb.cli_options import (
    EXIT_ERROR,
    FINITE,
    FORMATS,
    IMPLICIT_DEFAULTS_HELP,
    IMPLICIT_MODELS,
    INDEX_PARTS,
    INDEX_TYPES,
    METRICS,
    READ_OPTIONS,
    TEXT_DIGITS,
    THREADS,
    UNKNOWN,
    UNKNOWN_HELP,
    WEIGHTINGS,
    K,
    add_settings_options,
    cli_words,
    one_line,
    option_type,
    report_error,
    settings_from_options,
)
from collabemb.settings import FitSettings

EXIT_INTERRUPTED = 130
EXIT_PIPE = 141  # 128 + SIGPIPE, as coreutils report a closed pipe
#: The bundled sample in a source checkout; an installed package regenerates it (same seed, same data).
BUNDLED_SAMPLE = Path(__file__).resolve().parent.parent / "datasets" / "sample"


def main(argv: list[str] | None = None) -> int:
    """Run one command line; returns the exit status (the module docstring's)."""
    args = None
    _SAID.clear()
    try:
        with _ctrl_c_raises(), warnings.catch_warnings(record=True) as caught:
            try:
                parser = _parser()
                args = parser.parse_args(argv)
                if args.command is None:
                    parser.print_help(sys.stderr)
                    return EXIT_ERROR
                return args.run(args)
            finally:
                for warning in caught:
                    print(f"collabemb: warning: {one_line(cli_words(str(warning.message)))}", file=sys.stderr)
    except KeyboardInterrupt:
        if not _SAID.is_set():
            print("collabemb: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed early: nothing to say, and nowhere to say it
        return EXIT_PIPE
    except Exception as exc:
        if args.debug if args is not None else "--debug" in (sys.argv[1:] if argv is None else argv):
            raise
        return report_error(exc, args)


_SAID = threading.Event()  # "collabemb: interrupted" is said (by a fit's first Ctrl-C)


@contextlib.contextmanager
def _ctrl_c_raises(handler=None):
    """While a command runs, Ctrl-C raises KeyboardInterrupt from a handler of ours (or calls ``handler``) rather
    than Python's default: :func:`collabemb.fit` then installs none of its own (nor says anything)."""
    now = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    new = None if now in (None, signal.SIG_IGN) else handler or (raise_interrupt if now is signal.default_int_handler else None)
    previous = signal.signal(signal.SIGINT, new) if new else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _stop_after_epoch(signum, frame) -> None:
    """A fit's Ctrl-C: the first says the line and stops the fit once the epoch in progress is done (the model
    is then saved); another raises KeyboardInterrupt (collabemb.fit keeps the last finished epoch, if any)."""
    if _SAID.is_set():
        raise KeyboardInterrupt
    _SAID.set()
    with contextlib.suppress(OSError):  # stderr closed: nowhere to say it
        os.write(2, b"collabemb: interrupted\n")


# --- the parser ------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = cli_options.Parser(
        prog="collabemb", description="Collaborative-filtering embeddings you can get out.", formatter_class=cli_options.HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"collabemb {version('collabemb')}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_training_commands(sub)
    _add_model_commands(sub)
    _add_search_commands(sub)
    _add_app_commands(sub)
    return parser


def _command(sub, name: str, help: str, run, artifact: str | None = "artifact directory") -> argparse.ArgumentParser:
    """A subcommand running ``run(args)``; its first argument is an artifact directory unless ``artifact`` is None."""
    p = sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".", formatter_class=cli_options.HelpFormatter)
    p.set_defaults(run=run)
    if artifact:
        p.add_argument("artifact", help=artifact)
    return p


def _read_options(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in READ_OPTIONS}


def _add_settings(p: argparse.ArgumentParser, **defaults) -> None:
    g = p.add_argument_group("training settings (collabemb.FitSettings)")
    add_settings_options(g, **defaults)
    g.add_argument("--checkpoint", metavar="DIR", help="write a checkpoint here after every epoch")
    g.add_argument("--resume", metavar="DIR", help="continue the run saved in this checkpoint (same data and settings)")


def _add_training_commands(sub) -> None:
    p = _command(sub, "fit", "train an EmbeddingDotBias model on a ratings file", _cmd_fit, artifact=None)
    p.add_argument("ratings", help="CSV / TSV / parquet file, or a MovieLens ratings file with --layout")
    p.add_argument("--out", required=True, metavar="DIR", help="artifact directory to write")
    p.add_argument("--valid", metavar="FILE", help="validation ratings file (same columns); never stored as seen pairs")
    p.add_argument(
        "--valid-frac",
        type=option_type(float, 0, 1, above=True, below=True),
        help="hold out this random fraction of RATINGS for validation instead",
    )
    p.add_argument("--items", metavar="FILE", help="item metadata file (CSV/TSV/parquet) to store with the model, e.g. titles")
    p.add_argument("--items-id-col", default="item", help="ID column of --items")
    cli_options.add_read_options(p)
    _add_settings(p)

    p = _command(sub, "fit-implicit", "train an implicit-feedback model (ALS, BPR, LMF) or a popularity baseline", _cmd_fit_implicit, None)
    p.add_argument("ratings", help="interactions file: user, item and a rating / weight column")
    p.add_argument("--out", required=True, metavar="DIR", help="artifact directory to write")
    p.add_argument("--model", choices=(*IMPLICIT_MODELS, "popularity"), default="als", help="model family")
    p.add_argument("--threshold", type=FINITE, help="drop interactions rated below this (4: only 4 and 5 stars are positives)")
    p.add_argument("--weighting", choices=WEIGHTINGS, default="binary", help="weight of a kept interaction: 1, rating, log1p(rating)")
    p.add_argument("--n-factors", type=option_type(int, 1, settings.MAX_FACTORS), default=64, help="embedding width k")
    p.add_argument("--iterations", type=option_type(int, 1, settings.MAX_EPOCHS), help="default per model: als 15, bpr 100, lmf 30")
    p.add_argument("--regularization", type=option_type(float, 0), help=f"default per model: {IMPLICIT_DEFAULTS_HELP}")
    p.add_argument("--alpha", type=option_type(float, 0, above=True), help="ALS: confidence per unit weight (default 5)")
    p.add_argument("--learning-rate", type=option_type(float, 0, settings.MAX_LR, above=True), help="BPR, LMF (default: 0.01, 1.0)")
    p.add_argument("--seed", type=option_type(int, 0, 2**32 - 1), default=0, help="implicit's random_state")
    p.add_argument(
        "--threads",
        type=option_type(int, 0, settings.MAX_THREADS),
        default=1,
        help="implicit's num_threads (0: all cores); BLAS stays single-threaded",
    )
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, help="progress bar (default: only when stderr is a terminal)")
    cli_options.add_read_options(p)

    p = _command(sub, "demo", "train on the bundled sample data and write an artifact", _cmd_demo, artifact=None)
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="artifact directory")
    _add_settings(p, epochs=10)


def _add_model_commands(sub) -> None:
    p = _command(sub, "predict", "predict ratings for (user, item) pairs", _cmd_predict)
    p.add_argument("pairs", help="CSV/TSV file with user and item columns")
    p.add_argument("--user-col", default="user", help="user ID column")
    p.add_argument("--item-col", default="item", help="item ID column")
    p.add_argument("--sep", help="field separator (default: guessed)")
    p.add_argument("--unknown", choices=UNKNOWN, default="unknown_slot", help=UNKNOWN_HELP)
    p.add_argument("--output", "-o", metavar="FILE", help="write CSV here (default: stdout)")

    p = _command(sub, "evaluate", "RMSE / MAE (rating models) and ranking metrics (every model) on held-out data", _cmd_evaluate)
    p.add_argument("test", help="held-out interactions file")
    p.add_argument("-k", "--k", type=K, default=10, help="list length")
    p.add_argument("--train", metavar="FILE", help="leave out each user's items in this file (default: the artifact's training pairs)")
    p.add_argument("--include-seen", action="store_true", help="rank training items too (no exclusion)")
    p.add_argument("--threshold", type=FINITE, help="test rows rated below it are not relevant (default: the model's threshold, else none)")
    cli_options.add_read_options(p)

    _command(sub, "info", "describe an artifact", _cmd_info)

    p = _command(sub, "export", "write the user or item embeddings (parquet, csv, npy, TensorBoard projector)", _cmd_export)
    p.add_argument("--table", choices=("user", "item"), required=True, help="which table to write")
    p.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="file (parquet, csv) or directory (npy, projector) to write; - for stdout (csv, parquet)",
    )
    p.add_argument("--format", choices=FORMATS, help="default: from the --out suffix (.parquet, .csv)")
    p.add_argument("--no-unknown-row", dest="unknown_row", action="store_false", help="leave out row 0, the unknown slot (default: kept)")
    p.add_argument("--metadata", metavar="FILE", help="metadata file (CSV/TSV/parquet) to join by ID, e.g. titles and genres")
    p.add_argument("--metadata-id-col", help="ID column of --metadata (default: the --table name)")
    p.add_argument("--stored-metadata", action="store_true", help="join the item metadata stored in the artifact")
    p.add_argument("--digits", type=option_type(int, 1, 17), default=TEXT_DIGITS, help="significant digits in csv (9: exact for float32)")

    p = _command(sub, "plot", "draw the item map (PCA), the item bias ranking or the training curves as PNG", _cmd_plot)
    p.add_argument("plot", choices=("pca", "bias", "history"), help="what to draw")
    p.add_argument("--out", required=True, metavar="PNG", help="PNG file to write")
    p.add_argument("--n", type=K, help="items to label (pca, default 40) or per end of the ranking (bias, default 15)")
    p.add_argument("--ratings", metavar="FILE", help="ratings to count per item: pca labels the most-rated, bias shows counts")
    p.add_argument("--min-ratings", type=option_type(int, 0), default=0, help="bias: leave out items with fewer ratings (needs --ratings)")
    p.add_argument("--color-by", help="pca: item metadata column to colour by, e.g. genres")
    p.add_argument("--label-col", default="title", help="item metadata column for labels (raw IDs without it)")
    p.add_argument("--metadata", metavar="FILE", help="item metadata file (default: the metadata stored in the artifact)")
    p.add_argument("--metadata-id-col", default="item", help="ID column of --metadata")
    cli_options.add_read_options(p)


def _add_search_commands(sub) -> None:
    p = _command(sub, "similar", "the items (or users) most similar to given raw IDs", _cmd_similar)
    p.add_argument("ids", nargs="+", metavar="ID", help="raw IDs of the --table")
    p.add_argument("-k", type=K, default=10, help="results per ID")
    p.add_argument("--table", choices=("user", "item"), default="item", help="search this table")
    p.add_argument("--unknown", choices=UNKNOWN, default="raise", help=UNKNOWN_HELP)
    _add_index_options(p)

    p = _command(sub, "recommend", "top-k items for known users, a new user's ratings (fold-in), or an anonymous user", _cmd_recommend)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", nargs="+", metavar="ID", help="raw user IDs")
    who.add_argument("--ratings", metavar="FILE", help="a new user's ratings: item,rating columns (several users: add a user column)")
    who.add_argument("--anonymous", action="store_true", help="no history: rank items for the trained unknown user (row 0)")
    p.add_argument("-k", type=K, default=10, help="items per user")
    p.add_argument("--include-seen", action="store_true", help="also recommend items the user already rated")
    p.add_argument("--seen", metavar="FILE", help="ratings file of what users rated (default: the training pairs stored in the artifact)")
    p.add_argument("--unknown", choices=UNKNOWN, default="raise", help=UNKNOWN_HELP)
    _add_index_options(p)

    p = _command(sub, "index", "build a FAISS similarity index and store it in the artifact", _cmd_index, "artifact directory (rewritten)")
    p.add_argument("--parts", nargs="+", choices=INDEX_PARTS, default=["items", "recommend"], help="which searches to index")
    _add_index_options(p, stored=False)


def _add_app_commands(sub) -> None:
    p = _command(sub, "serve", "answer JSON over HTTP and serve the explorer page (pip install collabemb[serve])", _cmd_serve)
    p.add_argument("--host", default="127.0.0.1", help="address to bind; a non-loopback one requires --token")
    p.add_argument("--port", type=option_type(int, 0, 65535), default=8000, help="TCP port (0: any free port, printed)")
    p.add_argument("--workers", type=option_type(int, 1, 64), default=1, help="server processes")
    p.add_argument("--token", help="bearer token every request but /healthz must carry (default: $COLLABEMB_TOKEN)")
    p = _command(sub, "explore", "write the embedding explorer as one static HTML file (no server needed)", _cmd_explore)
    p.add_argument("--html", required=True, metavar="FILE", help="HTML file to write")
    p.add_argument("--top", type=K, default=300, help="the most-rated items whose neighbours are precomputed")


def _add_index_options(p: argparse.ArgumentParser, *, stored: bool = True) -> None:
    """``--index-type``, ``--metric``, ``--threads``. A search (``stored``) uses the artifact's index unless
    given either of the first two (then builds one, not saved), and has ``--output``."""
    stored_first = "the stored index's, else " if stored else ""
    g = p.add_argument_group("similarity index")
    g.add_argument("--index-type", choices=INDEX_TYPES, help=f"FAISS index (default: {stored_first}exact up to 100k vectors, else hnsw)")
    g.add_argument("--metric", choices=METRICS, default=None if stored else "cosine", help=f"similarity (default: {stored_first}cosine)")
    g.add_argument("--threads", type=THREADS, help="FAISS threads while building an index here (default: FAISS's own setting)")
    if stored:
        p.add_argument("--output", "-o", metavar="FILE", help="write CSV here (default: print a table)")


# --- training ----------------------------------------------------------------------------------


def _cmd_fit(args: argparse.Namespace) -> int:
    fit_settings = settings_from_options(args)  # checked, the device too, before any data is read
    with _writing(args.out):  # --out checked and held before any data is read
        if args.valid and args.valid_frac:
            raise ValueError("give --valid or --valid-frac, not both")
        from collabemb.data import read_ratings
        from collabemb.splits import split_random

        ratings = read_ratings(args.ratings, **_read_options(args))
        resolved = f" ({ratings.n_duplicates} duplicate pairs resolved: {args.duplicates})" if ratings.n_duplicates else ""
        print(f"read {len(ratings)} ratings from {ratings.source}{resolved}")
        valid = None
        if args.valid:
            valid = read_ratings(args.valid, **_read_options(args))
        elif args.valid_frac:
            ratings, valid = split_random(ratings, args.valid_frac, seed=args.seed)
        _fit_and_save(ratings, valid, args, fit_settings, Path(args.items) if args.items else None, args.items_id_col)
        return 0


def _fit_and_save(
    train, valid, args: argparse.Namespace, fit_settings: FitSettings, items: Path | None = None, items_col: str = "item"
) -> None:
    """Fit on ``train`` (``valid`` only scores epochs: the artifact's seen pairs are ``train``'s), save, report.
    Stopped by Ctrl-C after an epoch, the model of the last finished one is saved, then KeyboardInterrupt raised."""
    import torch

    from collabemb.artifact import save_model
    from collabemb.inputs import read_item_metadata
    from collabemb.train import fit

    t0 = time.perf_counter()
    with _ctrl_c_raises(_stop_after_epoch):
        fitted = fit(
            train, valid=valid, settings=fit_settings, checkpoint=args.checkpoint, resume=args.resume, on_epoch=lambda h: _SAID.is_set()
        )
    seconds = time.perf_counter() - t0
    if items is not None:
        fitted.set_item_metadata(read_item_metadata(items, id_col=items_col, id_type=fitted.items.id_type))
    save_model(fitted, args.out)
    h = fitted.history
    sizes = f"{len(fitted.users)} users, {len(fitted.items)} items, {fitted.n_factors} factors"
    print(f"trained {len(h.epoch)} epochs in {seconds:.1f} s: {sizes}")
    if h.epoch:
        v = f", validation RMSE {h.valid_rmse[-1]:.4f} ({len(valid)} ratings)" if valid is not None and h.valid_rmse[-1] is not None else ""
        print(f"  train RMSE {h.train_rmse[-1]:.4f}{v}")
    if h.stopped_early:
        print(f"  stopped early; kept epoch {h.best_epoch}")
    if _SAID.is_set():
        resume = f"; continue with --resume {args.checkpoint}" if args.checkpoint else ""
        print(f"  interrupted (Ctrl-C): kept epoch {h.epoch[-1] if h.epoch else 0} of {h.params.get('epochs')}{resume}")
    with torch.no_grad():  # row 0 with row 0: an unseen user with an unseen item
        zero = torch.zeros(1, dtype=torch.long, device=fitted.module.u_weight.weight.device)
        unknown, mean = float(fitted.module(zero, zero)[0]), float(train.frame["rating"].mean())
    print(f"  row 0, the unknown slot: an unseen user with an unseen item predicts {unknown:.2f} (training mean {mean:.2f})")
    print(f"  seen pairs: {len(fitted.seen_items)} training (user, item) pairs stored; recommend and evaluate leave them out")
    print(f"wrote artifact {Path(args.out).resolve()}")
    if _SAID.is_set():
        raise KeyboardInterrupt


def _writing(out: str):
    """Hold ``--out``'s writer lock from before any data is read until the artifact is saved: an
    unusable ``--out`` (a file, a foreign directory, another fit writing it) is refused at once."""
    from collabemb.store import writer_lock

    return writer_lock(out)


def _cmd_demo(args: argparse.Namespace) -> int:
    fit_settings = settings_from_options(args)  # checked, the device too, before any data is read
    with _writing(args.out):  # --out checked and held before any data is read
        from collabemb.data import read_ratings
        from collabemb.sample import write_sample
        from collabemb.splits import split_random
        from collabemb.train import rmse

        data_dir = BUNDLED_SAMPLE
        if not (data_dir / "ratings.csv").is_file():
            data_dir = Path(args.out).parent / "sample-data"
            print(f"bundled sample not found next to the package; regenerating it in {data_dir}")
            write_sample(data_dir)
        ratings = read_ratings(data_dir / "ratings.csv", timestamp_col="timestamp")
        train, valid = split_random(ratings, 0.1, seed=args.seed)
        print(f"demo: {len(ratings)} ratings from {data_dir / 'ratings.csv'}; training on {len(train)}, validating on {len(valid)}")
        _fit_and_save(train, valid, args, fit_settings, data_dir / "items.csv")
        print(f"  reloaded: validation RMSE {rmse(_load(args.out), valid):.4f}; try: collabemb info {args.out}")
        return 0


def _cmd_fit_implicit(args: argparse.Namespace) -> int:
    with _writing(args.out):  # --out checked and held before any data is read
        from collabemb.artifact import save_model
        from collabemb.data import read_ratings
        from collabemb.implicit_mf import fit_implicit, fit_popularity

        ratings = read_ratings(args.ratings, **_read_options(args))
        print(f"read {len(ratings)} interactions from {ratings.source}")
        t0 = time.perf_counter()
        if args.model == "popularity":
            fitted = fit_popularity(ratings, threshold=args.threshold)
        else:
            names = ("n_factors", "iterations", "regularization", "alpha", "learning_rate", "threshold", "weighting", "seed", "threads")
            fitted = fit_implicit(ratings, model=args.model, progress=args.progress, **{name: getattr(args, name) for name in names})
        seconds = time.perf_counter() - t0
        save_model(fitted, args.out)
        params = fitted.history.params
        kept = f" (rating >= {args.threshold:g}; {params['n_dropped']} dropped)" if args.threshold is not None else ""
        print(f"trained {args.model} in {seconds:.2f} s: {len(fitted.users)} users, {len(fitted.items)} items, {fitted.n_factors} factors")
        print(f"  {params['n_interactions']} interactions used{kept}")
        print(f"  row 0, the unknown slot: {fitted.identity.row0_text}")
        print(f"wrote artifact {Path(args.out).resolve()}")
        return 0

    # --- using a fitted model --------------------------------------------------------------------------


def _load(artifact: str):
    from collabemb.artifact import load_model

    return load_model(artifact)


def _cmd_predict(args: argparse.Namespace) -> int:
    from collabemb.inputs import read_pairs

    fitted = _load(args.artifact)
    id_types = {"user_id_type": fitted.users.id_type, "item_id_type": fitted.items.id_type}
    pairs = read_pairs(args.pairs, user_col=args.user_col, item_col=args.item_col, sep=args.sep, **id_types)
    _show(fitted.predict(pairs["user"], pairs["item"], unknown=args.unknown), args, table=False)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import numbers

    from collabemb.inputs import read_ratings_for
    from collabemb.metrics import evaluate

    fitted = _load(args.artifact)
    test = read_ratings_for(fitted, args.test, **_read_options(args))  # each ID column in its registry's type
    train = read_ratings_for(fitted, args.train, **_read_options(args)) if args.train else None
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


def _cmd_info(args: argparse.Namespace) -> int:
    from collabemb.artifact import read_config, read_model_card
    from collabemb.model_card import info_report

    fitted = _load(args.artifact)
    print(info_report(fitted, read_config(args.artifact), Path(args.artifact).resolve(), read_model_card(args.artifact)))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    t0, target = time.perf_counter(), Path(args.out)
    stream = args.out == "-" or (target.exists() and not target.is_file() and not target.is_dir())  # stdout, a pipe, a device
    if stream and args.format in ("npy", "projector"):
        raise ValueError(f"--out {args.out}: a {args.format} export is a directory; only csv and parquet can be streamed")
    if args.metadata and args.stored_metadata:
        raise ValueError("give --metadata or --stored-metadata, not both")
    from collabemb.export import write_embeddings
    from collabemb.inputs import read_item_metadata

    fitted = _load(args.artifact)
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


def _cmd_plot(args: argparse.Namespace) -> int:
    from collabemb.inputs import read_item_metadata, read_ratings_for
    from collabemb.plots import plot_bias, plot_history, plot_pca

    fitted = _load(args.artifact)
    ratings = read_ratings_for(fitted, args.ratings, **_read_options(args)) if args.ratings else None
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


def _cmd_similar(args: argparse.Namespace) -> int:
    from collabemb.index import similar_items, similar_users

    fitted = _load(args.artifact)
    ids = fitted.registry(args.table).from_text(args.ids)  # by the rule for files (collabemb.inputs)
    _use_index(fitted, args, ("items",) if args.table == "item" else ("users",))
    search = similar_items if args.table == "item" else similar_users
    _show(search(fitted, ids, args.k, unknown=args.unknown), args)
    return 0


def _cmd_recommend(args: argparse.Namespace) -> int:
    from collabemb.coldstart import recommend_from_ratings
    from collabemb.index import recommend

    fitted = _load(args.artifact)
    _use_index(fitted, args, ("recommend",))
    if args.ratings:
        frame = recommend_from_ratings(fitted, args.ratings, args.k, exclude_seen=not args.include_seen)
    else:
        users = fitted.users.from_text(args.user) if args.user else None  # None: the anonymous user
        frame = recommend(fitted, users, args.k, exclude_seen=not args.include_seen, seen=args.seen, unknown=args.unknown)
    _show(frame, args)
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    from collabemb.artifact import save_model
    from collabemb.index import build_index

    if not Path(args.artifact).is_dir():
        raise ValueError(f"{args.artifact}: no such artifact directory")
    with _writing(args.artifact):  # load, build and save as one update: another writer meanwhile is refused
        fitted = _load(args.artifact)
        t0 = time.perf_counter()
        fitted.index = build_index(fitted, parts=tuple(args.parts), index_type=args.index_type, metric=args.metric, threads=args.threads)
        save_model(fitted, args.artifact)
    built = ", ".join(f"{name} ({index_type})" for name, index_type in fitted.index.parts.items())
    print(f"built {built} in {time.perf_counter() - t0:.1f} s, metric {args.metric}; stored in {Path(args.artifact).resolve()}")
    return 0


# --- applications ----------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    from collabemb.serve import run_server

    token = args.token if args.token is not None else os.environ.get("COLLABEMB_TOKEN")
    return run_server(Path(args.artifact), host=args.host, port=args.port, workers=args.workers, token=token)


def _cmd_explore(args: argparse.Namespace) -> int:
    from collabemb.explorer import write_explorer

    out = write_explorer(_load(args.artifact), Path(args.html), top=args.top)
    print(f"wrote {out}")
    return 0
