"""Issue 14 through the official `openai` client, unmodified, sync and async, streamed and
not, against the real stack (the frontend over the embedded Triton and the exported
SmolLM2 / MiniLM): every request field a client may send, logprobs, penalties,
logit_bias, n with seeds, echo, stop, JSON mode and structured outputs, tools (the
client's own tool-calling loop and stream helper), the 400s naming their parameter,
embeddings from token ids, and the model objects. docs/openai-compat.md is the contract;
its code examples run here as written.

Greedy (temperature 0) wherever two answers are compared: the same request gives the
same tokens, so "this option changed nothing" and "this option changed the text" are
exact claims. max_tokens stays small: the model shares two cores with the suite."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import openai
import pytest
from pydantic import BaseModel, Field
from tokenizers import Tokenizer

from .conftest import ADMIN, ADMIN_KEY, ROOT

pytestmark = pytest.mark.integration

STORY = [{"role": "user", "content": "Write a short story about a robot."}]
PROMPT = "The capital of France is"
CALL_ID = re.compile(r"call_[0-9a-f]{24}")

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather of a city",
        "parameters": WEATHER_PARAMETERS,
    },
}
TIME_PARAMETERS = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "maxLength": 20}},
    "required": ["timezone"],
    "additionalProperties": False,
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current time in a timezone",
        "parameters": TIME_PARAMETERS,
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]

PET_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 30},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
ASK_PET = [{"role": "user", "content": "Describe a pet cat as JSON with its name and age."}]


# --- the two clients behind one interface -----------------------------------------------


@dataclass(frozen=True)
class Api:
    """The same calls through `openai.OpenAI` or `openai.AsyncOpenAI` (a fresh client per
    call: an async client belongs to the event loop that made it). Streams come back as
    the list of their chunks."""

    mode: str  # "sync" | "async"
    base_url: str

    def _sync(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=ADMIN_KEY, max_retries=0, timeout=120)

    def _async(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.base_url, api_key=ADMIN_KEY, max_retries=0, timeout=120
        )

    def _call(self, pick: Callable[[Any], Any], **kw: Any) -> Any:
        streamed = bool(kw.get("stream"))
        if self.mode == "sync":
            with self._sync() as client:
                result = pick(client)(**kw)
                return list(result) if streamed else result

        async def go() -> Any:
            async with self._async() as client:
                result = await pick(client)(**kw)
                return [c async for c in result] if streamed else result

        return asyncio.run(go())

    def chat(self, **kw: Any) -> Any:
        return self._call(lambda c: c.chat.completions.create, **kw)

    def complete(self, **kw: Any) -> Any:
        return self._call(lambda c: c.completions.create, **kw)

    def embed(self, **kw: Any) -> Any:
        return self._call(lambda c: c.embeddings.create, **kw)

    def parse(self, **kw: Any) -> Any:
        return self._call(lambda c: c.chat.completions.parse, **kw)

    def stream_helper(self, **kw: Any) -> Any:
        """`chat.completions.stream(...)`: the client accumulates the deltas itself."""
        if self.mode == "sync":
            with self._sync() as client, client.chat.completions.stream(**kw) as stream:
                for _event in stream:
                    pass
                return stream.get_final_completion()

        async def go() -> Any:
            async with self._async() as client, client.chat.completions.stream(**kw) as stream:
                async for _event in stream:
                    pass
                return await stream.get_final_completion()

        return asyncio.run(go())


@pytest.fixture(scope="module", params=["sync", "async"])
def api(request: pytest.FixtureRequest, frontend) -> Api:
    return Api(request.param, frontend.url + "/v1")


@pytest.fixture(scope="module")
def sync_api(frontend) -> Api:
    return Api("sync", frontend.url + "/v1")


# --- tokenizers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_tokenizer(repository: Path) -> Tokenizer:
    return Tokenizer.from_file(str(repository / "chat" / "1" / "tokenizer.json"))


@pytest.fixture(scope="module")
def embed_tokenizer(repository: Path) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(repository / "embed" / "1" / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads to the model's batch shape; ids are sent bare
    tokenizer.no_truncation()
    return tokenizer


@cache
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's byte ↔ printable character table (byte-level BPE vocabularies use it)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def token_id(tokenizer: Tokenizer, piece: bytes) -> int:
    """The vocabulary id of one token given its exact bytes."""
    table = _byte_to_unicode()
    found = tokenizer.token_to_id("".join(table[b] for b in piece))
    assert found is not None, f"no token has the bytes {piece!r}"
    return found


# --- neutral fields, messages ---------------------------------------------------------------


def test_every_neutral_field_is_accepted_and_changes_nothing(api):
    plain = api.chat(model="chat", messages=STORY, max_tokens=12, temperature=0)
    loaded = api.chat(
        model="chat",
        messages=STORY,
        max_tokens=12,
        temperature=0,
        top_p=1,
        frequency_penalty=0,
        presence_penalty=0,
        logprobs=False,
        logit_bias={},
        stop=[],
        n=1,
        seed=None,
        user="someone",
        metadata={"team": "search"},
        store=False,
        service_tier="auto",
        modalities=["text"],
        response_format={"type": "text"},
        audio=None,
        reasoning_effort=None,
        verbosity=None,
        functions=[],
        # accepted, ignored: predicted outputs only speed OpenAI up
        prediction={"type": "content", "content": "A robot named Bolt"},
        prompt_cache_key="stories",
        safety_identifier="user-1",
        extra_body={"top_k": 0, "repetition_penalty": 1, "min_tokens": 0, "ignore_eos": False},
    )
    assert loaded.choices[0].message.content == plain.choices[0].message.content
    assert loaded.usage == plain.usage
    assert loaded.choices[0].logprobs is None


def test_neutral_completion_fields_change_nothing(api):
    plain = api.complete(model="chat", prompt=PROMPT, max_tokens=8, temperature=0)
    loaded = api.complete(
        model="chat",
        prompt=PROMPT,
        max_tokens=8,
        temperature=0,
        echo=False,
        best_of=1,
        suffix=None,
        logprobs=None,
        logit_bias={},
        frequency_penalty=0,
        presence_penalty=0,
        stop=[],
        n=1,
        user="someone",
    )
    assert loaded.choices[0].text == plain.choices[0].text
    assert loaded.usage == plain.usage


def test_content_parts_developer_role_and_name(api):
    """Parts are joined with nothing between them, developer is system, and a name is
    accepted (our template does not show it)."""
    plain = api.chat(
        model="chat",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Write a short story about a robot."},
        ],
        max_tokens=12,
        temperature=0,
    )
    parts = api.chat(
        model="chat",
        messages=[
            {
                "role": "developer",
                "content": [
                    {"type": "text", "text": "You are "},
                    {"type": "text", "text": "terse."},
                ],
            },
            {
                "role": "user",
                "name": "ada",
                "content": [
                    {"type": "text", "text": "Write a short story"},
                    {"type": "text", "text": " about a robot."},
                ],
            },
        ],
        max_tokens=12,
        temperature=0,
    )
    assert parts.usage.prompt_tokens == plain.usage.prompt_tokens
    assert parts.choices[0].message.content == plain.choices[0].message.content


# --- logprobs -----------------------------------------------------------------------------


def _check_entries(entries, k: int, greedy: bool) -> None:
    for entry in entries:
        assert -9999.0 < entry.logprob <= 0, entry  # the drawn token was in its distribution
        tops = [t.logprob for t in entry.top_logprobs]
        assert len(tops) == k
        assert tops == sorted(tops, reverse=True)
        assert sum(math.exp(t) for t in tops) <= 1 + 1e-9
        assert all(t.bytes for t in entry.top_logprobs)
        if greedy:  # the greedy token is the most likely one
            assert (entry.token, entry.logprob) == (entry.top_logprobs[0].token, tops[0])
        for top in entry.top_logprobs:
            if top.bytes == entry.bytes:
                assert top.logprob == pytest.approx(entry.logprob, abs=1e-9)


def test_chat_logprobs_shape_and_values(api):
    kw = dict(
        model="chat", messages=STORY, max_tokens=10, temperature=0, logprobs=True, top_logprobs=5
    )
    whole = api.chat(**kw)
    choice = whole.choices[0]
    entries = choice.logprobs.content
    assert choice.finish_reason == "length" and len(entries) == whole.usage.completion_tokens == 10
    _check_entries(entries, 5, greedy=True)
    # Every token's exact bytes together are the text.
    assert b"".join(bytes(e.bytes) for e in entries).decode() == choice.message.content
    chunks = api.chat(**kw, stream=True)
    streamed = [
        e
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for e in c.choices[0].logprobs.content
    ]
    assert [e.token for e in streamed] == [e.token for e in entries]
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in entries], abs=1e-6)


def test_sampled_logprobs_come_from_the_cut_distribution(sync_api):
    r = sync_api.chat(
        model="chat",
        messages=STORY,
        max_tokens=10,
        temperature=0.8,
        top_p=0.9,
        seed=7,
        logprobs=True,
        top_logprobs=3,
    )
    _check_entries(r.choices[0].logprobs.content, 3, greedy=False)
    # top_k 1: the distribution is one token, so the drawn token has probability 1.
    one = sync_api.chat(
        model="chat",
        messages=STORY,
        max_tokens=6,
        temperature=1,
        seed=7,
        logprobs=True,
        top_logprobs=2,
        extra_body={"top_k": 1},
    )
    for entry in one.choices[0].logprobs.content:
        assert entry.logprob == pytest.approx(0.0, abs=1e-9)
        # The rest were cut: outside the distribution, if they are listed at all.
        assert all(t.logprob == -9999.0 for t in entry.top_logprobs[1:])


def test_completion_logprobs_shape(api):
    kw = dict(model="chat", prompt=PROMPT, max_tokens=8, temperature=0, logprobs=3)
    whole = api.complete(**kw)
    choice = whole.choices[0]
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 8
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset[0] == 0
    for i, token in enumerate(lp.tokens[:-1]):
        assert lp.text_offset[i + 1] - lp.text_offset[i] == len(token)
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert logprob <= 0 and 3 <= len(top) <= 4
        assert max(top.values()) == pytest.approx(logprob, abs=1e-9)  # greedy: the best
        assert top.get(token) == pytest.approx(logprob, abs=1e-9)
    chunks = api.complete(**kw, stream=True)
    assert "".join(c.choices[0].text for c in chunks) == choice.text
    tokens = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    assert tokens == lp.tokens


def test_prompt_logprobs_equal_the_greedy_generation_logprobs(sync_api, chat_tokenizer):
    """Scoring prompt + continuation (echo, max_tokens 0) gives the continuation's tokens
    the logprobs the greedy generation reported: both are the model's plain log-softmax."""
    ids = chat_tokenizer.encode(PROMPT).ids
    generated = sync_api.complete(model="chat", prompt=ids, max_tokens=3, temperature=0, logprobs=2)
    assert generated.usage.prompt_tokens == len(ids)
    text = sync_api.complete(model="chat", prompt=PROMPT, max_tokens=3, temperature=0)
    assert generated.choices[0].text == text.choices[0].text  # token ids = the same prompt
    lp = generated.choices[0].logprobs
    new_ids = [token_id(chat_tokenizer, t.encode()) for t in lp.tokens]
    scored = sync_api.complete(
        model="chat", prompt=ids + new_ids, max_tokens=0, echo=True, logprobs=2, temperature=0
    )
    choice = scored.choices[0]
    assert choice.finish_reason == "length" and scored.usage.completion_tokens == 0
    assert choice.text == PROMPT + generated.choices[0].text
    slp = choice.logprobs
    assert len(slp.tokens) == len(ids) + 3
    assert slp.token_logprobs[0] is None and slp.top_logprobs[0] is None
    assert all(x <= 0 for x in slp.token_logprobs[1:])
    assert slp.token_logprobs[-3:] == pytest.approx(lp.token_logprobs, abs=1e-4)


