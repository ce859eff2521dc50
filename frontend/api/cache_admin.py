"""Admin routes for the response cache (role admin): summary and purges (each purge an
audit entry: action `cache.purge`, target `cache:*`, `cache:<model>` or
`cache:<model>:v<version>`)."""

from __future__ import annotations

from fastapi import APIRouter

from ..auth.principal import Principal
from ..container import Services
from ..deps import AdminDep, CacheDep, CatalogDep, RequestIdDep, ServicesDep
from ..schemas.access import CachePurged, CacheSummary
from ..schemas.common import error_responses

router = APIRouter(prefix="/v1/admin", tags=["admin"])
ERRORS = error_responses(401, 403, 404, 409, 422, 429, 503)


@router.get(
    "/cache",
    response_model=CacheSummary,
    responses=ERRORS,
    summary="Cache hit rate, hits, misses and entries per model (role: admin)",
)
async def cache_summary(_: AdminDep, cache: CacheDep, catalog: CatalogDep) -> object:
    return await cache.summary(catalog.names())


async def _purge(
    services: Services,
    principal: Principal,
    request_id: str,
    model: str | None,
    version: str | None,
) -> dict:
    purged = await services.cache.store.purge(model, version)
    target = "cache:*" if model is None else f"cache:{model}"
    if version is not None:
        target += f":v{version}"
    # After the purge (the entry records how many went). Should the database fail here
    # the caller gets a 503 and retries: purging again is harmless, and then recorded.
    await services.audit.record(
        actor=principal.subject,
        action="cache.purge",
        target=target,
        request_id=request_id or None,
        details={"purged": purged},
    )
    return {"purged": purged, "model": model, "version": version}


@router.delete(
    "/cache",
    response_model=CachePurged,
    responses=ERRORS,
    summary="Purge every cached answer (role: admin)",
)
async def cache_purge_all(
    principal: AdminDep, services: ServicesDep, request_id: RequestIdDep
) -> object:
    return await _purge(services, principal, request_id, None, None)


@router.delete(
    "/cache/{model}",
    response_model=CachePurged,
    responses=ERRORS,
    summary="Purge a model's cached answers, every version (role: admin)",
)
async def cache_purge_model(
    model: str,
    principal: AdminDep,
    services: ServicesDep,
    catalog: CatalogDep,
    request_id: RequestIdDep,
) -> object:
    catalog.get(model)
    return await _purge(services, principal, request_id, model, None)


@router.delete(
    "/cache/{model}/versions/{version}",
    response_model=CachePurged,
    responses=ERRORS,
    summary="Purge one model version's cached answers (role: admin)",
)
async def cache_purge_version(
    model: str,
    version: str,
    principal: AdminDep,
    services: ServicesDep,
    catalog: CatalogDep,
    request_id: RequestIdDep,
) -> object:
    # The resolved number, not the text: "02" purges version 2's entries.
    resolved = catalog.resolve_version(catalog.get(model), version)
    return await _purge(services, principal, request_id, model, str(resolved))
