"""Builder of the "hf-image-classifier" kind (export/kinds.py): any Hugging Face
image-classification directory (ViT, DeiT, BiT/DINOv2, Swin... option ("path", D)),
exported by optimum (task "image-classification") and served by the `imagenet` runner
(runtime/image_model.py), so callers send encoded image bytes and get LABEL / SCORE /
SCORES / WIDTH / HEIGHT as from `imagenet`.

The preprocessing is what the directory's preprocessor_config.json declares, read here
through transformers' slow image processor (so class defaults and int sizes resolve as
transformers resolves them) and written into the runner's params as
runtime/image_pipeline.HfSteps: the runner needs no transformers. What HfSteps cannot
express is refused by name (padding, crop_pct, flipped channels, a shorter-edge resize
without a crop...). Labels: config.id2label, in index order.

The export-time check decodes the fidelity image set (export/fidelity_images.py) through
the served pipeline and compares, per image, its pixels with the processor's
pixel_values (<= 1e-5) and its probabilities with PyTorch's on those pixel_values
(<= 1e-4, top-1 identical); a failure raises, so nothing is published.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm
from tritonclient.grpc import model_config_pb2 as mc

from . import fidelity_images, image_export, sources
from . import triton_config as tc
from .cache import file_sha256
from .image_export import IMAGE_INPUT, outputs
from .runtime.image_pipeline import HfSteps
from .served import ServedSpec
from .spec import Target

ARTIFACT_FILES = ("model.onnx", "labels.json", "facts.json")
RUNTIME = "image_model.py"
RUNTIME_MODULES = ("batch_model.py", "image_input.py", "image_pipeline.py")
SOURCE_PACKAGES = ("optimum-onnx", "transformers", "onnx", "pillow", "scikit-image")
TASK = "image-classification"

DEFAULT_OPTIONS = {
    "max_image_bytes": str(20 * 1024 * 1024),
    "max_image_pixels": "40000000",
    "min_image_side": "16",
    "chunk_rows": "16",
}
MAX_PIXEL_DIFF = 1e-5  # our pixels vs the processor's pixel_values
MAX_PROB_DIFF = 1e-4  # the served probabilities vs PyTorch's
MIN_IMAGES = 20

# Keys of a processor's settings that never change the pixels of an RGB Pillow image:
# names, the output container, and RGB conversion (the runner always makes RGB itself).
INERT_KEYS = (
    {"_processor_class", "image_processor_type", "feature_extractor_type", "processor_class"}
    | {"auto_map", "do_convert_rgb", "return_tensors", "device", "disable_grouping"}
    | {"input_data_format", "model_input_names"}
    | {"default_to_square"}  # applied already: the processor's size is a dict
)
PIXEL_KEYS = {"do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale"} | {
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "data_format",
}
SUPPORTED = (
    "supported: do_resize with size {height, width} or {shortest_edge} and resample, "
    "do_center_crop with crop_size, do_rescale with rescale_factor, do_normalize with "
    "image_mean / image_std"
)


class HfImageExportError(RuntimeError):
    """The directory cannot be served by this kind, or the export-time check failed:
    nothing is published."""


# --- the directory's preprocessing and labels ---------------------------------------------


def steps_from_settings(settings: dict[str, Any]) -> HfSteps:
    """A slow image processor's settings (its to_dict()) -> HfSteps; HfImageExportError
    naming the key for anything that would change pixels in a way HfSteps does not."""
    for key, value in settings.items():
        if key in INERT_KEYS or key in PIXEL_KEYS:
            continue
        if value is None or value is False:  # a step switched off, an option unset
            continue
        raise HfImageExportError(
            f"preprocessor_config.json: {key!r} = {value!r} changes the pixels in a way "
            f"the hf-image-classifier kind does not reproduce ({SUPPORTED})"
        )
    if settings.get("data_format") not in (None, "channels_first"):
        raise HfImageExportError(
            f"preprocessor_config.json: 'data_format' = {settings['data_format']!r}; the "
            "graph's input is channels first"
        )
    if not settings.get("do_resize"):
        raise HfImageExportError(
            "preprocessor_config.json: 'do_resize' is off, so every image would keep its "
            "own size; the served graph takes one batch shape"
        )
    size = settings.get("size") or {}
    fields: dict[str, Any] = {"resample": int(settings.get("resample", 2))}
    if set(size) == {"height", "width"}:
        fields.update(resize_height=int(size["height"]), resize_width=int(size["width"]))
    elif set(size) == {"shortest_edge"}:
        fields["shortest_edge"] = int(size["shortest_edge"])
    else:
        raise HfImageExportError(
            f"preprocessor_config.json: 'size' = {size!r} is not supported ({SUPPORTED})"
        )
    if settings.get("do_center_crop"):
        crop = settings.get("crop_size") or {}
        if set(crop) != {"height", "width"}:
            raise HfImageExportError(f"preprocessor_config.json: 'crop_size' = {crop!r}")
        fields.update(crop_height=int(crop["height"]), crop_width=int(crop["width"]))
    elif "shortest_edge" in fields:
        raise HfImageExportError(
            "preprocessor_config.json: 'size' {shortest_edge} without 'do_center_crop' "
            "gives each image its own size; the served graph takes one batch shape"
        )
    if settings.get("do_rescale"):
        fields["rescale_factor"] = float(settings["rescale_factor"])
    if settings.get("do_normalize"):
        fields["image_mean"] = _three(settings, "image_mean")
        fields["image_std"] = _three(settings, "image_std")
    if "rescale_factor" not in fields and "image_mean" not in fields:
        raise HfImageExportError(
            "preprocessor_config.json: neither 'do_rescale' nor 'do_normalize': the "
            "pixel values would stay integers"
        )
    try:
        return HfSteps(**fields)
    except ValueError as exc:  # a crop larger than the resize (HF would pad with zeros)
        raise HfImageExportError(f"preprocessor_config.json: {exc}") from None


def _three(settings: dict[str, Any], key: str) -> tuple[float, ...]:
    value = settings.get(key)
    values = [value] * 3 if isinstance(value, int | float) else list(value or [])
    if len(values) != 3:
        raise HfImageExportError(f"preprocessor_config.json: {key!r} = {value!r} (3 values)")
    return tuple(float(v) for v in values)


def load_processor(model_dir: Path) -> Any:
    """The directory's slow (Pillow) image processor: the one HfSteps reproduces."""
    from transformers import AutoImageProcessor

    if not (model_dir / "preprocessor_config.json").is_file():
        raise HfImageExportError(f"{model_dir}: no preprocessor_config.json")
    try:
        return AutoImageProcessor.from_pretrained(str(model_dir), use_fast=False)
    except ValueError as exc:  # a fast-only processor class
        raise HfImageExportError(f"{model_dir}: no slow image processor ({exc})") from None


