"""Write ``similar_and_cold_start.ipynb`` from the cell sources below, with the outputs of a run.

Edit the cells here, then run ``cd notebooks && python make_similar_and_cold_start.py``: the notebook is executed top to
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
# Similar movies, recommendations and cold start

Train on the bundled sample (synthetic MovieLens-style ratings of 1,600 movies with titles and
genres), then ask the questions a catalogue asks: *more like this movie*, *what should this user
watch next*, and what to do for someone the model has never seen: a new user with a handful of
ratings (fold-in), a visitor with no history at all (the trained unknown slot), and a new movie
described by movies it resembles. FAISS does the search; every answer comes back by raw ID, with
titles, and says which path produced it.

Runs in about fifteen seconds on two idle CPU cores.""",
    ),
    (
        "code",
        """\
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

import collabemb
from collabemb.coldstart import fold_in_items_like, fold_in_users

DATA = Path("../datasets/sample")  # relative to this notebook's folder
pd.set_option("display.precision", 3)
pd.set_option("display.max_colwidth", 45)""",
    ),
    (
        "md",
        """\
## Fit, with titles and the training pairs attached

`set_item_metadata` stores the catalogue with the model, so results carry titles and genres.
`fit` remembers which movies each user rated in training (`model.seen_items`, a compact CSR of
rows, saved with the model), so recommendations can leave them out.""",
    ),
    (
        "code",
        """\
ratings = collabemb.read_ratings(DATA / "ratings.csv")
movies = pd.read_csv(DATA / "items.csv")
train, valid = collabemb.split_random(ratings, test_frac=0.1, seed=0)

model = collabemb.fit(train, valid=valid, seed=0, threads=1, progress=False)
model.set_item_metadata(movies)
print(f"validation RMSE {model.history.valid_rmse[-1]:.4f}; {len(model.users)} users, {len(model.items)} movies")""",
    ),
    (
        "md",
        """\
## The index

`collabemb.build_index(model)` makes a `SimilarityIndex` and keeps it as `model.index` (saved
with the model). For
1,600 movies the default is exact search (`IndexFlatIP`); above 100,000 vectors it is HNSW, with
the inner-product metric set explicitly. Similar-items search defaults to cosine similarity.""",
    ),
    (
        "code",
        """\
index = collabemb.build_index(model)
index""",
    ),
    (
        "md",
        """\
## More like this

One raw ID or many, in one batched FAISS search; the query itself is left out. Each row says the
query, the neighbour, its cosine similarity and rank, and the catalogue columns.""",
    ),
    (
        "code",
        """\
counts = train.frame.item.value_counts()
movie = int(counts.index[0])  # the most-rated movie
print("query:", movies.set_index("item").loc[movie, ["title", "genres"]].tolist())
similar = collabemb.similar_items(model, movie, k=8)
similar""",
    ),
    (
        "md",
        """\
Do the neighbours make sense? Genres were never shown to the model, yet neighbours share a genre
with the query far more often than movies picked at random do:""",
    ),
    (
        "code",
        """\
genres = movies.set_index("item").genres.str.split("|").apply(set)

def shares_genre(query, items):
    return np.mean([bool(genres[query] & genres[i]) for i in items])

popular = counts.index[:100].to_numpy()
neighbours = collabemb.similar_items(model, popular, k=10)
share_neighbours = np.mean([shares_genre(q, g.item) for q, g in neighbours.groupby("query")])
rng = np.random.default_rng(0)
share_random = np.mean([shares_genre(q, rng.choice(movies.item, 10, replace=False)) for q in popular])
print(f"neighbours sharing a genre with the query: {share_neighbours:.0%}   random movies: {share_random:.0%}")""",
    ),
    (
        "md",
        """\
## Recommendations for a known user

`recommend` ranks by the model's own predicted rating: the sigmoid is monotone and the user bias is
the same for every item, so FAISS searches item vectors with their bias appended against
`[user vector, 1]`. Movies the user rated in training are left out, and each user still gets `k`
of them. The `score` is the predicted rating, the same number `predict` gives.""",
    ),
    (
        "code",
        """\
user = int(train.frame.user.iloc[0])
recs = collabemb.recommend(model, user, k=8)
recs""",
    ),
    (
        "code",
        """\
rated = set(train.frame.item[train.frame.user == user])
unrated = np.array(sorted(set(model.items.ids) - rated))
predicted = model.predict(np.full(len(unrated), user), unrated).prediction.to_numpy()
by_predict = unrated[np.argsort(-predicted, kind="stable")[:8]].tolist()
print("same as sorting predict over the unrated movies:", recs.item.tolist() == by_predict)
print("any of them already rated:", bool(rated & set(recs.item)))""",
    ),
    (
        "md",
        """\
## A new user with five ratings: fold-in

Someone signs up and rates five romances 5 stars and five horror movies 1 star. Fold-in solves
their vector and bias with the movie side fixed, minimising the model's own training objective
(squared error through the sigmoid, with the weight decay the model was trained with) by a few
Newton steps: a millisecond, no retraining.""",
    ),
    (
        "code",
        """\
def in_genre(name, n, but_not):  # n of the 400 most-rated movies of genre `name` but not `but_not`
    pool = movies[movies.genres.str.contains(name) & ~movies.genres.str.contains(but_not) & movies.item.isin(counts.index[:400])]
    return pool.item.to_numpy()[:n]

new_user = pd.DataFrame({
    "item": np.concatenate([in_genre("Romance", 5, but_not="Horror"), in_genre("Horror", 5, but_not="Romance")]),
    "rating": [5.0] * 5 + [1.0] * 5,
})
fold = fold_in_users(model, new_user)
fold.to_frame()""",
    ),
    (
        "code",
        """\
cold_recs = collabemb.recommend_from_ratings(model, new_user, k=10)
romance_share = cold_recs.genres.str.contains("Romance").mean()
horror_share = cold_recs.genres.str.contains("Horror").mean()
catalogue_romance = movies.genres.str.contains("Romance").mean()
print(f"romance among the recommendations: {romance_share:.0%} (catalogue: {catalogue_romance:.0%}); horror: {horror_share:.0%}")
predicted = pd.Series(fold.predict(model, movies.item), index=movies.item)
romance_mean = predicted[movies.genres.str.contains("Romance").to_numpy()].mean()
horror_mean = predicted[movies.genres.str.contains("Horror").to_numpy()].mean()
print(f"predicted for this user: romances {romance_mean:.2f} stars on average, horror movies {horror_mean:.2f}")
cold_recs[["item", "score", "rank", "source", "title", "genres"]]""",
    ),
    (
        "md",
        """\
With `add=True` the new user gets a row of their own (appended: no existing row moves), their
ratings become their seen items, and the index is extended, so they are recommended, predicted and
saved like anyone else.""",
    ),
    (
        "code",
        """\
NEW_ID = 100_000
fold_in_users(model, new_user.assign(user=NEW_ID), add=True)
as_known = collabemb.recommend(model, NEW_ID, k=10)
print("row of the new user:", model.users.encode([NEW_ID])[0], "of", len(model.users))
print("same recommendations once added:", as_known.item.tolist() == cold_recs.item.tolist())""",
    ),
    (
        "md",
        """\
## No history at all: the unknown slot

Row 0 of every table is *trained* to stand for an average user (and an average movie). For a
visitor who has rated nothing, `recommend(model, None)` ranks movies for that average user; an
unseen user ID does the same when `unknown="unknown_slot"` is asked for. Without it, an unseen ID is an
error that says what to do.""",
    ),
    (
        "code",
        """\
anonymous = collabemb.recommend(model, None, k=8)
try:
    collabemb.recommend(model, 123_456_789)
except collabemb.UnknownIdError as exc:
    print("UnknownIdError:", exc)
anonymous""",
    ),
    (
        "md",
        """\
## A new movie described by movies it resembles

A movie nobody has rated yet can be placed among known ones: its vector is the mean of theirs
(and its bias the mean of their biases). `similar_items(..., like=...)` answers from that mean
directly; `fold_in_items_like(..., add=True)` adds the movie to the model and the index.""",
    ),
    (
        "code",
        """\
NEW_MOVIE = 99_999
looks_like = in_genre("Romance", 3, but_not="Horror").tolist()
described = collabemb.similar_items(model, NEW_MOVIE, k=5, like={NEW_MOVIE: looks_like})
described""",
    ),
    (
        "code",
        """\
fold_in_items_like(model, {NEW_MOVIE: looks_like}, add=True)
fan = collabemb.recommend(model, NEW_ID, k=len(model.items), exclude_seen=False)
new_movie_rank = int(fan.loc[fan.item == NEW_MOVIE, "rank"].iloc[0])
print(f"the new movie now ranks {new_movie_rank} of {len(fan)} for the romance fan")""",
    ),
    (
        "md",
        """\
## Save and load

The index goes into the artifact (`index-*.faiss`, written by FAISS) together with the fingerprint
of the registry and a checksum of the vectors it was built from; loading refuses an index that does
not match its model (stale, or copied from another artifact). The seen-items CSR is stored as
`.npy` files read with `allow_pickle=False`.""",
    ),
    (
        "code",
        """\
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "with-index"
    collabemb.save_model(model, path)
    print(sorted(p.name for p in path.iterdir()))
    loaded = collabemb.load_model(path)
reloaded_same = collabemb.recommend(loaded, [user, NEW_ID], k=10).equals(collabemb.recommend(model, [user, NEW_ID], k=10))
print("recommendations identical after reload:", reloaded_same)""",
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
assert len(similar) == 8 and movie not in set(similar.item) and set(similar.source) == {"known"}
assert share_neighbours > share_random + 0.15, (share_neighbours, share_random)
assert recs.item.tolist() == by_predict and not rated & set(recs.item)
assert set(cold_recs.source) == {"fold_in"} and not set(new_user.item) & set(cold_recs.item)
assert romance_share > 2.5 * catalogue_romance and horror_share < romance_share, (romance_share, horror_share)
assert romance_mean > horror_mean + 0.15, (romance_mean, horror_mean)
assert new_movie_rank <= len(fan) // 4, new_movie_rank
assert as_known.item.tolist() == cold_recs.item.tolist()
assert set(anonymous.source) == {"unknown_slot"} and len(anonymous) == 8
assert set(described.source) == {"mean_of_items"} and not set(looks_like) & set(described.item)
assert NEW_MOVIE in model.items and reloaded_same
print("all checks passed")""",
    ),
]


if __name__ == "__main__":
    write_notebook(CELLS, Path(__file__).with_name("similar_and_cold_start.ipynb"))
