"""Input text checks shared by every text endpoint: clear 422s that name the item."""

from __future__ import annotations

from ..errors import InputInvalid
from ..settings import LimitSettings


def check_texts(
    value: str | list[str], limits: LimitSettings, field: str, max_items: int | None = None
) -> list[str]:
    """`max_items`: the request's item cap when it is not limits.max_batch_items (a model
    whose Triton batch is smaller)."""
    texts = [value] if isinstance(value, str) else list(value)
    cap = limits.max_batch_items if max_items is None else max_items
    problems: list[dict] = []
    if not texts:
        raise InputInvalid(
            f"{field} must hold at least one text",
            details=[{"loc": ["body", field], "msg": "empty list"}],
        )
    if len(texts) > cap:
        raise InputInvalid(
            f"{field} holds {len(texts)} texts; the limit is {cap} per request",
            details=[{"loc": ["body", field], "msg": "too many items", "limit": cap}],
        )
    total = 0
    for i, text in enumerate(texts):
        loc = ["body", field] + ([i] if not isinstance(value, str) else [])
        total += len(text)
        if not text.strip():
            problems.append({"loc": loc, "msg": "empty or whitespace-only text"})
        elif len(text) > limits.max_input_chars:
            problems.append(
                {
                    "loc": loc,
                    "msg": f"text has {len(text)} characters; the limit is "
                    f"{limits.max_input_chars}",
                }
            )
        else:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                problems.append(
                    {"loc": loc, "msg": f"invalid text: lone surrogate at character {exc.start}"}
                )
    if total > limits.max_batch_chars:
        problems.append(
            {
                "loc": ["body", field],
                "msg": f"texts total {total} characters; the limit is {limits.max_batch_chars}",
            }
        )
    if problems:
        first = problems[0]
        where = ".".join(str(p) for p in first["loc"][1:])
        raise InputInvalid(f"{where}: {first['msg']}", details=problems)
    return texts
