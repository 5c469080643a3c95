"""Big arrays moved into 2 MiB pages (collabemb.huge_pages): same values, same search answers, really moved."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import collabemb as ce
from collabemb.huge_pages import HUGE_PAGE, use_huge_pages


def _anon_huge_bytes(address: int) -> int:
    """AnonHugePages of the mapping of this process that holds ``address`` (from /proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            start, stop = (int(x, 16) for x in head.split("-"))
            inside = start <= address < stop
        elif inside and head == "AnonHugePages:":
            return int(line.split()[1]) * 1024
    return 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are Linux's")
def test_an_array_keeps_its_values_and_its_whole_huge_pages_are_moved():
    values = np.random.default_rng(0).standard_normal(3 * HUGE_PAGE // 8)  # 6 MiB: two or three whole huge pages inside
    before = values.copy()
    moved = use_huge_pages([values])
    assert np.array_equal(values, before)
    assert moved % HUGE_PAGE == 0 and moved <= values.nbytes
    if moved == 0:
        pytest.skip("this kernel moved nothing (MADV_COLLAPSE needs Linux 6.1 and free 2 MiB pages)")
    assert moved >= 2 * HUGE_PAGE
    assert _anon_huge_bytes(values.ctypes.data + values.nbytes // 2) >= moved


def test_arrays_it_cannot_move_are_left_alone():
    small, strided = np.ones(1000), np.ones((HUGE_PAGE, 4))[:, 0]
    assert use_huge_pages([small, strided]) == 0
    assert small.sum() == 1000 and strided.sum() == HUGE_PAGE


@pytest.mark.parametrize("index_type", ["exact", "hnsw", "ivf"])
def test_big_arrays_are_the_searched_buffers_and_searches_answer_the_same_after_the_move(index_type):
    rng = np.random.default_rng(1)
    n, k = 5000, 16
    vectors = rng.standard_normal((n, k)).astype(np.float32)
    index = ce.SimilarityIndex.from_vectors(np.arange(1, n + 1), vectors, index_type=index_type)
    queries = list(range(1, 200, 7))
    before = index.similar_items(queries, k=10)
    part = index._parts["items"]
    arrays = part.big_arrays()
    if index_type == "ivf":
        assert arrays == []
    else:
        stored = arrays[0].view(np.float32).reshape(n, k)
        assert np.allclose(stored, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), atol=1e-6)  # the vectors FAISS searches
        if index_type == "hnsw":
            assert arrays[1].dtype == np.int32 and arrays[1].max() < n  # the graph: neighbour labels
    use_huge_pages(arrays)
    after = index.similar_items(queries, k=10)
    assert before.equals(after)
