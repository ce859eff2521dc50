"""create_app(settings): routers, middleware, handlers. No I/O here (see lifespan)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from . import handlers
from .api import embeddings, health, models, predict
from .lifespan import lifespan
from .middleware.body_guard import BodyGuardMiddleware
from .middleware.disconnect import DisconnectCancelMiddleware
from .middleware.observe import ObserveMiddleware
from .middleware.request_id import RequestIdMiddleware
from .middleware.security_headers import SecurityHeadersMiddleware
from .observability.logging import configure_logging
from .observability.metrics import Metrics
from .responses import OrjsonResponse
from .settings import Settings

DESCRIPTION = """
REST gateway over NVIDIA Triton for transformer models.

Errors always use one envelope: `{"error": {"code", "message", "request_id", "details"}}`.
503 and 429 carry `Retry-After`. Every response carries `X-Request-ID`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log.level, settings.log.json_format)
    app = FastAPI(
        title="infergate",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
    )
    app.state.settings = settings
    app.state.started = False
    app.state.metrics = Metrics()
    handlers.install(app)
    for module in (predict, embeddings, models, health):
        app.include_router(module.router)

    # Added innermost first: the last one added is the outermost.
    app.add_middleware(
        BodyGuardMiddleware,
        max_body_bytes=settings.limits.max_body_bytes,
        max_json_depth=settings.limits.max_json_depth,
    )
    if settings.cors.allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors.allow_origins,
            allow_credentials=settings.cors.allow_credentials,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "X-API-Key",
                "X-Request-ID",
                "X-Model-Version",
            ],
            expose_headers=["X-Request-ID", "X-Model-Version", "Retry-After"],
        )
    app.add_middleware(DisconnectCancelMiddleware)
    app.add_middleware(ObserveMiddleware, metrics=app.state.metrics)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestIdMiddleware)
    _declare_security_schemes(app)
    return app


def _declare_security_schemes(app: FastAPI) -> None:
    """API keys and JWT bearer tokens (enforced by the access-control milestone)."""
    original = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {})["securitySchemes"] = {
            "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "BearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT or API key"},
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
