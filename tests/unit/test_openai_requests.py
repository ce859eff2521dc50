"""OpenAI's request side (issue 14, unit: schemas, and the real app over a fake Triton):
every field of OpenAI's reference is a schema field; every neutral value passes; what
real clients send (the official client's and LangChain's own serialisation, captured)
validates; each value this model cannot honour is 400 naming its parameter; the error
envelope's type and param (the model's own refusals' too); 422 kept off the OpenAI routes
(answers and OpenAPI); token counts within Triton's INT32; embeddings from token ids;
the models' created and owned_by."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from openai.types import completion_create_params, embedding_create_params
from openai.types.chat import completion_create_params as chat_create_params
from pydantic import BaseModel
from tokenizers import Tokenizer, models, pre_tokenizers
from tritonclient.utils import InferenceServerException

from frontend import container
from frontend.schemas.chat import (
    MAX_COMPLETION_TOKENS,
    MAX_LOGIT_BIAS,
    MAX_STOP_CHARS,
    ChatCompletionRequest,
    CompletionRequest,
)
from frontend.schemas.common import Refused
from frontend.schemas.embeddings import EmbeddingRequest
from frontend.services import token_ids
from frontend.settings import GenerationSettings

from .test_api_claims import CHAT, COMPLETIONS, USER, GenerationTriton, _tensors, post, start
from .test_frontend_errors import ADMIN_KEY, assert_envelope

EMBEDDINGS = "/v1/embeddings"
PREDICT = "/v1/models/intent/predict"
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


class EmbedTriton(GenerationTriton):
    """Also keeps the texts each unary call carried (what the model was asked to embed)."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[list[str]] = []

    async def infer(self, model, inputs, model_version="", outputs=(), **kwargs):
        sent = _tensors(inputs)
        if "TEXT" in sent:
            self.texts.append([t.decode() for t in sent["TEXT"].reshape(-1)])
        return await super().infer(model, inputs, model_version, outputs, **kwargs)


# A word-level tokenizer of a few words: [CLS] and [SEP] are special (dropped on decode).
VOCAB = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "the": 3, "food": 4, "was": 5, "good": 6}


def write_tokenizer(version_dir: Path) -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["[CLS]", "[SEP]"])
    tokenizer.save(str(version_dir / "tokenizer.json"))
    return tokenizer


@pytest.fixture
def fake() -> EmbedTriton:
    return EmbedTriton()


@pytest.fixture
def api(tmp_path, fake) -> Iterator[Any]:
    client = start(tmp_path, fake)
    write_tokenizer(tmp_path / "repo" / "embed" / "1")
    yield client
    client.__exit__(None, None, None)


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "chat", "messages": USER, **fields})


