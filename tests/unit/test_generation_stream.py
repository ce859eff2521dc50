"""The generation stream's deadlines and its end, over a scripted response iterator (no
Triton): admission, idle and total deadlines cancel the call and raise 504's error; a
stream that ends before its final response is an upstream error, never a silent end; with
n choices it ends once each has finished; the new outputs (INDEX, TOKEN_LOGPROBS,
TOOL_CALLS) are read, and a response without one of the contract's outputs is an upstream
error (the catalog's start-up check is what keeps such a model out); the request's tensors
carry each option only when it is not neutral."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
import pytest

from frontend.errors import DeadlineExceeded, UpstreamError
from frontend.settings import GenerationSettings
from frontend.triton import tensors
from frontend.triton.generate import GenerationParams, GenerationStream, request_inputs


def _string(value: str) -> np.ndarray:
    return np.array([value.encode()], dtype=np.object_)


class Result:
    """One response, every output of the contract in it ("" where there is nothing);
    `absent` names outputs left out (as_numpy gives None, as tritonclient's InferResult
    does for an output the response lacks)."""

    def __init__(
        self,
        text: str,
        prompt: int,
        completion: int,
        finish: str = "",
        *,
        index: int = 0,
        logprobs: list[dict] | None = None,
        tool_calls: list[dict] | None = None,
        absent: tuple[str, ...] = (),
    ) -> None:
        self._values = {
            "TEXT": _string(text),
            "PROMPT_TOKENS": np.array([prompt], dtype=np.int32),
            "COMPLETION_TOKENS": np.array([completion], dtype=np.int32),
            "FINISH_REASON": _string(finish),
            "INDEX": np.array([index], dtype=np.int32),
            "TOKEN_LOGPROBS": _string(json.dumps(logprobs) if logprobs else ""),
            "TOOL_CALLS": _string(json.dumps(tool_calls) if tool_calls else ""),
        }
        for name in absent:
            del self._values[name]

    def as_numpy(self, name: str) -> np.ndarray | None:
        return self._values.get(name)


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


def stream(responses: Scripted, *, total_s: float = 300.0, idle_s: float = 60.0, n: int = 1):
    return GenerationStream(
        model="chat",
        version="1",
        _responses=responses,
        deadline=time.monotonic() + total_s,
        idle_timeout_s=idle_s,
        n=n,
    )


def _drain(s: GenerationStream) -> list:
    async def run() -> list:
        got = []
        while (step := await s.next()) is not None:
            got.append(step)
        return got

    return asyncio.run(run())


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


# --- n choices, the new outputs, a response without one ----------------------------------

ENTRY = {"id": 7, "token": "Hi", "bytes": [72, 105], "logprob": -0.5, "top_logprobs": []}
CALL = {"id": "call_" + "a" * 24, "type": "function", "function": {"name": "f", "arguments": "{}"}}


def test_with_n_choices_the_stream_ends_after_each_has_finished():
    responses = Scripted(
        [
            Result("", 5, 0, index=0),
            Result("A", 5, 1, index=1),
            Result("B", 5, 1, index=0),
            Result("", 5, 1, "stop", index=1),
            Result("C", 5, 2, index=0),
            Result("", 5, 2, "length", index=0),
            Result("never read", 5, 3, index=0),
        ]
    )
    s = stream(responses, n=2)
    steps = _drain(s)
    assert [(x.index, x.text, x.finish_reason) for x in steps[1:]] == [
        (1, "A", ""),
        (0, "B", ""),
        (1, "", "stop"),
        (0, "C", ""),
        (0, "", "length"),
    ]
    assert s.finished and responses.cancelled == 0


def test_a_repeated_finish_of_one_choice_does_not_end_two():
    responses = Scripted(
        [
            Result("", 5, 0, index=0),
            Result("", 5, 0, "stop", index=0),
            Result("", 5, 0, "stop", index=0),
        ]
    )
    s = stream(responses, n=2)
    with pytest.raises(UpstreamError, match="ended the stream early"):
        _drain(s)


def test_the_new_outputs_are_read():
    prompt_entry = {**ENTRY, "logprob": None}
    responses = Scripted(
        [
            Result("", 2, 0, index=0, logprobs=[prompt_entry]),
            Result("Hi", 2, 1, index=0, logprobs=[ENTRY]),
            Result("", 2, 1, "tool_calls", index=0, tool_calls=[CALL]),
        ]
    )
    admitted, token, final = _drain(stream(responses))
    # The admission's entries are the prompt's; a token's are its own.
    assert (admitted.prompt_logprobs, admitted.logprobs) == ([prompt_entry], None)
    assert (token.logprobs, token.prompt_logprobs, token.tool_calls) == ([ENTRY], None, None)
    assert final.tool_calls == [CALL] and final.logprobs is None


def test_a_plain_answer_reads_as_choice_0_without_entries_or_calls():
    responses = Scripted([Result("", 5, 0), Result("Hi", 5, 1), Result("", 5, 1, "stop")])
    steps = _drain(stream(responses))
    assert [(x.index, x.logprobs, x.tool_calls, x.prompt_logprobs) for x in steps] == [
        (0, None, None, None)
    ] * 3
    assert steps[-1].finish_reason == "stop"


@pytest.mark.parametrize("output", sorted(tensors.GENERATION_OUTPUTS))
def test_a_response_without_an_output_of_the_contract_is_an_upstream_error(output):
    # No fallback for a model built before an output existed: the catalog refuses its card
    # at start-up, and a response that still lacks one is the model's bug.
    responses = Scripted([Result("", 5, 0), Result("Hi", 5, 1, absent=(output,))], hang=True)
    s = stream(responses)

    async def run() -> None:
        await s.next()
        await s.next()

    with pytest.raises(UpstreamError, match="unreadable"):
        asyncio.run(run())
    assert s.finished and responses.cancelled == 1


def test_unreadable_logprobs_are_an_upstream_error_that_cancels():
    bad = Result("", 5, 0, index=0)
    bad._values["TOKEN_LOGPROBS"] = _string("{not json")
    responses = Scripted([bad], hang=True)
    s = stream(responses)
    with pytest.raises(UpstreamError, match="unreadable"):
        asyncio.run(s.next())
    assert s.finished and responses.cancelled == 1


# --- the request's tensors ---------------------------------------------------------------

PLAIN = GenerationParams(max_tokens=8, temperature=0.0, top_p=1.0, top_k=0, seed=None, stop=())


def _sent(**params: Any) -> dict[str, Any]:
    prompt_ids = params.pop("prompt_ids", None)
    prompt = None if prompt_ids is not None else "hi"
    inputs = request_inputs(prompt, None, GenerationParams(**{**vars(PLAIN), **params}), prompt_ids)
    return {t.name(): (t.datatype(), t.shape(), t._raw_content) for t in inputs}


def test_a_plain_request_sends_only_what_it_always_sent():
    assert list(_sent()) == ["PROMPT", "MAX_TOKENS", "TEMPERATURE", "TOP_P", "TOP_K"]
    # The neutral values, given explicitly, are not sent either.
    neutral = _sent(n=1, presence_penalty=0.0, repetition_penalty=1.0, parallel_tool_calls=True)
    assert list(neutral) == list(_sent())


def test_each_option_is_sent_when_set():
    sent = _sent(
        n=3,
        logprobs=2,
        prompt_logprobs=0,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        repetition_penalty=1.2,
        logit_bias=((5, -100.0), (9, 2.5)),
        min_tokens=4,
        ignore_eos=True,
        response_format='{"type": "json_object"}',
        tools="[]",
        tool_choice='"required"',
        parallel_tool_calls=False,
    )
    types = {name: (dtype, shape) for name, (dtype, shape, _) in sent.items()}
    assert types == {
        "PROMPT": ("BYTES", [1]),
        "MAX_TOKENS": ("INT32", [1]),
        "TEMPERATURE": ("FP32", [1]),
        "TOP_P": ("FP32", [1]),
        "TOP_K": ("INT32", [1]),
        "N": ("INT32", [1]),
        "LOGPROBS": ("INT32", [1]),
        "PROMPT_LOGPROBS": ("INT32", [1]),
        "PRESENCE_PENALTY": ("FP32", [1]),
        "FREQUENCY_PENALTY": ("FP32", [1]),
        "REPETITION_PENALTY": ("FP32", [1]),
        "LOGIT_BIAS": ("BYTES", [1]),
        "MIN_TOKENS": ("INT32", [1]),
        "IGNORE_EOS": ("BOOL", [1]),
        "RESPONSE_FORMAT": ("BYTES", [1]),
        "TOOLS": ("BYTES", [1]),
        "TOOL_CHOICE": ("BYTES", [1]),
        "PARALLEL_TOOL_CALLS": ("BOOL", [1]),
    }
    assert np.frombuffer(sent["N"][2], dtype=np.int32).tolist() == [3]
    assert np.frombuffer(sent["PROMPT_LOGPROBS"][2], dtype=np.int32).tolist() == [0]
    assert np.frombuffer(sent["IGNORE_EOS"][2], dtype=np.bool_).tolist() == [True]
    assert np.frombuffer(sent["PARALLEL_TOOL_CALLS"][2], dtype=np.bool_).tolist() == [False]
    # BYTES: a 4-byte length, then the text.
    assert json.loads(sent["LOGIT_BIAS"][2][4:]) == {"5": -100.0, "9": 2.5}


def test_a_token_id_prompt_is_prompt_ids():
    sent = _sent(prompt_ids=[1, 2, 49151])
    assert "PROMPT" not in sent and sent["PROMPT_IDS"][:2] == ("INT64", [3])
    assert np.frombuffer(sent["PROMPT_IDS"][2], dtype=np.int64).tolist() == [1, 2, 49151]
