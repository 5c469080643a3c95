"""Embeddings as features for tabular models, a demographic probe, and export / feature timings.

On MovieLens 100K fold u1 (read from ``../shared/data/ml-100k``):

1. **Rating regression on u1.test**, every model trained on u1.base only. u1.base is split once
   (seeded) into a 90% *fit* part and a 10% *holdout*:
   (a) scikit-learn ``HistGradientBoostingRegressor`` on label-encoded user and item IDs;
   (b) sparse one-hot user and item IDs, which gradient boosting cannot take: a ridge
       regression (alpha by 5-fold CV) and a random forest, both on all of u1.base;
   (c) the same gradient boosting on the user and item embeddings, biases and known flags
       (``to_features``) of a collabemb model (default settings) fitted on the fit part, saved
       and loaded back as an artifact.
   Both gradient boostings train on the fit part and stop early on the holdout. For (c) that
   matters: the embeddings were fitted to the fit part's ratings, so a validation split drawn
   from those ratings cannot see the boosting overfit to in-sample artefacts (with the default
   in-sample early stopping and 500 rounds the same features gave 0.947 instead of 0.922); the
   holdout holds ratings the embedding model never saw, like the test set.
   The collabemb model's own test RMSE is printed for reference.
2. **Probe**: predict each user's gender and age bracket (``u.user``) from the user embedding and
   bias with a logistic regression (C chosen by an inner 5-fold CV on log loss), by 5-fold
   stratified cross-validation over users, against the majority class.
3. **Timings** on synthetic tables: ``write_embeddings`` of 1M x 64 float32 rows to parquet
   (and npy), and ``to_features`` on a 1M-row frame (user and item columns); medians of
   ``--repeats`` runs.
4. **Leaky vs cross-fitted features** (``crossfit.py``): XGBoost and HistGradientBoosting on all of
   u1.base with (a) label-encoded IDs, (b) features of a model fitted on the same rows, (c) the
   cross-fitted features of ``EmbeddingFeatures.fit_transform``; each alone and with the user and
   item side columns; medians of ``--seeds`` seeds. Bar: (c) beats (a) and (b) with XGBoost.
5. **fastai import round trip** (``fastai_roundtrip.py``, its own process): fastai's collab
   learner trained on u1.base, imported with ``from_fastai``; max abs prediction difference
   against ``learn.get_preds`` on u1.test (bar: 1e-5) and the seconds each step takes.

    flock /tmp/collabemb-bench.lock python benchmarks/features.py [--parts regression,probe,timings,crossfit,fastai] [--seeds 5]

Prints the tables and appends them to benchmarks/RESULTS.md with date, machine and command.
Needs scikit-learn, XGBoost and fastai (``bash .ci/install`` installs them; or
``pip install -e ".[bench,xgboost,fastai]"`` then ``pip install --no-deps fastai``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from threadpoolctl import threadpool_limits

import collabemb as ce

import crossfit
from machine import append_results

HERE = Path(__file__).resolve().parent
AGE_BRACKETS = ([0, 25, 35, 45, 200], ["<25", "25-34", "35-44", "45+"])
RIDGE_ALPHAS = (0.3, 1.0, 3.0, 10.0, 30.0)
PROBE_CS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
CROSSFIT_SETTINGS = {"n_factors": 32, "epochs": 10}


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - np.asarray(truth, np.float64)) ** 2)))


def gbm_fit_predict(x_fit, y_fit, x_holdout, y_holdout, x_test, seed: int) -> tuple[np.ndarray, int]:
    """The same boosting for (a) and (c): up to 1000 rounds, early stopping on the holdout."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    model = HistGradientBoostingRegressor(max_iter=1000, learning_rate=0.1, early_stopping=True, n_iter_no_change=10, random_state=seed)
    model.fit(x_fit, y_fit, X_val=x_holdout, y_val=y_holdout)
    return model.predict(x_test), int(model.n_iter_)


def one_hot(frame: pd.DataFrame, users: ce.IdRegistry, items: ce.IdRegistry) -> sparse.csr_matrix:
    """(n, n_user_rows + n_item_rows) sparse 0/1 matrix; unseen IDs fall in the row-0 columns."""
    u, i, n = users.encode(frame["user"]), items.encode(frame["item"]), len(frame)
    cols = np.stack([u, users.n_rows + i], axis=1).ravel()
    return sparse.csr_matrix((np.ones(2 * n, np.float32), (np.repeat(np.arange(n), 2), cols)), shape=(n, users.n_rows + items.n_rows))


