"""The predict operations' OpenAPI: every task's body (the route reads the body itself, so
FastAPI cannot document it) and an example of each body and answer.

The JSON bodies are listed under `anyOf`, not `oneOf`: they overlap (`{"inputs": "…"}` is
a valid body of four tasks), and the model's task, not the body, decides which applies
(GET /v1/models/{model} names the task). Images may also come as multipart/form-data.
"""

from __future__ import annotations

from typing import Any

from ..schemas.entities import EntitiesRequest
from ..schemas.images import EXAMPLE_PNG, ImageRequest, ImageUpload
from ..schemas.predict import PredictRequest
from ..schemas.summaries import SummarizeRequest

_FIRST, _SECOND = "The committee met on Tuesday.", "It approved the new budget after a long debate."
_TEXT = f"{_FIRST} {_SECOND} Members will vote on the plan next month."
_AT = _TEXT.index(_SECOND)

BODY_EXAMPLES: dict[str, dict[str, Any]] = {
    "text-classification": {
        "summary": "Classify texts (intent, sentiment)",
        "value": {"inputs": ["connect me to an agent", "what's the weather"], "top_k": 3},
    },
    "token-classification": {
        "summary": "Find entities (ner, pii)",
        "value": {"inputs": "Ada Lovelace met Charles Babbage in London."},
    },
    "image-classification": {
        "summary": "Classify base64 images (imagenet; or send files as multipart/form-data)",
        "value": {"inputs": [EXAMPLE_PNG], "top_k": 5},
    },
    "summarization": {
        "summary": "Summarize texts (summarize)",
        "value": {"inputs": _TEXT, "method": "extractive", "max_sentences": 2},
    },
}

ANSWER_EXAMPLES: dict[str, dict[str, Any]] = {
    "text-classification": {
        "summary": "intent",
        "value": {
            "model": "intent",
            "version": "2",
            "score_kind": "probability",
            "predictions": [
                {
                    "label": "agent",
                    "score": 0.91,
                    "top_k": [{"label": "agent", "score": 0.91}],
                    "truncated": False,
                }
            ],
            "usage": {"input_tokens": 7},
        },
    },
    "token-classification": {
        "summary": "ner",
        "value": {
            "model": "ner",
            "version": "1",
            "task": "token-classification",
            "predictions": [
                {
                    "entities": [
                        {"text": "Ada Lovelace", "label": "PERSON", "start": 0, "end": 12},
                        {"text": "London", "label": "GPE", "start": 36, "end": 42},
                    ],
                    "truncated": False,
                }
            ],
            "usage": {"input_tokens": 9},
        },
    },
    # The bundled imagenet's answer (labels.json's names) for scikit-image's chelsea.png
    # and coffee.png sent as files with top_k=3, scores rounded to 4 places.
    "image-classification": {
        "summary": "imagenet, two files, top_k=3 (multipart: each prediction names its file)",
        "value": {
            "model": "imagenet",
            "version": "1",
            "task": "image-classification",
            "predictions": [
                {
                    "file": "chelsea.png",
                    "label": "tiger cat",
                    "score": 0.3845,
                    "top_k": [
                        {"label": "tiger cat", "score": 0.3845},
                        {"label": "Egyptian cat", "score": 0.3655},
                        {"label": "tabby", "score": 0.1691},
                    ],
                    "width": 451,
                    "height": 300,
                },
                {
                    "file": "coffee.png",
                    "label": "espresso",
                    "score": 0.9511,
                    "top_k": [
                        {"label": "espresso", "score": 0.9511},
                        {"label": "cup", "score": 0.015},
                        {"label": "consomme", "score": 0.0077},
                    ],
                    "width": 600,
                    "height": 400,
                },
            ],
            "usage": {"images": 2},
        },
    },
    "summarization": {
        "summary": "summarize (extractive)",
        "value": {
            "model": "summarize",
            "version": "1",
            "task": "summarization",
            "predictions": [
                {
                    "summary": f"{_FIRST} {_SECOND}",
                    "method": "extractive",
                    "source_chars": len(_TEXT),
                    "source_sentences": 3,
                    "chunks": 1,
                    "sentences": [
                        {"index": 0, "start": 0, "end": len(_FIRST), "text": _FIRST},
                        {"index": 1, "start": _AT, "end": _AT + len(_SECOND), "text": _SECOND},
                    ],
                }
            ],
            "usage": {"input_tokens": 24},
        },
    },
}


def openapi_extra() -> dict[str, Any]:
    """A fresh copy per operation (FastAPI merges it into the operation it documents)."""
    return {
        "requestBody": {
            "required": True,
            "description": "The body of the model's task: text-classification "
            "(PredictRequest), token-classification (EntitiesRequest), "
            "image-classification (ImageRequest, or multipart/form-data with `file` parts) "
            "or summarization (SummarizeRequest). A field of another task's body is refused "
            "(422), as any unknown field is.",
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [
                            model.model_json_schema()
                            for model in (
                                PredictRequest,
                                EntitiesRequest,
                                ImageRequest,
                                SummarizeRequest,
                            )
                        ]
                    },
                    "examples": BODY_EXAMPLES,
                },
                "multipart/form-data": {
                    "schema": ImageUpload.model_json_schema(),
                    "encoding": {
                        "file": {"contentType": "image/jpeg, image/png, image/webp, image/gif"}
                    },
                },
            },
        },
        "responses": {"200": {"content": {"application/json": {"examples": ANSWER_EXAMPLES}}}},
    }
