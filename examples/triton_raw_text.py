"""Call the embedded Triton directly over gRPC with raw text: no tokenizer on this side.

.venv/bin/python examples/triton_raw_text.py --url 127.0.0.1:8001
"""

from __future__ import annotations

import argparse

import numpy as np
import tritonclient.grpc as grpcclient


def classify(client, model: str, texts: list[str], version: str = "") -> list[tuple[str, float]]:
    batch = np.array([[t.encode("utf-8")] for t in texts], dtype=object)  # shape [n, 1]
    text = grpcclient.InferInput("TEXT", list(batch.shape), "BYTES")
    text.set_data_from_numpy(batch)
    outputs = [grpcclient.InferRequestedOutput(n) for n in ("LABEL", "SCORE")]
    result = client.infer(
        model, [text], model_version=version, outputs=outputs, client_timeout=10
    )  # always a deadline
    labels = [x.decode() for x in result.as_numpy("LABEL").reshape(-1)]
    return list(zip(labels, result.as_numpy("SCORE").reshape(-1).tolist(), strict=True))


def embed(client, texts: list[str]) -> np.ndarray:
    batch = np.array([[t.encode("utf-8")] for t in texts], dtype=object)
    text = grpcclient.InferInput("TEXT", list(batch.shape), "BYTES")
    text.set_data_from_numpy(batch)
    result = client.infer(
        "embed", [text], outputs=[grpcclient.InferRequestedOutput("EMBEDDING")], client_timeout=10
    )
    return result.as_numpy("EMBEDDING")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="127.0.0.1:8001")
    args = parser.parse_args()
    client = grpcclient.InferenceServerClient(args.url)
    texts = ["I want to talk to a real person", "what's the weather in Paris tomorrow?"]
    for version in ("1", "2"):
        print(f"intent v{version}:", classify(client, "intent", texts, version))
    print("sentiment:", classify(client, "sentiment", ["What a wonderful film!", "Dull and slow."]))
    vectors = embed(client, ["a sentence to embed"])
    print("embed:", vectors.shape, f"norm={np.linalg.norm(vectors[0]):.4f}")


if __name__ == "__main__":
    main()
