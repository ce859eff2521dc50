"""The real app over the real embedded Triton: predict, embeddings (official openai
client), models, health, metrics."""

from __future__ import annotations

import base64
import re
import socket
import time

import numpy as np
import pytest

from .conftest import ADMIN_KEY, infer

pytestmark = pytest.mark.integration

PREDICT_SENTIMENT = "/v1/models/sentiment/predict"
INTENT_TEXTS = [
    "I want to talk to a real person",
    "what's the weather in Paris tomorrow",
    "transfer 200 dollars from checking to savings",
]


@pytest.mark.parametrize("version", ["1", "2"])
def test_predict_intent_versions_by_path_and_header(http, client, version):
    expected = infer(client, "intent", INTENT_TEXTS, ("LABEL", "SCORE"), version=version)
    by_path = http.post(
        f"/v1/models/intent/versions/{version}/predict", json={"inputs": INTENT_TEXTS}
    )
    by_header = http.post(
        "/v1/models/intent/predict",
        json={"inputs": INTENT_TEXTS},
        headers={"X-Model-Version": version},
    )
    for response in (by_path, by_header):
        assert response.status_code == 200, response.text
        body = response.json()
        assert response.headers["X-Model-Version"] == version == body["version"]
        assert [p["label"] for p in body["predictions"]] == [
            x.decode() for x in expected["LABEL"].reshape(-1)
        ]
        np.testing.assert_allclose(
            [p["score"] for p in body["predictions"]], expected["SCORE"].reshape(-1), atol=1e-6
        )
    assert by_path.json()["score_kind"] == ("probability" if version == "1" else "decision_value")


def test_default_version_is_the_latest(http):
    response = http.post("/v1/models/intent/predict", json={"inputs": "hello there"})
    assert response.headers["X-Model-Version"] == "2"


def test_top_k_and_all_scores(http, client):
    response = http.post(
        "/v1/models/intent/versions/1/predict",
        json={"inputs": INTENT_TEXTS, "top_k": 3, "return_all_scores": True},
    )
    assert response.status_code == 200
    scores = infer(client, "intent", INTENT_TEXTS, ("SCORES",), version="1")["SCORES"]
    for row, prediction in zip(scores, response.json()["predictions"], strict=True):
        assert len(prediction["scores"]) == 157
        top = [s["score"] for s in prediction["top_k"]]
        np.testing.assert_allclose(top, np.sort(row)[::-1][:3], atol=1e-6)
        assert prediction["top_k"][0]["label"] == prediction["label"]
        assert prediction["scores"][prediction["label"]] == pytest.approx(prediction["score"])


def test_sentiment_single_and_batch(http):
    single = http.post("/v1/models/sentiment/predict", json={"inputs": "What a wonderful film!"})
    assert single.status_code == 200
    assert single.json()["predictions"][0]["label"] == "positive"
    batch = http.post(
        "/v1/models/sentiment/predict",
        json={"inputs": ["I loved every minute", "Dull, slow and far too long"]},
    )
    assert [p["label"] for p in batch.json()["predictions"]] == ["positive", "negative"]
    assert batch.json()["usage"]["input_tokens"] > 8


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for match in re.finditer(rf"^{name}{{(.*)}} (\S+)$", text, re.M):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_a_batch_is_one_triton_request_and_metrics_move(http, triton):
    import urllib.request

    def triton_requests() -> float:
        text = urllib.request.urlopen(triton.metrics_url, timeout=5).read().decode()
        return _metric(text, "nv_inference_request_success", model="sentiment")

    before = http.get("/metrics").text
    triton_before = triton_requests()
    texts = [f"review number {i} was fine" for i in range(50)]
    for _ in range(3):
        assert http.post("/v1/models/sentiment/predict", json={"inputs": texts}).status_code == 200
    assert http.post("/v1/models/sentiment/predict", json={"inputs": ""}).status_code == 422
    # A request is counted just after its response is sent: poll until the 422 shows.
    route = "/v1/models/{model}/predict"
    deadline = time.monotonic() + 5
    while True:
        after = http.get("/metrics").text
        done = _metric(after, "infergate_requests_total", status="422", route=route) > _metric(
            before, "infergate_requests_total", status="422", route=route
        )
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert triton_requests() - triton_before == 3  # 150 texts, 3 requests to Triton
    labels = {"route": "/v1/models/{model}/predict", "model": "sentiment"}
    assert (
        _metric(after, "infergate_requests_total", status="200", **labels)
        - _metric(before, "infergate_requests_total", status="200", **labels)
    ) == 3
    assert (
        _metric(after, "infergate_requests_total", status="422", route="/v1/models/{model}/predict")
        - _metric(
            before, "infergate_requests_total", status="422", route="/v1/models/{model}/predict"
        )
    ) == 1
    assert (
        _metric(after, "infergate_batch_items_sum", model="sentiment")
        - _metric(before, "infergate_batch_items_sum", model="sentiment")
    ) == 150
    assert (
        _metric(after, "infergate_triton_duration_seconds_count", model="sentiment")
        - _metric(before, "infergate_triton_duration_seconds_count", model="sentiment")
    ) == 3
    assert "infergate_in_flight_requests" in after
    assert "infergate_frontend_overhead_seconds_bucket" in after


