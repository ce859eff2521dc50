"""The summarize model's pipeline (export/runtime/summarize_pipeline.py) and its runner's
pure parts (summarize_model.py, with a stand-in for triton_python_backend_utils).

extractive runs over the REAL embed model (its built ONNX through TextPipeline, as Triton
serves it) and is checked against centrality computed here with numpy; abstractive runs
over a recording stand-in for `chat` (the real chat's parity: tests/integration/
test_summarize_parity.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from export.runtime.batch_model import BatchCancelled, ItemError, ignore_cancel
from export.runtime.sentences import split_sentences
from export.runtime.summarize_chunks import chunk_spans, utf8_bytes
from export.runtime.summarize_extractive import centrality
from export.runtime.summarize_pipeline import SummarizePipeline
from export.runtime.summarize_prompt import ChatFailure, Prompt, summary_messages
from export.runtime.summarize_settings import Options
from export.runtime.text_model import TextPipeline
from export.served_catalog import SUMMARIZE
from export.summarize_export import CHECK_TEXTS, PROMPT, document, summarize_params
from export.triton_config import read_config

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
PARAMS = summarize_params(SUMMARIZE, {"document": document(SUMMARIZE)})

# Varied texts (with CHECK_TEXTS: 22): news, science, reviews, instructions, history,
# sport, finance, medicine, a story, a letter, French, Chinese, paragraphs, a list,
# quotes, abbreviations, numbers.
TEXTS = [
    *CHECK_TEXTS,
    "The museum reopened on Saturday after a two-year renovation. Visitors queued around "
    "the block before the doors opened. The new wing holds 300 paintings from the 19th "
    "century. Curators spent months restoring the oldest canvases. Entry is free for "
    "children under twelve. The museum expects a million visitors this year.",
    "Volcanoes form where magma reaches the surface. Most lie along the edges of tectonic "
    "plates. When plates pull apart, magma rises to fill the gap. When one plate slides "
    "under another, the rock melts and feeds eruptions. Hawaii is an exception: it sits "
    "above a hot spot in the middle of a plate.",
    "The hotel was clean and the staff were friendly. Our room faced the sea. Breakfast "
    "was disappointing, with cold eggs and weak coffee. The pool closed too early in the "
    "evening. Still, the location is perfect for walking to the old town.",
    "First, unplug the router. Wait thirty seconds. Plug it back in and wait for the "
    "lights to turn green. If the internet still does not work, call your provider. Keep "
    "your account number ready when you call.",
    "In 1969, Apollo 11 landed on the Moon. Neil Armstrong was the first person to walk "
    "on its surface. Buzz Aldrin followed him minutes later. Michael Collins stayed in "
    "orbit aboard the command module. The crew returned safely to Earth on July 24.",
    "The striker scored a hat-trick in the final. It was her third hat-trick of the "
    'season. "I just wanted to win," she said after the match. The coach praised the '
    "whole team. The club will parade the trophy through the city on Sunday.",
    "Shares of the bank fell 8.2% on Monday. Profits dropped for the third quarter in a "
    "row. The bank blamed higher interest costs. Analysts at J.P. Morgan cut their price "
    "target. The chief executive said the bank would cut 2,000 jobs.",
    "Regular exercise lowers the risk of heart disease. It also improves sleep and mood. "
    "Doctors recommend 150 minutes of moderate activity a week. Walking counts, as does "
    "cycling or swimming. Even short bouts of exercise bring benefits.",
    "The old lighthouse keeper lived alone on the island. Every night he climbed the 120 "
    "steps to light the lamp. One stormy night, the lamp went out. He repaired it by "
    "candlelight while the waves crashed below. At dawn, a fishing boat thanked him with "
    "three blasts of its horn.",
    "Dear Ms. Patel,\n\nThank you for your application. We were impressed by your "
    "experience in data analysis. We would like to invite you to an interview next week. "
    "Please reply with the times that suit you.\n\nKind regards,\nThe Hiring Team",
    "Le marché a ouvert à six heures. Les agriculteurs vendaient des fruits et des "
    "légumes frais. Les prix des tomates ont augmenté cette semaine. Beaucoup de clients "
    "sont venus malgré la pluie. Le marché ferme à midi.",
    "北京是中国的首都。北京有很多历史古迹。故宫是世界上最大的宫殿建筑群。每年有数百万游客参观长城。"
    "北京的冬天很冷，夏天很热。",
    "Our team had three goals this quarter.\n- Ship the new search page.\n- Cut page load "
    "time by half.\n- Hire two engineers.\nWe shipped the search page in May. Load time "
    "fell by 40%. We hired one engineer so far.",
    "Bees pollinate a third of the crops we eat. Without bees, yields of apples and "
    "almonds would fall sharply. Bee populations have declined in many countries. "
    "Pesticides, disease and habitat loss all play a part. Farmers now plant wildflower "
    "strips to help the bees.",
    "The new phone has a brighter screen and a faster chip. Its battery is smaller than "
    "last year's model. Reviewers praised the camera in low light. The price starts at "
    "$799. It goes on sale in the U.S. on Friday.",
    "The river flooded after a week of heavy rain. Hundreds of homes were evacuated. "
    "Emergency crews used boats to reach stranded residents. The water began to recede on "
    "Thursday. Officials warned that more rain is forecast for the weekend.",
]


# --- the real embed model -------------------------------------------------------------


@pytest.fixture(scope="module")
def embed_model() -> TextPipeline:
    """The embed model as Triton serves it: its built ONNX, its config's parameters."""
    vdir = REPOSITORY / "embed" / "1"
    if not (vdir / "model.onnx").is_file():
        pytest.fail("model_repository is not built; run `make models` (make test does)")
    config = read_config(REPOSITORY / "embed" / "config.pbtxt")
    return TextPipeline(vdir, {k: v.string_value for k, v in config.parameters.items()})


