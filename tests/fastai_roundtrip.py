"""Run by tests/test_fastai_import.py in its own process (fastai patches torch when imported):
train a small real fastai collab learner, import it with collabemb, and print what was measured
as one JSON object on the last line of stdout.

Usage: python tests/fastai_roundtrip.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")  # fastai's own UserWarnings (non-writable numpy arrays)

from fastai.collab import CollabDataLoaders, collab_learner  # noqa: E402
from fastai.torch_core import set_seed  # noqa: E402

import collabemb as ce  # noqa: E402


def ratings(seed: int = 0, n: int = 4000) -> pd.DataFrame:
    """Planted ratings: int user IDs (not contiguous), str item titles, 1..5 stars."""
    rng = np.random.default_rng(seed)
    users, items, k = rng.choice(10_000, 70, replace=False) + 1, [f"movie {j:03d}" for j in range(90)], 3
    pu, qi = rng.normal(size=(len(users), k)), rng.normal(size=(len(items), k))
    u, i = rng.integers(0, len(users), n), rng.integers(0, len(items), n)
    stars = np.clip(np.rint(3 + (pu[u] * qi[i]).sum(1) + rng.normal(0, 0.5, n)), 1, 5)
    return pd.DataFrame({"userId": users[u], "title": np.array(items, dtype=object)[i], "rating": stars.astype(np.float32)})


def main(out: Path) -> dict:
    set_seed(0)
    df = ratings()
    dls = CollabDataLoaders.from_df(df, item_name="title", bs=128, seed=0, valid_pct=0.2)
    learn = collab_learner(dls, n_factors=6, y_range=(0.5, 5.5))
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(3, 1e-2)
    known = df[["userId", "title"]].drop_duplicates().reset_index(drop=True)
    unseen = pd.DataFrame({"userId": [999_999, int(known.userId[0])], "title": ["movie 000", "never rated"]})
    pairs = pd.concat([known, unseen], ignore_index=True)
    with learn.no_bar():
        fastai_preds = learn.get_preds(dl=learn.dls.test_dl(pairs))[0].numpy()
    result: dict = {"n_pairs": len(pairs), "n_unseen": len(unseen)}
    for row0 in ("untrained", "mean", "fitted"):
        fitted = ce.from_fastai(learn, unknown_row=row0)
        ours = fitted.predict(pairs.userId.to_numpy(), pairs.title.to_numpy())
        diff = np.abs(ours.prediction.to_numpy() - fastai_preds)
        result[row0] = {
            "known_max_diff": float(diff[: len(known)].max()),
            "unseen_max_diff": float(diff[len(known) :].max()),
            "row0": fitted.identity.row0,
            "known_flags": [bool(v) for v in (ours.user_known & ours.item_known)[len(known) :]],
        }
    fitted = ce.from_fastai(learn)
    some_items, some_users = ["movie 003", "movie 007", "movie 042"], [int(v) for v in df.userId.unique()[:4]]
    result["weight_diff"] = float(np.abs(fitted.weight(some_items) - learn.model.weight(some_items).numpy()).max())
    result["user_weight_diff"] = float(
        np.abs(fitted.weight(some_users, is_item=False) - learn.model.weight(some_users, is_item=False).numpy()).max()
    )
    result["bias_diff"] = float(np.abs(fitted.bias(some_items) - learn.model.bias(some_items).numpy()).max())
    train_codes = learn.dls.train_ds.xs
    classes = learn.dls.classes
    train_pairs = {
        (int(classes["userId"][u]), str(classes["title"][i])) for u, i in zip(train_codes.userId, train_codes.title, strict=True)
    }
    seen = fitted.seen_items
    seen_pairs = set()
    for user_row in range(1, fitted.users.n_rows):
        for item_row in seen.indices[seen.indptr[user_row] : seen.indptr[user_row + 1]]:
            seen_pairs.add((int(fitted.users.decode([user_row])[0]), str(fitted.items.decode([item_row])[0])))
    result["seen_equals_train_pairs"] = seen_pairs == train_pairs
    result["n_seen"] = len(seen_pairs)
    ce.save_model(fitted, out / "imported")
    loaded = ce.load_model(out / "imported")
    again = loaded.predict(pairs.userId.to_numpy(), pairs.title.to_numpy())
    result["reloaded_max_diff"] = float(np.abs(again.prediction.to_numpy() - fastai_preds).max())
    result["reloaded_row0"] = loaded.identity.row0
    result["reloaded_params_source"] = loaded.history.params.get("source")
    result["similar"] = ce.similar_items(loaded, ["movie 003"], k=3)["item"].tolist()
    parts = ce.from_fastai_parts({"model": learn.model.state_dict()}, dict(learn.dls.classes), y_range=learn.model.y_range)
    part_preds = parts.predict(pairs.userId.to_numpy(), pairs.title.to_numpy()).prediction.to_numpy()
    result["parts_max_diff"] = float(np.abs(part_preds - fastai_preds).max())
    nn_learn = collab_learner(dls, use_nn=True, layers=[8], y_range=(0.5, 5.5))
    try:
        ce.from_fastai(nn_learn)
        result["embedding_nn"] = "accepted"
    except ValueError as exc:
        result["embedding_nn"] = str(exc)
    return result


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
