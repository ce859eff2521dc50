"""Keyset pagination for the admin listings (audit log, routing history): newest first,
`limit` entries a page, and an opaque `cursor` naming where the next page starts.

The cursor encodes the id of the last entry shown; the next page holds the entries
older than it, so entries added meanwhile never shift a page (no offset to drift)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Annotated, Protocol, TypeVar

from fastapi import Query

from ..errors import InputInvalid

MAX_LIMIT = 500
PREFIX = b"before:"

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
