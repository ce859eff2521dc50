"""spec -> config.pbtxt, built as Triton's own ModelConfig protobuf (shipped in
tritonclient) so that every generated field is valid by construction.

cpu target: one python-backend model per text model; the ONNX core runs inside it.
gpu target: the same python model (tokenize / post-process, CPU instances) calls
`<name>_core`, an onnxruntime-backend model on GPU instances, through BLS. BLS rather
than an ensemble keeps model versions intact: an ensemble's steps are fixed per model,
so `intent` v1 and v2 could not route to their own cores.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from .served import ServedSpec
from .spec import (
    CHAT_INPUTS,
    CHAT_OUTPUTS,
    CORE_INPUTS,
    TEXT_INPUT,
    ChatSpec,
    CorePost,
    ModelSpec,
    Target,
    TensorSpec,
    model_outputs,
)


def _tensor(message: mc.ModelInput | mc.ModelOutput, spec: TensorSpec) -> None:
    message.name = spec.name
    message.data_type = mc.DataType.Value(spec.data_type)
    message.dims.extend(spec.dims)


def _params(config: mc.ModelConfig, params: dict[str, str]) -> None:
    for key, value in sorted(params.items()):
        config.parameters[key].string_value = value


def _batching(config: mc.ModelConfig, spec: ModelSpec | ServedSpec, delay_us: int) -> None:
    config.max_batch_size = spec.batching.max_batch_size
    config.dynamic_batching.max_queue_delay_microseconds = delay_us
    policy = config.dynamic_batching.default_queue_policy
    policy.max_queue_size = spec.batching.max_queue_size
    # Every level takes default_queue_policy (its own bounded queue), served in level
    # order: a request of level 1 (online) is scheduled before any of level 2 (jobs).
    config.dynamic_batching.priority_levels = spec.batching.priority_levels
    config.dynamic_batching.default_priority_level = spec.batching.default_priority_level


def _versions(config: mc.ModelConfig, spec: ModelSpec) -> None:
    config.version_policy.specific.versions.extend(v.version for v in spec.versions)


def text_model_config(
    spec: ModelSpec, target: Target, width: int, core_out: TensorSpec, post: CorePost
) -> mc.ModelConfig:
    config = mc.ModelConfig(name=spec.name, backend="python")
    _batching(config, spec, spec.batching.max_queue_delay_us)
    _versions(config, spec)
    _tensor(config.input.add(), TEXT_INPUT)
    for out in model_outputs(spec.task, width):
        _tensor(config.output.add(), out)
    group = config.instance_group.add()
    group.kind = mc.ModelInstanceGroup.KIND_CPU
    group.count = spec.instances.cpu_count
    params = runner_params(spec, core_out, post, spec.instances.cpu_threads)
    if target == "gpu":
        params["core_model"] = core_name(spec.name)
    _params(config, params)
    return config


def runner_params(
    spec: ModelSpec, core_out: TensorSpec, post: CorePost, threads: int
) -> dict[str, str]:
    """What the python-backend runner reads from its config (also used at build time to
    measure the artifact through the same runner)."""
    return {
        "task": spec.task,
        "max_length": str(spec.max_length),
        "chunk_rows": str(spec.batching.runner_chunk_rows),
        "core_output": core_out.name,
        "core_post": post,
        "ort_intra_op_threads": str(threads),
        "ort_allow_spinning": "0",
    }


def core_name(model: str) -> str:
    return f"{model}_core"


def gpu_core_config(spec: ModelSpec, core_out: TensorSpec) -> mc.ModelConfig:
    config = mc.ModelConfig(name=core_name(spec.name), backend="onnxruntime")
    # The python front already merged the dynamic batch; the core still batches identical
    # shapes that arrive together from several front instances.
    _batching(config, spec, delay_us=500)
    _versions(config, spec)
    for tensor in CORE_INPUTS:
        _tensor(config.input.add(), tensor)
    _tensor(config.output.add(), core_out)
    group = config.instance_group.add()
    group.kind = mc.ModelInstanceGroup.KIND_GPU
    group.count = spec.instances.gpu_count
    group.gpus.append(0)
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
    accelerator.name = "tensorrt"
    accelerator.parameters["precision_mode"] = "FP16" if spec.instances.gpu_fp16 else "FP32"
    accelerator.parameters["max_workspace_size_bytes"] = str(1 << 30)
    accelerator.parameters["trt_engine_cache_enable"] = "1"
    config.optimization.input_pinned_memory.enable = True
    config.optimization.output_pinned_memory.enable = True
    return config


def chat_config(spec: ChatSpec, target: Target) -> mc.ModelConfig:
    """Decoupled python model, unbatched at Triton's level: the model batches in flight
    itself, so each request is one sequence and Triton hands it over at once."""
    config = mc.ModelConfig(name=spec.name, backend="python")
    config.max_batch_size = 0
    config.model_transaction_policy.decoupled = True
    config.version_policy.specific.versions.append(1)
    for tensor in CHAT_INPUTS:
        message = config.input.add()
        _tensor(message, tensor)
        message.optional = True
    for tensor in CHAT_OUTPUTS:
        _tensor(config.output.add(), tensor)
    group = config.instance_group.add()
    group.kind = mc.ModelInstanceGroup.KIND_CPU
    group.count = 1  # one decode loop owns the batch; more instances would split it
    serving = spec.serving
    _params(
        config,
        {
            "slots": str(serving.slots),
            "queue": str(serving.queue),
            "max_prompt_tokens": str(serving.max_prompt_tokens),
            "max_completion_tokens": str(serving.max_completion_tokens),
            "max_context": str(serving.max_context),
            "ort_intra_op_threads": str(serving.ort_intra_op_threads),
            # gpu: onnxruntime's CUDA provider inside the same python model when the
            # image has onnxruntime-gpu; otherwise it falls back to the CPU and says so.
            "ort_provider": "cuda" if target == "gpu" else "cpu",
        },
    )
    return config


# Public names for the builder modules of the other kinds (export/kinds.py).
tensor = _tensor
params = _params
batching = _batching


def versions(config: mc.ModelConfig, spec: ModelSpec | ServedSpec) -> None:
    if isinstance(spec, ServedSpec):
        config.version_policy.specific.versions.extend(spec.versions)
    else:
        _versions(config, spec)


def served_python_config(
    spec: ServedSpec,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    parameters: dict[str, str],
    optional: tuple[TensorSpec, ...] = (),
) -> mc.ModelConfig:
    """The python-backend model of another kind (export/kinds.py): batched as its spec
    says, one version, CPU instances, its tensors and runner parameters."""
    config = mc.ModelConfig(name=spec.name, backend="python")
    _batching(config, spec, spec.batching.max_queue_delay_us)
    versions(config, spec)
    for spec_tensor in inputs:
        _tensor(config.input.add(), spec_tensor)
    for spec_tensor in optional:
        message = config.input.add()
        _tensor(message, spec_tensor)
        message.optional = True
    for spec_tensor in outputs:
        _tensor(config.output.add(), spec_tensor)
    group = config.instance_group.add()
    group.kind = mc.ModelInstanceGroup.KIND_CPU
    group.count = spec.instances.cpu_count
    _params(config, parameters)
    return config


def write_config(config: mc.ModelConfig, model_dir: Path) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "config.pbtxt"
    path.write_text(text_format.MessageToString(config))
    return path


def read_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())
