"""Annotated dependency aliases: routes declare what they need, nothing global.

Every service comes from the app's one container (container.py), read in one place
(`_services`); what a request tells the middlewares goes to its context (context.py).
All async: FastAPI runs a plain `def` dependency in its thread pool, two thread hops per
request for nothing (seen in a py-spy profile of the predict route).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer

from .access import Access
from .auth.principal import Principal
from .cache.service import ResultCache
from .catalog import Catalog
from .container import Services, services_of
from .context import context
from .errors import Forbidden, PayloadTooLarge
from .observability.metrics import Metrics
from .routing.router import Router
from .routing.stats import RoutingStats
from .services.generation import GenerationService
from .services.inference import InferenceService
from .settings import Settings
from .triton.client import TritonClient


def _services(request: Request) -> Services:
    """The one read of the container (a plain call, not a dependency: one fewer for
    FastAPI to solve per alias). Routes only run once the lifespan has built it."""
    services = services_of(request.app)
    if services is None:
        raise RuntimeError("the app's services are not built: its lifespan has not started")
    return services


async def _all(request: Request) -> Services:
    return _services(request)


async def _settings(request: Request) -> Settings:
    return _services(request).settings


async def _metrics(request: Request) -> Metrics:
    return _services(request).metrics


async def _triton(request: Request) -> TritonClient:
    return _services(request).triton


async def _catalog(request: Request) -> Catalog:
    return _services(request).catalog


async def _router(request: Request) -> Router:
    return _services(request).router


async def _routing_stats(request: Request) -> RoutingStats:
    return _services(request).routing_stats


async def _cache(request: Request) -> ResultCache:
    return _services(request).cache


async def _inference(request: Request) -> InferenceService:
    return _services(request).inference


async def _generation(request: Request) -> GenerationService:
    return _services(request).generation


async def _started(request: Request) -> bool:
    services = services_of(request.app)  # asked before start-up too: not built is False
    return services is not None and services.started


async def _request_id(request: Request) -> str:
    return context(request).request_id or ""


ServicesDep = Annotated[Services, Depends(_all)]  # for a route that needs many of them
SettingsDep = Annotated[Settings, Depends(_settings)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
TritonDep = Annotated[TritonClient, Depends(_triton)]
CatalogDep = Annotated[Catalog, Depends(_catalog)]
RouterDep = Annotated[Router, Depends(_router)]
RoutingStatsDep = Annotated[RoutingStats, Depends(_routing_stats)]
CacheDep = Annotated[ResultCache, Depends(_cache)]
InferenceDep = Annotated[InferenceService, Depends(_inference)]
GenerationDep = Annotated[GenerationService, Depends(_generation)]
StartedDep = Annotated[bool, Depends(_started)]
RequestIdDep = Annotated[str, Depends(_request_id)]


async def _generation_body_cap(request: Request, settings: SettingsDep) -> None:
    """The generation routes' own body cap, far below the global one (BodyGuardMiddleware):
    the model's single instance tokenizes the prompt, so one large body would stall every
    stream. FastAPI has already read the body (within the global cap); this refuses it
    before it is validated, and long before Triton sees it."""
    limit = settings.generation.max_body_bytes
    if len(await request.body()) > limit:
        raise PayloadTooLarge(
            f"request body exceeds {limit} bytes (the text-generation routes' limit)",
            details={"limit_bytes": limit},
        )


GenerationBodyCap = Depends(_generation_body_cap)  # a route's `dependencies=[...]`
ModelVersionHeader = Annotated[
    str | None,
    Header(
        alias="X-Model-Version", description="Model version; the path form wins.", examples=["2"]
    ),
]


async def _access(request: Request) -> Access:
    return _services(request).access


AccessDep = Annotated[Access, Depends(_access)]

# Declared for OpenAPI (both schemes, per route); the credential itself is read below from
# the raw headers so that one code path parses it.
_api_key_scheme = APIKeyHeader(
    name="X-API-Key", scheme_name="ApiKeyAuth", auto_error=False, description="An API key"
)
_bearer_scheme = HTTPBearer(
    scheme_name="BearerAuth",
    bearerFormat="JWT or API key",
    auto_error=False,
    description="A JWT access token from /v1/auth/token, or an API key",
)


async def _principal(
    request: Request,
    access: AccessDep,
    _key: Annotated[str | None, Security(_api_key_scheme)],
    _bearer: Annotated[object, Security(_bearer_scheme)],
) -> Principal:
    principal = await access.authenticator.authenticate(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )
    return principal


PrincipalDep = Annotated[Principal, Depends(_principal)]


async def _limited(request: Request, principal: PrincipalDep, access: AccessDep) -> Principal:
    """Authenticated and counted against the caller's rate limits; the rate-limit headers
    go out on the response (ResponseHeadersMiddleware)."""
    headers = await access.limiter.check(principal)
    if headers:
        context(request).response_headers = headers
    return principal


LimitedDep = Annotated[Principal, Depends(_limited)]


async def _admin(principal: LimitedDep, metrics: MetricsDep) -> Principal:
    if not principal.is_admin:
        metrics.auth_failures.labels("forbidden").inc()
        raise Forbidden("this route needs the admin role")
    return principal


AdminDep = Annotated[Principal, Depends(_admin)]
