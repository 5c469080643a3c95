"""The embedding explorer page: its data and self-containment, then the page itself in a real headless browser.

The browser tests drive Debian's chromium (/usr/bin/chromium) with playwright; they are skipped
only where it is missing and CI is not "true" (on CI a missing browser is a failure). The server
test starts ``python -m collabemb serve`` as a process and compares what the page lists with the
JSON API's own answers (docs/serve-api.md).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import collabemb as ce
import collabemb.explorer as explorer
from collabemb.explorer import explorer_html, write_explorer

from conftest import planted_ratings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVE = [sys.executable, "-m", "collabemb", "serve"]
GENRES = ["Drama", "Comedy", "Action", "Horror", "Noir"]
HOSTILE_TITLE = "</script><script>window.pwned = 1</script><!-- & </SCRIPT >"
BIG = 2**60  # int64 item IDs far beyond JavaScript's exact integers (2**53)


def with_metadata(model: ce.FittedModel, *, hostile: bool = False) -> ce.FittedModel:
    """Attach titles ("Film 007 (1997)"), genres ("Drama|Noir") and a year to every item."""
    ids = model.items.ids
    n = len(ids)
    titles = [f"Film {j:03d} ({1980 + j % 30})" for j in range(n)]
    if hostile:
        titles[1] = HOSTILE_TITLE
    genres = ["|".join(sorted({GENRES[j % 5], GENRES[(j * 3) % 5]})) for j in range(n)]
    ids_col = pd.Series(list(ids), dtype=object) if model.items.id_type == "str" else pd.Series(ids, dtype=np.int64)
    model.set_item_metadata(pd.DataFrame({"item": ids_col, "title": titles, "genres": genres, "year": [1980 + j % 30 for j in range(n)]}))
    return model


def fit_small(frame: pd.DataFrame) -> ce.FittedModel:
    return ce.fit(frame, n_factors=8, epochs=5, seed=0, threads=1, progress=False)


@pytest.fixture(scope="module")
def model() -> ce.FittedModel:
    return with_metadata(fit_small(planted_ratings(n_users=120, n_items=80, per_user=25, seed=4)))


def page_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', page, re.S)
    assert found, "no data block in the page"
    return json.loads(found.group(1))


def most_rated(model: ce.FittedModel) -> np.ndarray:
    counts = np.bincount(model.seen_items.indices, minlength=model.items.n_rows)[1:]
    return model.items.ids[np.argsort(-counts, kind="stable")]


def unindexed(model: ce.FittedModel) -> ce.FittedModel:
    """Another FittedModel around the same module and no index: searching it leaves ``model`` as it was."""
    return ce.FittedModel(model.module, model.identity, model.history, model.seen_items, model.item_metadata)


def expected_neighbours(model: ce.FittedModel, item, metric: str = "cosine") -> list[tuple]:
    """What collabemb answers for ``item``: ``similar_items`` (the default cosine index), or an exact index of ``metric``."""
    if metric == "cosine":
        frame = ce.similar_items(unindexed(model), item, 10)
    else:
        frame = ce.SimilarityIndex(model, metric=metric, index_type="exact").similar_items(item, 10)
    return list(zip(frame["item"].tolist(), frame["score"].astype(float).tolist()))


def listed(data: dict, metric: str, item) -> list[tuple]:
    """The precomputed neighbours of ``item`` in a page's data, as (raw ID, score)."""
    block, ids = data["neighbours"], data["items"]["id"]
    j = block["top"].index(ids.index(item))
    found = block["metrics"][metric]
    return [(ids[p], s) for p, s in zip(found["items"][j], found["scores"][j])]


def assert_same_list(got: list[tuple], want: list[tuple], tol: float = 1e-6) -> None:
    assert [g[0] for g in got] == [w[0] for w in want]
    assert [g[1] for g in got] == pytest.approx([w[1] for w in want], abs=tol)


# --- the page and its data ----------------------------------------------------------------------


