from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class VersionInfo(BaseModel):
    version: str
    status: str  # READY | UNAVAILABLE | LOADING | UNKNOWN (from Triton)
    reason: str | None = None
    description: str | None = None
    score_kind: str | None = None
    score_meaning: str | None = None
    artifact_sha256: str | None = None
    quality: dict[str, Any] | None = None
    routing_status: str = "stable"  # stable | canary | deprecated | retired
    sunset: str | None = None
    replacement: str | None = None


class ModelInfo(BaseModel):
    id: str
    object: str = "model"
    # OpenAI's model fields: when the served (default) version was built, and whose it is.
    created: int = Field(description="Unix time the default version was built.")
    owned_by: str = "infergate"
    task: str
    description: str
    default_version: str
    versions: list[VersionInfo]
    num_labels: int
    embedding_dim: int | None = None
    max_input_tokens: int
    # image-classification: the square an image is resized to, and its caps.
    image_size: int | None = None
    max_image_pixels: int | None = None
    max_image_bytes: int | None = None
    # summarization: the methods it offers.
    methods: list[str] | None = None
    ready: bool
    labels: list[str] | None = None


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelInfo]
