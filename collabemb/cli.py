"""Command line: ``collabemb fit | fit-implicit | predict | evaluate | info | demo | export | plot | similar | recommend | index``.

A thin layer over the Python API, in its words: ``--table user|item``, ``--unknown
raise|unknown_slot``, ``--no-unknown-row``, ``--index-type exact|hnsw|ivf``. The training options
are the fields of :class:`~collabemb.settings.FitSettings`, one option each.

Only the standard library and light collabemb modules are imported here, so ``--help`` and
``--version`` answer at once; torch, pandas and the heavy modules are imported by the command
functions that need them. Errors print one line on stderr and exit with status 2 (``--debug``
shows the traceback instead); every warning the library raises prints one line on stderr.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import types
import typing
import warnings
from importlib.metadata import version
from pathlib import Path

from collabemb.settings import ENGINES, LR_SCHEDULES, FitSettings

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
#: The bundled sample in a source checkout; an installed package regenerates it (same seed, same data).
BUNDLED_SAMPLE = Path(__file__).resolve().parent.parent / "datasets" / "sample"

# Choices written out so that the parser needs no heavy import; tests/test_cli.py checks each
# against the library's own constant.
FORMATS: tuple[str, ...] = ("parquet", "csv", "npy", "projector")  # collabemb.export.FORMATS
TEXT_DIGITS = 9  # collabemb.export.TEXT_DIGITS
INDEX_TYPES: tuple[str, ...] = ("exact", "hnsw", "ivf")  # collabemb.faiss_parts.INDEX_TYPES
INDEX_PARTS: tuple[str, ...] = ("items", "users", "recommend")  # collabemb.faiss_parts.PARTS
METRICS: tuple[str, ...] = ("cosine", "dot")  # collabemb.faiss_parts.METRICS
UNKNOWN: tuple[str, ...] = ("raise", "unknown_slot")  # collabemb.registry.UNKNOWN_CHOICES
UNKNOWN_HELP = "IDs the model never saw: fail, or answer with the trained row 0 (the unknown slot)"
LAYOUTS: tuple[str, ...] = ("ml-100k", "ml-1m", "ml-latest")  # collabemb.data.LAYOUTS
IMPLICIT_MODELS: tuple[str, ...] = ("als", "bpr", "lmf")  # collabemb.implicit_mf.FAMILIES
WEIGHTINGS: tuple[str, ...] = ("binary", "raw", "log")  # collabemb.implicit_mf.WEIGHTINGS
#: ``--regularization`` help; tests/test_cli.py checks it against collabemb.implicit_mf.DEFAULTS.
IMPLICIT_DEFAULTS_HELP = "als 20, bpr 0.01, lmf 0.6"
#: Options of collabemb.data.read_ratings, named alike on the command line.
READ_OPTIONS: tuple[str, ...] = ("user_col", "item_col", "rating_col", "timestamp_col", "layout", "sep", "duplicates", "id_type")
_SETTING_CHOICES: dict[str, tuple[str, ...]] = {"engine": ENGINES, "lr_schedule": LR_SCHEDULES}

#: Python argument words in library messages (regex; groups ``name`` and ``value``) and the flags
#: this command line says instead (a format string; ``name`` comes with dashes for underscores).
FLAG_WORDS: tuple[tuple[str, str], ...] = (
    (r"\bunknown=['\"](?P<value>unknown_slot|raise)['\"]", "--unknown {value}"),
    (r"\bexclude_seen=False\b", "--include-seen"),
    (r"\bunknown_row=False\b", "--no-unknown-row"),
    (r"\b(?P<name>train|valid|seen)=(?:\.\.\.)?", "--{name} FILE"),
    (r"\b(?:model|fitted)\.set_seen_items\(train\)", "collabemb fit"),
    (r"\bmetadata=True\b", "--stored-metadata"),
    (r"\bpass a DataFrame\b", "pass --metadata FILE"),
    (r"\b(?P<name>table|index_type|metric|engine|device|format|lr_schedule)=['\"](?P<value>[\w:.-]+)['\"]", "--{name} {value}"),
    (r"\b(?P<name>" + "|".join(FitSettings.names()) + r")(?=\s+(?:must|needs|applies)\b)", "--{name}"),
)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        with warnings.catch_warnings(record=True) as caught:
            try:
                return args.run(args)
            finally:
                for warning in caught:
                    print(f"collabemb: warning: {cli_words(str(warning.message))}", file=sys.stderr)
    except KeyboardInterrupt:
        print("collabemb: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _expected_errors() as exc:
        if args.debug:
            raise
        print(f"collabemb: error: {_message(exc, args)}", file=sys.stderr)
        return EXIT_ERROR


def _expected_errors() -> tuple[type[BaseException], ...]:
    """What a command reports as one line (evaluated only once an exception is on its way out)."""
    from collabemb.registry import UnknownIdError  # RatingsError, ArtifactError are ValueErrors

    return (UnknownIdError, ValueError, TypeError, OSError, FloatingPointError)


def cli_words(message: str) -> str:
    """A library message with its Python argument words replaced by this command line's flags."""

    def flag(match: re.Match, template: str) -> str:
        groups = match.groupdict()
        return template.format(name=(groups.get("name") or "").replace("_", "-"), value=groups.get("value"))

    for pattern, template in FLAG_WORDS:
        message = re.sub(pattern, lambda m, t=template: flag(m, t), message)
    return message


