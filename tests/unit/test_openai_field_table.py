"""docs/openai-compat.md's request-field tables stay complete and true to two sources:
the installed `openai` package's request types (every field OpenAI's reference has gets
a row; no row names a field that exists nowhere but in our extensions) and our request
schemas (a field the table says is accepted is one the schema takes: the schemas refuse
unknown fields, so a row that is not there would be a lie). The page's documented tool
prompt is the one the chat model renders."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from openai.types import completion_create_params, embedding_create_params
from openai.types.chat import completion_create_params as chat_create_params
from pydantic import BaseModel

from export.runtime.tools import system_prompt_block
from frontend.schemas.chat import ChatCompletionRequest, CompletionRequest
from frontend.schemas.embeddings import EmbeddingRequest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "openai-compat.md"
STATUSES = {"supported", "accepted, ignored", "400"}

# Ours, beyond OpenAI's reference (each row says "extension").
SAMPLING_EXTENSIONS = {"top_k", "repetition_penalty", "min_tokens", "ignore_eos"}

# route heading → (the openai TypedDicts whose keys are the reference, our extensions,
# our request schema)
ROUTES: dict[str, tuple[tuple[type, ...], set[str], type[BaseModel]]] = {
    "POST /v1/chat/completions": (
        (
            chat_create_params.CompletionCreateParamsBase,
            # `stream` lives only in the two variants of the base.
            chat_create_params.CompletionCreateParamsStreaming,
            chat_create_params.CompletionCreateParamsNonStreaming,
        ),
        SAMPLING_EXTENSIONS,
        ChatCompletionRequest,
    ),
    "POST /v1/completions": (
        (
            completion_create_params.CompletionCreateParamsBase,
            completion_create_params.CompletionCreateParamsStreaming,
            completion_create_params.CompletionCreateParamsNonStreaming,
        ),
        SAMPLING_EXTENSIONS,
        CompletionRequest,
    ),
    "POST /v1/embeddings": (
        (embedding_create_params.EmbeddingCreateParams,),
        set(),
        EmbeddingRequest,
    ),
}


def reference_fields(types: tuple[type, ...]) -> set[str]:
    """Every key of the TypedDicts, inherited ones included (__annotations__ of a
    TypedDict holds its bases' keys too; __required_keys__/__optional_keys__ are the
    same set split by requiredness)."""
    fields: set[str] = set()
    for typed_dict in types:
        fields |= set(typed_dict.__annotations__)
        fields |= set(getattr(typed_dict, "__required_keys__", ()))
        fields |= set(getattr(typed_dict, "__optional_keys__", ()))
    return fields


def table(route: str) -> list[dict[str, str]]:
    """The rows of the first table after the heading "### `<route>`"."""
    text = DOC.read_text()
    heading = f"### `{route}`"
    assert heading in text, f"{heading} is missing from {DOC.name}"
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.strip().startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["field", "status", "notes"], header
    rows = []
    for line in lines[2:]:  # past the header and its --- line
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == 3, line
        name = re.fullmatch(r"`(\w+)`", cells[0])
        assert name, f"the field cell {cells[0]!r} is not one `name`"
        rows.append({"field": name.group(1), "status": cells[1], "notes": cells[2]})
    return rows


def schema_fields(schema: type[BaseModel]) -> set[str]:
    """The names a request body may use for the schema's fields (aliases included)."""
    names = set()
    for name, info in schema.model_fields.items():
        names.add(name)
        if info.alias:
            names.add(info.alias)
        if isinstance(info.validation_alias, str):
            names.add(info.validation_alias)
    return names


@pytest.mark.parametrize("route", list(ROUTES))
def test_every_reference_field_has_a_row_and_every_row_a_field(route: str) -> None:
    types, extensions, _schema = ROUTES[route]
    reference = reference_fields(types)
    rows = [row["field"] for row in table(route)]
    assert len(rows) == len(set(rows)), f"a field has two rows: {sorted(rows)}"
    assert reference, "the openai package's types have no keys: the check would pass vacuously"
    missing = reference - set(rows)
    assert not missing, f"{route}: no row for {sorted(missing)}"
    unknown = set(rows) - reference - extensions
    assert not unknown, f"{route}: rows for fields that exist nowhere: {sorted(unknown)}"
    assert extensions <= set(rows), f"{route}: an extension without a row"


@pytest.mark.parametrize("route", list(ROUTES))
def test_every_row_says_its_status_and_why(route: str) -> None:
    _types, extensions, _schema = ROUTES[route]
    for row in table(route):
        parts = [part.strip() for part in row["status"].split(" / ")]
        assert parts and all(p in STATUSES for p in parts), row
        # supported rows give their bounds or meaning; the others say why.
        assert len(row["notes"]) >= 3, row
        if row["field"] in extensions:
            assert "extension" in row["notes"], row


@pytest.mark.parametrize("route", list(ROUTES))
def test_what_the_table_accepts_the_schema_takes(route: str) -> None:
    """A field that is (at least for some values) accepted must be a field of the request
    schema, and every field of the schema is in the table."""
    _types, _extensions, schema = ROUTES[route]
    rows = table(route)
    takes = schema_fields(schema)
    accepted = {r["field"] for r in rows if r["status"] != "400"}
    refused_by_schema = accepted - takes
    assert not refused_by_schema, (
        f"{route}: the table accepts {sorted(refused_by_schema)}, the schema refuses them"
    )
    undocumented = set(schema.model_fields) - {r["field"] for r in rows}
    assert not undocumented, f"{route}: schema fields without a row: {sorted(undocumented)}"


def test_the_table_parser_reads_every_route() -> None:
    # Guards against a table that the parser reads as empty (the checks would pass).
    counts: dict[str, Any] = {route: len(table(route)) for route in ROUTES}
    assert counts["POST /v1/chat/completions"] >= 40, counts
    assert counts["POST /v1/completions"] >= 20, counts
    assert counts["POST /v1/embeddings"] == 5, counts


def test_the_documented_tool_prompt_is_the_rendered_one() -> None:
    """The page's `text` block under "## Tools" is what a template without tool support
    gets appended to its system message for the page's get_weather tool."""
    tools_section = DOC.read_text().split("\n## Tools\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"\n( *)```text\n(.*?)\n\1```", tools_section, re.S)
    assert block, "no text block in the Tools section"
    documented = textwrap.dedent(block.group(2))
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 20}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
    assert documented == system_prompt_block([weather]).lstrip("\n")