def completion(**fields: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({"model": "chat", "prompt": "hi", **fields})


# --- every reference field is a field ------------------------------------------------------


def _reference(*typed_dicts: type) -> set[str]:
    keys: set[str] = set()
    for typed in typed_dicts:
        keys |= set(getattr(typed, "__required_keys__", ()))
        keys |= set(getattr(typed, "__optional_keys__", ()))
    return keys


def _accepted(schema: type[BaseModel]) -> set[str]:
    return {info.alias or name for name, info in schema.model_fields.items()}


@pytest.mark.parametrize(
    ("schema", "reference"),
    [
        (
            ChatCompletionRequest,
            _reference(
                chat_create_params.CompletionCreateParamsStreaming,
                chat_create_params.CompletionCreateParamsNonStreaming,
            ),
        ),
        (
            CompletionRequest,
            _reference(
                completion_create_params.CompletionCreateParamsStreaming,
                completion_create_params.CompletionCreateParamsNonStreaming,
            ),
        ),
        (EmbeddingRequest, _reference(embedding_create_params.EmbeddingCreateParams)),
    ],
    ids=["chat", "completions", "embeddings"],
)
def test_every_field_of_openais_reference_is_a_schema_field(schema, reference):
    assert len(reference) > 3  # the package's types were read
    assert reference - _accepted(schema) == set()


def test_the_extensions_are_fields_of_both_generation_routes():
    for schema in (ChatCompletionRequest, CompletionRequest):
        assert {"top_k", "repetition_penalty", "min_tokens", "ignore_eos"} <= _accepted(schema)


# --- neutral values pass, and mean what leaving them out means -------------------------------

NEUTRAL_SAMPLING: dict[str, Any] = {
    "temperature": None,
    "top_p": None,
    "n": 1,
    "stream": False,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "repetition_penalty": None,
    "logit_bias": {},
    "stop": [],
    "seed": None,
    "min_tokens": 0,
    "ignore_eos": False,
    "user": None,
}
NEUTRAL_CHAT: dict[str, Any] = {
    **NEUTRAL_SAMPLING,
    "logprobs": False,
    "top_logprobs": None,
    "tools": [],
    "tool_choice": "none",
    "parallel_tool_calls": True,
    "functions": [],
    "function_call": "none",
    "modalities": ["text"],
    "audio": None,
    "response_format": {"type": "text"},
    "reasoning_effort": None,
    "verbosity": "medium",
    "web_search_options": None,
    "moderation": None,
    "store": False,
    "service_tier": "auto",
    "metadata": {"purpose": "test"},
    "prediction": {"type": "content", "content": "hi"},
    "prompt_cache_key": "k",
    "prompt_cache_retention": "24h",
    "prompt_cache_options": {"mode": "implicit", "ttl": "30m"},
    "safety_identifier": "someone",
    "max_completion_tokens": None,
    "stream_options": None,
}
NEUTRAL_COMPLETION: dict[str, Any] = {
    **NEUTRAL_SAMPLING,
    "logprobs": None,
    "echo": False,
    "best_of": 1,
    "suffix": "",
    "stream_options": None,
}


def _engine_view(body: ChatCompletionRequest | CompletionRequest) -> dict[str, Any]:
    """What the service reads to build the model's request."""
    view = {
        name: getattr(body, name)
        for name in (
            "temperature",
            "top_p",
            "top_k",
            "n",
            "stream",
            "presence_penalty",
            "frequency_penalty",
            "repetition_penalty",
            "min_tokens",
            "ignore_eos",
            "seed",
        )
    }
    view.update(
        stop=body.stop_sequences(),
        bias=body.logit_bias_pairs(),
        usage=body.include_usage(),
    )
    if isinstance(body, ChatCompletionRequest):
        view.update(
            logprobs=body.logprobs_count(),
            format=body.response_format_json(),
            tools=body.tools_json(),
            choice=body.tool_choice_json(),
            parallel=body.parallel_tool_calls,
            messages=body.engine_messages(),
        )
    else:
        view.update(logprobs=body.logprobs, echo=body.echo, prompt=body.prompt_input())
    return view


def test_neutral_values_pass_and_mean_the_defaults():
    assert _engine_view(chat(**NEUTRAL_CHAT)) == _engine_view(chat())
    assert _engine_view(completion(**NEUTRAL_COMPLETION)) == _engine_view(completion())
    plain = _engine_view(chat())
    assert (plain["temperature"], plain["top_p"], plain["n"], plain["logprobs"]) == (1, 1, 1, None)
    assert (plain["bias"], plain["stop"], plain["tools"], plain["format"]) == ((), (), None, None)


@pytest.mark.parametrize("route", [CHAT, COMPLETIONS])
def test_neutral_values_pass_through_the_app(api, fake, route):
    neutral = NEUTRAL_CHAT if route == CHAT else NEUTRAL_COMPLETION
    response = post(api, route, **neutral)
    assert response.status_code == 200, response.text
    assert fake.sent("TEMPERATURE") == 1.0 and fake.sent("MAX_TOKENS") > 0


def test_engine_messages_are_the_normalised_form():
    body = chat(
        messages=[
            {
                "role": "developer",
                "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
            },
            {"role": "user", "content": "Weather?", "name": "ann"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "content": [{"type": "text", "text": "sun"}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "Sunny."}]},
        ],
        tools=[TOOL],
    )
    assert body.engine_messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?", "name": "ann"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "content": "sun", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "Sunny."},
    ]
    # The prompt's characters: every text, the call, and the tools the template writes.
    texts = len("Be brief.") + len("Weather?") + len("f{}") + len("sun") + len("Sunny.")
    assert body.prompt_chars() == texts + len(body.tools_json() or "")
    assert json.loads(body.tools_json() or "") == [TOOL]
    assert json.loads(body.tool_choice_json() or "") == "auto"  # OpenAI's default with tools


