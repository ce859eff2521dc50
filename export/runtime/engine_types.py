"""The chat engine's vocabulary: its limits and counters, where a request's events go
(`Sink`), and the request and choice records the decode loop keeps (`Request`,
`Sequence`). No behaviour beyond plain records: generation.py runs them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

try:  # as the package export.runtime (build, tests)
    from .failures import GenerationError
    from .sampling import LogitsPipeline, Sampling
    from .stops import TextStops
except ImportError:  # flat, beside model.py in the Triton model directory
    from failures import GenerationError  # type: ignore[no-redef]
    from sampling import LogitsPipeline, Sampling  # type: ignore[no-redef]
    from stops import TextStops  # type: ignore[no-redef]

# Logprob entries or tool calls, as JSON-ready dicts.
Entries = list[dict[str, Any]]


class Sink(Protocol):
    """Where one request's events go (a Triton response sender, or a test's list).
    `index` names the choice; `last` is true on the finish of the last open choice."""

    def admitted(self, prompt_tokens: int, prompt_logprobs: Entries | None) -> None: ...
    def token(
        self, index: int, token_id: int, text: str, completion_tokens: int, logprobs: Entries | None
    ) -> None: ...
    def finish(
        self,
        index: int,
        reason: str,
        text: str,
        completion_tokens: int,
        tool_calls: Entries | None,
        last: bool,
    ) -> None: ...
    def fail(self, error: GenerationError) -> None: ...
    def cancelled(self) -> bool: ...


class Metrics:
    """No-op counters; the Triton model passes ones exported on Triton's metrics port."""

    def set_active(self, n: int) -> None: ...
    def set_queued(self, n: int) -> None: ...
    def tokens(self, n: int) -> None: ...
    def step(self, rows: int) -> None: ...
    def cancelled(self) -> None: ...
    def rejected(self) -> None: ...
    def failed(self) -> None: ...


@dataclass(frozen=True)
class Limits:
    slots: int = 8  # sequences decoded together
    queue: int = 16  # admitted but waiting for a slot
    max_prompt_tokens: int = 1024
    max_completion_tokens: int = 1024
    max_context: int = 2048  # prompt + completion


@dataclass(frozen=True)
class ToolUse:
    """Tools the answer may call (tool_choice other than "none")."""

    tools: list[dict[str, Any]]
    choice: str | dict[str, Any] = "auto"
    parallel: bool = True


@dataclass(eq=False)
class Request:
    """One request: its choices share the prompt, the prefill and the sink."""

    prompt_ids: list[int]
    sampling: Sampling
    sink: Sink
    tools: ToolUse | None = None
    choices: list[Sequence] = field(default_factory=list)
    open: int = 0  # choices not ended yet
    ended: bool = False  # failed: no more responses
    # A test build can make the loop raise for each choice (see `fail_on_seed`).
    fail_after: int | None = None


@dataclass(eq=False)
class Sequence:
    """One choice of a request, as the decode loop advances it."""

    request: Request
    index: int
    rng: np.random.Generator
    logits: LogitsPipeline
    text: TextStops
    generated: list[int] = field(default_factory=list)
    position: int = 0  # position id of the next token fed to the model
