"""Named entities in English text: spaCy's en_core_web_sm 3.8.0 pipeline, run as spaCy
runs it (the `ner` model).

The artifact is the package's pipeline written by `nlp.to_disk` (the `pipeline` folder
beside model.py); it is loaded with `spacy.load`, so the tokenizer, the weights and the
transition system are spaCy's own and an entity is exactly what `nlp(text).ents` gives:
its text, label and code-point offsets into the text as sent (spaCy's tokenizer keeps
every character, so `text[start:end]` is the entity's text). spaCy's NER has no score.

Only the components the recognizer depends on are loaded (`UNUSED_COMPONENTS`); the
export-time check (export/ner_export.py) compares every entity against the full package
pipeline, one text at a time, and refuses the artifact on any difference.

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
except ImportError:  # flat import beside model.py in the Triton repository
    from batch_model import BatchCancelled, decode_utf8_texts  # type: ignore[no-redef]

# Far above any sentence, far below what the parser and NER can hold in memory (spaCy
# estimates about 1 GB of temporary memory per 100 000 characters).
DEFAULT_MAX_CHARS = 100_000
# Texts per nlp.pipe call, and so per cancellation poll: 64 was the fastest of 1, 7, 64
# and 1000 on the fidelity texts (1000 is no faster and a cancelled batch runs longer).
DEFAULT_BATCH_SIZE = 64

# Components whose output the recognizer never reads, not loaded. The NER model embeds
# its own tok2vec over NORM, PREFIX, SUFFIX and SHAPE (lexical attributes the tokenizer
# sets), and reads one thing other components write: sentence starts, which it never
# lets an entity cross (spacy/pipeline/_parser_internals/ner.pyx). So the parser stays,
# with the shared tok2vec it listens to; the tagger, attribute_ruler and lemmatizer only
# write TAG, POS, MORPH, DEP and LEMMA, and senter is disabled in the package. Leaving
# them out halves the time of a batch with identical entities (measured on the fidelity
# texts; without the parser, entities run across sentence ends).
UNUSED_COMPONENTS = ("tagger", "attribute_ruler", "lemmatizer", "senter")


def entity_rows(doc: Any) -> list[dict[str, Any]]:
    """A spaCy Doc's entities in the ENTITIES row's shape."""
    return [
        {"text": ent.text, "label": ent.label_, "start": ent.start_char, "end": ent.end_char}
        for ent in doc.ents
    ]


class NerPipeline:
    """decode(raw, offset) -> texts; run(texts, cancelled) -> ENTITIES / NUM_TOKENS /
    TRUNCATED, one row per text, in the order sent."""

    def __init__(self, version_dir: Path, params: dict[str, str]):
        import spacy

        self.max_chars = int(params.get("max_chars", DEFAULT_MAX_CHARS))
        self.batch_size = int(params.get("batch_size", DEFAULT_BATCH_SIZE))
        if self.max_chars < 1 or self.batch_size < 1:
            raise ValueError("max_chars and batch_size must be at least 1")
        self.nlp = spacy.load(version_dir / "pipeline", exclude=list(UNUSED_COMPONENTS))
        if "ner" not in self.nlp.pipe_names:
            raise ValueError(f"{version_dir / 'pipeline'} has no ner component")
        # spaCy refuses texts over nlp.max_length (1 000 000); ours are cut first.
        self.nlp.max_length = max(self.nlp.max_length, self.max_chars)
        ner: Any = self.nlp.get_pipe("ner")  # typed as a bare callable by spaCy
        self.labels = sorted(ner.labels)

    def decode(self, raw: np.ndarray, offset: int = 0) -> list[str]:
        return decode_utf8_texts(raw, "TEXT", offset)

    def run(
        self, texts: list[str], cancelled: Callable[[], bool] | None = None
    ) -> dict[str, np.ndarray]:
        """`cancelled()` is polled between nlp.pipe calls of `batch_size` texts (raises
        BatchCancelled); the first always runs (the base checked just before)."""
        clipped = [text[: self.max_chars] for text in texts]
        entities = np.empty((len(texts), 1), dtype=np.object_)
        num_tokens = np.zeros((len(texts), 1), dtype=np.int32)
        for start in range(0, len(clipped), self.batch_size):
            if start and cancelled is not None and cancelled():
                raise BatchCancelled(f"cancelled after {start} of {len(texts)} texts")
            chunk = clipped[start : start + self.batch_size]
            for i, doc in enumerate(self.nlp.pipe(chunk, batch_size=len(chunk)), start):
                entities[i, 0] = json.dumps(entity_rows(doc), ensure_ascii=False).encode()
                num_tokens[i, 0] = len(doc)
        truncated = np.array([[len(text) > self.max_chars] for text in texts], dtype=np.bool_)
        return {"ENTITIES": entities, "NUM_TOKENS": num_tokens, "TRUNCATED": truncated}
