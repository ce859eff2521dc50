"""OpenAI function tools for a model that calls them in the Hermes/Qwen text format.

A call is text the model writes, one block per call, blocks separated by "\\n":

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

This module turns tool definitions into the system-prompt block that teaches the format
(`system_prompt_block`), into the llguidance grammar that forces it when tool_choice is
"required" or names a function (`tool_call_grammar`, lark text with one `%json` schema),
and parses calls back out of generated text (`parse_tool_calls`). It also holds the JSON
conventions every grammar of the runtime shares (`grammar_schema`): compact separators
", " and ": " with no other whitespace, so that a small model cannot loop on whitespace,
and the same rendering the prompt shows the model.

Pure Python (no llguidance): `grammar.py` compiles what this module writes.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

try:  # as the package export.runtime (build, tests)
    from .failures import GenerationError
except ImportError:  # flat, beside model.py in the Triton model directory
    from failures import GenerationError  # type: ignore[no-redef]

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
MAX_TOOLS = 128  # OpenAI's bound
# Calls in one forced answer at most: a small model asked for parallel calls can repeat
# one call until max_tokens (seen: "the sum of 7 and 8", called again and again), which
# would end by length with no call at all. The grammar ends the answer after this many.
MAX_PARALLEL_CALLS = 8
NAME_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,64}")
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}

# llguidance's JSON options (x-guidance): the compact form json.dumps writes by default.
COMPACT_JSON: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}

_BLOCK = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)" + re.escape(TOOL_CALL_CLOSE), re.S)


# --- definitions ------------------------------------------------------------------------


def validate_tools(raw: Any) -> list[dict[str, Any]]:
    """OpenAI's `tools` (function tools only) → the same shape, normalised: every
    function has `parameters` (absent = no parameters)."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_TOOLS:
        raise GenerationError("invalid", f"tools must be a list of 1..{MAX_TOOLS} tools")
    tools, seen = [], set()
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise GenerationError("invalid", f'{where}.type must be "function"')
        function = tool.get("function")
        if not isinstance(function, dict):
            raise GenerationError("invalid", f"{where}.function must be an object")
        name = function.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise GenerationError(
                "invalid", f"{where}.function.name must match ^[a-zA-Z0-9_-]{{1,64}}$"
            )
        if name in seen:
            raise GenerationError("invalid", f"{where}.function.name: {name!r} is defined twice")
        seen.add(name)
        normal: dict[str, Any] = {"name": name}
        description = function.get("description")
        if description is not None:
            if not isinstance(description, str):
                raise GenerationError("invalid", f"{where}.function.description must be a string")
            normal["description"] = description
        parameters = function.get("parameters", NO_PARAMETERS)
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            raise GenerationError(
                "invalid", f"{where}.function.parameters must be a JSON schema of an object"
            )
        normal["parameters"] = parameters
        strict = function.get("strict")
        if strict is not None:
            if not isinstance(strict, bool):
                raise GenerationError("invalid", f"{where}.function.strict must be a boolean")
            normal["strict"] = strict
        tools.append({"type": "function", "function": normal})
    return tools


def validate_tool_choice(raw: Any, tools: list[dict[str, Any]] | None) -> str | dict[str, Any]:
    """OpenAI's `tool_choice` → "none" | "auto" | "required" |
    {"type": "function", "function": {"name": X}}. Absent: "auto" with tools, else "none"."""
    if raw is None:
        return "auto" if tools else "none"
    if not tools:
        raise GenerationError("invalid", "tool_choice needs tools")
    if raw in ("none", "auto", "required"):
        return str(raw)
    function = raw.get("function") if isinstance(raw, dict) else None
    if not isinstance(raw, dict) or raw.get("type") != "function" or not isinstance(function, dict):
        raise GenerationError(
            "invalid",
            'tool_choice must be "none", "auto", "required" or '
            '{"type": "function", "function": {"name": ...}}',
        )
    name = function.get("name")
    if name not in tool_names(tools):
        raise GenerationError("invalid", f"tool_choice.function.name: no tool is named {name!r}")
    return {"type": "function", "function": {"name": name}}


def tool_names(tools: list[dict[str, Any]]) -> list[str]:
    return [tool["function"]["name"] for tool in tools]


def system_prompt_block(tools: list[dict[str, Any]]) -> str:
    """The text appended to the system message for a template without tool support
    (the Hermes/Qwen wording; one function object per line)."""
    lines = "\n".join(
        json.dumps({k: v for k, v in t["function"].items() if k != "strict"}, ensure_ascii=False)
        for t in tools
    )
    return (
        "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{lines}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments "
        f"within {TOOL_CALL_OPEN}{TOOL_CALL_CLOSE} XML tags:\n"
        f'{TOOL_CALL_OPEN}\n{{"name": <function-name>, "arguments": <args-json-object>}}\n'
        f"{TOOL_CALL_CLOSE}"
    )


