"""The audit log as the admin API shows it (GET /v1/admin/audit)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AuditEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: float = Field(description="When, in epoch seconds (UTC)")
    actor: str = Field(description='Who: "key:<id>", "user:<id>" or "bootstrap"')
    action: str = Field(examples=["routing.update", "routing.reset", "cache.purge"])
    target: str = Field(examples=["model:intent", "cache:*", "cache:intent:v2"])
    request_id: str | None = Field(description="The request that did it (X-Request-ID)")
    details: dict[str, Any]


class AuditPage(BaseModel):
    data: list[AuditEntry] = Field(description="Newest first")
    next_cursor: str | None = Field(description="Pass as `cursor` for older entries")
