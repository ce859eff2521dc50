"""Adding headers to a response as it starts: shared by the middlewares that add headers
decided outside the response (rate limits, the worker id)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from starlette.types import Message, Send

RawHeaders = Iterable[tuple[bytes, bytes]]


def appending_headers(send: Send, extra: Callable[[], RawHeaders]) -> Send:
    """`send`, with `extra()`'s headers (lower-case names) appended to the response start.
    A header the response already has is kept and the extra one dropped: what the route
    set itself wins. `extra` is called at send time, when whatever decides it has run."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            added = list(extra())
            if added:
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                message["headers"] = headers + [h for h in added if h[0] not in present]
        await send(message)

    return send_with_headers
