"""The non-sampling parts of an OpenAI chat request, in OpenAI's shapes: messages and their
content parts, tools, tool_choice and response_format. What this text-only model cannot
take is refused by name (400 with `param`), not silently dropped: image, audio and file
parts, the deprecated function messages, custom tools.

`engine_message` turns a message into the chat model's form (MESSAGES, one JSON list):
developer becomes system, text parts are joined, tool calls keep their arguments as sent
(JSON text)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, Literal

from pydantic import Field, ValidatorFunctionWrapHandler, WrapValidator, field_validator
from pydantic_core import PydanticCustomError

from .common import Refused, Strict

# OpenAI's rule for function and schema names.
NAME_PATTERN: Final = r"^[a-zA-Z0-9_-]{1,64}$"
# What each kind of content part is called in a refusal.
MEDIA: Final = {"image_url": "images", "input_audio": "audio", "file": "files"}
REFUSED_TOOL_TYPES: Final = {
    "custom": "custom tools are not supported: send function tools",
    "allowed_tools": "allowed_tools is not supported: send the tools you allow in tools",
}


def _refuse_media(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Before the content's own validation, so that an image part is refused as an image
    (not as "a tag that does not match")."""
    if isinstance(value, list):
        for part in value:
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind in MEDIA:
                raise PydanticCustomError(
                    "unsupported_content",
                    "this model does not accept {kind}",
                    {"kind": MEDIA[kind]},
                )
    return handler(value)


def _refuse_tool_types(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    kind = value.get("type") if isinstance(value, dict) else None
    if isinstance(kind, str) and kind in REFUSED_TOOL_TYPES:
        raise PydanticCustomError("unsupported_value", REFUSED_TOOL_TYPES[kind])
    return handler(value)


def not_supported(why: str) -> WrapValidator:
    """Only null (or the field's neutral value) passes; anything else is refused with
    `why`. The type before it is what the OpenAPI shows (the values that are accepted)."""

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValueError:  # pydantic's ValidationError is one
            raise PydanticCustomError("unsupported_value", why) from None

    return WrapValidator(check)


# --- content -----------------------------------------------------------------------------


class CacheBreakpoint(Strict):
    """OpenAI's prompt-cache hint on a part: accepted, and ignored."""

    mode: Literal["explicit"]
    ttl: Literal["30m", "12h"] | None = None


class TextPart(Strict):
    type: Literal["text"]
    text: str
    prompt_cache_breakpoint: CacheBreakpoint | None = None


class RefusalPart(Strict):
    """An assistant's refusal, sent back as part of the conversation."""

    type: Literal["refusal"]
    refusal: str


# No bound here: the route's body cap bounds it, and every message's text together is
# checked against the prompt's character cap (400 prompt_too_long, a setting).
TextContent = Annotated[str | list[TextPart], WrapValidator(_refuse_media)]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]
AssistantContent = Annotated[str | list[AssistantPart] | None, WrapValidator(_refuse_media)]


def text_of(content: str | list[TextPart] | list[AssistantPart] | None) -> str | None:
    """The content as one text: parts are joined with nothing between them (as OpenAI
    concatenates them)."""
    if content is None or isinstance(content, str):
        return content
    return "".join(part.text if isinstance(part, TextPart) else part.refusal for part in content)


# --- tool calls in the conversation --------------------------------------------------------


class CalledFunction(Strict):
    name: str = Field(min_length=1)
    arguments: str = Field(description="The arguments as JSON text (an object).")

    @field_validator("arguments")
    @classmethod
    def _a_json_object(cls, arguments: str) -> str:
        # The model's prompt shows the arguments as the object they encode.
        try:
            parsed = json.loads(arguments)
        except ValueError:
            raise ValueError('must be a JSON object as text, e.g. "{}"') from None
        if not isinstance(parsed, dict):
            raise ValueError('must be a JSON object as text, e.g. "{}"')
        return arguments


class ToolCall(Strict):
    id: str = Field(min_length=1)
    type: Literal["function"]
    function: CalledFunction