def ridge_cv(x: sparse.csr_matrix, y: np.ndarray, seed: int) -> tuple[object, float]:
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold

    folds = list(KFold(5, shuffle=True, random_state=seed).split(x))
    scores = {a: statistics.fmean(rmse(Ridge(alpha=a).fit(x[tr], y[tr]).predict(x[va]), y[va]) for tr, va in folds) for a in RIDGE_ALPHAS}
    best = min(scores, key=scores.get)
    return Ridge(alpha=best).fit(x, y), best


def regression(
    train: ce.Ratings, fit_part: ce.Ratings, holdout: ce.Ratings, test: ce.Ratings, model: ce.FittedModel, args
) -> list[tuple[str, str, float, float]]:
    from sklearn.ensemble import RandomForestRegressor

    y_tr = train.frame["rating"].to_numpy(np.float64)
    y_fit = fit_part.frame["rating"].to_numpy(np.float64)
    y_hold = holdout.frame["rating"].to_numpy(np.float64)
    y_te = test.frame["rating"].to_numpy(np.float64)
    rows = []
    rounds = {}
    # IDs of all of u1.base for (a) and (b); the embedding model knows those of its fit part only
    users, items = ce.IdRegistry(train.frame["user"], name="user"), ce.IdRegistry(train.frame["item"], name="item")

    def record(features: str, learner: str, fit_predict) -> None:
        t0 = time.perf_counter()
        pred = fit_predict()
        rows.append((features, learner, rmse(pred, y_te), time.perf_counter() - t0))
        print(f"  {features:<44} {learner:<40} RMSE {rows[-1][2]:.4f}  ({rows[-1][3]:.1f} s)", flush=True)

    # (a) label-encoded IDs: rows of sorted raw IDs (0 = unseen), as numbers
    def label(frame):
        return np.column_stack([users.encode(frame["user"]), items.encode(frame["item"])]).astype(np.float32)

    def labelled():
        pred, rounds["a"] = gbm_fit_predict(label(fit_part.frame), y_fit, label(holdout.frame), y_hold, label(test.frame), args.seed)
        return pred

    record("(a) label-encoded user + item ID", "HistGradientBoosting", labelled)
    rows[-1] = (rows[-1][0], f"HistGradientBoosting ({rounds['a']} rounds)", *rows[-1][2:])

    # (b) one-hot IDs, sparse
    x_tr, x_te = one_hot(train.frame, users, items), one_hot(test.frame, users, items)
    alpha = {}

    def ridge():
        fitted, alpha["best"] = ridge_cv(x_tr, y_tr, args.seed)
        return fitted.predict(x_te)

    record("(b) one-hot user + item ID (sparse)", "Ridge (alpha by 5-fold CV)", ridge)
    rows[-1] = (rows[-1][0], f"Ridge (alpha {alpha['best']:g} by 5-fold CV)", *rows[-1][2:])
    forest = RandomForestRegressor(n_estimators=args.trees, min_samples_leaf=5, max_features=0.3, n_jobs=args.jobs, random_state=args.seed)
    record(
        "(b) one-hot user + item ID (sparse)",
        f"RandomForest ({args.trees} trees, leaf 5)",
        lambda: forest.fit(x_tr.tocsc(), y_tr).predict(x_te),
    )

    # (c) exported embeddings + biases + known flags
    def features(ratings: ce.Ratings) -> pd.DataFrame:
        return ce.to_features(model, ratings.frame[["user", "item"]]).drop(columns=["user", "item"])

    def embedded():
        pred, rounds["c"] = gbm_fit_predict(features(fit_part), y_fit, features(holdout), y_hold, features(test), args.seed)
        return pred

    k = model.n_factors
    record(f"(c) embeddings {k}+{k} + biases + known flags", "HistGradientBoosting", embedded)
    rows[-1] = (rows[-1][0], f"HistGradientBoosting ({rounds['c']} rounds)", *rows[-1][2:])
    rows.append(("(ref) collabemb's own prediction", "EmbeddingDotBias (fit part)", ce.rmse(model, test), float("nan")))
    print(f"  {rows[-1][0]:<44} {rows[-1][1]:<40} RMSE {rows[-1][2]:.4f}", flush=True)
    return rows


