"""export/runtime/batch_model.py's BatchedModel, the shell of the ner, pii, imagenet and
summarize runners, driven as Triton drives it (initialize, then execute per dynamic batch)
over a stand-in for triton_python_backend_utils and a trivial pipeline: per-request
decoding and refusals, one run per batch split back per request, cancellation, failures
that leave the instance answering, per-request optional inputs, the runner metrics."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from export.runtime.batch_model import BatchCancelled, BatchedModel, ItemError, decode_utf8_texts

# --- a stand-in for triton_python_backend_utils --------------------------------------------


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class TritonError:
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, CANCELLED = range(6)

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class InferenceResponse:
    def __init__(
        self, output_tensors: list[Tensor] | None = None, error: TritonError | None = None
    ) -> None:
        self._outputs, self._error = output_tensors or [], error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def output_tensors(self) -> list[Tensor]:
        return self._outputs


class FakeMetric:
    def __init__(self, labels: dict[str, str]) -> None:
        self.labels, self.value, self.history = labels, 0.0, []

    def increment(self, by: float) -> None:
        self.value += by

    def set(self, value: float) -> None:
        self.value = value
        self.history.append(value)


class MetricFamily:
    COUNTER, GAUGE = "counter", "gauge"

    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name, self.kind = name, kind

    def Metric(self, labels: dict[str, str]) -> FakeMetric:  # Triton's name for it
        return FakeMetric(labels)


class Request:
    """One client's request: its input tensors, and whether its caller has gone."""

    def __init__(self, texts: list[str], cancelled: bool = False, **extra: np.ndarray) -> None:
        column = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
        self.inputs = {"TEXT": Tensor("TEXT", column)}
        self.inputs.update({k: Tensor(k, v) for k, v in extra.items()})
        self.cancelled = cancelled

    def is_cancelled(self) -> bool:
        return self.cancelled


def _get_input_tensor_by_name(request: Request, name: str) -> Tensor | None:
    return request.inputs.get(name)


def _pb_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = Tensor  # type: ignore[attr-defined]
    module.TritonError = TritonError  # type: ignore[attr-defined]
    module.InferenceResponse = InferenceResponse  # type: ignore[attr-defined]
    module.MetricFamily = MetricFamily  # type: ignore[attr-defined]
    module.get_input_tensor_by_name = _get_input_tensor_by_name  # type: ignore[attr-defined]
    return module


# --- a trivial pipeline -------------------------------------------------------------------


class LengthPipeline:
    """TEXT -> LENGTH (its characters times the request's SCALE, 1 without) and UPPER.
    Refuses the word "bad"; `fail` makes the next run raise, `during_run` runs inside it."""

    def __init__(self) -> None:
        self.runs: list[list[Any]] = []
        self.extras: list[dict[str, np.ndarray]] = []
        self.fail: Exception | None = None
        self.during_run: Any = None

    def decode(self, raw: np.ndarray, offset: int) -> list[str]:
        texts = decode_utf8_texts(raw, "TEXT", offset)
        for i, text in enumerate(texts):
            if text == "crash":  # a decoder's own bug, not a refusal
                raise KeyError("decoder bug")
            if text == "bad":
                raise ItemError(f"TEXT[{offset + i}]: 'bad' is not a word this model takes")
        return texts

    def options(self, extra: dict[str, np.ndarray], n: int) -> list[int]:
        self.extras.append(extra)
        if "SCALE" not in extra:
            return [1] * n
        scale = extra["SCALE"].reshape(-1)
        if scale.size != n:
            raise ItemError(f"SCALE: {scale.size} values for {n} texts")
        return [int(s) for s in scale]

    def run(self, items: list[tuple[str, int]], cancelled: Any) -> dict[str, np.ndarray]:
        self.runs.append(list(items))
        if self.during_run is not None:
            self.during_run()
        if cancelled():
            raise BatchCancelled("every caller left")
        if self.fail is not None:
            failure, self.fail = self.fail, None
            raise failure
        return {
            "LENGTH": np.array([[len(t) * s] for t, s in items], dtype=np.int32),
            "UPPER": np.array([[t.upper().encode()] for t, _ in items], dtype=np.object_),
        }


class LengthModel(BatchedModel):
    input_name = "TEXT"

    def make_pipeline(self, version_dir: Path, params: dict[str, str], core: Any) -> Any:
        assert params == {"knob": "7"} and core is None  # no core_model: no BLS core
        assert version_dir == Path("/models/length/1")
        return LengthPipeline()


@pytest.fixture
def model(monkeypatch) -> LengthModel:
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _pb_utils())
    config = {
        "parameters": {"knob": {"string_value": "7"}},
        "input": [{"name": "TEXT"}, {"name": "SCALE", "optional": True}],
        "output": [{"name": "LENGTH"}, {"name": "UPPER"}],
    }
    runner = LengthModel()
    runner.initialize(
        {
            "model_config": json.dumps(config),
            "model_version": "1",
            "model_repository": "/models/length",
            "model_name": "length",
            "model_instance_name": "length_0",
        }
    )
    return runner


def rows(response: InferenceResponse) -> dict[str, list]:
    assert not response.has_error(), response.error().message()  # type: ignore[union-attr]
    return {t.name(): t.as_numpy().reshape(-1).tolist() for t in response.output_tensors()}


def refusal(response: InferenceResponse) -> tuple[int, str]:
    error = response.error()
    assert error is not None
    return error.code(), error.message()


