"""Usage: a caller's own (GET /v1/usage: rate-limit windows, token budget and, when
asked, the ledger of its account) and everyone's (GET /v1/admin/usage, JSON or CSV).

The ledger is read by account (whose limits a request counted against): a user sees
what their login and all of their API keys used, a standalone key what it and the keys
it minted used; `key=` narrows that to one of the account's keys."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ..deps import AccessDep, AdminDep, PrincipalDep, ServicesDep
from ..errors import InputInvalid
from ..schemas.common import error_responses
from ..schemas.usage import LedgerPage, UsageWithLedger
from ..services import access as service
from ..usage import report
from ..usage.report import MAX_LIMIT, MAX_RANGE_DAYS, ReportAsk

router = APIRouter(prefix="/v1", tags=["auth"])

_WHEN = "ISO-8601 date (`2024-05-01`) or date-time (`2024-05-01T12:00:00Z`), UTC by default"
From = Annotated[
    str | None,
    Query(
        alias="from",
        max_length=40,
        description=f"Start, inclusive: {_WHEN}. Default: 24 h before `to`",
    ),
]
To = Annotated[
    str | None,
    Query(
        max_length=40,
        description=f"End, exclusive ({_WHEN}; a date alone includes that day). Default: "
        f"now. At most {MAX_RANGE_DAYS} days after `from`",
    ),
]
Limit = Annotated[
    int | None, Query(ge=1, le=MAX_LIMIT, description="Groups per page (default 100)")
]
Cursor = Annotated[
    str | None, Query(max_length=1024, description="`next_cursor` of the previous page")
]
_ID = r"^[A-Za-z0-9_.:@-]+$"
KeyId = Annotated[
    str | None,
    Query(max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="Only this API key's use"),
]
CSV_TYPE = "text/csv"
OWN_GROUPINGS = frozenset(("day", "model"))


def _key_subject(key: str | None, subject: str | None = None) -> str | None:
    if key is None:
        return subject
    if subject is not None:
        raise InputInvalid("give key or subject, not both (key=ID is subject=key:ID)")
    return f"key:{key}"


@router.get(
    "/usage",
    response_model=UsageWithLedger,
    # Only what was set: `ledger` is absent unless asked for, and a group shows only its
    # grouping's keys.
    response_model_exclude_unset=True,
    responses=error_responses(401, 422, 503),
    summary="Your rate-limit windows and token budget now, and your account's usage "
    "ledger when asked (role: any; not counted)",
)
async def usage(
    principal: PrincipalDep,
    access: AccessDep,
    services: ServicesDep,
    from_: From = None,
    to: To = None,
    group_by: Annotated[Literal["day", "model"] | None, Query()] = None,
    limit: Limit = None,
    cursor: Cursor = None,
    key: KeyId = None,
    ledger: Annotated[bool, Query(description="Include the ledger (default range)")] = False,
) -> object:
    body: dict[str, Any] = await service.usage(access, principal)
    if ledger or any(p is not None for p in (from_, to, group_by, limit, cursor, key)):
        ask = ReportAsk(
            from_, to, group_by, limit, cursor,
            account=principal.account,  # from the credentials, never the query
            subject=_key_subject(key),
            groupings=OWN_GROUPINGS,
        )  # fmt: skip
        body["ledger"] = await report.report(services.database, ask)
    return body


@router.get(
    "/admin/usage",
    tags=["admin"],
    response_model=LedgerPage,
    response_model_exclude_unset=True,  # a group shows only its grouping's keys
    responses={
        **error_responses(401, 403, 422, 429, 503),
        200: {
            "content": {CSV_TYPE: {}},
            "description": "JSON, or with `Accept: text/csv` a CSV attachment (a header "
            "row, one row per group; the next page's cursor in `X-Next-Cursor`)",
        },
    },
    summary="Everyone's usage ledger, grouped by day, model version or subject (role: admin)",
)
async def admin_usage(
    request: Request,
    _admin: AdminDep,
    services: ServicesDep,
    from_: From = None,
    to: To = None,
    group_by: Annotated[Literal["day", "model", "subject"] | None, Query()] = None,
    limit: Limit = None,
    cursor: Cursor = None,
    key: KeyId = None,
    subject: Annotated[
        str | None, Query(max_length=64, pattern=_ID, examples=["user:7d2e41ab"])
    ] = None,
    account: Annotated[
        str | None, Query(max_length=64, pattern=_ID, examples=["user:7d2e41ab"])
    ] = None,
) -> object:
    ask = ReportAsk(
        from_, to, group_by, limit, cursor, account=account, subject=_key_subject(key, subject)
    )
    page = await report.report(services.database, ask)
    if CSV_TYPE not in request.headers.get("accept", "").lower():
        return page
    headers = {"Content-Disposition": 'attachment; filename="usage.csv"'}
    if page["next_cursor"] is not None:
        headers["X-Next-Cursor"] = page["next_cursor"]
    return Response(report.to_csv(page), media_type=f"{CSV_TYPE}; charset=utf-8", headers=headers)
