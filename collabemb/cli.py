"""Command line: ``collabemb fit | fit-implicit | predict | evaluate | info | demo | export | plot | similar | recommend | index``.

A thin layer over the Python API. Errors print one line on stderr and exit with status 2
(``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from collabemb.artifact import ArtifactError, load_model, read_config
from collabemb.data import RatingsError, read_item_metadata, read_pairs, read_ratings
from collabemb.export import FORMATS, TEXT_DIGITS, write_embeddings
from collabemb.plots import plot_bias, plot_history, plot_pca
from collabemb.registry import UnknownIdError
from collabemb.sample import write_sample
from collabemb.splits import split_random
from collabemb.train import DEFAULTS, fit, rmse

EXIT_ERROR = 2
#: The bundled sample in a source checkout; an installed package regenerates it (same seed, same data).
BUNDLED_SAMPLE = Path(__file__).resolve().parent.parent / "datasets" / "sample"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        return args.run(args)
    except (RatingsError, ArtifactError, UnknownIdError, ValueError, TypeError, OSError, FloatingPointError) as exc:
        if args.debug:
            raise
        print(f"collabemb: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("collabemb: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="collabemb", description="Collaborative-filtering embeddings you can get out.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("fit", help="train an EmbeddingDotBias model on a ratings file")
    p.add_argument("ratings", help="CSV / TSV / parquet file, or a MovieLens ratings file with --layout")
    p.add_argument("--out", required=True, help="artifact directory to write")
    _add_read_options(p)
    p.add_argument("--items", help="item metadata file (CSV/TSV/parquet) to store with the model, e.g. titles and genres")
    p.add_argument("--items-id-col", default="item", help="ID column of --items (default: item)")
    p.add_argument("--valid", help="validation ratings file (same columns)")
    p.add_argument("--valid-frac", type=float, help="hold out this random fraction for validation instead")
    _add_fit_options(p)
    p.set_defaults(run=_cmd_fit)

    p = sub.add_parser("predict", help="predict ratings for (user, item) pairs")
    p.add_argument("artifact", help="artifact directory")
    p.add_argument("pairs", help="CSV/TSV file with user and item columns")
    p.add_argument("--user-col", default="user")
    p.add_argument("--item-col", default="item")
    p.add_argument("--sep", help="field separator (default: guessed)")
    p.add_argument("--output", "-o", help="write CSV here instead of stdout")
    p.set_defaults(run=_cmd_predict)

    p = sub.add_parser("info", help="describe an artifact")
    p.add_argument("artifact")
    p.set_defaults(run=_cmd_info)

    p = sub.add_parser("demo", help="train on the bundled sample data and write an artifact")
    p.add_argument("--out", default="runs/demo", help="artifact directory (default: runs/demo)")
    _add_fit_options(p, epochs=10)
    p.set_defaults(run=_cmd_demo)

    p = sub.add_parser("export", help="write the user or item embeddings (parquet, csv, npy, TensorBoard projector)")
    p.add_argument("artifact", help="artifact directory")
    p.add_argument("--what", choices=["users", "items"], required=True)
    p.add_argument("--format", choices=list(FORMATS), help="default: from the --out suffix (.parquet, .csv); npy and projector write a directory")
    p.add_argument("--out", required=True, help="file (parquet, csv) or directory (npy, projector) to write")
    p.add_argument("--no-unknown", action="store_true", help="leave out row 0, the unknown slot (default: first row, with an empty ID)")
    p.add_argument("--metadata", help="metadata file (CSV/TSV/parquet) to join by ID, e.g. titles and genres, or u.user columns")
    p.add_argument("--metadata-id-col", help="ID column of --metadata (default: user or item)")
    p.add_argument("--stored-metadata", action="store_true", help="join the item metadata stored in the artifact")
    p.add_argument("--digits", type=int, default=TEXT_DIGITS, help=f"significant digits in csv/tsv (default {TEXT_DIGITS}: exact for float32)")
    p.set_defaults(run=_cmd_export)

    p = sub.add_parser("plot", help="draw the item map (PCA), the item bias ranking or the training curves as PNG")
    p.add_argument("artifact", help="artifact directory")
    p.add_argument("--kind", choices=["pca", "bias", "history"], required=True)
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--n", type=int, help="items to label (pca, default 40) or per end of the ranking (bias, default 15)")
    p.add_argument("--ratings", help="ratings file to count ratings per item: pca labels the most-rated, bias shows counts")
    _add_read_options(p)
    p.add_argument("--min-ratings", type=int, default=0, help="bias: leave out items with fewer ratings (needs --ratings)")
    p.add_argument("--color-by", help="pca: item metadata column to colour by, e.g. genres")
    p.add_argument("--label-col", default="title", help="item metadata column for labels (default: title; raw IDs without it)")
    p.add_argument("--metadata", help="item metadata file (default: the metadata stored in the artifact)")
    p.add_argument("--metadata-id-col", default="item", help="ID column of --metadata (default: item)")
    p.set_defaults(run=_cmd_plot)

    _add_ranking_commands(sub)
    _add_search_commands(sub)
    return parser


def _add_read_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user-col", default="user")
    p.add_argument("--item-col", default="item")
    p.add_argument("--rating-col", default="rating")
    p.add_argument("--timestamp-col")
    p.add_argument("--layout", choices=["ml-100k", "ml-1m", "ml-latest"], help="a MovieLens file layout")
    p.add_argument("--sep", help="field separator (default: guessed from the first line)")
    p.add_argument("--duplicates", choices=["last", "raise", "mean"], default="last")
    p.add_argument("--id-type", choices=["int", "str"], help="force the ID type (default: inferred)")


def _add_fit_options(p: argparse.ArgumentParser, *, epochs: int = DEFAULTS["epochs"]) -> None:
    p.add_argument("--factors", type=int, default=DEFAULTS["n_factors"])
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"])
    p.add_argument("--batch-size", type=int, help="autograd engine: ratings per step (default: n_train // 50, clipped to 64..1024)")
    p.add_argument("--unknown-frac", type=float, default=DEFAULTS["unknown_frac"])
    p.add_argument("--early-stopping", type=int, metavar="EPOCHS")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--engine", choices=["auto", "fast", "autograd"], default="auto", help="training engine (default: fast on CPU, autograd elsewhere)")
    p.add_argument("--checkpoint", metavar="DIR", help="write a checkpoint here after every epoch")
    p.add_argument("--resume", metavar="DIR", help="continue the run saved in this checkpoint (same data and settings)")
    p.add_argument("--no-progress", action="store_true")


def _fit_kwargs(args: argparse.Namespace) -> dict:
    return {
        "n_factors": args.factors, "epochs": args.epochs, "lr": args.lr, "weight_decay": args.weight_decay,
        "batch_size": args.batch_size, "unknown_frac": args.unknown_frac, "early_stopping": args.early_stopping,
        "seed": args.seed, "threads": args.threads, "device": args.device,
        "engine": args.engine, "checkpoint": args.checkpoint, "resume": args.resume,
        "progress": False if args.no_progress else None,
    }


def _train_and_save(train, valid, out: str, args: argparse.Namespace, items_path: Path | None = None, items_id_col: str = "item") -> None:
    t0 = time.perf_counter()
    model = fit(train, valid=valid, **_fit_kwargs(args))
    seconds = time.perf_counter() - t0
    if items_path is not None:
        model.set_item_metadata(read_item_metadata(items_path, id_col=items_id_col, id_type=model.items.kind))
    # what each user rated, so that `collabemb recommend` leaves it out
    model.set_seen_items(train if valid is None else pd.concat([train.frame, valid.frame], ignore_index=True))
    model.save(out)
    h = model.history
    print(f"trained {len(h.epoch)} epochs in {seconds:.1f} s: {len(model.users)} users, {len(model.items)} items, {model.n_factors} factors")
    print(f"  train RMSE {h.train_rmse[-1]:.4f}" + (f", validation RMSE {h.valid_rmse[-1]:.4f} ({len(valid)} ratings)" if valid is not None else ""))
    if h.stopped_early:
        print(f"  stopped early; kept epoch {h.best_epoch}")
    if h.stop_reason == "interrupted":
        resume = f"; continue with --resume {args.checkpoint}" if args.checkpoint else ""
        print(f"  interrupted (Ctrl-C): kept epoch {h.epoch[-1]} of {h.params['epochs']}{resume}")
    with torch.no_grad():
        zero = torch.zeros(1, dtype=torch.long, device=model.u_weight.weight.device)
        unknown = float(model(zero, zero)[0])
    mean = float(train.frame["rating"].mean())
    print(f"  row 0, the unknown slot: an unseen user with an unseen item predicts {unknown:.2f} (training mean {mean:.2f})")
    print(f"wrote artifact {Path(out).resolve()}")


def _cmd_fit(args: argparse.Namespace) -> int:
    read_kw = {
        "user_col": args.user_col, "item_col": args.item_col, "rating_col": args.rating_col,
        "timestamp_col": args.timestamp_col, "layout": args.layout, "sep": args.sep,
        "duplicates": args.duplicates, "id_type": args.id_type,
    }
    ratings = read_ratings(args.ratings, **read_kw)
    print(f"read {len(ratings)} ratings from {ratings.source}" + (f" ({ratings.n_duplicates} duplicate pairs resolved: {args.duplicates})" if ratings.n_duplicates else ""))
    if args.valid and args.valid_frac:
        raise ValueError("give --valid or --valid-frac, not both")
    valid = None
    if args.valid:
        valid = read_ratings(args.valid, **read_kw)
    elif args.valid_frac:
        ratings, valid = split_random(ratings, args.valid_frac, seed=args.seed)
    _train_and_save(ratings, valid, args.out, args, Path(args.items) if args.items else None, args.items_id_col)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    model = load_model(args.artifact)
    pairs = read_pairs(args.pairs, user_col=args.user_col, item_col=args.item_col, user_kind=model.users.kind, item_kind=model.items.kind, sep=args.sep)
    out = model.predict(pairs["user"], pairs["item"])
    if args.output:
        out.to_csv(args.output, index=False, float_format="%.4f")
        print(f"wrote {len(out)} predictions to {args.output}", file=sys.stderr)
    else:
        out.to_csv(sys.stdout, index=False, float_format="%.4f")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    model = load_model(args.artifact)
    config = read_config(args.artifact)
    print(f"artifact      {Path(args.artifact).resolve()}")
    print(f"model         {config['model']}  (schema {config['schema_version']}, created {config['created']})")
    print(f"users         {len(model.users)} {model.users.kind} IDs, rows 1..{len(model.users)}; first: {_head(model.users.ids)}")
    print(f"items         {len(model.items)} {model.items.kind} IDs, rows 1..{len(model.items)}; first: {_head(model.items.ids)}")
    row0 = model.history.params.get("row0", "trained") if model.history is not None else "trained"
    print(f"row 0         the unknown slot ({row0}): any ID not listed above maps there")
    print(f"factors       {model.n_factors}; y_range {model.y_range}")
    if model.item_metadata is not None:
        print(f"item metadata {len(model.item_metadata)} rows; columns {', '.join(model.item_metadata.columns)}")
    h = model.history
    if h is not None and h.epoch:
        v = f", validation RMSE {h.valid_rmse[-1]:.4f}" if h.valid_rmse[-1] is not None else ""
        print(f"training      {len(h.epoch)} epochs, train RMSE {h.train_rmse[-1]:.4f}{v}; params {h.params}")
    elif h is not None and "model" in h.params:  # fit_implicit / fit_popularity: no epochs to report
        print(f"training      {h.params['model']}; params {h.params}")
    return 0


def _head(ids: np.ndarray) -> str:
    return ", ".join(repr(v) for v in ids[:5].tolist()) + (", ..." if len(ids) > 5 else "")


def _cmd_demo(args: argparse.Namespace) -> int:
    data_dir = BUNDLED_SAMPLE
    if not (data_dir / "ratings.csv").is_file():
        data_dir = Path(args.out).parent / "sample-data"
        print(f"bundled sample not found next to the package; regenerating it in {data_dir}")
        write_sample(data_dir)
    ratings = read_ratings(data_dir / "ratings.csv", timestamp_col="timestamp")
    train, valid = split_random(ratings, 0.1, seed=args.seed)
    print(f"demo: {len(ratings)} ratings from {data_dir / 'ratings.csv'}; training on {len(train)}, validating on {len(valid)}")
    _train_and_save(train, valid, args.out, args, data_dir / "items.csv")
    model = load_model(args.out)
    print(f"  reloaded: validation RMSE {rmse(model, valid):.4f}; try: collabemb info {args.out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    model = load_model(args.artifact)
    kind = "user" if args.what == "users" else "item"
    if args.metadata and args.stored_metadata:
        raise ValueError("give --metadata or --stored-metadata, not both")
    metadata, id_col = None, None
    if args.stored_metadata:
        metadata = True
    elif args.metadata:
        reg = model.users if kind == "user" else model.items
        metadata = read_item_metadata(args.metadata, id_col=args.metadata_id_col or kind, id_type=reg.kind)
        id_col = "item"  # read_item_metadata names the ID column "item", whatever the kind
    t0 = time.perf_counter()
    out = write_embeddings(
        model, args.out, kind, format=args.format, unknown="exclude" if args.no_unknown else "include",
        metadata=metadata, metadata_id_col=id_col, digits=args.digits,
    )
    reg = model.users if kind == "user" else model.items
    rows = len(reg) + (0 if args.no_unknown else 1)
    row0 = "" if args.no_unknown else " (row 0, the unknown slot, first)"
    print(f"wrote {rows} {kind} rows{row0} x {model.n_factors} factors + bias to {out} in {time.perf_counter() - t0:.2f} s")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    model = load_model(args.artifact)
    ratings = None
    if args.ratings:
        ratings = read_ratings(
            args.ratings, user_col=args.user_col, item_col=args.item_col, rating_col=args.rating_col,
            timestamp_col=args.timestamp_col, layout=args.layout, sep=args.sep, duplicates=args.duplicates, id_type=args.id_type,
        )
    metadata = read_item_metadata(args.metadata, id_col=args.metadata_id_col, id_type=model.items.kind) if args.metadata else None
    if args.kind == "pca":
        plot_pca(model, n=args.n or 40, ratings=ratings, metadata=metadata, label_col=args.label_col, color_by=args.color_by, out=args.out)
    elif args.kind == "bias":
        plot_bias(model, n=args.n or 15, ratings=ratings, min_ratings=args.min_ratings, metadata=metadata, label_col=args.label_col, out=args.out)
    else:
        plot_history(model, out=args.out)
    print(f"wrote {args.out}")
    return 0


# --- implicit feedback and ranking evaluation (collabemb.implicit_mf, collabemb.metrics) -------


def _add_ranking_commands(sub) -> None:
    from collabemb.implicit_mf import DEFAULTS as IMPLICIT_DEFAULTS
    from collabemb.implicit_mf import WEIGHTINGS

    als = IMPLICIT_DEFAULTS["als"]
    p = sub.add_parser("fit-implicit", help="train an implicit-feedback model (ALS, BPR, logistic MF) with the implicit library, or the popularity baseline")
    p.add_argument("ratings", help="interactions file: user, item and a rating / weight column (CSV / TSV / parquet / MovieLens layout)")
    p.add_argument("--out", required=True, help="artifact directory to write")
    p.add_argument("--model", choices=["als", "bpr", "lmf", "popularity"], default="als")
    _add_read_options(p)
    p.add_argument("--threshold", type=float, help="drop interactions whose rating is below this (4: only 4 and 5 stars are positives)")
    p.add_argument("--weighting", choices=list(WEIGHTINGS), default="binary", help="weight of a kept interaction: 1, its rating, or log1p(rating)")
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--iterations", type=int, help="default per model: als 15, bpr 100, lmf 30")
    p.add_argument("--regularization", type=float, help=f"default per model: als {als['regularization']:g}, bpr 0.01, lmf 0.6")
    p.add_argument("--alpha", type=float, help=f"ALS: confidence per unit weight (default {als['alpha']:g})")
    p.add_argument("--learning-rate", type=float, help="BPR, LMF: default 0.01, 1.0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="implicit's num_threads (0: all cores); BLAS stays single-threaded")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_cmd_fit_implicit)

    p = sub.add_parser("evaluate", help="RMSE / MAE (rating models) and ranking metrics (every model) on held-out data")
    p.add_argument("artifact", help="artifact directory")
    p.add_argument("test", help="held-out interactions file")
    p.add_argument("--k", type=int, default=10, help="list length (default 10)")
    p.add_argument("--train", help="training file: each user's training items are excluded from their list (default: the seen items stored in the artifact)")
    p.add_argument("--include-seen", action="store_true", help="rank training items too (no exclusion)")
    p.add_argument("--threshold", type=float, help="test rows rated below this are not relevant (default: the model's training threshold, else every row)")
    _add_read_options(p)
    p.set_defaults(run=_cmd_evaluate)


def _read_kwargs(args: argparse.Namespace) -> dict:
    return {
        "user_col": args.user_col, "item_col": args.item_col, "rating_col": args.rating_col,
        "timestamp_col": args.timestamp_col, "layout": args.layout, "sep": args.sep,
        "duplicates": args.duplicates, "id_type": args.id_type,
    }


def _cmd_fit_implicit(args: argparse.Namespace) -> int:
    from collabemb.implicit_mf import fit_implicit, fit_popularity

    ratings = read_ratings(args.ratings, **_read_kwargs(args))
    print(f"read {len(ratings)} interactions from {ratings.source}")
    t0 = time.perf_counter()
    if args.model == "popularity":
        model = fit_popularity(ratings, threshold=args.threshold)
    else:
        model = fit_implicit(
            ratings, model=args.model, n_factors=args.factors, iterations=args.iterations, regularization=args.regularization,
            alpha=args.alpha, learning_rate=args.learning_rate, threshold=args.threshold, weighting=args.weighting,
            seed=args.seed, threads=args.threads, progress=False if args.no_progress else None,
        )
    seconds = time.perf_counter() - t0
    model.save(args.out)
    params = model.history.params
    kept = f" (rating >= {args.threshold:g}; {params['n_dropped']} dropped)" if args.threshold is not None else ""
    print(f"trained {args.model} in {seconds:.2f} s: {len(model.users)} users, {len(model.items)} items, {model.n_factors} factors")
    print(f"  {params['n_interactions']} interactions used{kept}")
    print(f"  row 0, the unknown slot: {params['row0']}")
    print(f"wrote artifact {Path(args.out).resolve()}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from collabemb.implicit_mf import model_family
    from collabemb.metrics import evaluate

    model = load_model(args.artifact)
    read_kw = _read_kwargs(args)
    test = read_ratings(args.test, **read_kw)
    train = read_ratings(args.train, **read_kw) if args.train else None
    family = model_family(model)
    threshold, why = args.threshold, ""
    if threshold is None and model.history is not None and model.history.params.get("threshold") is not None:
        threshold, why = float(model.history.params["threshold"]), " (the model's training threshold)"
    results = evaluate(model, test, train=train, k=args.k, threshold=threshold, exclude_seen=not args.include_seen)
    if args.include_seen:
        seen = "not excluded (--include-seen)"
    else:
        seen = f"excluded (from {args.train})" if train is not None else "excluded (the seen items stored in the artifact)"
    relevant = f"rating >= {threshold:g}{why}" if threshold is not None else "every test row"
    print(f"model     {family}: {len(model.users)} users, {len(model.items)} items, {model.n_factors} factors")
    print(f"test      {len(test)} rows from {test.source}, {test.frame['user'].nunique()} users; relevant: {relevant}")
    print(f"seen      training items {seen}")
    print()
    print(f"{'metric':<14}{'value':>8}")
    for name, value in results.items():
        print(f"{name:<14}{value:>8}" if name == "users" else f"{name:<14}{value:>8.4f}")
    return 0


# --- similar IDs and recommendations (collabemb.index, collabemb.coldstart) ---------------------


def _add_search_commands(sub) -> None:
    p = sub.add_parser("similar", help="the items (or users) most similar to given raw IDs")
    p.add_argument("artifact", help="artifact directory")
    p.add_argument("ids", nargs="+", metavar="ID", help="raw item IDs (user IDs with --users)")
    p.add_argument("-k", type=int, default=10, help="results per ID (default 10)")
    p.add_argument("--users", action="store_true", help="similar users instead of items")
    p.add_argument("--fallback", action="store_true", help="answer unseen IDs with the trained unknown slot instead of failing")
    _add_index_options(p)
    p.add_argument("--output", "-o", help="write CSV here instead of printing a table")
    p.set_defaults(run=_cmd_similar)

    p = sub.add_parser("recommend", help="top-k items for known users, for a new user's ratings (fold-in), or for an anonymous user")
    p.add_argument("artifact", help="artifact directory")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", nargs="+", metavar="ID", help="raw user IDs")
    who.add_argument("--ratings", metavar="FILE", help="a new user's ratings: item,rating columns (several users: add a user column)")
    who.add_argument("--anonymous", action="store_true", help="no history: rank items for the trained unknown user (row 0)")
    p.add_argument("-k", type=int, default=10, help="items per user (default 10)")
    p.add_argument("--include-seen", action="store_true", help="also recommend items the user already rated")
    p.add_argument("--seen", metavar="FILE", help="ratings file of what users rated (default: the pairs stored by `collabemb fit`)")
    p.add_argument("--fallback", action="store_true", help="answer unseen user IDs with the trained unknown slot instead of failing")
    _add_index_options(p)
    p.add_argument("--output", "-o", help="write CSV here instead of printing a table")
    p.set_defaults(run=_cmd_recommend)

    p = sub.add_parser("index", help="build the FAISS similarity index and store it in the artifact")
    p.add_argument("artifact", help="artifact directory (rewritten in place, atomically)")
    _add_index_options(p)
    p.add_argument("--parts", nargs="+", choices=["items", "users", "recommend"], default=["items", "recommend"])
    p.set_defaults(run=_cmd_index)


def _add_index_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=["exact", "hnsw", "ivf"], help="index kind when none is stored (default: exact up to 100k vectors, else hnsw)")
    p.add_argument("--metric", choices=["cosine", "dot"], default="cosine", help="similarity when no index is stored (default: cosine)")
    p.add_argument("--threads", type=int, help="FAISS threads (default: all cores)")


def _search_index(model, args: argparse.Namespace):
    """The artifact's stored index, or one built now (not saved) from the options."""
    from collabemb.index import SimilarityIndex

    if model.index is not None and args.kind is None and args.metric == model.index.metric:
        model.index.threads = args.threads
        return model.index
    return SimilarityIndex(model, kind=args.kind, metric=args.metric, threads=args.threads)


