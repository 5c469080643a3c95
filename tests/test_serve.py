"""``collabemb serve`` run for real: a server process per scenario, every endpoint called over HTTP and
compared with the Python API's answer, every refusal a 4xx in JSON, reloads under load, workers."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import collabemb
from collabemb.artifact import read_model_card
from collabemb.serve_metrics import BUCKETS

from conftest import planted_ratings, snapshot_of

TOKEN = "s3cret-token"


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    stderr: Path

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def log(self) -> str:
        return self.stderr.read_text()


def start(artifact: Path, *args: str, log: Path) -> Server:
    """``collabemb serve ARTIFACT --port 0 ARGS`` as a process, once it has said where it listens."""
    command = [sys.executable, "-m", "collabemb", "serve", str(artifact), "--port", "0", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, start_new_session=True)
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline() if ready else ""
    if "listening on" not in line:
        kill_all(proc)
        raise AssertionError(f"no 'listening on' line (got {line!r}); stderr: {log.read_text()}")
    url = line.split("listening on ", 1)[1].split(" ", 1)[0]
    return Server(proc, url, log)


@contextlib.contextmanager
def serving(artifact: Path, *args: str, log: Path) -> Iterator[Server]:
    """:func:`start`, and the process killed on the way out if the test has not stopped it."""
    srv = start(artifact, *args, log=log)
    try:
        yield srv
    finally:
        kill_all(srv.proc)


def kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL to the server's process group (its own session): the supervisor and any worker it started, so
    that a test that fails leaves no worker behind (a SIGKILL to the supervisor alone orphans them)."""
    if proc.returncode is None:  # not reaped yet: the group's id, its pid, is still its own
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stop(server: Server, sig: int = signal.SIGTERM) -> int:
    if server.proc.poll() is None:
        server.proc.send_signal(sig)
    try:
        return server.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        kill_all(server.proc)
        raise


def titles(items) -> pd.DataFrame:
    return pd.DataFrame({"item": items, "title": [f"Film {i}" for i in items]})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """An int-ID model saved with titles (for all items but one) and a stored index; a str-ID model saved
    without an index (the server builds the default one); another fit of the int data for reloads."""
    root = tmp_path_factory.mktemp("serve")
    frame = planted_ratings()
    fitted = collabemb.fit(frame, n_factors=8, epochs=3, threads=1, progress=False)
    fitted.set_item_metadata(titles(list(range(1, 80))))  # item 80 has no metadata row
    collabemb.build_index(fitted)
    collabemb.save_model(fitted, root / "int")
    other = collabemb.fit(frame, n_factors=8, epochs=3, threads=1, progress=False, seed=7)
    other.set_item_metadata(titles(list(range(1, 81))))
    collabemb.build_index(other)
    strs = collabemb.fit(planted_ratings(string_ids=True), n_factors=8, epochs=3, threads=1, progress=False)
    collabemb.save_model(strs, root / "str")
    return {"root": root, "int": collabemb.load_model(root / "int"), "other": other, "str": collabemb.load_model(root / "str")}


@pytest.fixture(scope="module")
def server(models):
    with serving(models["root"] / "int", log=models["root"] / "int.log") as srv:
        yield srv
        assert stop(srv) == 0, srv.log()  # SIGTERM: a graceful shutdown, exit 0


@pytest.fixture(scope="module")
def api(server):
    with server.client() as client:
        yield client


def expected(frame: pd.DataFrame, table: str = "item") -> list[dict]:
    """The Python API's DataFrame as the server's results: ID, score, rank (and title for items)."""
    rows = []
    for rec in frame.to_dict("records"):
        row = {table: rec[table], "score": float(rec["score"]), "rank": int(rec["rank"])}
        if "title" in frame.columns:
            row["title"] = None if pd.isna(rec["title"]) else rec["title"]
        rows.append(row)
    return rows


def got(response: httpx.Response, table: str = "item") -> list[dict]:
    assert response.status_code == 200, response.text
    keys = (table, "score", "rank", "title") if table == "item" else (table, "score", "rank")
    return [{key: r[key] for key in keys if key in r} for r in response.json()["results"]]


