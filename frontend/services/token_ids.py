"""Token ids to text, for /v1/embeddings: OpenAI's API takes an input as its token ids,
and the embedding models here take text. The ids are read as the model version's own
tokenizer numbers them (its tokenizer.json in the repository's version directory, the one
the model tokenizes with) and decoded; the model then tokenizes the text again.

Ids of another tokenizer decode to other words: a client that counts tokens with its own
tokenizer (LangChain's OpenAIEmbeddings does, with tiktoken, unless
check_embedding_ctx_length=False) should send text to this server.

Decoding runs in a worker thread (a tokenizer call holds the CPU, not the event loop); the
tokenizer is loaded once per file version (its path and modification time) and kept.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from pathlib import Path
from typing import Final

from tokenizers import Tokenizer

from ..errors import InvalidRequest

TOKENIZER_FILE: Final = "tokenizer.json"


@lru_cache(maxsize=16)
def _tokenizer(path: Path, modified_ns: int) -> Tokenizer:
    # modified_ns is part of the key only: a rebuilt model's new file is loaded anew.
    return Tokenizer.from_file(str(path))


def decode_in_thread(version_dir: Path, model: str, ids: list[list[int]], one: bool) -> list[str]:
    """`ids` decoded with the tokenizer in `version_dir` (special tokens dropped: the
    model adds its own). `one`: the request sent a single list (errors name `input`, not
    `input.0`)."""
    path = version_dir / TOKENIZER_FILE
    try:
        modified = path.stat().st_mtime_ns
    except OSError:
        raise InvalidRequest(
            f"input: model {model!r} takes text only (it has no tokenizer to read ids with)",
            details=[{"loc": ["body", "input"], "msg": "token ids are not supported"}],
            param="input",
        ) from None
    tokenizer = _tokenizer(path, modified)
    vocabulary = tokenizer.get_vocab_size(with_added_tokens=True)
    for i, row in enumerate(ids):
        for j, token in enumerate(row):
            if token >= vocabulary:
                loc = ["body", "input", *(() if one else (i,)), j]
                raise InvalidRequest(
                    f"input: token id {token} is outside model {model!r}'s vocabulary "
                    f"(ids 0 to {vocabulary - 1})",
                    details=[{"loc": loc, "msg": f"at most {vocabulary - 1}"}],
                    param="input",
                )
    return tokenizer.decode_batch(ids, skip_special_tokens=True)


async def decode_token_ids(
    version_dir: Path, model: str, ids: list[list[int]], one: bool
) -> list[str]:
    return await asyncio.to_thread(decode_in_thread, version_dir, model, ids, one)
