"""Write ``fastai_to_xgboost.ipynb`` from the cell sources below, run, with its outputs.

Edit the cells here, then run ``python notebooks/make_fastai_to_xgboost.py`` (from any folder); the
notebook is executed top to bottom and stored with the outputs of that run, and
``tests/test_notebooks.py`` checks it against these cells and runs it again. Needs fastai
(``.ci/install`` installs it) and XGBoost (the ``test`` or ``xgboost`` extra).
"""

from __future__ import annotations

from pathlib import Path

from notebook_writer import write_notebook

CELLS: list[tuple[str, str]] = [
    (
        "md",
        """\
# From fastai to XGBoost

You trained fastai's collab learner and now want its embeddings as features for a gradient-boosted
model. This notebook goes the whole way on the bundled sample (synthetic, MovieLens-shaped: 900
users, 1,600 movies, 90,000 ratings):

1. train a fastai `collab_learner` as its lesson does;
2. **import** it with `collabemb.from_fastai` and check that the predictions are fastai's;
3. see what `#na#` (row 0) is and what to do with it;
4. give XGBoost the embeddings as features, and see why features from a model trained on the very
   rows XGBoost learns from **leak the target**, and how cross-fitting (`collabemb.EmbeddingFeatures`)
   avoids it.

Runs in about a minute on two CPU cores.""",
    ),
    (
        "code",
        """\
import io
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Image, display
from threadpoolctl import threadpool_limits
from xgboost import XGBRegressor

warnings.filterwarnings("ignore", category=UserWarning)  # fastai warns about read-only numpy arrays
from fastai.collab import CollabDataLoaders, collab_learner
from fastai.torch_core import set_seed

import collabemb

torch.set_num_threads(2)
DATA = Path("../datasets/sample")  # relative to this notebook's folder
ratings = collabemb.read_ratings(DATA / "ratings.csv")
train, test = collabemb.split_random(ratings, 0.2, seed=0)
print(f"train {len(train):,} / test {len(test):,} ratings")""",
    ),
    (
        "md",
        """\
## 1. Train in fastai

`CollabDataLoaders.from_df` numbers users and items with `Categorify`: `dls.classes` lists each
column's values, and index 0 of every list is `#na#`.""",
    ),
    (
        "code",
        """\
set_seed(0)
dls = CollabDataLoaders.from_df(train.frame[["user", "item", "rating"]], bs=1024, seed=0, valid_pct=0.1)
learn = collab_learner(dls, n_factors=32, y_range=(0.5, 5.5))
t0 = time.perf_counter()
with learn.no_bar(), learn.no_logging():
    learn.fit_one_cycle(4, 2e-2, wd=0.1)
print(f"fastai trained in {time.perf_counter() - t0:.0f} s")
print("dls.classes['item'][:5] =", [str(v) for v in dls.classes["item"][:5]])""",
    ),
    (
        "md",
        """\
## 2. Import, and check the predictions

`from_fastai(learn)` builds collabemb's registries from `dls.classes` (each fastai row moves to the
row our registry gives its ID), carries the four tables and `y_range` over, and keeps the
learner's training pairs as the model's seen items. On every test pair the two models agree:""",
    ),
    (
        "code",
        """\
pairs = test.frame[["user", "item"]]
with learn.no_bar():
    fastai_pred = learn.get_preds(dl=learn.dls.test_dl(pairs))[0].numpy()

model = collabemb.from_fastai(learn)
ours = model.predict(pairs["user"], pairs["item"])
print(model.module)
print(f"max |collabemb - fastai| over {len(pairs):,} test pairs: {np.abs(ours.prediction.to_numpy() - fastai_pred).max():.2e}")
print(f"fastai test RMSE {np.sqrt(np.mean((fastai_pred - test.frame.rating.to_numpy()) ** 2)):.4f}")
# fastai's habit: weight(ids) and bias(ids) read items unless is_item=False, in both libraries
print("same item vectors:", np.array_equal(model.weight([1, 2]), learn.model.weight([1, 2]).numpy()))""",
    ),
    (
        "md",
        """\
## 3. `#na#`, row 0

Every ID fastai did not see in training is coded `#na#`, index 0, and gets that table row. No
training rating is ever `#na#`, so fastai never trains the row: it keeps its random start, and a new
user's predictions are noise around the middle of `y_range`. The import keeps it as it is (the
identity says `row0="untrained"`); `unknown_row="fitted"` solves it on the learner's training
ratings as the best single average user and item, every other row fixed.""",
    ),
    (
        "code",
        """\
new_user = 10_000_000
some_items = test.frame.item.iloc[:5].tolist()
fitted_row0 = collabemb.from_fastai(learn, unknown_row="fitted")
pd.DataFrame(
    {
        "item": some_items,
        "row 0 as fastai left it": model.predict([new_user] * 5, some_items).prediction,
        "row 0 fitted": fitted_row0.predict([new_user] * 5, some_items).prediction,
        "mean rating of the item": [train.frame.rating[train.frame.item == i].mean() for i in some_items],
    }
).round(3)""",
    ),
    (
        "md",
        """\
## 4. Embeddings as features for XGBoost

Three ways to hand the IDs to XGBoost, all with the same settings, plus the item's genres and year
as side columns:

* **label-encoded IDs**: the row numbers, as two numeric columns;
* **leaky features**: the imported fastai model's vectors and biases (`to_features`). That model
  was trained on these very ratings, so each training row's features already encode its own
  rating: XGBoost learns to trust them more than they deserve on new rows;
* **cross-fitted features**: `EmbeddingFeatures.fit_transform` splits the training rows into 5
  folds and gives each fold the features of a collabemb model fitted on the other four (as
  scikit-learn's `TargetEncoder` does), so no training row has seen its own rating; the test rows
  get the features of a model fitted on all of them.""",
    ),
    (
        "code",
        """\
items = pd.read_csv(DATA / "items.csv")
genres = items.genres.str.get_dummies("|").add_prefix("genre_")
side = pd.concat([items[["item"]], items.title.str.extract(r"\\((\\d{4})\\)$")[0].astype(float).rename("year"), genres], axis=1)


def side_columns(frame):
    return frame[["item"]].merge(side, on="item", how="left").drop(columns="item").to_numpy(np.float32)


x = {"train": train.frame[["user", "item"]], "test": test.frame[["user", "item"]]}
y = {"train": train.frame.rating.to_numpy(np.float64), "test": test.frame.rating.to_numpy(np.float64)}
label = {part: np.column_stack([model.rows(f.user, "user"), model.rows(f.item, "item")]).astype(np.float32) for part, f in x.items()}
leaky = {part: collabemb.to_features(model, f).drop(columns=["user", "item"]).to_numpy(np.float32) for part, f in x.items()}
cross = collabemb.EmbeddingFeatures(cv=5, random_state=0, settings={"n_factors": 32, "epochs": 10})
with threadpool_limits(1):
    crossed = {"train": cross.fit_transform(x["train"], y["train"])}  # each fold's features from the other folds' model
crossed["test"] = cross.transform(x["test"])  # the model fitted on all training rows
print("feature columns:", leaky["train"].shape[1], "(leaky),", crossed["train"].shape[1], "(cross-fitted), + side", side.shape[1] - 1)""",
    ),
    (
        "code",
        """\
def xgboost_rmse(features):
    booster = XGBRegressor(n_estimators=200, learning_rate=0.08, max_depth=6, tree_method="hist", random_state=0, n_jobs=2)
    inputs = {part: np.hstack([features[part], side_columns(x[part])]) for part in ("train", "test")}
    booster.fit(inputs["train"], y["train"])
    return tuple(np.sqrt(np.mean((booster.predict(inputs[part]) - y[part]) ** 2)) for part in ("train", "test"))


results = pd.DataFrame(
    [(name, *xgboost_rmse(f)) for name, f in [("label-encoded IDs", label), ("leaky features", leaky), ("cross-fitted features", crossed)]],
    columns=["XGBoost on", "train RMSE", "test RMSE"],
).set_index("XGBoost on")
results.loc["fastai alone (reference)"] = [np.nan, np.sqrt(np.mean((fastai_pred - y["test"]) ** 2))]
results.round(4)""",
    ),
    (
        "md",
        """\
The leaky features give the lowest *training* error and a worse *test* error than the
cross-fitted ones: the gap between the two columns is the leak. Cross-fitted features are what to
hand a downstream model trained on the same ratings; features of a model trained on *other* data
(or on earlier ratings than the rows being predicted) do not leak and can be used as they are.""",
    ),
    (
        "code",
        """\
fig, ax = plt.subplots(figsize=(6.5, 2.6), dpi=90)
shown = results.iloc[:3]
ax.barh(shown.index, shown["test RMSE"], color=["#999999", "#d08770", "#5e81ac"])
ax.barh(shown.index, shown["train RMSE"], color="none", edgecolor="black", hatch="//", label="train RMSE")
ax.set_xlim(0.6, max(shown["test RMSE"].max(), shown["train RMSE"].max()) + 0.05)
ax.set_xlabel("RMSE (bars: test; hatched outline: train)")
ax.invert_yaxis()
ax.legend(loc="lower right")
fig.tight_layout()
png = io.BytesIO()
fig.savefig(png, format="png")
plt.close(fig)
display(Image(png.getvalue()))""",
    ),
]

if __name__ == "__main__":
    write_notebook(CELLS, Path(__file__).resolve().parent / "fastai_to_xgboost.ipynb")
