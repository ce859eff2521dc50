"""The `summarize` runner's options and settings: the two methods, the options of one
text (METHOD, MAX_SENTENCES, MAX_TOKENS, or the defaults) and the config parameters
export/summarize_export.py writes. Used by summarize_pipeline.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

METHODS = ("extractive", "abstractive")
Method = Literal["extractive", "abstractive"]


@dataclass(frozen=True)
class Options:
    method: Method
    max_sentences: int
    max_tokens: int


@dataclass(frozen=True)
class Settings:
    """The runner's config parameters (export/summarize_export.py writes them)."""

    default_method: Method = "extractive"
    default_max_sentences: int = 3
    default_max_tokens: int = 128
    max_sentences_limit: int = 50
    max_completion_tokens: int = 1024  # the chat model's own limit
    max_prompt_tokens: int = 1024  # the chat model's own limit
    chunk_tokens: int = 768  # source tokens per call, at most
    partial_tokens: int = 96  # the length of a partial summary
    prompt_margin_tokens: int = 16  # for the template/text seam the estimate misses
    concurrency: int = 4  # generations of one batch in the chat model at once
    embed_rows: int = 64
    max_chars: int = 20_000
    cancel_poll_s: float = 0.25

    @classmethod
    def from_params(cls, params: dict[str, str]) -> Settings:
        values: dict[str, Any] = {}
        for name, kind in (
            ("default_max_sentences", int),
            ("default_max_tokens", int),
            ("max_sentences_limit", int),
            ("max_completion_tokens", int),
            ("max_prompt_tokens", int),
            ("chunk_tokens", int),
            ("partial_tokens", int),
            ("prompt_margin_tokens", int),
            ("concurrency", int),
            ("embed_rows", int),
            ("max_chars", int),
            ("cancel_poll_s", float),
        ):
            if name in params:
                values[name] = kind(params[name])
        method = params.get("default_method", "extractive")
        if method not in METHODS:
            raise ValueError(f"default_method {method!r} is not one of {METHODS}")
        return cls(default_method=method, **values)  # type: ignore[arg-type]
