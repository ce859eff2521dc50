"""The OpenAI wire shapes (frontend/services/openai_shapes.py), byte for byte: the whole
answers and the SSE frames of both generation routes, with and without usage, over a fake
stream whose steps have text, no text (held back) and a final with text (a model without
the new outputs). Then n choices, logprobs (chat's and the legacy completions' shape),
echo, token-id prompts and tool calls over a model that has them, each answer and chunk
parsed with the official client's models, its stream accumulator and the client itself.
A change here is an API change."""

from __future__ import annotations

import asyncio
import json
import re

import numpy as np
import pytest
from openai import OpenAI
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam
from tritonclient.utils import deserialize_bytes_tensor, triton_to_np_dtype

from frontend.catalog import Catalog
from frontend.observability.metrics import Metrics
from frontend.ratelimit.quota import Reservation
from frontend.schemas.chat import ChatCompletionRequest
from frontend.services import openai_shapes
from frontend.services.generation import GenerationService
from frontend.settings import GenerationSettings, TritonSettings
from frontend.triton.client import TritonClient

from .cards import WITH_CHAT, write_cards
from .test_frontend_errors import ADMIN_KEY, FakeResult
from .test_request_hardening import CountingTriton, FakeStream, _app

# admission, "Hel", nothing (a stop sequence may be forming), "lo", "!" with the finish
STEPS = [("", 5, 0, ""), ("Hel", 5, 1, ""), ("", 5, 2, ""), ("lo", 5, 3, ""), ("!", 5, 4, "length")]
USAGE = '{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}'
CHAT = '{"id":"chatcmpl-rid-1","object":"chat.completion.chunk","created":0,"model":"chat",'
TEXT = '{"id":"cmpl-rid-1","object":"text_completion","created":0,"model":"chat",'


class ScriptedStream(FakeStream):
    def __init__(self, requests, error) -> None:
        super().__init__(requests, error)
        self._answers = [(self._result(*step), None) for step in STEPS]


class ScriptedTriton(CountingTriton):
    def stream_infer(self, requests, stream_timeout=None, **kwargs) -> FakeStream:
        stream = ScriptedStream(requests, None)
        self.streams.append(stream)
        return stream


@pytest.fixture
def api(tmp_path):
    client = _app(tmp_path, ScriptedTriton())
    yield client
    client.__exit__(None, None, None)


def _post(api, route: str, **body) -> str:
    body = {"model": "chat", "max_tokens": 4, **body}
    response = api.post(route, json=body, headers={"X-Request-ID": "rid-1"})
    assert response.status_code == 200, response.text
    return re.sub(r'"created":\d+', '"created":0', response.text)


def _frames(*chunks: str) -> str:
    return "".join(f"data: {chunk}\n\n" for chunk in chunks) + "data: [DONE]\n\n"


def _chat_chunk(delta: str, finish: str = "null", usage: str = "") -> str:
    choice = f'{{"index":0,"delta":{delta},"finish_reason":{finish},"logprobs":null}}'
    return f'{CHAT}"choices":[{choice}]{usage}}}'


def _text_chunk(text: str, finish: str = "null", usage: str = "") -> str:
    choice = f'{{"index":0,"text":"{text}","finish_reason":{finish},"logprobs":null}}'
    return f'{TEXT}"choices":[{choice}]{usage}}}'


def test_chat_whole(api):
    assert _post(api, "/v1/chat/completions", messages=[{"role": "user", "content": "hi"}]) == (
        '{"id":"chatcmpl-rid-1","object":"chat.completion","created":0,"model":"chat",'
        '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello!",'
        '"refusal":null},"finish_reason":"length","logprobs":null}],'
        f'"usage":{USAGE},"service_tier":"default","system_fingerprint":null}}'
    )


def test_completion_whole(api):
    assert _post(api, "/v1/completions", prompt="hi") == (
        '{"id":"cmpl-rid-1","object":"text_completion","created":0,"model":"chat",'
        '"choices":[{"index":0,"text":"Hello!","finish_reason":"length","logprobs":null}],'
        f'"usage":{USAGE},"system_fingerprint":null}}'
    )


