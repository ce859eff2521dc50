"""The model's logprob entries (one per token: id, token, bytes, logprob, top_logprobs)
in OpenAI's two shapes: chat's `{"content": [...], "refusal": null}` and the legacy
completions' parallel lists `{tokens, token_logprobs, top_logprobs, text_offset}`; and
the text that entries spell (an echoed prompt sent as token ids)."""

from __future__ import annotations

import codecs
from collections.abc import Iterable

from ..schemas.chat_responses import ChatLogprobs, CompletionLogprobs, TokenLogprob, TopLogprob
from ..triton.client import LogprobEntry


def chat_logprobs(entries: Iterable[LogprobEntry]) -> ChatLogprobs:
    return ChatLogprobs(content=[_token_logprob(e) for e in entries])


def _token_logprob(entry: LogprobEntry) -> TokenLogprob:
    tops = [_top(t) for t in entry.get("top_logprobs") or ()]
    return TokenLogprob(**_top(entry).model_dump(), top_logprobs=tops)


def _top(entry: LogprobEntry) -> TopLogprob:
    return TopLogprob(token=entry["token"], logprob=entry["logprob"], bytes=entry.get("bytes"))


def token_bytes(entry: LogprobEntry) -> bytes:
    """The token's exact bytes (a token alone may be part of a character, which its
    `token` text shows as U+FFFD), else its text's."""
    raw = entry.get("bytes")
    return bytes(raw) if raw is not None else str(entry["token"]).encode()


def entries_text(entries: Iterable[LogprobEntry]) -> str:
    """The text the entries' tokens spell: their bytes joined, then decoded."""
    return b"".join(token_bytes(e) for e in entries).decode("utf-8", errors="replace")


class LegacyLogprobs:
    """One choice's legacy logprobs, taken chunk by chunk (or all at once): each token's
    `text_offset` is its start in the choice's text, counted in characters from `start`.

    Counted from the tokens' bytes, not their `token` texts: a token may hold part of a
    character (its text alone is U+FFFD), and the offset of the next token is where that
    character ends in the text."""

    def __init__(self, start: int = 0) -> None:
        self._offset = start
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def take(self, entries: Iterable[LogprobEntry]) -> CompletionLogprobs:
        tokens: list[str] = []
        logprobs: list[float | None] = []
        tops: list[dict[str, float] | None] = []
        offsets: list[int] = []
        for entry in entries:
            logprob = entry["logprob"]
            tokens.append(entry["token"])
            logprobs.append(logprob)
            tops.append(None if logprob is None else _top_dict(entry))
            offsets.append(self._offset)
            self._offset += len(self._decoder.decode(token_bytes(entry)))
        return CompletionLogprobs(
            tokens=tokens, token_logprobs=logprobs, top_logprobs=tops, text_offset=offsets
        )


def _top_dict(entry: LogprobEntry) -> dict[str, float]:
    """The most likely tokens, then the chosen one where it is not among them (the legacy
    API always includes it: up to logprobs + 1 entries). Two tokens with the same text
    share a key, as in OpenAI's shape."""
    top = {t["token"]: t["logprob"] for t in entry.get("top_logprobs") or ()}
    top.setdefault(entry["token"], entry["logprob"])
    return top


def joined(*parts: CompletionLogprobs) -> CompletionLogprobs:
    """Consecutive runs of one choice (the echoed prompt's, then the generated text's)."""
    return CompletionLogprobs(
        tokens=[t for p in parts for t in p.tokens],
        token_logprobs=[t for p in parts for t in p.token_logprobs],
        top_logprobs=[t for p in parts for t in p.top_logprobs],
        text_offset=[t for p in parts for t in p.text_offset],
    )
