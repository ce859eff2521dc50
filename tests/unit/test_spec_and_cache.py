from __future__ import annotations

import dataclasses

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from export.cache import artifact_key
from export.catalog import EMBED, INTENT
from export.spec import core_output
from export.triton_config import gpu_core_config, text_model_config


def test_cache_key_follows_the_spec():
    assert artifact_key(INTENT.to_json(), "1") == artifact_key(INTENT.to_json(), "1")
    changed = dataclasses.replace(INTENT, max_length=128)
    assert artifact_key(changed.to_json(), "1") != artifact_key(INTENT.to_json(), "1")
    assert artifact_key(INTENT.to_json(), "2") != artifact_key(INTENT.to_json(), "1")


def test_cpu_config_round_trips_through_triton_protobuf():
    config = text_model_config(INTENT, "cpu", 157, core_output(INTENT.task, 157, "none"), "none")
    parsed = text_format.Parse(text_format.MessageToString(config), mc.ModelConfig())
    assert parsed.backend == "python"
    assert parsed.max_batch_size == 256
    assert list(parsed.version_policy.specific.versions) == [1, 2]
    assert parsed.input[0].data_type == mc.TYPE_STRING
    assert [o.name for o in parsed.output] == [
        "LABEL",
        "SCORE",
        "SCORES",
        "NUM_TOKENS",
        "TRUNCATED",
    ]
    assert list(parsed.output[2].dims) == [157]
    assert parsed.dynamic_batching.default_queue_policy.max_queue_size == 1024
    assert parsed.instance_group[0].count == 2
    assert parsed.parameters["ort_intra_op_threads"].string_value == "1"
    assert "core_model" not in parsed.parameters


def test_gpu_core_config():
    out = core_output(EMBED.task, 384, "none")
    core = gpu_core_config(EMBED, out)
    assert core.name == "embed_core" and core.backend == "onnxruntime"
    assert [i.name for i in core.input] == ["input_ids", "attention_mask"]
    assert core.output[0].name == "embedding" and list(core.output[0].dims) == [384]
    front = text_model_config(EMBED, "gpu", 384, out, "none")
    assert front.parameters["core_model"].string_value == "embed_core"