# --- penalties, bias, stop control ----------------------------------------------------------

REPEAT = "I like apples. I like apples. I like apples. I like apples. I like"


def _distinct_tokens(choice) -> int:
    return len(set(choice.logprobs.tokens))


def test_penalties_change_the_output(api):
    def run(**extra: Any):
        body = extra.pop("extra_body", None)
        return api.complete(
            model="chat",
            prompt=REPEAT,
            max_tokens=16,
            temperature=0,
            logprobs=0,
            extra_body=body,
            **extra,
        ).choices[0]

    base = run()
    for penalised in (
        run(frequency_penalty=2),
        run(presence_penalty=2),
        run(extra_body={"repetition_penalty": 1.5}),
    ):
        assert penalised.text != base.text
        assert _distinct_tokens(penalised) >= _distinct_tokens(base)
    # Negative penalties reward repetition: no more distinct tokens than without.
    assert _distinct_tokens(run(frequency_penalty=-2)) <= _distinct_tokens(base)


def test_logit_bias_bans_and_forces_a_token(api, chat_tokenizer):
    kw = dict(
        model="chat", messages=STORY, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2
    )
    base = api.chat(**kw).choices[0].logprobs.content[0]
    first = token_id(chat_tokenizer, bytes(base.bytes))
    banned = api.chat(**kw, logit_bias={str(first): -100}).choices[0].logprobs.content[0]
    # The greedy choice without its best token is the old second best.
    assert banned.token == base.top_logprobs[1].token
    assert banned.bytes != base.bytes
    zebra = chat_tokenizer.encode(" zebra").ids
    assert len(zebra) == 1
    forced = api.chat(**kw, logit_bias={str(zebra[0]): 100}).choices[0]
    assert [e.token for e in forced.logprobs.content] == [" zebra"] * 4
    assert forced.message.content == " zebra" * 4