class Embedder:
    """`embed` over the real model, counting calls and rows."""

    def __init__(self, model: TextPipeline):
        self.model = model
        self.calls: list[int] = []

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(len(texts))
        out = self.model.run(texts)
        return out["EMBEDDING"], out["NUM_TOKENS"].reshape(-1)


def no_chat(messages: Any, max_tokens: int) -> Any:
    raise AssertionError("extractive calls no chat model")


def pipeline(embed: Any = None, generate: Any = no_chat, count: Any = None, **params: str):
    return SummarizePipeline(
        {**PARAMS, **params},
        embed or (lambda texts: np.zeros((len(texts), 384), dtype=np.float32)),
        generate,
        prompt=Prompt.from_json(PROMPT),
        count_tokens=count,
    )


def rows(out: dict[str, np.ndarray], row: int) -> dict[str, Any]:
    return {
        "summary": out["SUMMARY"][row, 0].decode("utf-8"),
        "method": out["METHOD"][row, 0].decode(),
        "sentences": json.loads(out["SENTENCES"][row, 0]),
        "source_sentences": int(out["SOURCE_SENTENCES"][row, 0]),
        "chunks": int(out["CHUNKS"][row, 0]),
        "num_tokens": int(out["NUM_TOKENS"][row, 0]),
    }


def test_there_are_at_least_twenty_varied_texts():
    assert len(TEXTS) >= 20
    assert all(len(split_sentences(t)) >= 4 for t in TEXTS)


@pytest.fixture(scope="module")
def reference(embed_model) -> list[tuple[np.ndarray, int]]:
    """Per text, computed apart from the pipeline: each sentence embedded on its own, the
    mean cosine (numpy) of each to the others; and the tokens embed reads."""
    out = []
    for text in TEXTS:
        pieces = [text[a:b] for a, b in split_sentences(text)]
        vectors = np.stack([embed_model.run([p])["EMBEDDING"][0] for p in pieces])
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        cosine = unit @ unit.T
        mean_to_others = (cosine.sum(axis=1) - 1.0) / (len(pieces) - 1)
        out.append((mean_to_others, int(embed_model.run(pieces)["NUM_TOKENS"].sum())))
    return out