def refused(response: httpx.Response, status: int, *words: str) -> str:
    """The message of a JSON error with ``status``; each of ``words`` in it."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and body["error"]["status"] == status
    message = body["error"]["message"]
    assert "Traceback" not in message and "\n" not in message
    for word in words:
        assert word in message, message
    return message


# --- answers equal the Python API's ------------------------------------------------------------


def test_listening_line_names_the_real_port_and_healthz_answers(server, api):
    assert not server.url.endswith(":0")
    assert api.get("/healthz").json() in ({"status": "ok", "full_model": "loading"}, {"status": "ok", "full_model": "ready"})
    wait_for(lambda: api.get("/healthz").json()["full_model"] == "ready")  # phase B: torch and the fold-in solver
    assert api.get("/healthz").json() == {"status": "ok", "full_model": "ready"}


@pytest.mark.parametrize("item, k", [(1, 10), (17, 3), (80, 79), (42, 1000)])
def test_similar_items_equal_similar_items(models, api, item, k):
    want = expected(collabemb.similar_items(models["int"], [item], k=k))
    response = api.get("/v1/similar", params={"item": item, "k": k})
    assert got(response) == want
    assert response.json()["query"] == {"item": item, "source": "known"}
    assert len(want) == min(k, 79)


def test_item_without_metadata_has_null_title(models, api):
    results = api.get("/v1/similar", params={"item": 3, "k": 79}).json()["results"]
    assert {r["item"]: r["title"] for r in results}[80] is None


@pytest.mark.parametrize("user", [1, 64, 120])
def test_similar_users_equal_similar_users(models, api, user):
    want = expected(collabemb.similar_users(models["int"], [user], k=5), table="user")
    response = api.get("/v1/similar", params={"user": user, "k": 5})
    assert got(response, "user") == want
    assert response.json()["query"] == {"user": user, "source": "known"}


@pytest.mark.parametrize("include_seen", [False, True])
@pytest.mark.parametrize("user", [1, 33, 120])
def test_recommend_equals_recommend(models, api, user, include_seen):
    want = expected(collabemb.recommend(models["int"], [user], k=12, exclude_seen=not include_seen))
    params = {"user": user, "k": 12} | ({"include_seen": "true"} if include_seen else {})
    response = api.get("/v1/recommend", params=params)
    assert got(response) == want
    seen = set(models["int"].items.decode(models["int"].seen_items.items_of(np.array([models["int"].rows([user], "user")[0]]))[1]))
    assert include_seen or not seen & {r["item"] for r in response.json()["results"]}


FOLD_INS = {
    "distinct items": [{"item": 3, "rating": 5}, {"item": 10, "rating": 1.5}, {"item": 44, "rating": 4}, {"item": 9999, "rating": 2}],
    "an item twice": [{"item": 3, "rating": 5}, {"item": 10, "rating": 1.5}, {"item": 3, "rating": 2}],
    "one rating": [{"item": 61, "rating": 4.5}],
}


@pytest.mark.parametrize("include_seen", [False, True])
@pytest.mark.parametrize("case", sorted(FOLD_INS))
def test_fold_in_recommend_equals_recommend_from_ratings(models, api, case, include_seen):
    ratings = FOLD_INS[case]
    frame = pd.DataFrame({"item": [r["item"] for r in ratings], "rating": [float(r["rating"]) for r in ratings]})
    want = expected(collabemb.recommend_from_ratings(models["int"], frame, k=8, exclude_seen=not include_seen))
    response = api.post("/v1/recommend", json={"ratings": ratings, "k": 8, "include_seen": include_seen})
    assert got(response) == want
    fold = collabemb.fold_in_users(models["int"], frame)
    assert response.json()["query"] == {"source": "fold_in", "n_ratings": int(fold.n_ratings[0]), "n_ignored": int(fold.n_ignored[0])}
    assert include_seen or not {r["item"] for r in ratings} & {r["item"] for r in response.json()["results"]}


@pytest.mark.parametrize("body", [{}, {"ratings": []}, {"ratings": [], "k": 5}])
def test_no_ratings_is_the_anonymous_user(models, api, body):
    want = expected(collabemb.recommend(models["int"], None, k=body.get("k", 10)))
    response = api.post("/v1/recommend", json=body)
    assert got(response) == want
    assert response.json()["query"] == {"source": "anonymous", "n_ratings": 0, "n_ignored": 0}


def test_ratings_only_of_unknown_items_answer_from_the_unknown_slot(models, api):
    query = api.post("/v1/recommend", json={"ratings": [{"item": 5000, "rating": 4}]}).json()["query"]
    assert query == {"source": "unknown_slot", "n_ratings": 0, "n_ignored": 1}


def test_predict_equals_predict(models, api):
    pairs = [(1, 2), (7, 80), (120, 1), (999, 3)]
    want = models["int"].predict([u for u, _ in pairs], [i for _, i in pairs])
    body = api.post("/v1/predict", json={"pairs": [{"user": u, "item": i} for u, i in pairs], "fallback": "unknown_slot"}).json()
    assert [r["prediction"] for r in body["results"]] == [float(v) for v in want["prediction"]]
    assert [r["user_known"] for r in body["results"]] == [True, True, True, False]
    one = api.get("/v1/predict", params={"user": 7, "item": 80}).json()
    assert one == {"user": 7, "item": 80, "prediction": float(want["prediction"][1]), "user_known": True, "item_known": True}


@pytest.mark.parametrize("table", ["user", "item"])
def test_embedding_equals_weight_and_bias(models, api, table):
    fitted = models["int"]
    one = api.get("/v1/embedding", params={table: 5}).json()
    assert one["vector"] == [float(v) for v in fitted.weight([5], table)[0]]
    assert one["bias"] == float(fitted.bias([5], table)[0])
    assert (one["table"], one["id"], one["row"], one["known"], one["source"]) == (table, 5, int(fitted.rows([5], table)[0]), True, "known")
    many = api.post("/v1/embedding", json={"table": table, "ids": [5, 6, 7777], "fallback": "unknown_slot"}).json()
    assert many["table"] == table and [r["id"] for r in many["results"]] == [5, 6, 7777]
    unknown = many["results"][2]
    assert (unknown["row"], unknown["known"], unknown["source"]) == (0, False, "unknown_slot")
    assert unknown["vector"] == [float(v) for v in fitted.tables(table)[0][0]]


def test_seen_lists_the_training_items_of_the_user(models, api):
    fitted = models["int"]
    rows = fitted.seen_items.items_of(fitted.rows([9], "user"))[1]
    assert api.get("/v1/seen", params={"user": 9}).json() == {"user": 9, "items": fitted.items.decode(rows).tolist()}


def test_info_describes_the_model_and_carries_its_card(models, api):
    info = api.get("/v1/info").json()
    assert info["artifact"] == str((models["root"] / "int").resolve())
    assert (info["family"], info["n_users"], info["n_items"], info["n_factors"]) == ("rating", 120, 80, 8)
    assert info["y_range"] == list(models["int"].y_range) and info["id_type"] == {"user": "int", "item": "int"}
    assert info["row0"] == "trained"
    assert info["index"]["stored"] is True and info["index"]["metric"] == "cosine"
    assert info["model_card"] == read_model_card(models["root"] / "int")
    assert time.time() - time.mktime(time.strptime(info["loaded_at"], "%Y-%m-%dT%H:%M:%SZ")) + time.timezone < 600


def test_metrics_count_requests_by_route_method_and_status(api):
    api.get("/v1/similar", params={"item": 2})
    api.get("/v1/similar", params={"item": "x"})
    api.get("/no/such/path")
    response = api.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    count = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if not line.startswith("#")}
    assert count['collabemb_requests_total{path="/v1/similar",method="GET",status="200"}'] >= 1
    assert count['collabemb_requests_total{path="/v1/similar",method="GET",status="400"}'] >= 1
    assert count['collabemb_requests_total{path="other",method="GET",status="404"}'] >= 1
    similar = [key for key in count if key.startswith('collabemb_request_seconds_bucket{path="/v1/similar"')]
    assert (
        count['collabemb_request_seconds_bucket{path="/v1/similar",le="+Inf"}']
        == count['collabemb_request_seconds_count{path="/v1/similar"}']
    )
    assert len(similar) == len(BUCKETS) + 1
    assert count["collabemb_model_loaded_timestamp_seconds"] > 1e9
    assert "# TYPE collabemb_reloads_total counter" in text


def test_the_explorer_page_is_served_at_the_root(api):
    response = api.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text


# --- refusals: a 4xx in JSON, never a 500 ----------------------------------------------------


def test_unknown_ids_are_named_unless_the_unknown_slot_is_asked(models, api):
    refused(api.get("/v1/similar", params={"item": 4242}), 404, "4242", "fallback=unknown_slot")
    refused(api.get("/v1/recommend", params={"user": 4242}), 404, "4242")
    refused(api.post("/v1/predict", json={"pairs": [{"user": 1, "item": 4242}]}), 404, "4242", '"fallback": "unknown_slot"')
    refused(api.get("/v1/seen", params={"user": 4242}), 404, "4242")
    response = api.get("/v1/similar", params={"item": 4242, "fallback": "unknown_slot", "k": 4})
    assert got(response) == expected(collabemb.similar_items(models["int"], [4242], k=4, unknown="unknown_slot"))
    assert response.json()["query"] == {"item": 4242, "source": "unknown_slot"}
    response = api.get("/v1/recommend", params={"user": 4242, "fallback": "unknown_slot"})
    assert got(response) == expected(collabemb.recommend(models["int"], [4242], unknown="unknown_slot"))


@pytest.mark.parametrize(
    "params, words",
    [
        ({"item": "050"}, ["'050'", "integers"]),
        ({"item": "+5"}, ["'+5'"]),
        ({"item": "5.0"}, ["'5.0'"]),
        ({"item": "abc"}, ["'abc'"]),
        ({"item": "99999999999999999999"}, ["99999999999999999999"]),
        ({"item": 5, "k": 0}, ["k must be", "1000"]),
        ({"item": 5, "k": 1001}, ["1001"]),
        ({"item": 5, "k": "10000000000000000000000"}, ["k must be"]),
        ({"item": 5, "k": "ten"}, ["ten"]),
        ({"item": 5, "fallback": "maybe"}, ["maybe"]),
        ({}, ["item=ID or user=ID"]),
        ({"item": 5, "user": 5}, ["exactly one"]),
        ({"item": 5, "colour": "red"}, ["'colour'"]),
    ],
)
def test_bad_query_parameters_are_refused_saying_why(api, params, words):
    refused(api.get("/v1/similar", params=params), 400, *words)


def test_missing_repeated_and_unknown_parameters_are_refused(api):
    refused(api.get("/v1/recommend"), 400, "missing parameter 'user'")
    refused(api.get("/v1/predict", params={"user": 1}), 400, "missing parameter 'item'")
    refused(api.get("/v1/similar?item=1&item=2"), 400, "'item'", "twice")
    refused(api.get("/v1/recommend", params={"user": 1, "include_seen": "yes"}), 400, "include_seen", "yes")
    refused(api.get("/v1/info", params={"verbose": 1}), 400, "'verbose'")


@pytest.mark.parametrize(
    "body, words",
    [
        ({"ratings": [{"item": "3", "rating": 4}]}, ["ratings[0].item", "integers (JSON numbers)", '"3"']),
        ({"ratings": [{"item": 3.0, "rating": 4}]}, ["ratings[0].item", "3.0"]),
        ({"ratings": [{"item": True, "rating": 4}]}, ["ratings[0].item", "true"]),
        ({"ratings": [{"item": 3, "rating": "4"}]}, ["ratings[0].rating", "finite JSON number"]),
        ({"ratings": [{"item": 3}]}, ["ratings[0]", "missing field 'rating'"]),
        ({"ratings": [{"item": 3, "rating": 4, "weight": 1}]}, ["unknown field 'weight'"]),
        ({"ratings": [3, 4]}, ["ratings[0] must be a JSON object"]),
        ({"ratings": {"item": 3}}, ['"ratings" must be a JSON array']),
        ({"ratings": [], "k": 0}, ["k must be"]),
        ({"ratings": [], "k": "5"}, ["k must be"]),
        ({"ratings": [], "include_seen": "yes"}, ["include_seen"]),
        ({"rating": []}, ["unknown field 'rating'", "ratings, k, include_seen"]),
    ],
)
def test_bad_json_bodies_are_refused_saying_why(api, body, words):
    refused(api.post("/v1/recommend", json=body), 400, *words)


def test_bodies_that_are_not_json_objects_are_refused(api):
    headers = {"content-type": "application/json"}
    refused(api.post("/v1/recommend", content=b'{"ratings": [', headers=headers), 400, "not valid JSON")
    refused(api.post("/v1/recommend", content=b"\xff\xfe", headers=headers), 400, "not valid JSON")
    refused(api.post("/v1/recommend", content=b"", headers=headers), 400, "not valid JSON")
    refused(api.post("/v1/recommend", content=b"[1, 2]", headers=headers), 400, "JSON object")
    refused(api.post("/v1/recommend", content=b"[" * 100_000, headers=headers), 400)
    refused(api.post("/v1/recommend", content=b'{"ratings": [{"item": 3, "rating": NaN}]}', headers=headers), 400, "finite")
    refused(api.post("/v1/predict", json={"pairs": [{"user": 1, "item": 2}], "fallback": True}), 400, "fallback")
    refused(api.post("/v1/embedding", json={"table": "users", "ids": [1]}), 400, '"table"')


def test_oversized_bodies_and_too_many_entries_are_refused_with_413(api):
    big = json.dumps({"ratings": [{"item": 1, "rating": 1}] * 60_000}).encode()  # about 1.5 MiB
    assert len(big) > 1 << 20
    refused(api.post("/v1/recommend", content=big), 413, "1 MiB")

    def chunks():  # no Content-Length: read until it is too much
        for start in range(0, len(big), 1 << 16):
            yield big[start : start + 1 << 16]

    refused(api.post("/v1/recommend", content=chunks()), 413, "1 MiB")
    refused(api.post("/v1/recommend", json={"ratings": [{"item": 1, "rating": 1}] * 10_001}), 413, "10001", "10000")
    refused(api.post("/v1/predict", json={"pairs": [{"user": 1, "item": 1}] * 10_001}), 413)
    refused(api.post("/v1/embedding", json={"table": "item", "ids": [1] * 10_001}), 413)
    assert api.post("/v1/embedding", json={"table": "item", "ids": [1] * 10_000}).status_code == 200


def test_wrong_methods_and_unknown_paths_get_json_errors(api):
    response = api.post("/v1/similar", params={"item": 1})
    refused(response, 405, "POST", "/v1/similar")
    assert "GET" in response.headers["allow"]
    refused(api.get("/v1/reload"), 405, "GET")
    refused(api.delete("/v1/recommend"), 405)
    refused(api.get("/v2/similar"), 404, "/v2/similar")
    refused(api.get("/v1/similar/", params={"item": 1}), 404)


def test_no_request_of_these_tests_got_a_server_error(server, api):
    text = api.get("/metrics").text
    assert 'status="5' not in text
    assert "internal error" not in server.log() and "Traceback" not in server.log()


# --- ID types ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def str_api(models):
    with serving(models["root"] / "str", log=models["root"] / "str.log") as srv, srv.client() as client:
        yield client
        assert stop(srv, signal.SIGINT) == 0, srv.log()  # Ctrl-C: a graceful shutdown too


def test_a_str_model_takes_query_text_as_it_is_and_json_strings_only(models, str_api):
    fitted = models["str"]
    response = str_api.get("/v1/similar", params={"item": "i007", "k": 5})
    assert got(response) == expected(collabemb.similar_items(fitted, ["i007"], k=5))
    refused(str_api.get("/v1/similar", params={"item": "7"}), 404, "'7'")  # a str ID like any other: unknown, not refused
    refused(str_api.get("/v1/similar", params={"item": "050"}), 404, "'050'")
    refused(str_api.post("/v1/recommend", json={"ratings": [{"item": 7, "rating": 3}]}), 400, "strings (JSON strings)")
    ratings = [{"item": "i003", "rating": 5}, {"item": "i010", "rating": 2}]
    frame = pd.DataFrame({"item": ["i003", "i010"], "rating": [5.0, 2.0]})
    assert got(str_api.post("/v1/recommend", json={"ratings": ratings})) == expected(collabemb.recommend_from_ratings(fitted, frame))
    pairs = {"pairs": [{"user": "u001", "item": "i002"}]}
    assert str_api.post("/v1/predict", json=pairs).json()["results"][0]["prediction"] == float(
        fitted.predict(["u001"], ["i002"])["prediction"][0]
    )
    info = str_api.get("/v1/info").json()
    assert info["id_type"] == {"user": "str", "item": "str"} and info["index"]["stored"] is False  # built in memory


# --- token ---------------------------------------------------------------------------------------


def test_a_token_is_needed_by_every_request_but_healthz(models):
    with serving(models["root"] / "int", "--token", TOKEN, log=models["root"] / "token.log") as srv:
        with srv.client() as client:
            assert client.get("/healthz").status_code == 200
            refused(client.get("/v1/info"), 401, "token")
            refused(client.get("/v1/similar", params={"item": 1}, headers={"Authorization": "Bearer nope"}), 401, "wrong token")
            refused(client.get("/metrics"), 401)
            assert client.get("/v1/similar", params={"item": 1}, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
            refused(client.get("/", params={"token": "nope"}), 401)
        with srv.client() as browser:
            page = browser.get("/", params={"token": TOKEN})
            assert page.status_code == 200 and "<html" in page.text
            cookie = page.headers["set-cookie"].lower()
            assert "collabemb_token=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
            assert browser.get("/v1/info").status_code == 200  # the cookie stands for the header
        assert stop(srv) == 0


def test_a_non_loopback_host_without_a_token_is_refused_in_one_line(models):
    result = subprocess.run(
        [sys.executable, "-m", "collabemb", "serve", str(models["root"] / "int"), "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "COLLABEMB_TOKEN"},
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("collabemb: error: --host 0.0.0.0")
    assert "--token" in result.stderr


@pytest.mark.parametrize("what", ["missing", "not an artifact", "corrupt"])
def test_a_bad_artifact_exits_non_zero_in_one_line_before_listening(models, tmp_path, what):
    path = tmp_path / "art"
    if what == "not an artifact":
        path.mkdir()
        (path / "notes.txt").write_text("hello")
    elif what == "corrupt":
        collabemb.save_model(models["int"], path)
        tensors = snapshot_of(path) / "tensors.safetensors"
        tensors.write_bytes(tensors.read_bytes()[:-8] + b"\0" * 8)
    result = subprocess.run(
        [sys.executable, "-m", "collabemb", "serve", str(path), "--port", "0"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("collabemb: error: ") and "Traceback" not in result.stderr
    assert str(path.resolve()) in result.stderr


# --- the two phases of a load: searches without torch, then the torch model -------------------------


def test_the_load_before_listening_and_its_searches_import_no_torch_numba_or_scipy(models):
    """Phase A, from a fresh interpreter: the app made (an artifact with a stored index, and one without, whose
    parts are built), searches, embeddings, seen items and info answered; torch, numba and scipy never imported."""
    code = f"""
