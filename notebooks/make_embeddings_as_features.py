"""Write ``embeddings_as_features.ipynb`` from the cell sources below, with the outputs of a run.

Edit the cells here, then run ``cd notebooks && python make_embeddings_as_features.py``: the notebook is executed top to
bottom and stored with its outputs (tables, printed results, plots), so it reads complete on a
code host. ``tests/test_notebooks.py`` checks that the stored notebook matches these cells and
ran, and executes it again against the current library.
"""

from __future__ import annotations

from pathlib import Path

from notebook_writer import write_notebook

CELLS: list[tuple[str, str]] = [
    (
        "md",
        """\
# Embeddings as features

Collaborative-filtering models are often trained for their vectors: to hand them to a gradient
boosting model, a random forest or another neural network. This notebook does that on the
bundled sample (synthetic, MovieLens-shaped: 900 users, 1,600 movies, 90,000 ratings):

1. train collabemb on part of the data and **export** the item table (parquet, with titles);
2. turn the IDs of any DataFrame into **features** with `to_features`;
3. train the **same tabular model** on label-encoded IDs, on one-hot IDs and on embedding
   features, and compare them on held-out ratings;
4. hand the table to **torch** and look at a **map** of the items.

Runs in well under a minute on two CPU cores.""",
    ),
    (
        "code",
        """\
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Image, display
from scipy import sparse
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from threadpoolctl import threadpool_limits

import collabemb

DATA = Path("../datasets/sample")  # relative to this notebook's folder
OUT = Path(tempfile.mkdtemp(prefix="embeddings-as-features-"))
pd.set_option("display.precision", 3)""",
    ),
    (
        "md",
        """\
## Three parts: fit, holdout, test

The test set (20%) is what every model is judged on. The rest is split once more: the collabemb
model is fitted on the *fit* part (90%), and the *holdout* (10%) holds ratings it never saw. The
tabular models train on the fit part and use the holdout to stop boosting early. That matters for
the embedding features: they were fitted to the fit part's ratings, so they describe those ratings
better than new ones, and only ratings the embedding model never saw can tell when a tree model
starts learning that difference instead of the taste it stands for.""",
    ),
    (
        "code",
        """\
ratings = collabemb.read_ratings(DATA / "ratings.csv")
movies = pd.read_csv(DATA / "items.csv")
rest, test = collabemb.split_random(ratings, 0.2, seed=0)
fit_part, holdout = collabemb.split_random(rest, 0.1, seed=0)
print(f"fit {len(fit_part):,} / holdout {len(holdout):,} / test {len(test):,} ratings")

model = collabemb.fit(fit_part, epochs=10, seed=0, progress=False)
model.set_item_metadata(movies)
cf_rmse = collabemb.rmse(model, test)
print(f"collabemb's own test RMSE: {cf_rmse:.4f}")""",
    ),
    (
        "md",
        """\
## Export: the item table by raw ID

`collabemb.embedding_frame(model, "item")` is the table as a DataFrame: `row`, the raw `item` ID, any metadata,
`bias`, and one float32 column per factor. **Row 0 comes first**: it is the trained unknown slot,
with no raw ID (`<NA>`), and stands for every item the model never saw. `unknown_row=False`
leaves it out. `write_embeddings` writes the same table to parquet or CSV, an `.npy` directory or the
TensorBoard projector files, atomically; parquet reads back bit for bit.""",
    ),
    (
        "code",
        """\
items_table = collabemb.embedding_frame(model, "item", metadata=True)  # True: the titles and genres stored with the model
items_table.iloc[:4, :8]""",
    ),
    (
        "code",
        """\
collabemb.write_embeddings(model, OUT / "items.parquet", "item", metadata=True)
collabemb.write_embeddings(model, OUT / "projector", "item", format="projector", metadata=True)
round_trip_equal = collabemb.read_embeddings(OUT / "items.parquet").equals(items_table)
print("parquet round trip identical:", round_trip_equal)
print("projector files:", sorted(p.name for p in (OUT / "projector").iterdir()))
print((OUT / "projector" / "metadata.tsv").read_text().splitlines()[:3])""",
    ),
    (
        "md",
        """\
## Features for any DataFrame

`collabemb.to_features(model, df, user_col=..., item_col=...)` adds `user_emb_0..63`, `user_bias`,
`user_known` and the same for items, one vectorised lookup per side. IDs the model has never seen
(here a new user, and an item from the holdout that the fit part did not have) get the trained
unknown slot and `*_known == False`, so a tree model can treat them apart.""",
    ),
    (
        "code",
        """\
new_user = 10_000_000
some = pd.DataFrame({"user": [int(test.frame.user.iloc[0]), new_user], "item": [int(test.frame.item.iloc[0])] * 2})
example = collabemb.to_features(model, some)
example[["user", "item", "user_emb_0", "user_bias", "user_known", "item_emb_0", "item_bias", "item_known"]]""",
    ),
    (
        "code",
        """\
def features(r):
    return collabemb.to_features(model, r.frame[["user", "item"]]).drop(columns=["user", "item"])

X_fit, X_hold, X_test = features(fit_part), features(holdout), features(test)
y_fit, y_hold, y_test = (r.frame.rating.to_numpy(np.float64) for r in (fit_part, holdout, test))
print("feature matrix:", X_fit.shape, "columns like", list(X_fit.columns[:2]), "...", list(X_fit.columns[-3:]))""",
    ),
    (
        "md",
        """\
## The same tabular models on three encodings of the IDs

* **label-encoded**: user and item IDs as two integer columns (a row number per ID);
* **one-hot**: one 0/1 column per user and per item, sparse (2,500 columns);
* **embeddings**: the 130 embedding, bias and known columns above.

Two learners: scikit-learn's `HistGradientBoostingRegressor` (learning rate 0.2, early stopping on
the holdout) and a ridge regression. Both run on one thread: scikit-learn's OpenMP default of one
thread per core was ten times slower here while other work shared the cores. Gradient boosting takes only dense input, and a dense one-hot matrix of these
ratings would take about 0.6 GB, so that cell stays empty; ridge on sparse one-hot IDs is the
classic user-bias + item-bias model.""",
    ),
    (
        "code",
        """\
ids = collabemb.IdRegistry(rest.frame.user, name="user"), collabemb.IdRegistry(rest.frame.item, name="item")

def label_encoded(r):
    return np.column_stack([ids[0].encode(r.frame.user), ids[1].encode(r.frame.item)]).astype(np.float32)

def one_hot(r):
    u, i, n = ids[0].encode(r.frame.user), ids[1].encode(r.frame.item), len(r)
    cols = np.stack([u, ids[0].n_rows + i], axis=1).ravel()
    return sparse.csr_matrix((np.ones(2 * n, np.float32), (np.repeat(np.arange(n), 2), cols)), shape=(n, ids[0].n_rows + ids[1].n_rows))

def rmse(pred):
    return float(np.sqrt(np.mean((pred - y_test) ** 2)))

def boosting(x_fit, x_hold, x_test):
    gbm = HistGradientBoostingRegressor(max_iter=500, learning_rate=0.2, early_stopping=True, n_iter_no_change=10, random_state=0)
    return rmse(gbm.fit(x_fit, y_fit, X_val=x_hold, y_val=y_hold).predict(x_test))

def ridge(x_fit, x_test):
    return rmse(Ridge(alpha=3.0).fit(x_fit, y_fit).predict(x_test))

encodings = {
    "label-encoded IDs": (label_encoded(fit_part), label_encoded(holdout), label_encoded(test)),
    "one-hot IDs (sparse)": (one_hot(fit_part), None, one_hot(test)),
    "embeddings + biases": (X_fit, X_hold, X_test),
}
with threadpool_limits(1):
    results = pd.DataFrame(
        {
            "HistGradientBoosting": [boosting(*x) if x[1] is not None else np.nan for x in encodings.values()],
            "Ridge": [ridge(x[0], x[2]) for x in encodings.values()],
        },
        index=pd.Index(encodings, name="features"),
    )
results.loc["(collabemb's own prediction)"] = [cf_rmse, np.nan]
results""",
    ),
    (
        "md",
        """\
Label-encoded IDs say almost nothing to either learner: a row number carries no taste. One-hot
IDs let a linear model learn a bias per user and per item. The embedding features carry the
biases *and* the taste vectors, and gradient boosting gets close to the factorisation model that
produced them, which is the point: the tabular model can now add other columns (time, price,
context) on top of what the ratings taught the embeddings.""",
    ),
    (
        "md",
        """\
## Into another torch network

`collabemb.to_torch(model, "item")` is an `nn.Embedding` carrying the item table (frozen by default), its
biases (`.bias`) and its registry (`.registry`). Index 0 is the unknown slot, not padding. Raw IDs
go through `.lookup(ids)`; a network that predicts *which* item (a probability vector over the
IDs) can feed `.soft(probs)`, the expected embedding `probs @ weight`, which is differentiable in
`probs` and equals the hard lookup for a one-hot vector.""",
    ),
    (
        "code",
        """\
import torch

emb = collabemb.to_torch(model, "item")
print(emb)
rows = emb.rows([1, 2, 99_999])                       # 99_999 is unseen: row 0
one_hot_rows = torch.nn.functional.one_hot(rows, emb.num_embeddings).float()
soft_equals_hard = torch.equal(emb.soft(one_hot_rows), emb(rows))
print("rows:", rows.tolist(), "| soft lookup of one-hot == hard lookup:", soft_equals_hard)""",
    ),
    (
        "md",
        """\
## A map of the items

`plot_pca` draws the items in the plane of their first two principal components and labels the
most-rated ones; `plot_bias` ranks items by learned bias. Both return a matplotlib figure and
write a PNG with `out=` (the command line does the same: `collabemb plot DIR pca --out
map.png`).""",
    ),
    (
        "code",
        """\
collabemb.plot_pca(model, n=30, ratings=fit_part, color_by="genres", out=OUT / "map.png")
display(Image(filename=str(OUT / "map.png"), width=800))""",
    ),
    (
        "code",
        """\
collabemb.plot_bias(model, n=10, ratings=fit_part, min_ratings=20, out=OUT / "bias.png")
display(Image(filename=str(OUT / "bias.png"), width=800))""",
    ),
    (
        "md",
        """\
## The facts this notebook stands on

Checked on every test run (`tests/test_notebooks.py` executes this notebook).""",
    ),
    (
        "code",
        """\
emb_gbm = results.loc["embeddings + biases", "HistGradientBoosting"]
assert emb_gbm < results.loc["label-encoded IDs"].min(), results
assert emb_gbm < results.loc["one-hot IDs (sparse)", "Ridge"], results
assert round_trip_equal
assert example.user_known.tolist() == [True, False]
assert pd.isna(items_table.item.iloc[0]) and items_table.row.iloc[0] == 0
assert soft_equals_hard
assert (OUT / "map.png").stat().st_size > 10_000 and (OUT / "bias.png").stat().st_size > 10_000
shutil.rmtree(OUT)  # the exports and pictures were only for this notebook
print("all checks passed")""",
    ),
]


if __name__ == "__main__":
    write_notebook(CELLS, Path(__file__).with_name("embeddings_as_features.ipynb"))
