"""create_app(settings): routers, middleware, handlers. No I/O here (see lifespan)."""

from __future__ import annotations

from types import ModuleType

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Scope

from . import handlers
from .api import (
    admin,
    audit,
    auth,
    cache_admin,
    chat,
    email,
    embeddings,
    health,
    jobs,
    keys,
    models,
    predict,
    routing_admin,
    usage,
    webhooks,
)
from .container import ServiceOverrides, services_of
from .jobs import upload
from .lifespan import lifespan
from .middleware.body_guard import BodyGuardMiddleware
from .middleware.disconnect import DisconnectCancelMiddleware
from .middleware.head import HeadAsGetMiddleware
from .middleware.observe import ObserveMiddleware
from .middleware.request_id import RequestIdMiddleware
from .middleware.response_headers import ResponseHeadersMiddleware
from .middleware.security_headers import SecurityHeadersMiddleware
from .middleware.worker_id import WorkerIdMiddleware
from .observability.logging import configure_logging
from .observability.metrics import Metrics
from .responses import OrjsonResponse
from .settings import Settings
from .usage.ledger import UsageLedger

DESCRIPTION = """
REST gateway over NVIDIA Triton for transformer models.

Errors always use one envelope: `{"error": {"message", "type", "param", "code",
"request_id", "details"}}` (OpenAI's fields, and ours). Invalid input is 422, except on
the OpenAI routes (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`), which
answer it 400 as OpenAI does. 503 and 429 carry `Retry-After`. Every response carries
`X-Request-ID`.

**Authentication.** Every `/v1` route except `/v1/auth/token` and `/v1/auth/refresh` needs
credentials: an API key (`X-API-Key: ig_live_…` or `Authorization: Bearer ig_live_…`) or
a JWT access token from `/v1/auth/token` (`Authorization: Bearer eyJ…`). Routes under
`/v1/admin` need the **admin** role (403 otherwise); objects you do not own are 404.

**Fair use.** Requests count against your tier's windows (free: 10/minute and 100/day,
pro: 100/minute and 10 000/day, enterprise: 1 000/minute, by default). Responses carry
`RateLimit-Policy`, `RateLimit` and `X-RateLimit-Limit/Remaining/Reset`; a 429 adds
`Retry-After` in whole seconds. `GET /v1/usage` shows your counters.
"""


def create_app(
    settings: Settings | None = None, overrides: ServiceOverrides | None = None
) -> FastAPI:
    """The app; its services are built when its lifespan starts. `overrides`: parts to
    use instead of building them (tests pass fakes: a Triton client, a state store...)."""
    settings = settings or Settings()
    configure_logging(settings.log.level, settings.log.json_format)
    # Made here, not at start-up: the observe middleware counts from the first request.
    # infergate_redis_up only where there is a Redis to be up or down.
    metrics = Metrics(
        redis_configured=settings.redis.url is not None
        or (overrides is not None and overrides.redis is not None)
    )
    app = FastAPI(
        title="infergate",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan(settings, metrics, overrides),
        default_response_class=OrjsonResponse,
    )
    handlers.install(app)
    routers = (
        predict,
        embeddings,
        chat,
        jobs,
        webhooks,
        email,
        models,
        auth,
        usage,
        keys,
        admin,
        cache_admin,
        routing_admin,
        audit,
        health,
    )
    for module in routers:
        app.include_router(module.router)

    # Added innermost first: the last one added is the outermost.
    app.add_middleware(HeadAsGetMiddleware)  # innermost: logs and metrics still see HEAD
    app.add_middleware(ResponseHeadersMiddleware)
    app.add_middleware(
        BodyGuardMiddleware,
        max_body_bytes=settings.limits.max_body_bytes,
        max_json_depth=settings.limits.max_json_depth,
        cap_of=_body_cap_of,
    )
    if settings.cors.allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors.allow_origins,
            allow_credentials=settings.cors.allow_credentials,
            # Whatever the routes take (PUT/PATCH for a browser admin page included).
            allow_methods=_route_methods(routers),
            max_age=settings.cors.max_age_s,
            allow_headers=[
                "Authorization",
                "Content-Type",
                "X-API-Key",
                "X-Request-ID",
                "X-Model-Version",
                "Idempotency-Key",
                "Last-Event-ID",
                "Range",
                "If-None-Match",
                "If-Range",
            ],
            expose_headers=[
                "X-Request-ID",
                "X-Model-Version",
                "Retry-After",
                "RateLimit",
                "RateLimit-Policy",
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
                "Idempotent-Replayed",
                "Location",
                "ETag",
                "Content-Range",
                "Content-Disposition",
                "Retry-After",
                "X-Job-State",
            ],
        )
    app.add_middleware(DisconnectCancelMiddleware)
    app.add_middleware(ObserveMiddleware, metrics=metrics, ledger_of=_ledger_of)
    app.add_middleware(
        SecurityHeadersMiddleware,
        hsts_max_age_s=settings.server.hsts_max_age_s,
        always_hsts=settings.server.behind_tls_proxy,
    )
    app.add_middleware(RequestIdMiddleware)
    if settings.environment == "test":
        app.add_middleware(WorkerIdMiddleware)  # outermost: on every answer, errors included
    _document_tiers(app, sorted(settings.auth.tiers))
    return app


