"""`X-Infergate-Worker: <pid>` on every response, in the test environment only: tests
that claim "every worker" can then prove that more than one worker answered. Never on
outside `INFERGATE_ENVIRONMENT=test` (a process id is nobody else's business)."""

from __future__ import annotations

import os

from starlette.types import ASGIApp, Receive, Scope, Send

from .append_headers import RawHeaders, appending_headers

HEADER = b"x-infergate-worker"


class WorkerIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._headers: RawHeaders = ((HEADER, str(os.getpid()).encode()),)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, appending_headers(send, lambda: self._headers))