def test_min_tokens_and_ignore_eos(api):
    short = [{"role": "user", "content": "Is the sky blue? Answer yes or no."}]
    kw = dict(model="chat", messages=short, max_tokens=16, temperature=0)
    base = api.chat(**kw)
    assert base.choices[0].finish_reason == "stop" and base.usage.completion_tokens < 10
    at_least = api.chat(**kw, extra_body={"min_tokens": 10})
    assert at_least.usage.completion_tokens >= 10
    endless = api.chat(**kw, extra_body={"ignore_eos": True})
    assert endless.choices[0].finish_reason == "length"
    assert endless.usage.completion_tokens == 16


# --- n and seeds ----------------------------------------------------------------------------


def test_n_choices_with_a_seed_are_reproducible(api):
    kw = dict(model="chat", messages=STORY, max_tokens=10, temperature=1.0, seed=1234)
    three = api.chat(**kw, n=3)
    texts = [c.message.content for c in three.choices]
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" for c in three.choices)
    assert three.usage.completion_tokens == 30
    assert [c.message.content for c in api.chat(**kw, n=3).choices] == texts
    # Choice 0 draws what n=1 draws with the same seed; the others draw their own.
    assert api.chat(**kw).choices[0].message.content == texts[0]
    assert len(set(texts)) >= 2

    chunks = api.chat(**kw, n=3, stream=True, stream_options={"include_usage": True})
    by_index: dict[int, list[str]] = {0: [], 1: [], 2: []}
    roles, finishes = [], []
    for chunk in chunks:
        for c in chunk.choices:
            if c.delta.role:
                roles.append(c.index)
            by_index[c.index].append(c.delta.content or "")
            if c.finish_reason:
                finishes.append((c.index, c.finish_reason))
    assert sorted(roles) == [0, 1, 2]
    assert sorted(finishes) == [(0, "length"), (1, "length"), (2, "length")]
    assert ["".join(by_index[i]) for i in range(3)] == texts
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 30


