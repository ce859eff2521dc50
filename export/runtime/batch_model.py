"""The Triton python-backend shell shared by the non-generative models that take one item
per row (texts for `ner`, `pii` and `summarize`, encoded images for `imagenet`).

Copied beside each such model's model.py and imported flat. A subclass names its input
tensor and builds its pipeline; this class does what every batched runner must: decode
each request on its own (a bad item fails its request only, INVALID_ARG naming the item),
run one pass over every valid request of the dynamic batch, split the outputs back, stop
a batch whose callers all left, keep the instance alive whatever a batch raises, and
export the runner metrics the text models export.

The pipeline is plain Python (no triton_python_backend_utils) so unit tests drive it:
  decode(raw: np.ndarray, offset: int) -> list       (raises ItemError)
  run(items: list, cancelled: Callable[[], bool]) -> dict[str, np.ndarray]  (row per item)
  optional: options(extra: dict[str, np.ndarray], n: int) -> list, one option per item
            from the request's optional input tensors (absent ones missing)
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# The python-backend stub ignores PYTHONPATH; the embedded launcher names the virtual
# environment's site-packages here instead.
for _path in os.environ.get("INFERGATE_PYTHONPATH", "").split(os.pathsep):
    if _path and _path not in sys.path:
        sys.path.append(_path)

import numpy as np  # noqa: E402


class ItemError(ValueError):
    """An item the caller sent that the model refuses; its message names the item
    (e.g. "IMAGE[2]: ...") and becomes the request's INVALID_ARG error."""


class BatchCancelled(RuntimeError):
    """Every caller of the batch cancelled; the rest of the batch is not computed."""


def string_column(values: Iterable[str]) -> np.ndarray:
    """Texts -> a [n, 1] BYTES output tensor, UTF-8."""
    return np.array([[v.encode("utf-8")] for v in values], dtype=np.object_).reshape(-1, 1)


def throttled(cancelled: Callable[[], bool], every_s: float) -> Callable[[], bool]:
    """`cancelled` asked at most every `every_s` seconds (each ask is a call into Triton
    per request); once it says yes, yes."""
    last = [-float("inf")]
    said = [False]

    def ask() -> bool:
        now = time.monotonic()
        if not said[0] and now - last[0] >= every_s:
            last[0] = now
            said[0] = bool(cancelled())
        return said[0]

    return ask


def decode_utf8_texts(raw: np.ndarray, name: str, offset: int = 0) -> list[str]:
    """A [n, 1] BYTES tensor -> texts, refusing what no text model can use."""
    flat = raw.reshape(-1)
    if flat.size == 0:
        raise ItemError(f"{name} holds no items (a batch of zero)")
    texts: list[str] = []
    for i, item in enumerate(flat):
        where = f"{name}[{offset + i}]"
        if isinstance(item, bytes | np.bytes_):
            try:
                text = bytes(item).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ItemError(f"{where} is not valid UTF-8 (byte {exc.start})") from None
        elif isinstance(item, str):
            text = item
        else:
            raise ItemError(f"{where} must be bytes, got {type(item).__name__}")
        if not text.strip():
            raise ItemError(f"{where} is empty or whitespace only")
        texts.append(text)
    return texts


