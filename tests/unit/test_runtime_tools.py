"""Tools (export/runtime/tools.py): definitions and tool_choice checked, calls parsed out
of generated text, and the JSON conventions of the grammars. The grammars themselves
are exercised against the real tokenizer in test_grammar.py."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from export.runtime.failures import GenerationError
from export.runtime.tools import (
    MAX_TOOLS,
    finished_calls,
    grammar_schema,
    parse_tool_calls,
    tool_call_grammar,
    validate_tool_choice,
    validate_tools,
)


def function(name: str, parameters: dict | None = None, **extra) -> dict:
    spec: dict = {"name": name, **extra}
    if parameters is not None:
        spec["parameters"] = parameters
    return {"type": "function", "function": spec}


CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = validate_tools([function("get_weather", CITY), function("now")])


def block(body: str) -> str:
    return f"<tool_call>\n{body}\n</tool_call>"


# --- definitions ------------------------------------------------------------------------


def test_tools_are_normalised():
    assert TOOLS == [
        {"type": "function", "function": {"name": "get_weather", "parameters": CITY}},
        {
            "type": "function",
            "function": {"name": "now", "parameters": {"type": "object", "properties": {}}},
        },
    ]
    described = validate_tools([function("f", None, description="d", strict=True)])
    assert described[0]["function"] == {
        "name": "f",
        "description": "d",
        "parameters": {"type": "object", "properties": {}},
        "strict": True,
    }


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ({}, "tools must be a list of 1..128"),
        ([], "tools must be a list of 1..128"),
        ([function(f"f{i}") for i in range(MAX_TOOLS + 1)], "tools must be a list of 1..128"),
        ([{"type": "code_interpreter"}], 'tools[0].type must be "function"'),
        ([{"type": "function"}], "tools[0].function must be an object"),
        ([function("ok"), function("has space")], "tools[1].function.name must match"),
        ([function("x" * 65)], "tools[0].function.name must match"),
        ([function("")], "tools[0].function.name must match"),
        ([function("f"), function("f")], "tools[1].function.name: 'f' is defined twice"),
        ([function("f", None, description=3)], "tools[0].function.description must be a string"),
        (
            [function("f", {"type": "string"})],
            "tools[0].function.parameters must be a JSON schema of an object",
        ),
        ([function("f", [1])], "tools[0].function.parameters must be a JSON schema of an object"),  # type: ignore[arg-type]
        ([function("f", None, strict="yes")], "tools[0].function.strict must be a boolean"),
    ],
)
def test_bad_tools_are_refused_naming_the_field(raw, names):
    with pytest.raises(GenerationError) as refused:
        validate_tools(raw)
    assert refused.value.code == "invalid" and names in str(refused.value)


def test_the_most_tools_are_accepted():
    assert len(validate_tools([function(f"f_{i}-x") for i in range(MAX_TOOLS)])) == MAX_TOOLS


def test_tool_choice():
    assert validate_tool_choice(None, TOOLS) == "auto"
    assert validate_tool_choice(None, None) == "none"
    for choice in ("none", "auto", "required"):
        assert validate_tool_choice(choice, TOOLS) == choice
    named = {"type": "function", "function": {"name": "now", "extra": 1}}
    assert validate_tool_choice(named, TOOLS) == {"type": "function", "function": {"name": "now"}}


@pytest.mark.parametrize(
    ("raw", "tools", "names"),
    [
        ("auto", None, "tool_choice needs tools"),
        ("always", TOOLS, 'tool_choice must be "none", "auto", "required"'),
        ({"type": "function"}, TOOLS, 'tool_choice must be "none"'),
        ({"type": "function", "function": {"name": "other"}}, TOOLS, "no tool is named 'other'"),
    ],
)
def test_bad_tool_choice_is_refused(raw, tools, names):
    with pytest.raises(GenerationError) as refused:
        validate_tool_choice(raw, tools)
    assert refused.value.code == "invalid" and names in str(refused.value)


# --- parsing ----------------------------------------------------------------------------


def test_a_good_block_is_a_call_and_leaves_the_content():
    text = "Let me check.\n" + block('{"name": "get_weather", "arguments": {"city": "Paris é"}}')
    content, calls = parse_tool_calls(text, TOOLS)
    assert content == "Let me check."
    assert len(calls) == 1
    assert re.fullmatch(r"call_[0-9a-f]{24}", calls[0]["id"])
    assert calls[0]["type"] == "function"
    assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris é"}'}


def test_call_ids_differ():
    text = block('{"name": "now", "arguments": {}}')
    ids = {parse_tool_calls(text, TOOLS)[1][0]["id"] for _ in range(20)}
    assert len(ids) == 20


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "get_weather", "arguments": {"city": "Paris"}',  # bad JSON
        '{"name": "launch", "arguments": {}}',  # unknown name
        '{"name": "now", "arguments": "{}"}',  # arguments not an object
        '{"name": "now"}',
        '["now", {}]',
        '{"name": "now", "arguments": {"x": 1E999}}',  # no JSON for inf
        '{"name": "now", "arguments": {"x": NaN}}',
    ],
)
def test_a_block_that_is_no_call_stays_in_the_content(body):
    text = "Before " + block(body) + " after"
    assert parse_tool_calls(text, TOOLS) == (text.strip(), [])


def test_several_calls_in_order_and_bad_blocks_kept():
    bad = block('{"name": "nope", "arguments": {}}')
    text = (
        block('{"name": "get_weather", "arguments": {"city": "Paris"}}')
        + "\n"
        + bad
        + "\n"
        + block('{"name": "now", "arguments": {}}')
        + '\n<tool_call>\n{"name": "now"'  # cut off: no closing tag
    )
    content, calls = parse_tool_calls(text, TOOLS)
    assert [c["function"]["name"] for c in calls] == ["get_weather", "now"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Paris"}, {}]
    assert content == bad + '\n\n<tool_call>\n{"name": "now"'


def test_without_parallel_calls_only_the_first_is_kept():
    text = "\n".join(
        [
            block('{"name": "get_weather", "arguments": {"city": "Paris"}}'),
            block('{"name": "now", "arguments": {}}'),
        ]
    )
    content, calls = parse_tool_calls(text, TOOLS, parallel=False)
    assert content == ""
    assert [c["function"]["name"] for c in calls] == ["get_weather"]


def test_text_without_blocks_is_all_content():
    assert parse_tool_calls("  Just an answer.\n", TOOLS) == ("Just an answer.", [])


# --- grammar texts ----------------------------------------------------------------------


def test_grammar_schema_is_compact_and_strict_closes_objects():
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "integer"}}},
            "c": {"type": "array", "items": {"type": "object", "properties": {}}},
            "d": {"anyOf": [{"type": "object"}, {"type": "null"}]},
            "e": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "$defs": {"X": {"type": "object"}},
        "x-guidance": {"whitespace_flexible": True},
    }
    loose = grammar_schema(schema, strict=False)
    assert loose["x-guidance"] == {
        "whitespace_flexible": False,
        "item_separator": ", ",
        "key_separator": ": ",
        "lenient": True,
    }
    assert "additionalProperties" not in loose
    closed = grammar_schema(schema, strict=True)
    assert closed["x-guidance"]["lenient"] is False
    assert closed["additionalProperties"] is False
    properties = closed["properties"]
    assert properties["a"]["additionalProperties"] is False
    assert properties["c"]["items"]["additionalProperties"] is False
    assert properties["d"]["anyOf"][0]["additionalProperties"] is False
    assert "additionalProperties" not in properties["d"]["anyOf"][1]
    assert properties["e"]["additionalProperties"] == {"type": "string"}  # as written
    assert closed["$defs"]["X"]["additionalProperties"] is False
    assert schema["properties"]["a"] == {"type": "object", "properties": {"b": {"type": "integer"}}}


def test_tool_call_grammar_text():
    required = tool_call_grammar(TOOLS, "required", parallel=True)
    lines = required.splitlines()
    assert lines[0] == 'start: call ("\\n" call){0,7}'
    assert lines[1] == 'call: "<tool_call>\\n" body "\\n</tool_call>"'
    body = json.loads(lines[2].removeprefix("body: %json "))
    assert [c["properties"]["name"] for c in body["anyOf"]] == [
        {"const": "get_weather"},
        {"const": "now"},
    ]
    assert body["anyOf"][0]["properties"]["arguments"] == CITY
    single = tool_call_grammar(
        TOOLS, {"type": "function", "function": {"name": "now"}}, parallel=False
    )
    assert single.splitlines()[0] == "start: call"
    assert json.loads(single.splitlines()[2].removeprefix("body: %json "))["anyOf"][0][
        "properties"
    ]["name"] == {"const": "now"}
    with pytest.raises(ValueError):
        tool_call_grammar(TOOLS, "auto", parallel=True)


def test_a_tools_local_references_still_resolve_inside_the_call_schema():
    parameters = {
        "type": "object",
        "properties": {"p": {"$ref": "#/$defs/P"}},
        "$defs": {"P": {"type": "object", "properties": {"x": {"type": "integer"}}}},
    }
    tools = validate_tools([function("now"), function("f", parameters)])
    body = tool_call_grammar(tools, "required", parallel=False).splitlines()[2]
    schema = json.loads(body.removeprefix("body: %json "))
    moved = schema["anyOf"][1]["properties"]["arguments"]
    assert moved["properties"]["p"]["$ref"] == "#/anyOf/1/properties/arguments/$defs/P"
    assert moved["$defs"] == parameters["$defs"]


def test_the_same_call_twice_is_two_calls_with_their_own_ids():
    # A tool with side effects (send_email, add_item) may be meant to run twice.
    block = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    content, calls = parse_tool_calls("\n".join([block, block]), TOOLS)
    assert content == ""
    assert [c["function"] for c in calls] == [
        {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    ] * 2
    assert calls[0]["id"] != calls[1]["id"]
    # Without parallel calls the second is dropped all the same.
    assert len(parse_tool_calls("\n".join([block, block]), TOOLS, parallel=False)[1]) == 1


def test_a_finished_answer_with_calls_ends_by_tool_calls_unless_cut():
    call = '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'
    content, calls, reason = finished_calls("Sure. " + call, "stop", TOOLS, parallel=True)
    assert (content, reason) == ("Sure.", "tool_calls") and calls and len(calls) == 1
    # Cut by max_tokens: the completed call is kept, the reason stays "length".
    cut = finished_calls(call + "\n<tool_call>\n{", "length", TOOLS, parallel=True)
    assert cut[1] and cut[2] == "length" and cut[0] == "<tool_call>\n{"
    assert finished_calls("Just text.", "stop", TOOLS, parallel=True) == (
        "Just text.",
        None,
        "stop",
    )
    broken = "<tool_call>\n{not json}\n</tool_call>"
    assert finished_calls(broken, "stop", TOOLS, parallel=True) == (broken, None, "stop")
