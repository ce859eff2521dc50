"""Promises of docs/api.md and docs/generation.md held at their documented values (rows of
docs/claims.md): the real app with its default settings over a fake Triton (its gRPC
client: the real TritonClient above it), and the chat engine's own finish rules over the
exported tokenizer with a scripted model session. No server, no model run."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient
from tritonclient.utils import (
    InferenceServerException,
    deserialize_bytes_tensor,
    triton_to_np_dtype,
)

from frontend import container
from frontend.app import create_app
from frontend.schemas.chat import MAX_TEMPERATURE, MIN_TEMPERATURE
from frontend.settings import (
    AuthSettings,
    CacheSettings,
    GenerationSettings,
    LimitSettings,
    RedisSettings,
    RoutingSettings,
    Settings,
    Tier,
    TritonSettings,
)
from procs.ports import free_port
from procs.wait import wait_for

from .cards import WITH_CHAT, write_cards
from .test_frontend_errors import ADMIN_KEY, FakeResult, FakeTriton, assert_envelope, over_fake

ROOT = Path(__file__).resolve().parents[2]
CHAT_VERSION_DIR = ROOT / "model_repository" / "chat" / "1"

PREDICT = "/v1/models/intent/predict"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "hi"}]
JSON = {"Content-Type": "application/json"}
PASSWORD = "correct horse battery"

# --- the fake Triton: unary calls as in test_frontend_errors, plus scripted streams ------

# One response of the chat model's stream: text, prompt tokens, completion tokens, finish.
Response = tuple[str, int, int, str]
ADMITTED: Response = ("", 3, 0, "")
STOPPED = [ADMITTED, ("hi", 3, 1, ""), ("", 3, 1, "stop")]


def _tensors(inputs: list[Any]) -> dict[str, np.ndarray]:
    """What a request carried to Triton, tensor by tensor, as the model reads it."""
    values = {}
    for tensor in inputs:
        raw = tensor._raw_content  # tritonclient keeps the serialized data here
        if tensor.datatype() == "BYTES":
            values[tensor.name()] = deserialize_bytes_tensor(raw)
        else:
            values[tensor.name()] = np.frombuffer(raw, dtype=triton_to_np_dtype(tensor.datatype()))
    return values


def _result(text: str, prompt: int, completion: int, finish: str) -> FakeResult:
    return FakeResult(
        {
            "TEXT": np.array([text.encode()], dtype=object),
            "PROMPT_TOKENS": np.array([prompt], dtype=np.int32),
            "COMPLETION_TOKENS": np.array([completion], dtype=np.int32),
            "FINISH_REASON": np.array([finish.encode()], dtype=object),
        }
    )


class ScriptedStream:
    """tritonclient's stream_infer iterator: reads the one request, then answers the
    script (a response, or an exception as the model's final error), then ends."""

    def __init__(self, requests: AsyncIterator[dict], script: list[Response | Exception]):
        self._requests = requests
        self._script = list(script)
        self.inputs: dict[str, np.ndarray] | None = None
        self.cancelled = False

    def __aiter__(self) -> ScriptedStream:
        return self

    async def __anext__(self) -> tuple[FakeResult | None, Exception | None]:
        if self.inputs is None:
            self.inputs = _tensors((await anext(self._requests))["inputs"])
        if not self._script:
            raise StopAsyncIteration
        item = self._script.pop(0)
        if isinstance(item, Exception):
            return None, item
        return _result(*item), None

    def cancel(self) -> None:
        self.cancelled = True


class GenerationTriton(FakeTriton):
    """Also streams generations (each follows `script`), and records the unary calls'
    keyword arguments and every health question."""

    def __init__(self) -> None:
        super().__init__()
        self.script: list[Response | Exception] = list(STOPPED)
        self.streams: list[ScriptedStream] = []
        self.infer_kwargs: list[dict[str, Any]] = []
        self.health_calls = 0

    def stream_infer(self, requests, stream_timeout=None, **kwargs) -> ScriptedStream:
        stream = ScriptedStream(requests, self.script)
        self.streams.append(stream)
        return stream

    async def infer(self, model, inputs, model_version="", outputs=(), **kwargs):
        self.infer_kwargs.append(kwargs)
        return await super().infer(model, inputs, model_version, outputs, **kwargs)

    async def is_server_ready(self, **kwargs):
        self.health_calls += 1
        return True

    async def is_model_ready(self, model, version="", **kwargs):
        self.health_calls += 1
        return True

    def sent(self, name: str) -> Any:
        """`name`'s value in the last generation request."""
        inputs = self.streams[-1].inputs
        assert inputs is not None
        return inputs[name][0].item()


def start(tmp_path: Path, fake: GenerationTriton, **sections: Any) -> TestClient:
    """A started app over `fake` with the default settings but for `sections`; the cards
    of two classifier versions, an embedder and a chat model (max_completion_tokens 1024,
    as the bundled chat card)."""
    repo = tmp_path / "repo"
    if not repo.exists():
        write_cards(repo, WITH_CHAT)
    sections.setdefault("auth", AuthSettings(bootstrap_admin_key=ADMIN_KEY))
    settings = Settings(
        environment="test", triton=TritonSettings(model_repository=repo), **sections
    )
    app = create_app(settings, over_fake(settings, fake))
    client = TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": ADMIN_KEY})
    client.__enter__()
    return client


@pytest.fixture
def fake() -> GenerationTriton:
    return GenerationTriton()


@pytest.fixture
def api(tmp_path, fake) -> Iterator[TestClient]:
    client = start(tmp_path, fake)
    yield client
    client.__exit__(None, None, None)


def post(client: TestClient, route: str, **fields: Any):
    """A generation request: chat messages or a completion prompt, plus `fields`."""
    body: dict[str, Any] = {"model": "chat"}
    body.update({"messages": USER} if route == CHAT else {"prompt": "hi"})
    return client.post(route, json={**body, **fields})


def series(client: TestClient, name: str, **labels: str) -> float:
    """One series of the frontend's /metrics (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    line = re.search(
        rf"^{re.escape(name)}{{{re.escape(wanted)}}} (\S+)$", client.get("/metrics").text, re.M
    )
    return float(line.group(1)) if line else 0.0


def new_key(client: TestClient, **body: Any) -> str:
    r = client.post("/v1/admin/keys", json={"name": "claims", **body})
    assert r.status_code == 201, r.text
    return r.json()["key"]


# --- generation parameters (generation.md › Parameters) --------------------------------


def test_max_tokens_defaults_are_256_for_chat_and_16_for_completions(api, fake):
    defaults = GenerationSettings()
    assert (defaults.default_chat_max_tokens, defaults.default_completion_max_tokens) == (256, 16)
    assert post(api, CHAT).status_code == 200
    assert fake.sent("MAX_TOKENS") == 256
    assert post(api, COMPLETIONS).status_code == 200
    assert fake.sent("MAX_TOKENS") == 16


def test_max_completion_tokens_is_accepted_for_chat(api, fake):
    r = post(api, CHAT, max_completion_tokens=7)
    assert r.status_code == 200, r.text
    assert fake.sent("MAX_TOKENS") == 7
    # A chat field only: on completions it is an unknown field (400, as OpenAI answers).
    error = assert_envelope(
        post(api, COMPLETIONS, max_completion_tokens=7), 400, "validation_error"
    )
    assert "max_completion_tokens" in error["message"]
    assert len(fake.streams) == 1


@pytest.mark.parametrize(
    ("route", "field"),
    [(CHAT, "max_tokens"), (CHAT, "max_completion_tokens"), (COMPLETIONS, "max_tokens")],
)
def test_max_tokens_1024_is_accepted_and_1025_refused_naming_the_limit(api, fake, route, field):
    ok = post(api, route, **{field: 1024})
    assert ok.status_code == 200, ok.text
    assert fake.sent("MAX_TOKENS") == 1024
    error = assert_envelope(post(api, route, **{field: 1025}), 400, "bad_request")
    assert "max_tokens is 1025" in error["message"] and "1 to 1024" in error["message"]
    assert error["details"] == {"max_completion_tokens": 1024}
    assert len(fake.streams) == 1  # the refused request never reached Triton


@pytest.mark.parametrize("route", [CHAT, COMPLETIONS])
def test_temperature_is_0_to_2_and_defaults_to_1(api, fake, route):
    assert (MIN_TEMPERATURE, MAX_TEMPERATURE) == (0, 2)
    assert post(api, route).status_code == 200
    assert fake.sent("TEMPERATURE") == 1.0
    for value in (0, 2, 0.0, 2.0, 1.5):
        r = post(api, route, temperature=value)
        assert r.status_code == 200, (value, r.text)
        assert fake.sent("TEMPERATURE") == pytest.approx(value)
    admitted = len(fake.streams)
    for value in (-0.001, 2.001, 3):
        error = assert_envelope(post(api, route, temperature=value), 400, "validation_error")
        assert error["message"].startswith("body.temperature"), error
        assert error["param"] == "temperature"
    assert len(fake.streams) == admitted


@pytest.mark.parametrize(
    ("route", "fields", "where"),
    [
        (CHAT, {"colour": "red"}, "colour"),
        (CHAT, {"messages": [{"role": "user", "content": "hi", "mood": "x"}]}, "messages.0.mood"),
        (CHAT, {"stream": True, "stream_options": {"include_colour": True}}, "stream_options"),
        (CHAT, {"tools": [{"type": "function", "function": {"name": "f", "x": 1}}]}, "tools.0"),
        (COMPLETIONS, {"messages": USER}, "messages"),
        (COMPLETIONS, {"response_format": {"type": "text"}}, "response_format"),
    ],
)
def test_unknown_fields_are_refused_on_the_generation_routes(api, fake, route, fields, where):
    """Every field of OpenAI's reference is taken (test_openai_requests); any other is
    refused, 400 as OpenAI refuses it, never ignored."""
    error = assert_envelope(post(api, route, **fields), 400, "validation_error")
    assert error["param"].startswith(where), error
    assert error["details"][0]["type"] == "extra_forbidden"
    assert fake.streams == []  # refused, not ignored: nothing was generated


# --- answers, streams and metrics (generation.md › Answers, Streams, Metrics) ----------


def test_the_openai_client_raises_an_error_event_as_an_api_error(api, fake):
    """The stream had begun (200, two frames) when the model failed: the failure is an
    `event: error` frame, which the official client raises as an APIError."""
    fake.script = [
        ADMITTED,
        ("hi", 3, 1, ""),
        InferenceServerException("internal: generation failed: boom", "StatusCode.INTERNAL"),
    ]
    del api.headers["X-API-Key"]  # the client's own credential: api_key, sent as Bearer
    client = openai.OpenAI(
        base_url=f"{api.base_url}/v1", api_key=ADMIN_KEY, http_client=api, max_retries=0
    )
    stream = client.chat.completions.create(model="chat", messages=USER, stream=True)
    pieces = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            pieces.append(chunk.choices[0].delta.content)
    assert pieces == ["", "hi"]  # the role chunk, then the token before the failure
    assert not isinstance(raised.value, openai.APIStatusError)  # an event, not a status
    assert raised.value.body["code"] == "upstream_error"
    assert raised.value.message == "generation failed in model 'chat'"
    assert "boom" not in str(raised.value.body)


def test_prompt_tokens_are_counted_as_kind_prompt(api, fake):
    fake.script = [("", 7, 0, ""), ("hi", 7, 1, ""), ("", 7, 1, "stop")]
    assert post(api, CHAT).status_code == 200
    fake.script = [("", 5, 0, ""), ("hi", 5, 1, ""), ("", 5, 1, "length")]
    assert post(api, COMPLETIONS).status_code == 200
    assert series(api, "infergate_generation_tokens_total", kind="prompt", model="chat") == 12
    assert series(api, "infergate_generation_tokens_total", kind="completion", model="chat") == 2


def test_generations_are_counted_by_outcome_stop_length_error_refused(api, fake):
    outcomes: dict[str, list[Response | Exception]] = {
        "stop": STOPPED,
        "length": [ADMITTED, ("hi", 3, 1, ""), ("", 3, 1, "length")],
        # The model fails after the first token.
        "error": [
            ADMITTED,
            ("hi", 3, 1, ""),
            InferenceServerException("internal: generation failed: boom", "StatusCode.INTERNAL"),
        ],
        # The model refuses the request at admission.
        "refused": [
            InferenceServerException(
                "invalid: the prompt is 2000 tokens; this model takes at most 1024",
                "StatusCode.INVALID_ARGUMENT",
            )
        ],
    }
    answers = {}
    for outcome, script in outcomes.items():
        fake.script = script
        answers[outcome] = post(api, CHAT)
    assert answers["stop"].json()["choices"][0]["finish_reason"] == "stop"
    assert answers["length"].json()["choices"][0]["finish_reason"] == "length"
    assert_envelope(answers["error"], 502, "upstream_error")
    assert_envelope(answers["refused"], 400, "bad_request")
    for outcome in outcomes:
        counted = series(api, "infergate_generations_total", model="chat", outcome=outcome)
        assert counted == 1, outcome


# --- routes (api.md) ------------------------------------------------------------------


def test_a_batch_is_at_most_256_items_by_default(api, fake):
    assert LimitSettings().max_batch_items == 256
    ok = api.post(PREDICT, json={"inputs": [f"text {i}" for i in range(256)]})
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["predictions"]) == 256
    assert fake.calls == [("intent", "2", 256)]  # one Triton request
    error = assert_envelope(
        api.post(PREDICT, json={"inputs": [f"text {i}" for i in range(257)]}),
        422,
        "validation_error",
    )
    assert error["message"].startswith("inputs"), error
    assert len(fake.calls) == 1


def test_cache_summary_gives_each_models_ttl_and_delete_purges_everything(tmp_path, fake):
    client = start(tmp_path, fake, cache=CacheSettings(ttls={"intent": 120}))
    try:
        assert client.post(PREDICT, json={"inputs": ["a", "b"]}).status_code == 200
        embedded = client.post("/v1/embeddings", json={"model": "embed", "input": "x"})
        assert embedded.status_code == 200
        models = client.get("/v1/admin/cache").json()["models"]
        assert models["intent"]["ttl_s"] == 120  # its own
        assert models["embed"]["ttl_s"] == CacheSettings().ttl_s  # the default
        assert (models["intent"]["entries"], models["embed"]["entries"]) == (2, 1)

        purged = client.delete("/v1/admin/cache")
        assert purged.status_code == 200
        assert purged.json() == {"purged": 3, "model": None, "version": None}
        models = client.get("/v1/admin/cache").json()["models"]
        assert all(m["entries"] == 0 for m in models.values()), models
        calls = len(fake.calls)
        again = client.post(PREDICT, json={"inputs": ["a", "b"]})
        assert again.headers["X-Cache"] == "MISS" and len(fake.calls) == calls + 1
    finally:
        client.__exit__(None, None, None)


def test_routing_delete_goes_back_to_the_routing_files_defaults(tmp_path, fake):
    routing_file = tmp_path / "routing.json"
    routing_file.write_text(
        json.dumps(
            {
                "models": {
                    "intent": {
                        "default": "1",
                        "versions": {"1": {"status": "stable"}, "2": {"status": "canary"}},
                        "rollout": {"version": "2", "percent": 10},
                    }
                }
            }
        )
    )
    client = start(tmp_path, fake, routing=RoutingSettings(file=routing_file))
    try:
        from_file = client.get("/v1/admin/routing/intent").json()
        assert from_file["default"] == "1" and from_file["rollout"]["percent"] == 10
        changed = client.put("/v1/admin/routing/intent", json={"default": "2"})
        assert changed.status_code == 200 and changed.json() != from_file
        assert client.get("/v1/admin/routing/intent").json()["default"] == "2"
        reset = client.delete("/v1/admin/routing/intent")
        assert reset.status_code == 200
        assert reset.json() == from_file
        assert client.get("/v1/admin/routing/intent").json() == from_file
    finally:
        client.__exit__(None, None, None)


def _dead_redis() -> RedisSettings:
    """A Redis URL on a port nobody listens on: every call is refused at once."""
    return RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0")


@pytest.mark.parametrize(("policy", "status"), [("open", 200), ("closed", 503)])
def test_redis_is_required_for_readiness_only_under_fail_closed(tmp_path, fake, policy, status):
    auth = AuthSettings(bootstrap_admin_key=ADMIN_KEY, redis_failure_policy=policy)
    client = start(tmp_path, fake, redis=_dead_redis(), auth=auth)
    try:
        ready = client.get("/health/ready")
    finally:
        client.__exit__(None, None, None)
    assert ready.status_code == status, ready.text
    body = ready.json()
    redis = body["components"]["redis"]
    assert redis["status"] == "down"
    assert redis["required"] is (policy == "closed")
    if policy == "closed":
        assert body["status"] == "not_ready" and ready.headers["Retry-After"] == "1"
    else:
        assert body["status"] == "degraded"


def test_the_readiness_answer_is_reused_for_1_s_by_default(tmp_path, fake, monkeypatch):
    """The container builds the cache from the default setting; only its clock is ours."""
    assert TritonSettings().ready_cache_s == 1.0
    now = [1000.0]
    built: list[float] = []
    real = container.ReadinessCache

    def on_our_clock(ttl_s: float) -> Any:
        built.append(ttl_s)
        return real(ttl_s, clock=lambda: now[0])

    monkeypatch.setattr(container, "ReadinessCache", on_our_clock)
    client = start(tmp_path, fake)
    try:
        assert client.get("/health/ready").status_code == 200
        per_check = fake.health_calls
        assert per_check > 0
        now[0] += 0.999
        assert client.get("/health/ready").status_code == 200
        assert fake.health_calls == per_check  # reused
        now[0] += 0.002
        assert client.get("/health/ready").status_code == 200
        assert fake.health_calls == 2 * per_check  # over 1 s: checked again
    finally:
        client.__exit__(None, None, None)
    assert built == [1.0]


def test_rate_limit_decisions_are_exported(tmp_path, fake):
    tiers = {**AuthSettings().tiers, "two": Tier(rate=["2/minute"])}
    client = start(tmp_path, fake, auth=AuthSettings(bootstrap_admin_key=ADMIN_KEY, tiers=tiers))
    try:
        key = new_key(client, tier="two")
        answers = [client.get("/v1/models", headers={"X-API-Key": key}) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert series(client, "infergate_ratelimit_decisions_total", result="allowed") == 2
        assert series(client, "infergate_ratelimit_decisions_total", result="limited") == 1
    finally:
        client.__exit__(None, None, None)


def test_auth_failures_are_exported(api):
    assert api.get("/v1/models", headers={"X-API-Key": ""}).status_code == 401
    assert api.get("/v1/models", headers={"X-API-Key": "nonsense"}).status_code == 401
    user_key = new_key(api, role="user")
    assert api.get("/v1/admin/tiers", headers={"X-API-Key": user_key}).status_code == 403
    assert series(api, "infergate_auth_failures_total", reason="unauthenticated") == 2
    assert series(api, "infergate_auth_failures_total", reason="forbidden") == 1


def test_redis_errors_are_exported(tmp_path, fake):
    client = start(tmp_path, fake, redis=_dead_redis())
    try:
        # A key this worker does not hold is read from the database, Redis or not: a real
        # one is served (fail-open), an unknown one is refused as ever.
        real = {"X-API-Key": new_key(client)}
        unknown = {"X-API-Key": "ig_live_0000000000000000_" + "A" * 43}
        assert client.get("/v1/models", headers=real).status_code == 200
        assert client.get("/v1/models", headers=unknown).status_code == 401
        text = client.get("/metrics").text
    finally:
        client.__exit__(None, None, None)
    pattern = r'^infergate_redis_errors_total{error="(\w+)",operation="\w+"} (\S+)$'
    errors = re.findall(pattern, text, re.M)
    kinds = {kind for kind, value in errors if float(value) > 0}
    # The call that found Redis down (by its error's class), then the calls skipped after.
    assert {"ConnectionError", "skipped"} <= kinds, errors


def test_quota_tokens_are_exported(tmp_path, fake):
    tiers = {**AuthSettings().tiers, "tiny": Tier(rate=[], tokens_per_day=100)}
    client = start(tmp_path, fake, auth=AuthSettings(bootstrap_admin_key=ADMIN_KEY, tiers=tiers))
    try:
        key = {"X-API-Key": new_key(client, tier="tiny")}
        body = {"model": "chat", "messages": USER}
        # Reserved: 3 prompt + 5 max tokens; settled: 3 + the 1 generated.
        assert client.post(CHAT, json={**body, "max_tokens": 5}, headers=key).status_code == 200
        refused = client.post(CHAT, json={**body, "max_tokens": 100}, headers=key)  # 103 > 96
        assert_envelope(refused, 429, "token_quota_exceeded")
        assert series(client, "infergate_quota_tokens_total", event="reserved") == 8
        assert series(client, "infergate_quota_tokens_total", event="settled") == 4
        assert series(client, "infergate_quota_tokens_total", event="refused") == 103
    finally:
        client.__exit__(None, None, None)


# --- errors and HTTP details (api.md) -------------------------------------------------


def _padded(body: dict[str, Any], size: int) -> bytes:
    """`body` as JSON of exactly `size` bytes (whitespace before the closing brace)."""
    raw = json.dumps(body).encode()
    padded = raw[:-1] + b" " * (size - len(raw)) + b"}"
    assert len(padded) == size
    return padded


def _chunks(raw: bytes) -> Iterator[bytes]:
    """The body sent in pieces, without a Content-Length."""
    for at in range(0, len(raw), 65_536):
        yield raw[at : at + 65_536]


def test_the_1_mib_body_cap_at_its_boundary(api, fake):
    cap = LimitSettings().max_body_bytes
    assert cap == 1 << 20
    at, over = _padded({"inputs": "hello"}, cap), _padded({"inputs": "hello"}, cap + 1)
    assert api.post(PREDICT, content=at, headers=JSON).status_code == 200
    assert api.post(PREDICT, content=_chunks(at), headers=JSON).status_code == 200
    calls = len(fake.calls)
    for sent in (over, _chunks(over)):
        error = assert_envelope(
            api.post(PREDICT, content=sent, headers=JSON), 413, "payload_too_large"
        )
        assert error["details"] == {"limit_bytes": cap}
    assert len(fake.calls) == calls


@pytest.mark.parametrize("route", [CHAT, COMPLETIONS])
def test_the_256_kib_generation_body_cap_at_its_boundary(api, fake, route):
    cap = GenerationSettings().max_body_bytes
    assert cap == 256 * 1024
    body = {"model": "chat", **({"messages": USER} if route == CHAT else {"prompt": "hi"})}
    ok = api.post(route, content=_padded(body, cap), headers=JSON)
    assert ok.status_code == 200, ok.text
    error = assert_envelope(
        api.post(route, content=_padded(body, cap + 1), headers=JSON), 413, "payload_too_large"
    )
    assert error["details"] == {"limit_bytes": cap}
    assert len(fake.streams) == 1
    # The other routes keep the global cap.
    predict = api.post(PREDICT, content=_padded({"inputs": "hello"}, cap + 1), headers=JSON)
    assert predict.status_code == 200


def test_the_default_triton_deadline_is_10_s(api, fake):
    assert TritonSettings().default_timeout_s == 10.0
    assert TritonSettings().timeout_for("intent") == 10.0
    assert api.post(PREDICT, json={"inputs": "hello"}).status_code == 200
    # The call's whole deadline (what is left of 10 s when it is sent).
    assert 9.0 < fake.infer_kwargs[-1]["client_timeout"] <= 10.0
    fake.raise_next = InferenceServerException(
        msg="Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED"
    )
    error = assert_envelope(api.post(PREDICT, json={"inputs": "other"}), 504, "deadline_exceeded")
    assert error["message"] == "model 'intent' did not answer within 10 s"


def _get_paths(routes: list[Any]) -> Iterator[str]:
    """Every path with a GET route, included routers walked into."""
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's included router
        if included is not None:
            yield from _get_paths(included.routes)
        elif "GET" in (getattr(route, "methods", None) or ()):
            yield route.path


# Per-request headers (the id, the time taken), and the bodies that change from one
# request to the next, their length too: /metrics counts the GET itself, readiness
# reports fresh latencies.
PER_REQUEST = {"x-request-id", "date", "server-timing"}
CHANGING = {"/metrics", "/health/ready"}


def test_head_answers_like_get_on_every_get_route(api):
    # An admin key of its own (the bootstrap key owns no keys), with a key it minted.
    admin = {"X-API-Key": new_key(api, role="admin", tier="unlimited")}
    api.headers.update(admin)
    own = api.post("/v1/keys", json={"name": "own"}).json()
    user = api.post("/v1/admin/users", json={"username": "hedda", "password": PASSWORD}).json()
    experiment = {
        "name": "exp",
        "variants": {"a": {"version": "1", "weight": 1}, "b": {"version": "2", "weight": 1}},
    }
    assert api.put("/v1/admin/routing/intent", json={"experiment": experiment}).status_code == 200
    # The admin key's use, written now: until its first write (within 5 s) a key's shown
    # last-used time follows each request, so /v1/admin/keys would change between the GET
    # and the HEAD; after it, the next write of that key is a minute away.
    services = container.services_of(api.app)
    assert services is not None
    api.portal.call(services.access.keys.write_last_used)
    # A finished job: its routes answer the same twice (a running one's progress moves).
    job = api.post("/v1/jobs", json={"model": "intent", "inputs": ["hello", "there"]}).json()
    wait_for(
        lambda: api.get(f"/v1/jobs/{job['id']}").json()["state"] == "succeeded",
        "the job finished",
        30,
    )
    webhook = api.post("/v1/webhooks", json={"url": "https://93.184.216.34/hook"}).json()
    values = {
        "model": "intent",
        "webhook_id": webhook["id"],
        "key_id": own["id"],
        "user_id": user["id"],
        "name": "exp",
        "job_id": job["id"],
    }
    templates = sorted(set(_get_paths(api.app.routes)))
    assert {
        "/health/live",
        "/health/ready",
        "/health/startup",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/v1/usage",
        "/v1/keys/{key_id}",
        "/v1/admin/tiers",
        "/v1/admin/cache",
        "/v1/admin/routing/{model}",
        "/v1/admin/experiments/{name}",
    } <= set(templates), templates
    for template in templates:
        path = template.format(**values)
        get, head = api.get(path), api.head(path)
        assert get.status_code == 200, (path, get.text[:200])
        assert head.status_code == get.status_code, path
        assert head.content == b"", path
        names = set(get.headers) - PER_REQUEST
        assert set(head.headers) - PER_REQUEST == names, path
        same = names - ({"content-length"} if template in CHANGING else set())
        for name in same:
            assert head.headers[name] == get.headers[name], (path, name)


# --- the chat model (generation.md › Answers, How it works, Export notes) ---------------

needs_chat_build = pytest.mark.skipif(
    not (CHAT_VERSION_DIR / "chat.json").exists(),
    reason="model_repository is not built (make models)",
)


def test_the_cpu_chat_config_is_decoupled_with_one_instance():
    from tritonclient.grpc import model_config_pb2 as mc

    from export.catalog import CHAT as CHAT_SPEC
    from export.triton_config import chat_config

    config = chat_config(CHAT_SPEC, "cpu")
    assert config.backend == "python"
    assert config.model_transaction_policy.decoupled is True
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (1, mc.ModelInstanceGroup.KIND_CPU)
    ]
    assert config.parameters["max_context"].string_value == "2048"


class ScriptedSession:
    """Stands in for the ONNX session: the KV cache's shapes as the engine expects them,
    and logits whose argmax is the next token of `tokens` (the last one repeats)."""

    def __init__(
        self, layers: int, vocab: int, tokens: list[int], fail_at_run: int | None = None
    ) -> None:
        self.layers, self.vocab, self.tokens = layers, vocab, list(tokens)
        self.fail_at_run = fail_at_run  # this run (0: the prefill) raises
        self.runs = 0

    def get_inputs(self) -> list[Any]:
        class Input:
            name, shape = "past_key_values.0.key", ["batch", 1, "past", 2]

        return [Input()]

    def run(self, outputs: Any, feeds: dict[str, np.ndarray], options: Any) -> list[np.ndarray]:
        self.runs += 1
        if self.runs - 1 == self.fail_at_run:
            raise RuntimeError("scripted failure")
        rows, new = feeds["input_ids"].shape
        past = feeds["past_key_values.0.key"].shape[2]
        logits = np.zeros((rows, new, self.vocab), dtype=np.float32)
        token = self.tokens.pop(0) if len(self.tokens) > 1 else self.tokens[0]
        logits[:, -1, token] = 1.0
        present = np.zeros((rows, 1, past + new, 2), dtype=np.float32)
        return [logits, *([present] * (2 * self.layers))]


def _generate(tokens: list[int], prompt_ids: list[int], max_tokens: int, **limits: int):
    from export.runtime.generation import ChatEngine, Collector, Limits, Sampling

    meta = json.loads((CHAT_VERSION_DIR / "chat.json").read_text())
    vocab = json.loads((CHAT_VERSION_DIR / "tokenizer.json").read_text())["model"]["vocab"]
    session = ScriptedSession(meta["num_layers"], len(vocab), tokens)
    engine = ChatEngine(CHAT_VERSION_DIR, Limits(**limits), session=session).start()
    try:
        sink = Collector()
        engine.submit(prompt_ids, Sampling(max_tokens=max_tokens), sink)
        assert sink.done.wait(60), "the engine did not finish"
    finally:
        engine.stop()
    assert sink.error is None, sink.error
    return engine, sink


@needs_chat_build
def test_generation_stops_at_the_end_of_the_turn_im_end_not_im_start():
    """The export's correction: the GGUF names <|im_start|> as EOS; the turn ends at
    <|im_end|>, which is not part of the answer."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(CHAT_VERSION_DIR / "tokenizer.json"))
    im_start, im_end = tokenizer.token_to_id("<|im_start|>"), tokenizer.token_to_id("<|im_end|>")
    hello = tokenizer.encode("Hello", add_special_tokens=False).ids
    meta = json.loads((CHAT_VERSION_DIR / "chat.json").read_text())
    assert meta["special_tokens"]["eos_token"] == "<|im_end|>"

    _, sink = _generate([*hello, im_end], [im_start], max_tokens=50)
    assert (sink.reason, sink.completion_tokens, sink.text) == ("stop", len(hello), "Hello")
    # <|im_start|> is an ordinary token here: generation goes on to max_tokens.
    _, sink = _generate([*hello, im_start], [im_start], max_tokens=5)
    assert (sink.reason, sink.completion_tokens) == ("length", 5)


@needs_chat_build
def test_finish_reason_is_length_at_the_2048_token_context():
    """With the shipped limits (1 024 prompt, 1 024 completion) the context is reached
    only together with max_tokens; here max_tokens allows more, so only the context
    (its default, 2 048) can end the generation."""
    from export.runtime.generation import Limits

    assert Limits().max_context == 2048
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(CHAT_VERSION_DIR / "tokenizer.json"))
    word = tokenizer.encode(" word", add_special_tokens=False).ids
    prompt = word * 1000
    _, sink = _generate(word, prompt, max_tokens=2000, max_completion_tokens=2048)
    assert sink.reason == "length"
    assert len(prompt) + sink.completion_tokens == 2048