@pytest.mark.parametrize("k", [1, 2, 3])
def test_extractive_picks_the_most_central_sentences_verbatim_in_order(embed_model, reference, k):
    embed = Embedder(embed_model)
    p = pipeline(embed)
    out = p.run([(t, Options("extractive", k, 128)) for t in TEXTS], ignore_cancel())
    for shape in out.values():
        assert shape.shape == (len(TEXTS), 1)
    for row, text in enumerate(TEXTS):
        got = rows(out, row)
        spans = split_sentences(text)
        scores, tokens = reference[row]
        indices = [s["index"] for s in got["sentences"]]
        assert len(indices) == min(k, len(spans))
        assert indices == sorted(indices)  # text order
        # The most central sentence is chosen (any of them, should two tie within the
        # noise of batched against single-sentence runs).
        best = {i for i in range(len(spans)) if scores[i] >= scores.max() - 1e-5}
        assert best & set(indices), text[:40]
        # And the whole choice, where no two scores tie at the cut.
        ranked = np.sort(scores)[::-1]
        if k < len(spans) and ranked[k - 1] - ranked[k] > 1e-5:
            assert indices == sorted(np.argsort(-scores)[:k].tolist())
        for s in got["sentences"]:
            assert (s["start"], s["end"]) == spans[s["index"]]
        assert got["summary"] == " ".join(text[s["start"] : s["end"]] for s in got["sentences"])
        assert got["method"] == "extractive"
        assert got["source_sentences"] == len(spans)
        assert got["chunks"] == 1
        assert got["num_tokens"] == tokens
    # One embed pass over every sentence of the batch, in chunks of embed_rows.
    total = sum(len(split_sentences(t)) for t in TEXTS)
    assert sum(embed.calls) == total
    assert len(embed.calls) == math.ceil(total / int(PARAMS["embed_rows"]))


def test_centrality_is_the_mean_cosine_to_the_other_sentences():
    v = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    cos = [[1, 0, 0.5**0.5], [0, 1, 0.5**0.5], [0.5**0.5, 0.5**0.5, 1]]
    expected = [(sum(r) - 1) / 2 for r in cos]
    np.testing.assert_allclose(centrality(v), expected)
    assert centrality(v[:1]).tolist() == [0.0]


def test_a_text_of_at_most_max_sentences_comes_back_whole_without_embedding():
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        return np.zeros((len(texts), 384))

    p = pipeline(embed)
    text = "  One short text. It has two sentences.  "
    out = p.run([(text, Options("extractive", 3, 128))], ignore_cancel())
    got = rows(out, 0)
    assert got["summary"] == "One short text. It has two sentences."
    assert [s["index"] for s in got["sentences"]] == [0, 1]
    assert got["num_tokens"] == 0  # no model read it
    assert calls == []


def test_ties_go_to_the_earlier_sentence():
    p = pipeline(lambda texts: np.ones((len(texts), 384), dtype=np.float32))
    out = p.run([("A one. B two. C three. D four.", Options("extractive", 2, 1))], ignore_cancel())
    assert [s["index"] for s in rows(out, 0)["sentences"]] == [0, 1]


def test_an_embedder_without_token_counts_is_estimated():
    p = pipeline(lambda texts: np.eye(len(texts), 384, dtype=np.float32))
    out = p.run([("Aa. Bb. Cc. Dd.", Options("extractive", 1, 1))], ignore_cancel())
    assert rows(out, 0)["num_tokens"] == utf8_bytes("Aa.") * 4


def test_extractive_stops_between_embed_chunks_when_cancelled():
    asked = []

    def cancelled() -> bool:
        asked.append(1)
        return True

    p = pipeline(embed_rows="2", cancel_poll_s="0")
    text = "Alpha one. Beta two. Gamma three. Delta four. Epsilon five."
    with pytest.raises(BatchCancelled):
        p.run([(text, Options("extractive", 1, 1))], cancelled)
    assert asked


# --- per-request inputs ---------------------------------------------------------------


def _col(values: list, dtype: Any) -> np.ndarray:
    return np.array([[v] for v in values], dtype=dtype)


def test_options_default_when_absent():
    assert pipeline().options({}, 2) == [Options("extractive", 3, 128)] * 2


