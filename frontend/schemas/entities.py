"""POST /v1/models/{model}/predict for token-classification models (ner, pii)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .common import Strict
from .predict import Usage


class EntitiesRequest(Strict):
    inputs: str | list[str] = Field(
        description="One text, or a list of texts sent to the model as one batch.",
        examples=["Ada Lovelace met Charles Babbage in London in 1833."],
    )

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"inputs": "Ada Lovelace met Charles Babbage."}]},
    )


class Entity(BaseModel):
    text: str = Field(description="The span as it is in the input: input[start:end].")
    label: str = Field(description="The entity type, one of the model's labels.")
    start: int = Field(description="Offset of the first character (code points, from 0).")
    end: int = Field(description="Offset after the last character (exclusive).")
    score: float | None = Field(
        None, description="The model's confidence; absent where the model gives none (ner)."
    )


class EntityPrediction(BaseModel):
    entities: list[Entity] = Field(description="The spans found, in input order.")
    truncated: bool = Field(description="The text was longer than the model reads.")


class EntitiesResponse(BaseModel):
    model: str
    version: str
    task: Literal["token-classification"]
    predictions: list[EntityPrediction]
    usage: Usage
