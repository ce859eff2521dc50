"""Webhooks: each caller manages its own (another owner's is 404), with the signing
secret shown once at creation and at each rotation; the delivery log and redelivery.
Thin: frontend/notify/service.py does the work."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import Response

from ..db.tables import WebhookRecord
from ..deps import LimitedDep, NotificationsDep, RequestIdDep
from ..responses import OrjsonResponse
from ..schemas.common import error_responses
from ..schemas.webhooks import (
    DeliveryList,
    Redelivery,
    Webhook,
    WebhookCreate,
    WebhookList,
    WebhookRotate,
    WebhookUpdate,
    WebhookWithSecret,
)
from . import paging

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
ERRORS = error_responses(401, 404, 422, 429, 503)
CREATE_ERRORS = error_responses(401, 409, 422, 429, 503)
MAX_PAGE = 100
PageLimit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Entries per page")]


def render(hook: WebhookRecord, secret: str | None = None) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": hook.id,
        "object": "webhook",
        "url": hook.url,
        "events": hook.events,
        "description": hook.description,
        "enabled": hook.enabled,
        "disabled_reason": hook.disabled_reason,
        "consecutive_failures": hook.consecutive_failures,
        "created_at": hook.created_at,
        "updated_at": hook.updated_at,
        "rotated_at": hook.rotated_at,
        "previous_secret_valid_until": hook.previous_valid_until,
        "last_delivered_at": hook.last_delivered_at,
        "last_failed_at": hook.last_failed_at,
    }
    if secret is not None:
        shown["secret"] = secret
    return shown


@router.post(
    "",
    status_code=201,
    response_model=WebhookWithSecret,
    responses=CREATE_ERRORS,
    summary="Register a webhook for your jobs' events; its signing secret is shown once",
    description=(
        "The URL is checked now and at every delivery: http(s) only (https in prod), no"
        " credentials, and every address its host resolves to must be public (no loopback,"
        " private, link-local, CGNAT, multicast or unspecified address, no IPv4-mapped"
        " IPv6, no numeric host in decimal, octal or hex form). 409 past notify.max_webhooks."
    ),
)
async def create(
    body: WebhookCreate,
    caller: LimitedDep,
    service: NotificationsDep,
    request_id: RequestIdDep,
) -> Response:
    hook, secret = await service.create(caller, body, request_id)
    return OrjsonResponse(
        render(hook, secret), status_code=201, headers={"Location": f"/v1/webhooks/{hook.id}"}
    )


@router.get("", response_model=WebhookList, responses=ERRORS, summary="Your webhooks")
async def list_webhooks(
    caller: LimitedDep,
    service: NotificationsDep,
    limit: PageLimit = 20,
    cursor: paging.KeyCursor = None,
) -> object:
    found = await service.page(caller, paging.after_key(cursor), limit + 1)
    shown, next_cursor = paging.key_page(found, limit, lambda h: (h.created_at, h.id))
    return {"object": "list", "data": [render(h) for h in shown], "next_cursor": next_cursor}


@router.get("/{webhook_id}", response_model=Webhook, responses=ERRORS, summary="One webhook")
async def get_webhook(webhook_id: str, caller: LimitedDep, service: NotificationsDep) -> object:
    return render(await service.get(caller, webhook_id))


@router.patch(
    "/{webhook_id}",
    response_model=Webhook,
    responses=ERRORS,
    summary="Change a webhook's URL, events, description or enabled flag",
)
async def update_webhook(
    webhook_id: str,
    body: WebhookUpdate,
    caller: LimitedDep,
    service: NotificationsDep,
    request_id: RequestIdDep,
) -> object:
    return render(await service.change(caller, webhook_id, body, request_id))


@router.delete(
    "/{webhook_id}",
    status_code=204,
    responses=ERRORS,
    summary="Delete a webhook; its pending deliveries end",
)
async def delete_webhook(
    webhook_id: str, caller: LimitedDep, service: NotificationsDep, request_id: RequestIdDep
) -> Response:
    await service.delete(caller, webhook_id, request_id)
    return Response(status_code=204)


@router.post(
    "/{webhook_id}/rotate-secret",
    response_model=WebhookWithSecret,
    responses=ERRORS,
    summary="A new signing secret, shown once; the old one also signs for the grace period",
)
async def rotate_secret(
    webhook_id: str,
    caller: LimitedDep,
    service: NotificationsDep,
    request_id: RequestIdDep,
    body: WebhookRotate | None = None,
) -> object:
    grace = body.grace_s if body is not None else None
    hook, secret = await service.rotate(caller, webhook_id, grace, request_id)
    return render(hook, secret)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=DeliveryList,
    responses=ERRORS,
    summary="The webhook's deliveries, newest first, each with its attempts",
)
async def deliveries(
    webhook_id: str,
    caller: LimitedDep,
    service: NotificationsDep,
    limit: PageLimit = 20,
    cursor: paging.KeyCursor = None,
) -> object:
    found = await service.deliveries(caller, webhook_id, paging.after_key(cursor), limit + 1)
    shown, next_cursor = paging.key_page(found, limit, lambda d: (d["created_at"], d["id"]))
    return {"object": "list", "data": shown, "next_cursor": next_cursor}


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=Redelivery,
    responses=ERRORS,
    summary="Send a delivery's event again (the same Webhook-Id), as a new delivery",
)
async def redeliver(
    webhook_id: str,
    delivery_id: str,
    caller: LimitedDep,
    service: NotificationsDep,
    request_id: RequestIdDep,
) -> Response:
    new = await service.redeliver(caller, webhook_id, delivery_id, request_id)
    body = {"id": new, "object": "webhook.delivery", "state": "pending"}
    return OrjsonResponse(body, status_code=202)