def test_completions_n(sync_api):
    r = sync_api.complete(model="chat", prompt=PROMPT, max_tokens=6, temperature=1, seed=5, n=2)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.usage.completion_tokens == 12
    one = sync_api.complete(model="chat", prompt=PROMPT, max_tokens=6, temperature=1, seed=5)
    assert one.choices[0].text == r.choices[0].text


# --- echo, stop -----------------------------------------------------------------------------


def test_echo_returns_the_prompt_then_the_completion(api):
    plain = api.complete(model="chat", prompt=PROMPT, max_tokens=4, temperature=0)
    echoed = api.complete(model="chat", prompt=PROMPT, max_tokens=4, temperature=0, echo=True)
    assert echoed.choices[0].text == PROMPT + plain.choices[0].text
    assert echoed.usage == plain.usage
    with_lp = api.complete(
        model="chat", prompt=PROMPT, max_tokens=4, temperature=0, echo=True, logprobs=1
    ).choices[0]
    lp = with_lp.logprobs
    assert len(lp.tokens) == plain.usage.prompt_tokens + 4
    assert "".join(lp.tokens) == with_lp.text
    assert lp.token_logprobs[0] is None and all(x <= 0 for x in lp.token_logprobs[1:])
    streamed = api.complete(
        model="chat", prompt=PROMPT, max_tokens=4, temperature=0, echo=True, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == echoed.choices[0].text


def test_stop_as_a_string_a_list_or_empty(api):
    kw = dict(model="chat", messages=STORY, max_tokens=20, temperature=0)
    full = api.chat(**kw).choices[0]
    text = full.message.content
    stop = " " + text.split()[3]
    assert full.finish_reason == "length"
    for given in (stop, [stop], [stop, "zzzz"]):
        cut = api.chat(**kw, stop=given).choices[0]
        assert cut.finish_reason == "stop"
        assert cut.message.content == text[: text.index(stop)]
    empty = api.chat(**kw, stop=[]).choices[0]
    assert (empty.message.content, empty.finish_reason) == (text, "length")
    pieces = api.chat(**kw, stop=stop, stream=True)
    assert (
        "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
        == text[: text.index(stop)]
    )


def test_stream_options_without_stream_is_a_400(api):
    with pytest.raises(openai.BadRequestError) as err:
        api.chat(model="chat", messages=STORY, max_tokens=4, stream_options={"include_usage": True})
    assert err.value.status_code == 400 and err.value.param == "stream_options"
    with pytest.raises(openai.BadRequestError) as err:
        api.complete(
            model="chat", prompt=PROMPT, max_tokens=4, stream_options={"include_usage": True}
        )
    assert err.value.param == "stream_options"


# --- JSON mode and structured outputs -------------------------------------------------------


def test_json_object_mode_answers_a_json_object(api):
    r = api.chat(
        model="chat",
        messages=ASK_PET,
        max_tokens=32,
        temperature=0,
        response_format={"type": "json_object"},
    )
    choice = r.choices[0]
    content = choice.message.content
    assert content.startswith("{")
    if choice.finish_reason == "stop":  # a cut answer (length) may be incomplete JSON
        assert isinstance(json.loads(content), dict)
    else:
        assert choice.finish_reason == "length"


def test_json_schema_answers_validate(api):
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "pet", "schema": PET_SCHEMA, "strict": True},
    }
    kw = dict(
        model="chat",
        messages=ASK_PET,
        max_tokens=40,
        temperature=0,
        response_format=response_format,
    )
    whole = api.chat(**kw).choices[0]
    assert whole.finish_reason == "stop"
    jsonschema.validate(json.loads(whole.message.content), PET_SCHEMA)
    chunks = api.chat(**kw, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.message.content
    # Sampled too: the grammar holds whatever is drawn.
    for seed in (1, 2, 3):
        sampled = api.chat(**{**kw, "temperature": 1.0, "seed": seed}).choices[0]
        assert sampled.finish_reason == "stop", sampled
        jsonschema.validate(json.loads(sampled.message.content), PET_SCHEMA)


class Pet(BaseModel):
    name: str = Field(max_length=12)
    age: int = Field(ge=0, le=30)


def test_the_clients_parse_helper_gets_a_model(api):
    r = api.parse(model="chat", messages=ASK_PET, max_tokens=40, temperature=0, response_format=Pet)
    pet = r.choices[0].message.parsed
    assert isinstance(pet, Pet) and 0 <= pet.age <= 30 and len(pet.name) <= 12


# --- tools --------------------------------------------------------------------------------


def names(param: str | None, field: str) -> bool:
    """`param` is the field or a path inside it ("logit_bias.5", "input.0")."""
    return param is not None and (param == field or param.startswith(field + "."))


def _assert_call(call, name: str, parameters: dict) -> dict:
    assert CALL_ID.fullmatch(call.id), call.id
    assert call.type == "function" and call.function.name == name
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, parameters)
    return arguments