def _cli_ids(values: list[str], registry) -> list:
    """Command-line IDs in the kind the registry holds (ints must be written as integers)."""
    if registry.kind == "str":
        return list(values)
    bad = [v for v in values if not re.fullmatch(r"-?(0|[1-9][0-9]*)", v)]
    if bad:
        raise ValueError(f"this artifact's {registry.name} IDs are integers; {bad[0]!r} is not one")
    return [int(v) for v in values]


def _show(frame: pd.DataFrame, args: argparse.Namespace) -> None:
    if args.output:
        frame.to_csv(args.output, index=False, float_format="%.4f")
        print(f"wrote {len(frame)} rows to {args.output}", file=sys.stderr)
    else:
        with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200, "display.max_colwidth", 60):
            print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def _cmd_similar(args: argparse.Namespace) -> int:
    model = load_model(args.artifact)
    index = _search_index(model, args)
    registry = model.users if args.users else model.items
    ids = _cli_ids(args.ids, registry)
    ask = index.similar_users if args.users else index.similar_items
    _show(ask(ids, args.k, fallback="unknown_slot" if args.fallback else None), args)
    return 0


def _cmd_recommend(args: argparse.Namespace) -> int:
    model = load_model(args.artifact)
    index = _search_index(model, args)
    if args.ratings:
        frame = index.recommend_from_ratings(args.ratings, args.k, exclude_rated=not args.include_seen)
    else:
        users = _cli_ids(args.user, model.users) if args.user else None  # None: the anonymous user
        seen = read_ratings(args.seen) if args.seen else None
        if users is not None and seen is None and model.seen_items is None and not args.include_seen:
            raise ValueError("this artifact holds no record of what users rated (`collabemb fit` stores one): pass --seen RATINGS or --include-seen")
        fallback = "unknown_slot" if args.fallback else None
        frame = index.recommend(users, args.k, exclude_seen=not args.include_seen, seen=seen, fallback=fallback)
    _show(frame, args)
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    model = load_model(args.artifact)
    t0 = time.perf_counter()
    index = model.build_index(parts=tuple(args.parts), kind=args.kind, metric=args.metric, threads=args.threads)
    model.save(args.artifact)
    built = ", ".join(f"{name} ({kind})" for name, kind in index.parts.items())
    print(f"built {built} in {time.perf_counter() - t0:.1f} s, metric {args.metric}; stored in {Path(args.artifact).resolve()}")
    return 0
