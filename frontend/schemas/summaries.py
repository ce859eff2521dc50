"""POST /v1/models/{model}/predict for summarization models (summarize)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from .common import WHOLE, Strict
from .predict import Usage

Method = Literal["extractive", "abstractive"]


class SummarizeRequest(Strict):
    inputs: str | list[str] = Field(
        description="One text, or a list of texts summarized as one batch.",
        examples=["The committee met on Tuesday. It approved the budget. ..."],
    )
    method: Method | None = Field(
        None,
        description="extractive: the most central sentences, verbatim, in input order; "
        "abstractive: new text written by the model (slower: seconds). Default: the "
        "model's first method (its card's `methods`: extractive for `summarize`, "
        "abstractive for a seq2seq model added with `export hf`).",
    )
    max_sentences: Annotated[int, Field(ge=1, le=50), WHOLE] = Field(
        3, description="Sentences an extractive summary keeps."
    )
    max_tokens: Annotated[int, Field(ge=1, le=1024), WHOLE] = Field(
        128, description="Longest abstractive summary, in tokens."
    )

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"inputs": "The committee met on Tuesday. ...", "max_sentences": 2}]
        },
    )


class Sentence(BaseModel):
    index: int = Field(description="The sentence's position among the input's sentences.")
    start: int = Field(description="Offset of its first character (code points, from 0).")
    end: int = Field(description="Offset after its last character (exclusive).")
    text: str = Field(description="input[start:end].")


class Summary(BaseModel):
    summary: str
    method: Method
    source_chars: int = Field(description="Characters in the input.")
    source_sentences: int = Field(description="Sentences the input was split into.")
    chunks: int = Field(description="Parts a long input was summarized in (1: none).")
    sentences: list[Sentence] = Field(
        description="The sentences an extractive summary is made of; [] for abstractive."
    )


class SummariesResponse(BaseModel):
    model: str
    version: str
    task: Literal["summarization"]
    predictions: list[Summary]
    usage: Usage
