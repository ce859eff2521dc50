"""Check a generated repository without a GPU: every config.pbtxt parses as Triton's
ModelConfig, and every tensor a config names exists in its ONNX graph with the same dtype
and dims. This is how the gpu target is validated on CPU-only machines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .triton_config import read_config

# Triton DataType name -> onnx TensorProto elem type
_ONNX_TYPES = {
    "TYPE_FP32": 1,
    "TYPE_INT32": 6,
    "TYPE_INT64": 7,
    "TYPE_BOOL": 9,
    "TYPE_FP16": 10,
    "TYPE_STRING": 8,
}


def _graph_io(path: Path) -> tuple[dict[str, tuple[int, list[Any]]], dict[str, tuple[int, list]]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(values: Any) -> dict[str, tuple[int, list[Any]]]:
        return {
            v.name: (
                v.type.tensor_type.elem_type,
                [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            )
            for v in values
        }

    return describe(graph.input), describe(graph.output)


def _dims_match(config_dims: list[int], onnx_dims: list[Any], batched: bool) -> bool:
    expected = ([-1] if batched else []) + list(config_dims)
    if len(expected) != len(onnx_dims):
        return False
    # A symbolic ONNX dim (a string) accepts any size; Triton writes that as -1.
    return all(
        isinstance(o, str) if e == -1 else o == e for e, o in zip(expected, onnx_dims, strict=True)
    )


def _check_onnx(
    name: str,
    config: Any,
    onnx_path: Path,
    problems: list[str],
    tensors: list[tuple[str, str, list[int] | None]],
) -> None:
    """Each named tensor must exist in the graph; dims None checks existence only."""
    from tritonclient.grpc import model_config_pb2 as mc

    if not onnx_path.is_file():
        problems.append(f"{name}: {onnx_path} is missing")
        return
    inputs, outputs = _graph_io(onnx_path)
    batched = config.max_batch_size > 0
    for kind, tensor_name, dims in tensors:
        graph = inputs if kind == "input" else outputs
        if tensor_name not in graph:
            problems.append(
                f"{name}: {kind} {tensor_name!r} not in {onnx_path.name} (has {sorted(graph)})"
            )
            continue
        elem, onnx_dims = graph[tensor_name]
        if dims is not None and not _dims_match(dims, onnx_dims, batched):
            problems.append(
                f"{name}: {kind} {tensor_name} dims {dims} (batched={batched}) "
                f"do not match ONNX {onnx_dims}"
            )
        declared = [t for t in [*config.input, *config.output] if t.name == tensor_name]
        if declared:
            type_name = mc.DataType.Name(declared[0].data_type)
            if _ONNX_TYPES.get(type_name) != elem:
                problems.append(
                    f"{name}: {tensor_name} is {type_name} in the config but "
                    f"elem type {elem} in ONNX"
                )
    required = set(inputs) - {t.name for t in config.input} - {"token_type_ids"}
    if config.backend == "onnxruntime" and required:
        problems.append(f"{name}: ONNX inputs {sorted(required)} are not fed by the config")


def validate_repository(repository: Path) -> list[str]:
    problems: list[str] = []
    configs = {}
    for path in sorted(repository.glob("*/config.pbtxt")):
        try:
            configs[path.parent.name] = read_config(path)
        except Exception as exc:  # text_format.ParseError and friends
            problems.append(f"{path}: does not parse as ModelConfig: {exc}")
    if not configs:
        return [f"{repository}: no models"]
    for name, config in configs.items():
        if config.name != name:
            problems.append(f"{name}: config name {config.name!r} differs from its folder")
        versions = list(config.version_policy.specific.versions)
        params = {k: v.string_value for k, v in config.parameters.items()}
        for version in versions:
            vdir = repository / name / str(version)
            if config.backend == "onnxruntime":
                tensors: list[tuple[str, str, list[int] | None]] = [
                    ("input", t.name, list(t.dims)) for t in config.input
                ]
                tensors += [("output", t.name, list(t.dims)) for t in config.output]
                _check_onnx(name, config, vdir / "model.onnx", problems, tensors)
            elif config.backend == "python" and config.model_transaction_policy.decoupled:
                _check_chat_model(name, config, vdir, version, problems)
            elif config.backend == "python" and _served_task(vdir):
                _check_served_model(name, config, params, vdir, version, configs, problems)
            elif config.backend == "python":
                _check_python_model(
                    name, config, params, vdir, version, configs, repository, problems
                )
            else:
                problems.append(f"{name}: unexpected backend {config.backend!r}")
    return problems


# The tasks of the models built by their kind's builder (export/kinds.py).
_SERVED_TASKS = {"token-classification", "image-classification", "summarization"}


def _served_task(vdir: Path) -> str | None:
    try:
        task = json.loads((vdir / "card.json").read_text()).get("task")
    except (OSError, ValueError):
        return None
    return task if task in _SERVED_TASKS else None


def _check_served_model(
    name: str,
    config: Any,
    params: dict[str, str],
    vdir: Path,
    version: int,
    configs: dict[str, Any],
    problems: list[str],
) -> None:
    """A model of another kind: its runner is there, the card names the config's tensors,
    and the ONNX graph it serves (here on cpu, in its core on gpu) is where it should be."""
    label = f"{name}/{version}"
    if not (vdir / "model.py").is_file():
        problems.append(f"{label}: model.py is missing")
    card = json.loads((vdir / "card.json").read_text())
    io = card.get("triton_io", {})
    declared_in = {t.name for t in config.input}
    declared_out = {t.name for t in config.output}
    if set(io.get("inputs", {})) != declared_in or set(io.get("outputs", [])) != declared_out:
        problems.append(f"{label}: the card's triton_io differs from the config's tensors")
    if "SCORES" in declared_out and card.get("labels"):
        dims = next(list(t.dims) for t in config.output if t.name == "SCORES")
        if dims != [len(card["labels"])]:
            problems.append(f"{label}: SCORES dims {dims} but {len(card['labels'])} labels")
    core = params.get("core_model")
    if core:
        core_config = configs.get(core)
        if core_config is None:
            problems.append(f"{name}: core model {core!r} is not in the repository")
        elif version not in core_config.version_policy.specific.versions:
            problems.append(f"{name}: version {version} has no core version in {core}")
        return
    if card.get("onnx_io", {}).get("inputs") and not (vdir / "model.onnx").is_file():
        problems.append(f"{label}: model.onnx is missing")


def _check_python_model(
    name: str,
    config: Any,
    params: dict[str, str],
    vdir: Path,
    version: int,
    configs: dict[str, Any],
    repository: Path,
    problems: list[str],
) -> None:
    for needed in ("model.py", "tokenizer.json", "labels.json", "card.json"):
        if not (vdir / needed).is_file():
            problems.append(f"{name}/{version}: {needed} is missing")
    outputs = {t.name: list(t.dims) for t in config.output}
    if "SCORES" in outputs and (vdir / "labels.json").is_file():
        labels = json.loads((vdir / "labels.json").read_text())
        if outputs["SCORES"] != [len(labels)]:
            problems.append(
                f"{name}/{version}: SCORES dims {outputs['SCORES']} but {len(labels)} labels"
            )
    core_out = params.get("core_output", "")
    core = params.get("core_model")
    if core:  # gpu target: the ONNX lives in the core model, reached through BLS
        if core not in configs:
            problems.append(f"{name}: core model {core!r} is not in the repository")
            return
        core_config = configs[core]
        if version not in core_config.version_policy.specific.versions:
            problems.append(f"{name}: version {version} has no core version in {core}")
        if core_out not in {t.name for t in core_config.output}:
            problems.append(f"{name}: core output {core_out!r} not declared by {core}")
        return
    width = outputs.get("SCORES") or outputs.get("EMBEDDING")
    # The core's output width is only fixed when the runner does no post-processing.
    core_dims = width if width and params.get("core_post", "none") == "none" else None
    tensors: list[tuple[str, str, list[int] | None]] = [
        ("input", "input_ids", [-1]),
        ("input", "attention_mask", [-1]),
        ("output", core_out, core_dims),
    ]
    _check_onnx(f"{name}/{version}", config, vdir / "model.onnx", problems, tensors)


def _check_chat_model(name: str, config: Any, vdir: Path, version: int, problems: list) -> None:
    """The decoupled text-generation model: its runtime files, and an ONNX decoder with
    a KV cache of as many layers as chat.json says."""
    label = f"{name}/{version}"
    for needed in ("model.py", "generation.py", "tokenizer.json", "chat.json", "card.json"):
        if not (vdir / needed).is_file():
            problems.append(f"{label}: {needed} is missing")
    if config.max_batch_size != 0:
        problems.append(f"{label}: max_batch_size must be 0 (the model batches in flight)")
    if not (vdir / "model.onnx").is_file() or not (vdir / "chat.json").is_file():
        problems.append(f"{label}: model.onnx or chat.json is missing")
        return
    inputs, outputs = _graph_io(vdir / "model.onnx")
    layers = int(json.loads((vdir / "chat.json").read_text())["num_layers"])
    expected = {"input_ids", "attention_mask", "position_ids"} | {
        f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")
    }
    if set(inputs) != expected:
        problems.append(f"{label}: ONNX inputs {sorted(set(inputs) ^ expected)} unexpected")
    if "logits" not in outputs or len(outputs) != 1 + 2 * layers:
        problems.append(f"{label}: ONNX outputs are not logits + {2 * layers} present tensors")
