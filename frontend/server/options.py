"""uvicorn's options for the guarded server, one place for `serve` and the tests."""

from __future__ import annotations

import functools
from typing import Any

from ..settings import ServerSettings
from .protocol import GuardedHttpToolsProtocol


def uvicorn_options(settings: ServerSettings) -> dict[str, Any]:
    """Keyword arguments for uvicorn.run / uvicorn.Config (with the app, host, port...).

    The protocol is a partial, not a class: it carries the limits, and pickles into
    spawned workers (--workers > 1)."""
    tls = (
        {"ssl_certfile": str(settings.tls_certfile), "ssl_keyfile": str(settings.tls_keyfile)}
        if settings.tls_certfile is not None
        else {}
    )
    return {
        "http": functools.partial(GuardedHttpToolsProtocol, limits=settings),
        "loop": "uvloop",
        "ws": "none",  # no WebSocket routes: no upgrade path to attack
        "server_header": False,  # no `Server: uvicorn`
        "timeout_keep_alive": settings.keep_alive_s,
        "proxy_headers": True,
        "forwarded_allow_ips": settings.trusted_proxies,
        **tls,
    }
