"""Command line: ``collabemb fit | predict | info | demo``.

A thin layer over the Python API. Errors print one line on stderr and exit with status 2
(``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from collabemb.artifact import ArtifactError, load_model, read_config
from collabemb.data import RatingsError, read_item_metadata, read_pairs, read_ratings
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
    p.add_argument("--batch-size", type=int, help="ratings per step (default: n_train // 50, clipped to 64..1024)")
    p.add_argument("--unknown-frac", type=float, default=DEFAULTS["unknown_frac"])
    p.add_argument("--early-stopping", type=int, metavar="EPOCHS")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")


def _fit_kwargs(args: argparse.Namespace) -> dict:
    return {
        "n_factors": args.factors, "epochs": args.epochs, "lr": args.lr, "weight_decay": args.weight_decay,
        "batch_size": args.batch_size, "unknown_frac": args.unknown_frac, "early_stopping": args.early_stopping,
        "seed": args.seed, "threads": args.threads, "device": args.device,
        "progress": False if args.no_progress else None,
    }


def _train_and_save(train, valid, out: str, args: argparse.Namespace, items_path: Path | None = None, items_id_col: str = "item") -> None:
    t0 = time.perf_counter()
    model = fit(train, valid=valid, **_fit_kwargs(args))
    seconds = time.perf_counter() - t0
    if items_path is not None:
        model.set_item_metadata(read_item_metadata(items_path, id_col=items_id_col, id_type=model.items.kind))
    model.save(out)
    h = model.history
    print(f"trained {len(h.epoch)} epochs in {seconds:.1f} s: {len(model.users)} users, {len(model.items)} items, {model.n_factors} factors")
    print(f"  train RMSE {h.train_rmse[-1]:.4f}" + (f", validation RMSE {h.valid_rmse[-1]:.4f} ({len(valid)} ratings)" if valid is not None else ""))
    if h.stopped_early:
        print(f"  stopped early; kept epoch {h.best_epoch}")
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
    print("row 0         the unknown slot (trained): any ID not listed above maps there")
    print(f"factors       {model.n_factors}; y_range {model.y_range}")
    if model.item_metadata is not None:
        print(f"item metadata {len(model.item_metadata)} rows; columns {', '.join(model.item_metadata.columns)}")
    h = model.history
    if h is not None and h.epoch:
        v = f", validation RMSE {h.valid_rmse[-1]:.4f}" if h.valid_rmse[-1] is not None else ""
        print(f"training      {len(h.epoch)} epochs, train RMSE {h.train_rmse[-1]:.4f}{v}; params {h.params}")
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