def _message(exc: BaseException, args: argparse.Namespace) -> str:
    from collabemb.registry import UnknownIdError

    text = cli_words(str(exc))
    if isinstance(exc, UnknownIdError) and vars(args).get("unknown") == "raise" and "--unknown" not in text:
        text += "; pass --unknown unknown_slot to answer them with the trained unknown slot (row 0)"
    return text


# --- the parser ------------------------------------------------------------------------------------


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default (or "required") unless it already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = re.sub(r"%(?!\(default\)s)", "%%", action.help or "")  # argparse %-formats help
        if not action.option_strings or action.default is argparse.SUPPRESS or "default" in text:
            return text
        if action.required:
            return f"{text} (required)"
        default = action.default
        shown = "none" if default is None else " ".join(map(str, default)) if isinstance(default, list | tuple) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collabemb", description="Collaborative-filtering embeddings you can get out.", formatter_class=_HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"collabemb {version('collabemb')}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_training_commands(sub)
    _add_model_commands(sub)
    _add_search_commands(sub)
    return parser


def _command(sub, name: str, help: str, run, artifact: str | None = "artifact directory") -> argparse.ArgumentParser:
    """A subcommand running ``run(args)``; its first argument is an artifact directory unless ``artifact`` is None."""
    p = sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".", formatter_class=_HelpFormatter)
    p.set_defaults(run=run)
    if artifact:
        p.add_argument("artifact", help=artifact)
    return p


def _add_read_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reading ratings")
    g.add_argument("--user-col", default="user", help="user ID column")
    g.add_argument("--item-col", default="item", help="item ID column")
    g.add_argument("--rating-col", default="rating", help="rating (or weight) column")
    g.add_argument("--timestamp-col", help="timestamp column (default: 'timestamp' when the file has one)")
    g.add_argument("--layout", choices=LAYOUTS, help="a MovieLens file layout; the column options are then ignored")
    g.add_argument("--sep", help="field separator (default: guessed from the first line)")
    g.add_argument("--duplicates", choices=("last", "raise", "mean"), default="last", help="repeated (user, item) pairs")
    g.add_argument("--id-type", choices=("int", "str"), help="force the ID type (default: inferred)")


def _read_options(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in READ_OPTIONS}


def _add_settings(p: argparse.ArgumentParser, **defaults) -> None:
    """One option per FitSettings field (``n_factors`` -> ``--n-factors``), typed from the field."""
    g = p.add_argument_group("training settings (collabemb.FitSettings)")
    hints = typing.get_type_hints(FitSettings)
    for name, default, help in FitSettings.describe():
        flag, default = "--" + name.replace("_", "-"), defaults.get(name, default)
        value_type = hints[name]
        if isinstance(value_type, types.UnionType):  # float | None -> float
            value_type = next(arg for arg in typing.get_args(value_type) if arg is not type(None))
        if value_type is bool:
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help)
        elif typing.get_origin(value_type) is tuple:
            g.add_argument(flag, nargs=2, type=typing.get_args(value_type)[0], metavar=("LO", "HI"), default=default, help=help)
        else:
            metavar = None if name in _SETTING_CHOICES else value_type.__name__.upper()
            g.add_argument(flag, type=value_type, choices=_SETTING_CHOICES.get(name), metavar=metavar, default=default, help=help)
    g.add_argument("--checkpoint", metavar="DIR", help="write a checkpoint here after every epoch")
    g.add_argument("--resume", metavar="DIR", help="continue the run saved in this checkpoint (same data and settings)")


