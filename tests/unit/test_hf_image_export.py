"""The hf-image-classifier kind (export/hf_image_export.py) on tiny random ViTs built here:
optimum's graph served by the image runner against PyTorch and transformers' own image
processors (pixels and probabilities), the preprocessing refusals, configs and card.
Without Triton; the export runs once per module (seconds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image
from tritonclient.grpc import model_config_pb2 as mc

from export import cards, fidelity_images
from export import hf_image_export as hf
from export.onnx_export import onnx_io
from export.runtime.image_input import ImageLimits, decode_image, decode_rgb
from export.runtime.image_pipeline import HfSteps, ImagePipeline
from export.served import ServedSpec
from tests.tiny_hf import IMAGE_LABELS as LABELS
from tests.tiny_hf import tiny_vit

KIND: Any = "hf-image-classifier"  # (served.Kind gains it in export/served.py)


class Bar:
    def set_postfix_str(self, text: str) -> None:
        pass


def spec_for(path: Path, name: str = "tiny_vit") -> ServedSpec:
    return ServedSpec(
        name=name,
        task="image-classification",
        kind=KIND,
        package="",
        description="a tiny random ViT",
        licence="see the model directory",
        version_description="random",
        max_length=1,
        options=(("path", str(path)),),
    )


@pytest.fixture(scope="module")
def images() -> list[tuple[str, bytes]]:
    return fidelity_images.fidelity_images()


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory) -> Path:
    return tiny_vit(tmp_path_factory.mktemp("vit") / "model")


@pytest.fixture(scope="module")
def built(tmp_path_factory, vit_dir) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("artifact")
    facts = hf.build(spec_for(vit_dir), out, Bar())  # raises when its own check fails
    return out, facts


def rgb_images(images: list[tuple[str, bytes]]) -> list[Any]:
    return [decode_rgb(data, name, ImageLimits()) for name, data in images]


# --- the served path against transformers ----------------------------------------------------


def test_served_probabilities_and_pixels_match_transformers(built, vit_dir, images):
    import torch
    from transformers import ViTForImageClassification, ViTImageProcessor

    out, facts = built
    pipeline = ImagePipeline(out, hf.runner_params(spec_for(vit_dir), facts, threads=2))
    raw = np.array([[data] for _, data in images], dtype=np.object_)
    items = pipeline.decode(raw)
    served = pipeline.run(items)
    processor = ViTImageProcessor.from_pretrained(vit_dir)
    model = ViTForImageClassification.from_pretrained(vit_dir).eval()
    pixel_values = processor(images=rgb_images(images), return_tensors="pt").pixel_values
    with torch.no_grad():
        reference = torch.softmax(model(pixel_values).logits, -1).numpy()
    assert len(images) >= 20
    ours = np.stack([item.array for item in items])
    assert ours.dtype == np.float32 and ours.shape == (len(images), 3, 32, 32)
    assert np.abs(ours - pixel_values.numpy()).max() <= 1e-5
    assert np.abs(served["SCORES"] - reference).max() <= 1e-4
    assert (served["SCORES"].argmax(1) == reference.argmax(1)).all()
    assert [b.decode() for b in served["LABEL"][:, 0]] == [LABELS[i] for i in reference.argmax(1)]
    assert served["WIDTH"].dtype == served["HEIGHT"].dtype == np.int32
    # The tiny model's classes are not all one: the top-1 comparison means something.
    assert len(set(reference.argmax(1))) >= 2


def test_build_records_its_check(built):
    out, facts = built
    quality = facts["quality"]
    assert quality["hf_image_images"] == len(fidelity_images.fidelity_images()) >= 20
    assert quality["hf_image_top1_identical"] == f"{quality['hf_image_images']}/" + str(
        quality["hf_image_images"]
    )
    assert quality["hf_image_max_abs_prob_diff"] <= 1e-4
    assert quality["hf_image_max_abs_pixel_diff"] <= 1e-5
    assert facts["labels"] == LABELS == json.loads((out / "labels.json").read_text())
    assert (facts["core_input"], facts["core_output"]) == ("pixel_values", "logits")
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "model.onnx"]
    inputs, outputs = onnx_io(out / "model.onnx")
    assert inputs == {"pixel_values": ["batch_size", 3, 32, 32]}  # pinned for Triton
    assert outputs == {"logits": ["batch_size", 5]}
    assert set(hf.ARTIFACT_FILES) == {"model.onnx", "labels.json", "facts.json"}


def test_the_check_refuses_a_differing_runner(built, vit_dir, images):
    out, facts = built
    pipeline = ImagePipeline(out, hf.runner_params(spec_for(vit_dir), facts, threads=1))
    few = images[:20]

    class Off:  # the served path with one probability, or one pixel, moved
        limits = pipeline.limits

        def __init__(self, prob: float = 0.0, pixel: float = 0.0) -> None:
            self.prob, self.pixel = prob, pixel

        def decode(self, raw: np.ndarray, offset: int) -> list:
            items = pipeline.decode(raw, offset)
            items[0].array[0, 0, 0] += self.pixel
            return items

        def run(self, items: list) -> dict:
            out = pipeline.run(items)
            out["SCORES"][0, 0] += self.prob
            return out

    assert hf.fidelity(Off(), vit_dir, few)["hf_image_images"] == 20  # the control
    with pytest.raises(hf.HfImageExportError, match="prob diff"):
        hf.fidelity(Off(prob=1e-3), vit_dir, few)
    with pytest.raises(hf.HfImageExportError, match="pixel diff"):
        hf.fidelity(Off(pixel=1e-4), vit_dir, few)
    with pytest.raises(hf.HfImageExportError, match="needs 20 images"):
        hf.fidelity(Off(), vit_dir, few[:19])


# --- preprocessing: HfSteps against the processors -----------------------------------------


def _processors() -> list[Any]:
    from transformers import BitImageProcessor, DeiTImageProcessor, ViTImageProcessor

    r = Image.Resampling
    ints: dict[str, Any] = {"crop_size": 32, "size": 48}  # int sizes, as old configs have
    return [
        # shortest_edge + centre crop (BiT / DINOv2 / CLIP style), bicubic
        BitImageProcessor(size={"shortest_edge": 37}, crop_size={"height": 32, "width": 32}),
        BitImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 200}),
        # fixed non-square resize, then a crop (DeiT style)
        DeiTImageProcessor(size={"height": 40, "width": 45}, crop_size=ints["crop_size"]),
        # ViT style: fixed resize, no crop; an int size, bilinear / nearest / lanczos
        ViTImageProcessor(size=ints["size"], resample=r.BILINEAR),
        ViTImageProcessor(size={"height": 30, "width": 50}, resample=r.NEAREST),
        ViTImageProcessor(size={"height": 64, "width": 64}, resample=r.LANCZOS, do_normalize=False),
        ViTImageProcessor(size={"height": 32, "width": 32}, do_rescale=False),
    ]


@pytest.mark.parametrize("index", range(7))
def test_steps_reproduce_the_processor_pixels(index, images):
    processor = _processors()[index]
    steps = hf.steps_from_settings(processor.to_dict())
    assert HfSteps.from_params(steps.as_params()) == steps  # the runner's params round-trip
    picked = images[::3]
    ours = np.stack([decode_image(d, n, ImageLimits(), steps).array for n, d in picked])
    theirs = processor(images=rgb_images(picked), return_tensors="np").pixel_values
    assert ours.dtype == theirs.dtype == np.float32
    assert ours.shape == theirs.shape == (len(picked), 3, *steps.output_size())
    assert np.abs(ours - theirs).max() <= 1e-5


def test_shortest_edge_rounds_as_transformers():
    steps = HfSteps(shortest_edge=224, crop_height=224, crop_width=224)
    # int(224 * 451 / 300) = 336 (336.74: truncated, not rounded)
    assert steps.resize_size(451, 300) == (224, 336)
    assert steps.resize_size(300, 451) == (336, 224)
    assert steps.resize_size(100, 100) == (224, 224)


# --- refusals --------------------------------------------------------------------------------


def _vit_settings(**changes: Any) -> dict[str, Any]:
    from transformers import ViTImageProcessor

    return {**ViTImageProcessor(size={"height": 32, "width": 32}).to_dict(), **changes}


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"crop_pct": 0.875}, "'crop_pct' = 0.875"),
        ({"do_pad": True, "pad_size": {"height": 40, "width": 40}}, "'do_pad' = True"),
        ({"do_flip_channel_order": True}, "'do_flip_channel_order'"),
        ({"do_resize": False}, "'do_resize' is off"),
        ({"size": {"shortest_edge": 32}}, "without 'do_center_crop'"),
        ({"size": {"longest_edge": 32}}, "'size' = {'longest_edge': 32}"),
        ({"do_center_crop": True, "crop_size": {"height": 40, "width": 40}}, "crop larger"),
        ({"data_format": "channels_last"}, "'data_format' = 'channels_last'"),
        ({"do_rescale": False, "do_normalize": False}, "stay integers"),
        ({"image_mean": [0.5, 0.5]}, "'image_mean'"),
    ],
)
def test_refused_settings_name_the_key(changes, says):
    with pytest.raises(hf.HfImageExportError, match=r"preprocessor_config\.json") as err:
        hf.steps_from_settings(_vit_settings(**changes))
    assert says in str(err.value)


def test_switched_off_and_naming_keys_are_accepted():
    fast_style = _vit_settings(
        do_pad=None, pad_size=None, crop_pct=None, do_center_crop=None, crop_size=None,
        default_to_square=True, device=None, disable_grouping=None, return_tensors=None,
        data_format="channels_first", do_convert_rgb=True, do_reduce_labels=False,
    )  # fmt: skip
    steps = hf.steps_from_settings(fast_style)
    assert steps == HfSteps(
        resize_height=32,
        resize_width=32,
        resample=2,
        rescale_factor=1 / 255,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
    )


def test_a_convnext_directory_is_refused_before_export(tmp_path):
    from transformers import ConvNextImageProcessor

    model_dir = tiny_vit(tmp_path / "model", ConvNextImageProcessor(size={"shortest_edge": 32}))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(hf.HfImageExportError, match="'crop_pct'"):
        hf.build(spec_for(model_dir), out, Bar())
    assert list(out.iterdir()) == []  # nothing exported


def test_a_processor_with_hidden_steps_fails_the_check(tmp_path):
    """LeViT's processor resizes to 256/224 of its shortest_edge, which its settings do not
    say: the settings pass, the pixel comparison does not, and build() raises."""
    from transformers import LevitImageProcessor

    processor = LevitImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    model_dir = tiny_vit(tmp_path / "model", processor)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(hf.HfImageExportError, match="LevitImageProcessor") as err:
        hf.build(spec_for(model_dir), out, Bar())
    assert "pixel diff" in str(err.value) and "more" in str(err.value)


def test_a_size_the_graph_cannot_take_is_refused(tmp_path):
    from transformers import ViTImageProcessor

    processor = ViTImageProcessor(size={"height": 48, "width": 48})  # the ViT is 32 px
    model_dir = tiny_vit(tmp_path / "model", processor)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(hf.HfImageExportError, match="does not run on the 48x48 images"):
        hf.build(spec_for(model_dir), out, Bar())


def test_labels_follow_id2label_and_multi_label_is_refused(tmp_path, vit_dir):
    assert hf.class_labels(vit_dir) == LABELS
    config = json.loads((vit_dir / "config.json").read_text())
    other = tmp_path / "multi"
    other.mkdir()
    config["problem_type"] = "multi_label_classification"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(hf.HfImageExportError, match="multi_label_classification"):
        hf.class_labels(other)


# --- configs and card ------------------------------------------------------------------------


def _round_trip(config: mc.ModelConfig) -> mc.ModelConfig:
    return text_format.Parse(text_format.MessageToString(config), mc.ModelConfig())


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_python_model_config(built, vit_dir, target):
    out, facts = built
    spec = spec_for(vit_dir)
    config = _round_trip(hf.config(spec, target, facts))
    assert config.backend == "python"
    assert [(t.name, list(t.dims)) for t in config.input] == [("IMAGE", [1])]
    assert [(t.name, list(t.dims)) for t in config.output] == [
        ("LABEL", [1]),
        ("SCORE", [1]),
        ("SCORES", [5]),
        ("WIDTH", [1]),
        ("HEIGHT", [1]),
    ]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["preprocess"] == "hf" and params["core_input"] == "pixel_values"
    assert params.get("core_model") == ("tiny_vit_core" if target == "gpu" else None)
    # What Triton hands the runner builds the same pipeline the check measured.
    pipeline = ImagePipeline(out, params) if target == "cpu" else None
    if pipeline is not None:
        assert pipeline.preprocess == HfSteps.from_params(facts["preprocess"])
    extra = hf.extra_configs(spec, target, facts)
    if target == "cpu":
        assert extra == {}
        return
    core = _round_trip(extra["tiny_vit_core"])
    assert core.backend == "onnxruntime"
    assert [(t.name, list(t.dims)) for t in core.input] == [("pixel_values", [3, 32, 32])]
    assert [(t.name, list(t.dims)) for t in core.output] == [("logits", [5])]
    graph = facts["onnx_io"]
    assert graph["inputs"]["pixel_values"][1:] == [3, 32, 32]


def test_card_fields(built, vit_dir):
    _, facts = built
    spec = spec_for(vit_dir)
    fields = hf.card_fields(spec, facts, "cpu")
    card = cards.served_card(spec, facts, "cpu", fields)  # raises on an unknown field
    assert card["task"] == "image-classification" and card["labels"] == LABELS
    assert (card["image_size"], card["max_image_pixels"]) == (32, 40_000_000)
    assert card["max_image_bytes"] == 20 * 1024 * 1024
    assert card["score_kind"] == "probability"
    assert "resized to 32x32 (bilinear" in card["truncation"]
    assert "mean [0.5, 0.4, 0.3]" in card["truncation"]
    assert card["triton_io"]["outputs"] == ["LABEL", "SCORE", "SCORES", "WIDTH", "HEIGHT"]
    assert card["quality"]["hf_image_top1_identical"].endswith("/80")
    cards.card_markdown(card)  # every quality figure formats
