"""Triton python-backend model `summarize` (copied into the repository as model.py).

Built on two served models, called through BLS: `embed` (extractive: sentence vectors)
and the decoupled `chat` (abstractive: greedy generation). The work is in
summarize_pipeline.py; this file only turns its two callables into BLS requests and the
callees' errors into this model's:
- `embed` failing, or `chat` failing with anything but the two below: INTERNAL with the
  callee's message (for `embed`, the whole batch: it is one call);
- `chat` refusing (`invalid: ...`, e.g. a prompt over its limit): INVALID_ARG, for the
  request that holds that text only;
- `chat` full (`overloaded: ...`): UNAVAILABLE for that request, which may retry.
The kind is read from the message's prefix: Triton 2.51 hands a BLS caller every error of
a decoupled callee as INTERNAL (measured: chat's INVALID_ARG arrived with code INTERNAL),
and chat_model.py puts the kind first for callers that see only the text.

Concurrency without threads: `exec(decoupled=True)` returns once the callee's first
response is there, and `chat` answers at once when it admits a request (measured: 2-7 ms,
against 1 s of generation). So the pipeline starts up to `concurrency` generations
from this thread and then reads their streams one by one; they run together in chat's
in-flight batch meanwhile (measured with a stand-in decoupled model, 4 generations of
1 s each: 1.03 s, against 4.13 s one after another; with the real chat on 2 shared cores,
4 texts of 48 tokens: 7.6 s in one request, 15.0 s as 4 requests, the same summaries;
chat's decoding is CPU-bound there, so 2x, not 4x). A thread pool calling `exec` was
tried first and dropped: the stub crashed ("double free or corruption", then "Stub
process is not healthy") in 3 of 4 runs of 40-60 requests with 2 to 8 threads (once after
21 requests of 2 threads); 60 requests of 8 generations each started from this thread ran
clean at first, but under the integration tests' load 4 interleaved streams crashed the
instance too (a reference-count error on the string outputs, then malloc_consolidate) in
3 of 6 runs, and Triton 2.51 never restarts a crashed stub. So `concurrency` is 1 by
default (the built config): each stream is read to its end before the next starts
(20 of 20 batched runs clean, about 1.5x slower than 4); the option stays for a backend
where interleaving holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

# The python-backend stub ignores PYTHONPATH; the embedded launcher names the venv here.
for _path in os.environ.get("INFERGATE_PYTHONPATH", "").split(os.pathsep):
    if _path and _path not in sys.path:
        sys.path.append(_path)
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from batch_model import BatchCancelled, BatchedModel  # noqa: E402
from summarize_pipeline import SummarizePipeline  # noqa: E402
from summarize_prompt import ChatFailure, Generation, Messages, Prompt  # noqa: E402

_CHAT_OUTPUTS = ["TEXT", "PROMPT_TOKENS", "COMPLETION_TOKENS", "FINISH_REASON"]
_CODES = {"invalid": "INVALID_ARG", "overloaded": "UNAVAILABLE", "internal": "INTERNAL"}


def chat_failure(message: str) -> ChatFailure:
    """A chat error by the kind that leads its message ("invalid: ..."); the rest is
    internal."""
    kind = message.split(":", 1)[0].strip()
    return ChatFailure(kind if kind in ("invalid", "overloaded") else "internal", message)


class EmbedClient:
    """`embed` through BLS: texts -> (unit vectors, NUM_TOKENS)."""

    def __init__(self, pb: Any, model: str):
        self.pb, self.model = pb, model

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        pb = self.pb
        batch = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
        request = pb.InferenceRequest(
            model_name=self.model,
            requested_output_names=["EMBEDDING", "NUM_TOKENS"],
            inputs=[pb.Tensor("TEXT", batch)],
        )
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"the {self.model} model failed: {response.error().message()}")
        vectors = pb.get_output_tensor_by_name(response, "EMBEDDING").as_numpy()
        tokens = pb.get_output_tensor_by_name(response, "NUM_TOKENS").as_numpy()
        return vectors, tokens.reshape(-1)


class ChatCall:
    """One generation `chat` has admitted; its stream is read by `result`."""

    def __init__(self, pb: Any, model: str, responses: Any):
        self.pb, self.model, self.responses = pb, model, responses
        self.ended = False

    def result(self, cancelled: Any) -> Generation:
        pb = self.pb
        parts: list[str] = []
        prompt = completion = 0
        reason = ""
        for response in self.responses:
            if response.has_error():
                self.ended = True
                raise chat_failure(response.error().message())
            if not response.output_tensors():
                continue  # a final flag sent on its own, without outputs
            # Every response carries every output: the admission (PROMPT_TOKENS, no
            # text), one per token (its new text), the last (FINISH_REASON, held text).
            parts.append(pb.get_output_tensor_by_name(response, "TEXT").as_numpy()[0].decode())
            prompt = int(pb.get_output_tensor_by_name(response, "PROMPT_TOKENS").as_numpy()[0])
            completion = int(
                pb.get_output_tensor_by_name(response, "COMPLETION_TOKENS").as_numpy()[0]
            )
            reason = pb.get_output_tensor_by_name(response, "FINISH_REASON").as_numpy()[0].decode()
            if not reason and cancelled():
                self.cancel()
                raise BatchCancelled("cancelled while the chat model was generating")
        self.ended = True
        if not reason:
            raise ChatFailure("internal", f"the {self.model} model ended without a finish reason")
        return "".join(parts), prompt, completion

    def cancel(self) -> None:
        """Stops the stream where this python backend can (ResponseIterator.cancel, in
        newer releases) and reads it to its end (chat ends a cancelled sequence within one
        step). Triton 2.51's iterator has no cancel (measured: AttributeError): there the
        generation runs on in chat to its max_tokens and its responses are dropped;
        reading them would hold this instance until then."""
        if self.ended:
            return
        self.ended = True
        cancel = getattr(self.responses, "cancel", None)
        if cancel is None:
            return
        with contextlib.suppress(Exception):
            cancel()
            for _ in self.responses:
                pass


class ChatClient:
    """`chat` through BLS, greedy: generate(messages, max_tokens) -> ChatCall."""

    def __init__(self, pb: Any, model: str):
        self.pb, self.model = pb, model

    def __call__(self, messages: Messages, max_tokens: int) -> ChatCall:
        pb = self.pb

        def one(name: str, value: Any, dtype: Any) -> Any:
            return pb.Tensor(name, np.array([value], dtype=dtype))

        payload = json.dumps(messages, ensure_ascii=False).encode("utf-8")
        request = pb.InferenceRequest(
            model_name=self.model,
            requested_output_names=_CHAT_OUTPUTS,
            inputs=[
                one("MESSAGES", payload, np.object_),
                one("MAX_TOKENS", max_tokens, np.int32),
                one("TEMPERATURE", 0.0, np.float32),
                one("SEED", 0, np.int64),
            ],
        )
        try:
            responses = request.exec(decoupled=True)
        except Exception as exc:  # the callee is not there, or not ready
            raise ChatFailure("internal", f"the {self.model} model failed: {exc}") from exc
        return ChatCall(pb, self.model, responses)


def token_counter(repository: Path, params: dict[str, str]) -> Any:
    """The chat model's own tokenizer (from its version folder in the same repository),
    or None: the pipeline then bounds tokens by UTF-8 bytes."""
    path = repository / params.get("chat_model", "chat") / params.get("chat_version", "1")
    path = path / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    # utf-8 named: the Triton stub's default encoding is ASCII.
    tokenizer = Tokenizer.from_str(path.read_text(encoding="utf-8"))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


class TritonPythonModel(BatchedModel):
    input_name = "TEXT"

    def make_pipeline(self, version_dir: Path, params: dict[str, str], core: Any) -> Any:
        document = json.loads((version_dir / "summarize.json").read_text(encoding="utf-8"))
        return SummarizePipeline(
            params,
            EmbedClient(self.pb, params.get("embed_model", "embed")),
            ChatClient(self.pb, params.get("chat_model", "chat")),
            prompt=Prompt.from_json(document["prompt"]),
            count_tokens=token_counter(version_dir.parent.parent, params),
        )

    def _execute(self, requests: list[Any]) -> list[Any]:
        """The base's, then the rows whose chat call failed fail their own request: rows
        follow the requests that got a result, in order, one per TEXT element."""
        self.pipeline.failures = {}  # a batch that reaches no run() has none
        responses = super()._execute(requests)
        failures = self.pipeline.failures
        if not failures:
            return responses
        pb = self.pb
        row = 0
        for i, (request, response) in enumerate(zip(requests, responses, strict=True)):
            if response.has_error():
                continue
            n = pb.get_input_tensor_by_name(request, self.input_name).as_numpy().size
            failed = [(r - row, failures[r]) for r in range(row, row + n) if r in failures]
            row += n
            if failed:
                where, failure = failed[0]
                code = getattr(pb.TritonError, _CODES.get(failure.code, "INTERNAL"))
                message = f"{self.input_name}[{where}]: summarizing it failed: {failure.message}"
                responses[i] = pb.InferenceResponse(error=pb.TritonError(message, code))
        return responses