@pytest.mark.parametrize("options", [None, {"include_usage": False}])
def test_chat_stream(api, options):
    extra = {} if options is None else {"stream_options": options}
    body = _post(
        api,
        "/v1/chat/completions",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        **extra,
    )
    assert body == _frames(
        _chat_chunk('{"role":"assistant","content":""}'),
        _chat_chunk('{"content":"Hel"}'),
        _chat_chunk('{"content":"lo"}'),
        _chat_chunk('{"content":"!"}'),
        _chat_chunk("{}", '"length"'),
    )


def test_chat_stream_with_usage(api):
    body = _post(
        api,
        "/v1/chat/completions",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    null = ',"usage":null'
    assert body == _frames(
        _chat_chunk('{"role":"assistant","content":""}', usage=null),
        _chat_chunk('{"content":"Hel"}', usage=null),
        _chat_chunk('{"content":"lo"}', usage=null),
        _chat_chunk('{"content":"!"}', usage=null),
        _chat_chunk("{}", '"length"', usage=null),
        f'{CHAT}"choices":[],"usage":{USAGE}}}',
    )


@pytest.mark.parametrize("usage", [False, True])
def test_completion_stream(api, usage):
    body = _post(
        api, "/v1/completions", prompt="hi", stream=True, stream_options={"include_usage": usage}
    )
    null = ',"usage":null' if usage else ""
    last = [f'{TEXT}"choices":[],"usage":{USAGE}}}'] if usage else []
    assert body == _frames(
        _text_chunk("Hel", usage=null),
        _text_chunk("lo", usage=null),
        _text_chunk("!", '"length"', usage=null),
        *last,
    )


def test_the_access_log_names_the_model(api, caplog):
    with caplog.at_level("INFO", logger="infergate.access"):
        _post(api, "/v1/completions", prompt="hi", stream=True)
    records = [r for r in caplog.records if r.name == "infergate.access"]
    assert records and (records[-1].model, records[-1].version) == ("chat", "1")


# --- n choices, logprobs, echo, tool calls (a model of this release) --------------------
#
# The scripted model below answers with the new outputs (INDEX, TOKEN_LOGPROBS,
# TOOL_CALLS); every answer and chunk is also parsed with the official client's models.


def entry(token: str, logprob: float | None, *tops: tuple[str, float], raw: bytes | None = None):
    """One logprob entry as the model writes it (DESIGN §3)."""

    def one(text: str, value: float | None, data: bytes | None = None) -> dict:
        data = text.encode() if data is None else data
        return {"id": len(text), "token": text, "bytes": list(data), "logprob": value}

    top = [one(t, v) for t, v in tops]
    return {**one(token, logprob, raw), "top_logprobs": top if logprob is not None else []}


def step(
    text: str,
    completion: int,
    finish: str = "",
    *,
    index: int = 0,
    prompt: int = 5,
    logprobs: list[dict] | None = None,
    tool_calls: list[dict] | None = None,
) -> FakeResult:
    def string(value: object) -> np.ndarray:
        raw = "" if value is None else value if isinstance(value, str) else json.dumps(value)
        return np.array([raw.encode()], dtype=object)

    return FakeResult(
        {
            "TEXT": string(text),
            "PROMPT_TOKENS": np.array([prompt], dtype=np.int32),
            "COMPLETION_TOKENS": np.array([completion], dtype=np.int32),
            "FINISH_REASON": string(finish),
            "INDEX": np.array([index], dtype=np.int32),
            "TOKEN_LOGPROBS": string(logprobs),
            "TOOL_CALLS": string(tool_calls),
        }
    )


class Script(FakeStream):
    def __init__(self, requests, steps: list[FakeResult]) -> None:
        super().__init__(requests, None)
        self._answers = [(result, None) for result in steps]

    def sent(self) -> dict[str, list]:
        """What the request carried to Triton, tensor by tensor."""
        assert self.request is not None
        values = {}
        for tensor in self.request["inputs"]:
            raw = tensor._raw_content  # tritonclient keeps the serialized data here
            if tensor.datatype() == "BYTES":
                values[tensor.name()] = [v.decode() for v in deserialize_bytes_tensor(raw)]
            else:
                dtype = triton_to_np_dtype(tensor.datatype())
                values[tensor.name()] = np.frombuffer(raw, dtype=dtype).tolist()
        return values


class ScriptTriton(CountingTriton):
    def __init__(self) -> None:
        super().__init__()
        self.steps: list[FakeResult] = []

    def stream_infer(self, requests, stream_timeout=None, **kwargs) -> FakeStream:
        stream = Script(requests, self.steps)
        self.streams.append(stream)
        return stream


@pytest.fixture
def script(tmp_path):
    fake = ScriptTriton()
    client = _app(tmp_path, fake)
    yield client, fake
    client.__exit__(None, None, None)


def _answer(script, route: str, steps: list[FakeResult], **body) -> tuple[dict, dict]:
    """The whole answer (parsed by the official client's model too) and what was sent."""
    api, fake = script
    fake.steps = steps
    response = api.post(route, json={"model": "chat", "max_tokens": 4, **body})
    assert response.status_code == 200, response.text
    answer = response.json()
    if route == CHAT_ROUTE:
        ChatCompletion.model_validate(answer)
    else:
        _official_completion(answer)
    return answer, fake.streams[-1].sent()


def _chunks(script, route: str, steps: list[FakeResult], **body) -> list[dict]:
    api, fake = script
    fake.steps = steps
    body = {"model": "chat", "max_tokens": 4, "stream": True, **body}
    response = api.post(route, json=body)
    assert response.status_code == 200, response.text
    frames = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(frame) for frame in frames[:-1]]
    for chunk in chunks:
        if route == CHAT_ROUTE:
            ChatCompletionChunk.model_validate(chunk)
        else:
            _official_completion(chunk)
    return chunks


