"""The image runners' pipeline (`imagenet`, and the hf-image-classifier kind): encoded
images -> class probabilities.

Plain Python (no triton_python_backend_utils), so unit tests and the export-time
fidelity check drive the exact code the Triton model runs. `decode` reads each item in
full (image_input.py), so a bad file fails its own request only; `run` stacks the arrays
of every valid request of the dynamic batch and runs the ONNX core in chunks:
  - cpu target: onnxruntime in this process;
  - gpu target: the `<name>_core` onnxruntime-backend model, through BLS (`core`).
The core's tensor names are params (`core_input`, `core_output`; imagenet's by default),
and params `preprocess` = "hf" replace imagenet's preprocessing with HfSteps.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
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


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",")) if text else ()


@dataclass(frozen=True)
class HfSteps:
    """The hf-image-classifier kind's preprocessing: transformers' slow (Pillow) image
    processor (ViT, DeiT, BiT, CLIP) step for step and dtype for dtype, so the served
    pixels equal its pixel_values: resize with Pillow, to height x width or the shorter
    side to `shortest_edge` and the longer to int(edge * long / short) (HF truncates);
    centre crop by slicing from ((h - crop_h) // 2, (w - crop_w) // 2); x * rescale_factor
    in float64, cast to float32; (x - mean) / std in float32; channels first.
    export/hf_image_export.py turns preprocessor_config.json into these fields and refuses
    what they cannot express (padding, crop_pct, a crop larger than the resize)."""

    resize_height: int = 0  # a fixed resize (with resize_width), or 0 with shortest_edge
    resize_width: int = 0
    shortest_edge: int = 0
    resample: int = 2  # Pillow's filter code, as HF stores it (2 bilinear, 3 bicubic)
    crop_height: int = 0  # 0: no centre crop
    crop_width: int = 0
    rescale_factor: float = 0.0  # 0: no rescale
    image_mean: tuple[float, ...] = ()  # (): no normalisation
    image_std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        # A crop that always fits and one output size: the graph takes one batch shape.
        fixed = self.resize_height > 0 and self.resize_width > 0
        if fixed == (self.shortest_edge > 0):
            raise ValueError("hf preprocessing: give resize_height/width or shortest_edge")
        if self.shortest_edge and not self.crop_height:
            raise ValueError("hf preprocessing: shortest_edge needs a centre crop")
        limit = (self.resize_height, self.resize_width) if fixed else (self.shortest_edge,) * 2
        if (self.crop_height > 0) != (self.crop_width > 0):
            raise ValueError("hf preprocessing: crop_height and crop_width go together")
        if self.crop_height > limit[0] or self.crop_width > limit[1]:
            raise ValueError(f"hf preprocessing: crop larger than the resize {limit}")
        if len(self.image_mean) not in (0, 3) or len(self.image_std) != len(self.image_mean):
            raise ValueError("hf preprocessing: image_mean and image_std need 3 values each")

    @classmethod
    def from_params(cls, params: dict[str, str]) -> HfSteps:
        def number(key: str) -> int:
            return int(params.get(key, "0"))

        return cls(
            resize_height=number("resize_height"),
            resize_width=number("resize_width"),
            shortest_edge=number("shortest_edge"),
            resample=int(params.get("resample", "2")),
            crop_height=number("crop_height"),
            crop_width=number("crop_width"),
            rescale_factor=float(params.get("rescale_factor", "0")),
            image_mean=_floats(params.get("image_mean", "")),
            image_std=_floats(params.get("image_std", "")),
        )

    def as_params(self) -> dict[str, str]:
        # repr: the shortest text that reads back as the same float (1/255 exactly).
        return {
            "preprocess": "hf",
            "resize_height": str(self.resize_height),
            "resize_width": str(self.resize_width),
            "shortest_edge": str(self.shortest_edge),
            "resample": str(self.resample),
            "crop_height": str(self.crop_height),
            "crop_width": str(self.crop_width),
            "rescale_factor": repr(self.rescale_factor),
            "image_mean": ",".join(repr(x) for x in self.image_mean),
            "image_std": ",".join(repr(x) for x in self.image_std),
        }

    def output_size(self) -> tuple[int, int]:
        """(height, width) of every array this produces."""
        if self.crop_height:
            return (self.crop_height, self.crop_width)
        return (self.resize_height, self.resize_width)

    def resize_size(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) before the crop: transformers' get_resize_output_image_size."""
        if not self.shortest_edge:
            return (self.resize_height, self.resize_width)
        short, long = (width, height) if width <= height else (height, width)
        edge = self.shortest_edge
        new_long = int(edge * long / short)
        return (new_long, edge) if width <= height else (edge, new_long)

    def __call__(self, rgb: Any) -> np.ndarray:
        from PIL import Image

        height, width = self.resize_size(rgb.width, rgb.height)
        resized = rgb.resize((width, height), Image.Resampling(self.resample), reducing_gap=None)
        pixels = np.asarray(resized)
        if self.crop_height:
            top = (height - self.crop_height) // 2
            left = (width - self.crop_width) // 2
            pixels = pixels[top : top + self.crop_height, left : left + self.crop_width]
        if self.rescale_factor:
            values = (pixels.astype(np.float64) * self.rescale_factor).astype(np.float32)
        else:
            values = pixels.astype(np.float32)
        if self.image_mean:
            mean = np.array(self.image_mean, dtype=np.float32)
            values = (values - mean) / np.array(self.image_std, dtype=np.float32)
        return np.ascontiguousarray(values.transpose(2, 0, 1))


def softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class OnnxImageCore:
    """cpu target: the exported graph in onnxruntime, [n, 3, H, W] -> logits."""

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
        self.preprocess = HfSteps.from_params(params) if params.get("preprocess") == "hf" else None
        self.core_input = params.get("core_input", CORE_INPUT)
        self.core_output = params.get("core_output", CORE_OUTPUT)
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
            items.append(decode_image(bytes(item), where, self.limits, self.preprocess))
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
            logits = self.core({self.core_input: chunk}, self.core_output)
            pieces.append(np.asarray(logits, np.float32))
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
