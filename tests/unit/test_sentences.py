"""The summarizer's sentence splitter (export/runtime/sentences.py): where sentences end,
and offsets that give every sentence back verbatim."""

from __future__ import annotations

import random
import unicodedata

import pytest

from export.runtime.sentences import split_sentences
from export.summarize_export import SPLITTER_CASES


def sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in split_sentences(text)]


def assert_well_formed(text: str) -> None:
    """Offsets in order, no overlap, no whitespace at either end of a sentence, and every
    non-whitespace character of the text inside exactly one sentence."""
    spans = split_sentences(text)
    covered = [False] * len(text)
    last_end = 0
    for start, end in spans:
        assert last_end <= start < end <= len(text), spans
        piece = text[start:end]
        assert piece == piece.strip(), repr(piece)
        for i in range(start, end):
            covered[i] = True
        last_end = end
    for i, c in enumerate(text):
        assert covered[i] or c.isspace(), f"{c!r} at {i} is in no sentence"


CASES = [
    *SPLITTER_CASES,
    # Abbreviations: titles, Latin, initialisms, initials, companies, months.
    (
        "Dr. Watson met Prof. Moriarty. They talked, i.e. they argued. Mrs. Hudson listened.",
        [
            "Dr. Watson met Prof. Moriarty.",
            "They talked, i.e. they argued.",
            "Mrs. Hudson listened.",
        ],
    ),
    (
        "The U.K. and the U.S. signed it. John F. Kennedy was there. Apple Inc. The company grew.",
        [
            "The U.K. and the U.S. signed it.",
            "John F. Kennedy was there.",
            "Apple Inc.",
            "The company grew.",
        ],
    ),
    (
        "She has a Ph.D. in physics. It starts at 9 a.m. The doors open early.",
        ["She has a Ph.D. in physics.", "It starts at 9 a.m.", "The doors open early."],
    ),
    (
        "Bring pens, paper, etc. The exam is on Jan. 5 at noon. See Fig. 3 and p. 12 for more.",
        [
            "Bring pens, paper, etc.",
            "The exam is on Jan. 5 at noon.",
            "See Fig. 3 and p. 12 for more.",
        ],
    ),
    ("Cats vs. dogs is an old debate. The answer is no. We move on.", None),
    # Decimals, versions, money, times, URLs: no boundary without a space after.
    (
        "Pi is about 3.14159. Version 2.0.1 shipped. It cost $4.99 at 10.30 today. "
        "Visit example.com now.",
        [
            "Pi is about 3.14159.",
            "Version 2.0.1 shipped.",
            "It cost $4.99 at 10.30 today.",
            "Visit example.com now.",
        ],
    ),
    # Ellipses: a boundary before a capital, none before lower case.
    (
        "I waited… Nothing happened. Then... well, it rained... And it stopped.",
        ["I waited…", "Nothing happened.", "Then... well, it rained...", "And it stopped."],
    ),
    # Quotes and brackets close the sentence they end.
    (
        "He asked, “Are you sure?” She nodded. (It was late.) They left.",
        ["He asked, “Are you sure?”", "She nodded.", "(It was late.)", "They left."],
    ),
    ("«Non !» dit-il. Puis il partit.", None),
    ('"Stop!" she yelled. "Why?" he asked, and she said "Because." Then silence.', None),
    # Informal text: a bare ! or ? ends a sentence even before lower case; a period does
    # not (before lower case it is far more often an abbreviation's).
    ("wow! that was fast. really? yes", ["wow!", "that was fast. really?", "yes"]),
    # Newlines: paragraphs, lists, headings; a single newline inside prose is a space.
    (
        "Results\nThe drug worked in most\npatients. Side effects were rare.\n\nNext steps",
        [
            "Results",
            "The drug worked in most\npatients.",
            "Side effects were rare.",
            "Next steps",
        ],
    ),
    (
        "Shopping list:\n- eggs\n- milk\n* bread\n\n1. Preheat the oven.\n2) Mix the batter.",
        [
            "Shopping list:",
            "- eggs",
            "- milk",
            "* bread",
            "1. Preheat the oven.",
            "2) Mix the batter.",
        ],
    ),
    ("First paragraph ends\n\n\n   Second paragraph starts. It ends.", None),
    ("Windows line ends.\r\nAre fine.\r\n\r\nNew paragraph.", None),
    # Emoji: after the punctuation they stay with the sentence; inside, they are words.
    (
        "Loved it! 😍😍 Will return. Family trip 👨‍👩‍👧‍👦 was great. Thumbs 👍🏽. Flags 🇫🇷 too!",
        [
            "Loved it! 😍😍",
            "Will return.",
            "Family trip 👨‍👩‍👧‍👦 was great.",
            "Thumbs 👍🏽.",
            "Flags 🇫🇷 too!",
        ],
    ),
    ("🎉🎉 Party time. Next one soon.", ["🎉🎉 Party time.", "Next one soon."]),
    ("Done.🎉 Next.", ["Done.🎉", "Next."]),
    # Combining marks (decomposed letters) are part of their letter.
    (
        "Cafe\u0301 au lait. C\u0327a va? Tie\u0302\u0301ng Vie\u0323\u0302t. Nai\u0308ve.",
        [
            "Cafe\u0301 au lait.",
            "C\u0327a va?",
            "Tie\u0302\u0301ng Vie\u0323\u0302t.",
            "Nai\u0308ve.",
        ],
    ),
    # CJK: full stops need no space; a closed quote followed by text is one sentence.
    (
        "東京は大きい。大阪も大きい！本当？「はい。」と彼は言った。",
        ["東京は大きい。", "大阪も大きい！", "本当？", "「はい。」と彼は言った。"],
    ),
    ("我爱北京。I love Beijing. 你呢？", ["我爱北京。", "I love Beijing.", "你呢？"]),
    ("서울은 크다. 부산도 크다.", ["서울은 크다.", "부산도 크다."]),
    # Stray punctuation joins a sentence; text without any stop is one sentence.
    ("It ended. ... Or did it?", ["It ended. ...", "Or did it?"]),
    ("no punctuation at all here", ["no punctuation at all here"]),
    ("!!!", ["!!!"]),
    ("  \t Padded.   Both sides.  \n", ["Padded.", "Both sides."]),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_sentences(text, expected):
    assert_well_formed(text)
    if expected is not None:
        assert sentences(text) == expected


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("Cats vs. dogs is an old debate. The answer is no. We move on.", 3),
        ("«Non !» dit-il. Puis il partit.", 2),
        ('"Stop!" she yelled. "Why?" he asked, and she said "Because." Then silence.', 3),
        ("First paragraph ends\n\n\n   Second paragraph starts. It ends.", 3),
        ("Windows line ends.\r\nAre fine.\r\n\r\nNew paragraph.", 3),
    ],
)
def test_sentence_counts(text, count):
    assert len(split_sentences(text)) == count