def class_labels(model_dir: Path) -> list[str]:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model_dir))
    if config.problem_type not in (None, "single_label_classification"):
        raise HfImageExportError(
            f"{model_dir}: problem_type {config.problem_type!r}; SCORES is a softmax "
            "over single-label classes"
        )
    labels = [str(config.id2label[i]) for i in range(config.num_labels)]
    if len(labels) < 2:
        raise HfImageExportError(f"{model_dir}: {len(labels)} label(s); a softmax needs 2")
    return labels


# --- runner params ---------------------------------------------------------------------------


def options(spec: ServedSpec) -> dict[str, str]:
    return {key: spec.option(key, default) for key, default in DEFAULT_OPTIONS.items()}


def runner_params(spec: ServedSpec, facts: dict[str, Any], threads: int) -> dict[str, str]:
    """The python runner's config params (the export-time check runs the same)."""
    return {
        **options(spec),
        **facts["preprocess"],
        "core_input": facts["core_input"],
        "core_output": facts["core_output"],
        "ort_intra_op_threads": str(threads),
        "ort_allow_spinning": "0",
    }


# --- build ---------------------------------------------------------------------------------


def export_graph(model_dir: Path, out_dir: Path, steps: HfSteps) -> tuple[str, str]:
    """optimum's graph as model.onnx, its input pinned to [batch, 3, H, W] (the runner
    only feeds that; Triton's core config and validate want static dims). Returns the
    graph's (input, output) names."""
    import onnx

    from .onnx_export import export_hf_directory

    work = out_dir / "_optimum"
    exported = export_hf_directory(str(model_dir), TASK, work)
    if any("onnx_data" in p.name for p in work.iterdir()):
        raise HfImageExportError(f"{model_dir}: the graph has external data (over 2 GB)")
    model = onnx.load(str(exported))
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise HfImageExportError(f"{model_dir}: the graph is not one image in, logits out")
    height, width = steps.output_size()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(list(dims)[1:], (3, height, width), strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = value
    onnx.checker.check_model(model)
    onnx.save(model, str(out_dir / "model.onnx"))
    shutil.rmtree(work, ignore_errors=True)
    return model.graph.input[0].name, model.graph.output[0].name


def reference(
    model_dir: Path, rgbs: list[Any], rows: int = 16
) -> tuple[np.ndarray, np.ndarray, str]:
    """transformers on the same RGB images: the processor's pixel_values, PyTorch's
    probabilities on them, and the processor's class name."""
    import torch
    from transformers import AutoModelForImageClassification

    processor = load_processor(model_dir)
    model = AutoModelForImageClassification.from_pretrained(str(model_dir)).eval()
    pixels, probs = [], []
    with torch.no_grad():
        for start in range(0, len(rgbs), rows):
            batch = processor(images=rgbs[start : start + rows], return_tensors="pt")
            values = batch["pixel_values"]
            pixels.append(values.numpy())
            probs.append(torch.softmax(model(pixel_values=values).logits, -1).numpy())
    return np.concatenate(pixels), np.concatenate(probs), type(processor).__name__


def fidelity(pipeline: Any, model_dir: Path, images: list[tuple[str, bytes]]) -> dict[str, Any]:
    """The served path (bytes -> ImagePipeline) vs transformers; raises on any failure."""
    from .runtime.image_input import decode_rgb

    if len(images) < MIN_IMAGES:
        raise HfImageExportError(f"the fidelity check needs {MIN_IMAGES} images")
    names = [name for name, _ in images]
    items = [pipeline.decode(np.array([[data]], dtype=np.object_), 0)[0] for _, data in images]
    rgbs = [decode_rgb(data, name, pipeline.limits) for name, data in images]
    served = pipeline.run(items)["SCORES"]
    ref_pixels, ref_probs, processor_name = reference(model_dir, rgbs)
    ours = np.stack([item.array for item in items])
    if ours.shape != ref_pixels.shape:
        raise HfImageExportError(f"pixels {ours.shape} but the processor's {ref_pixels.shape}")
    pixel_diff = np.abs(ours - ref_pixels).reshape(len(items), -1).max(axis=1)
    prob_diff = np.abs(served - ref_probs).max(axis=1)
    same_top1 = served.argmax(axis=1) == ref_probs.argmax(axis=1)
    problems = [
        f"{names[i]}: max |pixel diff| {pixel_diff[i]:.2e}"
        for i in np.flatnonzero(pixel_diff > MAX_PIXEL_DIFF)
    ]
    problems += [
        f"{names[i]}: max |prob diff| {prob_diff[i]:.2e}"
        for i in np.flatnonzero(prob_diff > MAX_PROB_DIFF)
    ]
    problems += [f"{names[i]}: top-1 differs" for i in np.flatnonzero(~same_top1)]
    if problems:
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise HfImageExportError(
            f"hf image fidelity check failed against the directory's {processor_name} "
            "and PyTorch: " + "; ".join(problems[:5]) + more
        )
    return {
        "hf_image_images": len(items),
        "hf_image_top1_identical": f"{int(same_top1.sum())}/{len(items)}",
        "hf_image_max_abs_prob_diff": float(prob_diff.max()),
        "hf_image_max_abs_pixel_diff": float(pixel_diff.max()),
    }


def build(spec: ServedSpec, out_dir: Path, bar: tqdm) -> dict[str, Any]:
    from .onnx_export import onnx_io
    from .runtime.image_pipeline import ImagePipeline

    model_dir = Path(spec.option("path", ""))
    if not (model_dir / "config.json").is_file():
        raise HfImageExportError(f"{model_dir}: not a Hugging Face model directory")
    processor = load_processor(model_dir)
    steps = steps_from_settings(processor.to_dict())
    labels = class_labels(model_dir)
    (out_dir / "labels.json").write_text(json.dumps(labels))

    bar.set_postfix_str(f"{spec.name}: optimum export")
    started = time.monotonic()
    core_input, core_output = export_graph(model_dir, out_dir, steps)
    export_s = time.monotonic() - started
    inputs, outputs_io = onnx_io(out_dir / "model.onnx")
    if outputs_io[core_output][1:] != [len(labels)]:
        raise HfImageExportError(f"logits {outputs_io[core_output]} but {len(labels)} labels")
    facts: dict[str, Any] = {
        "labels": labels,
        "preprocess": steps.as_params(),
        "image_height": steps.output_size()[0],
        "image_width": steps.output_size()[1],
        "core_input": core_input,
        "core_output": core_output,
        "reference_processor": type(processor).__name__,
    }

    bar.set_postfix_str(f"{spec.name}: fidelity check")
    started = time.monotonic()
    pipeline = ImagePipeline(out_dir, runner_params(spec, facts, threads=2))
    try:
        quality = fidelity(pipeline, model_dir, fidelity_images.fidelity_images())
    except HfImageExportError:
        raise
    except Exception as exc:  # e.g. a ViT traced at config.image_size, fed another size
        height, width = steps.output_size()
        raise HfImageExportError(
            f"{model_dir}: the model does not run on the {width}x{height} images its "
            f"preprocessor_config.json makes: {str(exc)[:300]}"
        ) from exc
    return {
        **facts,
        "quality": quality,
        "sources": [
            {
                "package": "huggingface-directory",
                "version": str(model_dir),
                "licence": "see the model directory",
            },
            *(sources.distribution_facts(name) for name in ("optimum-onnx", "transformers")),
        ],
        "artifact": {
            "file": "model.onnx",
            "sha256": file_sha256(out_dir / "model.onnx"),
            "bytes": (out_dir / "model.onnx").stat().st_size,
        },
        "onnx_io": {"inputs": inputs, "outputs": outputs_io},
        "export_seconds": round(export_s, 1),
        "fidelity_seconds": round(time.monotonic() - started, 1),
    }


# --- Triton configs and card -----------------------------------------------------------------


def config(spec: ServedSpec, target: Target, facts: dict[str, Any]) -> mc.ModelConfig:
    params = runner_params(spec, facts, spec.instances.cpu_threads)
    if target == "gpu":
        params["core_model"] = tc.core_name(spec.name)
        params["chunk_rows"] = str(spec.batching.max_batch_size)  # one BLS call a batch
    return tc.served_python_config(spec, (IMAGE_INPUT,), outputs(len(facts["labels"])), params)


def extra_configs(
    spec: ServedSpec, target: Target, facts: dict[str, Any]
) -> dict[str, mc.ModelConfig]:
    """gpu: the graph in an onnxruntime-backend core (as imagenet's, FP32 TensorRT)."""
    if target != "gpu":
        return {}
    shape = (3, int(facts["image_height"]), int(facts["image_width"]))
    return image_export.gpu_core(
        spec, facts["core_input"], shape, facts["core_output"], len(facts["labels"])
    )


def describe(steps: HfSteps) -> str:
    """The preprocessing in words, for the card."""
    filters = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
    how = filters.get(steps.resample, f"filter {steps.resample}")
    height, width = steps.output_size()
    if steps.shortest_edge:
        text = f"its shorter side is resized to {steps.shortest_edge} pixels ({how})"
    else:
        text = f"it is resized to {steps.resize_width}x{steps.resize_height} ({how}"
        text += ", the aspect ratio not kept)"
    if steps.crop_height:
        text += f", then the centre {width}x{height} is cut out (the edges are not seen)"
    return text


def card_fields(spec: ServedSpec, facts: dict[str, Any], target: str) -> dict[str, Any]:
    opts = options(spec)
    steps = HfSteps.from_params(facts["preprocess"])
    height, width = steps.output_size()
    values = []
    if steps.rescale_factor:
        values.append(f"scaled by {steps.rescale_factor:.6g}")
    if steps.image_mean:
        values.append(f"normalised by mean {list(steps.image_mean)} / std {list(steps.image_std)}")
    return {
        "truncation": (
            "images are not truncated or tiled: each is decoded in full (an animation's "
            "first frame), turned by its EXIF orientation and made RGB (alpha over white, "
            f"16-bit scaled to 8-bit), then, as the model directory's "
            f"{facts.get('reference_processor', 'image processor')} does it, "
            f"{describe(steps)}; pixel values {' and '.join(values)}. Images over "
            f"{opts['max_image_pixels']} pixels (width x height, read from the header "
            f"before decoding) or {opts['max_image_bytes']} bytes, or with a side under "
            f"{opts['min_image_side']} pixels, are refused"
        ),
        "score_kind": "probability",
        "score_meaning": f"softmax probability over the model's {len(facts['labels'])} "
        "classes (config.id2label; SCORES sums to 1; SCORE is the top class's)",
        # The card's one number: the side of the square input (the longer side if not).
        "image_size": max(height, width),
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
