"""A job's model parameters and plain fields, checked at submission as the task's own
synchronous route checks them (a 422 naming the parameter), so that nothing the first
chunk would refuse is accepted: the scope each task needs, its request schema with the
rows left out, the limits of the resolved version's card, and a multipart body's
JSON-text fields decoded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from ..catalog import ModelCard
from ..errors import InputInvalid
from ..schemas.chat import MAX_COMPLETION_TOKENS, ChatCompletionRequest
from ..schemas.embeddings import EmbeddingRequest
from ..schemas.entities import EntitiesRequest
from ..schemas.jobs import JobFields
from ..schemas.predict import PredictRequest
from ..schemas.summaries import SummarizeRequest
from ..services.model_calls import CLASSIFY, EMBED, SUMMARIES, TOKENS
from ..settings import LimitSettings
from .generation_adapter import GENERATION
from .generation_adapter import PARAMETERS as GENERATION_PARAMETERS

# The multipart plain fields holding JSON text.
JSON_FIELDS = ("columns", "parameters", "metadata", "notify")
# The scope each task's jobs need: the route its synchronous requests use.
TASK_ROUTES = {CLASSIFY: "predict", TOKENS: "predict", SUMMARIES: "predict", EMBED: "embeddings"}
# Each task's request schema checks its parameters, with a placeholder row in the fields
# that carry the rows (the adapters build the same body, rows in, for every chunk).
PARAMETER_SCHEMAS: dict[str, tuple[type[BaseModel], dict[str, Any]]] = {
    CLASSIFY: (PredictRequest, {"inputs": ["x"]}),
    TOKENS: (EntitiesRequest, {"inputs": ["x"]}),
    SUMMARIES: (SummarizeRequest, {"inputs": ["x"]}),
    EMBED: (EmbeddingRequest, {"input": ["x"], "model": "x"}),
    GENERATION: (
        ChatCompletionRequest,
        {"model": "x", "messages": [{"role": "user", "content": "x"}]},
    ),
}
M = TypeVar("M", bound=BaseModel)


def task_route(task: str) -> str:
    return TASK_ROUTES.get(task, "chat")


def invalid_body(schema: type[M], value: Any, at: tuple[str, ...]) -> M:
    """`value` as `schema`, or the 422 FastAPI gives a body, its fields under `at`."""
    try:
        return schema.model_validate(value)
    except ValidationError as exc:
        errors = [{**e, "loc": (*at, *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=value) from None


def _refuse_parameter(name: str, why: str) -> InputInvalid:
    return InputInvalid(
        f"parameters.{name}: {why}",
        [{"loc": ["body", "parameters", name], "msg": why}],
        param=f"parameters.{name}",
    )


def check_parameters(
    task: str, parameters: Mapping[str, Any], card: ModelCard, limits: LimitSettings
) -> None:
    """The task's parameters as its synchronous route checks them (422 naming the
    parameter): refused here rather than at the job's first chunk."""
    schema, rows = PARAMETER_SCHEMAS[task]
    for name in rows:
        if name in parameters:
            raise _refuse_parameter(name, "the rows are the job's inputs, not a parameter")
    if task == GENERATION:
        for name in parameters:
            if name not in GENERATION_PARAMETERS:
                allowed = ", ".join(sorted(GENERATION_PARAMETERS))
                raise _refuse_parameter(name, f"a generation job takes {allowed}")
    body = invalid_body(schema, {**parameters, **rows}, ("body", "parameters"))
    if isinstance(body, ChatCompletionRequest):
        asked = body.requested_max_tokens()
        most = min(card.max_completion_tokens or MAX_COMPLETION_TOKENS, MAX_COMPLETION_TOKENS)
        if asked is not None and asked > most:
            name = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
            raise _refuse_parameter(name, f"must be at most {most} for this model")
    if isinstance(body, PredictRequest):
        top = min(limits.max_top_k, len(card.labels))
        if body.top_k > top:
            raise _refuse_parameter("top_k", f"must be at most {top} for this model")
    if isinstance(body, EmbeddingRequest) and body.dimensions not in (None, card.embedding_dim):
        raise _refuse_parameter("dimensions", f"must be {card.embedding_dim} or omitted")
    methods = card.methods or []
    if isinstance(body, SummarizeRequest) and body.method and body.method not in methods:
        raise _refuse_parameter("method", f"this model offers {', '.join(methods)}")


def form_fields(raw: Mapping[str, str]) -> JobFields:
    """A multipart body's plain fields as JobFields (JSON text decoded); 422 naming the
    field otherwise."""
    data: dict[str, Any] = {k: v for k, v in raw.items() if k not in JSON_FIELDS}
    for name in JSON_FIELDS:
        if name in raw:
            try:
                data[name] = orjson.loads(raw[name])
            except orjson.JSONDecodeError:
                raise InputInvalid(
                    f"{name}: not JSON text",
                    [{"loc": ["body", name], "msg": "must be JSON text"}],
                    param=name,
                ) from None
    return invalid_body(JobFields, data, ("body",))