def test_the_tool_calling_loop(api):
    first = api.chat(
        model="chat",
        messages=ASK_WEATHER,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,  # this model repeats its call when it may
        max_tokens=40,
        temperature=0,
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    city = _assert_call(call, "get_weather", WEATHER_PARAMETERS)["city"]
    # The loop as the client's docs write it: the returned message goes back as it is.
    messages: list[Any] = [
        *ASK_WEATHER,
        choice.message,
        {
            "role": "tool",
            "tool_call_id": call.id,
            "content": json.dumps({"city": city, "temperature_c": 21}),
        },
    ]
    second = api.chat(
        model="chat", messages=messages, tools=[WEATHER], max_tokens=24, temperature=0
    )
    answer = second.choices[0]
    assert second.usage.prompt_tokens > first.usage.prompt_tokens  # the call and its result
    assert answer.finish_reason in ("stop", "length", "tool_calls")
    if answer.finish_reason == "tool_calls":
        for again in answer.message.tool_calls:
            _assert_call(again, "get_weather", WEATHER_PARAMETERS)
    else:
        assert answer.message.content and not answer.message.tool_calls


def test_a_named_tool_choice_calls_that_tool_once(api):
    r = api.chat(
        model="chat",
        messages=ASK_WEATHER,
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
        max_tokens=40,
        temperature=0,
    )
    calls = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls" and len(calls) == 1
    _assert_call(calls[0], "get_time", TIME_PARAMETERS)


def test_tool_choice_none_hides_the_tools(sync_api):
    without = sync_api.chat(model="chat", messages=ASK_WEATHER, max_tokens=8, temperature=0)
    hidden = sync_api.chat(
        model="chat",
        messages=ASK_WEATHER,
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=8,
        temperature=0,
    )
    assert hidden.usage.prompt_tokens == without.usage.prompt_tokens
    assert hidden.choices[0].message.content == without.choices[0].message.content
    assert not hidden.choices[0].message.tool_calls
    shown = sync_api.chat(
        model="chat", messages=ASK_WEATHER, tools=[WEATHER], max_tokens=8, temperature=0
    )
    assert shown.usage.prompt_tokens > without.usage.prompt_tokens  # the tools block


class GetWeather(BaseModel):
    city: str = Field(max_length=20)


def test_streamed_tool_calls(api):
    """The client's stream helper accumulates the calls (it parses strict tools' arguments
    into their model), and by hand the chunks are OpenAI's: one whole call per delta, its
    index, id and type, before the finish chunk."""
    tool = openai.pydantic_function_tool(GetWeather, name="get_weather")
    kw = dict(
        model="chat",
        messages=ASK_WEATHER,
        tools=[tool],
        tool_choice="required",
        max_tokens=96,  # parallel calls allowed: room for a few (~30 tokens each)
        temperature=0,
    )
    whole = api.chat(**kw).choices[0].message.tool_calls
    assert whole
    final = api.stream_helper(**kw)
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [c.function.arguments for c in choice.message.tool_calls] == [
        c.function.arguments for c in whole
    ]
    assert isinstance(choice.message.tool_calls[0].function.parsed_arguments, GetWeather)

    chunks = api.chat(**kw, stream=True)
    deltas = [
        (c.choices[0].delta.tool_calls, c.choices[0].finish_reason) for c in chunks if c.choices
    ]
    calls = [d for tool_calls, _ in deltas if tool_calls for d in tool_calls]
    assert [d.index for d in calls] == list(range(len(whole)))
    assert all(CALL_ID.fullmatch(d.id) and d.type == "function" for d in calls)
    assert [(d.function.name, d.function.arguments) for d in calls] == [
        (c.function.name, c.function.arguments) for c in whole
    ]
    assert deltas[-1][1] == "tool_calls"


def test_parallel_required_calls_name_known_tools(sync_api):
    r = sync_api.chat(
        model="chat",
        messages=[
            {"role": "user", "content": "What are the weather in Paris and the time in Tokyo?"}
        ],
        tools=[WEATHER, CLOCK],
        tool_choice="required",
        parallel_tool_calls=True,
        max_tokens=96,
        temperature=0,
    )
    choice = r.choices[0]
    if choice.finish_reason == "tool_calls":
        for call in choice.message.tool_calls:
            assert call.function.name in ("get_weather", "get_time")
            schema = WEATHER_PARAMETERS if call.function.name == "get_weather" else TIME_PARAMETERS
            _assert_call(call, call.function.name, schema)
        assert len({c.id for c in choice.message.tool_calls}) == len(choice.message.tool_calls)
    else:  # cut by max_tokens: no calls, as OpenAI
        assert choice.finish_reason == "length" and not choice.message.tool_calls


# --- 400s naming their parameter --------------------------------------------------------------

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
REFUSED_CHAT: list[tuple[dict[str, Any], str]] = [
    ({"messages": [{"role": "user", "content": [IMAGE]}]}, "messages.0.content"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"reasoning_effort": "low"}, "reasoning_effort"),
    ({"store": True}, "store"),
    ({"verbosity": "high"}, "verbosity"),
    ({"service_tier": "flex"}, "service_tier"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"functions": [{"name": "f", "parameters": {"type": "object"}}]}, "functions"),
    ({"n": 9}, "n"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"),
    ({"logit_bias": {"5": 101}}, "logit_bias"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"temperature": "hot"}, "temperature"),  # malformed: 400 here, not FastAPI's 422
    ({"extra_body": {"repetition_penalty": 0}}, "repetition_penalty"),
]


