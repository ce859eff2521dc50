"""The gpu target, validated without a GPU: configs parse as Triton's ModelConfig and name
the tensors, dtypes and dims of their ONNX graphs."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from export.build import build
from export.catalog import BUNDLED, CHAT
from export.served_catalog import SERVED
from export.triton_config import read_config
from export.validate import validate_repository

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gpu_repository(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("gpu") / "repo"
    report = build(BUNDLED, "gpu", repo, chat=CHAT, served=SERVED)
    assert report.built == [], "artifacts come from the cache that `make models` filled"
    return repo


def test_gpu_repository_validates(gpu_repository):
    assert validate_repository(gpu_repository) == []


def test_gpu_layout(gpu_repository):
    for spec in BUNDLED:
        front = read_config(gpu_repository / spec.name / "config.pbtxt")
        core = read_config(gpu_repository / f"{spec.name}_core" / "config.pbtxt")
        assert front.backend == "python"
        assert front.parameters["core_model"].string_value == f"{spec.name}_core"
        assert core.backend == "onnxruntime"
        assert core.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
        assert list(core.version_policy.specific.versions) == [v.version for v in spec.versions]
        accel = core.optimization.execution_accelerators.gpu_execution_accelerator[0]
        assert accel.name == "tensorrt"
        expected = "FP16" if spec.name == "embed" else "FP32"
        assert accel.parameters["precision_mode"] == expected
        for version in spec.versions:
            assert not (gpu_repository / spec.name / str(version.version) / "model.onnx").exists()
            assert (
                gpu_repository / f"{spec.name}_core" / str(version.version) / "model.onnx"
            ).is_file()


def test_validator_catches_a_mismatch(gpu_repository, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(gpu_repository, broken)
    path = broken / "intent_core" / "config.pbtxt"
    path.write_text(path.read_text().replace("dims: 157", "dims: 156"))
    problems = validate_repository(broken)
    assert any("intent_core: output scores dims [156]" in p for p in problems), problems
    path.write_text("name: 'intent_core' this is not protobuf text")
    assert any("does not parse" in p for p in validate_repository(broken))


def test_gpu_chat_is_the_same_decoupled_model_on_cuda(gpu_repository):
    config = read_config(gpu_repository / "chat" / "config.pbtxt")
    assert config.model_transaction_policy.decoupled and config.max_batch_size == 0
    assert config.parameters["ort_provider"].string_value == "cuda"


def test_gpu_configs_of_the_other_kinds(gpu_repository):
    """pii and imagenet serve their ONNX graphs from onnxruntime-backend cores on the GPU
    (reached through BLS from the python model that tokenizes or decodes); ner (spaCy)
    and summarize (BLS to chat and embed) stay python models on CPU instances."""
    for name in ("pii", "imagenet"):
        front = read_config(gpu_repository / name / "config.pbtxt")
        core = read_config(gpu_repository / f"{name}_core" / "config.pbtxt")
        assert front.backend == "python" and core.backend == "onnxruntime"
        assert front.parameters["core_model"].string_value == f"{name}_core"
        assert core.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
        assert (gpu_repository / f"{name}_core" / "1" / "model.onnx").is_file()
        assert not (gpu_repository / name / "1" / "model.onnx").exists()
    for name in ("ner", "summarize"):
        config = read_config(gpu_repository / name / "config.pbtxt")
        assert config.backend == "python" and "core_model" not in config.parameters
        assert not (gpu_repository / f"{name}_core").exists()
