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

# Token classification (ner, pii): one text per row in; its spans as a JSON array out
# ({"text", "label", "start", "end", "score"?}, code-point offsets into the text as sent).
ENTITIES: Final = "ENTITIES"

# Image classification (imagenet): one encoded image (JPEG, PNG, WebP, GIF) per row in;
# LABEL, SCORE and SCORES as for text, and the image's size as decoded.
IMAGE: Final = "IMAGE"
WIDTH: Final = "WIDTH"
HEIGHT: Final = "HEIGHT"

# Summarization (summarize): TEXT in, with optional per-row METHOD, MAX_SENTENCES and
# MAX_TOKENS (the last is the generation tensor's name too); the summary, the method that
# made it, the chosen sentences as a JSON array ({"index", "start", "end"}; [] for
# abstractive), the source's sentence count and the map-reduce chunks out.
METHOD: Final = "METHOD"
MAX_SENTENCES: Final = "MAX_SENTENCES"
SUMMARY: Final = "SUMMARY"
SENTENCES: Final = "SENTENCES"
SOURCE_SENTENCES: Final = "SOURCE_SENTENCES"
CHUNKS: Final = "CHUNKS"

# Text generation (decoupled: one response per step).
PROMPT: Final = "PROMPT"
MESSAGES: Final = "MESSAGES"
MAX_TOKENS: Final = "MAX_TOKENS"
TEMPERATURE: Final = "TEMPERATURE"
TOP_P: Final = "TOP_P"
TOP_K: Final = "TOP_K"
SEED: Final = "SEED"
STOP: Final = "STOP"
# Each sent only when it is not its neutral value (generate.py), so a plain request is
# the same bytes it always was.
PROMPT_IDS: Final = "PROMPT_IDS"
N: Final = "N"
LOGPROBS: Final = "LOGPROBS"
PROMPT_LOGPROBS: Final = "PROMPT_LOGPROBS"
PRESENCE_PENALTY: Final = "PRESENCE_PENALTY"
FREQUENCY_PENALTY: Final = "FREQUENCY_PENALTY"
REPETITION_PENALTY: Final = "REPETITION_PENALTY"
LOGIT_BIAS: Final = "LOGIT_BIAS"
MIN_TOKENS: Final = "MIN_TOKENS"
IGNORE_EOS: Final = "IGNORE_EOS"
RESPONSE_FORMAT: Final = "RESPONSE_FORMAT"
TOOLS: Final = "TOOLS"
TOOL_CHOICE: Final = "TOOL_CHOICE"
PARALLEL_TOOL_CALLS: Final = "PARALLEL_TOOL_CALLS"
GEN_TEXT: Final = "TEXT"
PROMPT_TOKENS: Final = "PROMPT_TOKENS"
COMPLETION_TOKENS: Final = "COMPLETION_TOKENS"
FINISH_REASON: Final = "FINISH_REASON"
INDEX: Final = "INDEX"
TOKEN_LOGPROBS: Final = "TOKEN_LOGPROBS"
TOOL_CALLS: Final = "TOOL_CALLS"

GENERATION_INPUTS: Final = frozenset(
    {PROMPT, MESSAGES, MAX_TOKENS, TEMPERATURE, TOP_P, TOP_K, SEED, STOP}
    | {PROMPT_IDS, N, LOGPROBS, PROMPT_LOGPROBS}
    | {PRESENCE_PENALTY, FREQUENCY_PENALTY, REPETITION_PENALTY, LOGIT_BIAS}
    | {MIN_TOKENS, IGNORE_EOS, RESPONSE_FORMAT, TOOLS, TOOL_CHOICE, PARALLEL_TOOL_CALLS}
)
GENERATION_OUTPUTS: Final = frozenset(
    {GEN_TEXT, PROMPT_TOKENS, COMPLETION_TOKENS, FINISH_REASON, INDEX, TOKEN_LOGPROBS, TOOL_CALLS}
)

# What the frontend sends and reads, by the task a card declares.
EXPECTED_IO: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    "text-classification": (
        frozenset({TEXT}),
        frozenset({LABEL, SCORE, SCORES, NUM_TOKENS, TRUNCATED}),
    ),
    "feature-extraction": (frozenset({TEXT}), frozenset({EMBEDDING, NUM_TOKENS})),
    # All of the chat contract, the new options included: a repository built before them
    # fails the start naming what it lacks (rebuild it: `make models`) rather than a
    # request for n, logprobs or tools failing later.
    "text-generation": (GENERATION_INPUTS, GENERATION_OUTPUTS),
    "token-classification": (frozenset({TEXT}), frozenset({ENTITIES, NUM_TOKENS, TRUNCATED})),
    "image-classification": (
        frozenset({IMAGE}),
        frozenset({LABEL, SCORE, SCORES, WIDTH, HEIGHT}),
    ),
    # The options are optional per request, but the model must declare them: a request
    # that sends one to a model without it would fail in Triton, not at start-up.
    "summarization": (
        frozenset({TEXT, METHOD, MAX_SENTENCES, MAX_TOKENS}),
        frozenset({SUMMARY, METHOD, SENTENCES, SOURCE_SENTENCES, CHUNKS, NUM_TOKENS}),
    ),
}
