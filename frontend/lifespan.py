"""The app's lifespan: its services opened at start-up and closed at shutdown (see
container.py for what they are and in which order); nothing connects at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

from .container import ServiceOverrides, Services, attach, open_services
from .observability.metrics import Metrics
from .settings import Settings

log = logging.getLogger("infergate")

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def lifespan(
    settings: Settings, metrics: Metrics, overrides: ServiceOverrides | None = None
) -> Lifespan:
    """The lifespan of an app made with these settings (and, in tests, these parts)."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        async with open_services(settings, metrics, overrides) as services:
            attach(app, services)
            _announce(services)
            services.started = True
            try:
                yield
            finally:
                services.started = False  # /health/startup says so while closing

    return run


def _announce(services: Services) -> None:
    settings = services.settings
    secret_warning = settings.secret_warning()
    if secret_warning is not None:
        log.warning("SECURITY: %s", secret_warning)
    if not settings.auth.enabled:
        log.warning("authentication is OFF: every caller is an unthrottled admin")
    log.info("started", extra={"models": services.catalog.names(), "triton": settings.triton.url})
