"""The `summarize` model's map-reduce chunking (abstractive method). A text whose tokens
fit the chunk budget is one call ("whole"); a longer one is map-reduced: chunks of whole
sentences within the budget (a sentence longer than the budget alone is cut at spaces),
each summarized ("part", at most `partial_tokens`), then the partial summaries joined by a
blank line and summarized ("combine", the caller's MAX_TOKENS); partial summaries that
still do not fit are grouped (`paragraph_spans`) and combined again, level by level
(SummarizePipeline.next_level).

Tokens are counted with the chat model's own tokenizer when the runner finds it
(`count_tokens`); without one, the UTF-8 byte count stands in: a byte-level BPE never
makes more tokens than bytes, so a chunk never overflows the chat prompt limit.
"""

from __future__ import annotations

from collections.abc import Callable

CHUNK_SEPARATOR = "\n\n"


def utf8_bytes(text: str) -> int:
    """An upper bound of any byte-level BPE's token count."""
    return len(text.encode("utf-8"))


def chunk_spans(
    text: str, spans: list[tuple[int, int]], budget: int, count: Callable[[str], int]
) -> list[tuple[int, int]]:
    """Consecutive sentences grouped into chunks of at most `budget` tokens, each chunk
    the verbatim text from its first sentence's start to its last one's end; a sentence
    over the budget alone is cut at spaces first."""
    pieces = [p for a, b in spans for p in _fit_sentence(text, a, b, budget, count)]
    chunks: list[tuple[int, int]] = []
    start = end = -1
    used = 0
    for a, b in pieces:
        # +1: the whitespace between two sentences is at most one token more (it is
        # usually part of the next word's token).
        cost = count(text[a:b]) + 1
        if start >= 0 and used + cost > budget:
            chunks.append((start, end))
            start = -1
        if start < 0:
            start, used = a, 0
        end = b
        used += cost
    if start >= 0:
        chunks.append((start, end))
    return [c for chunk in chunks for c in _verified(text, chunk, pieces, budget, count)]


def _fit_sentence(
    text: str, start: int, end: int, budget: int, count: Callable[[str], int]
) -> list[tuple[int, int]]:
    """A sentence as pieces of at most `budget` tokens, cut at spaces where there are any."""
    pieces: list[tuple[int, int]] = []
    while start < end:
        if count(text[start:end]) <= budget:
            pieces.append((start, end))
            break
        cut = start + max(1, (end - start) // 2)
        while count(text[start:cut]) > budget and cut - start > 1:
            cut = start + max(1, (cut - start) // 2)
        # Grow back towards the budget in steps, then back off to a space.
        step = max(1, (cut - start) // 4)
        while cut + step < end and count(text[start : cut + step]) <= budget:
            cut += step
        space = text.rfind(" ", start + 1, cut + 1)
        if space > start:
            cut = space
        while cut - start > 1 and text[cut - 1].isspace():
            cut -= 1
        pieces.append((start, cut))
        start = cut
        while start < end and text[start].isspace():
            start += 1
    return pieces


def _verified(
    text: str,
    chunk: tuple[int, int],
    pieces: list[tuple[int, int]],
    budget: int,
    count: Callable[[str], int],
) -> list[tuple[int, int]]:
    """The chunk, or its halves (at a piece boundary) when the exact count is over."""
    a, b = chunk
    if count(text[a:b]) <= budget:
        return [chunk]
    inside = [p for p in pieces if a <= p[0] and p[1] <= b]
    if len(inside) < 2:
        return [chunk]  # one piece, within the budget on its own
    half = len(inside) // 2
    left = (inside[0][0], inside[half - 1][1])
    right = (inside[half][0], inside[-1][1])
    return _verified(text, left, inside, budget, count) + _verified(
        text, right, inside, budget, count
    )


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """The partial summaries inside their blank-line join."""
    spans = []
    at = 0
    for part in text.split(CHUNK_SEPARATOR):
        spans.append((at, at + len(part)))
        at += len(part) + len(CHUNK_SEPARATOR)
    return [s for s in spans if s[0] < s[1]]