@pytest.mark.parametrize(("fields", "param"), REFUSED_CHAT, ids=[p for _, p in REFUSED_CHAT])
def test_chat_values_we_cannot_honour_are_400_naming_the_parameter(sync_api, fields, param):
    body = {"model": "chat", "messages": STORY, "max_tokens": 4, **fields}
    with pytest.raises(openai.BadRequestError) as err:
        sync_api.chat(**body)
    assert err.value.status_code == 400
    assert err.value.type == "invalid_request_error"
    assert names(err.value.param, param), err.value.body
    if param == "messages.0.content":
        assert "image" in err.value.message


REFUSED_COMPLETIONS: list[tuple[dict[str, Any], str]] = [
    ({"best_of": 2}, "best_of"),
    ({"suffix": "the end"}, "suffix"),
    ({"logprobs": 6}, "logprobs"),
    ({"max_tokens": 0}, "max_tokens"),  # 0 only to score a prompt (echo + logprobs)
]


@pytest.mark.parametrize(
    ("fields", "param"), REFUSED_COMPLETIONS, ids=[p for _, p in REFUSED_COMPLETIONS]
)
def test_completion_values_we_cannot_honour_are_400(sync_api, fields, param):
    with pytest.raises(openai.BadRequestError) as err:
        sync_api.complete(**{"model": "chat", "prompt": PROMPT, "max_tokens": 4, **fields})
    assert names(err.value.param, param), err.value.body