def _official_completion(payload: dict) -> None:
    """openai.types.Completion validates it, but for the two nulls the legacy API itself
    sends where that type says otherwise (the client does not validate answers, so it
    reads them): finish_reason in a stream's chunks before the last, and the first echoed
    prompt token's logprob and top logprobs (nothing predicts it)."""
    choices = []
    for choice in payload["choices"]:
        choice = {**choice, "finish_reason": choice["finish_reason"] or "stop"}
        logprobs = choice["logprobs"]
        if logprobs is not None:
            choice["logprobs"] = {
                **logprobs,
                "token_logprobs": [v or 0.0 for v in logprobs["token_logprobs"]],
                "top_logprobs": [v or {} for v in logprobs["top_logprobs"]],
            }
        choices.append(choice)
    Completion.model_validate({**payload, "choices": choices})


CHAT_ROUTE, TEXT_ROUTE = "/v1/chat/completions", "/v1/completions"
USER_HI = [{"role": "user", "content": "hi"}]
# Two choices, interleaved as the model answers them; choice 1 finishes first.
TWO = [
    step("", 0),
    step("A", 1, index=0),
    step("X", 1, index=1),
    step("Y", 2, index=1),
    step("", 2, "stop", index=1),
    step("B", 2, index=0),
    step("!", 3, "length", index=0),
]


def _usage(prompt: int, completion: int) -> dict:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def test_n_choices_whole(script):
    chat, sent = _answer(script, CHAT_ROUTE, TWO, messages=USER_HI, n=2)
    assert sent["N"] == [2]
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in chat["choices"]] == [
        (0, "AB!", "length"),
        (1, "XY", "stop"),
    ]
    assert chat["usage"] == _usage(5, 5)  # the prompt once, both choices' tokens
    text, _ = _answer(script, TEXT_ROUTE, TWO, prompt="hi", n=2)
    assert [c["text"] for c in text["choices"]] == ["AB!", "XY"]
    assert text["usage"] == _usage(5, 5)


def test_n_choices_stream(script):
    chunks = _chunks(
        script, CHAT_ROUTE, TWO, messages=USER_HI, n=2, stream_options={"include_usage": True}
    )
    seen = [
        (c["index"], c["delta"], c["finish_reason"]) for chunk in chunks for c in chunk["choices"]
    ]
    role = {"role": "assistant", "content": ""}
    assert seen == [
        (0, role, None),
        (1, role, None),  # every choice's role first
        (0, {"content": "A"}, None),
        (1, {"content": "X"}, None),
        (1, {"content": "Y"}, None),
        (1, {}, "stop"),
        (0, {"content": "B"}, None),
        (0, {"content": "!"}, None),
        (0, {}, "length"),
    ]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == _usage(5, 5)
    text = _chunks(script, TEXT_ROUTE, TWO, prompt="hi", n=2)
    assert [(c["choices"][0]["index"], c["choices"][0]["text"]) for c in text] == [
        (0, "A"),
        (1, "X"),
        (1, "Y"),
        (1, ""),
        (0, "B"),
        (0, "!"),
    ]


