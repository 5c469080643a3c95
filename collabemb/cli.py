"""Command line: ``collabemb fit | fit-implicit | demo | cross-validate | tune | predict | evaluate | info | export | plot |
similar | recommend | index | serve | explore``; the commands that use a fitted model are in :mod:`collabemb.cli_model`.

A thin layer over the Python API, in its words: ``--table user|item``, ``--unknown
raise|unknown_slot``, ``--no-unknown-row``, ``--index-type exact|hnsw|ivf``. The training options
are the fields of :class:`~collabemb.settings.FitSettings`, one option each, and ``--config FILE``
(a settings file, as ``collabemb tune`` writes) under the options given.

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
import threading
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import collabemb.cli_options as cli_options
import collabemb.settings as settings
from collabemb.cli_model import (
    cmd_evaluate,
    cmd_explore,
    cmd_export,
    cmd_index,
    cmd_info,
    cmd_plot,
    cmd_predict,
    cmd_recommend,
    cmd_serve,
    cmd_similar,
    load_artifact,
)
from collabemb.cli_options import (
    EXIT_ERROR,
    FINITE,
    FORMATS,
    IMPLICIT_DEFAULTS_HELP,
    IMPLICIT_MODELS,
    INDEX_PARTS,
    INDEX_TYPES,
    METRICS,
    TEXT_DIGITS,
    THREADS,
    UNKNOWN,
    UNKNOWN_HELP,
    WEIGHTINGS,
    K,
    add_settings_options,
    cli_words,
    given_settings,
    one_line,
    option_type,
    read_options,
    report_error,
    settings_from_options,
    writing,
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
    p.add_argument(
        "--distributed",
        action="store_true",
        help="one rank of a torchrun job (torchrun --nproc-per-node N -m collabemb fit --distributed ...): RATINGS is a parquet "
        "file or directory, each rank reads its users' rows; rank 0 writes --out and the checkpoints",
    )
    p.add_argument("--timeout", type=option_type(float, 1), default=600, metavar="S", help="--distributed: seconds a rank waits on another")
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

    p = _command(sub, "cross-validate", "fit on k random folds and score each held-out fold (RMSE, MAE)", _cmd_cross_validate, None)
    p.add_argument("ratings", help="CSV / TSV / parquet file, or a MovieLens ratings file with --layout")
    p.add_argument("--folds", type=option_type(int, 2), default=5, help="random folds; each rating is in exactly one test fold")
    cli_options.add_read_options(p)
    add_settings_options(p.add_argument_group("training settings (collabemb.FitSettings)"))

    help = "search the training settings by cross-validation with optuna (pip install collabemb[tune])"
    p = _command(sub, "tune", help, _cmd_tune, artifact=None)
    p.add_argument("ratings", help="CSV / TSV / parquet file, or a MovieLens ratings file with --layout")
    p.add_argument("--out", required=True, metavar="FILE", help="write the best settings here (.toml or .json), for fit --config")
    p.add_argument("--folds", type=option_type(int, 2), default=3, help="random folds each trial cross-validates")
    p.add_argument("--trials", type=option_type(int, 1), default=30, help="settings to try")
    p.add_argument("--timeout", type=option_type(float, 0, above=True), metavar="S", help="start no trial after S seconds")
    cli_options.add_read_options(p)
    searched = "n_factors, lr, weight_decay, epochs (svdpp: also history_lr, history_weight_decay)"
    g = p.add_argument_group("fixed training settings", f"An option given here or in --config is fixed; {searched} are searched otherwise.")
    add_settings_options(g)


def _add_model_commands(sub) -> None:
    p = _command(sub, "predict", "predict ratings for (user, item) pairs", cmd_predict)
    p.add_argument("pairs", help="CSV/TSV file with user and item columns")
    p.add_argument("--user-col", default="user", help="user ID column")
    p.add_argument("--item-col", default="item", help="item ID column")
    p.add_argument("--sep", help="field separator (default: guessed)")
    p.add_argument("--unknown", choices=UNKNOWN, default="unknown_slot", help=UNKNOWN_HELP)
    p.add_argument("--output", "-o", metavar="FILE", help="write CSV here (default: stdout)")

    p = _command(sub, "evaluate", "RMSE / MAE (rating models) and ranking metrics (every model) on held-out data", cmd_evaluate)
    p.add_argument("test", help="held-out interactions file")
    p.add_argument("-k", "--k", type=K, default=10, help="list length")
    p.add_argument("--train", metavar="FILE", help="leave out each user's items in this file (default: the artifact's training pairs)")
    p.add_argument("--include-seen", action="store_true", help="rank training items too (no exclusion)")
    p.add_argument("--threshold", type=FINITE, help="test rows rated below it are not relevant (default: the model's threshold, else none)")
    cli_options.add_read_options(p)

    _command(sub, "info", "describe an artifact", cmd_info)

    p = _command(sub, "export", "write the user or item embeddings (parquet, csv, npy, TensorBoard projector)", cmd_export)
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

    p = _command(sub, "plot", "draw the item map (PCA), the item bias ranking or the training curves as PNG", cmd_plot)
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
    p = _command(sub, "similar", "the items (or users) most similar to given raw IDs", cmd_similar)
    p.add_argument("ids", nargs="+", metavar="ID", help="raw IDs of the --table")
    p.add_argument("-k", type=K, default=10, help="results per ID")
    p.add_argument("--table", choices=("user", "item"), default="item", help="search this table")
    p.add_argument("--unknown", choices=UNKNOWN, default="raise", help=UNKNOWN_HELP)
    _add_index_options(p)

    p = _command(sub, "recommend", "top-k items for known users, a new user's ratings (fold-in), or an anonymous user", cmd_recommend)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", nargs="+", metavar="ID", help="raw user IDs")
    who.add_argument("--ratings", metavar="FILE", help="a new user's ratings: item,rating columns (several users: add a user column)")
    who.add_argument("--anonymous", action="store_true", help="no history: rank items for the trained unknown user (row 0)")
    p.add_argument("-k", type=K, default=10, help="items per user")
    p.add_argument("--include-seen", action="store_true", help="also recommend items the user already rated")
    p.add_argument("--seen", metavar="FILE", help="ratings file of what users rated (default: the training pairs stored in the artifact)")
    p.add_argument("--unknown", choices=UNKNOWN, default="raise", help=UNKNOWN_HELP)
    _add_index_options(p)

    p = _command(sub, "index", "build a FAISS similarity index and store it in the artifact", cmd_index, "artifact directory (rewritten)")
    p.add_argument("--parts", nargs="+", choices=INDEX_PARTS, default=["items", "recommend"], help="which searches to index")
    _add_index_options(p, stored=False)


def _add_app_commands(sub) -> None:
    p = _command(sub, "serve", "answer JSON over HTTP and serve the explorer page (pip install collabemb[serve])", cmd_serve)
    p.add_argument("--host", default="127.0.0.1", help="address to bind; a non-loopback one requires --token")
    p.add_argument("--port", type=option_type(int, 0, 65535), default=8000, help="TCP port (0: any free port, printed)")
    p.add_argument("--workers", type=option_type(int, 1, 64), default=1, help="server processes")
    p.add_argument("--token", help="bearer token every request but /healthz must carry (default: $COLLABEMB_TOKEN)")
    p = _command(sub, "explore", "write the embedding explorer as one static HTML file (no server needed)", cmd_explore)
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
    if args.distributed:
        return _fit_distributed(args, fit_settings)
    with writing(args.out):  # --out checked and held before any data is read
        if args.valid and args.valid_frac:
            raise ValueError("give --valid or --valid-frac, not both")
        from collabemb.data import read_ratings
        from collabemb.splits import split_random

        ratings = read_ratings(args.ratings, **read_options(args))
        resolved = f" ({ratings.n_duplicates} duplicate pairs resolved: {args.duplicates})" if ratings.n_duplicates else ""
        print(f"read {len(ratings)} ratings from {ratings.source}{resolved}")
        if args.config:
            print(f"settings ({args.config}, then the options given): {_settings_text(fit_settings, given_settings(args))}")
        valid = None
        if args.valid:
            valid = read_ratings(args.valid, **read_options(args))
        elif args.valid_frac:
            ratings, valid = split_random(ratings, args.valid_frac, seed=fit_settings.seed)
        _fit_and_save(ratings, valid, args, fit_settings, Path(args.items) if args.items else None, args.items_id_col)
        return 0


def _fit_distributed(args: argparse.Namespace, fit_settings: FitSettings) -> int:
    """``fit --distributed``: this process is one rank; rank 0 holds ``--out``, saves and reports."""
    from collabemb.distributed import fit_distributed, launched_rank

    if args.valid_frac or args.layout or args.items:
        raise ValueError("--distributed reads a parquet dataset by column names: --valid-frac, --layout and --items are not offered")
    rank = launched_rank()
    with writing(args.out) if rank == 0 else contextlib.nullcontext():
        t0 = time.perf_counter()
        columns = {"user_col": args.user_col, "item_col": args.item_col, "rating_col": args.rating_col}
        fitted = fit_distributed(
            args.ratings,
            valid=args.valid,
            settings=fit_settings,
            checkpoint=args.checkpoint,
            resume=args.resume,
            timeout_s=args.timeout,
            **columns,
        )
        if fitted is None:
            return 0
        from collabemb.artifact import save_model

        save_model(fitted, args.out)
        h = fitted.history
        sizes = f"{len(fitted.users)} users, {len(fitted.items)} items, {fitted.n_factors} factors"
        print(f"trained {len(h.epoch)} epochs on {h.params['ranks']} ranks in {time.perf_counter() - t0:.1f} s: {sizes}")
        if h.epoch:
            valid = f", valid RMSE {h.valid_rmse[-1]:.4f}" if h.valid_rmse[-1] is not None else ""
            print(f"last epoch: train RMSE {h.train_rmse[-1]:.4f}{valid}")
        print(f"saved to {args.out}")
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


def _cmd_demo(args: argparse.Namespace) -> int:
    fit_settings = settings_from_options(args)  # checked, the device too, before any data is read
    with writing(args.out):  # --out checked and held before any data is read
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
        train, valid = split_random(ratings, 0.1, seed=fit_settings.seed)
        print(f"demo: {len(ratings)} ratings from {data_dir / 'ratings.csv'}; training on {len(train)}, validating on {len(valid)}")
        _fit_and_save(train, valid, args, fit_settings, data_dir / "items.csv")
        print(f"  reloaded: validation RMSE {rmse(load_artifact(args.out), valid):.4f}; try: collabemb info {args.out}")
        return 0


def _cmd_fit_implicit(args: argparse.Namespace) -> int:
    with writing(args.out):  # --out checked and held before any data is read
        from collabemb.artifact import save_model
        from collabemb.data import read_ratings
        from collabemb.implicit_mf import fit_implicit, fit_popularity

        ratings = read_ratings(args.ratings, **read_options(args))
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


# --- cross-validation and tuning (collabemb.tuning) --------------------------------------------


def _cmd_cross_validate(args: argparse.Namespace) -> int:
    fit_settings = settings_from_options(args)  # checked, the device too, before any data is read
    from collabemb.data import read_ratings
    from collabemb.tuning import cross_validate

    ratings = read_ratings(args.ratings, **read_options(args))
    print(f"read {len(ratings)} ratings from {ratings.source}")
    print(f"{args.folds}-fold cross-validation, seed {fit_settings.seed}: {_settings_text(fit_settings, given_settings(args))}")
    options = {k: v for k, v in fit_settings.to_dict().items() if k not in ("seed", "threads")}
    table = cross_validate(ratings, args.folds, seed=fit_settings.seed, threads=fit_settings.threads, **options)

    def count(value: float) -> str:  # the folds' counts are whole; their mean and std need not be
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"

    formats = {"rmse": "{:.4f}".format, "mae": "{:.4f}".format, "fit_seconds": "{:.2f}".format, "n_train": count, "n_test": count}
    print(table.to_string(index=False, formatters=formats))
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from collabemb.settings_file import settings_format

    settings_format(args.out)  # .toml or .json, before the search
    fixed = given_settings(args)
    seed, threads = fixed.pop("seed", 0), fixed.pop("threads", None)
    FitSettings(**fixed).check_device()
    from collabemb.data import read_ratings
    from collabemb.tuning import import_optuna, tune

    import_optuna()
    ratings = read_ratings(args.ratings, **read_options(args))
    print(f"read {len(ratings)} ratings from {ratings.source}")
    fixed_text = ", ".join(f"{k}={v}" for k, v in fixed.items()) or "none"
    print(f"tuning: {args.trials} trials, each {args.folds}-fold cross-validation, seed {seed}; fixed settings: {fixed_text}")
    on_trial = _say_trial if sys.stderr.isatty() else None
    result = tune(
        ratings, folds=args.folds, trials=args.trials, timeout=args.timeout, seed=seed, threads=threads, on_trial=on_trial, **fixed
    )
    trials = result.trials
    formats = {name: "{:.4g}".format for name in trials.columns if trials[name].dtype.kind == "f"}
    print(trials.to_string(index=False, formatters={**formats, "rmse": "{:.4f}".format, "seconds": "{:.2f}".format}))
    print(f"best: trial {result.best_trial}, mean validation RMSE {result.best_rmse:.4f} over {result.folds} folds")
    for name, value in result.best_settings.items():
        print(f"  {name} = {value:.4g}" if isinstance(value, float) else f"  {name} = {value}")
    path = result.save(args.out)
    print(f"wrote {path}; train with: collabemb fit {args.ratings} --config {args.out} --out DIR")
    return 0


_TRIAL_COLUMNS = ("number", "state", "rmse", "folds", "seconds")


def _say_trial(row: dict) -> None:
    """A finished trial as one line on the terminal, while the search goes on."""
    settings = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k not in _TRIAL_COLUMNS)
    print(f"trial {row['number']}: {row['state']} after {row['folds']} fold(s), rmse {row['rmse']:.4f} ({settings})", file=sys.stderr)


def _settings_text(fit_settings: FitSettings, names) -> str:
    """``name=value`` for the named settings (those given), or "the defaults"."""
    shown = [f"{name}={getattr(fit_settings, name)}" for name in FitSettings.names() if name in names]
    return ", ".join(shown) or "the defaults"