def test_the_page_is_self_contained_no_other_host_no_external_script(model):
    page = explorer_html(model, static=True)
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"<script[^>]*\bsrc=|<link\b|<iframe\b|@import|url\(", page, re.I)
    assert page.count("<script") == 2 and page.count("</script>") == 2  # the data block and the script, both inline
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_embedded_data_has_every_item_with_its_map_point_bias_count_and_metadata(model):
    data = page_data(explorer_html(model, static=True))
    items, ids = data["items"], model.items.ids.tolist()
    assert items["id"] == ids  # registry order, every item
    assert len(items["x"]) == len(items["y"]) == len(items["bias"]) == len(ids)
    pcs = ce.pca_frame(model)
    np.testing.assert_allclose(items["x"], pcs["pc1"], atol=1e-6)
    np.testing.assert_allclose(items["bias"], model.bias(ids), atol=1e-6)
    pairs = pd.DataFrame({"item": model.items.decode(model.seen_items.indices)})
    assert items["count"] == pairs["item"].value_counts().reindex(ids, fill_value=0).tolist()
    meta = model.item_metadata.set_index("item").reindex(ids)
    assert data["metadata"]["title"] == meta["title"].tolist()
    assert data["metadata"]["values"]["genres"] == meta["genres"].tolist()
    assert data["metadata"]["values"]["year"] == meta["year"].tolist()
    by_name = {c["name"]: c for c in data["colourings"]}
    assert set(by_name) == {"bias", "popularity", "genres", "year"}
    genres = by_name["genres"]
    assert set(genres["categories"]) <= set(GENRES) and len(genres["codes"]) == len(ids)
    assert data["model"]["n_items"] == len(ids) and data["model"]["id_type"] == {"user": "int", "item": "int"}


def test_precomputed_neighbours_equal_similar_items_for_the_most_rated_items(model):
    data = page_data(explorer_html(model, static=True, top=12))
    assert model.index is None  # the page searched with an index of its own: the model is left as it was
    order = most_rated(model)
    assert [data["items"]["id"][p] for p in data["neighbours"]["top"]] == order[:12].tolist()
    for item in (order[0], order[11]):
        assert_same_list(listed(data, "cosine", item), expected_neighbours(model, item))
        assert_same_list(listed(data, "dot", item), expected_neighbours(model, item, "dot"))


def test_a_stored_index_gives_the_metric_and_the_server_page_carries_no_neighbours(model, tmp_path):
    copy = unindexed(model)
    ce.build_index(copy, metric="dot")
    ce.save_model(copy, tmp_path / "m")
    loaded = ce.load_model(tmp_path / "m")
    static = page_data(explorer_html(loaded, static=True, top=5))
    assert static["neighbours"]["metric"] == "dot" and "the model's" in static["neighbours"]["metrics"]["dot"]["source"]
    item = most_rated(loaded)[0]
    assert_same_list(listed(static, "dot", item), list(zip(*[ce.similar_items(loaded, item, 10)[c].tolist() for c in ("item", "score")])))
    served = page_data(explorer_html(loaded, static=False))
    assert served["mode"] == "server" and served["neighbours"]["metric"] == "dot"
    assert served["neighbours"]["metrics"] == {} and served["vectors"] is None


@pytest.mark.parametrize("string_ids", [False, True])
def test_ids_keep_their_type_in_the_page(string_ids):
    frame = planted_ratings(n_users=40, n_items=30, per_user=12, seed=1, string_ids=string_ids)
    fitted = with_metadata(fit_small(frame))
    data = page_data(explorer_html(fitted, static=True, top=3))
    kind = str if string_ids else int
    assert all(type(v) is kind for v in data["items"]["id"])
    assert data["items"]["id"] == fitted.items.ids.tolist()
    item = data["items"]["id"][data["neighbours"]["top"][0]]
    assert [i for i, _ in listed(data, "cosine", item)] == ce.similar_items(fitted, item, 10)["item"].tolist()


def test_int_ids_beyond_2_53_are_written_exactly():
    frame = planted_ratings(n_users=40, n_items=30, per_user=12, seed=1)
    frame["item"] = frame["item"].astype(np.int64) * 7 + BIG
    data = page_data(explorer_html(fit_small(frame), static=True, top=3))
    assert sorted(data["items"]["id"]) == sorted(int(v) for v in frame["item"].unique())


def test_a_script_end_tag_in_a_title_cannot_end_the_data_block():
    fitted = with_metadata(fit_small(planted_ratings(n_users=40, n_items=30, per_user=12)), hostile=True)
    page = explorer_html(fitted, static=True, top=3)
    assert page.lower().count("</script") == 2 and "<!--" not in page
    assert page_data(page)["metadata"]["title"][1] == HOSTILE_TITLE


def test_write_explorer_writes_the_static_page_atomically(model, tmp_path):
    out = tmp_path / "pages" / "explorer.html"
    out.parent.mkdir()
    out.write_text("an older page")
    assert write_explorer(model, out, top=7) == out
    page = out.read_text(encoding="utf-8")
    assert page == explorer_html(model, static=True, top=7)
    assert len(page_data(page)["neighbours"]["top"]) == 7
    assert [p.name for p in out.parent.iterdir()] == ["explorer.html"]  # no temporary file left behind
    with pytest.raises(ValueError, match="not a regular file"):
        write_explorer(model, tmp_path / "pages")


