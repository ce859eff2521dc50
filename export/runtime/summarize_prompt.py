"""The `summarize` model's calls to `chat` (abstractive method): greedy, with the fixed
prompt of summarize.json (`summary_messages` builds the very messages sent, so a test can
send them to `chat` itself); what a call returns (a `Generation` at once, or a
`PendingGeneration` to wait for) and what it raises (`ChatFailure`). summarize_model.py
makes `generate` a BLS call to the served `chat`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Stage = Literal["whole", "part", "combine"]
Messages = list[dict[str, str]]
Generation = tuple[str, int, int]  # (text, prompt tokens, completion tokens)

# The chat template's framing around each message ("<|im_start|>role\n" ... "<|im_end|>\n")
# and the assistant header after them, in tokens (ChatML, as SmolLM2's template renders).
FRAME_TOKENS_PER_MESSAGE = 5
GENERATION_PROMPT_TOKENS = 3


class ChatFailure(Exception):
    """The chat model refused or failed one generation. code: invalid | overloaded |
    internal (the kind chat_model.py puts before its messages)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class PendingGeneration(Protocol):
    """A generation the chat model is running."""

    def result(self, cancelled: Callable[[], bool]) -> Generation:
        """Waits for it; raises ChatFailure, or BatchCancelled once `cancelled()`."""
        ...

    def cancel(self) -> None:
        """Stops it (its result is not wanted any more)."""
        ...


Generate = Callable[[Messages, int], "Generation | PendingGeneration"]


@dataclass(frozen=True)
class Prompt:
    """The fixed instructions (summarize.json "prompt"): one system message, and one user
    message per stage with `{text}` where the text goes."""

    system: str
    whole: str
    part: str
    combine: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prompt:
        prompt = cls(**{k: data[k] for k in ("system", "whole", "part", "combine")})
        for stage in ("whole", "part", "combine"):
            if getattr(prompt, stage).count("{text}") != 1:
                raise ValueError(f"prompt {stage!r} must hold {{text}} exactly once")
        return prompt

    def template(self, stage: Stage) -> str:
        return {"whole": self.whole, "part": self.part, "combine": self.combine}[stage]


def summary_messages(prompt: Prompt, text: str, stage: Stage = "whole") -> Messages:
    """The chat messages that summarize `text` (as the pipeline passes it: stripped)."""
    return [
        {"role": "system", "content": prompt.system},
        {"role": "user", "content": prompt.template(stage).replace("{text}", text)},
    ]
