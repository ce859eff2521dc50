"""Shared schema parts (importable without torch)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    code: str = Field(examples=["model_not_found"])
    message: str = Field(examples=["model 'intnet' is not served"])
    request_id: str | None = Field(examples=["9f1c2e7a4b3d4e5f8a9b0c1d2e3f4a5b"])
    details: Any = Field(None, examples=[{"available": ["embed", "intent", "sentiment"]}])


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the envelope."""
    return {status: {"model": ErrorResponse} for status in statuses}
