from __future__ import annotations

from pydantic import BaseModel


class Component(BaseModel):
    status: str  # up | down
    required: bool
    latency_ms: float | None = None
    detail: str | None = None


class HealthResponse(BaseModel):
    status: str  # ok | ready | degraded | not_ready | starting
    components: dict[str, Component] = {}
