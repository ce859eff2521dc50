"""Triton python-backend model for raw-text models (copied into the repository as model.py).

BYTES text in -> tokenize -> ONNX core -> labels / scores / embeddings out, so that an
internal gRPC caller needs no tokenizer. Two modes, chosen by the generated config:
  - cpu target: the ONNX core runs here, in onnxruntime (the pip-installed Triton has
    only the python backend);
  - gpu target: the core is a separate onnxruntime-backend model on the GPU, called
    through BLS (`core_model` parameter).

`TextPipeline` is plain Python so that unit tests use it without Triton.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

# The python-backend stub runs its own interpreter setup and ignores PYTHONPATH; the
# embedded launcher names the virtual environment's site-packages here instead.
for _path in os.environ.get("INFERGATE_PYTHONPATH", "").split(os.pathsep):
    if _path and _path not in sys.path:
        sys.path.append(_path)

import numpy as np  # noqa: E402


class InputError(ValueError):
    """The caller sent something we refuse; becomes INVALID_ARG for that request only."""


class Cancelled(RuntimeError):
    """Every caller of the batch cancelled; the rest of the batch is not computed."""


def decode_texts(raw: np.ndarray) -> list[str]:
    """TEXT tensor ([n, 1] of bytes) -> list of str, refusing what no model can use."""
    flat = raw.reshape(-1)
    if flat.size == 0:
        raise InputError("TEXT holds no texts (a batch of zero)")
    texts: list[str] = []
    for i, item in enumerate(flat):
        if isinstance(item, bytes | np.bytes_):
            try:
                text = bytes(item).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"TEXT[{i}] is not valid UTF-8 (byte {exc.start})") from None
        elif isinstance(item, str):
            text = item
        else:
            raise InputError(f"TEXT[{i}] must be bytes, got {type(item).__name__}")
        if not text.strip():
            raise InputError(f"TEXT[{i}] is empty or whitespace only")
        texts.append(text)
    return texts


def softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(hidden.dtype)
    pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
    return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)


class TextPipeline:
    """Tokenize, run the core in length-sorted chunks, post-process, shape outputs."""

    def __init__(self, version_dir: Path, params: dict[str, str], core_runner: Any = None):
        from tokenizers import Tokenizer

        self.task = params["task"]
        self.max_length = int(params["max_length"])
        # Characters beyond this cannot reach the model: every token covers at least one
        # character, so cutting far above max_length tokens only bounds tokenizer work.
        self.max_chars = int(params.get("max_chars", self.max_length * 100))
        self.chunk_rows = int(params.get("chunk_rows", 32))
        self.core_output = params["core_output"]
        self.core_post = params.get("core_post", "none")
        self.tokenizer = Tokenizer.from_file(str(version_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()
        labels_path = version_dir / "labels.json"
        self.labels = json.loads(labels_path.read_text()) if labels_path.exists() else []
        self.label_bytes = np.array([s.encode("utf-8") for s in self.labels], dtype=np.object_)
        self.core_runner = core_runner or OnnxRuntimeCore(version_dir / "model.onnx", params)

    def run(self, texts: list[str], cancelled: Any = None) -> dict[str, np.ndarray]:
        """`cancelled()` is polled between chunks: a batch whose callers all left stops
        within one chunk instead of running to the end (raises Cancelled)."""
        clipped = [t[: self.max_chars] for t in texts]
        encodings = self.tokenizer.encode_batch(clipped)
        lengths = np.array([len(e.ids) for e in encodings], dtype=np.int32)
        truncated = np.array(
            [
                bool(e.overflowing) or len(t) > self.max_chars
                for e, t in zip(encodings, texts, strict=True)
            ]
        )
        order = np.argsort(lengths, kind="stable")
        pieces: list[np.ndarray] = []
        for start in range(0, len(order), self.chunk_rows):
            if cancelled is not None and start and cancelled():
                raise Cancelled(f"cancelled after {start} of {len(order)} texts")
            rows = order[start : start + self.chunk_rows]
            width = int(lengths[rows].max())
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, index in enumerate(rows):
                n = lengths[index]
                ids[r, :n] = encodings[index].ids
                mask[r, :n] = 1
            out = self.core_runner({"input_ids": ids, "attention_mask": mask}, self.core_output)
            pieces.append(self._post(out, mask))
        values = np.empty((len(texts), pieces[0].shape[1]), dtype=np.float32)
        values[order] = np.concatenate(pieces, axis=0)
        return self._shape(values, lengths, truncated)

    def _post(self, out: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.core_post == "softmax":
            return softmax(out.astype(np.float32))
        if self.core_post == "mean_pool_normalize":
            return mean_pool_normalize(out.astype(np.float32), mask)
        return out.astype(np.float32)

    def _shape(
        self, values: np.ndarray, lengths: np.ndarray, truncated: np.ndarray
    ) -> dict[str, np.ndarray]:
        common = {
            "NUM_TOKENS": lengths.reshape(-1, 1).astype(np.int32),
            "TRUNCATED": truncated.reshape(-1, 1),
        }
        if self.task == "feature-extraction":
            return {"EMBEDDING": values, **common}
        best = values.argmax(axis=1)
        return {
            "LABEL": self.label_bytes[best].reshape(-1, 1),
            "SCORE": values[np.arange(len(best)), best].reshape(-1, 1).astype(np.float32),
            "SCORES": values,
            **common,
        }


class OnnxRuntimeCore:
    def __init__(self, path: Path, params: dict[str, str]):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("ort_intra_op_threads", 1))
        options.inter_op_num_threads = 1
        # Spinning threads win on an idle machine and lose 2-3x when cores are shared
        # with other instances; the spec decides.
        spinning = params.get("ort_allow_spinning", "0")
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}

    def __call__(self, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
        if "token_type_ids" in self.input_names and "token_type_ids" not in feeds:
            feeds = {**feeds, "token_type_ids": np.zeros_like(feeds["input_ids"])}
        return self.session.run([output], {k: feeds[k] for k in self.input_names})[0]


class BlsCore:
    """gpu target: the ONNX core is an onnxruntime-backend model, called via BLS."""

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
        tensor = self.pb.get_output_tensor_by_name(response, output)
        return tensor.as_numpy()


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version = int(args["model_version"])
        version_dir = Path(args["model_repository"]) / str(version)
        core = None
        if params.get("core_model"):
            core = BlsCore(pb_utils, params["core_model"], version)
        self.pipeline = TextPipeline(version_dir, params, core_runner=core)
        self.output_names = [o["name"] for o in config["output"]]
        # Exported on Triton's metrics port: requests this model stopped because their
        # callers cancelled (the frontend cancels when its client disconnects).
        # The family must outlive its metric (Triton deletes both with the family object).
        self.cancelled_family = family = pb_utils.MetricFamily(
            name="infergate_runner_cancelled_requests",
            description="Requests stopped by the runner because the caller cancelled",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        labels = {
            "model": args["model_name"],
            "version": str(version),
            "instance": args["model_instance_name"],
        }
        self.cancelled_metric = family.Metric(labels=labels)

        # Requests this instance is executing right now (Triton's own pending count covers
        # only the queue): lets callers see that a request reached the model.
        self.active_family = active = pb_utils.MetricFamily(
            name="infergate_runner_active_requests",
            description="Requests the runner instance is executing",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self.active_metric = active.Metric(labels=labels)

    def execute(self, requests: list[Any]) -> list[Any]:
        self.active_metric.set(len(requests))
        try:
            return self._execute(requests)
        finally:
            self.active_metric.set(0)

    def _execute(self, requests: list[Any]) -> list[Any]:
        pb = self.pb
        responses: list[Any] = [None] * len(requests)
        texts: list[str] = []
        spans: list[tuple[int, int, int]] = []  # (request index, start, stop)
        for i, request in enumerate(requests):
            if request.is_cancelled():
                self.cancelled_metric.increment(1)
                responses[i] = self._cancelled()
                continue
            try:
                batch = decode_texts(pb.get_input_tensor_by_name(request, "TEXT").as_numpy())
            except InputError as exc:
                responses[i] = pb.InferenceResponse(
                    error=pb.TritonError(str(exc), pb.TritonError.INVALID_ARG)
                )
                continue
            spans.append((i, len(texts), len(texts) + len(batch)))
            texts.extend(batch)
        if texts:
            # One pass for every valid request of the dynamic batch.
            live = [requests[i] for i, _, _ in spans]
            try:
                outputs = self.pipeline.run(
                    texts, cancelled=lambda: all(r.is_cancelled() for r in live)
                )
            except Cancelled:
                self.cancelled_metric.increment(len(spans))
                for i, _, _ in spans:
                    responses[i] = self._cancelled()
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
        self.pipeline = None  # type: ignore[assignment]
