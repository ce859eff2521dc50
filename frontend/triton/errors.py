"""gRPC status -> domain error, at the boundary: nothing above the triton package sees a
tritonclient exception. `map_error` reads a call's status, and the kind a runner names in
its message (_KIND); `model_error` reads the chat model's own final error (its message
leads with the kind, and a refusal's text with the field at fault); `not_sent` says
whether a failed call is safe to retry."""

from __future__ import annotations

import re
from typing import Final

from tritonclient.utils import InferenceServerException

from ..errors import (
    BadRequest,
    DeadlineExceeded,
    InputInvalid,
    ModelUnavailable,
    Overloaded,
    UpstreamError,
    UpstreamUnavailable,
)
from ..schemas.chat import ChatCompletionRequest, CompletionRequest

# The request fields a refusal of the chat model can name (its own names for them are
# OpenAI's: the frontend sends each option under the field's name).
_REQUEST_FIELDS: Final = frozenset(ChatCompletionRequest.model_fields) | frozenset(
    CompletionRequest.model_fields
)
# A refusal's leading field path as the model writes it, then ":", a space or the end:
# "messages[3].content must ...", "response_format.json_schema.schema: ...", "n must ...".
_LEADING_PATH: Final = re.compile(
    r"([A-Za-z_][A-Za-z0-9_]*)((?:\[[0-9]+\]|\.[A-Za-z_][A-Za-z0-9_]*)*)(?=[:\s]|$)", re.ASCII
)

# A runner's own kind of failure, as chat_model.py leads its messages with it ("overloaded:
# 4 running, 8 waiting", "invalid: the prompt is ..."), or after the item when another
# model passes chat's on (summarize_model.py: "TEXT[2]: summarizing it failed: overloaded:
# ..."). `overloaded` is 503 overloaded under any status: a model passing a callee's error
# on may not keep its code (Triton 2.51 hands a BLS caller every error as INTERNAL). The
# first kind found is the one: a refusal's own text comes after it.
_KIND: Final = re.compile(r"(?:^|: )(invalid|overloaded): ")

# UNAVAILABLE with one of these means the request never reached Triton: safe to retry.
_NOT_SENT = ("failed to connect", "connection refused", "connect failed", "dns resolution")


def not_sent(exc: InferenceServerException) -> bool:
    message = (exc.message() or "").lower()
    return any(marker in message for marker in _NOT_SENT)


def map_error(exc: InferenceServerException, model: str, version: str, timeout: float) -> Exception:
    status = exc.status() or ""
    message = exc.message() or ""
    lowered = message.lower()
    if "DEADLINE_EXCEEDED" in status:
        return DeadlineExceeded(f"model {model!r} did not answer within {timeout:g} s")
    kind = _KIND.search(_strip_request_id(message))
    if kind is not None and kind.group(1) == "overloaded":
        return _at_capacity(model)  # as the chat routes answer an admission refusal
    if "UNAVAILABLE" in status:
        if "queue size" in lowered:
            return Overloaded(f"model {model!r} is overloaded; retry shortly")
        if "unknown model" in lowered or "not found" in lowered or "not ready" in lowered:
            return _not_found(model, version)  # Triton is up, this model is not
        return UpstreamUnavailable("the inference server is unavailable; retry shortly")
    if "INVALID_ARGUMENT" in status:
        if "unknown model" in lowered or "is not found" in lowered:
            return _not_found(model, version)
        text = _strip_request_id(message)
        if kind is not None:  # the kind tag is no news to the caller: 422 says it
            text = text[: kind.start(1)] + text[kind.end() :]
        return InputInvalid(text)
    if "NOT_FOUND" in status or "unknown model" in lowered:
        return _not_found(model, version)
    if "CANCELLED" in status:
        return UpstreamUnavailable("the inference request was cancelled")
    if "unavailable" in lowered or "not ready" in lowered:
        return UpstreamUnavailable(f"model {model!r} is not ready; retry shortly")
    return UpstreamError(f"inference failed for model {model!r}")


def model_error(error: InferenceServerException, model: str) -> Exception:
    """A final error response of the decoupled chat model: `<kind>: <text>`."""
    message = _strip_request_id(error.message() or "")
    kind, _, text = message.partition(": ")
    if kind == "invalid":
        return BadRequest(text, param=refused_param(text))
    if kind == "overloaded":
        return _at_capacity(model)
    if kind == "internal":
        return UpstreamError(f"generation failed in model {model!r}")
    return map_error(error, model, "", 0)


def refused_param(text: str) -> str | None:
    """The request field a refusal names first, as OpenAI's dotted `param`
    ("messages[3].content ..." -> "messages.3.content"); None unless it leads with a field
    of the request (the model also refuses in its own words: "the prompt is ...")."""
    found = _LEADING_PATH.match(text)
    if found is None or found.group(1) not in _REQUEST_FIELDS:
        return None
    rest = re.sub(r"\[([0-9]+)\]", r".\1", found.group(2))
    return found.group(1) + rest


def _at_capacity(model: str) -> Exception:
    # Not the model's text: it names how many sequences run and wait, which tells a caller
    # how busy the service is (that is for metrics: infergate_chat_queued_*).
    return Overloaded(f"model {model!r} is at capacity; retry shortly")


def _not_found(model: str, version: str) -> Exception:
    # Every call here is for a model and version the catalog has (unknown ones are 404
    # before Triton is asked), so "not found" from Triton means "not loaded": 503.
    what = f"model {model!r}" + (f" version {version}" if version else "")
    return ModelUnavailable(f"{what} is not loaded in the inference server; retry later")


def _strip_request_id(message: str) -> str:
    # Triton prefixes "[request id: …] "; the envelope carries the id already.
    if message.startswith("[request id:"):
        return message.split("] ", 1)[-1]
    return message
