"""The Triton client wrapper: deadlines, safe retries, error mapping (fake gRPC client),
and the chat model's refusals as 400s naming their field."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from frontend.errors import BadRequest, DeadlineExceeded, Overloaded, UpstreamUnavailable
from frontend.settings import TritonSettings
from frontend.triton.client import TritonClient
from frontend.triton.errors import model_error, refused_param


class FakeResult:
    def as_numpy(self, name):
        return np.array([[b"ok"]], dtype=object)


class FakeGrpc:
    def __init__(self, failures):
        self.failures = list(failures)
        self.calls = []

    async def infer(self, model, inputs, **kwargs):
        self.calls.append(kwargs)
        if self.failures:
            raise self.failures.pop(0)
        return FakeResult()


def _client(fake, **settings) -> tuple[TritonClient, dict]:
    return fake, settings


def _run(pair, **options):
    fake, settings = pair

    async def go():
        # The channel needs a running loop.
        client = TritonClient(TritonSettings(**settings), **options)
        await client.close()
        client._client = fake
        return await client.infer_text("intent", "1", ["hi"], ("LABEL",), "rid-1")

    return asyncio.run(go())


def test_connect_failure_is_retried_once_then_succeeds():
    fake = FakeGrpc(
        [InferenceServerException("failed to connect to all addresses", "StatusCode.UNAVAILABLE")]
    )
    result = _run(_client(fake))
    assert result.outputs["LABEL"][0, 0] == b"ok"
    assert len(fake.calls) == 2
    assert fake.calls[0]["request_id"] == "rid-1"
    assert 0 < fake.calls[0]["client_timeout"] <= 10


def test_queue_full_is_not_retried():
    fake = FakeGrpc(
        [InferenceServerException("Exceeds maximum queue size", "StatusCode.UNAVAILABLE")] * 3
    )
    with pytest.raises(Overloaded):
        _run(_client(fake))
    assert len(fake.calls) == 1


def test_retries_are_bounded():
    error = InferenceServerException("failed to connect to all addresses", "StatusCode.UNAVAILABLE")
    fake = FakeGrpc([error] * 5)
    with pytest.raises(UpstreamUnavailable):
        _run(_client(fake, connect_retries=1))
    assert len(fake.calls) == 2


def test_online_requests_carry_the_default_priority():
    fake = FakeGrpc([])
    _run(_client(fake))
    assert fake.calls[0]["priority"] == 0  # the model's default level, as before


def test_batch_client_sends_its_priority():
    """The batch jobs' client: every request (retries included) carries its level."""
    fake = FakeGrpc(
        [InferenceServerException("failed to connect to all addresses", "StatusCode.UNAVAILABLE")]
    )
    _run(_client(fake), priority=2)
    assert [call["priority"] for call in fake.calls] == [2, 2]


def test_per_model_deadline():
    fake = FakeGrpc([InferenceServerException("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED")])
    with pytest.raises(DeadlineExceeded, match=r"within 0\.5 s"):
        _run(_client(fake, timeouts={"intent": 0.5}))
    assert fake.calls[0]["client_timeout"] <= 0.5


# The chat model's refusals (`invalid: <text>`) lead with the field, in the model's own
# path syntax (export/runtime: sampling, messages, tools, grammar).
REFUSALS = [
    ("logit_bias: token 60000 is not in the vocabulary (49152 tokens)", "logit_bias"),
    ("logit_bias takes at most 300 entries", "logit_bias"),
    (
        "response_format.json_schema.schema: unsupported keyword",
        "response_format.json_schema.schema",
    ),
    ("response_format.type must be text, json_object or json_schema", "response_format.type"),
    ("messages[3]: this model does not accept image content", "messages.3"),
    (
        "messages[3].tool_call_id 'c' answers no tool call of the message before it",
        "messages.3.tool_call_id",
    ),
    ("messages[3].content[0].text must be a string", "messages.3.content.0.text"),
    ("messages must be a non-empty list", "messages"),
    ("min_tokens must be 0..max_tokens", "min_tokens"),
    ("stop takes at most 4 non-empty sequences", "stop"),
    ("tools[0].function.name: 'f' is defined twice", "tools.0.function.name"),
    ("tool_choice.function.name: no tool is named 'g'", "tool_choice.function.name"),
    ("n must be 1..8", "n"),
    ("n", "n"),
    # Not a field of the request: the tensor's name, the model's own words, a grammar.
    ("LOGIT_BIAS: '5x' is not a token id", None),
    ("PROMPT is empty", None),
    ("the prompt is 2000 tokens; this model takes at most 1024", None),
    ("prompt_logprobs must be 0..20", None),
    ("grammar: unexpected token", None),
    ("Conversation roles must alternate user/assistant", None),
    ("stopped early", None),  # a field's name must be the whole first word
    ("n/a", None),
    ("nonsense[2]: x", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "param"), REFUSALS)
def test_a_refusal_names_the_field_it_leads_with(text, param):
    assert refused_param(text) == param


def test_the_models_refusal_is_a_400_with_its_param():
    error = model_error(
        InferenceServerException(
            "[request id: r] invalid: messages[3].content must be a string",
            "StatusCode.INVALID_ARGUMENT",
        ),
        "chat",
    )
    assert isinstance(error, BadRequest) and error.status == 400
    assert (error.message, error.param) == (
        "messages[3].content must be a string",
        "messages.3.content",
    )