def test_the_token_quota_reserves_every_choice(tmp_path):
    """The reservation is the most the call can use: the prompt once and n times
    max_tokens; what is settled is the prompt and every choice's tokens."""
    reserved = []

    class Quota:
        async def reserve(self, principal, tokens):
            reserved.append(tokens)
            return Reservation(subject="k", day_key="d", reserved=tokens)

        async def settle(self, reservation):
            reserved.append(reservation.used)

    fake = ScriptTriton()
    fake.steps = TWO
    service = GenerationService(
        Catalog.load(write_cards(tmp_path / "repo", WITH_CHAT)),
        TritonClient(TritonSettings(), fake),
        Quota(),  # type: ignore[arg-type]
        GenerationSettings(),
        Metrics(),
    )
    body = ChatCompletionRequest.model_validate(
        {"model": "chat", "messages": USER_HI, "n": 2, "max_tokens": 4}
    )

    async def run():
        g = await service.chat(body, None, "rid-1")  # type: ignore[arg-type]
        return await openai_shapes.chat_completion(g)

    answer = asyncio.run(run())
    assert reserved == [5 + 2 * 4, 5 + 5]
    assert answer.usage.completion_tokens == 5


# Greedy logprobs: the chosen token and one alternative each.
HI = entry("Hi", -0.25, ("Hi", -0.25), ("Hey", -1.5))
BANG = entry("!", -0.5, ("!", -0.5), (".", -1.0))
WITH_LOGPROBS = [
    step("", 0),
    step("Hi", 1, logprobs=[HI]),
    step("!", 2, "stop", logprobs=[BANG]),
]


def _chat_entry(e: dict) -> dict:
    top = [
        {"token": t["token"], "logprob": t["logprob"], "bytes": t["bytes"]}
        for t in e["top_logprobs"]
    ]
    return {"token": e["token"], "logprob": e["logprob"], "bytes": e["bytes"], "top_logprobs": top}


def test_chat_logprobs(script):
    body = {"messages": USER_HI, "logprobs": True, "top_logprobs": 2}
    chat, sent = _answer(script, CHAT_ROUTE, WITH_LOGPROBS, **body)
    assert sent["LOGPROBS"] == [2] and "PROMPT_LOGPROBS" not in sent
    assert chat["choices"][0]["logprobs"] == {
        "content": [_chat_entry(HI), _chat_entry(BANG)],
        "refusal": None,
    }
    chunks = _chunks(script, CHAT_ROUTE, WITH_LOGPROBS, **body)
    per_chunk = [c["choices"][0]["logprobs"] for c in chunks]
    assert per_chunk == [
        None,  # the role
        {"content": [_chat_entry(HI)], "refusal": None},
        {"content": [_chat_entry(BANG)], "refusal": None},
        None,  # the finish
    ]


def test_no_logprobs_unless_asked(script):
    chat, sent = _answer(script, CHAT_ROUTE, WITH_LOGPROBS, messages=USER_HI)
    assert "LOGPROBS" not in sent and chat["choices"][0]["logprobs"] is None


def test_completion_logprobs_and_the_legacy_shape(script):
    text, sent = _answer(script, TEXT_ROUTE, WITH_LOGPROBS, prompt="hi", logprobs=1)
    assert sent["LOGPROBS"] == [1] and "PROMPT_LOGPROBS" not in sent
    assert text["choices"][0]["text"] == "Hi!"
    assert text["choices"][0]["logprobs"] == {
        "tokens": ["Hi", "!"],
        "token_logprobs": [-0.25, -0.5],
        "top_logprobs": [{"Hi": -0.25, "Hey": -1.5}, {"!": -0.5, ".": -1.0}],
        "text_offset": [0, 2],  # into the returned text
    }


def test_the_legacy_top_logprobs_always_hold_the_chosen_token(script):
    sampled = entry("Yo", -3.0, ("Hi", -0.25))  # sampled outside the top one
    steps = [step("", 0), step("Yo", 1, "stop", logprobs=[sampled])]
    text, _ = _answer(script, TEXT_ROUTE, steps, prompt="hi", logprobs=1)
    assert text["choices"][0]["logprobs"]["top_logprobs"] == [{"Hi": -0.25, "Yo": -3.0}]


