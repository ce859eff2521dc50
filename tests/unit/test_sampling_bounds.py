"""The sampling bounds are written once per side: the frontend's request schema checks
them for HTTP callers, the chat model checks them again for callers that reach Triton's
gRPC directly. The packages share no code, so this holds the two sides' numbers equal
(and the tools' bound and name pattern): whatever the schema accepts the model accepts,
and what the model refuses the schema refuses first (a 400 from the schema naming the
field, as the OpenAI routes answer invalid input, never the model's refusal)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

import export.runtime.sampling as engine
import export.runtime.tools as engine_tools
import frontend.schemas.chat as schema
import frontend.schemas.chat_messages as schema_messages
from export.runtime.failures import GenerationError
from export.runtime.sampling import Sampling, check_sampling
from frontend.schemas.chat import ChatCompletionRequest
from frontend.schemas.common import Refused

USER = [{"role": "user", "content": "hi"}]
MAX_COMPLETION = 64


def test_the_two_sides_name_the_same_numbers():
    for name in (
        "MIN_TEMPERATURE",
        "MAX_TEMPERATURE",
        "MAX_TOP_P",
        "MIN_TOP_K",
        "MAX_STOP_SEQUENCES",
        "MAX_STOP_CHARS",
        "MAX_N",
        "MAX_LOGPROBS",
        "MIN_PENALTY",
        "MAX_PENALTY",
        "MAX_REPETITION_PENALTY",
        "MAX_LOGIT_BIAS",
        "MIN_BIAS",
        "MAX_BIAS",
    ):
        assert getattr(schema, name) == getattr(engine, name), name
    # The schema takes any seed modulo 2**63; the model takes 0 .. 2**63 - 1.
    assert schema.SEED_MODULUS == engine.MAX_SEED + 1


def test_the_two_sides_bound_tools_alike():
    assert schema.MAX_TOOLS == engine_tools.MAX_TOOLS
    # The schema's pattern is searched (pydantic), so it is anchored; the model fullmatches.
    assert f"^{engine_tools.NAME_PATTERN.pattern}$" == schema_messages.NAME_PATTERN


def _request(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "chat", "messages": USER, **fields})


def _sampling(body: ChatCompletionRequest) -> Sampling:
    return Sampling(
        max_tokens=body.max_tokens or MAX_COMPLETION,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        seed=body.seed,
        stop=body.stop_sequences(),
        n=body.n,
        logprobs=body.logprobs_count(),
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        repetition_penalty=body.repetition_penalty,
        logit_bias=body.logit_bias_pairs(),
        min_tokens=body.min_tokens,
        ignore_eos=body.ignore_eos,
    )


EDGES = [
    {"temperature": schema.MIN_TEMPERATURE},
    {"temperature": schema.MAX_TEMPERATURE},
    {"top_p": schema.MAX_TOP_P},
    {"top_p": 1e-9},
    {"top_k": schema.MIN_TOP_K},
    {"top_k": schema.MAX_TOP_K},
    {"stop": ["s"] * schema.MAX_STOP_SEQUENCES},
    {"stop": ["s" * schema.MAX_STOP_CHARS]},
    {"stop": ["\u00e9" * schema.MAX_STOP_CHARS]},  # characters, not bytes
    {"seed": 0},
    {"seed": -1},
    {"seed": 2**64 + 5},
    {"max_tokens": 1},
    {"max_tokens": MAX_COMPLETION},
    {"n": schema.MAX_N},
    {"logprobs": True, "top_logprobs": schema.MAX_LOGPROBS},
    {"logprobs": True},
    {"presence_penalty": schema.MIN_PENALTY, "frequency_penalty": schema.MAX_PENALTY},
    {"repetition_penalty": schema.MAX_REPETITION_PENALTY},
    {"repetition_penalty": 1e-9},
    {"logit_bias": {str(i): schema.MIN_BIAS for i in range(schema.MAX_LOGIT_BIAS)}},
    {"logit_bias": {"0": schema.MAX_BIAS}},
    {"min_tokens": 4, "max_tokens": 4},
    {"ignore_eos": True},
]


@pytest.mark.parametrize("fields", EDGES)
def test_what_the_schema_accepts_the_model_accepts(fields):
    # The served model's slots (8) bound n no lower than MAX_N; its vocabulary is the
    # model's own (the schema cannot know it: the service checks the ids).
    check_sampling(_sampling(_request(**fields)), MAX_COMPLETION, slots=8, vocab_size=49152)


OUTSIDE = [
    {"temperature": schema.MAX_TEMPERATURE + 0.01},
    {"temperature": schema.MIN_TEMPERATURE - 0.01},
    {"top_p": schema.MAX_TOP_P + 0.01},
    {"top_p": 0},
    {"top_k": schema.MIN_TOP_K - 1},
    {"stop": ["s"] * (schema.MAX_STOP_SEQUENCES + 1)},
    {"stop": [""]},
    {"stop": ["s" * (schema.MAX_STOP_CHARS + 1)]},
    {"n": schema.MAX_N + 1},
    {"n": 0},
    {"logprobs": True, "top_logprobs": schema.MAX_LOGPROBS + 1},
    {"presence_penalty": schema.MAX_PENALTY + 0.01},
    {"frequency_penalty": schema.MIN_PENALTY - 0.01},
    {"repetition_penalty": 0},
    {"repetition_penalty": schema.MAX_REPETITION_PENALTY + 0.01},
    {"logit_bias": {"5": schema.MAX_BIAS + 0.5}},
    {"logit_bias": {"5": schema.MIN_BIAS - 0.5}},
    {"logit_bias": {str(i): 1 for i in range(schema.MAX_LOGIT_BIAS + 1)}},
    {"min_tokens": 5, "max_tokens": 4},
]


@pytest.mark.parametrize("fields", OUTSIDE)
def test_what_the_model_refuses_the_schema_refuses_first(fields):
    with pytest.raises((ValidationError, Refused)):  # a field's bound, or a cross-field rule
        _request(**fields)
    raw = {
        "max_tokens": 1,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "stop": (),
        **fields,
    }
    raw["stop"] = tuple(raw["stop"])
    if "logprobs" in raw:  # the chat form: logprobs true + top_logprobs k
        raw["logprobs"] = raw.pop("top_logprobs", 0)
    if "logit_bias" in raw:
        raw["logit_bias"] = tuple((int(k), float(v)) for k, v in raw["logit_bias"].items())
    with pytest.raises(GenerationError) as refused:
        check_sampling(Sampling(**raw), MAX_COMPLETION)
    assert refused.value.code == "invalid"


@pytest.mark.parametrize("seed", [-1, engine.MAX_SEED + 1])
def test_the_model_refuses_a_seed_out_of_int64_range_as_invalid(seed):
    with pytest.raises(GenerationError) as refused:
        check_sampling(Sampling(max_tokens=1, seed=seed), MAX_COMPLETION)
    assert refused.value.code == "invalid"


def test_the_schema_takes_any_seed_modulo_int64():
    assert _request(seed=2**64 + 5).seed == 5
    assert _request(seed=-1).seed == schema.SEED_MODULUS - 1
    assert _request(seed=7).seed == 7
    assert _request().seed is None


def test_the_served_schema_states_the_bounds():
    fields = ChatCompletionRequest.model_json_schema()["properties"]
    assert fields["temperature"]["minimum"] == schema.MIN_TEMPERATURE
    assert fields["temperature"]["maximum"] == schema.MAX_TEMPERATURE
    assert fields["top_p"]["maximum"] == schema.MAX_TOP_P
    assert fields["top_k"]["maximum"] == schema.MAX_TOP_K
    stop_list = next(a for a in fields["stop"]["anyOf"] if a.get("type") == "array")
    assert stop_list["maxItems"] == schema.MAX_STOP_SEQUENCES
    assert stop_list["items"]["maxLength"] == schema.MAX_STOP_CHARS
