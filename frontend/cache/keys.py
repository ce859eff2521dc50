"""Cache keys. One key per input item: a SHA-256 over length-prefixed fields, so no two
different (scope, model, version, digest, parameters, text) tuples can collide by
concatenation. The text is used byte for byte: any normalisation could change what the
model sees (the tokenizer decides what is equivalent, not the cache)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson


def params_blob(params: dict[str, Any]) -> bytes:
    return orjson.dumps(params, option=orjson.OPT_SORT_KEYS)


def item_key(scope: str, model: str, version: str, digest: str, params: bytes, text: str) -> str:
    h = hashlib.sha256()
    for part in (scope.encode(), model.encode(), version.encode(), digest.encode(), params):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    h.update(text.encode("utf-8", "surrogatepass"))
    # model and version stay readable in the key so that purges can match them.
    return f"{model}:{version}:{h.hexdigest()}"
