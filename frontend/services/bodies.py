"""A JSON request body read by a service, as FastAPI reads a declared body parameter.

The predict route serves several tasks, each with its own body, so it cannot declare one:
the task's service reads it with `json_body` instead. What it accepts and how it refuses
is FastAPI's, error for error: JSON only from `application/json` or `application/*+json`
(anything else is validated as bytes, and refused), an empty body or `null` is a missing
body, and a validation error is a RequestValidationError with locations under "body", so
the one handler (handlers.on_validation_error) answers it 422 naming the field, as it
answers a declared body's. The body guard (middleware/body_guard.py) has already capped
its size and checked its JSON.
"""

from __future__ import annotations

import email.message
import json
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

M = TypeVar("M", bound=BaseModel)


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


async def json_body(request: Request, schema: type[M]) -> M:
    raw = await request.body()
    value: Any = None
    if raw:
        if is_json(request.headers.get("content-type")):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                error = {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
                raise RequestValidationError([error], body=exc.doc) from None
        else:
            value = raw  # validated as it is: not an object, so refused
    if value is None:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing], body=None)
    try:
        return schema.model_validate(value, from_attributes=True)
    except ValidationError as exc:
        errors = [
            {**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)
        ]
        raise RequestValidationError(errors, body=value) from None
