"""Shared schema parts (importable without torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema


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

# Token ids as a tokenizer numbers them and the models' INT64/INT32 inputs take them
# (completions' prompt, embeddings' input; each model's vocabulary bounds them further,
# checked where the vocabulary is known).
MAX_TOKEN_ID: Final = 2**31 - 1
TokenId = Annotated[int, Field(ge=0, le=MAX_TOKEN_ID), _WHOLE]
TokenIds = Annotated[list[TokenId], Field(min_length=1)]


@dataclass(frozen=True)
class NullIs:
    """`Annotated[float, NullIs(1.0)]`: JSON null means the default. OpenAI documents its
    options as nullable and clients send `"temperature": null` for "unset"; the field
    still holds a float (the service never sees None), and the OpenAPI says null too."""

    default: Any

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        default = self.default
        return core_schema.no_info_before_validator_function(
            lambda value: default if value is None else value, handler(source)
        )

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        inner = handler(schema)
        # `"type": ["number", "null"]` keeps the bounds where readers look for them.
        if isinstance(inner.get("type"), str):
            return {**inner, "type": [inner["type"], "null"]}
        return {"anyOf": [inner, {"type": "null"}]}


class Refused(Exception):
    """A request the schema refuses by a rule that spans fields (or names one item of a
    list), raised from a validator with the field at fault. Not a ValueError on purpose:
    pydantic lets it through as it is, and the app answers it 400 with `param` (handlers;
    schemas sit below errors, so this is their own). `param` is a dotted path as the
    client wrote it ("messages.2.content"); the message starts with it."""

    def __init__(self, param: str, why: str) -> None:
        super().__init__(f"{param}: {why}")
        self.param = param
        self.why = why

    @property
    def message(self) -> str:
        return f"{self.param}: {self.why}"

    def loc(self) -> list[str | int]:
        return ["body", *(int(p) if p.isdigit() else p for p in self.param.split("."))]


class ErrorBody(BaseModel):
    message: str = Field(examples=["model 'intnet' is not served"])
    type: str = Field(
        examples=["invalid_request_error"],
        description="OpenAI's error type, from the status: invalid_request_error, "
        "authentication_error, permission_error, rate_limit_error or server_error.",
    )
    param: str | None = Field(
        examples=["messages.0.content"],
        description="The request field at fault (a dotted path), when one is.",
    )
    code: str = Field(examples=["model_not_found"])
    request_id: str | None = Field(examples=["9f1c2e7a4b3d4e5f8a9b0c1d2e3f4a5b"])
    details: Any = Field(None, examples=[{"available": ["embed", "intent", "sentiment"]}])


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the envelope."""
    return {status: {"model": ErrorResponse} for status in statuses}
