"""The chat model's watch on Triton's readiness (the second of its two stop triggers, for
a Triton stopped by someone other than the embedded launcher): it stops the engine only
on Triton's own word, twice, after Triton had said it was ready; it asks nothing while
the engine is idle. A fake engine and a scripted readiness (no Triton)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from export.runtime.chat_model import ServerWatch
from tests.integration.triton_metrics import wait_for


class FakeEngine:
    def __init__(self, busy: bool = True) -> None:
        self.busy = busy
        self.stopped = threading.Event()

    @property
    def stopping(self) -> bool:
        return self.stopped.is_set()

    def request_stop(self) -> None:
        self.stopped.set()


def scripted(answers: list[object]) -> tuple[Callable[[], bool], list[int]]:
    """Readiness answers in order (an Exception is raised), then the last one forever;
    also returns how many times it was asked."""
    asked = [0]
    script: Iterator[object] = iter(answers)
    last: list[object] = [answers[-1]]

    def ready() -> bool:
        asked[0] += 1
        answer = next(script, last[0])
        if isinstance(answer, Exception):
            raise answer
        return bool(answer)

    return ready, asked


def watch(engine: FakeEngine, answers: list[object]) -> tuple[ServerWatch, list[int]]:
    ready, asked = scripted(answers)
    return ServerWatch(ready, engine, interval_s=0.005).start(), asked  # type: ignore[arg-type]


def test_stops_the_engine_when_triton_stops_being_ready():
    engine = FakeEngine()
    w, asked = watch(engine, [True, True, False, RuntimeError("Server not ready")])
    try:
        assert engine.stopped.wait(5)
        assert asked[0] == 4  # two ready, then two misses in a row
    finally:
        w.close()


def test_not_ready_while_triton_starts_is_not_a_stop():
    # Triton is not ready until every model has loaded: misses before the first "ready"
    # are the start, not a stop.
    engine = FakeEngine()
    w, asked = watch(engine, [RuntimeError("Server not ready")] * 5 + [True])
    try:
        wait_for(lambda: asked[0] >= 20, "20 answers")
        assert not engine.stopped.is_set()
    finally:
        w.close()


def test_one_miss_alone_does_not_stop():
    engine = FakeEngine()
    w, asked = watch(engine, [True, False, True])
    try:
        wait_for(lambda: asked[0] >= 20, "20 answers")
        assert not engine.stopped.is_set()
    finally:
        w.close()


def test_asks_nothing_while_idle_once_ready():
    engine = FakeEngine(busy=False)
    w, asked = watch(engine, [True, False])
    try:
        wait_for(lambda: asked[0] >= 1, "the first answer")
        # Idle: a stop can finalize at once, nothing to end; no call into Triton. (An
        # absence is only seen over time: 40 intervals.)
        time.sleep(0.2)
        assert asked[0] == 1 and not engine.stopped.is_set()
        engine.busy = True
        assert engine.stopped.wait(5)  # busy again: it asks, and hears "not ready"
    finally:
        w.close()


def test_asks_nothing_once_the_engine_is_stopped_another_way():
    # The launcher's announcement (or finalize) stopped it: from then on a call into a
    # stopping Triton could only block the stub.
    engine = FakeEngine()
    w, asked = watch(engine, [True])
    try:
        wait_for(lambda: asked[0] >= 3, "3 answers")
        engine.request_stop()
        # It ends on its own (it would otherwise go on asking every interval).
        wait_for(lambda: not w._thread.is_alive(), "the watch to end", 5)
    finally:
        w.close()