class FakePb:
    """The few names of triton_python_backend_utils that the chat model uses: responses,
    errors and metric families, kept where a test can read them."""

    TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1

    class TritonError:
        INVALID_ARG, UNAVAILABLE, INTERNAL = "INVALID_ARG", "UNAVAILABLE", "INTERNAL"

        def __init__(self, message: str, code: str | None = None) -> None:
            self.message, self.code = message, code

    class InferenceResponse:
        def __init__(self, output_tensors: Any = None, error: Any = None) -> None:
            self.output_tensors, self.error = output_tensors, error

    class Tensor:
        def __init__(self, name: str, value: np.ndarray) -> None:
            self.name, self.value = name, value

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        values = self.values

        class MetricFamily:
            GAUGE, COUNTER = "gauge", "counter"

            def __init__(self, name: str, description: str, kind: str) -> None:
                self.name = name
                values[name] = 0

            def Metric(self, labels: dict[str, str]) -> Any:  # Triton's name
                family = self

                class Metric:
                    def increment(self, n: float) -> None:
                        values[family.name] += n

                    def set(self, n: float) -> None:
                        values[family.name] = n

                return Metric()

        self.MetricFamily = MetricFamily


class FakeSender:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, int]] = []
        self.final = threading.Event()

    def send(self, response: Any, flags: int = 0) -> None:
        self.sent.append((response, flags))
        if flags:
            self.final.set()

    def is_cancelled(self) -> bool:
        return False


