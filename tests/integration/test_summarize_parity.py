"""summarize's abstractive summaries are the chat model's own greedy answers: the same
messages (summarize_prompt.summary_messages with the prompt of the deployed
summarize.json) sent to `chat` directly over gRPC give the very same text, token for
token, alone or batched, and so do the chunk and combine calls of a map-reduced text."""

from __future__ import annotations

import json
import queue
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from export.runtime.batch_model import ignore_cancel
from export.runtime.summarize_pipeline import SummarizePipeline
from export.runtime.summarize_prompt import Prompt, summary_messages
from export.runtime.summarize_settings import Options
from export.triton_config import read_config

pytestmark = pytest.mark.integration

MAX_TOKENS = 48
TEXTS = [
    "The city council voted on Tuesday to expand the bus network, adding twelve new routes "
    "that connect the northern suburbs to the centre. The plan costs 40 million dollars over "
    "five years and is funded partly by a new parking levy. The first routes start next "
    "spring.",
    "Photosynthesis is the process by which green plants turn light into chemical energy. "
    "Chlorophyll absorbs mostly red and blue light. The energy splits water, releasing "
    "oxygen, and turns carbon dioxide into glucose.",
    "I bought these headphones for my daily commute. The noise cancelling is excellent and "
    "the battery lasts a week, but the ear cushions get warm after an hour. For the price, "
    "they are a good deal.",
    "In 1969, Apollo 11 landed on the Moon. Neil Armstrong was the first person to walk on "
    "its surface, and Buzz Aldrin followed him minutes later. Michael Collins stayed in "
    "orbit. The crew returned safely on July 24.",
    "Bees pollinate a third of the crops we eat. Bee populations have declined in many "
    "countries because of pesticides, disease and habitat loss. Farmers now plant "
    "wildflower strips to help them.",
]


@pytest.fixture(scope="module")
def prompt(repository: Path) -> Prompt:
    path = repository / "summarize" / "1" / "summarize.json"
    if not path.is_file():
        pytest.fail("summarize is not in the model repository; run `make models`")
    return Prompt.from_json(json.loads(path.read_text(encoding="utf-8"))["prompt"])


def _input(name: str, array: np.ndarray, dtype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    return tensor


def chat_greedy(
    client: grpcclient.InferenceServerClient, messages: list[dict[str, str]], max_tokens: int
) -> tuple[str, int, int]:
    """One generation straight from `chat`, as summarize asks for it (greedy, seed 0):
    (text, prompt tokens, completion tokens)."""
    payload = json.dumps(messages, ensure_ascii=False).encode("utf-8")
    inputs = [
        _input("MESSAGES", np.array([payload], dtype=np.object_), "BYTES"),
        _input("MAX_TOKENS", np.array([max_tokens], dtype=np.int32), "INT32"),
        _input("TEMPERATURE", np.array([0.0], dtype=np.float32), "FP32"),
        _input("SEED", np.array([0], dtype=np.int64), "INT64"),
    ]
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        client.async_stream_infer("chat", inputs)
        parts: list[str] = []
        while True:
            result, error = answers.get(timeout=300)
            assert error is None, error.message()
            parts.append(result.as_numpy("TEXT")[0].decode("utf-8"))
            if result.as_numpy("FINISH_REASON")[0]:
                prompt = int(result.as_numpy("PROMPT_TOKENS")[0])
                completion = int(result.as_numpy("COMPLETION_TOKENS")[0])
                return "".join(parts), prompt, completion
    finally:
        client.stop_stream()


def summarize(
    client: grpcclient.InferenceServerClient, texts: list[str], max_tokens: int
) -> list[dict[str, Any]]:
    n = len(texts)
    result = client.infer(
        "summarize",
        [
            _input(
                "TEXT", np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_), "BYTES"
            ),
            _input("METHOD", np.array([[b"abstractive"]] * n, dtype=np.object_), "BYTES"),
            _input("MAX_TOKENS", np.full((n, 1), max_tokens, dtype=np.int32), "INT32"),
        ],
        client_timeout=600,
    )
    return [
        {
            "summary": result.as_numpy("SUMMARY")[i, 0].decode("utf-8"),
            "method": result.as_numpy("METHOD")[i, 0].decode(),
            "sentences": json.loads(result.as_numpy("SENTENCES")[i, 0]),
            "chunks": int(result.as_numpy("CHUNKS")[i, 0]),
            "num_tokens": int(result.as_numpy("NUM_TOKENS")[i, 0]),
        }
        for i in range(n)
    ]


def test_each_summary_is_chats_own_greedy_answer(client, prompt):
    direct = [chat_greedy(client, summary_messages(prompt, t, "whole"), MAX_TOKENS) for t in TEXTS]
    alone = [summarize(client, [t], MAX_TOKENS)[0] for t in TEXTS]
    for text, (answer, prompt_tokens, _), got in zip(TEXTS, direct, alone, strict=True):
        assert got["summary"] == answer.strip(), text[:40]
        assert got["summary"], text[:40]
        assert got["method"] == "abstractive"
        assert got["sentences"] == []
        assert got["chunks"] == 1
        assert got["num_tokens"] == prompt_tokens
    # All in one request: generated together in chat's batch, the same answers.
    together = summarize(client, TEXTS, MAX_TOKENS)
    assert [g["summary"] for g in together] == [g["summary"] for g in alone]


def test_a_map_reduced_summary_is_the_same_chain_of_chat_answers(client, repository, prompt):
    """The same pipeline class, its generations sent to chat directly, reproduces the
    served result: the chunks, the partial summaries, the combined summary."""
    from tokenizers import Tokenizer

    config = read_config(repository / "summarize" / "config.pbtxt")
    params = {k: v.string_value for k, v in config.parameters.items()}
    tokenizer = Tokenizer.from_file(str(repository / "chat" / "1" / "tokenizer.json"))
    pipeline = SummarizePipeline(
        params,
        lambda texts: np.zeros((len(texts), 384), dtype=np.float32),
        lambda messages, max_tokens: chat_greedy(client, messages, max_tokens),
        prompt=prompt,
        count_tokens=lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids),
    )
    text = "\n\n".join(TEXTS * 8)
    assert len(tokenizer.encode(text).ids) > int(params["chunk_tokens"])
    out = pipeline.run([(text, Options("abstractive", 3, 24))], ignore_cancel())
    served = summarize(client, [text], 24)[0]
    assert served["chunks"] == int(out["CHUNKS"][0, 0]) > 1
    assert served["summary"] == out["SUMMARY"][0, 0].decode("utf-8")
    assert served["num_tokens"] == int(out["NUM_TOKENS"][0, 0])
