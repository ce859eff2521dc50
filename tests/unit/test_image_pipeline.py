"""The imagenet runner's pipeline against PyTorch, its batching, and its Triton configs
(export/image_export.py, export/runtime/image_pipeline.py), without Triton.

The ONNX graph is exported once per module into a temporary folder (a few seconds)."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image
from tritonclient.grpc import model_config_pb2 as mc

from export import fidelity_images, image_export
from export.onnx_export import onnx_io
from export.runtime.batch_model import BatchCancelled, ItemError
from export.runtime.image_pipeline import HfSteps, ImagePipeline
from export.served_catalog import IMAGENET


@pytest.fixture(scope="module")
def model():
    return image_export.load_model()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model) -> Path:
    out = tmp_path_factory.mktemp("imagenet")
    image_export.export_onnx(model, out / "model.onnx")
    (out / "labels.json").write_text(json.dumps(image_export.class_names()))
    return out


@pytest.fixture(scope="module")
def pipeline(exported) -> ImagePipeline:
    return ImagePipeline(exported, image_export.runner_params(IMAGENET, threads=2))


@pytest.fixture(scope="module")
def images() -> list[tuple[str, bytes]]:
    return fidelity_images.fidelity_images()


def tensor(items: list) -> np.ndarray:
    return np.array([[item] for item in items], dtype=np.object_)


def facts(exported: Path) -> dict:
    inputs, outputs = onnx_io(exported / "model.onnx")
    return {
        "labels": json.loads((exported / "labels.json").read_text()),
        "image_size": 224,
        "onnx_io": {"inputs": inputs, "outputs": outputs},
    }


# --- fidelity --------------------------------------------------------------------------


def test_served_path_matches_pytorch(pipeline, model, images):
    quality = image_export.fidelity(pipeline, model, images)  # raises on any failure
    assert quality["images"] == len(images) >= 50
    assert quality["top5_identical"] == quality["images"]
    assert quality["max_abs_logit_diff"] < 1e-4
    assert quality["coffee_top1"] == "espresso"
    assert quality["coffee_score"] > 0.9
    assert quality["cat_top1"] in image_export.CAT_CLASSES


def test_known_photos_fix_the_label_order(pipeline, images):
    data = dict(images)
    out = pipeline.run(pipeline.decode(tensor([data["chelsea.png"], data["coffee.png"]])))
    top3 = [[pipeline.labels[i] for i in np.argsort(-row)[:3]] for row in out["SCORES"]]
    # Chelsea (a tabby): the three domestic-cat classes, Egyptian cat among the top two.
    assert set(top3[0]) == {"tiger cat", "Egyptian cat", "tabby"}
    assert "Egyptian cat" in top3[0][:2]
    assert top3[1][0] == "espresso"
    assert out["LABEL"][1, 0] == b"espresso"


def test_class_names():
    names = image_export.class_names()
    assert len(names) == len(set(names)) == 1000
    assert (names[0], names[285], names[967]) == ("tench", "Egyptian cat", "espresso")
    assert (names[134], names[517]) == ("crane bird", "construction crane")  # both "crane"


def test_onnx_graph_io(exported):
    inputs, outputs = onnx_io(exported / "model.onnx")
    assert inputs == {"input": ["batch", 3, 224, 224]}
    assert outputs == {"logits": ["batch", 1000]}


# --- batching --------------------------------------------------------------------------


def test_batch_keeps_order_and_matches_single_runs(exported, images):
    chunked = ImagePipeline(
        exported, {**image_export.runner_params(IMAGENET, threads=2), "chunk_rows": "3"}
    )
    picked = [images[i] for i in (8, 4, 31, 14, 0, 60, 22)]  # 3 chunks: 3 + 3 + 1
    batch = chunked.run(chunked.decode(tensor([data for _, data in picked])))
    assert batch["SCORES"].shape == (7, 1000)
    for name in ("LABEL", "SCORE", "WIDTH", "HEIGHT"):
        assert batch[name].shape == (7, 1)
    assert batch["SCORES"].dtype == batch["SCORE"].dtype == np.float32
    assert batch["WIDTH"].dtype == batch["HEIGHT"].dtype == np.int32
    np.testing.assert_allclose(batch["SCORES"].sum(axis=1), 1.0, atol=1e-5)
    for row, (name, data) in enumerate(picked):
        single = chunked.run(chunked.decode(tensor([data])))
        np.testing.assert_allclose(batch["SCORES"][row], single["SCORES"][0], atol=1e-6)
        assert batch["LABEL"][row, 0] == single["LABEL"][0, 0], name
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
        if name.endswith("exif6.jpg"):
            width, height = height, width
        assert (batch["WIDTH"][row, 0], batch["HEIGHT"][row, 0]) == (width, height)


class RowIndexCore:
    """Fake core: each row's logits peak at the class given by its first pixel."""

    def __init__(self):
        self.chunks: list[int] = []

    def __call__(self, feeds, output):
        x = feeds["input"]
        self.chunks.append(len(x))
        logits = np.zeros((len(x), 1000), np.float32)
        logits[np.arange(len(x)), np.rint(x[:, 0, 0, 0] * 128 + 127).astype(int)] = 10.0
        return logits


