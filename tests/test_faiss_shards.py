"""Sharded and on-disk FAISS parts (collabemb.faiss_shards) against the single exact index.

The catalogue is generated: 3,000 items and 400 users x 24 factors drawn from a Gaussian whose
covariance spectrum decays linearly from 1 to 0.035 (the spectrum of a trained ml-100k item table,
as benchmarks/similarity.py uses), item biases N(0, 0.5^2), 30 seen items per user. Everything
runs on one FAISS thread, so every figure below is reproducible.

Recall thresholds, the least over catalogue seeds 0-4 for HNSW and 0-3 for IVF (k=10, 300 item
queries, 400 users, seen items excluded): HNSW shards with a deliberately weak graph (M=8,
efSearch=16, so that the threshold measures something; the default settings are exact at this
size) reach at least 0.973 (similar items) and 0.972 (recommend) with 2 shards, 0.986 and 0.988
with 4, against 0.974 and 0.942 for one HNSW index with the same settings: the bar is 0.95, and no
worse than the single index less 0.02.
IVF shards with the default nlist and nprobe reach at least 0.924 / 0.994 (2 shards) and 0.980 /
0.998 (4), against 0.837 / 0.932 for one IVF (nprobe has a floor of 8 lists, a larger share of a
shard's fewer lists): the bars are 0.90 and 0.95.
"""

from __future__ import annotations

import os
import shutil
import warnings

import faiss
import numpy as np
import pandas as pd
import pytest
import torch

import collabemb as ce
from collabemb.faiss_parts import Part, new_checksum
from collabemb.faiss_shards import (
    ShardedPart,
    build_ondisk_ivf,
    build_shard,
    lift_norm2,
    open_ondisk_ivf,
    read_shard,
    row_ranges,
    shard_index,
    write_shard,
)
from collabemb.index import SimilarityIndex, StaleIndexError
from collabemb.models import EmbeddingDotBias
from collabemb.schema import ArtifactError

K = 10
WEAK_HNSW = {"hnsw_m": 8, "ef_search": 16}


def catalogue_model(n_items: int = 3000, n_users: int = 400, k: int = 24, seed: int = 0) -> ce.FittedModel:
    """A fitted model around generated tables (row 0: the unknown slot), with 30 seen items per user."""
    rng = np.random.default_rng(seed)
    spectrum = np.linspace(1.0, 0.035, k)
    spectrum /= np.sqrt(np.sum(spectrum**2))
    tables = {
        "u_weight": torch.from_numpy((rng.standard_normal((n_users + 1, k)) * spectrum).astype(np.float32)),
        "i_weight": torch.from_numpy((rng.standard_normal((n_items + 1, k)) * spectrum).astype(np.float32)),
        "u_bias": torch.zeros(n_users + 1, 1),
        "i_bias": torch.from_numpy((0.5 * rng.standard_normal((n_items + 1, 1))).astype(np.float32)),
    }
    users = ce.IdRegistry(np.arange(1, n_users + 1), name="user")
    items = ce.IdRegistry(np.arange(n_items) * 7 + 3, name="item")  # sparse raw IDs
    module = EmbeddingDotBias(users, items, k, tables=tables, y_range=(0.5, 5.5))
    user_rows = np.repeat(np.arange(1, n_users + 1), 30)
    seen = ce.SeenItems.from_rows(user_rows, rng.integers(1, n_items + 1, len(user_rows)), n_users + 1)
    return ce.FittedModel(module, ce.ModelIdentity(family="rating", row0="mean", weight_decay=0.1), seen_items=seen)


def recall(truth: pd.DataFrame, found: pd.DataFrame, key: str) -> float:
    """Mean over queries of |found & true top-k| / |true top-k|, by the ``item`` column."""
    t, f = truth.groupby(key)["item"].apply(set), found.groupby(key)["item"].apply(set)
    return float(np.mean([len(t[q] & f.get(q, set())) / len(t[q]) for q in t.index]))


