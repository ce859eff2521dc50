"""Chat messages: their validation and their rendering through the model's template.

`validate_messages` takes the engine's MESSAGES (OpenAI's message forms, as the frontend
forwards them) and returns them normalised: role "developer" becomes "system", content
parts are joined into one string, an assistant's tool call carries its arguments as a
parsed object (what chat templates expect), absent content is "".

`ChatTemplate.render` renders them with the model's own template. A template that
supports tools (its source mentions `tools`) gets `tools=` as transformers passes it.
Ours does not; for such a template the conversation is first rewritten the Hermes/Qwen
way, which the tool-call grammar and parser of tools.py follow:

- with tools and tool_choice other than "none", `tools.system_prompt_block(tools)` is
  appended to the first message when it is a system message; otherwise a system message
  is put first whose content is that block without its leading newlines. (Our template
  then no longer adds its default system prompt: it adds one only when the first
  message is not a system message.)
- an assistant message with tool calls: its content (when not empty), then one
  `<tool_call>\\n{"name": .., "arguments": {..}}\\n</tool_call>` block per call, all
  joined with "\\n".
- a tool message: a user message `<tool_response>\\n{content}\\n</tool_response>`;
  consecutive tool messages make one user message, their blocks joined with "\\n".
"""

from __future__ import annotations

import json
from typing import Any

try:  # as the package export.runtime (build, tests)
    from .failures import GenerationError
    from .tools import call_block, system_prompt_block
except ImportError:  # flat, beside model.py in the Triton model directory
    from failures import GenerationError  # type: ignore[no-redef]
    from tools import call_block, system_prompt_block  # type: ignore[no-redef]

ROLES = ("system", "developer", "user", "assistant", "tool")


def validate_messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise GenerationError("invalid", "messages must be a non-empty list")
    messages: list[dict[str, Any]] = []
    open_calls: set[str] = set()  # ids of the last assistant message's calls
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise GenerationError("invalid", f"{where} must be an object")
        role = message.get("role")
        if role not in ROLES:
            raise GenerationError("invalid", f"{where}.role must be one of {'|'.join(ROLES)}")
        normal: dict[str, Any] = {"role": "system" if role == "developer" else role}
        calls = _tool_calls(message, where) if role == "assistant" else None
        if role != "assistant" and "tool_calls" in message:
            raise GenerationError("invalid", f"{where}.tool_calls: only assistant messages call")
        content = message.get("content")
        if content is None and not calls:
            what = "content or tool_calls" if role == "assistant" else "content"
            raise GenerationError("invalid", f"{where}.{what} is required")
        normal["content"] = "" if content is None else _text(content, role, where)
        name = message.get("name")
        if name is not None:
            if not isinstance(name, str):
                raise GenerationError("invalid", f"{where}.name must be a string")
            normal["name"] = name
        if calls:
            normal["tool_calls"] = calls
        if role == "tool":
            normal["tool_call_id"] = _answered_call(message, open_calls, where)
        else:
            open_calls = {c["id"] for c in calls or ()}
        messages.append(normal)
    return messages


def _text(content: Any, role: str, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise GenerationError("invalid", f"{where}.content must be a string or a list of parts")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str):
            raise GenerationError("invalid", f"{where}.content[{j}] must be an object with a type")
        # OpenAI lets an assistant's past answer hold a refusal part; it is text too.
        key = "refusal" if kind == "refusal" and role == "assistant" else "text"
        if kind not in ("text", key):
            raise GenerationError("invalid", f"{where}: this model does not accept {kind} content")
        text = part.get(key)
        if not isinstance(text, str):
            raise GenerationError("invalid", f"{where}.content[{j}].{key} must be a string")
        texts.append(text)
    return "".join(texts)  # OpenAI concatenates the parts with no separator


def _tool_calls(message: dict[str, Any], where: str) -> list[dict[str, Any]] | None:
    raw = message.get("tool_calls")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise GenerationError("invalid", f"{where}.tool_calls must be a list")
    calls = []
    for j, call in enumerate(raw):
        at = f"{where}.tool_calls[{j}]"
        if not isinstance(call, dict):
            raise GenerationError("invalid", f"{at} must be an object")
        if not isinstance(call.get("id"), str) or not call["id"]:
            raise GenerationError("invalid", f"{at}.id must be a non-empty string")
        if call.get("type", "function") != "function":
            raise GenerationError("invalid", f'{at}.type must be "function"')
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise GenerationError("invalid", f"{at}.function must be an object with a name")
        arguments = function.get("arguments", "{}")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                raise GenerationError(
                    "invalid", f"{at}.function.arguments must be JSON text"
                ) from None
        if not isinstance(arguments, dict):
            raise GenerationError("invalid", f"{at}.function.arguments must be a JSON object")
        calls.append(
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": function["name"], "arguments": arguments},
            }
        )
    return calls


def _answered_call(message: dict[str, Any], open_calls: set[str], where: str) -> str:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise GenerationError("invalid", f"{where}.tool_call_id must be a non-empty string")
    # OpenAI's rule: a tool message answers a call of the assistant message before it.
    if call_id not in open_calls:
        raise GenerationError(
            "invalid",
            f"{where}.tool_call_id {call_id!r} answers no tool call of the assistant "
            "message before it",
        )
    return call_id


class ChatTemplate:
    """The model's own chat template, rendered the way transformers renders it
    (sandboxed jinja2, trim_blocks + lstrip_blocks)."""

    def __init__(self, source: str, special: dict[str, str]):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise GenerationError("invalid", message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        self.template = env.from_string(source)
        self.special = special
        self.supports_tools = "tools" in source

    def render(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> str:
        """`messages` as validate_messages returns them; `tools` as tools.validate_tools,
        only those the answer may call (none for tool_choice "none": the caller leaves
        them out)."""
        shown = tools or None
        if self.supports_tools:
            extra = {"tools": shown} if shown else {}
            return self.template.render(
                messages=messages, add_generation_prompt=True, **extra, **self.special
            )
        return self.template.render(
            messages=hermes_messages(messages, shown), add_generation_prompt=True, **self.special
        )


def hermes_messages(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """The conversation for a template without tool support (see the module docstring)."""
    out: list[dict[str, Any]] = []
    previous_was_tool = False
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "tool":
            block = f"<tool_response>\n{content}\n</tool_response>"
            if previous_was_tool:
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block})
            previous_was_tool = True
            continue
        previous_was_tool = False
        plain = {k: v for k, v in message.items() if k in ("role", "content", "name")}
        if message.get("tool_calls"):
            blocks = [
                call_block(c["function"]["name"], c["function"]["arguments"])
                for c in message["tool_calls"]
            ]
            plain["content"] = "\n".join([content, *blocks] if content else blocks)
        out.append(plain)
    if tools:
        block = system_prompt_block(tools)
        if out[0]["role"] == "system":
            out[0] = {**out[0], "content": out[0]["content"] + block}
        else:
            out.insert(0, {"role": "system", "content": block.lstrip("\n")})
    return out
