"""Admin route for the audit log (role admin): every admin action, newest first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from ..db.audit import AuditFilter
from ..deps import AdminDep, ServicesDep
from ..errors import InputInvalid
from ..schemas.audit import AuditPage
from ..schemas.common import error_responses
from . import paging

router = APIRouter(prefix="/v1/admin", tags=["admin"])
ERRORS = error_responses(401, 403, 422, 429, 503)


def _epoch(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # a time without an offset is read as UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@router.get(
    "/audit",
    response_model=AuditPage,
    responses=ERRORS,
    summary="The audit log, newest first, filtered by action, actor, target and time (role: admin)",
)
async def audit_log(
    _: AdminDep,
    services: ServicesDep,
    limit: paging.Limit = 50,
    cursor: paging.Cursor = None,
    action: Annotated[str | None, Query(max_length=64, examples=["routing.update"])] = None,
    actor: Annotated[str | None, Query(max_length=64, examples=["bootstrap"])] = None,
    target: Annotated[str | None, Query(max_length=160, examples=["model:intent"])] = None,
    since: Annotated[
        datetime | None,
        Query(alias="from", description="ISO-8601; entries at or after it (no offset: UTC)"),
    ] = None,
    until: Annotated[
        datetime | None,
        Query(alias="to", description="ISO-8601; entries before it (no offset: UTC)"),
    ] = None,
) -> object:
    where = AuditFilter(action, actor, target, _epoch(since), _epoch(until))
    if where.since is not None and where.until is not None and where.since > where.until:
        raise InputInvalid("from: must not be after to", {"from": where.since, "to": where.until})
    rows = await services.audit.page(where, limit=limit + 1, before=paging.before(cursor))
    shown, next_cursor = paging.page(rows, limit)
    return {"data": shown, "next_cursor": next_cursor}
