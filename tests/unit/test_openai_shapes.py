"""The OpenAI wire shapes, byte for byte (frontend/services/openai_shapes.py): the whole
answers and the SSE frames of both generation routes, with and without usage, over a fake
stream whose steps have text, no text (held back) and a final with text. An OpenAI
client parses these; a change here is an API change."""

from __future__ import annotations

import re

import pytest

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
        '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},'
        f'"finish_reason":"length","logprobs":null}}],"usage":{USAGE}}}'
    )


def test_completion_whole(api):
    assert _post(api, "/v1/completions", prompt="hi") == (
        '{"id":"cmpl-rid-1","object":"text_completion","created":0,"model":"chat",'
        '"choices":[{"index":0,"text":"Hello!","finish_reason":"length","logprobs":null}],'
        f'"usage":{USAGE}}}'
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
