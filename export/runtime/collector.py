"""A sink that keeps everything a generation sends (build-time parity, tests,
benchmarks), choice by choice."""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field

try:  # as the package export.runtime (build, tests)
    from .engine_types import Entries
    from .failures import GenerationError
except ImportError:  # flat, beside model.py in the Triton model directory
    from engine_types import Entries  # type: ignore[no-redef]
    from failures import GenerationError  # type: ignore[no-redef]


@dataclass
class Choice:
    """What a Collector kept of one choice."""

    pieces: list[str] = field(default_factory=list)
    generated_ids: list[int] = field(default_factory=list)
    logprobs: Entries = field(default_factory=list)
    reason: str = ""
    completion_tokens: int = 0
    tool_calls: Entries | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class Collector:
    """A sink that keeps everything (build-time parity, tests, benchmarks); `text`,
    `reason`, `generated_ids` and `completion_tokens` are choice 0's."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.prompt_tokens = 0
        self.prompt_logprobs: Entries | None = None
        # Choice 0 exists from the start: a test may read it while the loop writes it.
        self.choices: collections.defaultdict[int, Choice] = collections.defaultdict(Choice)
        self.choices[0] = Choice()
        self.error: GenerationError | None = None
        self.cancel_requested = False

    def admitted(self, prompt_tokens: int, prompt_logprobs: Entries | None = None) -> None:
        self.prompt_tokens, self.prompt_logprobs = prompt_tokens, prompt_logprobs

    def token(
        self, index: int, token_id: int, text: str, completion_tokens: int, logprobs: Entries | None
    ) -> None:
        choice = self.choices[index]
        choice.generated_ids.append(token_id)
        choice.pieces.append(text)
        choice.logprobs.extend(logprobs or ())
        choice.completion_tokens = completion_tokens

    def finish(
        self,
        index: int,
        reason: str,
        text: str,
        completion_tokens: int,
        tool_calls: Entries | None,
        last: bool,
    ) -> None:
        choice = self.choices[index]
        choice.pieces.append(text)
        choice.reason, choice.completion_tokens = reason, completion_tokens
        choice.tool_calls = tool_calls
        if last:
            self.done.set()

    def fail(self, error: GenerationError) -> None:
        self.error = error
        self.done.set()

    def cancelled(self) -> bool:
        return self.cancel_requested

    @property
    def text(self) -> str:
        return self.choices[0].text

    @property
    def reason(self) -> str:
        return self.choices[0].reason

    @property
    def generated_ids(self) -> list[int]:
        return self.choices[0].generated_ids

    @property
    def completion_tokens(self) -> int:
        return self.choices[0].completion_tokens
