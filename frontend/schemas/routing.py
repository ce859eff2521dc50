"""A model's routing history as the admin API shows it
(GET /v1/admin/routing/{model}/history)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RoutingChange(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    model: str
    changed_at: float = Field(description="When, in epoch seconds (UTC)")
    actor: str
    request_id: str | None
    # As stored at the time: a version named here may no longer be served.
    previous: dict[str, Any] | None = Field(description="The routing replaced (null: defaults)")
    current: dict[str, Any] | None = Field(description="The routing stored (null: defaults)")


class RoutingHistory(BaseModel):
    model: str
    data: list[RoutingChange] = Field(description="Newest first")
    next_cursor: str | None = Field(description="Pass as `cursor` for older changes")
