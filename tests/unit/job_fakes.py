"""A task adapter for the job runner's tests: predictions computed from the text alone (so
a test knows every row's answer), and faults on demand: slow (held until released), a
retryable failure the next N times, a refused text.

Its sub-batches go through the real `adapters.predict_in_batches`, so a refusal takes the
same path as the services' (an InputInvalid naming `inputs.i`, the rest sent again)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from frontend.db.jobs import JobRow
from frontend.errors import InfergateError, InputInvalid, Overloaded
from frontend.jobs.adapters import predict_in_batches
from frontend.jobs.rows import Row, RowError

REFUSED = "REFUSE"  # a text holding this is refused by the "model"


def prediction(text: str) -> dict[str, Any]:
    return {"label": "long" if len(text) > 12 else "short", "chars": len(text), "top": [text]}


class FakeAdapter:
    csv_columns = ("label", "chars", "top")

    def __init__(self, *, max_rows: int = 256, batch_rows: int = 3) -> None:
        self.max_rows = max_rows
        self.batch_rows = batch_rows
        self.calls: list[list[int]] = []  # the row numbers of each predict call
        self.sent: list[list[str]] = []  # the texts of each sub-batch sent to the "model"
        self.failures = 0
        self.error: type[InfergateError] = Overloaded
        self.entered = asyncio.Event()  # a predict call has started
        self._held = 0
        self._release = asyncio.Event()

    def fail(self, times: int, error: type[InfergateError] = Overloaded) -> None:
        self.failures, self.error = times, error

    def hold(self, calls: int = 1) -> None:
        """The next `calls` predict calls wait until `release()`."""
        self._held, self.entered = calls, asyncio.Event()
        self._release = asyncio.Event()

    def release(self) -> None:
        self._release.set()

    async def predict(
        self, job: JobRow, rows: Sequence[Row], request_id: str, in_flight: asyncio.Semaphore
    ) -> list[dict[str, Any] | RowError]:
        self.calls.append([row.number for row in rows])
        self.entered.set()
        if self._held:
            self._held -= 1
            await self._release.wait()
        if self.failures:
            self.failures -= 1
            raise self.error("the fake model is busy")
        return await predict_in_batches(
            rows, self._call, batch_rows=self.batch_rows, max_chars=10_000, in_flight=in_flight
        )

    async def _call(self, texts: list[str]) -> list[dict[str, Any]]:
        self.sent.append(list(texts))
        refused = [i for i, text in enumerate(texts) if REFUSED in text]
        if refused:
            raise InputInvalid(
                f"inputs.{refused[0]}: the model refused this text",
                details=[
                    {"loc": ["body", "inputs", i], "msg": "the model refused this text"}
                    for i in refused
                ],
            )
        return [prediction(text) for text in texts]

    def csv_values(self, prediction: dict[str, Any]) -> list[Any]:
        return [prediction[name] for name in self.csv_columns]