# "hé": "h", then "é" as two byte-level tokens (each alone decodes to U+FFFD).
PROMPT_ENTRIES = [
    entry("h", None),
    entry("\ufffd", -2.0, ("\ufffd", -2.0), raw=b"\xc3"),
    entry("\ufffd", -0.1, ("\ufffd", -0.1), raw=b"\xa9"),
]
ECHO = [
    step("", 0, prompt=3, logprobs=PROMPT_ENTRIES),
    step(" o", 1, prompt=3, logprobs=[entry(" o", -0.5, (" o", -0.5))]),
    step("k", 2, "length", prompt=3, logprobs=[entry("k", -0.25, ("k", -0.25))]),
]


def test_echo_with_logprobs_offsets_into_the_echoed_text(script):
    api, fake = script
    fake.steps = ECHO
    response = api.post(
        TEXT_ROUTE,
        json={"model": "chat", "prompt": "hé", "max_tokens": 2, "echo": True, "logprobs": 1},
    )
    assert response.status_code == 200, response.text
    sent = fake.streams[-1].sent()
    assert sent["PROMPT"] == ["hé"] and sent["PROMPT_LOGPROBS"] == [1]
    choice = response.json()["choices"][0]
    assert choice["text"] == "hé ok"
    assert choice["logprobs"] == {
        "tokens": ["h", "\ufffd", "\ufffd", " o", "k"],
        "token_logprobs": [None, -2.0, -0.1, -0.5, -0.25],
        "top_logprobs": [None, {"\ufffd": -2.0}, {"\ufffd": -0.1}, {" o": -0.5}, {"k": -0.25}],
        # "é" starts at 1 (both its bytes), the generated text at 2: characters, not bytes.
        "text_offset": [0, 1, 1, 2, 4],
    }
    # The official client takes it (the legacy API sends null for the first token too;
    # its type says float, and the client does not validate answers).
    parsed = _official(api).completions.create(
        model="chat", prompt="hé", max_tokens=2, echo=True, logprobs=1
    )
    logprobs = parsed.choices[0].logprobs
    assert logprobs is not None and logprobs.text_offset == [0, 1, 1, 2, 4]


def test_echo_streams_the_prompt_first(script):
    chunks = _chunks(script, TEXT_ROUTE, ECHO, prompt="hé", max_tokens=2, echo=True, logprobs=1)
    texts = [c["choices"][0]["text"] for c in chunks]
    assert texts == ["hé", " o", "k"]
    offsets = [c["choices"][0]["logprobs"]["text_offset"] for c in chunks]
    assert offsets == [[0, 1, 1], [2], [4]]


def test_echo_of_token_ids_asks_for_the_prompt_entries_to_join_its_text(script):
    steps = [step("", 0, prompt=3, logprobs=PROMPT_ENTRIES), step("!", 1, "stop", prompt=3)]
    text, sent = _answer(script, TEXT_ROUTE, steps, prompt=[104, 195, 169], echo=True)
    assert sent["PROMPT_IDS"] == [104, 195, 169] and "PROMPT" not in sent
    assert sent["PROMPT_LOGPROBS"] == [0]  # not shown: only for the text
    assert text["choices"][0] == {
        "index": 0,
        "text": "hé!",
        "finish_reason": "stop",
        "logprobs": None,
    }


def test_scoring_a_prompt_generates_nothing(script):
    steps = [step("", 0, prompt=3, logprobs=PROMPT_ENTRIES), step("", 0, "length", prompt=3)]
    body = {"prompt": "hé", "max_tokens": 0, "echo": True, "logprobs": 0}
    text, sent = _answer(script, TEXT_ROUTE, steps, **body)
    assert sent["MAX_TOKENS"] == [0]
    choice = text["choices"][0]
    assert (choice["text"], choice["finish_reason"]) == ("hé", "length")
    assert choice["logprobs"]["token_logprobs"] == [None, -2.0, -0.1]
    assert text["usage"] == _usage(3, 0)