def _grey(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (value, value, value)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def fake(tmp_path) -> tuple[ImagePipeline, RowIndexCore]:
    (tmp_path / "labels.json").write_text(json.dumps([f"class {i}" for i in range(1000)]))
    core = RowIndexCore()
    params = {**image_export.runner_params(IMAGENET, threads=1), "chunk_rows": "2"}
    return ImagePipeline(tmp_path, params, core), core


def test_rows_come_back_in_order_across_chunks(fake):
    pipeline, core = fake
    values = [200, 3, 77, 140, 9]
    out = pipeline.run(pipeline.decode(tensor([_grey(v) for v in values])))
    assert core.chunks == [2, 2, 1]
    assert [label.decode() for label in out["LABEL"][:, 0]] == [f"class {v}" for v in values]


def test_cancelled_batch_stops_between_chunks(fake):
    pipeline, core = fake
    items = pipeline.decode(tensor([_grey(v) for v in (1, 2, 3, 4, 5)]))
    with pytest.raises(BatchCancelled, match="after 2 of 5"):
        pipeline.run(items, lambda: True)
    assert core.chunks == [2]  # the first chunk runs; polling starts after it


def test_decode_names_the_item_with_its_offset(fake):
    pipeline, _ = fake
    with pytest.raises(ItemError, match=r"^IMAGE\[6\] is empty \(0 bytes\)$"):
        pipeline.decode(tensor([_grey(5), b""]), offset=5)
    with pytest.raises(ItemError, match=r"^IMAGE\[1\]: not a JPEG, PNG, WebP or GIF"):
        pipeline.decode(tensor([_grey(5), b"plain text"]))
    with pytest.raises(ItemError, match=r"^IMAGE\[0\] must be bytes, got int"):
        pipeline.decode(tensor([7]))
    with pytest.raises(ItemError, match="batch of zero"):
        pipeline.decode(np.zeros((0, 1), dtype=np.object_))


def test_model_py_builds_the_pipeline(exported, monkeypatch):
    """model.py as Triton loads it: by path, its modules imported flat beside it."""
    path = Path(image_export.__file__).parent / "runtime" / image_export.RUNTIME
    monkeypatch.setattr(sys, "path", list(sys.path))  # model.py prepends its folder
    flat = ("batch_model", "image_input", "image_pipeline")
    before = {name: sys.modules.pop(name, None) for name in flat}
    try:
        spec = importlib.util.spec_from_file_location("imagenet_model_py", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert all(name in sys.modules for name in flat)
    finally:  # other tests must not find the flat copies
        for name, old in before.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    runner = module.TritonPythonModel()
    assert runner.input_name == "IMAGE"
    built = runner.make_pipeline(exported, image_export.runner_params(IMAGENET, 1), None)
    assert type(built).__name__ == "ImagePipeline"
    for name in image_export.RUNTIME_MODULES:
        assert (path.parent / name).is_file()


# --- configs and card ------------------------------------------------------------------


def _round_trip(config: mc.ModelConfig) -> mc.ModelConfig:
    return text_format.Parse(text_format.MessageToString(config), mc.ModelConfig())


def _io(tensors) -> list[tuple[str, str, list[int]]]:
    return [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in tensors]


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_python_model_config(exported, target):
    config = _round_trip(image_export.config(IMAGENET, target, facts(exported)))
    assert config.name == "imagenet" and config.backend == "python"
    assert config.max_batch_size == IMAGENET.batching.max_batch_size == 32
    assert _io(config.input) == [("IMAGE", "TYPE_STRING", [1])]
    assert _io(config.output) == [
        ("LABEL", "TYPE_STRING", [1]),
        ("SCORE", "TYPE_FP32", [1]),
        ("SCORES", "TYPE_FP32", [1000]),
        ("WIDTH", "TYPE_INT32", [1]),
        ("HEIGHT", "TYPE_INT32", [1]),
    ]
    assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["max_image_pixels"] == "40000000"
    assert params["max_image_bytes"] == str(20 * 1024 * 1024)
    assert params["image_size"] == "224"
    assert params.get("core_model") == ("imagenet_core" if target == "gpu" else None)
    assert list(config.version_policy.specific.versions) == [1]


def test_gpu_core_config(exported):
    assert image_export.extra_configs(IMAGENET, "cpu", facts(exported)) == {}
    extra = image_export.extra_configs(IMAGENET, "gpu", facts(exported))
    assert list(extra) == ["imagenet_core"]
    core = _round_trip(extra["imagenet_core"])
    assert core.backend == "onnxruntime"
    assert core.max_batch_size == 32
    assert _io(core.input) == [("input", "TYPE_FP32", [3, 224, 224])]
    assert _io(core.output) == [("logits", "TYPE_FP32", [1000])]
    # The core's tensors are the graph's, less the batch dimension.
    graph = facts(exported)["onnx_io"]
    assert graph["inputs"]["input"][1:] == [3, 224, 224]
    assert graph["outputs"]["logits"][1:] == [1000]
    assert [g.kind for g in core.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    accelerator = core.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.parameters["precision_mode"] == "FP32"


def test_card_fields(exported):
    fields = image_export.card_fields(IMAGENET, facts(exported), "cpu")
    assert fields["score_kind"] == "probability"
    assert (fields["image_size"], fields["max_image_pixels"]) == (224, 40_000_000)
    assert fields["max_image_bytes"] == 20 * 1024 * 1024
    assert "centre square" in fields["truncation"] and "refused" in fields["truncation"]
    assert fields["triton_io"]["inputs"].keys() == {"IMAGE"}
    assert fields["triton_io"]["outputs"] == ["LABEL", "SCORE", "SCORES", "WIDTH", "HEIGHT"]
    assert fields["triton_io"]["decoupled"] is False


def test_the_fidelity_check_refuses_a_differing_runner(pipeline, model, images):
    """The export-time check raises (the build keeps no artifact) when the served path
    moves one logit past the 1e-4 bound."""
    from export import fidelity_images

    few = [item for item in images if item[0] in (fidelity_images.CAT, fidelity_images.COFFEE)]

    class Off:  # the served path, with one logit moved
        def __init__(self, delta: float) -> None:
            self.delta = delta

        def decode(self, raw: np.ndarray, offset: int) -> list:
            return pipeline.decode(raw, offset)

        def logits(self, items: list) -> np.ndarray:
            out = pipeline.logits(items).copy()
            out[0, 0] += self.delta
            return out

        def run(self, items: list) -> dict:
            return pipeline.run(items)

    assert image_export.fidelity(Off(0.0), model, few)["images"] == 2  # the control
    with pytest.raises(RuntimeError, match="logit diff"):
        image_export.fidelity(Off(1e-3), model, few)


# --- the core's names and another kind's preprocessing (hf-image-classifier) ---------------


def test_imagenet_params_keep_the_imagenet_path():
    params = image_export.runner_params(IMAGENET, threads=1)
    assert not {"preprocess", "core_input", "core_output"} & set(params)
    assert set(params) == {
        "max_image_bytes",
        "max_image_pixels",
        "min_image_side",
        "crop_fraction",
        "chunk_rows",
        "image_size",
        "ort_intra_op_threads",
        "ort_allow_spinning",
    }


def test_fake_core_pipeline_defaults(fake):
    pipeline, _ = fake
    assert (pipeline.core_input, pipeline.core_output) == ("input", "logits")
    assert pipeline.preprocess is None


class NamedCore:
    """Fake core of a graph with other tensor names: records what it was fed."""

    def __init__(self):
        self.calls: list[tuple[list[str], str, tuple[int, ...]]] = []

    def __call__(self, feeds, output):
        (x,) = feeds.values()
        self.calls.append((list(feeds), output, x.shape))
        return np.tile(np.arange(3, dtype=np.float32), (len(x), 1))


def test_hf_params_name_the_core_tensors_and_preprocess(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps(["a", "b", "c"]))
    steps = HfSteps(
        shortest_edge=40, crop_height=32, crop_width=24, resample=3, rescale_factor=1 / 255
    )
    params = {**steps.as_params(), "core_input": "pixel_values", "core_output": "out"}
    core = NamedCore()
    pipeline = ImagePipeline(tmp_path, params, core)
    assert pipeline.preprocess == steps
    out = pipeline.run(pipeline.decode(tensor([_grey(9), _grey(200)])))
    assert core.calls == [(["pixel_values"], "out", (2, 3, 32, 24))]
    assert [label.decode() for label in out["LABEL"][:, 0]] == ["c", "c"]
    assert (out["WIDTH"][:, 0] == 32).all()  # the decoded size, not the model's
    items = pipeline.decode(tensor([_grey(51)]))
    np.testing.assert_array_equal(items[0].array, np.float32(51 / 255))  # rescale only


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({}, "resize_height/width or shortest_edge"),
        ({"resize_height": 8, "resize_width": 8, "shortest_edge": 8}, "or shortest_edge"),
        ({"shortest_edge": 8}, "needs a centre crop"),
        ({"shortest_edge": 8, "crop_height": 9, "crop_width": 8}, "crop larger"),
        ({"resize_height": 8, "resize_width": 8, "crop_height": 4}, "go together"),
        ({"resize_height": 8, "resize_width": 8, "image_mean": (0.5,)}, "3 values"),
    ],
)
def test_hf_steps_refuse_what_cannot_batch(fields, says):
    with pytest.raises(ValueError, match=says):
        HfSteps(**fields)


def test_hf_steps_params_round_trip_exactly():
    steps = HfSteps(
        resize_height=224,
        resize_width=224,
        resample=2,
        rescale_factor=1 / 255,
        image_mean=(0.48145466, 0.4578275, 0.40821073),
        image_std=(0.26862954, 0.26130258, 0.27577711),
    )
    assert HfSteps.from_params(steps.as_params()) == steps  # floats read back bit for bit
    assert steps.as_params()["rescale_factor"] == "0.00392156862745098"