def probe(model: ce.FittedModel, data: Path, seed: int) -> list[tuple[str, int, float, float, float, float]]:
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_validate
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    users = pd.read_csv(data / "u.user", sep="|", header=None, names=["user", "age", "gender", "occupation", "zip"])
    feats = ce.to_features(model, users[["user"]], item_col=None).drop(columns=["user"])
    x = feats.drop(columns=["user_known"]).to_numpy(np.float64)
    targets = {
        "gender": users["gender"].to_numpy(),
        "age bracket (" + ", ".join(AGE_BRACKETS[1]) + ")": pd.cut(users["age"], AGE_BRACKETS[0], right=False, labels=AGE_BRACKETS[1])
        .astype(str)
        .to_numpy(),
    }
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    rows = []
    for name, y in targets.items():
        scoring = ("accuracy", "balanced_accuracy", "roc_auc_ovr")
        inner = StratifiedKFold(5, shuffle=True, random_state=seed + 1)
        logit = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
        tuned = GridSearchCV(logit, {"logisticregression__C": list(PROBE_CS)}, cv=inner, scoring="neg_log_loss")
        got = cross_validate(tuned, x, y, cv=cv, scoring=scoring)
        base = cross_validate(DummyClassifier(strategy="most_frequent"), x, y, cv=cv, scoring=scoring)
        rows.append((name, len(np.unique(y)), *(float(r[f"test_{s}"].mean()) for s in scoring for r in (got, base))))
        a, ab, ba, bb, auc, _ = rows[-1][2:]
        print(f"  {name:<36} accuracy {a:.3f} vs majority {ab:.3f}; balanced {ba:.3f} vs {bb:.3f}; ROC AUC {auc:.3f} vs 0.5", flush=True)
    n_known = int(feats["user_known"].sum())
    print(f"  ({len(users)} users in u.user, {n_known} with a trained row)")
    return rows