def assert_same_ranking(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """The same results in the same order with the same scores; neighbours whose scores tie within 1e-5 may swap."""
    assert len(a) == len(b) and (a.iloc[:, 0].to_numpy() == b.iloc[:, 0].to_numpy()).all()  # the query column
    np.testing.assert_allclose(a["score"].to_numpy(), b["score"].to_numpy(), rtol=1e-5, atol=1e-6)
    found = "item" if "item" in a else "user"
    scores = a["score"].to_numpy()
    for j in np.flatnonzero(a[found].to_numpy() != b[found].to_numpy()):
        near = [scores[i] for i in (j - 1, j + 1) if 0 <= i < len(scores)]
        assert min(abs(scores[j] - s) for s in near) < 1e-5, f"result {j} differs without a tie"


@pytest.fixture(scope="module")
def fitted() -> ce.FittedModel:
    return catalogue_model()


@pytest.fixture(scope="module")
def queries(fitted):
    return fitted.module.items.ids[::10], fitted.module.users.ids


@pytest.fixture(scope="module")
def exact(fitted) -> SimilarityIndex:
    return SimilarityIndex(fitted, index_type="exact", threads=1)


@pytest.fixture(scope="module")
def truth(exact, queries):
    items, users = queries
    return exact.similar_items(items, K), exact.recommend(users, K)


def sharded(fitted, n_shards: int, index_type: str, parts=("items", "recommend"), **settings) -> SimilarityIndex:
    return shard_index(SimilarityIndex(fitted, threads=1, **settings), n_shards, parts=parts, index_type=index_type)


# --- the merge is exact ------------------------------------------------------------------------------


@pytest.mark.parametrize("n_shards", [1, 3, 7])
def test_exact_shards_answer_as_the_single_exact_index(fitted, exact, queries, truth, n_shards):
    items, users = queries
    index = sharded(fitted, n_shards, "exact", parts=("items", "recommend", "users"))
    assert isinstance(index.part("items"), ShardedPart) and index.part("items").n_shards == n_shards
    assert index.parts == {"items": "exact", "recommend": "exact", "users": "exact"}
    assert_same_ranking(index.similar_items(items, K), truth[0])
    assert_same_ranking(index.recommend(users, K), truth[1])
    assert_same_ranking(index.similar_users(users[:50], K), exact.similar_users(users[:50], K))
    dropped = exact.similar_items(items[:20], 40)["item"].unique()  # a larger fetch from every shard
    assert_same_ranking(index.similar_items(items[:20], K, exclude=dropped), exact.similar_items(items[:20], K, exclude=dropped))


@pytest.mark.parametrize(("index_type", "n_shards"), [("hnsw", 2), ("hnsw", 4), ("ivf", 2), ("ivf", 4)])
def test_recall_at_10_against_the_exact_single_index(fitted, queries, truth, index_type, n_shards):
    items, users = queries
    settings = WEAK_HNSW if index_type == "hnsw" else {}
    index = sharded(fitted, n_shards, index_type, **settings)
    assert index.part("items").index_type == index_type and len(index.part("recommend").index.shards) == n_shards
    similar, recommended = index.similar_items(items, K), index.recommend(users, K)
    single = SimilarityIndex(fitted, index_type=index_type, threads=1, **settings)
    bars = {"hnsw": (0.95, 0.95), "ivf": (0.90, 0.95)}[index_type]
    for got, want, key, bar, alone in [
        (similar, truth[0], "query", bars[0], single.similar_items(items, K)),
        (recommended, truth[1], "user", bars[1], single.recommend(users, K)),
    ]:
        assert (got.groupby(key).size() == K).all()
        r = recall(want, got, key)
        assert r >= bar, f"{key}: recall@10 {r:.3f}"
        assert r >= recall(want, alone, key) - 0.02, f"{key}: recall@10 {r:.3f} below one {index_type} index"


# --- exclusions, k and empty shards ------------------------------------------------------------------


def test_exclusions_are_honoured_across_shards(fitted, exact, queries):
    items, users = queries
    index = sharded(fitted, 4, "hnsw", **WEAK_HNSW)
    dropped = exact.similar_items(items[:30], 30)["item"].unique()  # each query's 30 nearest: k never fits the first fetch
    similar = index.similar_items(items[:30], K, exclude=dropped)
    assert (similar.groupby("query").size() == K).all()
    assert not similar["item"].isin(dropped).any() and not (similar["query"] == similar["item"]).any()
    assert recall(exact.similar_items(items[:30], K, exclude=dropped), similar, "query") >= 0.9
    recommended = index.recommend(users, K, exclude=dropped[:100])
    seen = fitted.seen_items
    user_rows, item_rows = fitted.module.users.encode(recommended["user"]), fitted.module.items.encode(recommended["item"])
    for u, i in zip(user_rows, item_rows):
        assert i not in seen.indices[seen.indptr[u] : seen.indptr[u + 1]]
    assert not recommended["item"].isin(dropped[:100]).any() and (recommended.groupby("user").size() == K).all()


def test_a_short_fetch_is_searched_again_in_every_shard(fitted, exact, queries):
    items = queries[0][:5]
    index = sharded(fitted, 4, "ivf", nprobe=1)  # one list of ~19 per shard: about 160 candidates in all
    dropped = exact.similar_items(items, 20)["item"].unique()
    got = index.similar_items(items, 300, exclude=dropped)  # more than one probe finds: nprobe doubles until it does
    assert (got.groupby("query").size() == 300).all() and not got["item"].isin(dropped).any()
    assert not (got["query"] == got["item"]).any() and got.groupby("query")["item"].apply(lambda s: s.is_unique).all()
    assert got.groupby("query")["score"].apply(lambda s: (np.diff(s.to_numpy()) <= 0).all()).all()  # merged in score order


def test_k_larger_than_a_shard(fitted, exact, queries):
    items = queries[0][:3]
    k = 1000  # 4 shards of 750 items
    assert_same_ranking(sharded(fitted, 4, "exact").similar_items(items, k), exact.similar_items(items, k))
    got = sharded(fitted, 4, "hnsw").similar_items(items, k)
    for _, one in got.groupby("query"):
        assert len(one) == k and one["item"].is_unique and (np.diff(one["score"].to_numpy()) <= 0).all()
    assert recall(exact.similar_items(items, k), got, "query") >= 0.99


@pytest.mark.parametrize("index_type", ["exact", "hnsw", "ivf"])
def test_empty_shards_are_skipped(index_type):
    tiny = catalogue_model(n_items=3, n_users=4, k=4, seed=1)
    index = sharded(tiny, 6, index_type, parts=("items", "recommend"))  # 6 shards over 3 rows: 3 are empty
    assert [s.size for s in index.part("items").index.shards].count(0) == 3
    exact = SimilarityIndex(tiny, index_type="exact", threads=1)
    ids, users = tiny.module.items.ids, tiny.module.users.ids
    assert_same_ranking(index.similar_items(ids, 5), exact.similar_items(ids, 5))
    assert_same_ranking(index.recommend(users, 5, exclude_seen=False), exact.recommend(users, 5, exclude_seen=False))


# --- the public API, shards built apart, growth -------------------------------------------------------


def test_public_functions_answer_through_the_shards_and_saving_is_refused(fitted, queries, tmp_path):
    model = ce.FittedModel(fitted.module, fitted.identity, seen_items=fitted.seen_items)
    model.index = SimilarityIndex(model, threads=1)
    index = shard_index(model, 3, index_type="hnsw")
    assert model.index is index and isinstance(index.part("recommend"), ShardedPart)
    items, users = queries
    pd.testing.assert_frame_equal(ce.similar_items(model, items[:20], 5), index.similar_items(items[:20], 5))
    pd.testing.assert_frame_equal(ce.recommend(model, users[:20], 5), index.recommend(users[:20], 5))
    with pytest.raises(ArtifactError, match="sharded"):
        ce.save_model(model, tmp_path / "model")


def test_shards_built_apart_from_files_join_into_one_part(fitted, exact, queries, truth, tmp_path):
    weights, biases = fitted.module.tables("item")
    n = len(fitted.module.items)
    rng = np.random.default_rng(5)
    scattered = np.sort(rng.choice(np.arange(1, n + 1), 700, replace=False))  # one "file" holds scattered rows
    rest = np.setdiff1d(np.arange(1, n + 1), scattered)
    slices = [scattered, rest[:1500], rest[1500:], np.empty(0, np.int64)]  # and one file is empty
    settings = SimilarityIndex(fitted, threads=1).settings
    max_norm2 = max(lift_norm2(weights[rows], biases[rows]) for rows in slices)  # what each rank reports, reduced by max
    for name, index_type, kw in [("items", "exact", {}), ("recommend", "hnsw", {}), ("recommend", "ivf", {"max_norm2": max_norm2})]:
        files = []
        for s, rows in enumerate(slices):  # each rank: its own vectors in, one file out
            shard = build_shard(name, weights[rows], biases[rows], settings, index_type=index_type, **kw)
            files.append((rows, write_shard(shard, tmp_path / f"{name}-{index_type}-{s}.faiss")))
        part = ShardedPart.from_shards(name, fitted.module, files, settings, **kw)
        index = SimilarityIndex(fitted, threads=1)
        index._parts[name] = part
        if name == "items":
            assert_same_ranking(index.similar_items(queries[0], K), truth[0])
        else:
            assert recall(truth[1], index.recommend(queries[1], K), "user") >= 0.99
    with pytest.raises(ValueError, match="exactly one"):
        ShardedPart.from_shards(
            "items", fitted.module, [(rows, read_shard(tmp_path / f"items-exact-{s}.faiss")) for s, rows in enumerate(slices[:2])], settings
        )
    with pytest.raises(ValueError, match="max_norm2"):
        ShardedPart.from_shards(
            "recommend", fitted.module, [(r, tmp_path / f"recommend-ivf-{s}.faiss") for s, r in enumerate(slices)], settings
        )
    wrong = [(rows[::-1], tmp_path / f"items-exact-{s}.faiss") for s, rows in enumerate(slices)]  # labels in another row order
    with pytest.raises(StaleIndexError, match="another vector"):
        ShardedPart.from_shards("items", fitted.module, wrong, settings)


def test_appended_rows_go_to_a_growth_shard():
    model = catalogue_model(n_items=600, n_users=50, k=8, seed=2)
    index = shard_index(SimilarityIndex(model, threads=1), 3, parts=("items", "recommend"), index_type="exact")
    known = model.module.items.ids
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a longer new item rebuilds the recommend part (lift): not the point here
        ce.fold_in_items_like(model, {10_000: list(known[:3]), 10_007: list(known[3:6])}, add=True, index=index)
    part = index.part("items")
    assert part.index.ntotal == 602 and part.index.shards[-1].grows and part.n_shards == 3
    fresh = SimilarityIndex(model, index_type="exact", threads=1)
    ids = np.concatenate([[10_000, 10_007], known[:50]])
    assert_same_ranking(index.similar_items(ids, K), fresh.similar_items(ids, K))
    assert 10_000 in set(index.similar_items(known[:3], 50)["item"])


# --- on-disk IVF ---------------------------------------------------------------------------------------


def in_memory_ivf(trained_file, name: str, model: ce.FittedModel, settings, max_norm2) -> Part:
    """One in-memory IVF part with the on-disk build's quantizer, holding every row (labels: row - 1)."""
    index = faiss.read_index(str(trained_file))
    part = Part(name, "ivf", index, new_checksum(), settings, max_norm2)
    weights, biases = model.module.tables("item")
    index.add(part.faiss_input(weights, biases, np.arange(1, len(model.module.items) + 1)))
    return part


def test_ondisk_ivf_answers_as_the_in_memory_ivf_with_its_quantizer(fitted, queries, truth, tmp_path):
    index = SimilarityIndex(fitted, threads=1)
    build_ondisk_ivf(index, tmp_path, part="items", n_shards=3)
    build_ondisk_ivf(index, tmp_path, part="recommend", n_shards=3)
    n, k = len(fitted.module.items), fitted.module.n_factors
    names = sorted(os.listdir(tmp_path))
    assert not [f for f in names if ".tmp-" in f or "shard" in f], names  # no temporary or shard files left
    for name, dim in [("items", k), ("recommend", k + 2)]:
        part = index.part(name)
        lists = faiss.downcast_InvertedLists(part.index.shards[0].index.invlists)
        assert isinstance(lists, faiss.OnDiskInvertedLists) and lists.read_only
        data = [f for f in names if f.startswith(f"{name}.ivf-") and f.endswith(".ivfdata")]
        assert len(data) == 1 and (tmp_path / data[0]).stat().st_size >= n * (4 * dim + 8)  # every vector and label on disk
        memory = in_memory_ivf(tmp_path / f"{name}.ivf-trained.faiss", name, fitted, index.settings, part.max_norm2)
        assert part.index.nlist == memory.index.nlist
        rows = fitted.module.items.encode(queries[0])
        x = (
            part.prepare(fitted.module.tables("item")[0][rows])
            if name == "items"
            else part.recommend_queries(fitted.module.tables("user")[0][1:])
        )
        self_rows = rows if name == "items" else None
        got = part.search(x, K, stride=n + 1, self_rows=self_rows)
        want = memory.search(x, K, stride=n + 1, self_rows=self_rows)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
    assert recall(truth[0], index.similar_items(queries[0], K), "query") >= 0.80
    assert recall(truth[1], index.recommend(queries[1], K), "user") >= 0.90


def test_ondisk_ivf_reopens_from_its_files_and_refuses_others(fitted, queries, tmp_path):
    first = build_ondisk_ivf(SimilarityIndex(fitted, threads=1), tmp_path / "a", part="items", n_shards=2)
    before = set(os.listdir(tmp_path / "a"))
    build_ondisk_ivf(first, tmp_path / "a", part="items", n_shards=3)  # a rebuild replaces the old files
    assert len(set(os.listdir(tmp_path / "a")) - before) == 2 and len(os.listdir(tmp_path / "a")) == 4
    shutil.move(tmp_path / "a", tmp_path / "b")  # the directory may move
    again = open_ondisk_ivf(SimilarityIndex(fitted, threads=1), tmp_path / "b")
    items = queries[0][:40]
    pd.testing.assert_frame_equal(again.similar_items(items, K), first.similar_items(items, K))
    with pytest.raises(ArtifactError, match="sharded"):
        again.to_files()
    other = catalogue_model(seed=9)
    with pytest.raises(StaleIndexError, match="other item vectors"):
        open_ondisk_ivf(SimilarityIndex(other), tmp_path / "b")
    with pytest.raises(ValueError, match="metric"):
        open_ondisk_ivf(SimilarityIndex(fitted, metric="dot"), tmp_path / "b")
    data = next((tmp_path / "b").glob("items.ivf-*.ivfdata"))
    with open(data, "r+b") as fh:
        fh.truncate(data.stat().st_size // 2)
    with pytest.raises(ArtifactError, match="bytes"):
        open_ondisk_ivf(SimilarityIndex(fitted), tmp_path / "b")


def test_row_ranges_cover_the_table_once():
    assert row_ranges(10, 3) == [(1, 4), (4, 7), (7, 11)]
    assert row_ranges(2, 4) == [(1, 1), (1, 2), (2, 2), (2, 3)]