def test_the_request_helpers():
    assert chat(logprobs=True).logprobs_count() == 0
    assert chat(logprobs=True, top_logprobs=3).logprobs_count() == 3
    assert chat(logit_bias={"7": -100, "2": 5.5}).logit_bias_pairs() == ((2, 5.5), (7, -100.0))
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    formatted = chat(
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    )
    assert json.loads(formatted.response_format_json() or "") == {
        "type": "json_schema",
        "json_schema": {"name": "a", "schema": schema},
    }
    named = {"type": "function", "function": {"name": "f"}}
    assert json.loads(chat(tools=[TOOL], tool_choice=named).tool_choice_json() or "") == named
    assert chat(tool_choice="auto").tool_choice_json() is None  # no tools: nothing to choose
    assert completion(prompt=[[5, 6]]).prompt_input() == [5, 6]
    assert completion(prompt=["hi"]).prompt_input() == "hi"
    assert completion(prompt=[5, 6]).prompt_text() is None
    assert completion(max_tokens=0, echo=True, logprobs=0).max_tokens == 0  # scoring a prompt
    assert chat(seed=2**64 + 5).seed == 5


# --- what real clients send validates --------------------------------------------------------


class Capture:
    """An httpx transport that keeps every request body and answers like the server."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append((request.url.path, body))
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        if request.url.path.endswith("/embeddings"):
            given = body["input"]
            n = 1 if isinstance(given, str) or isinstance(given[0], int) else len(given)
            vector = base64.b64encode(np.zeros(4, "<f4").tobytes()).decode()
            data = [{"object": "embedding", "index": i, "embedding": vector} for i in range(n)]
            listed = {"object": "list", "data": data, "model": "embed", "usage": usage}
            return httpx.Response(200, json=listed)
        chatting = request.url.path.endswith("/chat/completions")
        text = {"message": {"role": "assistant", "content": "hi"}} if chatting else {"text": "hi"}
        choice = {"index": 0, "finish_reason": "stop", "logprobs": None, **text}
        answer: dict[str, Any] = {
            "id": "x",
            "object": "chat.completion" if chatting else "text_completion",
            "created": 0,
            "model": "chat",
            "choices": [choice],
            "usage": usage,
        }
        if not body.get("stream"):
            return httpx.Response(200, json=answer)
        delta = {"index": 0, "delta": text["message"] if chatting else {}, "finish_reason": "stop"}
        piece = delta if chatting else choice
        chunk = {**answer, "object": "chat.completion.chunk", "choices": [piece]}
        sse = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
        return httpx.Response(200, content=sse, headers={"content-type": "text/event-stream"})

    def validate_all(self) -> None:
        schemas: dict[str, type[BaseModel]] = {
            "/v1/chat/completions": ChatCompletionRequest,
            "/v1/completions": CompletionRequest,
            "/v1/embeddings": EmbeddingRequest,
        }
        assert self.bodies
        for path, body in self.bodies:
            try:
                schemas[path].model_validate(body)
            except Refused as refused:  # pragma: no cover - the message says what failed
                raise AssertionError(f"{path} {body}: {refused}") from None


@pytest.fixture
def capture() -> Capture:
    return Capture()


def test_the_official_clients_requests_validate(capture):
    client = openai.OpenAI(
        base_url="http://gateway/v1",
        api_key="k",
        max_retries=0,
        # The client's own transport type is httpx2's; an httpx client serves it the same.
        http_client=httpx.Client(transport=httpx.MockTransport(capture)),  # type: ignore[arg-type]
    )
    user: list[Any] = [{"role": "user", "content": "hi"}]
    conversation: list[Any] = [
        {"role": "system", "content": "You help."},
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}], "name": "a"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    client.chat.completions.create(model="chat", messages=user)
    client.chat.completions.create(  # type: ignore[call-overload]  # plain dicts for the params
        model="chat",
        messages=conversation,
        max_tokens=5,
        max_completion_tokens=5,
        temperature=0,
        top_p=0.9,
        n=2,
        stop=["\n", "END"],
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={"42": -100},
        logprobs=True,
        top_logprobs=5,
        user="u",
        tools=[TOOL],
        tool_choice={"type": "function", "function": {"name": "f"}},
        parallel_tool_calls=False,
        response_format={"type": "json_object"},
        metadata={"k": "v"},
        store=False,
        service_tier="default",
        safety_identifier="s",
        prompt_cache_key="p",
        extra_body={"top_k": 5, "repetition_penalty": 1.1, "min_tokens": 1, "ignore_eos": False},
    )
    for _ in client.chat.completions.create(
        model="chat", messages=user, stream=True, stream_options={"include_usage": True}
    ):
        pass

    class Answer(BaseModel):
        city: str

    with contextlib.suppress(Exception):  # the canned answer is not an Answer: sent is what counts
        client.chat.completions.parse(model="chat", messages=user, response_format=Answer)
    client.completions.create(model="chat", prompt="Once")
    client.completions.create(
        model="chat",
        prompt=[[1, 2, 3]],
        max_tokens=0,
        echo=True,
        logprobs=1,
        temperature=0.5,
        n=1,
        best_of=1,
        stop="\n",
        seed=1,
        suffix=None,
        logit_bias={"3": 1},
        presence_penalty=0,
        frequency_penalty=0,
        user="u",
    )
    client.embeddings.create(model="embed", input="hello")  # base64 by default
    client.embeddings.create(model="embed", input=[[1, 2], [3]], encoding_format="float")
    client.embeddings.create(model="embed", input=[1, 2, 3], dimensions=4, user="u")
    assert len(capture.bodies) == 9
    assert capture.bodies[-3][1]["encoding_format"] == "base64"  # the client's default
    assert any(b.get("response_format", {}).get("type") == "json_schema" for _, b in capture.bodies)
    capture.validate_all()


def test_langchains_requests_validate(capture, monkeypatch):
    chat_models = pytest.importorskip("langchain_openai")
    messages = pytest.importorskip("langchain_core.messages")
    tools = pytest.importorskip("langchain_core.tools")
    http = httpx.Client(transport=httpx.MockTransport(capture))
    common = {"base_url": "http://gateway/v1", "api_key": "k", "max_retries": 0}

    @tools.tool
    def get_weather(city: str) -> str:
        """The weather of a city."""
        return city

    class Pet(BaseModel):
        name: str

    llm = chat_models.ChatOpenAI(model="chat", http_client=http, **common)
    llm.invoke("hi")
    list(llm.stream("hi"))
    usage = chat_models.ChatOpenAI(model="chat", http_client=http, stream_usage=True, **common)
    list(usage.stream("hi"))  # stream_options: include_usage
    tuned = chat_models.ChatOpenAI(
        model="chat",
        http_client=http,
        temperature=0,
        max_tokens=8,
        n=1,
        top_p=0.5,
        seed=3,
        stop=["\n"],
        logprobs=True,
        top_logprobs=2,
        frequency_penalty=0.1,
        presence_penalty=0.1,
        **common,
    )
    tuned.invoke(
        [
            messages.SystemMessage("You help."),
            messages.HumanMessage("Weather?"),
            messages.AIMessage(
                "", tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}, "id": "c1"}]
            ),
            messages.ToolMessage("sunny", tool_call_id="c1"),
        ]
    )
    llm.bind_tools([get_weather]).invoke("Weather in Oslo?")
    llm.bind_tools([get_weather], tool_choice="get_weather", parallel_tool_calls=False).invoke("x")
    for method in ("json_schema", "function_calling", "json_mode"):
        with contextlib.suppress(Exception):  # the canned "hi" is not a Pet
            llm.with_structured_output(Pet, method=method).invoke("A pet, as JSON")
    chat_models.OpenAI(model="chat", http_client=http, **common).invoke("Once")
    # Embeddings: LangChain's advice for OpenAI-compatible servers (texts) ...
    texts = chat_models.OpenAIEmbeddings(
        model="embed", http_client=http, check_embedding_ctx_length=False, **common
    )
    texts.embed_documents(["a", "b"])
    texts.embed_query("a")

    # ... and its default, which sends each text as tiktoken's ids (tiktoken's encoding is
    # downloaded: a stand-in gives ids of the same shape offline).
    class Encoding:
        def encode_ordinary(self, text: str) -> list[int]:
            return [ord(c) % 7 for c in text]

        encode = encode_ordinary

    monkeypatch.setattr("tiktoken.encoding_for_model", lambda name: Encoding())
    chat_models.OpenAIEmbeddings(model="embed", http_client=http, **common).embed_documents(
        ["ab", "c"]
    )
    assert isinstance(capture.bodies[-1][1]["input"][0], list)  # token ids were sent
    paths = [path for path, _ in capture.bodies]
    assert paths.count("/v1/chat/completions") >= 8 and "/v1/completions" in paths
    assert any("stream_options" in b for _, b in capture.bodies)
    assert any(b.get("tool_choice") for _, b in capture.bodies)
    capture.validate_all()


# --- 400 naming the parameter -----------------------------------------------------------------

ASSISTANT_CALL = {"role": "assistant", "content": None, "tool_calls": [CALL]}
REFUSED: list[tuple[str, dict[str, Any], str]] = [
    (CHAT, {"messages": [{"role": "user", "content": [IMAGE]}]}, "messages.0.content"),
    (
        CHAT,
        {
            "messages": [
                *USER,
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}
                    ],
                },
            ]
        },
        "messages.1.content",
    ),
    (
        CHAT,
        {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]},
        "messages.0.content",
    ),
    (CHAT, {"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages.0.role"),
    (CHAT, {"messages": [*USER, {"role": "assistant"}]}, "messages.1.content"),
    (CHAT, {"messages": [*USER, {"role": "tool", "content": "x"}]}, "messages.1.tool_call_id"),
    (CHAT, {"messages": [{"role": "robot", "content": "x"}]}, "messages.0"),
    (
        CHAT,
        {
            "messages": [
                {
                    **ASSISTANT_CALL,
                    "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "{oops"}}],
                }
            ]
        },
        "messages.0.tool_calls.0.function.arguments",
    ),
    (CHAT, {"messages": []}, "messages"),
    (CHAT, {"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    (CHAT, {"modalities": ["text", "audio"]}, "modalities"),
    (CHAT, {"reasoning_effort": "low"}, "reasoning_effort"),
    (CHAT, {"store": True}, "store"),
    (CHAT, {"verbosity": "high"}, "verbosity"),
    (CHAT, {"service_tier": "flex"}, "service_tier"),
    (CHAT, {"web_search_options": {}}, "web_search_options"),
    (CHAT, {"moderation": {"model": "m"}}, "moderation"),
    (CHAT, {"functions": [{"name": "f"}]}, "functions"),
    (CHAT, {"function_call": {"name": "f"}}, "function_call"),
    (CHAT, {"n": 9}, "n"),
    (CHAT, {"n": 0}, "n"),
    (CHAT, {"top_logprobs": 2}, "top_logprobs"),
    (CHAT, {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    (CHAT, {"presence_penalty": 2.5}, "presence_penalty"),
    (CHAT, {"frequency_penalty": -3}, "frequency_penalty"),
    (CHAT, {"repetition_penalty": 0}, "repetition_penalty"),
    (CHAT, {"logit_bias": {"5": 101}}, "logit_bias.5"),
    (CHAT, {"logit_bias": {"five": 1}}, "logit_bias.five"),
    (CHAT, {"logit_bias": {str(i): 1 for i in range(MAX_LOGIT_BIAS + 1)}}, "logit_bias"),
    # A token id is written one way: no leading zeros (two keys would name one id), ASCII
    # digits only, nothing around them.
    (CHAT, {"logit_bias": {"012": 1}}, "logit_bias.012"),
    (CHAT, {"logit_bias": {"12": 1, "012": 2}}, "logit_bias.012"),
    (COMPLETIONS, {"logit_bias": {"00": 1}}, "logit_bias.00"),
    (COMPLETIONS, {"logit_bias": {"\u0661\u0662": 1}}, "logit_bias.\u0661\u0662"),
    (CHAT, {"logit_bias": {"12\n": 1}}, "logit_bias.12\n"),
    (CHAT, {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    (CHAT, {"stop": "s" * (MAX_STOP_CHARS + 1)}, "stop"),
    # (A list item's error names the field: the union's first member, a text, is what
    # pydantic reports first.)
    (COMPLETIONS, {"stop": ["ok", "s" * (MAX_STOP_CHARS + 1)]}, "stop"),
    (CHAT, {"stream_options": {"include_usage": True}}, "stream_options"),
    (CHAT, {"min_tokens": 9, "max_tokens": 8}, "min_tokens"),
    (CHAT, {"min_tokens": 9, "max_completion_tokens": 8}, "min_tokens"),
    (CHAT, {"tool_choice": "required"}, "tool_choice"),
    (
        CHAT,
        {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}},
        "tool_choice",
    ),
    (
        CHAT,
        {
            "tools": [TOOL],
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "auto", "tools": []},
            },
        },
        "tool_choice",
    ),
    (CHAT, {"tools": [{"type": "custom", "custom": {"name": "c"}}]}, "tools.0"),
    (CHAT, {"tools": [TOOL, TOOL]}, "tools.1.function.name"),
    (
        CHAT,
        {"tools": [{"type": "function", "function": {"name": "has space"}}]},
        "tools.0.function.name",
    ),
    (CHAT, {"response_format": {"type": "xml"}}, "response_format"),
    (CHAT, {"temperature": "hot"}, "temperature"),
    (CHAT, {"max_tokens": 0}, "max_tokens"),
    (CHAT, {"max_tokens": 2**31}, "max_tokens"),
    (CHAT, {"max_completion_tokens": 2**40}, "max_completion_tokens"),
    (COMPLETIONS, {"max_tokens": 2**63}, "max_tokens"),
    (CHAT, {"echo": True}, "echo"),  # a completions field: unknown here
    (COMPLETIONS, {"best_of": 2}, "best_of"),
    (COMPLETIONS, {"suffix": "the end"}, "suffix"),
    (COMPLETIONS, {"logprobs": 6}, "logprobs"),
    (COMPLETIONS, {"max_tokens": 0}, "max_tokens"),
    (COMPLETIONS, {"max_tokens": 0, "echo": True}, "max_tokens"),
    (COMPLETIONS, {"prompt": ["one", "two"]}, "prompt"),
    (COMPLETIONS, {"prompt": [1, -2]}, "prompt"),
    (COMPLETIONS, {"echo": "yes"}, "echo"),
    (EMBEDDINGS, {"dimensions": 3}, "dimensions"),
    (EMBEDDINGS, {"input": [[1, 2], [3, 99]]}, "input"),  # 99: past the vocabulary
    (EMBEDDINGS, {"input": [-1]}, "input"),
    (EMBEDDINGS, {"input": ["x", 1]}, "input"),
    (EMBEDDINGS, {"input": ""}, "input"),
    (EMBEDDINGS, {"input": ["ok", " "]}, "input.1"),
    (EMBEDDINGS, {"input": "x", "encoding_format": "int8"}, "encoding_format"),
]


def _body(route: str, fields: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {"model": "embed", "input": "the food"}
    if route == CHAT:
        base = {"model": "chat", "messages": USER}
    elif route == COMPLETIONS:
        base = {"model": "chat", "prompt": "hi"}
    return {**base, **fields}


@pytest.mark.parametrize(("route", "fields", "param"), REFUSED, ids=[p for *_, p in REFUSED])
def test_what_cannot_be_honoured_is_400_naming_the_parameter(api, fake, route, fields, param):
    response = api.post(route, json=_body(route, fields))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param), error
    assert error["code"] == "validation_error"
    assert error["message"].startswith(("body." + param, param)), error["message"]
    assert error["details"] and "input" not in error["details"][0]  # no value echoed
    assert fake.streams == [] and fake.calls == []  # refused before the model


@pytest.mark.parametrize(
    ("kind", "part"),
    [
        ("images", IMAGE),
        ("audio", {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}),
        ("files", {"type": "file", "file": {"file_id": "f"}}),
    ],
)
def test_media_parts_are_refused_as_what_they_are(api, kind, part):
    text = {"type": "text", "text": "look:"}
    error = assert_envelope(
        post(api, CHAT, messages=[{"role": "user", "content": [text, part]}]),
        400,
        "validation_error",
    )
    assert error["message"].endswith(f"this model does not accept {kind}"), error


def test_stop_sequences_and_logit_bias_ids_at_their_bounds_pass(api, fake):
    stops = ["s" * MAX_STOP_CHARS, "\u00e9" * MAX_STOP_CHARS]  # characters, not bytes
    response = post(api, CHAT, stop=stops, logit_bias={"0": 1, "10": 2, "999999999": -1})
    assert response.status_code == 200, response.text
    assert [s.decode() for s in fake.streams[-1].inputs["STOP"]] == stops
    bias = fake.streams[-1].inputs["LOGIT_BIAS"][0]
    assert json.loads(bias) == {"0": 1.0, "10": 2.0, "999999999": -1.0}


# --- token counts: within Triton's INT32, min_tokens within the max_tokens in effect ---------

# min_tokens past what MAX_TOKENS (INT32) holds, or past the max_tokens in effect: with
# none sent, the route's default (256 chat, 16 completions) is the one in effect.
MIN_TOKENS_REFUSED = [
    {"min_tokens": 2**63},
    {"min_tokens": 2**40},
    {"min_tokens": 2**31},
    {"min_tokens": 2**40, "max_tokens": 8},
    {"min_tokens": 5000},
    {"min_tokens": MAX_COMPLETION_TOKENS},
    {"min_tokens": GenerationSettings().default_completion_max_tokens + 1},
]


@pytest.mark.parametrize("route", [CHAT, COMPLETIONS])
@pytest.mark.parametrize("fields", MIN_TOKENS_REFUSED, ids=str)
def test_min_tokens_past_the_max_tokens_in_effect_is_400_naming_it(api, fake, route, fields):
    default = GenerationSettings().default_completion_max_tokens
    if route == CHAT and fields == {"min_tokens": default + 1}:
        # Chat's default is larger: this many is within it.
        assert post(api, route, **fields).status_code == 200
        assert fake.sent("MIN_TOKENS") == default + 1
        return
    response = post(api, route, **fields)
    assert response.status_code == 400, response.text  # never a 500, never a wrapped count
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", "min_tokens"), error
    assert "min_tokens" in error["message"]
    assert fake.streams == []  # refused before the model


@pytest.mark.parametrize("route", [CHAT, COMPLETIONS])
def test_min_tokens_up_to_the_default_max_tokens_is_sent(api, fake, route):
    settings = GenerationSettings()
    default = (
        settings.default_chat_max_tokens
        if route == CHAT
        else (settings.default_completion_max_tokens)
    )
    assert post(api, route, min_tokens=default).status_code == 200
    assert (fake.sent("MIN_TOKENS"), fake.sent("MAX_TOKENS")) == (default, default)


def test_the_token_bounds_are_int32s():
    assert MAX_COMPLETION_TOKENS == 2**31 - 1
    chat(max_tokens=MAX_COMPLETION_TOKENS, min_tokens=MAX_COMPLETION_TOKENS)  # the schema's
    for schema in (ChatCompletionRequest, CompletionRequest):
        fields = schema.model_json_schema()["properties"]
        assert fields["min_tokens"]["maximum"] == MAX_COMPLETION_TOKENS
        integer = next(b for b in fields["max_tokens"]["anyOf"] if b.get("type") == "integer")
        assert integer["maximum"] == MAX_COMPLETION_TOKENS


# --- the model's own refusals name their field ------------------------------------------------


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ("logit_bias: token 60000 is not in the vocabulary (49152 tokens)", "logit_bias"),
        (
            "messages[1].tool_call_id 'x' answers no tool call of the assistant message",
            "messages.1.tool_call_id",
        ),
        ("messages[0]: this model does not accept image content", "messages.0"),
        ("the prompt is 2000 tokens; this model takes at most 1024", None),
    ],
)
def test_a_refusal_of_the_model_is_400_naming_its_field(api, fake, message, param):
    fake.script = [InferenceServerException(f"invalid: {message}", "StatusCode.INVALID_ARGUMENT")]
    error = assert_envelope(post(api, CHAT), 400, "bad_request")
    assert (error["message"], error["param"]) == (message, param)


# --- the envelope everywhere; 422 off the OpenAI routes ------------------------------------------


def test_the_envelope_has_openais_fields_on_every_route(api):
    expected = {"message", "type", "param", "code", "request_id", "details"}
    cases = [
        (api.post(CHAT, json={"model": "chat", "messages": USER, "n": "two"}), 400, "n"),
        (api.post(CHAT, json={"model": "nope", "messages": USER}), 404, None),
        (api.post(PREDICT, json={"inputs": 5}), 422, "inputs"),
        (api.get("/v1/nothing"), 404, None),
        (
            api.post(CHAT, json={"model": "chat", "messages": USER}, headers={"X-API-Key": "x"}),
            401,
            None,
        ),
    ]
    for response, status, param in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert set(error) == expected, error
        assert error["param"] == param, error
    assert cases[4][0].json()["error"]["type"] == "authentication_error"
    assert cases[1][0].json()["error"]["type"] == "invalid_request_error"


def test_other_routes_keep_422_for_invalid_input(api, fake):
    refused = api.post(PREDICT, json={"inputs": "x", "top_k": 0})
    error = assert_envelope(refused, 422, "validation_error")
    assert error["param"] == "top_k" and error["type"] == "invalid_request_error"
    # A service's own check names its field too.
    refused = api.post(PREDICT, json={"inputs": ["ok", " "]})
    error = assert_envelope(refused, 422, "validation_error")
    assert error["param"] == "inputs.1"
    assert fake.calls == []


def test_the_openapi_documents_400_not_422_on_the_openai_routes(api):
    schema = api.get("/openapi.json").json()
    for path in (CHAT, COMPLETIONS, EMBEDDINGS):
        responses = schema["paths"][path]["post"]["responses"]
        assert "400" in responses and "422" not in responses, (path, sorted(responses))
    # Elsewhere FastAPI's 422 stays: that is what those routes answer.
    assert "422" in schema["paths"]["/v1/models/{model}/predict"]["post"]["responses"]
    # The served bounds: the chat card's (1024) for max_tokens and min_tokens alike.
    fields = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert fields["min_tokens"]["maximum"] == 1024
    integer = next(b for b in fields["max_tokens"]["anyOf"] if b.get("type") == "integer")
    assert integer["maximum"] == 1024


def test_the_official_client_raises_the_400_with_its_param(api):
    client = openai.OpenAI(
        base_url=f"{api.base_url}/v1", api_key=ADMIN_KEY, http_client=api, max_retries=0
    )
    with pytest.raises(openai.BadRequestError) as raised:
        looking: list[Any] = [{"role": "user", "content": [IMAGE]}]
        client.chat.completions.create(model="chat", messages=looking)
    assert raised.value.param == "messages.0.content"
    assert raised.value.type == "invalid_request_error" and raised.value.code == "validation_error"


# --- embeddings: token ids, base64 --------------------------------------------------------------


def test_token_ids_embed_as_the_text_they_decode_to(api, fake, tmp_path):
    tokenizer = Tokenizer.from_file(str(tmp_path / "repo" / "embed" / "1" / "tokenizer.json"))
    text = "the food was good"
    ids = tokenizer.encode(text).ids
    assert tokenizer.decode(ids) == text  # the premise: they round-trip
    uncached = {"Cache-Control": "no-cache"}  # each request reaches the model

    def embed(given: Any) -> httpx.Response:
        return api.post(EMBEDDINGS, json={"model": "embed", "input": given}, headers=uncached)

    by_text, by_ids, one = embed([text, "the food"]), embed([[1, *ids, 2], [3, 4]]), embed(ids)
    assert by_text.status_code == by_ids.status_code == one.status_code == 200, by_ids.text
    # [CLS] and [SEP] (special) are dropped: the model adds its own.
    assert fake.texts == [[text, "the food"], [text, "the food"], [text]]
    assert by_ids.json()["data"] == by_text.json()["data"]


def test_an_id_past_the_vocabulary_names_input(api, fake):
    error = assert_envelope(
        api.post(EMBEDDINGS, json={"model": "embed", "input": [3, len(VOCAB)]}),
        400,
        "validation_error",
    )
    assert error["param"] == "input" and f"0 to {len(VOCAB) - 1}" in error["message"]
    assert error["details"][0]["loc"] == ["body", "input", 1]
    assert fake.calls == []


def test_the_tokenizer_is_loaded_once_per_file(api, tmp_path):
    token_ids._tokenizer.cache_clear()
    for _ in range(3):
        assert api.post(EMBEDDINGS, json={"model": "embed", "input": [3, 4]}).status_code == 200
    info = token_ids._tokenizer.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_a_model_without_a_tokenizer_refuses_ids(api, tmp_path):
    (tmp_path / "repo" / "embed" / "1" / "tokenizer.json").unlink()
    error = assert_envelope(
        api.post(EMBEDDINGS, json={"model": "embed", "input": [3]}), 400, "validation_error"
    )
    assert error["param"] == "input" and "text only" in error["message"]


def test_token_ids_are_read_with_the_tokenizer_of_the_catalogs_model(api, fake):
    """The tokenizer's directory is the catalog's model name, not the request's text (a
    catalog entry found under another name still reads its own model's tokenizer)."""
    services = container.services_of(api.app)
    assert services is not None
    services.catalog.models["alias"] = services.catalog.models["embed"]
    response = api.post(
        EMBEDDINGS, json={"model": "alias", "input": [3, 4]}, headers={"Cache-Control": "no-cache"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "embed"
    assert fake.texts[-1] == ["the food"]


def test_the_clients_default_base64_embeddings(api):
    client = openai.OpenAI(
        base_url=f"{api.base_url}/v1", api_key=ADMIN_KEY, http_client=api, max_retries=0
    )
    got = client.embeddings.create(model="embed", input=["the food", "was good"])
    # The fake model's vector is 0.5 four times: base64 float32, decoded by the client.
    assert [d.embedding for d in got.data] == [[0.5] * 4, [0.5] * 4]
    ids = client.embeddings.create(model="embed", input=[[3, 4]])
    assert ids.data[0].embedding == [0.5] * 4


# --- models: created and owned_by ----------------------------------------------------------------


def test_models_say_when_they_were_built_and_whose_they_are(api, tmp_path):
    listed = api.get("/v1/models").json()["data"]
    again = api.get("/v1/models").json()["data"]
    assert listed == again  # created does not move between two calls
    for model in listed:
        version_dir = tmp_path / "repo" / model["id"] / model["default_version"]
        assert model["created"] == int(version_dir.stat().st_mtime) > 0
        assert model["owned_by"] == "infergate"
        assert model["object"] == "model" and "versions" in model  # the fields it had
    one = api.get("/v1/models/embed").json()
    assert (one["created"], one["owned_by"]) == (
        next(m["created"] for m in listed if m["id"] == "embed"),
        "infergate",
    )
