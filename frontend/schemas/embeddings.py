"""OpenAI /v1/embeddings shapes."""

from __future__ import annotations

from typing import Annotated, Literal, cast

from pydantic import BaseModel, Field

from .common import NullIs, PositiveInteger, Strict, TokenIds


class EmbeddingRequest(Strict):
    """OpenAI's input forms: a text, texts, one text as token ids, or texts as token ids
    (ids of the model's own tokenizer, decoded with it)."""

    input: str | list[str] | TokenIds | list[TokenIds] = Field(
        examples=["The food was delicious and the waiter..."]
    )
    model: str = Field(examples=["embed"])
    encoding_format: Annotated[Literal["float", "base64"], NullIs("float")] = "float"
    dimensions: PositiveInteger | None = Field(
        None, description="Must equal the model's size if set."
    )
    user: str | None = Field(None, max_length=256)

    def text_input(self) -> str | list[str] | None:
        """The input when it is text (a list of none counts as text); None for ids."""
        given = self.input
        if isinstance(given, str) or not given or isinstance(given[0], str):
            return cast(str | list[str], given)
        return None

    def token_ids(self) -> list[list[int]] | None:
        """The inputs as token id lists, when they are ids; None for text."""
        given = self.input
        if isinstance(given, str) or not given or isinstance(given[0], str):
            return None
        if isinstance(given[0], int):
            return [cast(list[int], given)]
        return cast(list[list[int]], given)

    def one_input(self) -> bool:
        """A single input (a text, or one list of ids): its errors name `input` itself."""
        given = self.input
        return isinstance(given, str) or (bool(given) and isinstance(given[0], int))


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