def test_an_out_of_vocabulary_logit_bias_is_a_400(sync_api, chat_tokenizer):
    vocab = chat_tokenizer.get_vocab_size()
    with pytest.raises(openai.BadRequestError) as err:
        sync_api.chat(model="chat", messages=STORY, max_tokens=4, logit_bias={str(vocab): 5})
    assert "logit_bias" in err.value.message


@pytest.mark.parametrize(
    ("schema", "strict"),
    [
        ({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}, False),
        # strict: a keyword the grammar cannot enforce is refused, not ignored
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, True),
    ],
    ids=["does-not-compile", "strict-unenforceable"],
)
def test_a_schema_the_grammar_cannot_hold_is_a_400(sync_api, schema, strict):
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": schema, "strict": strict},
    }
    with pytest.raises(openai.BadRequestError) as err:
        sync_api.chat(model="chat", messages=STORY, max_tokens=4, response_format=response_format)
    body = err.value.body
    assert isinstance(body, dict)  # the error object; .message has the client's prefix
    assert body["message"].startswith("response_format.json_schema.schema:")


def test_a_lax_schema_ignores_what_it_cannot_enforce(sync_api):
    response_format = {
        "type": "json_schema",
        "json_schema": {
            "name": "x",
            "schema": {
                "type": "array",
                "items": {"type": "integer"},
                "uniqueItems": True,
                "maxItems": 3,
            },
        },
    }
    r = sync_api.chat(
        model="chat", messages=STORY, max_tokens=24, temperature=0, response_format=response_format
    )
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), list)


