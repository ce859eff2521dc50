"""Image classification (imagenet): images as base64 in JSON or as multipart files, one
Triton request for the batch, top-k from SCORES with the card's labels.

An image's cache key is the SHA-256 of its bytes (with top_k in the parameters), so the
same picture sent twice, under any name and either way, is computed once. A refused image
(Triton's INVALID_ARG "IMAGE[j]: ...", j counting the images of that Triton request) is
reported as the request's own item: its index in the request and, for a file, its name."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.requests import Request

from ..catalog import ServedModel
from ..errors import InputInvalid, PayloadTooLarge, UpstreamError
from ..schemas.images import ImageRequest
from ..triton import tensors
from .bodies import json_body
from .model_calls import IMAGES, Answer, CallContext, ModelCalls, TritonClock, top_labels
from .uploads import read_form

OUTPUTS = (tensors.LABEL, tensors.SCORE, tensors.SCORES, tensors.WIDTH, tensors.HEIGHT)
FILE_FIELD = "file"
DEFAULT_TOP_K = int(ImageRequest.model_fields["top_k"].default)
_REFUSED = re.compile(rf"{tensors.IMAGE}\[([0-9]+)\]:?\s*(.*)", re.DOTALL)
_DATA_URL = re.compile(r"data:[^,;]*(?:;[^,;]*)*;base64,", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Image:
    data: bytes
    digest: str  # sha256 hex of `data`: the cache key
    loc: tuple[str | int, ...]  # ("body", "inputs", 2) / ("body", "file", 2)
    file: str | None = None  # a multipart part's file name

    @property
    def where(self) -> str:
        dotted = ".".join(str(p) for p in self.loc[1:])
        return dotted if self.file is None else f"{dotted} ({self.file!r})"


@dataclass(frozen=True, slots=True)
class Images:
    items: list[Image]
    top_k: int


class ImageRefused(InputInvalid):
    """Triton refused one image of a call. Carries the image's digest, not its index in
    that call: a caller waiting on the same image (the cache's single flight) reports it
    as its own item."""

    def __init__(self, digest: str, reason: str) -> None:
        super().__init__(reason)
        self.digest, self.reason = digest, reason


class ImageService:
    def __init__(self, calls: ModelCalls) -> None:
        self.calls = calls

    def byte_cap(self, model: ServedModel) -> int:
        """Per image: limits.max_image_bytes, or a card's max_image_bytes if lower."""
        caps = [c.max_image_bytes for c in model.cards.values() if c.max_image_bytes]
        return min([self.calls.settings.limits.max_image_bytes, *caps])

    async def read(self, request: Request, model: ServedModel) -> Images:
        limits = self.calls.settings.limits
        cap = self.byte_cap(model)
        if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            form = await read_form(
                request,
                file_field=FILE_FIELD,
                fields=frozenset({"top_k"}),
                max_files=limits.max_images,
                max_file_bytes=cap,
            )
            items = [
                _image(bytes(u.data), ("body", FILE_FIELD, u.index), u.filename) for u in form.files
            ]
            return Images(items, _form_top_k(form.fields.get("top_k")))
        body = await json_body(request, ImageRequest)
        given = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        if not given:
            raise InputInvalid(
                "inputs must hold at least one image",
                details=[{"loc": ["body", "inputs"], "msg": "empty list"}],
            )
        if len(given) > limits.max_images:
            raise InputInvalid(
                f"inputs holds {len(given)} images; the limit is {limits.max_images} per request",
                details=[
                    {"loc": ["body", "inputs"], "msg": "too many items", "limit": limits.max_images}
                ],
            )
        one = isinstance(body.inputs, str)
        locs = [("body", "inputs") if one else ("body", "inputs", i) for i in range(len(given))]
        return Images(
            [_decoded(v, loc, cap) for v, loc in zip(given, locs, strict=True)], body.top_k
        )

    async def predict(
        self,
        name: str,
        requested_version: str | None,
        body: Images,
        request_id: str,
        call: CallContext,
    ) -> Answer:
        calls = self.calls
        routed = calls.route(name, IMAGES, requested_version, call)
        labels = routed.card.labels
        limit = min(calls.settings.limits.max_top_k, len(labels))
        if body.top_k > limit:
            raise InputInvalid(
                f"top_k: must be at most {limit} for model {name!r}",
                details=[{"loc": ["body", "top_k"], "msg": f"max {limit}"}],
            )
        items = body.items
        clock = TritonClock()

        async def compute(indices: list[int]) -> list[Any]:
            sent = [items[i] for i in indices]
            batch = np.empty((len(sent), 1), dtype=np.object_)
            batch[:, 0] = [item.data for item in sent]
            try:
                result = await calls.triton.infer(
                    name, routed.version, {tensors.IMAGE: batch}, OUTPUTS, request_id
                )
            except InputInvalid as exc:
                refused = _REFUSED.match(exc.message)
                if refused is None or int(refused.group(1)) >= len(sent):
                    raise
                raise ImageRefused(sent[int(refused.group(1))].digest, refused.group(2)) from exc
            clock.seconds += result.triton_seconds
            return _classified(result.outputs, len(sent), labels, body.top_k, name)

        try:
            outcome = await calls.fetch(
                routed,
                [item.digest for item in items],
                compute,
                {"top_k": body.top_k},
                call,
                lambda values: [v["label"] for v in values],
            )
        except ImageRefused as exc:
            raise _as_item_error(exc, items) from None
        predictions = [
            v if item.file is None else {"file": item.file, **v}
            for item, v in zip(items, outcome.values, strict=True)
        ]
        answer = {
            "model": name,
            "version": routed.version,
            "task": IMAGES,
            "predictions": predictions,
            "usage": {"images": len(items)},
        }
        return calls.answer(routed, answer, len(items), clock.seconds, outcome)


def _image(data: bytes, loc: tuple[str | int, ...], file: str | None = None) -> Image:
    image = Image(data, hashlib.sha256(data).hexdigest(), loc, file)
    if not data:
        raise InputInvalid(
            f"{image.where}: the image is empty (0 bytes)",
            details=[{"loc": list(loc), "msg": "empty image", **_file(file)}],
        )
    return image


def _decoded(value: str, loc: tuple[str | int, ...], cap: int) -> Image:
    """A base64 image (or a data: URL of one), refused before decoding when its length
    alone says it is over the byte cap."""
    where = ".".join(str(p) for p in loc[1:])
    prefix = _DATA_URL.match(value)
    # Line breaks and spaces are dropped (`base64` wraps its output at 76 columns).
    text = "".join((value[prefix.end() :] if prefix else value).split())
    if len(text) // 4 * 3 > cap + 2:
        raise _too_large(where, cap)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        why = "not valid base64 (the standard alphabet, padded)"
        raise InputInvalid(f"{where}: {why}", details=[{"loc": list(loc), "msg": why}]) from None
    if len(data) > cap:
        raise _too_large(where, cap)
    return _image(data, loc)


def _too_large(where: str, cap: int) -> PayloadTooLarge:
    # A file over the cap is refused while it arrives (uploads.py), naming its file too.
    return PayloadTooLarge(
        f"{where} is over the limit of {cap} bytes per image",
        details={"item": where, "limit_bytes": cap},
        param=where,
    )


def _file(file: str | None) -> dict[str, str]:
    return {} if file is None else {"file": file}


def _form_top_k(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_TOP_K
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise InputInvalid(
            "top_k: must be a whole number of at least 1",
            details=[{"loc": ["body", "top_k"], "msg": "not a positive integer"}],
        )
    return int(raw)


def _as_item_error(exc: ImageRefused, items: list[Image]) -> InputInvalid:
    """Triton's refusal of an image, naming this request's item (and file)."""
    item = next((i for i in items if i.digest == exc.digest), None)
    if item is None:  # not one of ours: cannot happen, but never a 500 for it
        return InputInvalid(exc.reason)
    return InputInvalid(
        f"{item.where}: {exc.reason}",
        details=[{"loc": list(item.loc), "msg": exc.reason, **_file(item.file)}],
    )


def _classified(
    out: dict[str, np.ndarray], n: int, labels: list[str], top_k: int, model: str
) -> list[dict[str, Any]]:
    label_out = out[tensors.LABEL].reshape(-1)
    score = out[tensors.SCORE].reshape(-1).tolist()
    width = out[tensors.WIDTH].reshape(-1).tolist()
    height = out[tensors.HEIGHT].reshape(-1).tolist()
    scores = out[tensors.SCORES]
    if scores.shape != (n, len(labels)):
        raise UpstreamError(f"model {model!r} returned {scores.shape[-1]} scores per image")
    return [
        {
            "label": label_out[i].decode(),
            "score": score[i],
            "top_k": top_labels(scores[i], labels, top_k),
            "width": width[i],
            "height": height[i],
        }
        for i in range(n)
    ]