def _route_methods(routers: tuple[ModuleType, ...]) -> list[str]:
    methods = {
        method
        for module in routers
        for route in module.router.routes
        for method in getattr(route, "methods", None) or ()
    }
    return sorted(methods)


def _document_tiers(app: FastAPI, tiers: list[str]) -> None:
    """Tiers are configuration, so the schemas say `str`; the served OpenAPI names the
    configured ones (docs show them, and schema-valid requests are accepted ones)."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        for model in schema.get("components", {}).get("schemas", {}).values():
            tier = model.get("properties", {}).get("tier")
            if tier is None:
                continue
            for branch in tier.get("anyOf", [tier]):
                if branch.get("type") == "string":
                    branch["enum"] = tiers
        _document_generation_limits(app, schema)
        _document_openai_status(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_generation_limits(app: FastAPI, schema: dict) -> None:
    """max_tokens is bounded by the served generation model's card: name the bound in the
    served OpenAPI, so that a schema-valid request is one the model accepts."""
    services = services_of(app)
    catalog = services.catalog if services is not None else None
    limits = [
        card.max_completion_tokens
        for model in (catalog.models.values() if catalog else [])
        for card in model.cards.values()
        if card.max_completion_tokens is not None
    ]
    if not limits:
        return
    models = schema.get("components", {}).get("schemas", {})
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        properties = models.get(name, {}).get("properties", {})
        # min_tokens too: it is at most max_tokens, so at most the card's bound.
        for field in ("max_tokens", "max_completion_tokens", "min_tokens"):
            prop = properties.get(field, {})
            for branch in prop.get("anyOf", [prop]):
                if "integer" in _types(branch):
                    branch["maximum"] = min(limits)


def _types(node: dict) -> list[str]:
    kind = node.get("type")
    return [kind] if isinstance(kind, str) else list(kind or ())


def _document_openai_status(schema: dict) -> None:
    """FastAPI documents a 422 for every route with a body; the OpenAI routes answer
    invalid input 400 (handlers.OPENAI_PATHS), which their `responses=` document."""
    for path in handlers.OPENAI_PATHS:
        for operation in schema.get("paths", {}).get(path, {}).values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)


def _body_cap_of(scope: Scope) -> int | None:
    """The body guard's way to a request's own cap (a job submission: its files or its
    inline rows, upload.body_cap; a predict request to an image model carries its
    images: limits.max_image_body_bytes); None: the global cap, also before start-up has
    built the catalog."""
    services = services_of(scope["app"])
    if services is None:
        return None
    if scope["path"] == upload.JOBS_PATH:  # the headers are read for that path only
        content_type = Headers(scope=scope).get("content-type")
        job_cap = upload.body_cap(scope["method"], scope["path"], content_type, services.settings)
        if job_cap is not None:
            return job_cap
    return predict.body_cap(services.catalog, scope["path"], services.settings.limits)


def _ledger_of(scope: Scope) -> UsageLedger | None:
    """The observe middleware's way to the usage ledger (the middlewares sit below the
    container in the import layers); None before start-up has built it."""
    services = services_of(scope["app"])
    return services.ledger if services is not None else None
