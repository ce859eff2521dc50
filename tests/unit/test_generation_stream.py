"""The generation stream's deadlines and its end, over a scripted response iterator (no
Triton): admission, idle and total deadlines cancel the call and raise 504's error; a
stream that ends before its final response is an upstream error, never a silent end."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from frontend.errors import DeadlineExceeded, UpstreamError
from frontend.settings import GenerationSettings
from frontend.triton.generate import GenerationStream


class Result:
    def __init__(self, text: str, prompt: int, completion: int, finish: str = "") -> None:
        self._values = {
            "TEXT": np.array([text.encode()], dtype=np.object_),
            "PROMPT_TOKENS": np.array([prompt], dtype=np.int32),
            "COMPLETION_TOKENS": np.array([completion], dtype=np.int32),
            "FINISH_REASON": np.array([finish.encode()], dtype=np.object_),
        }

    def as_numpy(self, name: str) -> np.ndarray:
        return self._values[name]


class Scripted:
    """tritonclient's response iterator: the given responses, then either the end of the
    iterator or (hang=True) nothing ever again."""

    def __init__(self, results: list[Result], hang: bool = False) -> None:
        self._results = list(results)
        self._hang = hang
        self.cancelled = 0

    def __aiter__(self) -> Scripted:
        return self

    async def __anext__(self) -> tuple[Result, None]:
        if self._results:
            return self._results.pop(0), None
        if self._hang:
            await asyncio.Event().wait()
        raise StopAsyncIteration

    def cancel(self) -> None:
        self.cancelled += 1


def stream(responses: Scripted, *, total_s: float = 300.0, idle_s: float = 60.0):
    return GenerationStream(
        model="chat",
        version="1",
        _responses=responses,
        deadline=time.monotonic() + total_s,
        idle_timeout_s=idle_s,
    )


def test_defaults_are_the_documented_deadlines():
    g = GenerationSettings()
    assert (g.admission_timeout_s, g.idle_timeout_s, g.timeout_s) == (10.0, 60.0, 300.0)
    assert g.keepalive_s == 15.0


def test_a_stream_that_ends_before_its_final_response_is_an_upstream_error():
    responses = Scripted([Result("", 5, 0), Result("Hi", 5, 1)])
    s = stream(responses)

    async def run() -> list:
        got = [await s.next(), await s.next()]
        with pytest.raises(UpstreamError, match="ended the stream early"):
            await s.next()
        return got

    admitted, token = asyncio.run(run())
    assert (admitted.prompt_tokens, token.text, token.completion_tokens) == (5, "Hi", 1)
    assert s.finished
    assert asyncio.run(s.next()) is None  # nothing more after the end


def test_the_final_response_ends_the_stream_without_a_cancel():
    responses = Scripted([Result("", 5, 0), Result("!", 5, 1, "stop")])
    s = stream(responses)

    async def run():
        await s.next()
        return await s.next(), await s.next()

    final, after = asyncio.run(run())
    assert final.finish_reason == "stop" and after is None
    assert responses.cancelled == 0


def test_admission_has_its_own_deadline():
    responses = Scripted([], hang=True)
    s = stream(responses, idle_s=60.0)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="stopped answering"):
        asyncio.run(s.next(timeout_s=0.05))
    assert time.monotonic() - started < 5  # the admission deadline, not the idle one
    assert responses.cancelled == 1


def test_idle_deadline_between_responses_cancels_the_call():
    responses = Scripted([Result("", 5, 0)], hang=True)
    s = stream(responses, idle_s=0.05)

    async def run() -> None:
        await s.next()
        await s.next()

    with pytest.raises(DeadlineExceeded, match="stopped answering"):
        asyncio.run(run())
    assert responses.cancelled == 1


def test_total_deadline_passed_cancels_without_waiting():
    responses = Scripted([Result("", 5, 0)], hang=True)
    s = stream(responses, total_s=-1.0)
    with pytest.raises(DeadlineExceeded, match="did not finish in time"):
        asyncio.run(s.next())
    assert responses.cancelled == 1


def test_total_deadline_bounds_the_idle_wait():
    responses = Scripted([], hang=True)
    s = stream(responses, total_s=0.05, idle_s=60.0)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        asyncio.run(s.next())
    assert time.monotonic() - started < 5
    assert responses.cancelled == 1
