"""The generation engine on the exported model, in process: parity with PyTorch (the
export-time check, re-run on the built artifact), in-flight batching that changes no
greedy output, sequences that join and leave a running batch, cancellation."""

from __future__ import annotations

import threading
import time

import pytest

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