def test_embeddings_with_the_official_openai_client(frontend, client):
    import openai

    oa = openai.OpenAI(base_url=frontend.url + "/v1", api_key=ADMIN_KEY, max_retries=0)
    texts = ["The food was delicious", "and the waiter was friendly"]
    expected = infer(client, "embed", texts, ("EMBEDDING", "NUM_TOKENS"))
    # the client asks for base64 unless told otherwise, and decodes it itself
    default = oa.embeddings.create(model="embed", input=texts)
    floats = oa.embeddings.create(model="embed", input=texts, encoding_format="float")
    single = oa.embeddings.create(model="embed", input=texts[0])
    for result in (default, floats):
        assert [d.index for d in result.data] == [0, 1]
        np.testing.assert_allclose(
            np.array([d.embedding for d in result.data]), expected["EMBEDDING"], atol=1e-6
        )
        assert result.usage.prompt_tokens == int(expected["NUM_TOKENS"].sum())
        assert result.model == "embed"
    assert len(single.data) == 1 and len(single.data[0].embedding) == 384
    with pytest.raises(openai.NotFoundError) as err:
        oa.embeddings.create(model="text-embedding-3-small", input="x")
    assert err.value.body["code"] == "model_not_found"


def test_embeddings_base64_raw(http):
    body = http.post(
        "/v1/embeddings", json={"model": "embed", "input": ["a", "b"], "encoding_format": "base64"}
    ).json()
    vector = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    assert vector.shape == (384,) and abs(np.linalg.norm(vector) - 1) < 1e-5


OTHER_KINDS = ("ner", "pii", "imagenet", "summarize")


def test_models_list_and_detail(http):
    listing = http.get("/v1/models").json()
    by_id = {m["id"]: m for m in listing["data"]}
    assert set(by_id) == {"intent", "sentiment", "embed", "chat", *OTHER_KINDS}
    assert {by_id[name]["task"] for name in OTHER_KINDS} == {
        "token-classification",
        "image-classification",
        "summarization",
    }
    assert [v["version"] for v in by_id["intent"]["versions"]] == ["1", "2"]
    assert all(v["status"] == "READY" for v in by_id["intent"]["versions"])
    assert by_id["embed"]["embedding_dim"] == 384 and by_id["intent"]["ready"]
    detail = http.get("/v1/models/intent").json()
    assert len(detail["labels"]) == 157 and "connect_to_human" in detail["labels"]
    assert detail["max_input_tokens"] == 256
    assert detail["versions"][1]["score_kind"] == "decision_value"
    missing = http.get("/v1/models/nope")
    assert missing.status_code == 404
    available = missing.json()["error"]["details"]["available"]
    assert available == sorted(["chat", "embed", "intent", "sentiment", *OTHER_KINDS])


def test_health(http):
    assert http.get("/health/live").json()["status"] == "ok"
    assert http.get("/health/startup").status_code == 200
    ready = http.get("/health/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert set(body["components"]) == {
        "triton",
        "model:intent",
        "model:sentiment",
        "model:embed",
        "model:chat",
        *(f"model:{name}" for name in OTHER_KINDS),
        "database",
        "outbox",
    }
    assert all(c["status"] == "up" and c["latency_ms"] >= 0 for c in body["components"].values())
    assert body["components"]["database"]["required"] is False  # down: "degraded", not out
    assert body["components"]["outbox"]["required"] is False  # backed up: "degraded"


def test_request_id_is_echoed_and_passed_on(http):
    response = http.post(
        "/v1/models/sentiment/predict",
        json={"inputs": "fine"},
        headers={"X-Request-ID": "client-chosen-id-42"},
    )
    assert response.headers["X-Request-ID"] == "client-chosen-id-42"
    bad = http.get("/v1/models", headers={"X-Request-ID": "bad id\twith spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["X-Request-ID"])


def _raw_post(port: int, path: str, extra_header: bytes, body: bytes) -> int:
    """One request over a socket, so that a header can carry bytes no client library
    sends (0xB2 decodes as "²" in Latin-1, which is how ASGI servers read header bytes)."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {ADMIN_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(head + extra_header + b"\r\n\r\n" + body)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1])


@pytest.mark.parametrize("version", ["²", "¹", "①", "１", "٢"])
def test_unicode_digit_versions_are_422_never_500(http, frontend, version):
    """Issue #11 item 5: "²" was a 500 (isdigit() then int()); "１" and "٢" served version
    1 and 2. Versions are ASCII digits, in the path and in X-Model-Version."""
    by_path = http.post(f"/v1/models/intent/versions/{version}/predict", json={"inputs": "hi"})
    assert by_path.status_code == 422 and by_path.json()["error"]["code"] == "validation_error"
    body = b'{"inputs": "hi"}'
    for raw in {version.encode("utf-8"), version.encode("latin-1", "ignore")} - {b""}:
        header = b"X-Model-Version: " + raw
        assert _raw_post(frontend.port, "/v1/models/intent/predict", header, body) == 422
    assert _raw_post(frontend.port, "/v1/models/intent/predict", b"X-Model-Version: 1", body) == 200


def test_head_allow_and_if_none_match_star_over_the_real_server(http):
    """Issue #11 item 10, the application's part, through the real server."""
    get, head = http.get("/v1/models/intent"), http.head("/v1/models/intent")
    assert get.status_code == head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    wrong = http.post("/v1/admin/routing/intent")
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "GET, HEAD, PUT, DELETE"
    star = http.post(PREDICT_SENTIMENT, json={"inputs": "fine"}, headers={"If-None-Match": "*"})
    assert star.status_code == 412 and star.json()["error"]["code"] == "precondition_failed"