def test_top_must_be_a_positive_integer(model):
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="top must be an integer >= 1"):
            explorer_html(model, static=True, top=bad)


def test_an_ml_100k_sized_page_stays_well_under_1_5_mb():
    rng = np.random.default_rng(0)
    ids = np.arange(1, 1683)
    meta = pd.DataFrame(
        {
            "item": ids,
            "title": [f"A film title of typical length, number {i} (1995)" for i in ids],
            "genres": ["Action|Comedy|Drama"] * len(ids),
        }
    )
    index = ce.SimilarityIndex.from_vectors(ids, rng.standard_normal((len(ids), 64)).astype(np.float32), item_metadata=meta)
    page = explorer_html(index.fitted, static=True)
    data = page_data(page)
    assert data["vectors"] is not None  # 1682 x 64 fits: any item's neighbours are computed in the page
    assert len(page.encode()) < 1_200_000


def test_a_large_table_carries_no_vectors(model, monkeypatch):
    monkeypatch.setattr(explorer, "BROWSER_VECTORS_MAX", model.n_factors * len(model.items) - 1)
    assert page_data(explorer_html(model, static=True))["vectors"] is None


# --- in a real browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing on CI")
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 950})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    yield page
    context.close()


def read_list(page, selector: str, id_type: type) -> list[tuple]:
    rows = page.eval_on_selector_all(f"{selector} li[data-item]", "ls => ls.map(l => [l.dataset.item, l.dataset.score])")
    return [(id_type(item), float(score)) for item, score in rows]


def pick(page, text: str, item) -> None:
    """Type ``text`` into the search, click the result for ``item`` and wait for its neighbours."""
    page.fill("#search", text)
    page.click(f"#search-results li[data-item='{item}'] button")
    page.wait_for_selector(f"#neighbours[data-for='{item}']", state="attached")


def shot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    shutil.copy(tmp_path / name, Path("/tmp") / name)


def isolated_item(page, ids: list):
    """An item no other point lies within 12 px of on the screen (so a hover or click finds it)."""
    xy = np.array(page.evaluate("ids => ids.map(explorer.screenOf)", ids))
    dist = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(dist, np.inf)
    return ids[int(np.argmax(dist.min(axis=1) > 12))]


def test_static_page_in_a_browser_search_click_hover_and_neighbours(model, page, tmp_path):
    out = write_explorer(model, tmp_path / "explorer.html", top=20)
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(out.as_uri())
    page.wait_for_selector("body[data-ready='true']")
    top_item = int(most_rated(model)[0])
    title = model.item_metadata.set_index("item").loc[top_item, "title"]
    pick(page, title[:8].lower(), top_item)  # a title's start, in another case
    assert page.get_attribute("#neighbours", "data-source") == "precomputed"
    assert_same_list(read_list(page, "#neighbours", int), expected_neighbours(model, top_item))
    page.select_option("#metric", "dot")
    page.wait_for_selector(f"#neighbours[data-for='{top_item}']", state="attached")
    assert_same_list(read_list(page, "#neighbours", int), expected_neighbours(model, top_item, "dot"))
    page.select_option("#metric", "cosine")
    shot(page, tmp_path, "explorer-static.png")

    other = int(most_rated(model)[-1])  # not among the 20 precomputed: computed in the page from its vectors
    page.fill("#search", str(other))
    page.press("#search", "Enter")
    page.wait_for_selector(f"#neighbours[data-for='{other}'][data-source='browser']", state="attached")
    assert_same_list(read_list(page, "#neighbours", int), expected_neighbours(model, other), tol=1e-5)

    target = isolated_item(page, model.items.ids.tolist())
    x, y = page.evaluate("id => explorer.screenOf(id)", target)
    page.mouse.move(x, y)
    tip = page.text_content("#tooltip")
    assert page.is_visible("#tooltip") and model.item_metadata.set_index("item").loc[target, "title"] in tip and f"ID {target}" in tip
    page.mouse.click(x, y)
    page.wait_for_selector(f"#neighbours[data-for='{target}']", state="attached")
    assert_same_list(read_list(page, "#neighbours", int), expected_neighbours(model, target), tol=1e-5)
    assert page.is_disabled("#user-go") and page.is_disabled("#newuser-go")  # no server behind a file
    assert all(url.startswith("file://") for url in requests), requests
    assert page.errors == []


