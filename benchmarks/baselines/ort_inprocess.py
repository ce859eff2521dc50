"""(e) FastAPI + in-process onnxruntime: the exported intent v1 graph and its tokenizer in
the API process, each request run in the thread pool (no cross-request batching)."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from tokenizers import Tokenizer

from benchmarks.baselines._model import REPOSITORY

VERSION_DIR = REPOSITORY / "intent" / "1"
names = json.loads((VERSION_DIR / "labels.json").read_text())
tokenizer = Tokenizer.from_file(str(VERSION_DIR / "tokenizer.json"))
tokenizer.enable_truncation(256)
tokenizer.enable_padding()
options = ort.SessionOptions()
options.intra_op_num_threads = 2
session = ort.InferenceSession(
    str(VERSION_DIR / "model.onnx"), options, providers=["CPUExecutionProvider"]
)
app = FastAPI()


class PredictIn(BaseModel):
    inputs: str | list[str]


def run(texts: list[str]) -> list[dict]:
    encodings = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    scores = session.run(["scores"], {"input_ids": ids, "attention_mask": mask})[0]
    best = scores.argmax(1)
    return [{"label": names[i], "score": float(s[i])} for i, s in zip(best, scores, strict=True)]


@app.post("/predict")
async def predict(body: PredictIn) -> dict:
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    return {"predictions": await run_in_threadpool(run, texts)}


@app.get("/health")
async def health() -> dict:
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