import sys
from starlette.testclient import TestClient
from collabemb.serve_app import create_app
from collabemb.serve_model import load_served, one_thread_each
one_thread_each()
app = create_app({str(models["root"] / "int")!r}, token=None)
load_served({str(models["root"] / "str")!r})
client = TestClient(app)  # not entered: the app's lifespan, and so phase B, is not started
for path, params in [("/v1/similar", {{"item": 5}}), ("/v1/similar", {{"user": 5}}), ("/v1/recommend", {{"user": 5}}),
                     ("/v1/embedding", {{"item": 5}}), ("/v1/seen", {{"user": 5}}), ("/v1/info", {{}}), ("/healthz", {{}})]:
    assert client.get(path, params=params).status_code == 200, path
assert client.post("/v1/recommend", json={{}}).status_code == 200
print(sorted(name for name in ("torch", "numba", "scipy") if name in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_requests_needing_the_torch_model_wait_for_it_then_answer_as_the_python_api_and_a_reload_does_the_same(
    models, tmp_path, monkeypatch
):
    from starlette.testclient import TestClient

    from collabemb import serve_model
    from collabemb.serve_app import create_app

    gate, finish = threading.Event(), serve_model.Served._finish
    monkeypatch.setattr(serve_model.Served, "_finish", lambda served: (gate.wait(60), finish(served)))  # phase B held
    collabemb.save_model(models["int"], tmp_path / "art")
    ratings = FOLD_INS["distinct items"]
    frame = pd.DataFrame({"item": [r["item"] for r in ratings], "rating": [float(r["rating"]) for r in ratings]})
    with TestClient(create_app(tmp_path / "art", token=None)) as client:  # entered: phase B started, and held
        answers = {}
        asks = {
            "predict": lambda: client.get("/v1/predict", params={"user": 7, "item": 80}),
            "fold-in": lambda: client.post("/v1/recommend", json={"ratings": ratings, "k": 8}),
            "page": lambda: client.get("/"),
        }
        waiting = [threading.Thread(target=lambda name=name: answers.update({name: asks[name]()})) for name in asks]
        for thread in waiting:
            thread.start()
        time.sleep(1.0)
        assert client.get("/healthz").json() == {"status": "ok", "full_model": "loading"}
        assert got(client.get("/v1/similar", params={"item": 17, "k": 3})) == expected(collabemb.similar_items(models["int"], [17], k=3))
        assert not answers  # they wait, off the event loop: the searches above were answered meanwhile
        gate.set()
        for thread in waiting:
            thread.join(60)
        want = models["int"].predict([7], [80])["prediction"]
        assert answers["predict"].json()["prediction"] == float(want[0])
        assert got(answers["fold-in"]) == expected(collabemb.recommend_from_ratings(models["int"], frame, k=8))
        assert answers["page"].status_code == 200 and "<html" in answers["page"].text.lower()
        assert client.get("/healthz").json() == {"status": "ok", "full_model": "ready"}
        collabemb.save_model(models["other"], tmp_path / "art")
        gate.clear()
        assert client.post("/v1/reload").json()["status"] == "reloaded"  # phase A of the new model, swapped in
        assert client.get("/healthz").json() == {"status": "ok", "full_model": "loading"}  # its phase B, held
        assert got(client.get("/v1/similar", params={"item": 17, "k": 3})) == expected(collabemb.similar_items(models["other"], [17], k=3))
        gate.set()
        predicted = client.get("/v1/predict", params={"user": 7, "item": 80}).json()["prediction"]
        assert predicted == float(models["other"].predict([7], [80])["prediction"][0])


# --- reloads --------------------------------------------------------------------------------------


def similar_ids(fitted, item: int = 5) -> list:
    return collabemb.similar_items(fitted, [item], k=6)["item"].tolist()


def hammered(srv: Server, act, done_when, threads: int = 4) -> tuple[list, list]:
    """``act()`` while ``threads`` clients ask /v1/similar?item=5 without pause, until ``done_when(answers)``
    (at most a minute); ``(answers, failures)``: the item lists answered, and anything but a 200."""
    answers, failures, done = [], [], threading.Event()

    def hammer() -> None:
        with srv.client() as client:
            while not done.is_set():
                try:
                    response = client.get("/v1/similar", params={"item": 5, "k": 6})
                    if response.status_code == 200:
                        answers.append([r["item"] for r in response.json()["results"]])
                    else:
                        failures.append(response.text)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    try:
        for worker in workers:
            worker.start()
        time.sleep(0.5)
        act()
        deadline = time.time() + 60
        while time.time() < deadline and not done_when(answers):
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        done.set()
        for worker in workers:
            worker.join()
    return answers, failures


def wait_for(condition, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and not condition():
        time.sleep(0.1)


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_under_load_swaps_the_model_without_a_failed_request(models, tmp_path, workers):
    old, new = similar_ids(models["int"]), similar_ids(models["other"])
    assert old != new
    art, reloaded = tmp_path / "art", f"reloaded {(tmp_path / 'art').resolve()}"
    collabemb.save_model(models["int"], art)
    with serving(art, "--workers", str(workers), log=tmp_path / "serve.log") as srv:

        def save_and_hup() -> None:
            collabemb.save_model(models["other"], art)
            srv.proc.send_signal(signal.SIGHUP)

        answers, failures = hammered(srv, save_and_hup, lambda answers: len(answers) > 50 and all(a == new for a in answers[-50:]))
        assert not failures, failures[:3]
        assert answers and all(a in (old, new) for a in answers)  # each answer whole from one model
        assert answers[0] == old and answers[-1] == new
        assert srv.log().count(reloaded) == workers  # every worker, once
        with srv.client() as client:
            assert [r["item"] for r in client.get("/v1/similar", params={"item": 5, "k": 6}).json()["results"]] == new
            collabemb.save_model(models["int"], art)
            assert client.post("/v1/reload").json()["status"] == "reloaded"  # one worker; it has the supervisor tell the others
        wait_for(lambda: srv.log().count(reloaded) == 2 * workers)
        assert stop(srv) == 0
    assert srv.log().count(reloaded) == 2 * workers and "Traceback" not in srv.log()


def test_a_failed_reload_keeps_the_old_model_and_says_why(models, tmp_path):
    collabemb.save_model(models["int"], tmp_path / "art")
    with serving(tmp_path / "art", log=tmp_path / "serve.log") as srv:
        with srv.client() as client:
            before = client.get("/v1/similar", params={"item": 5}).json()
            tensors = snapshot_of(tmp_path / "art") / "tensors.safetensors"
            tensors.write_bytes(b"\0" + tensors.read_bytes()[1:])
            message = refused(client.post("/v1/reload"), 409, "reload failed", "still serving", "tensors.safetensors")
            assert client.get("/v1/similar", params={"item": 5}).json() == before
            collabemb.save_model(models["other"], tmp_path / "art")  # a good snapshot again
            reloaded = client.post("/v1/reload").json()
            assert reloaded["status"] == "reloaded" and reloaded["snapshot"] == snapshot_of(tmp_path / "art").name
            assert [r["item"] for r in client.get("/v1/similar", params={"item": 5, "k": 6}).json()["results"]] == similar_ids(
                models["other"]
            )
            metrics = client.get("/metrics").text
            assert 'collabemb_reloads_total{result="failed"} 1' in metrics and 'collabemb_reloads_total{result="reloaded"} 1' in metrics
            srv.proc.send_signal(signal.SIGHUP)  # nothing new saved since: nothing to do
            wait_for(lambda: "nothing to do" in srv.log())
            assert 'collabemb_reloads_total{result="unchanged"} 1' in client.get("/metrics").text
        assert stop(srv) == 0
    assert message in srv.log()


def test_a_bug_is_answered_500_in_one_sentence_and_its_traceback_goes_to_stderr(models, capsys):
    from starlette.testclient import TestClient

    from collabemb.serve_app import create_app

    app = create_app(models["root"] / "int", token=None)

    def broken(*args):
        raise ZeroDivisionError("planted")

    app.state.holder.current.similar = broken
    with TestClient(app, raise_server_exceptions=False) as client:
        message = refused(client.get("/v1/similar", params={"item": 1}), 500, "internal error")
        assert "planted" not in message and "ZeroDivisionError" not in message
        assert client.get("/v1/recommend", params={"user": 1}).status_code == 200  # the next request is answered
        assert 'path="/v1/similar",method="GET",status="500"} 1' in client.get("/metrics").text
    err = capsys.readouterr().err
    assert "internal error answering GET /v1/similar" in err and "Traceback" in err and "ZeroDivisionError: planted" in err


def _server_sockets(port: int) -> dict[int, int]:
    """{client port: socket inode} of the established IPv4 loopback connections to ``port``, server side."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
        if state == "01" and int(local.split(":")[1], 16) == port:
            found[int(remote.split(":")[1], 16)] = inode
    return found


def _owners(inodes: set[int], parent: int) -> dict[int, int]:
    """{pid: how many of the socket ``inodes`` it holds}, over the child processes of ``parent``."""
    counts = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):  # a process that ended meanwhile
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                counts[int(entry.name)] = len(_socket_inodes(entry / "fd") & inodes)
    return counts


def _socket_inodes(fds: Path) -> set[int]:
    """The inodes of the sockets among the open files ``fds`` (/proc/PID/fd) lists; a file closed while they are
    read is passed over (a worker opens and closes pipes of its own all the time)."""
    found = set()
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            if (link := os.readlink(fd)).startswith("socket:["):
                found.add(int(link[8:-1]))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="each worker has a socket of its own (SO_REUSEPORT) on Linux only")
def test_workers_share_out_connections_opened_at_once(models, tmp_path):
    """32 connections opened at once, as a client's pool opens them, are spread over both workers (each listens on
    a socket of its own: on one shared socket the first worker awake could take them all). 4 or fewer on one
    worker out of 32 connections spread at random has a chance of 3e-6."""
    import socket

    collabemb.save_model(models["int"], tmp_path / "art")
    with serving(tmp_path / "art", "--workers", "2", log=tmp_path / "serve.log") as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        conns = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(32)]
        try:
            for conn in conns:
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            assert all(conn.recv(64).startswith(b"HTTP/1.1 200") for conn in conns)  # each accepted and answered
            by_client = _server_sockets(port)
            inodes = {by_client[conn.getsockname()[1]] for conn in conns}
            counts = sorted(n for n in _owners(inodes, srv.proc.pid).values() if n)
            assert len(counts) == 2 and sum(counts) == 32 and counts[0] > 4, counts
        finally:
            for conn in conns:
                conn.close()
        assert stop(srv) == 0
