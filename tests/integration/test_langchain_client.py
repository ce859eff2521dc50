"""A widely used framework client against the real stack: LangChain's `ChatOpenAI` and
`OpenAIEmbeddings` with their default settings (only the model, the base URL and the key
are given; max_tokens and temperature are the user's choices, kept small and greedy so
that two answers can be compared), for a chat, a stream, a tool call, structured output
and embeddings."""

from __future__ import annotations

import asyncio
import functools
import operator
import re

import numpy as np
import openai
import pytest
from pydantic import BaseModel, Field

from .conftest import ADMIN_KEY

pytestmark = pytest.mark.integration

langchain_openai = pytest.importorskip("langchain_openai")
messages_module = pytest.importorskip("langchain_core.messages")
tools_module = pytest.importorskip("langchain_core.tools")

STORY = "Write a short story about a robot."
CALL_ID = re.compile(r"call_[0-9a-f]{24}")


@pytest.fixture(scope="module")
def llm(frontend):
    return langchain_openai.ChatOpenAI(
        model="chat",
        base_url=frontend.url + "/v1",
        api_key=ADMIN_KEY,
        max_tokens=16,
        temperature=0,
        max_retries=0,
    )


@pytest.fixture(scope="module")
def oai(frontend):
    return openai.OpenAI(base_url=frontend.url + "/v1", api_key=ADMIN_KEY, max_retries=0)


@tools_module.tool
def get_weather(city: str) -> str:
    """The current weather of a city."""
    return f"21 degrees and sunny in {city}"


class Pet(BaseModel):
    """A pet."""

    name: str = Field(max_length=12)
    age: int = Field(ge=0, le=30)


def test_invoke_is_the_same_chat_as_the_openai_client(llm, oai):
    answer = llm.invoke(STORY)
    direct = oai.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": STORY}], max_tokens=16, temperature=0
    )
    assert isinstance(answer, messages_module.AIMessage)
    assert answer.content == direct.choices[0].message.content
    assert answer.response_metadata["finish_reason"] == "length"
    assert answer.usage_metadata["output_tokens"] == 16
    assert answer.usage_metadata["input_tokens"] == direct.usage.prompt_tokens
    assert asyncio.run(llm.ainvoke(STORY)).content == answer.content


def test_stream(llm, frontend):
    whole = llm.invoke(STORY).content
    chunks = list(llm.stream(STORY))
    assert len(chunks) > 2
    assert "".join(c.content for c in chunks) == whole
    # stream_usage (off by default for a base_url other than OpenAI's) asks for
    # stream_options.include_usage: the usage arrives in the stream's last chunk.
    counting = llm.model_copy(update={"stream_usage": True})
    total = functools.reduce(operator.add, counting.stream(STORY))
    assert total.content == whole
    assert total.usage_metadata["output_tokens"] == 16


def _room_for_calls(llm):
    """A call takes ~30 tokens; the model repeats it when it may, so one at a time."""
    return llm.model_copy(update={"max_tokens": 40})


def test_a_tool_call_and_its_answer(llm):
    bound = _room_for_calls(llm).bind_tools(
        [get_weather], tool_choice="get_weather", parallel_tool_calls=False
    )
    question = messages_module.HumanMessage("What is the weather in Paris?")
    called = bound.invoke([question])
    assert called.response_metadata["finish_reason"] == "tool_calls"
    [call] = called.tool_calls
    assert call["name"] == "get_weather" and CALL_ID.fullmatch(call["id"])
    assert isinstance(call["args"]["city"], str) and call["args"]["city"]
    result = messages_module.ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    answer = llm.bind_tools([get_weather]).invoke([question, called, result])
    assert isinstance(answer, messages_module.AIMessage)
    assert answer.content or answer.tool_calls


def test_a_streamed_tool_call(llm):
    bound = _room_for_calls(llm).bind_tools(
        [get_weather],
        tool_choice="any",  # LangChain's "required"
        parallel_tool_calls=False,
    )
    total = functools.reduce(operator.add, bound.stream("What is the weather in Paris?"))
    assert total.tool_calls and all(c["name"] == "get_weather" for c in total.tool_calls)
    assert all(isinstance(c["args"].get("city"), str) for c in total.tool_calls)


def test_structured_output_with_json_schema(llm):
    structured = llm.model_copy(update={"max_tokens": 40}).with_structured_output(
        Pet, method="json_schema", include_raw=True
    )
    out = structured.invoke("Describe a pet cat as JSON with its name and age.")
    assert out["parsing_error"] is None
    pet = out["parsed"]
    assert isinstance(pet, Pet) and 0 <= pet.age <= 30 and len(pet.name) <= 12
    assert out["raw"].response_metadata["finish_reason"] == "stop"


def test_embeddings(frontend, oai):
    # OpenAIEmbeddings' default (check_embedding_ctx_length=True) tokenizes each text with
    # tiktoken and sends OpenAI's token ids: tiktoken downloads its encoding first (an
    # offline host fails with a ConnectionError before any request), and those ids are not
    # our model's vocabulary. Sending the texts is LangChain's own advice for
    # OpenAI-compatible servers (docs/openai-compat.md › Clients).
    embeddings = langchain_openai.OpenAIEmbeddings(
        model="embed",
        base_url=frontend.url + "/v1",
        api_key=ADMIN_KEY,
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    texts = ["the food was delicious", "and the waiter was friendly"]
    documents = np.array(embeddings.embed_documents(texts))
    query = np.array(embeddings.embed_query(texts[0]))
    direct = oai.embeddings.create(model="embed", input=texts)
    expected = np.array([d.embedding for d in direct.data])
    assert documents.shape == (2, 384)
    np.testing.assert_allclose(documents, expected, atol=1e-6)
    np.testing.assert_allclose(query, expected[0], atol=1e-6)
    np.testing.assert_allclose(
        np.array(asyncio.run(embeddings.aembed_documents(texts))), expected, atol=1e-6
    )