def test_hostile_titles_and_ids_beyond_2_53_survive_in_the_browser(page, tmp_path, monkeypatch):
    frame = planted_ratings(n_users=40, n_items=30, per_user=12, seed=1)
    frame["item"] = frame["item"].astype(np.int64) * 7 + BIG
    fitted = with_metadata(fit_small(frame), hostile=True)
    monkeypatch.setattr(explorer, "BROWSER_VECTORS_MAX", 0)  # no vectors: only the top items have neighbours
    out = write_explorer(fitted, tmp_path / "hostile.html", top=3)
    page.goto(out.as_uri())
    page.wait_for_selector("body[data-ready='true']")
    assert page.evaluate("window.pwned") is None
    hostile_id = int(fitted.items.ids[1])
    page.fill("#search", "</script>")
    assert page.text_content(f"#search-results li[data-item='{hostile_id}'] button") == HOSTILE_TITLE
    top_item = int(most_rated(fitted)[0])
    pick(page, str(top_item), top_item)  # an ID typed exactly, beyond 2**53
    assert_same_list(read_list(page, "#neighbours", int), expected_neighbours(fitted, top_item))
    rare = int(most_rated(fitted)[-1])
    pick(page, str(rare), rare)
    assert page.get_attribute("#neighbours", "data-source") == "none"
    assert "not precomputed" in page.text_content("#neighbours-note") and read_list(page, "#neighbours", int) == []
    assert page.errors == []


# --- served by collabemb serve --------------------------------------------------------------------


def start_server(artifact: Path, token: str) -> tuple[subprocess.Popen, str]:
    """``collabemb serve ARTIFACT --port 0 --token T`` as a process; returns it and its base URL."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("COLLABEMB_TOKEN", None)
    proc = subprocess.Popen(
        [*SERVE, str(artifact), "--port", "0", "--token", token], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: queue.Queue = queue.Queue()
    seen: list[str] = []
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            proc.kill()
            pytest.fail("collabemb serve said nothing for 60 s:\n" + "".join(seen))
        seen.append(line)
        if found := re.search(r"listening on (http://[^\s/]+)", line):
            return proc, found.group(1)
        if proc.poll() is not None and lines.empty():
            pytest.fail(f"collabemb serve exited with {proc.returncode}:\n" + "".join(seen))


@pytest.fixture
def served(model, tmp_path):
    ce.save_model(model, tmp_path / "artifact")
    proc, base = start_server(tmp_path / "artifact", "s3cret")
    yield base, {"Authorization": "Bearer s3cret"}
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def api_rows(answer: dict) -> list[tuple]:
    return [(r["item"], r["score"]) for r in answer["results"]]


def test_served_page_asks_the_api_for_neighbours_a_user_and_a_new_user(model, served, page, tmp_path):
    import httpx
    from playwright.sync_api import expect

    base, auth = served
    page.goto(f"{base}/?token=s3cret")  # sets the token cookie, which the page's requests carry
    page.wait_for_selector("body[data-ready='true']")
    item = int(most_rated(model)[3])
    title = model.item_metadata.set_index("item").loc[item, "title"]
    pick(page, title, item)
    assert page.get_attribute("#neighbours", "data-source") == "server"
    similar = httpx.get(f"{base}/v1/similar", params={"item": item, "k": 10}, headers=auth).raise_for_status().json()
    assert read_list(page, "#neighbours", int) == api_rows(similar)

    user = int(model.users.ids[5])
    page.fill("#user-id", str(user))
    page.click("#user-go")
    page.wait_for_selector(f"#user-recs[data-for='{user}']", state="attached")
    recs = httpx.get(f"{base}/v1/recommend", params={"user": user, "k": 10}, headers=auth).raise_for_status().json()
    assert read_list(page, "#user-recs", int) == api_rows(recs)
    seen = httpx.get(f"{base}/v1/seen", params={"user": user}, headers=auth).raise_for_status().json()
    assert page.eval_on_selector_all("#user-seen li", "ls => ls.length") == len(seen["items"]) > 0

    page.click("#newuser-add")  # the item picked above, then one more
    other = int(most_rated(model)[0])
    pick(page, str(other), other)
    page.click("#newuser-add")
    page.fill(f"#newuser-ratings li[data-item='{other}'] input", "2")
    page.click("#newuser-go")
    page.wait_for_selector("#newuser-recs[data-ready]", state="attached")
    body = {"ratings": [{"item": item, "rating": 5}, {"item": other, "rating": 2}], "k": 10}
    folded = httpx.post(f"{base}/v1/recommend", json=body, headers=auth).raise_for_status().json()
    assert folded["query"]["source"] == "fold_in"
    assert read_list(page, "#newuser-recs", int) == api_rows(folded)
    shot(page, tmp_path, "explorer-server.png")

    page.fill("#user-id", "999999")
    page.click("#user-go")
    expect(page.locator("#user-status")).to_contain_text("999999")  # the server's 404, naming the ID
    assert read_list(page, "#user-recs", int) == []
    assert page.errors == []
