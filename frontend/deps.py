"""Annotated dependency aliases: routes declare what they need, nothing global.

Every service comes from the app's one container (container.py), read in one place
(`_services`); what a request tells the middlewares goes to its context (context.py).
All async: FastAPI runs a plain `def` dependency in its thread pool, two thread hops per
request for nothing (seen in a py-spy profile of the predict route).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer

from .access import Access
from .auth.principal import Principal
from .cache.service import ResultCache
from .catalog import Catalog
from .container import Services, services_of
from .context import context
from .db.database import Database
from .errors import Forbidden, PayloadTooLarge
from .jobs.service import JobsService
from .notify.service import NotificationsService
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


def _part(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A dependency giving one field of the container (the alias below names its type)."""

    async def part(request: Request) -> Any:
        return getattr(_services(request), name)

    part.__name__ = f"_{name}"
    return part


async def _started(request: Request) -> bool:
    services = services_of(request.app)  # asked before start-up too: not built is False
    return services is not None and services.started


async def _request_id(request: Request) -> str:
    return context(request).request_id or ""


ServicesDep = Annotated[Services, Depends(_all)]  # for a route that needs many of them
SettingsDep = Annotated[Settings, Depends(_part("settings"))]
MetricsDep = Annotated[Metrics, Depends(_part("metrics"))]
TritonDep = Annotated[TritonClient, Depends(_part("triton"))]
CatalogDep = Annotated[Catalog, Depends(_part("catalog"))]
RouterDep = Annotated[Router, Depends(_part("router"))]
RoutingStatsDep = Annotated[RoutingStats, Depends(_part("routing_stats"))]
CacheDep = Annotated[ResultCache, Depends(_part("cache"))]
InferenceDep = Annotated[InferenceService, Depends(_part("inference"))]
GenerationDep = Annotated[GenerationService, Depends(_part("generation"))]
DatabaseDep = Annotated[Database, Depends(_part("database"))]
JobsDep = Annotated[JobsService, Depends(_part("jobs"))]
NotificationsDep = Annotated[NotificationsService, Depends(_part("notifications"))]
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


AccessDep = Annotated[Access, Depends(_part("access"))]

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
    found = context(request)
    found.subject, found.account = principal.subject, principal.account
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


async def _key_slot(principal: LimitedDep, access: AccessDep) -> AsyncIterator[Principal]:
    """One of the key's `max_concurrent` slots (ratelimit/concurrency.py), held until the
    response has been sent, a stream to its last frame: FastAPI runs a yield dependency's
    exit after the response in the default "request" scope (never scope="function": the
    slot would end before the first frame). Taken after the rate limits: a request they
    refuse takes no slot."""
    async with access.limiter.slot(principal):
        yield principal


InFlightDep = Annotated[Principal, Depends(_key_slot)]


async def _admin(principal: LimitedDep, metrics: MetricsDep) -> Principal:
    if not principal.is_admin:
        metrics.auth_failures.labels("forbidden").inc()
        raise Forbidden("this route needs the admin role")
    return principal


AdminDep = Annotated[Principal, Depends(_admin)]
