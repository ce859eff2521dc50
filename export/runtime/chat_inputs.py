"""The chat model's request inputs (export/spec.py CHAT_INPUTS), read from Triton's
tensors and checked as far as they can be without the model; every refusal names the
tensor. Callers that reach Triton's gRPC directly send raw values, so nothing here trusts
the frontend's checks: text must be UTF-8, LOGIT_BIAS keys plain decimal token ids.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

try:  # as the package export.runtime (build, tests)
    from .engine_types import ToolUse
    from .failures import GenerationError
    from .generation import ChatEngine
    from .grammar import Grammar
    from .sampling import Sampling
    from .tools import validate_tool_choice, validate_tools
except ImportError:  # flat, beside model.py in the Triton model directory
    from engine_types import ToolUse  # type: ignore[no-redef]
    from failures import GenerationError  # type: ignore[no-redef]
    from generation import ChatEngine  # type: ignore[no-redef]
    from grammar import Grammar  # type: ignore[no-redef]
    from sampling import Sampling  # type: ignore[no-redef]
    from tools import validate_tool_choice, validate_tools  # type: ignore[no-redef]

# A token id as JSON object key: ASCII digits, no sign, no leading zero ("012", "1_0"
# and "١" are refused, though int() takes them: a key must name one id one way).
_TOKEN_ID = re.compile(r"0|[1-9][0-9]*", re.ASCII)


@dataclass(frozen=True)
class Parsed:
    """One request's inputs, checked as far as they can be without the model."""

    prompt_ids: list[int]
    sampling: Sampling
    grammar: Grammar | None = None
    tools: ToolUse | None = None


class _Pairs(list[tuple[str, Any]]):
    """A JSON object's members in order, duplicates kept (json.loads keeps the last)."""


def _utf8(raw: Any, name: str) -> str:
    try:
        return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    except UnicodeDecodeError:
        raise GenerationError("invalid", f"{name} is not valid UTF-8") from None


class Inputs:
    """A request's optional input tensors, read by name; every refusal names the tensor."""

    def __init__(self, pb: Any, request: Any):
        self.pb, self.request = pb, request

    def array(self, name: str) -> np.ndarray | None:
        tensor = self.pb.get_input_tensor_by_name(self.request, name)
        return None if tensor is None else tensor.as_numpy().reshape(-1)

    def text(self, name: str) -> str | None:
        values = self.array(name)
        if values is None:
            return None
        if values.size != 1:
            raise GenerationError("invalid", f"{name} takes exactly one element")
        return _utf8(values[0], name)

    def texts(self, name: str) -> tuple[str, ...]:
        values = self.array(name)
        return () if values is None else tuple(_utf8(v, name) for v in values)

    def json(self, name: str, members: bool = False) -> Any:
        """The tensor's JSON; `members`: objects as _Pairs (to see duplicate keys)."""
        raw = self.text(name)
        if raw is None:
            return None
        try:
            return json.loads(raw, object_pairs_hook=_Pairs if members else None)
        except ValueError:
            raise GenerationError("invalid", f"{name} is not JSON") from None

    def scalar(self, name: str, default: Any) -> Any:
        values = self.array(name)
        if values is None or values.size == 0:
            return default
        if values.size != 1:
            raise GenerationError("invalid", f"{name} takes exactly one element")
        return values[0].item()

    def number(self, name: str, default: float) -> float:
        value = float(self.scalar(name, default))
        if not np.isfinite(value):
            raise GenerationError("invalid", f"{name} must be a finite number")
        return value

    def count(self, name: str, default: int | None, least: int = -1) -> int | None:
        """An INT32 where -1 (or the least value) means off."""
        value = self.scalar(name, None)
        if value is None:
            return default
        if int(value) < least:
            raise GenerationError("invalid", f"{name} must be {least} (off) or more")
        return None if int(value) == least else int(value)


def logit_bias(raw: Any) -> tuple[tuple[int, float], ...]:
    """LOGIT_BIAS, as Inputs.json(members=True) reads it: {"<token id>": bias} (the
    ids' and biases' bounds: check_sampling)."""
    if raw is None:
        return ()
    if not isinstance(raw, _Pairs):
        raise GenerationError("invalid", "LOGIT_BIAS must be a JSON object")
    biases: dict[int, float] = {}
    for key, bias in raw:
        if not _TOKEN_ID.fullmatch(key):
            raise GenerationError("invalid", f"LOGIT_BIAS: {key!r} is not a token id")
        if isinstance(bias, bool) or not isinstance(bias, int | float):
            raise GenerationError("invalid", f"LOGIT_BIAS: the bias of {key} must be a number")
        if int(key) in biases:
            raise GenerationError("invalid", f"LOGIT_BIAS: token {key} is given twice")
        biases[int(key)] = float(bias)
    return tuple(sorted(biases.items()))


def tool_use(inputs: Inputs) -> ToolUse | None:
    """TOOLS, TOOL_CHOICE and PARALLEL_TOOL_CALLS; None when no tool may be called."""
    raw = inputs.json("TOOLS")
    tools = None if raw is None else validate_tools(raw)
    choice = validate_tool_choice(inputs.json("TOOL_CHOICE"), tools)
    if tools is None or choice == "none":
        return None
    return ToolUse(tools, choice, bool(inputs.scalar("PARALLEL_TOOL_CALLS", True)))


def parse_request(pb: Any, request: Any, engine: ChatEngine) -> Parsed:
    inputs = Inputs(pb, request)
    prompt = inputs.text("PROMPT")
    messages = inputs.json("MESSAGES")
    ids = inputs.array("PROMPT_IDS")
    prompt_ids = None if ids is None else [int(i) for i in ids]
    seed = inputs.scalar("SEED", None)
    response_format = inputs.json("RESPONSE_FORMAT")
    if response_format is not None and not isinstance(response_format, dict):
        raise GenerationError("invalid", "RESPONSE_FORMAT must be a JSON object")
    tools = tool_use(inputs)
    if tools is not None and messages is None:
        raise GenerationError("invalid", "TOOLS need MESSAGES (a chat)")
    sampling = Sampling(
        max_tokens=int(inputs.scalar("MAX_TOKENS", engine.limits.max_completion_tokens // 4)),
        temperature=inputs.number("TEMPERATURE", 0.0),
        top_p=inputs.number("TOP_P", 1.0),
        top_k=int(inputs.scalar("TOP_K", 0)),
        seed=None if seed is None else int(seed),
        stop=inputs.texts("STOP"),
        n=int(inputs.scalar("N", 1)),
        logprobs=inputs.count("LOGPROBS", None),
        prompt_logprobs=inputs.count("PROMPT_LOGPROBS", None),
        presence_penalty=inputs.number("PRESENCE_PENALTY", 0.0),
        frequency_penalty=inputs.number("FREQUENCY_PENALTY", 0.0),
        repetition_penalty=inputs.number("REPETITION_PENALTY", 1.0),
        logit_bias=logit_bias(inputs.json("LOGIT_BIAS", members=True)),
        min_tokens=int(inputs.scalar("MIN_TOKENS", 0)),
        ignore_eos=bool(inputs.scalar("IGNORE_EOS", False)),
    )
    prompt_ids = engine.encode_prompt(prompt, messages, prompt_ids, tools)
    # submit() checks the sampling and compiles the grammar (once, after the room check).
    return Parsed(prompt_ids, sampling, engine.grammar(response_format, tools), tools)