def _add_training_commands(sub) -> None:
    p = _command(sub, "fit", "train an EmbeddingDotBias model on a ratings file", _cmd_fit, artifact=None)
    p.add_argument("ratings", help="CSV / TSV / parquet file, or a MovieLens ratings file with --layout")
    p.add_argument("--out", required=True, metavar="DIR", help="artifact directory to write")
    p.add_argument("--valid", metavar="FILE", help="validation ratings file (same columns); never stored as seen pairs")
    p.add_argument("--valid-frac", type=float, help="hold out this random fraction of RATINGS for validation instead")
    p.add_argument("--items", metavar="FILE", help="item metadata file (CSV/TSV/parquet) to store with the model, e.g. titles")
    p.add_argument("--items-id-col", default="item", help="ID column of --items")
    _add_read_options(p)
    _add_settings(p)

    p = _command(sub, "fit-implicit", "train an implicit-feedback model (ALS, BPR, LMF) or a popularity baseline", _cmd_fit_implicit, None)
    p.add_argument("ratings", help="interactions file: user, item and a rating / weight column")
    p.add_argument("--out", required=True, metavar="DIR", help="artifact directory to write")
    p.add_argument("--model", choices=(*IMPLICIT_MODELS, "popularity"), default="als", help="model family")
    p.add_argument("--threshold", type=float, help="drop interactions rated below this (4: only 4 and 5 stars are positives)")
    p.add_argument("--weighting", choices=WEIGHTINGS, default="binary", help="weight of a kept interaction: 1, rating, log1p(rating)")
    p.add_argument("--n-factors", type=int, default=64, help="embedding width k")
    p.add_argument("--iterations", type=int, help="default per model: als 15, bpr 100, lmf 30")
    p.add_argument("--regularization", type=float, help=f"default per model: {IMPLICIT_DEFAULTS_HELP}")
    p.add_argument("--alpha", type=float, help="ALS: confidence per unit weight (default 5)")
    p.add_argument("--learning-rate", type=float, help="BPR, LMF (default: 0.01, 1.0)")
    p.add_argument("--seed", type=int, default=0, help="implicit's random_state")
    p.add_argument("--threads", type=int, default=1, help="implicit's num_threads (0: all cores); BLAS stays single-threaded")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, help="progress bar (default: only when stderr is a terminal)")
    _add_read_options(p)

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
    p.add_argument("-k", "--k", type=int, default=10, help="list length")
    p.add_argument("--train", metavar="FILE", help="leave out each user's items in this file (default: the artifact's training pairs)")
    p.add_argument("--include-seen", action="store_true", help="rank training items too (no exclusion)")
    p.add_argument("--threshold", type=float, help="test rows rated below it are not relevant (default: the model's threshold, else none)")
    _add_read_options(p)

    _command(sub, "info", "describe an artifact", _cmd_info)

    p = _command(sub, "export", "write the user or item embeddings (parquet, csv, npy, TensorBoard projector)", _cmd_export)
    p.add_argument("--table", choices=("user", "item"), required=True, help="which table to write")
    p.add_argument("--out", required=True, metavar="PATH", help="file (parquet, csv) or directory (npy, projector) to write")
    p.add_argument("--format", choices=FORMATS, help="default: from the --out suffix (.parquet, .csv)")
    p.add_argument("--no-unknown-row", dest="unknown_row", action="store_false", help="leave out row 0, the unknown slot (default: kept)")
    p.add_argument("--metadata", metavar="FILE", help="metadata file (CSV/TSV/parquet) to join by ID, e.g. titles and genres")
    p.add_argument("--metadata-id-col", help="ID column of --metadata (default: the --table name)")
    p.add_argument("--stored-metadata", action="store_true", help="join the item metadata stored in the artifact")
    p.add_argument("--digits", type=int, default=TEXT_DIGITS, help="significant digits in csv (9: exact for float32)")

    p = _command(sub, "plot", "draw the item map (PCA), the item bias ranking or the training curves as PNG", _cmd_plot)
    p.add_argument("plot", choices=("pca", "bias", "history"), help="what to draw")
    p.add_argument("--out", required=True, metavar="PNG", help="PNG file to write")
    p.add_argument("--n", type=int, help="items to label (pca, default 40) or per end of the ranking (bias, default 15)")
    p.add_argument("--ratings", metavar="FILE", help="ratings to count per item: pca labels the most-rated, bias shows counts")
    p.add_argument("--min-ratings", type=int, default=0, help="bias: leave out items with fewer ratings (needs --ratings)")
    p.add_argument("--color-by", help="pca: item metadata column to colour by, e.g. genres")
    p.add_argument("--label-col", default="title", help="item metadata column for labels (raw IDs without it)")
    p.add_argument("--metadata", metavar="FILE", help="item metadata file (default: the metadata stored in the artifact)")
    p.add_argument("--metadata-id-col", default="item", help="ID column of --metadata")
    _add_read_options(p)