@pytest.mark.parametrize(
    ("kind", "code"),
    [("invalid", "INVALID_ARG"), ("overloaded", "UNAVAILABLE"), ("internal", "INTERNAL")],
)
def test_the_chat_models_errors_are_final_responses_led_by_their_kind(kind, code):
    from export.runtime import chat_model

    pb, sender = FakePb(), FakeSender()
    chat_model.send_error(pb, sender, chat_model.GenerationError(kind, "what happened"))
    [(response, flags)] = sender.sent
    assert flags == pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
    assert response.error.message == f"{kind}: what happened"
    assert response.error.code == code


@needs_chat_build
def test_a_failed_sequence_ends_with_an_internal_error_and_is_counted():
    """The decode step fails after the prefill: the sequence's final response is an
    `internal:` error, and infergate_chat_failed_total counts it."""
    from export.runtime import chat_model

    pb, sender = FakePb(), FakeSender()
    metrics = chat_model.TritonMetrics(pb, {"model": "chat", "version": "1"})
    assert {
        "infergate_chat_decode_rows_total",
        "infergate_chat_rejected_total",
        "infergate_chat_failed_total",
    } <= set(pb.values)
    meta = json.loads((CHAT_VERSION_DIR / "chat.json").read_text())
    vocab = json.loads((CHAT_VERSION_DIR / "tokenizer.json").read_text())["model"]["vocab"]
    session = ScriptedSession(meta["num_layers"], len(vocab), [42], fail_at_run=1)
    engine = chat_model.ChatEngine(
        CHAT_VERSION_DIR, chat_model.Limits(), metrics=metrics, session=session
    ).start()
    try:
        engine.submit(
            [1, 42], chat_model.Sampling(max_tokens=5), chat_model.ResponseSink(pb, sender)
        )
        assert sender.final.wait(60), "no final response"
    finally:
        engine.stop()
    error = sender.sent[-1][0].error
    assert error.message.startswith("internal: ") and error.code == "INTERNAL"
    assert pb.values["infergate_chat_failed_total"] == 1
