from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .common import Integer, Strict


class PredictRequest(Strict):
    inputs: str | list[str] = Field(
        description="One text, or a list of texts sent to the model as one batch.",
        examples=["I want to speak to a human", ["how do I renew my policy?", "thanks!"]],
    )
    top_k: Integer = Field(1, ge=1, description="How many labels to return per input, best first.")
    return_all_scores: bool = Field(False, description="Also return every label's score.")

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"inputs": ["connect me to an agent", "what's the weather"], "top_k": 3}]
        },
    )


class LabelScore(BaseModel):
    label: str
    score: float


class Prediction(BaseModel):
    label: str
    score: float
    top_k: list[LabelScore]
    scores: dict[str, float] | None = None
    truncated: bool = Field(description="The text was longer than the model's max length.")


class Usage(BaseModel):
    input_tokens: int


class PredictResponse(BaseModel):
    model: str
    version: str
    score_kind: str | None = Field(
        None, description="probability, or decision_value (LinearSVC margins)."
    )
    predictions: list[Prediction]
    usage: Usage