def _add_search_commands(sub) -> None:
    p = _command(sub, "similar", "the items (or users) most similar to given raw IDs", _cmd_similar)
    p.add_argument("ids", nargs="+", metavar="ID", help="raw IDs of the --table")
    p.add_argument("-k", type=int, default=10, help="results per ID")
    p.add_argument("--table", choices=("user", "item"), default="item", help="search this table")
    p.add_argument("--unknown", choices=UNKNOWN, default="raise", help=UNKNOWN_HELP)
    _add_index_options(p)

    p = _command(sub, "recommend", "top-k items for known users, a new user's ratings (fold-in), or an anonymous user", _cmd_recommend)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", nargs="+", metavar="ID", help="raw user IDs")
    who.add_argument("--ratings", metavar="FILE", help="a new user's ratings: item,rating columns (several users: add a user column)")
    who.add_argument("--anonymous", action="store_true", help="no history: rank items for the trained unknown user (row 0)")
    p.add_argument("-k", type=int, default=10, help="items per user")
    p.add_argument("--include-seen", action="store_true", help="also recommend items the user already rated")
    p.add_argument("--seen", metavar="FILE", help="ratings file of what users rated (default: the training pairs stored in the artifact)")
    p.add_argument("--unknown", choices=UNKNOWN, default="raise", help=UNKNOWN_HELP)
    _add_index_options(p)

    p = _command(sub, "index", "build a FAISS similarity index and store it in the artifact", _cmd_index, "artifact directory (rewritten)")
    p.add_argument("--parts", nargs="+", choices=INDEX_PARTS, default=["items", "recommend"], help="which searches to index")
    _add_index_options(p, stored=False)


def _add_index_options(p: argparse.ArgumentParser, *, stored: bool = True) -> None:
    """``--index-type``, ``--metric``, ``--threads``. A search (``stored``) uses the artifact's index unless
    given either of the first two (then builds one, not saved), and has ``--output``."""
    stored_first = "the stored index's, else " if stored else ""
    g = p.add_argument_group("similarity index")
    g.add_argument("--index-type", choices=INDEX_TYPES, help=f"FAISS index (default: {stored_first}exact up to 100k vectors, else hnsw)")
    g.add_argument("--metric", choices=METRICS, default=None if stored else "cosine", help=f"similarity (default: {stored_first}cosine)")
    g.add_argument("--threads", type=int, help="FAISS threads while building an index here (default: FAISS's own setting)")
    if stored:
        p.add_argument("--output", "-o", metavar="FILE", help="write CSV here (default: print a table)")


# --- training ----------------------------------------------------------------------------------


