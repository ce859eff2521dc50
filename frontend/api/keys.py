"""Self-service keys: any caller manages the keys it owns; others' keys are 404."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import AccessDep, CatalogDep, LimitedDep, RequestIdDep, SettingsDep
from ..schemas.access import KeyCreated, KeyInfo, KeyList, KeyRotate, OwnKeyCreate
from ..schemas.common import error_responses
from ..services import access as service

router = APIRouter(prefix="/v1/keys", tags=["keys"])
ERRORS = error_responses(401, 404, 422, 429, 503)


@router.post(
    "",
    status_code=201,
    response_model=KeyCreated,
    responses=ERRORS,
    summary="Create a key for yourself; the secret is shown once (role: any)",
    description=(
        "The new key acts as you: your account, tier, rate limits and token budget (a key"
        " minted by a standalone key acts as that key, and is revoked with it). Options as"
        " for admin keys; a key cannot mint one with wider scopes, looser limits or a later"
        " expiry than its own."
    ),
)
async def create(
    body: OwnKeyCreate,
    principal: LimitedDep,
    access: AccessDep,
    catalog: CatalogDep,
    request_id: RequestIdDep,
) -> object:
    return await service.create_own_key(access, principal, request_id, body, catalog.names())


@router.get("", response_model=KeyList, responses=ERRORS, summary="Your keys (role: any)")
async def list_keys(principal: LimitedDep, access: AccessDep) -> object:
    return {"data": await access.keys.listing(principal.owner)}


@router.get("/{key_id}", response_model=KeyInfo, responses=ERRORS, summary="One of your keys")
async def get_key(key_id: str, principal: LimitedDep, access: AccessDep) -> object:
    return (await access.keys.get_owned(key_id, principal.owner)).public()


@router.post(
    "/{key_id}/rotate",
    response_model=KeyCreated,
    responses=ERRORS,
    summary="A new secret for one of your keys; the old one works for a grace period",
)
async def rotate(
    key_id: str,
    principal: LimitedDep,
    access: AccessDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
    body: KeyRotate | None = None,
) -> object:
    grace = body.grace_s if body is not None else None
    return await service.rotate_key(
        access, settings.auth, principal, request_id, key_id, principal.owner, grace
    )


@router.delete(
    "/{key_id}", response_model=KeyInfo, responses=ERRORS, summary="Revoke one of your keys"
)
async def revoke(
    key_id: str, principal: LimitedDep, access: AccessDep, request_id: RequestIdDep
) -> object:
    return await service.revoke_key(access, principal, request_id, key_id, principal.owner)