# --- messages --------------------------------------------------------------------------------


class _Message(Strict):
    # OpenAI's participant name: passed to the model's template, which may ignore it.
    name: str | None = Field(None, max_length=256)


class SystemMessage(_Message):
    role: Literal["system"]
    content: TextContent


class DeveloperMessage(_Message):
    """OpenAI's newer name for a system message (the model sees a system message)."""

    role: Literal["developer"]
    content: TextContent


class UserMessage(_Message):
    role: Literal["user"]
    content: TextContent


class AssistantMessage(_Message):
    """An earlier answer. Its content may be null (or absent) only when it made tool
    calls (checked with the whole request: the error names messages.<i>.content)."""

    role: Literal["assistant"]
    content: AssistantContent = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None
    audio: Annotated[None, not_supported("this model answers in text only")] = None
    function_call: Annotated[
        None, not_supported("function_call is deprecated: send tool_calls")
    ] = None


class ToolMessage(_Message):
    role: Literal["tool"]
    content: TextContent
    tool_call_id: str = Field(min_length=1)


ChatMessage = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage,
    Field(discriminator="role"),
]


def refuse_function_messages(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """The deprecated role "function", named as such (it is no member of the union)."""
    if isinstance(value, list):
        for i, message in enumerate(value):
            if isinstance(message, dict) and message.get("role") == "function":
                raise Refused(
                    f"messages.{i}.role",
                    "function messages are deprecated: send tool messages (role tool, "
                    "with tool_call_id)",
                )
    return handler(value)


def check_message(index: int, message: Any) -> None:
    """What a message's own fields cannot say: an assistant message needs content or tool
    calls (or its refusal)."""
    if not isinstance(message, AssistantMessage) or message.content is not None:
        return
    if not message.tool_calls and message.refusal is None:
        raise Refused(
            f"messages.{index}.content", "an assistant message needs content or tool_calls"
        )


def engine_message(message: Any) -> dict[str, Any]:
    """One message as the chat model takes it (MESSAGES): roles system, user, assistant
    and tool, content one text (or null for an assistant's tool calls)."""
    content = text_of(message.content)
    if isinstance(message, AssistantMessage) and content is None and not message.tool_calls:
        content = message.refusal
    out: dict[str, Any] = {
        "role": "system" if message.role == "developer" else message.role,
        "content": content,
    }
    if message.name is not None:
        out["name"] = message.name
    if isinstance(message, AssistantMessage) and message.tool_calls:
        out["tool_calls"] = [call.model_dump() for call in message.tool_calls]
    if isinstance(message, ToolMessage):
        out["tool_call_id"] = message.tool_call_id
    return out


def message_chars(message: Any) -> int:
    """The characters a message brings to the prompt: its text and its calls."""
    chars = len(text_of(message.content) or "")
    if isinstance(message, AssistantMessage):
        chars += len(message.refusal or "") if message.content is None else 0
        for call in message.tool_calls or ():
            chars += len(call.function.name) + len(call.function.arguments)
    return chars


# --- tools -------------------------------------------------------------------------------------


class FunctionDefinition(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = Field(
        None, description="JSON Schema of the arguments object."
    )
    strict: bool | None = None


class Tool(Strict):
    type: Literal["function"]
    function: FunctionDefinition


ToolDefinition = Annotated[Tool, WrapValidator(_refuse_tool_types)]


class NamedFunction(Strict):
    name: str = Field(min_length=1)


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Annotated[
    Literal["none", "auto", "required"] | NamedToolChoice, WrapValidator(_refuse_tool_types)
]


# --- response_format ---------------------------------------------------------------------------


class TextFormat(Strict):
    type: Literal["text"]


class JsonObjectFormat(Strict):
    type: Literal["json_object"]


class JsonSchemaSpec(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    # `schema` is also a (deprecated) BaseModel method's name: the field takes it as alias.
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class JsonSchemaFormat(Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class Prediction(Strict):
    """OpenAI's predicted output (a latency hint): accepted, and ignored."""

    type: Literal["content"]
    content: TextContent
