"""OpenAI /v1/embeddings shapes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .common import PositiveInteger, Strict


class EmbeddingRequest(Strict):
    input: str | list[str] = Field(examples=["The food was delicious and the waiter..."])
    model: str = Field(examples=["embed"])
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: PositiveInteger | None = Field(
        None, description="Must equal the model's size if set."
    )
    user: str | None = Field(None, max_length=256)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