def timings(repeats: int, seed: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    n_users, n_items, k, n_rows = 1_000_000, 50_000, 64, 1_000_000
    module = ce.EmbeddingDotBias(
        ce.IdRegistry(np.arange(1, n_users + 1), name="user"), ce.IdRegistry(np.arange(1, n_items + 1), name="item"), n_factors=k
    )
    model = ce.FittedModel(module)
    frame = pd.DataFrame(
        {
            "user": rng.integers(1, int(n_users * 1.05), n_rows),  # ~5% unseen IDs, as in real data
            "item": rng.integers(1, int(n_items * 1.05), n_rows),
            "x": rng.random(n_rows),
        }
    )
    out: dict[str, list[float]] = {"parquet": [], "npy": [], "features": []}
    with tempfile.TemporaryDirectory(dir=HERE) as tmp:
        for _ in range(repeats):
            t0 = time.perf_counter()
            ce.write_embeddings(model, Path(tmp) / "users.parquet", "user")
            out["parquet"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ce.write_embeddings(model, Path(tmp) / "users-npy", "user", format="npy")
            out["npy"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            feats = ce.to_features(model, frame)
            out["features"].append(time.perf_counter() - t0)
        back = ce.read_embeddings(Path(tmp) / "users.parquet")
        assert back.equals(ce.embedding_frame(model, "user")), "parquet round trip differs"
        assert feats.shape == (n_rows, 3 + 2 * (k + 2))
    for name, values in out.items():
        print(f"  {name:<9} median {statistics.median(values):.2f} s  (runs: {', '.join(f'{v:.2f}' for v in values)})", flush=True)
    return out


PARTS = ("regression", "probe", "timings", "crossfit", "fastai")


def fastai_roundtrip(data: Path, fold: int, seed: int) -> dict:
    """benchmarks/fastai_roundtrip.py in its own process (importing fastai patches torch)."""
    proc = subprocess.run(
        [sys.executable, str(HERE / "fastai_roundtrip.py"), str(data), str(fold), str(seed)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"fastai round trip failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "ml-100k"))
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trees", type=int, default=30, help="random forest size for the one-hot baseline")
    parser.add_argument("--jobs", type=int, default=1, help="scikit-learn n_jobs for the random forest")
    parser.add_argument("--sk-threads", type=int, default=1, help="OpenMP / BLAS threads for scikit-learn (threadpoolctl)")
    parser.add_argument("--repeats", type=int, default=5, help="timing runs (medians are reported)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the cross-fitting comparison (medians are reported)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated parts to run, of {', '.join(PARTS)}")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    if set(parts) - set(PARTS):
        parser.error(f"--parts takes {', '.join(PARTS)}; got {args.parts}")
    data = Path(args.data)
    train, test = ce.read_split(data / f"u{args.fold}.base", data / f"u{args.fold}.test", layout="ml-100k")
    checks, lines = [], []
    if "regression" in parts or "probe" in parts:
        fit_part, holdout = ce.split_random(train, 0.1, seed=args.seed)
        model, fit_s = fitted_on_fit_part(fit_part, len(holdout), args)
        with threadpool_limits(args.sk_threads):  # OpenMP spinning on shared cores made boosting 10x slower
            if "regression" in parts:
                print("rating regression on the test part:")
                reg_rows = regression(train, fit_part, holdout, test, model, args)
                rmse_of = {r[0][:3]: min(x[2] for x in reg_rows if x[0][:3] == r[0][:3]) for r in reg_rows}
                checks.append(("(c) test RMSE below (a) and (b)", rmse_of["(c)"] < min(rmse_of["(a)"], rmse_of["(b)"])))
                lines += regression_lines(reg_rows, fit_s, args)
            if "probe" in parts:
                print("probe: demographics from user embeddings (5-fold CV over users):")
                probe_rows = probe(model, data, args.seed)
                checks.append(("probe beats the majority class (accuracy, every target)", all(r[2] > r[3] for r in probe_rows)))
                lines += probe_lines(probe_rows)
    if "timings" in parts:
        print(f"timings ({args.repeats} runs; synthetic 1M users x 64 factors, 1M-row frame):")
        times = timings(args.repeats, args.seed)
        checks.append(("parquet export of 1M x 64 <= 5 s (median)", statistics.median(times["parquet"]) <= 5.0))
        checks.append(("to_features on 1M rows <= 2 s (median)", statistics.median(times["features"]) <= 2.0))
        lines += timing_lines(times, args)
    if "crossfit" in parts:
        print(f"leaky vs cross-fitted features, XGBoost and HistGradientBoosting ({args.seeds} seeds):")
        with threadpool_limits(args.sk_threads):
            results = crossfit.run(train, test, data, seeds=args.seeds, threads=args.sk_threads, settings=CROSSFIT_SETTINGS)
        for side in (False, True):
            m = crossfit.medians(results, "XGBoost", side)
            with_side = " with side columns" if side else ""
            checks.append((f"XGBoost{with_side}: (c) cross-fitted below (a) and (b) (medians)", m["(c)"] < min(m["(a)"], m["(b)"])))
        lines += crossfit_lines(results, args)
    if "fastai" in parts:
        print("fastai import round trip (fastai trains in its own process):")
        trip = fastai_roundtrip(data, args.fold, args.seed)
        print("  " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in trip.items()))
        checks.append(("fastai import matches get_preds to 1e-5", trip["max_abs_diff"] <= 1e-5))
        lines += fastai_lines(trip, args)
    for name, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    lines += ["", "Bar: " + "; ".join(f"{name}: {'pass' if ok else 'FAIL'}" for name, ok in checks) + "."]
    if not args.no_write:
        append_results(
            HERE / "RESULTS.md",
            title=f"Embeddings as features on MovieLens 100K u{args.fold} (benchmarks/features.py)",
            command="python benchmarks/features.py " + " ".join(sys.argv[1:]),
            body="\n".join(lines),
        )
    if not all(ok for _, ok in checks):
        sys.exit(1)


def fitted_on_fit_part(fit_part: ce.Ratings, n_holdout: int, args) -> tuple[ce.FittedModel, float]:
    """collabemb (defaults) fitted on the 90% fit part of u1.base, saved and loaded back."""
    t0 = time.perf_counter()
    model = ce.fit(fit_part, seed=args.seed, progress=False)
    fit_s = time.perf_counter() - t0
    print(
        f"u{args.fold}: {len(fit_part) + n_holdout} training ({len(fit_part)} fit + {n_holdout} holdout) ratings; collabemb fit in {fit_s:.1f} s"
    )
    with tempfile.TemporaryDirectory(dir=HERE) as tmp:  # the features come from the saved artifact, as a user gets them
        ce.save_model(model, Path(tmp) / "u1-model")
        return ce.load_model(Path(tmp) / "u1-model"), fit_s


def regression_lines(reg_rows, fit_s: float, args) -> list[str]:
    return [
        f"Fold u{args.fold}; every learner trained on u{args.fold}.base only, split once (seed {args.seed}) into a 90% fit part and a "
        f"10% holdout. collabemb: `fit` defaults on the fit part ({fit_s:.1f} s), saved and reloaded. HistGradientBoosting (a, c): "
        "lr 0.1, trained on the fit part, early stopping (10 rounds) on the holdout, whose ratings the embedding model never saw "
        "(an in-sample validation split cannot see the boosting overfit in-sample embeddings). Ridge and random forest: all of "
        f"u{args.fold}.base. scikit-learn on {args.sk_threads} thread(s), random forest n_jobs {args.jobs}.",
        "",
        "| features | learner | test RMSE | fit + predict s |",
        "| --- | --- | ---: | ---: |",
        *[f"| {f} | {learner} | {r:.4f} | {'' if np.isnan(s) else f'{s:.1f}'} |" for f, learner, r, s in reg_rows],
        "",
    ]


def probe_lines(probe_rows) -> list[str]:
    return [
        "Probe: logistic regression (standardised; C by inner 5-fold CV on log loss) on the user embedding + bias, "
        "5-fold stratified CV over the 943 users of `u.user`; the majority class predicts one label for everyone:",
        "",
        "| target | classes | accuracy | majority class | balanced accuracy | majority, balanced | ROC AUC (one-vs-rest) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {name} | {n} | {a:.3f} | {b:.3f} | {ba:.3f} | {bb:.3f} | {auc:.3f} |" for name, n, a, b, ba, bb, auc, _ in probe_rows],
        "",
    ]


def timing_lines(times: dict[str, list[float]], args) -> list[str]:
    def row(label: str, key: str) -> str:
        return f"| {label} | {statistics.median(times[key]):.2f} | {', '.join(f'{v:.2f}' for v in times[key])} |"

    return [
        f"Timings, median of {args.repeats} (synthetic model: 1,000,000 users x 64 factors; frame: 1,000,000 rows, ~5% unseen IDs):",
        "",
        "| operation | median s | runs |",
        "| --- | ---: | --- |",
        row("`write_embeddings` users -> parquet (1,000,001 rows x 64 + bias, atomic)", "parquet"),
        row("`write_embeddings` users -> npy directory", "npy"),
        row("`to_features` user + item (1M rows -> 132 columns added)", "features"),
        "",
    ]


def crossfit_lines(results: dict, args) -> list[str]:
    cross_s = ", ".join(f"{s:.1f}" for s in results["seconds"])
    settings = ", ".join(f"{k} {v}" for k, v in CROSSFIT_SETTINGS.items())
    return [
        f"Leaky vs cross-fitted embedding features (`benchmarks/crossfit.py`): every booster trained on all of u{args.fold}.base and "
        f"scored on u{args.fold}.test, medians of {args.seeds} seeds (seed = EmbeddingFeatures random_state and booster random_state). "
        "(a) label-encoded IDs; (b) leaky: `EmbeddingFeatures.fit(X, y).transform(X)`, a model fitted on the very rows the booster "
        "learns from; (c) cross-fitted: `EmbeddingFeatures.fit_transform(X, y)`, 5 folds; test rows get the full model's features in "
        f"(b) and (c). EmbeddingFeatures settings: {settings}. Side columns: u.user age, gender, occupation code; u.item year and 19 "
        f"genre flags. Boosters, fixed for every feature set: XGBoost hist, {crossfit.ROUNDS} rounds, lr {crossfit.LEARNING_RATE}, "
        f"depth 6; HistGradientBoosting {crossfit.ROUNDS} rounds, lr {crossfit.LEARNING_RATE}, no early stopping; "
        f"{args.sk_threads} thread(s). Cross-fitting (6 collabemb fits) took {cross_s} s per seed.",
        "",
        *crossfit.table(results),
        "",
    ]


def fastai_lines(trip: dict, args) -> list[str]:
    return [
        f"fastai import round trip (`benchmarks/fastai_roundtrip.py`, fastai's lesson settings: 50 factors, y_range (0, 5.5), "
        f"bs 64, `fit_one_cycle(5, 5e-3, wd=0.1)` on u{args.fold}.base with a 10% validation split, seed {args.seed}):",
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| max abs difference, collabemb vs `learn.get_preds`, all {trip['n_test']} u{args.fold}.test pairs "
        f"({trip['n_unseen_pairs']} with an unseen ID) | {trip['max_abs_diff']:.2e} |",
        f"| test RMSE fastai / imported | {trip['fastai_rmse']:.4f} / {trip['imported_rmse']:.4f} |",
        f"| fastai training s | {trip['fastai_fit_s']:.1f} |",
        f"| `from_fastai(learn)` s | {trip['import_s']:.3f} |",
        f"| `save_model` + `load_model` s | {trip['save_load_s']:.3f} |",
        f"| predict {trip['n_test']} pairs s: fastai `get_preds` / collabemb `predict` | {trip['get_preds_s']:.3f} / {trip['predict_s']:.3f} |",
        "",
    ]


if __name__ == "__main__":
    main()
