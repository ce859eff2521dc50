"""Triton's refusal of one text of a call (`TEXT[j]: ...`), named as the request's own
item: shared by the services of the text models that batch a request's texts."""

from __future__ import annotations

import re

from ..errors import InputInvalid
from ..triton import tensors

_REFUSED = re.compile(rf"{tensors.TEXT}\[([0-9]+)\](:?)\s*(.*)", re.DOTALL)


class TextRefused(InputInvalid):
    """Triton refused one text of a call. Carries the text, not its index in that call: a
    caller waiting on the same text (the cache's single flight) reports it as its own."""

    def __init__(self, text: str, reason: str, colon: bool) -> None:
        super().__init__(reason)
        self.text, self.reason, self.colon = text, reason, colon

    def as_item_error(self, texts: list[str], inputs: str | list[str]) -> InputInvalid:
        """The refusal naming the request's item: `inputs.i` (`inputs` for one string)."""
        if self.text not in texts:
            # Another request's text, refused in the call this one waited on (the cache's
            # single flight): its reason, naming no item of this request.
            return InputInvalid(self.reason)
        loc: list[str | int] = ["body", "inputs"]
        if not isinstance(inputs, str):
            loc.append(texts.index(self.text))  # the first: the one the cache sent
        where = ".".join(str(part) for part in loc[1:])
        return InputInvalid(
            f"{where}{':' if self.colon else ''} {self.reason}",
            details=[{"loc": loc, "msg": self.reason}],
            param=where,
        )


def refused_text(exc: InputInvalid, sent: list[str]) -> TextRefused | None:
    """Triton's refusal of `sent[j]` as a TextRefused; None for any other refusal."""
    refused = _REFUSED.match(exc.message)
    if refused is None or int(refused.group(1)) >= len(sent):
        return None
    return TextRefused(sent[int(refused.group(1))], refused.group(3), bool(refused.group(2)))
