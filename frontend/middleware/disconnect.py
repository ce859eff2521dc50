"""Cancel the handler when the client goes away (docs/reliability.md: client disconnect).

Starlette does not stop a plain request's handler when its client disconnects, so a
dropped request would keep Triton busy for nobody. Once the body has been read, a watcher
owns `receive`: a disconnect cancels the handler task, which cancels the gRPC call, which
Triton sees. Handlers that wait for a disconnect themselves (SSE) get it from the watcher.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..context import context

_DISCONNECT: Message = {"type": "http.disconnect"}


class DisconnectCancelMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_read = asyncio.Event()
        disconnected = asyncio.Event()

        async def guarded_receive() -> Message:
            if body_read.is_set():  # after the body only a disconnect can come
                await disconnected.wait()
                return _DISCONNECT
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected.set()
            elif not message.get("more_body", False):
                body_read.set()
            return message

        async def run_app() -> None:
            await self.app(scope, guarded_receive, send)

        handler: asyncio.Task[None] = asyncio.create_task(run_app())

        async def watch() -> None:
            await body_read.wait()
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()
            context(scope).client_disconnected = True
            handler.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await handler
        except asyncio.CancelledError:
            if not disconnected.is_set():
                raise  # cancelled from outside (shutdown), not by the client
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
