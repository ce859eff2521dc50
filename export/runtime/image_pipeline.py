"""The `imagenet` runner's pipeline: encoded images -> class probabilities.

Plain Python (no triton_python_backend_utils), so unit tests and the export-time
fidelity check drive the exact code the Triton model runs. `decode` reads each item in
full (image_input.py), so a bad file fails its own request only; `run` stacks the arrays
of every valid request of the dynamic batch and runs the ONNX core in chunks:
  - cpu target: onnxruntime in this process;
  - gpu target: the `<name>_core` onnxruntime-backend model, through BLS (`core`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

try:
    from .batch_model import BatchCancelled, ItemError
    from .image_input import DecodedImage, ImageLimits, decode_image
except ImportError:  # copied flat into the model repository
    from batch_model import BatchCancelled, ItemError  # type: ignore[no-redef]
    from image_input import DecodedImage, ImageLimits, decode_image  # type: ignore[no-redef]

INPUT = "IMAGE"
CORE_INPUT = "input"
CORE_OUTPUT = "logits"


def softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class OnnxImageCore:
    """cpu target: the exported graph in onnxruntime, `input` [n, 3, S, S] -> `logits`."""

    def __init__(self, path: Path, params: dict[str, str]):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("ort_intra_op_threads", 1))
        options.inter_op_num_threads = 1
        # Spinning threads win on an idle machine and lose when cores are shared with
        # other instances; the spec decides (as for the text models).
        spinning = params.get("ort_allow_spinning", "0")
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
        return self.session.run([output], feeds)[0]


class ImagePipeline:
    def __init__(self, version_dir: Path, params: dict[str, str], core: Any = None):
        self.limits = ImageLimits.from_params(params)
        # Rows per core call: bounds the float32 batch held at once (0.6 MB a row at
        # 224 px) and how soon a batch whose callers all left stops.
        self.chunk_rows = int(params.get("chunk_rows", 16))
        self.labels: list[str] = json.loads((version_dir / "labels.json").read_text())
        self.label_bytes = np.array([s.encode("utf-8") for s in self.labels], dtype=np.object_)
        self.core = core or OnnxImageCore(version_dir / "model.onnx", params)

    def decode(self, raw: np.ndarray, offset: int = 0) -> list[DecodedImage]:
        """An IMAGE tensor ([n, 1] of bytes) -> one decoded, preprocessed image per row."""
        flat = raw.reshape(-1)
        if flat.size == 0:
            raise ItemError(f"{INPUT} holds no items (a batch of zero)")
        items: list[DecodedImage] = []
        for i, item in enumerate(flat):
            where = f"{INPUT}[{offset + i}]"
            if not isinstance(item, bytes | np.bytes_):
                raise ItemError(f"{where} must be bytes, got {type(item).__name__}")
            items.append(decode_image(bytes(item), where, self.limits))
        return items

    def logits(
        self, items: list[DecodedImage], cancelled: Callable[[], bool] | None = None
    ) -> np.ndarray:
        """The core's raw output for each item, in order ([n, classes] float32)."""
        pieces: list[np.ndarray] = []
        for start in range(0, len(items), self.chunk_rows):
            if start and cancelled is not None and cancelled():
                raise BatchCancelled(f"cancelled after {start} of {len(items)} images")
            chunk = np.stack([item.array for item in items[start : start + self.chunk_rows]])
            pieces.append(np.asarray(self.core({CORE_INPUT: chunk}, CORE_OUTPUT), np.float32))
        return np.concatenate(pieces, axis=0)

    def run(
        self, items: list[DecodedImage], cancelled: Callable[[], bool] | None = None
    ) -> dict[str, np.ndarray]:
        scores = softmax(self.logits(items, cancelled)).astype(np.float32)
        best = scores.argmax(axis=1)
        return {
            "LABEL": self.label_bytes[best].reshape(-1, 1),
            "SCORE": scores[np.arange(len(best)), best].reshape(-1, 1),
            "SCORES": scores,
            "WIDTH": np.array([[item.width] for item in items], dtype=np.int32),
            "HEIGHT": np.array([[item.height] for item in items], dtype=np.int32),
        }