def test_offsets_are_code_points_not_bytes_or_utf16_units():
    # Astral emoji are 1 str index (4 UTF-8 bytes, 2 UTF-16 units); combining marks 1 each.
    text = "👩🏽‍🔬 Science rocks! Cafe\u0301 next."
    spans = split_sentences(text)
    assert spans == [(0, 19), (20, 31)]
    assert text[20:31] == "Cafe\u0301 next."
    assert unicodedata.normalize("NFC", text[20:31]) == "Café next."


def test_blank_text_has_no_sentences():
    assert split_sentences("") == []
    assert split_sentences(" \n\t ") == []


def test_a_long_text_splits_fast_and_whole():
    import time

    unit = "The committee met on Monday. It approved the budget of 3.5 million. Mr. Lee spoke.\n\n"
    text = unit * 400  # ~35 000 characters
    started = time.monotonic()
    spans = split_sentences(text)
    assert time.monotonic() - started < 1.0
    assert len(spans) == 3 * 400
    assert_well_formed(text)


def test_random_texts_are_covered_verbatim():
    """Fragments of every kind above, glued with random whitespace: whatever the
    boundaries, offsets stay verbatim and cover every non-space character."""
    pieces = [
        "Mr.",
        "Smith",
        "3.14",
        "U.S.",
        "e.g.",
        "...",
        "…",
        "?!",
        "“quoted.”",
        "(aside)",
        "😍",
        "👨‍👩‍👧",
        "🇫🇷",
        "Cafe\u0301",
        "東京。",
        "「はい。」",
        "word",
        "Word.",
        "end!",
        "-",
        "1.",
        "'",
        '"',
        "a.m.",
        "etc.",
        "\u200d",
        "\ufe0f",
    ]
    rng = random.Random(20240601)
    for _ in range(300):
        parts = [rng.choice(pieces) for _ in range(rng.randint(1, 25))]
        text = "".join(p + rng.choice([" ", "  ", "\n", "\n\n", "\t", "", " \n "]) for p in parts)
        assert_well_formed(text)
