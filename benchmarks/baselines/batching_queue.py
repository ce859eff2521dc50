"""(d) "asyncio batching queue": requests are queued; a background task takes up to 32
items or waits 50 ms, runs the model on the batch in a worker thread (offloaded), and
resolves each request's future."""

from __future__ import annotations

import asyncio
import sys
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from benchmarks.baselines._model import classify, labels, load_reference

MAX_BATCH = 32
MAX_WAIT_S = 0.050

encoder, clf = load_reference()
names = labels()
queue: asyncio.Queue[tuple[str, asyncio.Future]] = asyncio.Queue()


async def batcher() -> None:
    loop = asyncio.get_running_loop()
    while True:
        items = [await queue.get()]
        deadline = loop.time() + MAX_WAIT_S
        while len(items) < MAX_BATCH:
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            try:
                items.append(await asyncio.wait_for(queue.get(), timeout))
            except TimeoutError:
                break
        texts = [text for text, _ in items]
        try:
            results = await loop.run_in_executor(None, classify, encoder, clf, names, texts)
        except Exception as exc:
            for _, future in items:
                future.set_exception(exc)
            continue
        for (_, future), result in zip(items, results, strict=True):
            future.set_result(result)


@asynccontextmanager
async def lifespan(_: FastAPI):
    task = asyncio.create_task(batcher())
    yield
    task.cancel()


app = FastAPI(lifespan=lifespan)


class PredictIn(BaseModel):
    inputs: str | list[str]


@app.post("/predict")
async def predict(body: PredictIn) -> dict:
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    loop = asyncio.get_running_loop()
    futures = []
    for text in texts:
        future: asyncio.Future = loop.create_future()
        await queue.put((text, future))
        futures.append(future)
    return {"predictions": list(await asyncio.gather(*futures))}


@app.get("/health")
async def health() -> dict:
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
