"""Admin routes (role admin; a user gets 403): keys, users, tiers, cache."""

from __future__ import annotations

from fastapi import APIRouter, Query

from ..cache.service import ResultCache
from ..deps import AccessDep, AdminDep, CacheDep, CatalogDep, SettingsDep
from ..schemas.access import (
    CachePurged,
    CacheSummary,
    KeyCreate,
    KeyCreated,
    KeyInfo,
    KeyList,
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
)
async def create_key(
    body: KeyCreate, principal: AdminDep, access: AccessDep, settings: SettingsDep
) -> object:
    return await service.create_key(
        access, settings.auth, principal, body.name, body.user_id, body.role, body.tier
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
    record = await access.keys.get_owned(key_id, None)
    return record.public(await access.keys.last_used(key_id))


@router.patch(
    "/keys/{key_id}",
    response_model=KeyInfo,
    responses=ERRORS,
    summary="Change a key's tier (role: admin)",
)
async def update_key(
    key_id: str, body: KeyUpdate, _: AdminDep, access: AccessDep, settings: SettingsDep
) -> object:
    record = await access.keys.set_tier(key_id, service.check_tier(settings.auth, body.tier))
    return record.public(await access.keys.last_used(key_id))


@router.delete(
    "/keys/{key_id}",
    response_model=KeyInfo,
    responses=ERRORS,
    summary="Revoke a key; refused at once in every worker (role: admin)",
)
async def revoke_key(key_id: str, _: AdminDep, access: AccessDep) -> object:
    record = await access.keys.revoke(key_id, None)
    return record.public(await access.keys.last_used(key_id))


@router.post(
    "/users",
    status_code=201,
    response_model=UserInfo,
    responses=ERRORS,
    summary="Create a user who logs in at /v1/auth/token (role: admin)",
)
async def create_user(
    body: UserCreate, _: AdminDep, access: AccessDep, settings: SettingsDep
) -> object:
    tier = service.check_tier(settings.auth, body.tier)
    record = await access.users.create(body.username, body.password, body.role, tier)
    return record.public()


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
    user_id: str, body: UserUpdate, _: AdminDep, access: AccessDep, settings: SettingsDep
) -> object:
    tier = service.check_tier(settings.auth, body.tier) if body.tier is not None else None
    return (await access.users.update(user_id, tier, body.disabled)).public()


@router.get("/tiers", response_model=TierList, responses=ERRORS, summary="Tiers (role: admin)")
async def tiers(_: AdminDep, settings: SettingsDep) -> object:
    return {
        "default_tier": settings.auth.default_tier,
        "tiers": {k: v.model_dump() for k, v in settings.auth.tiers.items()},
    }


@router.get(
    "/cache",
    response_model=CacheSummary,
    responses=ERRORS,
    summary="Cache hit rate, hits, misses and entries per model (role: admin)",
)
async def cache_summary(_: AdminDep, cache: CacheDep, catalog: CatalogDep) -> object:
    return await cache.summary(catalog.names())


async def _purge(cache: ResultCache, model: str | None, version: str | None) -> dict:
    purged = await cache.store.purge(model, version)
    return {"purged": purged, "model": model, "version": version}


@router.delete(
    "/cache",
    response_model=CachePurged,
    responses=ERRORS,
    summary="Purge every cached answer (role: admin)",
)
async def cache_purge_all(_: AdminDep, cache: CacheDep) -> object:
    return await _purge(cache, None, None)


@router.delete(
    "/cache/{model}",
    response_model=CachePurged,
    responses=ERRORS,
    summary="Purge a model's cached answers, every version (role: admin)",
)
async def cache_purge_model(
    model: str, _: AdminDep, cache: CacheDep, catalog: CatalogDep
) -> object:
    catalog.get(model)
    return await _purge(cache, model, None)


@router.delete(
    "/cache/{model}/versions/{version}",
    response_model=CachePurged,
    responses=ERRORS,
    summary="Purge one model version's cached answers (role: admin)",
)
async def cache_purge_version(
    model: str, version: str, _: AdminDep, cache: CacheDep, catalog: CatalogDep
) -> object:
    # The resolved number, not the text: "02" purges version 2's entries.
    resolved = catalog.resolve_version(catalog.get(model), version)
    return await _purge(cache, model, str(resolved))
