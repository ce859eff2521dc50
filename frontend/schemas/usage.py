"""Schemas of the usage-ledger reports (GET /v1/usage's `ledger`, GET /v1/admin/usage)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .access import Usage


class LedgerGroup(BaseModel):
    """One group's sums. Only its grouping's keys are present: `day`; `model` and
    `version`; or `subject` and `account`."""

    day: str | None = Field(None, description="UTC date, YYYY-MM-DD", examples=["2024-05-01"])
    model: str | None = Field(None, examples=["intent"])
    version: str | None = Field(None, examples=["2"])
    subject: str | None = Field(None, description="Who called", examples=["key:3f9a0c1d"])
    account: str | None = Field(
        None, description="Whose limits it counted against", examples=["user:7d2e41ab"]
    )
    requests: int = Field(description="Requests that reached a model")
    items: int = Field(description="Texts classified or embedded; 1 per generation")
    prompt_tokens: int
    completion_tokens: int
    cache_hits: int = Field(description="Items answered from the response cache")
    errors: int = Field(description="Requests that reached a model and answered 400 or more")


class LedgerPage(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", description="Start (UTC, inclusive)")
    to: str = Field(description="End (UTC, exclusive)")
    group_by: Literal["day", "model", "subject"]
    data: list[LedgerGroup]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page"
    )


class UsageWithLedger(Usage):
    ledger: LedgerPage | None = Field(
        None,
        description="The usage ledger's sums: present when a ledger parameter is given "
        "(`from`, `to`, `group_by`, `key`, `limit`, `cursor`) or `ledger=true`",
    )
