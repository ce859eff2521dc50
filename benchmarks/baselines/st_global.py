"""(c) "Global model in a FastAPI app": sentence-transformers loaded once at import and
called directly inside `async def` (it blocks the event loop, as the tutorials do)."""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from benchmarks.baselines._model import classify, labels, load_reference

encoder, clf = load_reference()
names = labels()
app = FastAPI()


class PredictIn(BaseModel):
    inputs: str | list[str]


@app.post("/predict")
async def predict(body: PredictIn) -> dict:
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    return {"predictions": classify(encoder, clf, names, texts)}


@app.get("/health")
async def health() -> dict:
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
