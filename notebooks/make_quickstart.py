"""Write ``quickstart.ipynb`` from the cell sources below, with the outputs of a run.

Edit the cells here, then run ``cd notebooks && python make_quickstart.py``: the notebook is executed top to
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
# collabemb quick start

Train a dot-product-plus-biases rating model on the bundled sample (a synthetic, MovieLens-style
set of users rating movies 1-5 stars), then get things *out* of it by raw ID: which
embedding row is my movie, what row 0 is for, a movie's vector and bias, predictions for IDs the
model has never seen, and a saved artifact that reloads to the same predictions.

Runs in about ten seconds on two idle CPU cores.""",
    ),
    (
        "code",
        """\
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

import collabemb

DATA = Path("../datasets/sample")  # relative to this notebook's folder
pd.set_option("display.precision", 3)""",
    ),
    (
        "md",
        """\
## Read the ratings

`read_ratings` validates the file (errors name the file, line and column) and returns a `Ratings`
whose `.frame` has `user`, `item`, `rating` (float32) and, when asked for, `timestamp`. The IDs in
this file are all canonical integers, so they are read as ints; `"007"`-style IDs would stay
strings. The movie catalogue is an ordinary CSV, read with pandas.""",
    ),
    (
        "code",
        """\
ratings = collabemb.read_ratings(DATA / "ratings.csv", timestamp_col="timestamp")
movies = pd.read_csv(DATA / "items.csv", index_col="item")  # item -> title, genres

print(f"{len(ratings):,} ratings, {ratings.frame.user.nunique()} users, {ratings.frame.item.nunique()} items")
ratings.frame.head()""",
    ),
    (
        "code",
        """\
movies.head(3)""",
    ),
    (
        "md",
        """\
## Split and fit

A seeded random 80/20 split. `fit` trains for `epochs` passes (on the CPU with the compiled fast
engine) and returns a `FittedModel`: the torch module (`model.module`, an `EmbeddingDotBias`),
what kind of model it is (`model.identity`), the training pairs (`model.seen_items`) and the
record of every epoch (`model.history`; `model.history.params` holds every setting used).""",
    ),
    (
        "code",
        """\
train, valid = collabemb.split_random(ratings, test_frac=0.2, seed=0)
print(f"train {len(train):,} / valid {len(valid):,}")

model = collabemb.fit(train, valid=valid, epochs=10, progress=False)
model""",
    ),
    (
        "code",
        """\
model.history.to_frame()""",
    ),
    (
        "md",
        """\
How good is that? The simplest baseline predicts the training mean for everything.""",
    ),
    (
        "code",
        """\
train_mean = float(train.frame.rating.mean())
baseline_rmse = float(np.sqrt(np.mean((valid.frame.rating.to_numpy(dtype=np.float64) - train_mean) ** 2)))
valid_rmse = collabemb.rmse(model, valid)
print(f"global-mean baseline RMSE {baseline_rmse:.4f}   model RMSE {valid_rmse:.4f}")""",
    ),
    (
        "md",
        """\
## Which row is my movie?

Each model carries its ID registries, `model.users` and `model.items` (the module's). Known IDs take rows
`1..n` **in sorted order of the raw ID** (not in order of appearance), and `encode` / `decode`
map between the two exactly. Here is the most-rated movie of the training set:""",
    ),
    (
        "code",
        """\
my_movie = int(train.frame.item.value_counts().idxmax())
row = model.items.encode([my_movie])
print(f"item {my_movie} ({movies.title[my_movie]!r}) is row {row[0]}")
print("decode(row) ->", model.items.decode(row))
print("rows 1, 2, 3 belong to items", model.items.decode([1, 2, 3]))

# The sample's item IDs are 1..n without gaps, so here row == ID. With gaps or string IDs it is not:
imdb = collabemb.IdRegistry(["tt0133093", "tt0068646", "tt0110912", "tt0068646"], name="item")
print(imdb, "->", imdb.encode(["tt0110912", "tt0068646"]))""",
    ),
    (
        "md",
        """\
## What is index 0?

Row 0 of every table is the **unknown slot**. It has no raw ID (`decode([0])` refuses), and it is
*trained*: during every epoch a small share of the training rows (`unknown_frac`, 2%) has its user,
or its item, routed to row 0, so row 0 learns an average user and an average movie. `encode`
maps IDs it has never seen to row 0 by default; `unknown="raise"` names them instead.""",
    ),
    (
        "code",
        """\
UNSEEN_USER, UNSEEN_ITEM = 10_000_000, 99_999  # in neither the training set nor the catalogue

print("encode ->", model.items.encode([my_movie, UNSEEN_ITEM]))
try:
    model.items.encode([my_movie, UNSEEN_ITEM], unknown="raise")
except collabemb.UnknownIdError as exc:
    print("UnknownIdError:", exc)
try:
    model.items.decode([0])
except IndexError as exc:
    print("IndexError:", exc)""",
    ),
    (
        "md",
        """\
A brand-new user rating a brand-new movie gets the prediction of the two unknown rows, which
lands close to the training mean (an untrained row 0 would give an arbitrary number instead).""",
    ),
    (
        "code",
        """\
cold = model.predict([UNSEEN_USER], [UNSEEN_ITEM])
cold_prediction = float(cold.prediction[0])
print(f"unseen user x unseen item: {cold_prediction:.3f}   (training mean {train_mean:.3f})")""",
    ),
    (
        "md",
        """\
## Vectors and biases by raw ID

`model.weight(ids, "item")` returns the `(n, n_factors)` float32 embedding rows of raw IDs
and `model.bias(ids, "item")` their biases (in logit units, before the sigmoid), in the order
the IDs are given. Joined with the catalogue, here are the five movies with the largest learned
bias, i.e. the ones rated above what their raters' tastes alone explain:""",
    ),
    (
        "code",
        """\
item_ids = model.items.ids  # raw IDs in row order (row 1 first)
vectors = model.weight(item_ids, "item")
print("item vectors:", vectors.shape, vectors.dtype)

n_train = train.frame.item.value_counts()
per_item = pd.DataFrame(
    {
        "bias": model.bias(item_ids, "item"),
        "vector_norm": np.linalg.norm(vectors, axis=1),
        "n_train": n_train.reindex(item_ids).to_numpy(),
    },
    index=pd.Index(item_ids, name="item"),
).join(movies)
top5 = per_item.nlargest(5, "bias")
top5""",
    ),
    (
        "md",
        """\
## Predictions for known and unseen IDs

`predict(users, items)` scores pairs element-wise and says, per row, whether each side had a row
of its own (`user_known`, `item_known`) or was answered by the unknown slot. An unseen user with
a known movie still gets that movie's bias, and the other way round.""",
    ),
    (
        "code",
        """\
some_user = int(train.frame.user.iloc[0])
pairs_users = [some_user, some_user, UNSEEN_USER, UNSEEN_USER]
pairs_items = [my_movie, UNSEEN_ITEM, my_movie, UNSEEN_ITEM]
preds = model.predict(pairs_users, pairs_items)
preds""",
    ),
    (
        "md",
        """\
## Save, load, predict again

`collabemb.save_model(model, dir)` writes one directory (JSON config and registries, tensors in
safetensors; no pickle), atomically. `collabemb.load_model(dir)` checks every shape against the
registries and gives back the same fitted model.""",
    ),
    (
        "code",
        """\
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "sample-model"
    collabemb.save_model(model, path)
    print("artifact:", sorted(p.name for p in path.iterdir()))
    loaded = collabemb.load_model(path)

before = model.predict(valid.frame.user, valid.frame.item)
after = loaded.predict(valid.frame.user, valid.frame.item)
reloaded_equal = before.equals(after)
print(f"{len(after):,} validation predictions identical after reload: {reloaded_equal}")
print("history came along:", loaded.history.to_frame().shape[0], "epochs")""",
    ),
    (
        "md",
        """\
## The facts this notebook stands on

Checked on every test run (`tests/test_notebooks.py` executes this notebook), so they cannot
silently stop being true.""",
    ),
    (
        "code",
        """\
assert valid_rmse < baseline_rmse, (valid_rmse, baseline_rmse)
assert abs(cold_prediction - train_mean) < 0.3, (cold_prediction, train_mean)
assert reloaded_equal
assert model.items.decode(model.items.encode([my_movie]))[0] == my_movie
assert preds.user_known.tolist() == [True, True, False, False]
assert preds.item_known.tolist() == [True, False, True, False]
try:
    model.users.encode([UNSEEN_USER], unknown="raise")
except collabemb.UnknownIdError as exc:
    assert str(UNSEEN_USER) in str(exc)
else:
    raise AssertionError("unknown='raise' did not raise for an unseen user")
print("all checks passed")""",
    ),
]


if __name__ == "__main__":
    write_notebook(CELLS, Path(__file__).with_name("quickstart.ipynb"))