def test_options_read_every_input_per_item():
    extra = {
        "METHOD": _col([b"abstractive", b"extractive", b""], np.object_),
        "MAX_SENTENCES": _col([1, 50, 3], np.int32),
        "MAX_TOKENS": _col([1, 1024, 7], np.int32),
    }
    assert pipeline().options(extra, 3) == [
        Options("abstractive", 1, 1),
        Options("extractive", 50, 1024),
        Options("extractive", 3, 7),  # an empty METHOD is the default
    ]


@pytest.mark.parametrize(
    ("extra", "n", "message"),
    [
        ({"METHOD": _col([b"extractive", b"summarise"], np.object_)}, 2, "METHOD[1]: 'summarise'"),
        ({"METHOD": _col([b"Extractive"], np.object_)}, 1, "METHOD[0]: 'Extractive' is not"),
        ({"METHOD": _col([b"\xff"], np.object_)}, 1, "METHOD[0]: is not valid UTF-8"),
        (
            {"MAX_SENTENCES": _col([0], np.int32)},
            1,
            "MAX_SENTENCES[0]: 0 is out of range; use 1..50",
        ),
        ({"MAX_SENTENCES": _col([3, 51], np.int32)}, 2, "MAX_SENTENCES[1]: 51 is out of range"),
        ({"MAX_TOKENS": _col([0], np.int32)}, 1, "MAX_TOKENS[0]: 0 is out of range; use 1..1024"),
        ({"MAX_TOKENS": _col([1025], np.int32)}, 1, "MAX_TOKENS[0]: 1025 is out of range"),
        ({"MAX_TOKENS": _col([1, 2], np.int32)}, 1, "MAX_TOKENS: 2 values for 1 texts"),
        ({"MAX_SENTENCES": _col([1.5], np.float32)}, 1, "MAX_SENTENCES: must be integers"),
    ],
)
def test_options_refuse_naming_the_input(extra, n, message):
    with pytest.raises(ItemError) as err:
        pipeline().options(extra, n)
    assert str(err.value).startswith(message)


def test_decode_refuses_what_it_cannot_summarize():
    p = pipeline(max_chars="10")
    assert p.decode(_col([b"short."], np.object_), 0) == ["short."]
    with pytest.raises(ItemError, match=r"TEXT\[1\]: 11 characters is over this model's limit"):
        p.decode(_col([b"ok", "x" * 11], np.object_), 0)
    with pytest.raises(ItemError, match=r"TEXT\[0\] is empty"):
        p.decode(_col([b"  "], np.object_), 0)


# --- abstractive, over a recording chat ---------------------------------------------


class FakeChat:
    """Records every call; answers with the first words of the text it was given (the
    part after the instruction), `prompt` tokens = the messages' word count."""

    def __init__(self, words: int = 6, fail_on: str | None = None, pending: bool = False):
        self.words = words
        self.fail_on = fail_on
        self.pending = pending
        self.calls: list[tuple[list[dict[str, str]], int]] = []
        self.log: list[tuple[str, int]] = []  # ("start" | "result" | "cancel", call index)

    @staticmethod
    def text_of(messages: list[dict[str, str]]) -> str:
        return messages[1]["content"].split("\n\n", 1)[1]

    def __call__(self, messages: list[dict[str, str]], max_tokens: int) -> Any:
        index = len(self.calls)
        self.calls.append((messages, max_tokens))
        self.log.append(("start", index))
        text = self.text_of(messages)
        if self.fail_on and self.fail_on in text:
            raise ChatFailure("invalid", f"the prompt of call {index} is refused")
        words = text.split()[: min(self.words, max_tokens)]
        prompt = sum(len(m["content"].split()) for m in messages)
        answer = (" " + " ".join(words) + " \n", prompt, len(words))
        return Pending(self, index, answer) if self.pending else answer


class Pending:
    def __init__(self, chat: FakeChat, index: int, answer: tuple[str, int, int]):
        self.chat, self.index, self.answer = chat, index, answer

    def result(self, cancelled: Any) -> tuple[str, int, int]:
        self.chat.log.append(("result", self.index))
        if cancelled():
            raise BatchCancelled("cancelled")
        return self.answer

    def cancel(self) -> None:
        self.chat.log.append(("cancel", self.index))


