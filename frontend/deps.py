"""Annotated dependency aliases: routes declare what they need, nothing global.

All async: FastAPI runs a plain `def` dependency in its thread pool, two thread hops per
request for nothing (seen in a py-spy profile of the predict route).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer

from .access import Access
from .auth.principal import Principal
from .errors import Forbidden, PayloadTooLarge
from .services.catalog import Catalog
from .services.generation import GenerationService
from .services.inference import InferenceService
from .settings import Settings
from .triton.client import TritonClient


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _triton(request: Request) -> TritonClient:
    return request.app.state.triton


async def _catalog(request: Request) -> Catalog:
    return request.app.state.catalog


async def _inference(request: Request) -> InferenceService:
    return request.app.state.inference


async def _generation(request: Request) -> GenerationService:
    return request.app.state.generation


async def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


SettingsDep = Annotated[Settings, Depends(_settings)]
TritonDep = Annotated[TritonClient, Depends(_triton)]
CatalogDep = Annotated[Catalog, Depends(_catalog)]
InferenceDep = Annotated[InferenceService, Depends(_inference)]
GenerationDep = Annotated[GenerationService, Depends(_generation)]
RequestIdDep = Annotated[str, Depends(_request_id)]


async def _generation_body_cap(request: Request) -> None:
    """The generation routes' own body cap, far below the global one (BodyGuardMiddleware):
    the model's single instance tokenizes the prompt, so one large body would stall every
    stream. FastAPI has already read the body (within the global cap); this refuses it
    before it is validated, and long before Triton sees it."""
    limit = request.app.state.settings.generation.max_body_bytes
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
    return request.app.state.access


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
    request.state.principal = principal.subject
    return principal


PrincipalDep = Annotated[Principal, Depends(_principal)]


async def _limited(request: Request, principal: PrincipalDep, access: AccessDep) -> Principal:
    """Authenticated and counted against the caller's rate limits; the rate-limit headers
    go out on the response (ResponseHeadersMiddleware)."""
    headers = await access.limiter.check(principal)
    if headers:
        request.state.response_headers = headers
    return principal


LimitedDep = Annotated[Principal, Depends(_limited)]


async def _admin(request: Request, principal: LimitedDep) -> Principal:
    if not principal.is_admin:
        request.app.state.metrics.auth_failures.labels("forbidden").inc()
        raise Forbidden("this route needs the admin role")
    return principal


AdminDep = Annotated[Principal, Depends(_admin)]
