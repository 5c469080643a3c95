"""The fastai import round trip on MovieLens 100K (part of features.py; run in its own process,
since importing fastai patches torch): train fastai's collab learner on u1.base as its lesson does
(50 factors, y_range (0, 5.5), ``fit_one_cycle(5, 5e-3, wd=0.1)``), import it with
``collabemb.from_fastai``, and compare predictions on every u1.test pair with ``learn.get_preds``.

    python benchmarks/fastai_roundtrip.py DATA_DIR FOLD SEED   (prints one JSON object)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")  # fastai's UserWarnings about non-writable numpy arrays

from fastai.collab import CollabDataLoaders, collab_learner  # noqa: E402
from fastai.torch_core import set_seed  # noqa: E402

import collabemb as ce  # noqa: E402


def main(data: Path, fold: int, seed: int) -> dict:
    torch.set_num_threads(2)
    train, test = ce.read_split(data / f"u{fold}.base", data / f"u{fold}.test", layout="ml-100k")
    set_seed(seed)
    frame = train.frame[["user", "item", "rating"]]
    t0 = time.perf_counter()
    dls = CollabDataLoaders.from_df(frame, bs=64, seed=seed, valid_pct=0.1)
    learn = collab_learner(dls, n_factors=50, y_range=(0, 5.5))
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(5, 5e-3, wd=0.1)
    fastai_fit_s = time.perf_counter() - t0
    pairs = test.frame[["user", "item"]]
    t0 = time.perf_counter()
    with learn.no_bar():
        fastai_preds = learn.get_preds(dl=learn.dls.test_dl(pairs))[0].numpy()
    get_preds_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = ce.from_fastai(learn)
    import_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ce.save_model(model, Path(tmp) / "from-fastai")
        model = ce.load_model(Path(tmp) / "from-fastai")
        save_load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = model.predict(pairs["user"], pairs["item"])
    predict_s = time.perf_counter() - t0
    truth = test.frame["rating"].to_numpy(np.float64)
    unseen = ~(ours["user_known"] & ours["item_known"]).to_numpy()
    return {
        "n_test": len(pairs),
        "n_unseen_pairs": int(unseen.sum()),
        "max_abs_diff": float(np.abs(ours["prediction"].to_numpy() - fastai_preds).max()),
        "fastai_rmse": float(np.sqrt(np.mean((fastai_preds - truth) ** 2))),
        "imported_rmse": float(np.sqrt(np.mean((ours["prediction"].to_numpy() - truth) ** 2))),
        "fastai_fit_s": fastai_fit_s,
        "get_preds_s": get_preds_s,
        "import_s": import_s,
        "save_load_s": save_load_s,
        "predict_s": predict_s,
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
