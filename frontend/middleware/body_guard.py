"""Body size cap and JSON sanity before any route runs.

- Content-Length over the cap -> 413 at once, without reading the body.
- A body that grows past the cap while streaming -> 413 as soon as it does.
- JSON nested deeper than the cap, or not JSON at all -> 400 (the JSON parsers would
  otherwise recurse; a 100 000-deep array must not become a 500).
- JSON not in UTF-8 (RFC 8259 §8.1), by its bytes or a declared charset -> 415; the
  standard parser would otherwise guess UTF-16 or UTF-32 and accept it.
- An object with the same key twice -> 400 (parsers keep the last one silently, so two
  readers of one body could disagree on what it says).
Starlette has no default body cap; this is it. A request may have its own cap instead
(`cap_of`: a predict request to an image model carries its images, up to
limits.max_image_body_bytes); every check above then uses that one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..context import context
from ..errors import (
    BadRequest,
    DuplicateJsonKey,
    InfergateError,
    JsonTooDeep,
    PayloadTooLarge,
    UnsupportedEncoding,
)
from ..responses import send_error

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})
_UTF8 = frozenset({"utf-8", "utf8"})


class BodyGuardMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_json_depth: int,
        cap_of: Callable[[Scope], int | None] | None = None,
    ) -> None:
        """`cap_of(scope)`: the request's own body cap, or None for `max_body_bytes`."""
        self.app = app
        self.max_bytes = max_body_bytes
        self.max_depth = max_json_depth
        self.cap_of = cap_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        request_id = context(scope).request_id
        limit = (self.cap_of(scope) if self.cap_of is not None else None) or self.max_bytes
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and (
            not (declared.isascii() and declared.isdigit()) or int(declared) > limit
        ):
            await send_error(send, _too_large(limit), request_id)
            return
        content_type = headers.get("content-type", "")
        if "json" not in content_type:
            await self.app(scope, _counting(receive, limit), send)
            return
        try:
            if "charset" in content_type.lower():
                _check_charset(content_type)
            body = await _read(receive, limit)
            if body:
                check_json(body, self.max_depth)
        except InfergateError as error:
            await send_error(send, error, request_id)
            return
        await self.app(scope, _replay(body, receive), send)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body exceeds {limit} bytes", details={"limit_bytes": limit})


async def _read(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("client disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _counting(receive: Receive, limit: int) -> Receive:
    size = 0

    async def counted() -> Message:
        nonlocal size
        message = await receive()
        size += len(message.get("body", b""))
        if size > limit:
            raise _too_large(limit)
        return message

    return counted


def _check_charset(content_type: str) -> None:
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip(' "').lower() not in _UTF8:
            raise UnsupportedEncoding("JSON request bodies must be UTF-8")


def check_json(body: bytes, max_depth: int) -> Any:
    try:
        value = orjson.loads(body)  # UTF-8 only
    except orjson.JSONDecodeError:
        # orjson refuses lone surrogates that json accepts; those must reach the schema
        # check (422 naming the field), so ask the standard parser before refusing.
        value = _parse_strictly(body, max_depth)
        _check_depth(value, max_depth)
        return value
    keys = _check_depth(value, max_depth)
    # Every key is followed by exactly one colon outside strings: with no more colons in
    # the body than keys parsed, no key can have been repeated. Only bodies with colons
    # inside their strings (or a repeated key) pay for the second, exact parse.
    if body.count(b":") > keys:
        _parse_strictly(body, max_depth)
    return value


def _parse_strictly(body: bytes, max_depth: int) -> Any:
    """The standard parser, refusing what it would otherwise accept: another encoding
    (it guesses UTF-16/32 from the first bytes) and repeated keys."""
    if json.detect_encoding(body) != "utf-8":  # a BOM, or NULs of UTF-16/32
        raise UnsupportedEncoding("JSON request bodies must be UTF-8")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsupportedEncoding("JSON request bodies must be UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise JsonTooDeep(f"JSON nesting exceeds {max_depth} levels") from None
    except ValueError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise DuplicateJsonKey("a JSON object in the body has the same key twice")
    return value


def _check_depth(value: Any, max_depth: int) -> int:
    """Refuses nesting past the cap; returns how many object keys the value holds."""
    keys = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            keys += len(item)
            children: list[Any] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise JsonTooDeep(
                f"JSON nesting exceeds {max_depth} levels", details={"max_depth": max_depth}
            )
        stack.extend((child, depth + 1) for child in children)
    return keys


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