@pytest.fixture(scope="module")
def chat_tokens():
    """The chat model's own tokenizer, as the runner counts with it."""
    from tokenizers import Tokenizer

    path = REPOSITORY / "chat" / "1" / "tokenizer.json"
    if not path.is_file():
        pytest.fail("model_repository is not built; run `make models` (make test does)")
    tokenizer = Tokenizer.from_file(str(path))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def test_the_prompt_is_the_documented_one_and_the_builder_is_public():
    prompt = Prompt.from_json(document(SUMMARIZE)["prompt"])
    messages = summary_messages(prompt, "Some text {text} here.", "whole")
    assert messages == [
        {"role": "system", "content": PROMPT["system"]},
        {"role": "user", "content": PROMPT["whole"].replace("{text}", "Some text {text} here.")},
    ]
    assert messages[1]["content"].endswith("\n\nSome text {text} here.")
    with pytest.raises(ValueError, match="exactly once"):
        Prompt.from_json({**PROMPT, "part": "no placeholder"})


def test_a_short_text_is_one_whole_call(chat_tokens):
    chat = FakeChat()
    p = pipeline(generate=chat, count=chat_tokens)
    text = "  " + TEXTS[0] + "\n"
    out = p.run([(text, Options("abstractive", 3, 40))], ignore_cancel())
    assert chat.calls == [(summary_messages(p.prompt, TEXTS[0], "whole"), 40)]
    got = rows(out, 0)
    assert got["summary"] == " ".join(TEXTS[0].split()[:6])  # stripped
    assert got["method"] == "abstractive"
    assert got["sentences"] == []
    assert got["chunks"] == 1
    assert got["source_sentences"] == len(split_sentences(TEXTS[0]))
    assert got["num_tokens"] == sum(len(m["content"].split()) for m in chat.calls[0][0])
    assert p.failures == {}


def _long_text(n: int = 60) -> str:
    return "\n\n".join(TEXTS[i % len(TEXTS)] for i in range(n))


def test_a_long_text_is_map_reduced_on_sentence_boundaries(chat_tokens):
    chat = FakeChat(words=20)
    p = pipeline(generate=chat, count=chat_tokens)
    text = _long_text()
    assert chat_tokens(text) > 4 * p.budget
    out = p.run([(text, Options("abstractive", 3, 100))], ignore_cancel())
    got = rows(out, 0)
    parts = [c for c in chat.calls if c[0][1]["content"].startswith(PROMPT["part"][:20])]
    combines = [c for c in chat.calls if c[0][1]["content"].startswith(PROMPT["combine"][:20])]
    assert len(parts) + len(combines) == len(chat.calls)
    assert got["chunks"] == len(parts) > 1
    # Each chunk: whole sentences, from a sentence's start to a sentence's end, in order,
    # together every sentence once; within the budget.
    spans = split_sentences(text)
    starts, ends = {a for a, _ in spans}, {b for _, b in spans}
    at = 0
    for messages, max_tokens in parts:
        chunk = FakeChat.text_of(messages)
        start = text.index(chunk, at)
        assert start in starts and start + len(chunk) in ends
        assert text[at:start].strip() == ""  # nothing skipped
        at = start + len(chunk)
        assert chat_tokens(chunk) <= p.budget
        assert messages == summary_messages(p.prompt, chunk, "part")
        assert max_tokens == min(100, int(PARAMS["partial_tokens"]))
    assert text[at:].strip() == ""
    # Then one call combines the partial summaries, joined by blank lines.
    partials = [" ".join(FakeChat.text_of(m).split()[:20]) for m, _ in parts]
    assert combines == [(summary_messages(p.prompt, "\n\n".join(partials), "combine"), 100)]
    assert got["summary"] == " ".join(FakeChat.text_of(combines[0][0]).split()[:20])
    every_prompt = sum(sum(len(m["content"].split()) for m in c[0]) for c in chat.calls)
    assert got["num_tokens"] == every_prompt


