"""Where a choice's text ends at a stop string, and how much of it may be streamed yet.

Text is held back while it may still turn into something that must not be sent: half a
UTF-8 character (a byte-level token can end inside one), the start of a stop string that
the next tokens may complete, and in tools "auto" mode everything from a tool call's
opening on (the call is parsed at the end).

A choice decoded under a grammar (json_object, json_schema, a forced tool call) gets no
stop strings: the grammar's output is the contract — JSON that parses and validates,
calls that parse — and a stop string cut into it ("}" or "," in a schema's answer)
would hand the caller a fragment that breaks it. Such a choice ends when its grammar is
complete (or at max_tokens, as OpenAI documents). Without a grammar (tools "auto"
included) stop strings apply as they always did.

Checking for a stop's start is quadratic in the stop's length per token; check_sampling
bounds it (sampling.MAX_STOP_CHARS).
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"  # what a byte-level tokenizer decodes half a UTF-8 character to


def held_back(text: str, marks: tuple[str, ...]) -> int:
    """Characters at the end of `text` that must not be sent yet: half a UTF-8
    character, or the start of a stop sequence that the next tokens may complete."""
    hold = len(text) - len(text.rstrip(REPLACEMENT))
    for mark in marks:
        for n in range(min(len(mark) - 1, len(text)), 0, -1):
            if text.endswith(mark[:n]):
                hold = max(hold, n)
                break
    return hold


class TextStops:
    """One choice's stop strings over its growing text, and what may be sent of it: not
    half a UTF-8 character, not the start of a stop string that the next tokens may
    complete, nothing from `hold` (a tool call's opening) on. A stop string counts only
    once `min_tokens` tokens are out."""

    def __init__(self, stops: tuple[str, ...], min_tokens: int = 0, hold: str | None = None):
        self.stops, self.min_tokens, self.hold = stops, min_tokens, hold
        self._marks = stops + ((hold,) if hold else ())
        self.sent = 0  # characters sent
        self._floor = 0  # a stop string must end after this character (min_tokens)

    def stop_at(self, text: str, tokens: int) -> int | None:
        """Where a stop string starts in the text of `tokens` tokens, if one does."""
        if not self.stops:
            return None
        if tokens < self.min_tokens:
            self._floor = len(text)
            return None
        for stop in self.stops:
            at = text.find(stop, max(0, self.sent - len(stop), self._floor - len(stop) + 1))
            if at >= 0:
                return at
        return None

    def delta(self, text: str) -> str:
        """The new text that may be sent now (counted as sent)."""
        end = len(text) - held_back(text, self._marks)
        opened = text.find(self.hold, self.sent) if self.hold else -1
        end = end if opened < 0 else min(end, opened)
        if end <= self.sent:
            return ""
        piece, self.sent = text[self.sent : end], end
        return piece
