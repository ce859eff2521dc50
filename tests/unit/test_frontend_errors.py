"""Every row of the error table, through the real app with a fake Triton (unit: no servers).
Each asserts status, envelope and headers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from tritonclient.utils import InferenceServerException

from frontend.app import create_app
from frontend.container import ServiceOverrides
from frontend.settings import AuthSettings, CorsSettings, LimitSettings, Settings, TritonSettings
from frontend.state.store import StateStore
from frontend.triton.client import TritonClient

from .cards import write_cards

ADMIN_KEY = "unit-test-admin-key-0123456789abcdef"


# What the chat model sends in every response that a test's script leaves out (scripts
# name the text, the counts and the finish reason): the neutral values of the rest of
# the contract (the frontend reads every output of it).
GENERATION_DEFAULTS = {
    "INDEX": np.array([0], dtype=np.int32),
    "TOKEN_LOGPROBS": np.array([b""], dtype=object),
    "TOOL_CALLS": np.array([b""], dtype=object),
}


class FakeResult:
    def __init__(self, outputs: dict[str, np.ndarray]) -> None:
        generation = "FINISH_REASON" in outputs
        self.outputs = {**GENERATION_DEFAULTS, **outputs} if generation else outputs

    def as_numpy(self, name: str) -> np.ndarray:
        return self.outputs[name]


class FakeTriton:
    """Stands in for the tritonclient.grpc.aio client under the real TritonClient wrapper:
    answers like the real model contract, or raises what it is told to."""

    def __init__(self) -> None:
        self.raise_next: Exception | None = None
        self.calls: list[tuple[str, str, int]] = []

    async def infer(self, model, inputs, model_version="", outputs=(), **kwargs):
        n = inputs[0].shape()[0]
        self.calls.append((model, model_version, n))
        if self.raise_next is not None:
            raise self.raise_next
        scores = np.tile(np.array([0.7, 0.2, 0.1], dtype=np.float32), (n, 1))
        out = {
            "LABEL": np.array([[b"greeting"]] * n, dtype=object),
            "SCORE": np.full((n, 1), 0.7, dtype=np.float32),
            "SCORES": scores,
            "NUM_TOKENS": np.full((n, 1), 4, dtype=np.int32),
            "TRUNCATED": np.zeros((n, 1), dtype=bool),
            "EMBEDDING": np.ones((n, 4), dtype=np.float32) / 2,
        }
        return FakeResult({o.name(): out[o.name()] for o in outputs})

    async def close(self) -> None: ...

    async def is_server_ready(self, **kwargs):
        return True

    async def is_model_ready(self, model, version="", **kwargs):
        return True

    async def get_model_repository_index(self, **kwargs):
        return {"models": []}


@pytest.fixture
def fake_triton() -> FakeTriton:
    return FakeTriton()


def over_fake(settings: Settings, fake: FakeTriton, **parts) -> ServiceOverrides:
    """The app's parts with the real Triton client over `fake` (its gRPC client), and
    whichever other parts are given (a state store, a readiness cache...)."""
    return ServiceOverrides(triton=TritonClient(settings.triton, fake), **parts)


def _client(
    tmp_path: Path, fake: FakeTriton, *, store: StateStore | None = None, **overrides
) -> TestClient:
    """A started app over `fake`; `store`: the shared state to use (default: a new one)."""
    overrides.setdefault(
        "limits", LimitSettings(max_body_bytes=4096, max_batch_items=8, max_input_chars=100)
    )
    overrides.setdefault("auth", AuthSettings(bootstrap_admin_key=ADMIN_KEY))
    settings = Settings(
        environment="test",
        triton=TritonSettings(model_repository=write_cards(tmp_path / "repo")),
        **overrides,
    )
    app = create_app(settings, over_fake(settings, fake, store=store))
    client = TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": ADMIN_KEY})
    client.__enter__()
    return client


@pytest.fixture
def api(tmp_path, fake_triton):
    client = _client(tmp_path, fake_triton)
    yield client
    client.__exit__(None, None, None)


# OpenAI's error type for each status this API answers (errors.ERROR_TYPES and the rest).
OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def assert_envelope(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    expected_type = "server_error" if status >= 500 else OPENAI_TYPES.get(status)
    assert error["type"] == (expected_type or "invalid_request_error"), error
    assert "param" in error and (error["param"] is None or isinstance(error["param"], str))
    assert error["request_id"] == response.headers["X-Request-ID"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Error" not in error["message"] and "Traceback" not in response.text
    if status in (429, 503):
        assert int(response.headers["Retry-After"]) >= 1
    return error


PREDICT = "/v1/models/intent/predict"


def test_ok_path_shape(api, fake_triton):
    response = api.post(PREDICT, json={"inputs": ["hi", "hello"], "top_k": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == "2" and response.headers["X-Model-Version"] == "2"
    assert [t["label"] for t in body["predictions"][0]["top_k"]] == ["greeting", "goodbye"]
    assert fake_triton.calls == [("intent", "2", 2)]  # one call for the whole batch


def test_unknown_model_lists_available(api):
    error = assert_envelope(
        api.post("/v1/models/intnet/predict", json={"inputs": "x"}), 404, "model_not_found"
    )
    assert error["details"]["available"] == ["embed", "intent"]


def test_unknown_version(api):
    error = assert_envelope(
        api.post("/v1/models/intent/versions/7/predict", json={"inputs": "x"}),
        404,
        "version_not_found",
    )
    assert error["details"]["available_versions"] == ["1", "2"]
    assert_envelope(
        api.post(PREDICT, json={"inputs": "x"}, headers={"X-Model-Version": "x1"}),
        422,
        "validation_error",
    )


def test_classification_route_refuses_embedding_model(api):
    assert_envelope(
        api.post("/v1/models/embed/predict", json={"inputs": "x"}), 404, "model_not_found"
    )


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"inputs": 5}, "body.inputs"),
        ({"inputs": "x", "colour": "red"}, "body.colour"),
        ({"inputs": "x", "top_k": 0}, "body.top_k"),
        ({"inputs": "x", "top_k": 4}, "top_k"),
        ({}, "body.inputs"),
        ({"inputs": []}, "inputs"),
        ({"inputs": ["ok", "  "]}, "inputs.1"),
        ({"inputs": ["x"] * 9}, "inputs"),
        ({"inputs": ["ok", "y" * 101]}, "inputs.1"),
    ],
)
def test_validation_errors_name_the_field(api, body, where):
    error = assert_envelope(api.post(PREDICT, json=body), 422, "validation_error")
    assert error["message"].startswith(where), error
    assert error["param"] == where.removeprefix("body."), error  # the field, as sent
    assert isinstance(error["details"], list) and error["details"][0]["loc"]
    assert "input" not in error["details"][0]  # the offending value is never echoed


def test_lone_surrogate_is_422_and_unicode_passes(api, fake_triton):
    raw = b'{"inputs": ["ok", "bad \\ud800 text"]}'
    error = assert_envelope(
        api.post(PREDICT, content=raw, headers={"Content-Type": "application/json"}),
        422,
        "validation_error",
    )
    assert error["message"].startswith("inputs.1: invalid text: lone surrogate")
    fine = api.post(PREDICT, json={"inputs": ["NUL\x00 ok", "\u202eRTL", "emoji 😀"]})
    assert fine.status_code == 200


def test_body_over_the_cap_is_413_from_content_length(api, fake_triton):
    big = json.dumps({"inputs": ["x" * 50] * 200})
    assert_envelope(
        api.post(PREDICT, content=big, headers={"Content-Type": "application/json"}),
        413,
        "payload_too_large",
    )
    assert fake_triton.calls == []


def test_body_over_the_cap_is_413_when_streamed(api):
    def chunks():
        yield b'{"inputs": ["'
        for _ in range(100):
            yield b"x" * 100
        yield b'"]}'

    assert_envelope(
        api.post(PREDICT, content=chunks(), headers={"Content-Type": "application/json"}),
        413,
        "payload_too_large",
    )


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"inputs": ', "bad_request"),
        (b"[" * 100_000 + b"]" * 100_000, "json_too_deep"),
        (b'{"inputs": ' + b"[" * 65 + b'"x"' + b"]" * 65 + b"}", "json_too_deep"),
    ],
)
def test_bad_json_is_400(tmp_path, fake_triton, raw, code):
    client = _client(
        tmp_path, fake_triton, limits=LimitSettings(max_body_bytes=1 << 20, max_batch_items=8)
    )
    response = client.post(PREDICT, content=raw, headers={"Content-Type": "application/json"})
    client.__exit__(None, None, None)
    assert_envelope(response, 400, code)


@pytest.mark.parametrize(
    ("status", "message", "http", "code"),
    [
        (
            "StatusCode.UNAVAILABLE",
            "failed to connect to all addresses",
            503,
            "upstream_unavailable",
        ),
        ("StatusCode.UNAVAILABLE", "Exceeds maximum queue size", 503, "overloaded"),
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", 504, "deadline_exceeded"),
        ("StatusCode.INTERNAL", "boom in model.py", 502, "upstream_error"),
        # A model in the catalog that Triton has not loaded (docs/reliability.md: one model broken).
        (
            "StatusCode.NOT_FOUND",
            "Request for unknown model: 'intent' is not found",
            503,
            "model_unavailable",
        ),
        (
            "StatusCode.INVALID_ARGUMENT",
            "Request for unknown model: 'intent' version 1 is not found",
            503,
            "model_unavailable",
        ),
        (
            "StatusCode.UNAVAILABLE",
            "Request for unknown model: 'intent' has no available versions",
            503,
            "model_unavailable",
        ),
        (
            "StatusCode.INVALID_ARGUMENT",
            "[request id: r] TEXT[0] is empty",
            422,
            "validation_error",
        ),
    ],
)
def test_triton_errors_map_to_the_table(api, fake_triton, status, message, http, code):
    fake_triton.raise_next = InferenceServerException(msg=message, status=status)
    error = assert_envelope(api.post(PREDICT, json={"inputs": "x"}), http, code)
    assert "boom" not in error["message"]


def test_unexpected_error_is_a_generic_500(api, fake_triton):
    fake_triton.raise_next = RuntimeError("secret internal detail")
    response = api.post(PREDICT, json={"inputs": "x"})
    error = assert_envelope(response, 500, "internal_error")
    assert error["message"] == "internal error"
    assert "secret" not in response.text and "RuntimeError" not in response.text


def test_unknown_route_and_method(api):
    assert_envelope(api.get("/v1/nothing"), 404, "not_found")
    assert_envelope(api.get(PREDICT), 405, "method_not_allowed")


def test_security_headers_everywhere(api):
    for response in (api.get("/health/live"), api.get("/v1/models/none"), api.get("/metrics")):
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert response.headers["Cache-Control"] == "no-store"
    assert "cdn.jsdelivr.net" in api.get("/docs").headers["Content-Security-Policy"]


def test_cors_allowlist(tmp_path, fake_triton):
    client = _client(
        tmp_path, fake_triton, cors=CorsSettings(allow_origins=["https://app.example.com"])
    )
    ok = client.get("/health/live", headers={"Origin": "https://app.example.com"})
    other = client.get("/health/live", headers={"Origin": "https://evil.example.com"})
    client.__exit__(None, None, None)
    assert ok.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-origin" not in other.headers


def test_settings_refuse_unsafe_configuration():
    with pytest.raises(ValidationError, match="cannot be combined"):
        CorsSettings(allow_origins=["*"], allow_credentials=True)
    with pytest.raises(ValidationError, match="must be set in prod"):
        Settings(environment="prod")
    with pytest.raises(ValidationError, match="weak"):
        Settings(environment="prod", secret_key="a-real-secret-of-some-length")  # < 32
    Settings(environment="prod", secret_key="a-real-secret-of-some-length-9f3Kq2Zx")


def test_embeddings_dimensions_and_format(api):
    ok = api.post("/v1/embeddings", json={"model": "embed", "input": "x", "dimensions": 4})
    assert ok.status_code == 200 and len(ok.json()["data"][0]["embedding"]) == 4
    # The OpenAI route answers invalid input 400 (as OpenAI does), naming the field.
    error = assert_envelope(
        api.post("/v1/embeddings", json={"model": "embed", "input": "x", "dimensions": 3}),
        400,
        "validation_error",
    )
    assert error["param"] == "dimensions" and error["type"] == "invalid_request_error"
    assert_envelope(
        api.post("/v1/embeddings", json={"model": "intent", "input": "x"}), 404, "model_not_found"
    )
    error = assert_envelope(
        api.post(
            "/v1/embeddings", json={"model": "embed", "input": "x", "encoding_format": "int8"}
        ),
        400,
        "validation_error",
    )
    assert error["param"] == "encoding_format"
