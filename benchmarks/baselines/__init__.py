"""Common tutorial designs, written faithfully, to measure the frontend against.

Each module is a small FastAPI app serving the same `intent` v1 classifier (MiniLM
encoder + the packaged LogisticRegression head) at POST /predict with
{"inputs": "text" | ["text", ...]} -> {"predictions": [{"label", "score"}]}.
They keep the tutorials' shortcuts (a global model loaded at import) on purpose.
"""
