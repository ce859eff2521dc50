"""The generation engine on the exported model, in process: parity with PyTorch (the
export-time check, re-run on the built artifact), in-flight batching that changes no
greedy output, sequences that join and leave a running batch, cancellation."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from export.runtime.decoder import KVCache
from export.runtime.generation import ChatEngine, Collector, Limits, Metrics, Sampling

pytestmark = pytest.mark.integration

PROMPTS = (
    "Explain how photosynthesis works.",
    "Give me a recipe for pancakes.",
    "Write a poem about autumn leaves.",
)


@pytest.fixture(scope="module")
def version_dir(repository):
    return repository / "chat" / "1"


class CountingMetrics(Metrics):
    def __init__(self) -> None:
        self.steps: list[int] = []
        self.cancelled_count = 0

    def step(self, rows: int) -> None:
        self.steps.append(rows)

    def cancelled(self) -> None:
        self.cancelled_count += 1


def run(engine: ChatEngine, prompt: str, sampling: Sampling) -> Collector:
    sink = Collector()
    ids = engine.encode_prompt(None, [{"role": "user", "content": prompt}])
    engine.submit(ids, sampling, sink)
    return sink


def test_onnx_greedy_equals_pytorch_for_20_tokens(version_dir):
    from export.catalog import CHAT
    from export.llm import greedy_parity, load_reference

    model, tokenizer = load_reference(CHAT)
    parity = greedy_parity(CHAT, model, tokenizer, version_dir)
    assert parity["prompts"] >= 5 and parity["identical"], parity
    assert parity["tokens_compared"] == [20] * parity["prompts"]


def test_in_flight_batching_changes_no_greedy_output(version_dir):
    metrics = CountingMetrics()
    engine = ChatEngine(version_dir, Limits(slots=4, queue=4), metrics=metrics).start()
    try:
        alone = []
        for prompt in PROMPTS:
            sink = run(engine, prompt, Sampling(max_tokens=24))
            assert sink.done.wait(120)
            alone.append(sink.generated_ids)
        assert set(metrics.steps) == {1}
        metrics.steps.clear()
        # Staggered arrivals: the second and third join a batch that is already decoding,
        # and the first leaves while the others go on.
        sinks = [run(engine, PROMPTS[0], Sampling(max_tokens=24))]
        while len(sinks[0].generated_ids) < 5:
            time.sleep(0.005)
        sinks.append(run(engine, PROMPTS[1], Sampling(max_tokens=30)))
        while len(sinks[1].generated_ids) < 3:
            time.sleep(0.005)
        sinks.append(run(engine, PROMPTS[2], Sampling(max_tokens=36)))
        for sink in sinks:
            assert sink.done.wait(120) and sink.error is None
    finally:
        engine.stop()
    assert [s.generated_ids[:24] for s in sinks] == alone
    assert max(metrics.steps) == 3  # all three shared decode steps
    assert metrics.steps[-1] == 1  # the longest finished alone, after the others left


def test_cancelled_sequence_stops_at_the_next_step(version_dir):
    metrics = CountingMetrics()
    engine = ChatEngine(version_dir, Limits(slots=2, queue=2), metrics=metrics).start()
    try:
        other = run(engine, PROMPTS[1], Sampling(max_tokens=40))
        victim = run(engine, PROMPTS[0], Sampling(max_tokens=500))
        while len(victim.generated_ids) < 3:
            time.sleep(0.002)
        steps_at_cancel = len(metrics.steps)
        tokens_at_cancel = len(victim.generated_ids)
        victim.cancel_requested = True
        assert victim.done.wait(10) and victim.reason == "cancelled"
        # At most the step already running when the flag was set.
        assert len(victim.generated_ids) <= tokens_at_cancel + 1
        assert len(metrics.steps) <= steps_at_cancel + 2
        assert other.done.wait(60) and other.reason == "length"
        assert metrics.cancelled_count == 1
    finally:
        engine.stop()


def test_overload_is_refused_at_once(version_dir):
    from export.runtime.generation import GenerationError

    engine = ChatEngine(version_dir, Limits(slots=1, queue=1))  # not started: nothing drains
    sinks = [Collector(), Collector()]
    ids = engine.encode_prompt("Hello", None)
    for sink in sinks:
        engine.submit(ids, Sampling(max_tokens=5), sink)
    started = time.monotonic()
    with pytest.raises(GenerationError) as refused:
        engine.submit(ids, Sampling(max_tokens=5), Collector())
    assert refused.value.code == "overloaded" and time.monotonic() - started < 0.1
    engine.start()
    assert all(s.done.wait(60) and s.reason == "length" for s in sinks)
    engine.stop()
    assert not any(t.name == "chat-decode" and t.is_alive() for t in threading.enumerate())


# --- logprobs, n, penalties, bias, echo (issue 14) ------------------------------------


@pytest.fixture(scope="module")
def engine(version_dir):
    engine = ChatEngine(version_dir, Limits(slots=4, queue=8)).start()
    yield engine
    engine.stop()


def reference_logprobs(engine: ChatEngine, ids: list[int]) -> np.ndarray:
    """log-softmax (float64) of the model's logits at every position of `ids`, from one
    run over the whole sequence without a KV cache."""
    session = engine.session
    feeds = {
        "input_ids": np.array([ids], dtype=np.int64),
        "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
        "position_ids": np.arange(len(ids), dtype=np.int64)[None, :],
        **KVCache(engine.session, engine.layers).empty_past(),
    }
    logits = session.run(["logits"], feeds)[0][0].astype(np.float64)
    top = logits.max(axis=1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))


def finished(sink: Collector) -> Collector:
    assert sink.done.wait(120) and sink.error is None, sink.error
    return sink


def test_greedy_logprobs_equal_a_full_recomputation(engine):
    for prompt in PROMPTS:
        ids = engine.encode_prompt(None, [{"role": "user", "content": prompt}])
        sink = Collector()
        engine.submit(ids, Sampling(max_tokens=8, logprobs=3), sink)
        choice = finished(sink).choices[0]
        reference = reference_logprobs(engine, ids + choice.generated_ids)
        assert len(choice.logprobs) == len(choice.generated_ids) == 8
        for k, entry in enumerate(choice.logprobs):
            row = reference[len(ids) - 1 + k]
            assert entry["id"] == choice.generated_ids[k] == int(np.argmax(row))
            assert entry["logprob"] == pytest.approx(row[entry["id"]], abs=1e-4)
            tops = entry["top_logprobs"]
            assert len(tops) == 3 and tops[0]["id"] == entry["id"]
            assert [t["logprob"] for t in tops] == sorted(
                (t["logprob"] for t in tops), reverse=True
            )
            for t in tops:
                assert t["logprob"] == pytest.approx(row[t["id"]], abs=1e-4)
            text = engine.tokenizer.decode([entry["id"]])
            assert entry["token"] == text
        joined = b"".join(bytes(e["bytes"]) for e in choice.logprobs)
        assert joined.decode("utf-8", errors="replace") == choice.text


def test_n_choices_share_a_prefill_are_reproducible_and_choice_0_is_the_single_answer(engine):
    ids = engine.encode_prompt(None, [{"role": "user", "content": PROMPTS[2]}])

    def choices(n: int) -> list[list[int]]:
        sink = Collector()
        engine.submit(ids, Sampling(max_tokens=8, temperature=1.0, seed=7, n=n), sink)
        got = finished(sink).choices
        assert sorted(got) == list(range(n))
        assert all(c.reason and c.completion_tokens == len(c.generated_ids) for c in got.values())
        return [got[i].generated_ids for i in range(n)]

    first, again = choices(3), choices(3)
    assert first == again  # choice by choice, for the same seed
    assert choices(1) == first[:1]
    assert len({tuple(c) for c in first}) > 1  # each choice draws from its own generator


def longest_repeat_count(ids: list[int]) -> int:
    return max(ids.count(t) for t in set(ids))


def test_frequency_penalty_reduces_repeats(engine):
    prompt = "Repeat the word hello again and again: hello hello hello hello"
    ids = engine.encode_prompt(None, [{"role": "user", "content": prompt}])
    outputs = {}
    for penalty in (0.0, 2.0):
        sink = Collector()
        engine.submit(ids, Sampling(max_tokens=24, frequency_penalty=penalty), sink)
        outputs[penalty] = finished(sink).generated_ids
    assert longest_repeat_count(outputs[2.0]) < longest_repeat_count(outputs[0.0]), outputs


def test_logit_bias_minus_100_bans_the_greedy_first_token(engine):
    ids = engine.encode_prompt(None, [{"role": "user", "content": PROMPTS[0]}])
    plain = Collector()
    engine.submit(ids, Sampling(max_tokens=2), plain)
    first = finished(plain).generated_ids[0]
    banned = Collector()
    engine.submit(ids, Sampling(max_tokens=2, logit_bias=((first, -100.0),)), banned)
    other = finished(banned).generated_ids[0]
    assert other != first
    # The new first token is the runner-up of the unbanned distribution.
    row = reference_logprobs(engine, ids)[-1]
    row[first] = -np.inf
    assert other == int(np.argmax(row))


def test_prompt_logprobs_equal_the_reference_and_max_tokens_0_scores_only(engine):
    ids = engine.encode_prompt("The capital of France is Paris, and the capital of Spain is", None)
    reference = reference_logprobs(engine, ids)
    scored = Collector()
    engine.submit(ids, Sampling(max_tokens=0, prompt_logprobs=2), scored)
    finished(scored)
    assert (scored.reason, scored.completion_tokens, scored.generated_ids) == ("length", 0, [])
    entries = scored.prompt_logprobs
    assert entries is not None and [e["id"] for e in entries] == ids
    assert entries[0]["logprob"] is None and entries[0]["top_logprobs"] == []
    for j in range(1, len(ids)):
        row = reference[j - 1]
        assert entries[j]["logprob"] == pytest.approx(row[ids[j]], abs=1e-4)
        tops = entries[j]["top_logprobs"]
        assert [t["id"] for t in tops] == [int(i) for i in np.argsort(-row)[:2]]
    # With tokens too: the same prompt entries, then the generation.
    echoed = Collector()
    engine.submit(ids, Sampling(max_tokens=3, prompt_logprobs=2), echoed)
    finished(echoed)
    assert echoed.completion_tokens == 3 and echoed.prompt_tokens == len(ids)
    assert echoed.prompt_logprobs is not None
    assert [e["id"] for e in echoed.prompt_logprobs] == ids
    got = [e["logprob"] for e in echoed.prompt_logprobs[1:]]
    assert got == pytest.approx([e["logprob"] for e in entries[1:]], abs=1e-6)


def test_prompt_logprobs_of_a_long_prompt_equal_the_reference_in_every_block(engine):
    from export.runtime.logprobs import PROMPT_ROWS_PER_CHUNK

    sentence = "The river runs past the old mill, and the miller counts the sacks of flour. "
    ids = engine.encode_prompt(sentence * 12, None)
    assert len(ids) > 2 * PROMPT_ROWS_PER_CHUNK  # scored in several blocks of rows
    reference = reference_logprobs(engine, ids)
    scored = Collector()
    engine.submit(ids, Sampling(max_tokens=0, prompt_logprobs=20), scored)
    entries = finished(scored).prompt_logprobs
    assert entries is not None and [e["id"] for e in entries] == ids
    for j in range(1, len(ids)):
        row = reference[j - 1]
        assert entries[j]["logprob"] == pytest.approx(row[ids[j]], abs=1e-4)
        tops = [t["id"] for t in entries[j]["top_logprobs"]]
        assert len(tops) == 20 and set(tops[:10]) == {int(i) for i in np.argsort(-row)[:10]}
        values = [t["logprob"] for t in entries[j]["top_logprobs"]]
        assert values == sorted(values, reverse=True)
