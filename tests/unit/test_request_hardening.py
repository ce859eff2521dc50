"""Issue #11, the request-level items (unit: the real app over a fake Triton):
versions are ASCII digits (item 5); the generation routes' body and prompt caps refuse
before Triton (item 7); HEAD, Allow and If-None-Match: * (item 10); strict request types
(item 12); redis_up, overload message, predict advice, cached readiness (item 14)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from frontend.app import create_app
from frontend.catalog import Catalog, ServedModel
from frontend.errors import InputInvalid, Overloaded, VersionNotFound
from frontend.observability.metrics import Metrics
from frontend.settings import (
    AuthSettings,
    GenerationSettings,
    LimitSettings,
    Settings,
    TritonSettings,
)
from frontend.triton.errors import model_error

from .cards import WITH_CHAT, write_cards
from .test_frontend_errors import ADMIN_KEY, FakeResult, FakeTriton, assert_envelope, over_fake

PREDICT = "/v1/models/intent/predict"
CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


class FakeStream:
    """tritonclient's stream_infer iterator: admission, one token, the final response
    (or one error), and cancel()."""

    def __init__(self, requests, error: Exception | None) -> None:
        self._requests = requests
        self.request: dict | None = None
        self.cancelled = False
        answers = [("", 3, 0, ""), ("hi", 3, 1, ""), ("", 3, 1, "stop")]
        self._answers: list = [(self._result(*a), None) for a in answers]
        if error is not None:
            self._answers = [(None, error)]

    @staticmethod
    def _result(text: str, prompt: int, completion: int, finish: str) -> FakeResult:
        return FakeResult(
            {
                "TEXT": np.array([text.encode()], dtype=object),
                "PROMPT_TOKENS": np.array([prompt], dtype=np.int32),
                "COMPLETION_TOKENS": np.array([completion], dtype=np.int32),
                "FINISH_REASON": np.array([finish.encode()], dtype=object),
            }
        )

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self):
        if self.request is None:
            self.request = await anext(self._requests)
        if not self._answers:
            raise StopAsyncIteration
        return self._answers.pop(0)

    def cancel(self) -> None:
        self.cancelled = True


class CountingTriton(FakeTriton):
    """Also streams generations and counts health calls."""

    def __init__(self) -> None:
        super().__init__()
        self.streams: list[FakeStream] = []
        self.stream_error: Exception | None = None
        self.health_calls = 0

    def stream_infer(self, requests, stream_timeout=None, **kwargs) -> FakeStream:
        stream = FakeStream(requests, self.stream_error)
        self.streams.append(stream)
        return stream

    async def is_server_ready(self, **kwargs):
        self.health_calls += 1
        return True

    async def is_model_ready(self, model, version="", **kwargs):
        self.health_calls += 1
        return True


@pytest.fixture
def fake() -> CountingTriton:
    return CountingTriton()


def _app(
    tmp_path: Path, fake: CountingTriton, parts: dict | None = None, **overrides
) -> TestClient:
    """A started app over `fake`; `parts`: other services to use (ServiceOverrides)."""
    overrides.setdefault("limits", LimitSettings(max_body_bytes=64 * 1024, max_batch_items=8))
    overrides.setdefault("auth", AuthSettings(bootstrap_admin_key=ADMIN_KEY))
    overrides.setdefault(
        "generation", GenerationSettings(max_body_bytes=4096, max_prompt_chars=1000)
    )
    settings = Settings(
        environment="test",
        triton=TritonSettings(model_repository=write_cards(tmp_path / "repo", WITH_CHAT)),
        **overrides,
    )
    app = create_app(settings, over_fake(settings, fake, **(parts or {})))
    client = TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": ADMIN_KEY})
    client.__enter__()
    return client


@pytest.fixture
def api(tmp_path, fake):
    client = _app(tmp_path, fake)
    yield client
    client.__exit__(None, None, None)


# --- item 5: versions are ASCII digits -------------------------------------------------

# str.isdigit() holds for all of these; int() refused the first three (a 500) and took
# the others as versions.
UNICODE_DIGITS = ["²", "¹", "①", "１", "٢", "۲", "𝟐", "२"]


@pytest.mark.parametrize("version", [*UNICODE_DIGITS, "2 ", "+2", "-1", "1_0", "0x2", "2.0"])
def test_a_version_that_is_not_ascii_digits_is_422(api, fake, version):
    error = assert_envelope(
        api.post(f"/v1/models/intent/versions/{version}/predict", json={"inputs": "x"}),
        422,
        "validation_error",
    )
    assert error["details"][0]["loc"] == ["version"]
    assert fake.calls == []


def _catalog() -> tuple[Catalog, ServedModel]:
    model = ServedModel("intent", "text-classification", {1: {}, 2: {}})
    return Catalog({"intent": model}), model


@pytest.mark.parametrize("version", [*UNICODE_DIGITS, "Â²", " 2", "2\n"])
def test_resolve_version_refuses_non_ascii_digits(version):
    """The header form goes through the same function (a raw 0xB2 header byte decodes
    to "²"; the integration test sends it over a socket)."""
    catalog, model = _catalog()
    with pytest.raises(InputInvalid):
        catalog.resolve_version(model, version)


def test_resolve_version_ascii():
    catalog, model = _catalog()
    assert catalog.resolve_version(model, "2") == 2
    assert catalog.resolve_version(model, "02") == 2
    assert catalog.resolve_version(model, None) == 2
    with pytest.raises(VersionNotFound):
        catalog.resolve_version(model, "7")
    with pytest.raises(VersionNotFound):  # int() refuses > 4300 digits: no ValueError
        catalog.resolve_version(model, "9" * 5000)


# --- item 7: the generation routes refuse big bodies and prompts before Triton ---------


def test_generation_body_over_its_cap_is_413_before_triton(api, fake):
    body = {"model": "chat", "messages": [{"role": "user", "content": "x" * 5000}]}
    raw = json.dumps(body).encode()
    assert 4096 < len(raw) < 64 * 1024  # under the global cap, over the route's
    error = assert_envelope(
        api.post(CHAT, content=raw, headers={"Content-Type": "application/json"}),
        413,
        "payload_too_large",
    )
    assert error["details"] == {"limit_bytes": 4096}
    completion = {"model": "chat", "prompt": "x" * 5000}
    assert_envelope(api.post("/v1/completions", json=completion), 413, "payload_too_large")
    assert fake.streams == []
    # Other routes keep the global cap.
    ok = api.post("/v1/embeddings", json={"model": "embed", "input": "x" * 5000})
    assert ok.status_code == 200


def test_prompt_over_the_character_cap_is_400_before_triton(api, fake):
    # Characters, not bytes: 600 + 401 over two messages (1 000 is the cap).
    messages = [
        {"role": "system", "content": "é" * 600},
        {"role": "user", "content": "y" * 401},
    ]
    error = assert_envelope(
        api.post(CHAT, json={"model": "chat", "messages": messages}), 400, "prompt_too_long"
    )
    assert error["details"] == {"prompt_chars": 1001, "limit_chars": 1000}
    assert_envelope(
        api.post("/v1/completions", json={"model": "chat", "prompt": "z" * 1001}),
        400,
        "prompt_too_long",
    )
    assert fake.streams == []
    # At the cap: sent to the model.
    messages[1]["content"] = "y" * 400
    ok = api.post(CHAT, json={"model": "chat", "messages": messages})
    assert ok.status_code == 200, ok.text
    assert ok.json()["choices"][0]["message"]["content"] == "hi"
    assert len(fake.streams) == 1


# --- item 10: HEAD, Allow, If-None-Match: * ------------------------------------------


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/health/live", "/health/live"),
        ("/v1/models", "/v1/models"),
        ("/v1/models/intent", "/v1/models/{model}"),
    ],
)
def test_head_answers_like_get_without_a_body(api, path, route):
    get = api.get(path)
    head = api.head(path)
    assert get.status_code == head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["X-Frame-Options"] == "DENY"
    # The access log and metrics still see HEAD.
    metrics = api.get("/metrics").text
    assert f'{{method="HEAD",model="",route="{route}",status="200"' in metrics


def test_head_answers_with_an_empty_body_at_the_asgi_level(api):
    """Whatever the server does with a HEAD body: none leaves the app."""
    sent: list[dict] = []

    async def run() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "HEAD",
            "scheme": "http",
            "path": "/health/live",
            "raw_path": b"/health/live",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"test")],
            "client": ("127.0.0.1", 1),
            "server": ("test", 80),
            "state": {},
        }

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await api.app(scope, receive, send)

    api.portal.call(run)
    assert sent[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b""


def test_head_on_a_route_without_get_is_405(api):
    response = api.head(PREDICT)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/v1/admin/routing/intent", "GET, HEAD, PUT, DELETE"),
        ("PATCH", "/v1/admin/routing/intent", "GET, HEAD, PUT, DELETE"),
        ("PUT", "/v1/admin/keys/k1", "GET, HEAD, PATCH, DELETE"),
        ("POST", "/v1/admin/users/u1", "GET, HEAD, PATCH"),
        ("PATCH", "/v1/keys/k1", "GET, HEAD, DELETE"),
        ("PUT", "/v1/keys", "GET, HEAD, POST"),
        ("GET", PREDICT, "POST"),
        ("DELETE", "/v1/models/intent/versions/1/predict", "POST"),
    ],
)
def test_405_allow_lists_every_method_of_the_path(api, method, path, allow):
    response = api.request(method, path)
    error = assert_envelope(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == allow
    assert method in error["message"]


def test_if_none_match_star_on_post_is_412(api, fake):
    error = assert_envelope(
        api.post(PREDICT, json={"inputs": "x"}, headers={"If-None-Match": "*"}),
        412,
        "precondition_failed",
    )
    assert "If-None-Match" in error["message"]
    # The same request without the condition, and with its own ETag (304, documented).
    ok = api.post(PREDICT, json={"inputs": "x"})
    assert ok.status_code == 200
    again = api.post(PREDICT, json={"inputs": "x"}, headers={"If-None-Match": ok.headers["ETag"]})
    assert again.status_code == 304
    # A request that fails anyway keeps its own error.
    assert_envelope(
        api.post(PREDICT, json={"inputs": ""}, headers={"If-None-Match": "*"}),
        422,
        "validation_error",
    )


# --- item 12: strict request types ----------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (PREDICT, {"inputs": "x", "top_k": True}, "top_k"),
        (PREDICT, {"inputs": "x", "top_k": "3"}, "top_k"),
        (PREDICT, {"inputs": "x", "top_k": 2.5}, "top_k"),
        (PREDICT, {"inputs": "x", "return_all_scores": "true"}, "return_all_scores"),
        (PREDICT, {"inputs": "x", "return_all_scores": 1}, "return_all_scores"),
        (PREDICT, {"inputs": 5}, "inputs"),
        (CHAT, {"model": "chat", "messages": USER, "stream": "yes"}, "stream"),
        (CHAT, {"model": "chat", "messages": USER, "top_k": True}, "top_k"),
        (CHAT, {"model": "chat", "messages": USER, "max_tokens": "5"}, "max_tokens"),
        (CHAT, {"model": "chat", "messages": USER, "temperature": "0.5"}, "temperature"),
        (CHAT, {"model": "chat", "messages": USER, "temperature": False}, "temperature"),
        (CHAT, {"model": "chat", "messages": USER, "seed": "1"}, "seed"),
        (CHAT, {"model": "chat", "messages": USER, "n": True}, "n"),
        (
            CHAT,
            {"model": "chat", "messages": USER, "stream_options": {"include_usage": 1}},
            "stream_options",
        ),
        (CHAT, {"model": "chat", "messages": [{"role": "user", "content": 5}]}, "messages"),
        ("/v1/embeddings", {"model": "embed", "input": "x", "dimensions": True}, "dimensions"),
        ("/v1/embeddings", {"model": "embed", "input": ["x", 1]}, "input"),
    ],
)
def test_no_type_coercion(api, fake, path, body, field):
    # The OpenAI routes answer invalid input 400, as OpenAI does; the others 422.
    status = 422 if path == PREDICT else 400
    error = assert_envelope(api.post(path, json=body), status, "validation_error")
    assert field in error["message"], error
    assert error["param"].startswith(field), error
    assert fake.calls == [] and fake.streams == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (PREDICT, {"inputs": "x", "top_k": 2.0}),  # JSON Schema's integer includes 2.0
        (PREDICT, {"inputs": ["x", "y"], "top_k": 3, "return_all_scores": True}),
        ("/v1/embeddings", {"model": "embed", "input": "x", "encoding_format": "base64"}),
        ("/v1/embeddings", {"model": "embed", "input": ["x"], "dimensions": 4.0}),
        # What the openai client sends: integers for floats, stop as str or list, nulls.
        (
            CHAT,
            {
                "model": "chat",
                "messages": USER,
                "temperature": 1,
                "top_p": 1,
                "max_tokens": 5.0,
                "seed": 7,
                "stop": ["\n"],
                "user": None,
                "stream": False,
            },
        ),
        ("/v1/completions", {"model": "chat", "prompt": ["hi"], "max_tokens": 3, "stop": "x"}),
    ],
)
def test_numbers_and_enums_still_pass(api, path, body):
    response = api.post(path, json=body)
    assert response.status_code == 200, response.text


def test_admin_and_routing_bodies_are_strict(api):
    bad = [
        ("PUT", "/v1/admin/routing/intent", {"rollout": {"version": 2, "percent": 10}}),
        ("PUT", "/v1/admin/routing/intent", {"rollout": {"version": "2", "percent": "10"}}),
        ("PATCH", "/v1/admin/users/u1", {"disabled": "yes"}),
        ("POST", "/v1/admin/keys", {"name": 5}),
    ]
    for method, path, body in bad:
        assert_envelope(api.request(method, path, json=body), 422, "validation_error")
    ok = api.put("/v1/admin/routing/intent", json={"rollout": {"version": "2", "percent": 10}})
    assert ok.status_code == 200, ok.text
    assert ok.json()["rollout"]["percent"] == 10.0


# --- item 14 -------------------------------------------------------------------------


def test_redis_up_is_exported_only_with_redis_configured(api):
    assert "infergate_redis_up" not in api.get("/metrics").text
    assert "infergate_redis_up" not in Metrics().render().decode()
    assert "infergate_redis_up" in Metrics(redis_configured=True).render().decode()


def test_overloaded_generation_does_not_reveal_queue_depth(api, fake):
    fake.stream_error = InferenceServerException(
        msg="[request id: r] overloaded: 8 sequences are generating and 16 wait; try again shortly",
        status="StatusCode.UNAVAILABLE",
    )
    error = assert_envelope(
        api.post(CHAT, json={"model": "chat", "messages": USER}), 503, "overloaded"
    )
    assert not any(ch.isdigit() for ch in error["message"]), error["message"]
    assert error["message"] == "model 'chat' is at capacity; retry shortly"


def test_overloaded_model_error_is_generic():
    error = model_error(InferenceServerException(msg="overloaded: 3 wait"), "chat")
    assert isinstance(error, Overloaded) and "3" not in error.message


@pytest.mark.parametrize(
    ("model", "advice", "not_advice"),
    [
        ("chat", "/v1/chat/completions or /v1/completions", "/v1/embeddings"),
        ("embed", "/v1/embeddings", "/v1/chat"),
    ],
)
def test_predict_on_another_task_names_the_right_route(api, fake, model, advice, not_advice):
    error = assert_envelope(
        api.post(f"/v1/models/{model}/predict", json={"inputs": "x"}), 404, "model_not_found"
    )
    assert advice in error["message"] and not_advice not in error["message"]
    assert fake.calls == []


def test_readiness_flood_costs_one_check_per_interval(tmp_path, fake):
    from frontend.services.health import ReadinessCache

    now = [1000.0]
    api = _app(tmp_path, fake, {"readiness": ReadinessCache(1.0, clock=lambda: now[0])})
    per_check = 1 + 3  # the server, and each of the three models
    try:
        for _ in range(50):
            ready = api.get("/health/ready")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert fake.health_calls == per_check
        now[0] += 0.99
        api.get("/health/ready")
        assert fake.health_calls == per_check
        now[0] += 0.02
        for _ in range(10):
            api.get("/health/ready")
        assert fake.health_calls == 2 * per_check
    finally:
        api.__exit__(None, None, None)


def test_readiness_cache_shares_one_running_check():
    from frontend.services.health import ReadinessCache

    calls = 0

    async def scenario() -> list:
        nonlocal calls
        release = asyncio.Event()

        async def check() -> tuple[int, dict]:
            nonlocal calls
            calls += 1
            await release.wait()
            return 200, {"status": "ready", "n": calls}

        cache = ReadinessCache(0.0)  # no reuse after the check: only sharing while it runs
        waiters = [asyncio.ensure_future(cache.get(check)) for _ in range(100)]
        await asyncio.sleep(0)
        waiters[0].cancel()  # a caller that leaves does not cancel the shared check
        await asyncio.sleep(0)
        release.set()
        answers = await asyncio.gather(*waiters[1:])
        after = await cache.get(check)  # ttl 0: a new check
        return [*answers, after]

    answers = asyncio.run(scenario())
    assert calls == 2
    assert all(a == (200, {"status": "ready", "n": 1}) for a in answers[:-1])
    assert answers[-1][1]["n"] == 2


def test_readiness_cache_reuses_only_a_ready_answer():
    """A not-ready answer is checked again on the next probe (recovery is seen at once);
    a ready one is reused for the interval."""
    from frontend.services.health import ReadinessCache

    now = [0.0]
    answers = iter([(503, {"status": "not_ready"}), (200, {"status": "ready"})])
    calls = 0

    async def check() -> tuple[int, dict]:
        nonlocal calls
        calls += 1
        return next(answers)

    async def scenario() -> list[int]:
        cache = ReadinessCache(1.0, clock=lambda: now[0])
        seen = [(await cache.get(check))[0]]  # 503
        seen.append((await cache.get(check))[0])  # checked again at once: 200
        now[0] += 0.5
        seen.append((await cache.get(check))[0])  # reused
        return seen

    assert asyncio.run(scenario()) == [503, 200, 200]
    assert calls == 2


def test_openapi_bounds_are_json_schema_keywords(api):
    """A bound on an optional strict integer must reach the served OpenAPI as "minimum"
    (pydantic writes "ge", which no client or fuzzer reads, for Field(ge=1) on
    `Integer | None`): schema-valid requests are then accepted ones."""
    schemas = api.get("/openapi.json").json()["components"]["schemas"]

    def walk(node, where):
        if isinstance(node, dict):
            assert not {"ge", "gt", "le", "lt"} & set(node), where
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(schemas, "schemas")
    dimensions = schemas["EmbeddingRequest"]["properties"]["dimensions"]["anyOf"][0]
    assert dimensions == {"type": "integer", "minimum": 1}
