"""The Triton tensor names the frontend relies on, per task, in one place.

They are the other half of the card contract: each model card's `triton_io` names what the
exported model takes and gives, and the catalog checks at start-up that every name here is
among them (a mismatch fails the start with the model's name, not a request later).
Nothing here imports gRPC: services and routes may use the names freely.
"""

from __future__ import annotations

from typing import Final

# Text classification and embeddings: one string per row in, named outputs back.
TEXT: Final = "TEXT"
LABEL: Final = "LABEL"
SCORE: Final = "SCORE"
SCORES: Final = "SCORES"
EMBEDDING: Final = "EMBEDDING"
NUM_TOKENS: Final = "NUM_TOKENS"
TRUNCATED: Final = "TRUNCATED"

# Text generation (decoupled: one response per step).
PROMPT: Final = "PROMPT"
MESSAGES: Final = "MESSAGES"
MAX_TOKENS: Final = "MAX_TOKENS"
TEMPERATURE: Final = "TEMPERATURE"
TOP_P: Final = "TOP_P"
TOP_K: Final = "TOP_K"
SEED: Final = "SEED"
STOP: Final = "STOP"
GEN_TEXT: Final = "TEXT"
PROMPT_TOKENS: Final = "PROMPT_TOKENS"
COMPLETION_TOKENS: Final = "COMPLETION_TOKENS"
FINISH_REASON: Final = "FINISH_REASON"

# What the frontend sends and reads, by the task a card declares.
EXPECTED_IO: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    "text-classification": (
        frozenset({TEXT}),
        frozenset({LABEL, SCORE, SCORES, NUM_TOKENS, TRUNCATED}),
    ),
    "feature-extraction": (frozenset({TEXT}), frozenset({EMBEDDING, NUM_TOKENS})),
    "text-generation": (
        frozenset({PROMPT, MESSAGES, MAX_TOKENS, TEMPERATURE, TOP_P, TOP_K, SEED, STOP}),
        frozenset({GEN_TEXT, PROMPT_TOKENS, COMPLETION_TOKENS, FINISH_REASON}),
    ),
}
