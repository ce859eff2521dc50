"""The Redis client of `redis.url`, made the one way the frontend and the job workers
share: no connection until its first command, short socket timeouts, one quick retry
at most (the guard's deadline bounds every call anyway)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ..settings import Settings


def connect_redis(settings: Settings) -> Redis | None:
    if settings.redis.url is None:
        return None
    import redis.asyncio as redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    # No connection yet: the client connects on its first command.
    return redis.from_url(
        settings.redis.url.get_secret_value(),
        socket_timeout=settings.redis.socket_timeout_s,
        socket_connect_timeout=settings.redis.connect_timeout_s,
        # One quick retry at most: the guard's deadline bounds every call anyway.
        retry=Retry(NoBackoff(), 1),
        max_connections=settings.redis.max_connections,
    )