def test_partial_summaries_that_do_not_fit_are_combined_level_by_level(chat_tokens):
    chat = FakeChat(words=40)
    p = pipeline(generate=chat, count=chat_tokens, chunk_tokens="120", partial_tokens="40")
    text = _long_text(12)
    out = p.run([(text, Options("abstractive", 3, 64))], ignore_cancel())
    got = rows(out, 0)
    stages = [
        "part" if m[1]["content"].startswith(PROMPT["part"][:20]) else "combine"
        for m, _ in chat.calls
    ]
    assert stages[: got["chunks"]] == ["part"] * got["chunks"]
    assert stages[got["chunks"] :].count("combine") > 1  # more than one level
    assert chat.calls[-1][1] == 64  # only the last call has the caller's MAX_TOKENS
    assert all(t <= 40 for _, t in chat.calls[:-1])
    for messages, _ in chat.calls:
        assert chat_tokens(FakeChat.text_of(messages)) <= p.budget
    assert got["summary"]


def test_without_a_tokenizer_bytes_bound_the_chunks_and_the_reduce_ends():
    chat = FakeChat(words=200)  # partial summaries long in bytes
    p = pipeline(generate=chat, chunk_tokens="400", partial_tokens="100")
    text = _long_text(8)
    out = p.run([(text, Options("abstractive", 3, 100))], ignore_cancel())
    assert rows(out, 0)["summary"]
    for messages, _ in chat.calls:
        assert utf8_bytes(FakeChat.text_of(messages)) <= p.budget
    assert len(chat.calls) < 200


def test_a_sentence_longer_than_the_budget_is_cut_at_spaces(chat_tokens):
    text = "word " * 3000 + "end."
    spans = split_sentences(text)
    assert len(spans) == 1
    chunks = chunk_spans(text, spans, 500, chat_tokens)
    assert len(chunks) > 1
    assert all(chat_tokens(text[a:b]) <= 500 for a, b in chunks)
    assert all(text[a] != " " and text[b - 1] != " " for a, b in chunks)
    assert " ".join(text[a:b] for a, b in chunks) == text


def test_abstractive_generations_run_together_up_to_the_concurrency(chat_tokens):
    chat = FakeChat(pending=True)
    p = pipeline(generate=chat, count=chat_tokens, concurrency="4")
    items = [(t, Options("abstractive", 3, 16)) for t in TEXTS[:6]]
    out = p.run(items, ignore_cancel())
    # Four started before the first result is read; never more than four open.
    assert chat.log[:5] == [("start", 0), ("start", 1), ("start", 2), ("start", 3), ("result", 0)]
    open_now = peak = 0
    for event, _ in chat.log:
        open_now += 1 if event == "start" else -1
        peak = max(peak, open_now)
    assert peak == 4
    for row, text in enumerate(TEXTS[:6]):
        assert rows(out, row)["summary"] == " ".join(text.split()[:6])


def test_chat_starts_before_the_extractive_rows_are_embedded(chat_tokens):
    order: list[str] = []
    chat = FakeChat(pending=True)

    def generate(messages: Any, max_tokens: int) -> Any:
        order.append("chat")
        return chat(messages, max_tokens)

    def embed(texts: list[str]) -> np.ndarray:
        order.append("embed")
        return np.eye(len(texts), 384, dtype=np.float32)

    p = pipeline(embed, generate, chat_tokens)
    items = [(TEXTS[0], Options("extractive", 1, 1)), (TEXTS[1], Options("abstractive", 1, 9))]
    out = p.run(items, ignore_cancel())
    assert order == ["chat", "embed"]
    assert rows(out, 0)["method"] == "extractive" and rows(out, 1)["method"] == "abstractive"


def test_a_refused_generation_fails_its_row_only(chat_tokens):
    chat = FakeChat(fail_on="Photosynthesis")
    p = pipeline(generate=chat, count=chat_tokens)
    items = [(t, Options("abstractive", 3, 16)) for t in TEXTS[:3]]
    out = p.run(items, ignore_cancel())
    assert set(p.failures) == {1}
    assert p.failures[1].code == "invalid"
    assert "refused" in p.failures[1].message
    assert rows(out, 0)["summary"] and rows(out, 2)["summary"]