class BlsCore:
    """gpu target: the ONNX core is an onnxruntime-backend model, called through BLS."""

    def __init__(self, pb_utils: Any, model: str, version: int):
        self.pb = pb_utils
        self.model = model
        self.version = version

    def __call__(self, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
        request = self.pb.InferenceRequest(
            model_name=self.model,
            model_version=self.version,
            requested_output_names=[output],
            inputs=[self.pb.Tensor(k, v) for k, v in feeds.items()],
        )
        response = request.exec()
        if response.has_error():
            raise RuntimeError(response.error().message())
        return self.pb.get_output_tensor_by_name(response, output).as_numpy()


class BatchedModel:
    """Subclass as `TritonPythonModel` in a model.py; set `input_name`, implement
    `make_pipeline`."""

    input_name = "TEXT"

    def make_pipeline(self, version_dir: Path, params: dict[str, str], core: Any) -> Any:
        raise NotImplementedError

    def initialize(self, args: dict[str, Any]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version = int(args["model_version"])
        version_dir = Path(args["model_repository"]) / str(version)
        core_model = params.get("core_model")
        core = BlsCore(pb_utils, core_model, version) if core_model else None
        self.pipeline = self.make_pipeline(version_dir, params, core)
        self.output_names = [o["name"] for o in config["output"]]
        self.optional_inputs = [i["name"] for i in config["input"] if i["name"] != self.input_name]
        labels = {
            "model": args["model_name"],
            "version": str(version),
            "instance": args["model_instance_name"],
        }
        # The families must outlive their metrics (Triton deletes both with the family).
        self.cancelled_family = pb_utils.MetricFamily(
            name="infergate_runner_cancelled_requests",
            description="Requests stopped by the runner because the caller cancelled",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.cancelled_metric = self.cancelled_family.Metric(labels=labels)
        self.active_family = pb_utils.MetricFamily(
            name="infergate_runner_active_requests",
            description="Requests the runner instance is executing",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self.active_metric = self.active_family.Metric(labels=labels)

    def execute(self, requests: list[Any]) -> list[Any]:
        self.active_metric.set(len(requests))
        try:
            return self._execute(requests)
        finally:
            self.active_metric.set(0)

    def _extra_inputs(self, request: Any) -> dict[str, np.ndarray]:
        extra = {}
        for name in self.optional_inputs:
            tensor = self.pb.get_input_tensor_by_name(request, name)
            if tensor is not None:
                extra[name] = tensor.as_numpy()
        return extra

    def _execute(self, requests: list[Any]) -> list[Any]:
        pb = self.pb
        responses: list[Any] = [None] * len(requests)
        items: list[Any] = []
        spans: list[tuple[int, int, int]] = []  # (request index, start, stop)
        for i, request in enumerate(requests):
            if request.is_cancelled():
                self.cancelled_metric.increment(1)
                responses[i] = self._cancelled()
                continue
            try:
                raw = pb.get_input_tensor_by_name(request, self.input_name).as_numpy()
                batch = self.pipeline.decode(raw, 0)
                if self.optional_inputs:
                    options = self.pipeline.options(self._extra_inputs(request), len(batch))
                    batch = [(item, option) for item, option in zip(batch, options, strict=True)]
            except ItemError as exc:
                responses[i] = pb.InferenceResponse(
                    error=pb.TritonError(str(exc), pb.TritonError.INVALID_ARG)
                )
                continue
            except Exception as exc:  # a decoder's own bug fails its request, not the batch
                responses[i] = pb.InferenceResponse(
                    error=pb.TritonError(
                        f"reading the input failed: {exc}", pb.TritonError.INTERNAL
                    )
                )
                continue
            spans.append((i, len(items), len(items) + len(batch)))
            items.extend(batch)
        if not items:
            return responses
        live = [requests[i] for i, _, _ in spans]
        try:
            outputs = self.pipeline.run(items, lambda: all(r.is_cancelled() for r in live))
        except BatchCancelled:
            self.cancelled_metric.increment(len(spans))
            for i, _, _ in spans:
                responses[i] = self._cancelled()
            return responses
        except ItemError as exc:  # found only while running (a file that fails to decode)
            for i, _, _ in spans:
                responses[i] = pb.InferenceResponse(
                    error=pb.TritonError(str(exc), pb.TritonError.INVALID_ARG)
                )
            return responses
        except Exception as exc:  # the instance must survive whatever a batch does
            for i, _, _ in spans:
                responses[i] = pb.InferenceResponse(
                    error=pb.TritonError(f"inference failed: {exc}", pb.TritonError.INTERNAL)
                )
            return responses
        for i, start, stop in spans:
            tensors = [pb.Tensor(name, outputs[name][start:stop]) for name in self.output_names]
            responses[i] = pb.InferenceResponse(output_tensors=tensors)
        return responses

    def _cancelled(self) -> Any:
        return self.pb.InferenceResponse(
            error=self.pb.TritonError("request cancelled", self.pb.TritonError.CANCELLED)
        )

    def finalize(self) -> None:
        self.pipeline = None


def ignore_cancel() -> Callable[[], bool]:
    """For callers outside Triton (tests, the export-time checks)."""
    return lambda: False
