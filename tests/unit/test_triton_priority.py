"""Triton priority levels (design §5): every generated dynamic_batching, cpu and gpu, has
two levels with online traffic at the default (1) and batch jobs below it (2).

Triton's semantics (tritonclient's `infer(priority=...)` docstring): 0 means the model's
default level, lower values are higher levels, 1 the highest; a request of level 1 is
scheduled before any of level 2, and each level has its own queue under
default_queue_policy. An out-of-range priority gets the default level.

What is checked: every config builder of the export (the text models' front and gpu
core, the served kinds' python models and gpu cores) for every spec of the repository's
spec set; that no other code makes a batched config; and the repository `make models`
built (regenerated when the spec changes: spec.py keys the build cache).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from export import image_export, pii_export
from export import triton_config as tc
from export.catalog import BUNDLED, CHAT
from export.served_catalog import SERVED
from export.spec import BatchingSpec, TensorSpec, core_output
from frontend.settings import JobSettings
from frontend.triton.client import TritonClient

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = ROOT / "model_repository"
ONLINE_LEVEL = 1
BATCH_LEVEL = 2
LEVELS = 2


def _round_trip(config: mc.ModelConfig) -> mc.ModelConfig:
    """As Triton reads it: the text format written to config.pbtxt, parsed again."""
    return text_format.Parse(text_format.MessageToString(config), mc.ModelConfig())


def _assert_levels(config: mc.ModelConfig) -> None:
    parsed = _round_trip(config)
    assert parsed.HasField("dynamic_batching"), parsed.name
    batching = parsed.dynamic_batching
    assert batching.priority_levels == LEVELS, parsed.name
    assert batching.default_priority_level == ONLINE_LEVEL, parsed.name
    # Each level queues under default_queue_policy: still bounded (fast UNAVAILABLE).
    assert batching.default_queue_policy.max_queue_size > 0, parsed.name
    assert not batching.priority_queue_policy, parsed.name


def _generated() -> list[mc.ModelConfig]:
    """Every batched config the builders make for the spec set, both targets."""
    configs: list[mc.ModelConfig] = []
    for spec in BUNDLED:
        out = core_output(spec.task, 8, "none")
        for target in ("cpu", "gpu"):
            configs.append(tc.text_model_config(spec, target, 8, out, "none"))
        configs.append(tc.gpu_core_config(spec, out))
    outputs = (TensorSpec("OUT", "TYPE_STRING", (1,)),)
    for served in SERVED:
        configs.append(tc.served_python_config(served, (tc.TEXT_INPUT,), outputs, {}))
        # The served kinds' gpu cores (the hf kinds' too: they build through these two).
        configs.extend(image_export.gpu_core(served, "input", (3, 8, 8), "logits", 4).values())
        facts = {"core_inputs": ["input_ids", "attention_mask"], "tags": ["O", "B-X"]}
        configs.extend(pii_export.extra_configs(served, "gpu", facts).values())
    return configs


def test_the_spec_default_is_two_levels_online_first():
    batching = BatchingSpec()
    assert (batching.priority_levels, batching.default_priority_level) == (LEVELS, ONLINE_LEVEL)
    # Every spec of the set keeps them (none overrides the levels).
    specs: list[Any] = [*BUNDLED, *SERVED]
    for spec in specs:
        assert spec.batching.priority_levels == LEVELS, spec.name
        assert spec.batching.default_priority_level == ONLINE_LEVEL, spec.name


def test_batch_jobs_send_the_lowest_level_and_online_the_default():
    assert JobSettings().triton_priority == BATCH_LEVEL == LEVELS  # the lowest level
    assert BATCH_LEVEL != ONLINE_LEVEL
    # The online client sends 0: Triton's "default level", which the configs make 1.
    import inspect

    default = inspect.signature(TritonClient.__init__).parameters["priority"].default
    assert default == 0


@pytest.mark.parametrize("config", _generated(), ids=lambda c: c.name)
def test_every_generated_batched_config_has_the_levels(config):
    _assert_levels(config)


def test_the_chat_model_has_no_dynamic_batcher_to_prioritise():
    for target in ("cpu", "gpu"):
        config = _round_trip(tc.chat_config(CHAT, target))
        assert not config.HasField("dynamic_batching")
        assert config.model_transaction_policy.decoupled


def test_no_other_code_makes_a_batched_config():
    """A new config builder must go through triton_config's `batching` (or not batch at
    all, as chat): then the levels above cover it."""
    export = ROOT / "export"
    for path in sorted(export.glob("*.py")):
        source = path.read_text()
        if path.name != "triton_config.py":
            assert "dynamic_batching" not in source, path.name
        made = len(re.findall(r"mc\.ModelConfig\(name=", source))
        # Calls (indented statements), not the definition.
        batched = len(re.findall(r"(?m)^\s+(?:tc\.batching|_batching)\(", source))
        unbatched = 1 if path.name == "triton_config.py" else 0  # chat_config
        assert made - unbatched == batched, (path.name, made, batched)


def test_the_built_repository_has_the_levels():
    """What `make models` wrote (make test builds it first). The chat model alone has no
    dynamic batcher."""
    configs = sorted(REPOSITORY.glob("*/config.pbtxt"))
    if not configs:
        pytest.fail("model_repository is not built; run `make models` (make test does)")
    unbatched = []
    for path in configs:
        config = tc.read_config(path)
        if config.HasField("dynamic_batching"):
            _assert_levels(config)
        else:
            unbatched.append(config.name)
    assert unbatched == [CHAT.name]