def test_a_failed_chunk_cancels_the_rest_of_its_row(chat_tokens, monkeypatch):
    chat = FakeChat(pending=True)
    p = pipeline(generate=chat, count=chat_tokens, concurrency="8")

    def failing_result(self: Pending, cancelled: Any) -> Any:
        self.chat.log.append(("result", self.index))
        if self.index == 0:
            raise ChatFailure("internal", "boom")
        return self.answer

    monkeypatch.setattr(Pending, "result", failing_result)
    text = _long_text(40)
    chunks = len(chunk_spans(text, split_sentences(text), p.budget, chat_tokens))
    assert chunks > 2
    out = p.run(
        [(text, Options("abstractive", 3, 16)), (TEXTS[0], Options("extractive", 1, 1))],
        ignore_cancel(),
    )
    assert set(p.failures) == {0} and p.failures[0].code == "internal"
    started = [i for event, i in chat.log if event == "start"]
    cancelled = [i for event, i in chat.log if event == "cancel"]
    assert started == list(range(min(chunks, 8)))  # nothing started after the failure
    assert cancelled == started[1:]
    assert rows(out, 1)["summary"]  # the other row is fine


def test_cancellation_ends_the_open_generations(chat_tokens):
    chat = FakeChat(pending=True)
    p = pipeline(generate=chat, count=chat_tokens, concurrency="3", cancel_poll_s="0")
    answers = iter([False, False, False, True])
    with pytest.raises(BatchCancelled):
        p.run(
            [(t, Options("abstractive", 3, 16)) for t in TEXTS[:5]],
            lambda: next(answers, True),
        )
    assert ("cancel", 1) in chat.log and ("cancel", 2) in chat.log


def test_a_budget_too_small_for_the_partial_summaries_is_a_config_error():
    with pytest.raises(ValueError, match="cannot combine partial summaries"):
        pipeline(chunk_tokens="100", partial_tokens="40")


def test_the_budget_leaves_room_for_the_instructions(chat_tokens):
    p = pipeline(count=chat_tokens, chunk_tokens="5000")
    overhead = chat_tokens(PROMPT["system"]) + chat_tokens(PROMPT["combine"])
    assert p.budget + overhead + 16 <= int(PARAMS["max_prompt_tokens"])
    assert pipeline(count=chat_tokens).budget == int(PARAMS["chunk_tokens"])


# --- the runner's pure parts (summarize_model.py), with a stand-in for pb_utils ------


class FakeTensor:
    def __init__(self, name: str, value: Any):
        self.name, self.value = name, np.asarray(value)

    def as_numpy(self) -> np.ndarray:
        return self.value


class FakeError:
    INVALID_ARG, UNAVAILABLE, INTERNAL, CANCELLED = "INVALID_ARG", "UNAVAILABLE", "INTERNAL", "C"

    def __init__(self, message: str, code: str = "INTERNAL"):
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> str:
        return self._code


class FakeResponse:
    def __init__(self, output_tensors: list | None = None, error: FakeError | None = None):
        self.tensors = output_tensors or []
        self._error = error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> FakeError | None:
        return self._error

    def output_tensors(self) -> list:
        return self.tensors


class FakePb:
    TritonError = FakeError
    InferenceResponse = FakeResponse
    Tensor = FakeTensor

    @staticmethod
    def get_output_tensor_by_name(response: FakeResponse, name: str) -> FakeTensor:
        return next(t for t in response.tensors if t.name == name)

    @staticmethod
    def get_input_tensor_by_name(request: Any, name: str) -> FakeTensor | None:
        return request.get(name)


def chat_response(text: str, prompt: int, completion: int, reason: str = "") -> FakeResponse:
    return FakeResponse(
        [
            FakeTensor("TEXT", np.array([text.encode()], dtype=object)),
            FakeTensor("PROMPT_TOKENS", np.array([prompt], dtype=np.int32)),
            FakeTensor("COMPLETION_TOKENS", np.array([completion], dtype=np.int32)),
            FakeTensor("FINISH_REASON", np.array([reason.encode()], dtype=object)),
        ]
    )


@pytest.fixture(scope="module")
def runner():
    from export.runtime import summarize_model

    return summarize_model