def test_the_error_envelope_on_the_openai_routes_and_elsewhere(frontend):
    r = httpx.post(
        frontend.url + "/v1/chat/completions",
        headers=ADMIN,
        json={"model": "chat", "messages": STORY, "n": "three"},
        timeout=30,
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code", "request_id", "details"}
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "n",
        "validation_error",
    )
    assert error["request_id"] == r.headers["X-Request-ID"]
    # The other routes keep 422 for a schema error.
    other = httpx.post(
        frontend.url + "/v1/models/intent/predict", headers=ADMIN, json={"inputs": 5}, timeout=30
    )
    assert other.status_code == 422 and other.json()["error"]["param"] == "inputs"
    denied = httpx.post(frontend.url + "/v1/chat/completions", json={}, timeout=30)
    assert denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"


def test_async_client_gets_the_same_errors(frontend):
    api = Api("async", frontend.url + "/v1")
    with pytest.raises(openai.BadRequestError) as err:
        api.chat(model="chat", messages=[{"role": "user", "content": [IMAGE]}], max_tokens=4)
    assert err.value.param == "messages.0.content"
    with pytest.raises(openai.NotFoundError):
        api.chat(model="gpt-4o", messages=STORY, max_tokens=4)


# --- embeddings ---------------------------------------------------------------------------

TEXTS = ["the food was delicious", "and the waiter was friendly"]


def test_embeddings_from_text_and_from_token_ids(api, embed_tokenizer):
    ids = [embed_tokenizer.encode(t, add_special_tokens=False).ids for t in TEXTS]
    assert [embed_tokenizer.decode(i) for i in ids] == TEXTS  # the premise: they round-trip
    by_text = api.embed(model="embed", input=TEXTS, user="someone")
    by_ids = api.embed(model="embed", input=ids)
    one_text = api.embed(model="embed", input=TEXTS[0], dimensions=384)
    one_ids = api.embed(model="embed", input=ids[0])
    vectors = np.array([d.embedding for d in by_text.data])
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.array([d.embedding for d in by_ids.data]), vectors, atol=1e-6)
    np.testing.assert_allclose(one_ids.data[0].embedding, vectors[0], atol=1e-6)
    np.testing.assert_allclose(one_text.data[0].embedding, vectors[0], atol=1e-6)
    assert by_ids.usage.prompt_tokens == by_text.usage.prompt_tokens
    float_ids = api.embed(model="embed", input=ids, encoding_format="float")
    np.testing.assert_allclose(np.array([d.embedding for d in float_ids.data]), vectors, atol=1e-6)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"dimensions": 100}, "dimensions"),
        ({"input": [[10**6]]}, "input"),
        ({"input": [-1]}, "input"),
    ],
    ids=["dimensions", "ids-out-of-range", "negative-id"],
)
def test_embedding_refusals(api, fields, param):
    with pytest.raises(openai.BadRequestError) as err:
        api.embed(**{"model": "embed", "input": "hello", **fields})
    assert names(err.value.param, param), err.value.body


# --- models -------------------------------------------------------------------------------


def test_model_objects(api):
    def listing() -> Any:
        if api.mode == "sync":
            with api._sync() as client:
                return list(client.models.list()), client.models.retrieve("chat")

        async def go() -> Any:
            async with api._async() as client:
                return [m async for m in client.models.list()], await client.models.retrieve("chat")

        return asyncio.run(go())

    models, chat = listing()
    by_id = {m.id: m for m in models}
    assert {"chat", "embed", "intent", "sentiment"} <= set(by_id)
    for model in models:
        assert model.object == "model" and model.owned_by == "infergate"
        assert isinstance(model.created, int) and 1_600_000_000 < model.created <= time.time()
    assert (chat.id, chat.created, chat.owned_by) == ("chat", by_id["chat"].created, "infergate")
    with pytest.raises(openai.NotFoundError):
        Api("sync", api.base_url).chat(model="nope", messages=STORY, max_tokens=1)


# --- the docs' examples ---------------------------------------------------------------------


def _doc_examples() -> list[str]:
    text = (ROOT / "docs" / "openai-compat.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_the_docs_examples_run_as_written(frontend):
    examples = _doc_examples()
    assert len(examples) >= 3
    for source in examples:
        code = source.replace("http://localhost:8000/v1", frontend.url + "/v1").replace(
            "YOUR_KEY", ADMIN_KEY
        )
        exec(compile(code, "docs/openai-compat.md", "exec"), {"__name__": "example"})