def call_block(name: str, arguments: Any) -> str:
    """One call the way the model writes it (also how a past call is shown to it)."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}"


# --- grammar ----------------------------------------------------------------------------


def grammar_schema(schema: dict[str, Any], strict: bool) -> dict[str, Any]:
    """A JSON schema as the runtime's grammars use it, with llguidance's options at its
    top level (any `x-guidance` of the caller's is replaced).

    strict (OpenAI's `strict: true`): the output has exactly the schema's keys — an object
    schema without `additionalProperties` gets `false` (OpenAI requires it be written;
    we assume it) — and a keyword llguidance does not implement is an error. Not strict:
    JSON-schema semantics, and unimplemented keywords are ignored (best effort, as
    OpenAI's non-strict mode)."""
    return _with_options(_closed(schema) if strict else schema, lenient=not strict)


def _with_options(schema: dict[str, Any], lenient: bool) -> dict[str, Any]:
    options = {**COMPACT_JSON, "lenient": lenient}
    return {**{k: v for k, v in schema.items() if k != "x-guidance"}, "x-guidance": options}


def _closed(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions", "patternProperties"):
            out[key] = (
                {k: _closed(v) for k, v in value.items()} if isinstance(value, dict) else value
            )
        elif key in ("items", "prefixItems", "anyOf", "oneOf", "additionalProperties"):
            # Not allOf: closing each part of an intersection would forbid the others' keys.
            out[key] = _closed(value)
        else:
            out[key] = value
    is_object = schema.get("type") == "object" or "properties" in schema
    if is_object and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


def _moved(schema: Any, root: str) -> Any:
    """A schema placed at JSON pointer `root` of a larger one: its local references
    ("#", "#/$defs/X", ...) rewritten to point inside it again."""
    if isinstance(schema, list):
        return [_moved(s, root) for s in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        k: root + v[1:]
        if k == "$ref" and isinstance(v, str) and v.startswith("#")
        else _moved(v, root)
        for k, v in schema.items()
    }


def tool_call_grammar(
    tools: list[dict[str, Any]], choice: str | dict[str, Any], parallel: bool
) -> str:
    """Lark text (llguidance's dialect) for tool_choice "required" (any of the tools) or
    a named function: one call, or with `parallel` one to MAX_PARALLEL_CALLS separated by
    "\\n"; each
    call's JSON is `{"name": <that tool>, "arguments": <its parameters' schema>}` (a
    tool's `strict` as in `grammar_schema`). After the last call only EOS may follow."""
    if choice == "required":
        chosen = tools
    elif isinstance(choice, dict):
        chosen = [t for t in tools if t["function"]["name"] == choice["function"]["name"]]
    else:
        raise ValueError(f"tool_choice {choice!r} takes no grammar")
    if not chosen:
        raise GenerationError("invalid", "tool_choice names no defined tool")
    calls = []
    for i, tool in enumerate(chosen):
        function = tool["function"]
        parameters = function["parameters"]
        if function.get("strict"):
            parameters = _closed(parameters)
        calls.append(
            {
                "type": "object",
                "properties": {
                    "name": {"const": function["name"]},
                    "arguments": _moved(parameters, f"#/anyOf/{i}/properties/arguments"),
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    # One schema (anyOf), not one %json per tool: the parser then picks the tool by its
    # name's characters instead of committing to the first alternative at "{".
    strict = all(t["function"].get("strict") for t in chosen)
    body = _with_options({"anyOf": calls}, lenient=not strict)
    repeat = f' ("\\n" call){{0,{MAX_PARALLEL_CALLS - 1}}}' if parallel else ""
    opening, closing = json.dumps(TOOL_CALL_OPEN + "\n"), json.dumps("\n" + TOOL_CALL_CLOSE)
    return (
        f"start: call{repeat}\n"
        f"call: {opening} body {closing}\n"
        f"body: %json {json.dumps(body, ensure_ascii=False)}\n"
    )


# --- parsing ----------------------------------------------------------------------------


def parse_tool_calls(
    text: str, tools: list[dict[str, Any]], parallel: bool = True
) -> tuple[str, list[dict[str, Any]]]:
    """Generated text → (content, calls). Every complete block whose JSON is an object
    with a known "name" and an object "arguments" is a call, each with its own id (the
    same call twice is two calls: a tool with side effects may be meant to run twice);
    any other block stays in the content verbatim. Content is the text outside the
    calls, stripped. Without `parallel` only the first call is kept (the later ones are
    dropped, not shown as text: they were calls, just not allowed)."""
    names = set(tool_names(tools))
    calls: list[dict[str, Any]] = []
    pieces, end = [], 0
    for block in _BLOCK.finditer(text):
        parsed = _call(block.group(1), names)
        if parsed is None:
            continue
        pieces.append(text[end : block.start()])
        end = block.end()
        if parallel or not calls:
            calls.append(parsed)
    pieces.append(text[end:])
    return "".join(pieces).strip(), calls


def finished_calls(
    text: str, reason: str, tools: list[dict[str, Any]], parallel: bool
) -> tuple[str, list[dict[str, Any]] | None, str]:
    """A choice's held-back text at its end → (content, calls or None, finish reason):
    "tool_calls" when it stopped by itself after calling. Cut by max_tokens, the calls
    completed before the cut are still calls (a small model asked for parallel calls
    may start another and another): they are sent, and the reason stays "length" — the
    answer did not end by itself."""
    if TOOL_CALL_OPEN not in text:
        return text, None, reason
    content, calls = parse_tool_calls(text, tools, parallel)
    return content, calls or None, "tool_calls" if calls and reason == "stop" else reason


def _call(body: str, names: set[str]) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    name, arguments = value.get("name"), value.get("arguments")
    if name not in names or not isinstance(arguments, dict):
        return None
    try:
        # allow_nan=False: a number too large for a float (1E999) parses as inf, which
        # JSON cannot write; json.loads' NaN/Infinity are not JSON either.
        text = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return None
    return {
        "id": "call_" + secrets.token_hex(12),
        "type": "function",
        "function": {"name": name, "arguments": text},
    }