def test_a_chat_stream_is_joined_with_the_last_counts(runner):
    stream = [
        chat_response("", 42, 0),  # admission
        chat_response("Hel", 42, 1),
        chat_response("lo", 42, 2),
        chat_response(" there", 42, 3, "length"),
        FakeResponse(),  # a final flag on its own
    ]
    call = runner.ChatCall(FakePb, "chat", iter(stream))
    assert call.result(lambda: False) == ("Hello there", 42, 3)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("invalid: the prompt is 1200 tokens; this model takes at most 1024", "invalid"),
        ("overloaded: 8 sequences are generating and 16 requests wait", "overloaded"),
        ("internal: onnxruntime failed", "internal"),
        ("Request for unknown model: 'chat' is not found", "internal"),
    ],
)
def test_chat_errors_keep_their_kind_from_the_message(runner, message, code):
    # Triton hands a BLS caller the callee's errors as INTERNAL whatever their code.
    call = runner.ChatCall(FakePb, "chat", iter([FakeResponse(error=FakeError(message))]))
    with pytest.raises(runner.ChatFailure) as err:
        call.result(lambda: False)
    assert err.value.code == code
    assert str(err.value) == message


def test_a_stream_without_a_finish_reason_is_an_internal_failure(runner):
    call = runner.ChatCall(FakePb, "chat", iter([chat_response("", 5, 0)]))
    with pytest.raises(runner.ChatFailure, match="without a finish reason"):
        call.result(lambda: False)


def test_a_cancelled_caller_stops_reading_the_stream(runner):
    class Stream:
        def __init__(self) -> None:
            self.items = iter([chat_response("", 5, 0), chat_response("a", 5, 1)])
            self.cancelled = False

        def __iter__(self) -> Any:
            return self

        def __next__(self) -> Any:
            if self.cancelled:
                raise StopIteration
            return next(self.items)

        def cancel(self) -> None:
            self.cancelled = True

    stream = Stream()
    call = runner.ChatCall(FakePb, "chat", stream)
    with pytest.raises(runner.BatchCancelled):
        call.result(lambda: True)
    assert stream.cancelled


def test_a_stream_this_triton_cannot_cancel_is_left_unread(runner):
    # Triton 2.51's ResponseIterator has no cancel(): reading on would wait for chat.
    def endless() -> Any:
        while True:
            yield chat_response("x", 5, 1)

    call = runner.ChatCall(FakePb, "chat", endless())
    call.cancel()  # returns at once
    assert call.ended


def test_failed_rows_fail_their_own_request(runner, monkeypatch):
    model = runner.TritonPythonModel()
    model.pb = FakePb
    model.pipeline = SimpleNamespace(failures={})
    requests = [
        {"TEXT": FakeTensor("TEXT", np.zeros((2, 1)))},  # rows 0, 1
        {"TEXT": FakeTensor("TEXT", np.zeros((1, 1)))},  # refused before the run
        {"TEXT": FakeTensor("TEXT", np.zeros((2, 1)))},  # rows 2, 3
        {"TEXT": FakeTensor("TEXT", np.zeros((1, 1)))},  # row 4
    ]
    ok = FakeResponse([FakeTensor("SUMMARY", np.zeros((1, 1)))])
    refused = FakeResponse(error=FakeError("TEXT[0] is empty", "INVALID_ARG"))

    def base_execute(self: Any, reqs: list) -> list:
        self.pipeline.failures = {
            3: SimpleNamespace(code="invalid", message="invalid: too long"),
            4: SimpleNamespace(code="overloaded", message="overloaded: busy"),
        }
        return [ok, refused, ok, ok]

    monkeypatch.setattr(runner.BatchedModel, "_execute", base_execute)
    responses = model._execute(requests)
    assert responses[0] is ok and responses[1] is refused
    assert responses[2].error().code() == "INVALID_ARG"
    assert responses[2].error().message() == "TEXT[1]: summarizing it failed: invalid: too long"
    assert responses[3].error().code() == "UNAVAILABLE"
    assert responses[3].error().message().startswith("TEXT[0]: ")
