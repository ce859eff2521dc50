"""Keyset pagination for the listings (audit log, routing history, batch jobs): newest
first, `limit` entries a page, and an opaque `cursor` naming where the next page starts.

The cursor encodes the key of the last entry shown (an id; for jobs, its created_at and
id); the next page holds the entries older than it, so entries added meanwhile never
shift a page (no offset to drift)."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Sequence
from typing import Annotated, Protocol, TypeVar

from fastapi import Query

from ..errors import InputInvalid

MAX_LIMIT = 500
PREFIX = b"before:"
AFTER = b"after:"  # a (created_at, id) key cursor

Limit = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"Entries per page (at most {MAX_LIMIT})")
]
Cursor = Annotated[
    str | None,
    Query(
        max_length=64,
        description="Where the next page starts: a previous page's `next_cursor`",
    ),
]

KeyCursor = Annotated[  # a (created_at, id) key: longer than an id's
    str | None,
    Query(
        max_length=200,
        description="Where the next page starts: a previous page's `next_cursor`",
    ),
]


class _HasId(Protocol):
    @property
    def id(self) -> int: ...


T = TypeVar("T", bound=_HasId)


def before(cursor: str | None) -> int | None:
    """The id a cursor points before (None: the first page); 422 for anything this API
    did not hand out."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    number = raw.removeprefix(PREFIX)
    if raw.startswith(PREFIX) and number.isdigit() and len(number) <= 19 and int(number) > 0:
        return int(number)
    raise InputInvalid("cursor: not a cursor this API returned", {"cursor": cursor[:64]})


def page(rows: Sequence[T], limit: int) -> tuple[list[T], str | None]:
    """`rows` read with `limit + 1`: the page, and the cursor of the next one (None: this
    is the last page)."""
    shown = list(rows[:limit])
    if len(rows) <= limit or not shown:
        return shown, None
    token = base64.urlsafe_b64encode(PREFIX + str(shown[-1].id).encode()).rstrip(b"=")
    return shown, token.decode()


def key_cursor(values: tuple[float, str]) -> str:
    """The cursor of a page that ends at the entry whose key is `values`."""
    raw = AFTER + json.dumps([values[0], values[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def after_key(cursor: str | None) -> tuple[float, str] | None:
    """The key a `key_cursor` cursor names (None: the first page); 422 for anything
    this API did not hand out."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw.removeprefix(AFTER)) if raw.startswith(AFTER) else None
    except (binascii.Error, ValueError):
        value = None
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], int | float)
        and not isinstance(value[0], bool)
        and math.isfinite(value[0])
        and isinstance(value[1], str)
        and 0 < len(value[1]) <= 64
    ):
        return float(value[0]), value[1]
    raise InputInvalid("cursor: not a cursor this API returned", {"cursor": cursor[:64]})


R = TypeVar("R")


def key_page(
    rows: Sequence[R], limit: int, key: Callable[[R], tuple[float, str]]
) -> tuple[list[R], str | None]:
    """`rows` read with `limit + 1`: the page, and the `key_cursor` of the next one
    (None: this is the last page)."""
    shown = list(rows[:limit])
    if len(rows) <= limit or not shown:
        return shown, None
    return shown, key_cursor(key(shown[-1]))