def _cmd_fit(args: argparse.Namespace) -> int:
    from collabemb.data import read_ratings
    from collabemb.splits import split_random

    if args.valid and args.valid_frac:
        raise ValueError("give --valid or --valid-frac, not both")
    ratings = read_ratings(args.ratings, **_read_options(args))
    resolved = f" ({ratings.n_duplicates} duplicate pairs resolved: {args.duplicates})" if ratings.n_duplicates else ""
    print(f"read {len(ratings)} ratings from {ratings.source}{resolved}")
    valid = None
    if args.valid:
        valid = read_ratings(args.valid, **_read_options(args))
    elif args.valid_frac:
        ratings, valid = split_random(ratings, args.valid_frac, seed=args.seed)
    _fit_and_save(ratings, valid, args, Path(args.items) if args.items else None, args.items_id_col)
    return 0


def _fit_and_save(train, valid, args: argparse.Namespace, items: Path | None = None, items_id_col: str = "item") -> None:
    """Fit on ``train`` (``valid`` only scores epochs: the artifact's seen pairs are ``train``'s), save, report."""
    import torch

    from collabemb.artifact import save_model
    from collabemb.inputs import read_item_metadata
    from collabemb.train import fit

    t0 = time.perf_counter()
    settings = FitSettings(**{name: getattr(args, name) for name in FitSettings.names() if hasattr(args, name)})
    fitted = fit(train, valid=valid, settings=settings, checkpoint=args.checkpoint, resume=args.resume)
    seconds = time.perf_counter() - t0
    if items is not None:
        fitted.set_item_metadata(read_item_metadata(items, id_col=items_id_col, id_type=fitted.items.id_type))
    save_model(fitted, args.out)
    h = fitted.history
    sizes = f"{len(fitted.users)} users, {len(fitted.items)} items, {fitted.n_factors} factors"
    print(f"trained {len(h.epoch)} epochs in {seconds:.1f} s: {sizes}")
    if h.epoch:
        v = f", validation RMSE {h.valid_rmse[-1]:.4f} ({len(valid)} ratings)" if valid is not None and h.valid_rmse[-1] is not None else ""
        print(f"  train RMSE {h.train_rmse[-1]:.4f}{v}")
    if h.stopped_early:
        print(f"  stopped early; kept epoch {h.best_epoch}")
    if h.stop_reason == "interrupted":
        resume = f"; continue with --resume {args.checkpoint}" if args.checkpoint else ""
        print(f"  interrupted (Ctrl-C): kept epoch {h.epoch[-1] if h.epoch else 0} of {h.params.get('epochs')}{resume}")
    with torch.no_grad():  # row 0 with row 0: an unseen user with an unseen item
        zero = torch.zeros(1, dtype=torch.long, device=fitted.module.u_weight.weight.device)
        unknown, mean = float(fitted.module(zero, zero)[0]), float(train.frame["rating"].mean())
    print(f"  row 0, the unknown slot: an unseen user with an unseen item predicts {unknown:.2f} (training mean {mean:.2f})")
    print(f"  seen pairs: {len(fitted.seen_items)} training (user, item) pairs stored; recommend and evaluate leave them out")
    print(f"wrote artifact {Path(args.out).resolve()}")


def _cmd_demo(args: argparse.Namespace) -> int:
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
    _fit_and_save(train, valid, args, data_dir / "items.csv")
    print(f"  reloaded: validation RMSE {rmse(_load(args.out), valid):.4f}; try: collabemb info {args.out}")
    return 0