CALLS = [
    {
        "id": "call_" + "0" * 24,
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
    },
    {"id": "call_" + "1" * 24, "type": "function", "function": {"name": "time", "arguments": "{}"}},
]
TOOLS = [
    {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
    for n in ("weather", "time")
]
CALLED = [step("", 0), step("", 5, "tool_calls", tool_calls=CALLS)]


def test_tool_calls_whole(script):
    chat, sent = _answer(script, CHAT_ROUTE, CALLED, messages=USER_HI, tools=TOOLS)
    assert [t["function"]["name"] for t in json.loads(sent["TOOLS"][0])] == ["weather", "time"]
    assert json.loads(sent["TOOL_CHOICE"][0]) == "auto"
    choice = chat["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": CALLS,
        "refusal": None,
    }
    # Text beside the calls stays the content.
    said = [step("", 0), step("Let me look.", 3), step("", 8, "tool_calls", tool_calls=CALLS[:1])]
    chat, _ = _answer(script, CHAT_ROUTE, said, messages=USER_HI, tools=TOOLS)
    assert chat["choices"][0]["message"]["content"] == "Let me look."


def test_text_before_a_call_is_the_same_whole_and_streamed(script):
    """The stream sends the text before a call as it comes (nobody knows yet that a call
    follows), so the whole answer keeps it as it came too, whitespace and all."""
    said = [
        step("", 0),
        step(" Let me look.", 3),
        step("\n\n", 4),
        step("", 8, "tool_calls", tool_calls=CALLS[:1]),
    ]
    chat, _ = _answer(script, CHAT_ROUTE, said, messages=USER_HI, tools=TOOLS)
    whole = chat["choices"][0]["message"]
    assert (whole["content"], whole["tool_calls"]) == (" Let me look.\n\n", CALLS[:1])
    chunks = _chunks(script, CHAT_ROUTE, said, messages=USER_HI, tools=TOOLS)
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert streamed == whole["content"]


def test_tool_calls_stream_then_the_finish(script):
    chunks = _chunks(script, CHAT_ROUTE, CALLED, messages=USER_HI, tools=TOOLS)
    deltas = [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks]
    assert deltas == [
        ({"role": "assistant", "content": ""}, None),
        ({"tool_calls": [{"index": 0, **CALLS[0]}]}, None),
        ({"tool_calls": [{"index": 1, **CALLS[1]}]}, None),
        ({}, "tool_calls"),
    ]


def test_the_official_stream_accumulator_rebuilds_the_whole_answer(script):
    """openai's ChatCompletionStreamState folds our chunks into what the whole answer is:
    two choices, one with logprobs and text, one with tool calls."""
    steps = [
        step("", 0),
        step("Hi", 1, index=0, logprobs=[HI]),
        step("", 4, "tool_calls", index=1, tool_calls=CALLS),
        step("!", 2, "stop", index=0, logprobs=[BANG]),
    ]
    body = {"messages": USER_HI, "n": 2, "tools": TOOLS, "logprobs": True, "top_logprobs": 2}
    whole, _ = _answer(script, CHAT_ROUTE, steps, **body)
    state = ChatCompletionStreamState()
    for chunk in _chunks(script, CHAT_ROUTE, steps, **body):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    final = state.get_final_completion()
    for got, want in zip(final.choices, whole["choices"], strict=True):
        assert (got.index, got.finish_reason) == (want["index"], want["finish_reason"])
        # The role chunk's "" starts every choice's content (as OpenAI's streams do).
        assert (got.message.content or None) == want["message"]["content"]
        calls = [
            {
                "id": c.id,
                "type": c.type,
                "function": c.function.model_dump(include={"name", "arguments"}),
            }
            for c in got.message.tool_calls or ()
        ]
        assert calls == want["message"].get("tool_calls", [])
    logprobs = final.choices[0].logprobs
    assert logprobs is not None
    assert [t.model_dump() for t in logprobs.content or ()] == whole["choices"][0]["logprobs"][
        "content"
    ]


def test_the_official_client_reads_our_answers(script):
    api, fake = script
    fake.steps = TWO
    client = _official(api)
    hi: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    chat = client.chat.completions.create(model="chat", messages=hi, n=2, max_tokens=4)
    assert [c.message.content for c in chat.choices] == ["AB!", "XY"]
    fake.steps = TWO
    stream = client.chat.completions.create(
        model="chat", messages=hi, n=2, max_tokens=4, stream=True
    )
    texts = ["", ""]
    for chunk in stream:
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
    assert texts == ["AB!", "XY"]


def _official(api) -> OpenAI:
    """The official client over the app itself (the test client is its HTTP client)."""
    return OpenAI(
        api_key=ADMIN_KEY, base_url="http://testserver/v1", http_client=api, max_retries=0
    )
