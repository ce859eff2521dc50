"""What a request becomes before the decode loop sees it: its prompt as token ids, and
its choices, each with its own generator, logits pipeline, grammar matcher and stops.

Choice 0 draws from `np.random.default_rng(seed)` (what a single answer always drew),
choice i > 0 from `np.random.default_rng([seed, i])`; no seed: fresh entropy each. The
grammar is compiled once per request: the other choices get copies of the first matcher,
made before anything has moved it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

try:  # as the package export.runtime (build, tests)
    from .engine_types import Limits, Request, Sequence, Sink, ToolUse
    from .failures import GenerationError
    from .grammar import Matcher
    from .messages import ChatTemplate, validate_messages
    from .sampling import LogitsPipeline, Sampling
    from .stops import TextStops
    from .tools import TOOL_CALL_OPEN
except ImportError:  # flat, beside model.py in the Triton model directory
    from engine_types import Limits, Request, Sequence, Sink, ToolUse  # type: ignore[no-redef]
    from failures import GenerationError  # type: ignore[no-redef]
    from grammar import Matcher  # type: ignore[no-redef]
    from messages import ChatTemplate, validate_messages  # type: ignore[no-redef]
    from sampling import LogitsPipeline, Sampling  # type: ignore[no-redef]
    from stops import TextStops  # type: ignore[no-redef]
    from tools import TOOL_CALL_OPEN  # type: ignore[no-redef]


class PromptEncoder:
    """A request's prompt as token ids, within the model's prompt limit."""

    def __init__(self, tokenizer: Any, template: ChatTemplate, vocab_size: int, limits: Limits):
        self.tokenizer, self.template = tokenizer, template
        self.vocab_size, self.most = vocab_size, limits.max_prompt_tokens

    def encode(
        self,
        prompt: str | None,
        messages: Any,
        prompt_ids: list[int] | None = None,
        tools: ToolUse | None = None,
    ) -> list[int]:
        """Exactly one of a text prompt, chat messages (rendered with the model's
        template, and the tools when there are any) or token ids."""
        if sum(x is not None for x in (prompt, messages, prompt_ids)) != 1:
            raise GenerationError("invalid", "send exactly one of PROMPT, MESSAGES or PROMPT_IDS")
        if messages is not None:
            listed = None if tools is None else tools.tools
            text = self.template.render(validate_messages(messages), tools=listed)
            ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        elif prompt_ids is not None:
            ids = [int(i) for i in prompt_ids]
            if not ids or not all(0 <= i < self.vocab_size for i in ids):
                raise GenerationError(
                    "invalid",
                    f"PROMPT_IDS must be a non-empty list of ids 0..{self.vocab_size - 1}",
                )
        else:
            assert prompt is not None
            if not prompt:
                raise GenerationError("invalid", "PROMPT is empty")
            ids = self.tokenizer.encode(prompt).ids
        if len(ids) > self.most:
            raise GenerationError(
                "invalid",
                f"the prompt is {len(ids)} tokens; this model takes at most {self.most}",
            )
        return ids


def new_request(
    prompt_ids: list[int],
    sampling: Sampling,
    sink: Sink,
    tools: ToolUse | None,
    matcher: Matcher | None,
    stop_ids: Collection[int],
) -> Request:
    """The request and its n choices; `matcher`: the request's grammar, compiled."""
    request = Request(prompt_ids, sampling, sink, tools, open=sampling.n)
    # Under a grammar no stop string applies: its output is the contract (stops.py).
    stops = () if matcher is not None else sampling.stop
    hold = TOOL_CALL_OPEN if tools else None
    for i in range(sampling.n):
        seed = sampling.seed if i == 0 or sampling.seed is None else [sampling.seed, i]
        own = matcher if i == 0 or matcher is None else matcher.copy()
        pipeline = LogitsPipeline(sampling, prompt_ids, stop_ids, own)
        text = TextStops(stops, sampling.min_tokens, hold)
        request.choices.append(Sequence(request, i, np.random.default_rng(seed), pipeline, text))
    return request