def _cmd_fit_implicit(args: argparse.Namespace) -> int:
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

    from collabemb.data import read_ratings
    from collabemb.metrics import evaluate

    fitted = _load(args.artifact)
    test = read_ratings(args.test, **_read_options(args))
    train = read_ratings(args.train, **_read_options(args)) if args.train else None
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
    from collabemb.artifact import read_config

    fitted = _load(args.artifact)
    config = read_config(args.artifact)
    identity = fitted.identity
    print(f"artifact      {Path(args.artifact).resolve()}")
    print(f"model         {config['model']}  (schema {config['schema_version']}, created {config['created']})")
    print(f"family        {identity.family}; fold-in for new IDs: {identity.fold_in or 'none (row 0 answers them)'}")
    for name, registry in (("users", fitted.users), ("items", fitted.items)):
        first = ", ".join(repr(v) for v in registry.ids[:5].tolist()) + (", ..." if len(registry) > 5 else "")
        print(f"{name:<14}{len(registry)} {registry.id_type} IDs, rows 1..{len(registry)}; first: {first}")
    print(f"row 0         the unknown slot, {identity.row0_text}; any ID not listed above maps there")
    print(f"factors       {fitted.n_factors}; y_range {fitted.y_range}")
    recorded = {k: v for k, v in identity.to_dict().items() if k not in ("family", "row0") and v is not None}
    if recorded:
        print("identity      " + ", ".join(f"{k} {v}" for k, v in recorded.items()))
    print(f"seen pairs    {len(fitted.seen_items)} training (user, item) pairs; recommend and evaluate leave them out")
    if not fitted.item_metadata.empty:
        print(f"item metadata {len(fitted.item_metadata)} rows; columns {', '.join(map(str, fitted.item_metadata.columns))}")
    if config.get("index"):
        print("index         " + ", ".join(f"{k} {v}" for k, v in config["index"].items() if k != "files"))
    h = fitted.history
    if h.epoch:
        v = f", validation RMSE {h.valid_rmse[-1]:.4f}" if h.valid_rmse[-1] is not None else ""
        print(f"training      {len(h.epoch)} epochs, train RMSE {h.train_rmse[-1]:.4f}{v}; params {h.params}")
    elif h.params:
        print(f"training      one solve; params {h.params}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from collabemb.export import write_embeddings
    from collabemb.inputs import read_item_metadata

    fitted = _load(args.artifact)
    registry = fitted.registry(args.table)
    if args.metadata and args.stored_metadata:
        raise ValueError("give --metadata or --stored-metadata, not both")
    metadata, id_col = (True, None) if args.stored_metadata else (None, None)
    if args.metadata:  # read_item_metadata names the ID column "item", whatever the table
        metadata, id_col = read_item_metadata(args.metadata, id_col=args.metadata_id_col or args.table, id_type=registry.id_type), "item"
    t0 = time.perf_counter()
    options = {"format": args.format, "unknown_row": args.unknown_row, "digits": args.digits}
    out = write_embeddings(fitted, args.out, args.table, metadata=metadata, metadata_id_col=id_col, **options)
    rows = len(registry) + (1 if args.unknown_row else 0)
    row0 = " (row 0, the unknown slot, first)" if args.unknown_row else ""
    print(f"wrote {rows} {args.table} rows{row0} x {fitted.n_factors} factors + bias to {out} in {time.perf_counter() - t0:.2f} s")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from collabemb.data import read_ratings
    from collabemb.inputs import read_item_metadata
    from collabemb.plots import plot_bias, plot_history, plot_pca

    fitted = _load(args.artifact)
    ratings = read_ratings(args.ratings, **_read_options(args)) if args.ratings else None
    metadata = None
    if args.metadata:
        metadata = read_item_metadata(args.metadata, id_col=args.metadata_id_col, id_type=fitted.items.id_type)
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


def _cli_ids(values: list[str], registry) -> list:
    """Command-line IDs in the type the registry holds (ints must be written as integers)."""
    if registry.id_type == "str":
        return list(values)
    bad = [v for v in values if not re.fullmatch(r"-?(0|[1-9][0-9]*)", v)]
    if bad:
        raise ValueError(f"this artifact's {registry.name} IDs are integers; {bad[0]!r} is not one")
    return [int(v) for v in values]


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
    ids = _cli_ids(args.ids, fitted.registry(args.table))
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
        users = _cli_ids(args.user, fitted.users) if args.user else None  # None: the anonymous user
        frame = recommend(fitted, users, args.k, exclude_seen=not args.include_seen, seen=args.seen, unknown=args.unknown)
    _show(frame, args)
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    from collabemb.artifact import save_model
    from collabemb.index import build_index

    fitted = _load(args.artifact)
    t0 = time.perf_counter()
    fitted.index = build_index(fitted, parts=tuple(args.parts), index_type=args.index_type, metric=args.metric, threads=args.threads)
    save_model(fitted, args.artifact)
    built = ", ".join(f"{name} ({index_type})" for name, index_type in fitted.index.parts.items())
    print(f"built {built} in {time.perf_counter() - t0:.1f} s, metric {args.metric}; stored in {Path(args.artifact).resolve()}")
    return 0
