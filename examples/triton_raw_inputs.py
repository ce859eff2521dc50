"""Call the embedded Triton directly over gRPC with raw inputs: text for `ner`, `pii` and
`summarize`, the encoded image file for `imagenet`. No tokenizer, no image decoding and no
preprocessing on this side: Triton does all of it.

.venv/bin/python examples/triton_raw_inputs.py --url 127.0.0.1:8001 [--image cat.jpg]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient


def _bytes_input(name: str, items: list[bytes]) -> grpcclient.InferInput:
    batch = np.array([[item] for item in items], dtype=object)  # shape [n, 1]
    tensor = grpcclient.InferInput(name, list(batch.shape), "BYTES")
    tensor.set_data_from_numpy(batch)
    return tensor


def entities(client, model: str, texts: list[str]) -> list[list[dict]]:
    result = client.infer(
        model,
        [_bytes_input("TEXT", [t.encode("utf-8") for t in texts])],
        outputs=[grpcclient.InferRequestedOutput("ENTITIES")],
        client_timeout=30,  # always a deadline
    )
    return [json.loads(row) for row in result.as_numpy("ENTITIES").reshape(-1)]


def classify_image(client, image: bytes) -> tuple[str, float, tuple[int, int]]:
    """The encoded file as it is on disk (JPEG, PNG, WebP or GIF)."""
    result = client.infer(
        "imagenet",
        [_bytes_input("IMAGE", [image])],
        outputs=[grpcclient.InferRequestedOutput(n) for n in ("LABEL", "SCORE", "WIDTH", "HEIGHT")],
        client_timeout=30,
    )
    label = result.as_numpy("LABEL").reshape(-1)[0].decode()
    size = (int(result.as_numpy("WIDTH").reshape(-1)[0]), int(result.as_numpy("HEIGHT")[0, 0]))
    return label, float(result.as_numpy("SCORE").reshape(-1)[0]), size


def summarize(client, text: str, sentences: int = 2) -> str:
    count = grpcclient.InferInput("MAX_SENTENCES", [1, 1], "INT32")
    count.set_data_from_numpy(np.array([[sentences]], dtype=np.int32))
    result = client.infer(
        "summarize",
        [_bytes_input("TEXT", [text.encode("utf-8")]), count],
        outputs=[grpcclient.InferRequestedOutput("SUMMARY")],
        client_timeout=60,
    )
    return result.as_numpy("SUMMARY").reshape(-1)[0].decode("utf-8")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="127.0.0.1:8001")
    parser.add_argument("--image", type=Path, help="an image file (default: a sample cat)")
    args = parser.parse_args()
    client = grpcclient.InferenceServerClient(args.url)
    text = "Ada Lovelace met Charles Babbage in London on 5 June 1833."
    print("ner:", [(e["text"], e["label"]) for e in entities(client, "ner", [text])[0]])
    pii = "Contact Jane Doe at jane.doe@example.com or 415-555-0132."
    print("pii:", [(e["text"], e["label"]) for e in entities(client, "pii", [pii])[0]])
    if args.image is None:
        from sample_images import write  # the scikit-image sample, written next to it

        args.image = write(Path(".infergate/samples"))[0]
    print("imagenet:", classify_image(client, args.image.read_bytes()))
    story = (
        "The city council met on Tuesday to discuss the new park. Residents asked for more "
        "trees and a playground. The budget allows for both if the fountain is dropped. "
        "A vote is planned for next month. Most members said they support the plan."
    )
    print("summarize:", summarize(client, story))


if __name__ == "__main__":
    main()
