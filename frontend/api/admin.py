"""Admin routes (role admin; a user gets 403): keys, users, tiers."""

from __future__ import annotations

from fastapi import APIRouter, Query

from ..deps import AccessDep, AdminDep, CatalogDep, RequestIdDep, SettingsDep
from ..schemas.access import (
    KeyCreate,
    KeyCreated,
    KeyInfo,
    KeyList,
    KeyRotate,
    KeyUpdate,
    TierList,
    UserCreate,
    UserInfo,
    UserList,
    UserUpdate,
)
from ..schemas.common import error_responses
from ..services import access as service

router = APIRouter(prefix="/v1/admin", tags=["admin"])
ERRORS = error_responses(401, 403, 404, 409, 422, 429, 503)


@router.post(
    "/keys",
    status_code=201,
    response_model=KeyCreated,
    responses=ERRORS,
    summary="Create an API key; the secret is shown once (role: admin)",
    description=(
        "Optional: `expires_in_s`, `scopes` (models and inference routes it may use),"
        " `limits` (its own requests/tokens per minute and concurrent requests, on top of"
        " its account's tier) and `labels`."
    ),
)
async def create_key(
    body: KeyCreate,
    principal: AdminDep,
    access: AccessDep,
    settings: SettingsDep,
    catalog: CatalogDep,
    request_id: RequestIdDep,
) -> object:
    return await service.create_key(
        access, settings.auth, principal, request_id, body, catalog.names()
    )


@router.get("/keys", response_model=KeyList, responses=ERRORS, summary="All keys (role: admin)")
async def list_keys(
    _: AdminDep,
    access: AccessDep,
    owner: str | None = Query(None, max_length=80, description="Only this owner's keys"),
) -> object:
    return {"data": await access.keys.listing(owner)}


@router.get(
    "/keys/{key_id}", response_model=KeyInfo, responses=ERRORS, summary="One key (role: admin)"
)
async def get_key(key_id: str, _: AdminDep, access: AccessDep) -> object:
    return (await access.keys.get_owned(key_id, None)).public()


@router.patch(
    "/keys/{key_id}",
    response_model=KeyInfo,
    responses=ERRORS,
    summary="Change a key's tier, scopes, limits, labels or expiry; applies at once (role: admin)",
)
async def update_key(
    key_id: str,
    body: KeyUpdate,
    principal: AdminDep,
    access: AccessDep,
    settings: SettingsDep,
    catalog: CatalogDep,
    request_id: RequestIdDep,
) -> object:
    return await service.update_key(
        access, settings.auth, principal, request_id, key_id, body, catalog.names()
    )


@router.post(
    "/keys/{key_id}/rotate",
    response_model=KeyCreated,
    responses=ERRORS,
    summary="Give a key a new secret; the old one works for a grace period (role: admin)",
)
async def rotate_key(
    key_id: str,
    principal: AdminDep,
    access: AccessDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
    body: KeyRotate | None = None,
) -> object:
    grace = body.grace_s if body is not None else None
    return await service.rotate_key(
        access, settings.auth, principal, request_id, key_id, None, grace
    )


@router.delete(
    "/keys/{key_id}",
    response_model=KeyInfo,
    responses=ERRORS,
    summary="Revoke a key; refused at once in every worker (role: admin)",
)
async def revoke_key(
    key_id: str, principal: AdminDep, access: AccessDep, request_id: RequestIdDep
) -> object:
    return await service.revoke_key(access, principal, request_id, key_id, None)


@router.post(
    "/users",
    status_code=201,
    response_model=UserInfo,
    responses=ERRORS,
    summary="Create a user who logs in at /v1/auth/token (role: admin)",
)
async def create_user(
    body: UserCreate,
    principal: AdminDep,
    access: AccessDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
) -> object:
    return await service.create_user(access, settings.auth, principal, request_id, body)


@router.get("/users", response_model=UserList, responses=ERRORS, summary="Users (role: admin)")
async def list_users(_: AdminDep, access: AccessDep) -> object:
    return {"data": await access.users.listing()}


@router.get(
    "/users/{user_id}", response_model=UserInfo, responses=ERRORS, summary="One user (admin)"
)
async def get_user(user_id: str, _: AdminDep, access: AccessDep) -> object:
    return (await access.users.require(user_id)).public()


@router.patch(
    "/users/{user_id}",
    response_model=UserInfo,
    responses=ERRORS,
    summary="Change a user's tier or disable them; applies at once (role: admin)",
)
async def update_user(
    user_id: str,
    body: UserUpdate,
    principal: AdminDep,
    access: AccessDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
) -> object:
    return await service.update_user(access, settings.auth, principal, request_id, user_id, body)


@router.get("/tiers", response_model=TierList, responses=ERRORS, summary="Tiers (role: admin)")
async def tiers(_: AdminDep, settings: SettingsDep) -> object:
    return {
        "default_tier": settings.auth.default_tier,
        "tiers": {k: v.model_dump() for k, v in settings.auth.tiers.items()},
    }
