"""Shared schema parts (importable without torch)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class Strict(BaseModel):
    """Every request body: unknown fields refused, and no type coercion (pydantic's strict
    mode): `true` is not an integer, `"3"` is not a number, `"yes"` is not a boolean.
    Numbers stay numbers: an integer is accepted where a float is expected, and an
    integral float where an integer is (`Integer`)."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _integral_float(value: Any) -> Any:
    # JSON has one number type, and JSON Schema's "integer" includes 2.0: a client that
    # serialises a whole number as 2.0 sent an integer. 2.5, true and "2" are left to
    # strict validation, which refuses them.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_WHOLE = BeforeValidator(_integral_float)
WHOLE = _WHOLE  # for bounded integer aliases: Annotated[int, Field(ge=.., le=..), WHOLE]
Integer = Annotated[int, _WHOLE]
# Optional fields take their bounds here, before the validator: a Field(ge=1) on
# `Integer | None` would reach the served OpenAPI as "ge" instead of "minimum".
PositiveInteger = Annotated[int, Field(ge=1), _WHOLE]


class ErrorBody(BaseModel):
    code: str = Field(examples=["model_not_found"])
    message: str = Field(examples=["model 'intnet' is not served"])
    request_id: str | None = Field(examples=["9f1c2e7a4b3d4e5f8a9b0c1d2e3f4a5b"])
    details: Any = Field(None, examples=[{"available": ["embed", "intent", "sentiment"]}])


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the envelope."""
    return {status: {"model": ErrorResponse} for status in statuses}