# --- the batch -----------------------------------------------------------------------------


def test_a_bad_item_fails_its_own_request_only(model):
    requests = [Request(["a", "bb"]), Request(["ccc", "bad"]), Request(["dddd"])]
    first, middle, last = model.execute(requests)
    assert refusal(middle) == (
        TritonError.INVALID_ARG,
        "TEXT[1]: 'bad' is not a word this model takes",  # its index in its own request
    )
    assert rows(first) == {"LENGTH": [1, 2], "UPPER": [b"A", b"BB"]}
    assert rows(last) == {"LENGTH": [4], "UPPER": [b"DDDD"]}
    # One run over the valid requests' items, in order; the refused one is not computed.
    assert model.pipeline.runs == [[("a", 1), ("bb", 1), ("dddd", 1)]]


def test_a_decoder_bug_fails_its_own_request_only(model):
    first, broken, last = model.execute([Request(["a"]), Request(["crash"]), Request(["cc"])])
    code, message = refusal(broken)
    assert code == TritonError.INTERNAL and "reading the input failed" in message
    assert rows(first)["LENGTH"] == [1] and rows(last)["LENGTH"] == [2]
    assert model.pipeline.runs == [[("a", 1), ("cc", 1)]]


def test_a_batch_of_refusals_only_runs_nothing(model):
    bad, empty = model.execute([Request(["bad"]), Request([" "])])
    assert refusal(bad)[0] == refusal(empty)[0] == TritonError.INVALID_ARG
    assert refusal(empty)[1] == "TEXT[0] is empty or whitespace only"
    assert model.pipeline.runs == []


def test_a_failing_run_fails_every_request_and_the_model_answers_on(model):
    model.pipeline.fail = RuntimeError("the core went away")
    responses = model.execute([Request(["a"]), Request(["bb", "ccc"])])
    for response in responses:
        assert refusal(response) == (
            TritonError.INTERNAL,
            "inference failed: the core went away",
        )
    assert model.active_metric.value == 0  # execute() resets the gauge whatever happened
    again = model.execute([Request(["xy"]), Request(["z"])])
    assert [rows(r)["LENGTH"] for r in again] == [[2], [1]]


def test_an_item_error_found_while_running_fails_the_batch(model):
    model.pipeline.fail = ItemError("TEXT[1]: could not be read after all")
    responses = model.execute([Request(["a"]), Request(["b"])])
    assert [refusal(r) for r in responses] == [
        (TritonError.INVALID_ARG, "TEXT[1]: could not be read after all")
    ] * 2
    assert rows(model.execute([Request(["ok"])])[0])["LENGTH"] == [2]


def test_a_request_cancelled_before_the_run_is_not_computed(model):
    requests = [Request(["a"]), Request(["bb"], cancelled=True), Request(["ccc"])]
    first, gone, last = model.execute(requests)
    assert refusal(gone) == (TritonError.CANCELLED, "request cancelled")
    assert rows(first)["LENGTH"] == [1] and rows(last)["LENGTH"] == [3]
    assert model.pipeline.runs == [[("a", 1), ("ccc", 1)]]
    assert model.cancelled_metric.value == 1


def test_every_caller_cancelled_mid_run_stops_the_batch(model):
    requests = [Request(["a"]), Request(["bb"])]

    def everyone_leaves() -> None:
        for request in requests:
            request.cancelled = True

    model.pipeline.during_run = everyone_leaves
    responses = model.execute(requests)
    assert [refusal(r) for r in responses] == [(TritonError.CANCELLED, "request cancelled")] * 2
    assert model.cancelled_metric.value == 2
    model.pipeline.during_run = None
    assert rows(model.execute([Request(["ok"])])[0])["LENGTH"] == [2]


def test_one_caller_leaving_mid_run_does_not_stop_the_others(model):
    requests = [Request(["a"]), Request(["bb"])]

    def one_leaves() -> None:
        requests[0].cancelled = True

    model.pipeline.during_run = one_leaves
    responses = model.execute(requests)
    assert [rows(r)["LENGTH"] for r in responses] == [[1], [2]]
    assert model.cancelled_metric.value == 0


def test_optional_inputs_reach_options_per_request(model):
    scaled = Request(["ab", "c"], SCALE=np.array([[10], [100]], dtype=np.int32))
    plain = Request(["xyz"])
    wrong = Request(["d"], SCALE=np.array([[1], [2]], dtype=np.int32))
    first, second, third = model.execute([scaled, plain, wrong])
    assert rows(first)["LENGTH"] == [20, 100]
    assert rows(second)["LENGTH"] == [3]
    assert refusal(third) == (TritonError.INVALID_ARG, "SCALE: 2 values for 1 texts")
    assert [sorted(extra) for extra in model.pipeline.extras] == [["SCALE"], [], ["SCALE"]]
    np.testing.assert_array_equal(model.pipeline.extras[0]["SCALE"], [[10], [100]])
    assert model.pipeline.runs == [[("ab", 10), ("c", 100), ("xyz", 1)]]


def test_the_runner_metrics_carry_the_instance(model):
    model.execute([Request(["a"]), Request(["b"]), Request(["c"])])
    assert model.active_metric.history == [3, 0]
    assert model.active_metric.labels == {
        "model": "length",
        "version": "1",
        "instance": "length_0",
    }
    assert model.cancelled_family.name == "infergate_runner_cancelled_requests"
    assert model.active_family.kind == MetricFamily.GAUGE
