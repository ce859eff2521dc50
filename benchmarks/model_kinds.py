"""`make bench-kinds`: the new model kinds through the frontend and directly, in one run.

    python -m benchmarks.model_kinds [--seconds 15] [--rounds 3] [--quick]

One embedded Triton that serves only the measured models (`imagenet`, `ner`, `pii`: a
scratch repository of links to model_repository/) and one frontend over it (1 worker).
For each model, 32 concurrent clients send one item per request, closed loop:

- `frontend`: REST `POST /v1/models/<model>/predict` (images as multipart/form-data with
  one `file` part, texts as `{"inputs": text}`), `Cache-Control: no-cache`, so every
  request reaches Triton;
- `direct`: Triton gRPC, the raw item as the model's `IMAGE` / `TEXT` BYTES [1, 1] tensor.

The two paths alternate scenario by scenario, round after round (frontend first in even
rounds, direct first in odd ones), so that a machine that slows down mid-run slows both
alike; the figure is the frontend/direct throughput ratio of each round, median of rounds.
Each scenario also records the average batch Triton formed (the model's
`nv_inference_request_success` / `nv_inference_exec_count` deltas over the scenario).
Images: 16 distinct JPEG / PNG files (256 to 480 px) made in memory from scikit-image's
bundled photographs, no download. Texts: benchmarks.inputs.TEXTS plus a few that carry
names, places and personal data. The build time of the artifacts is not measured here.

Writes benchmarks/reports/<date>_<time>-kinds/{results.json, report.md, kinds.png}.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import math
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import tritonclient.grpc.aio as grpcaio

from export.triton_launcher import EmbeddedTriton, TritonPorts

# Triton's counters are read as the integration tests read them (one parser in the repo).
from procs.triton_metrics import settled_counter

from .inputs import TEXTS
from .loadgen import Call, closed_loop
from .machine import machine
from .targets import Target, start_frontend

MODELS = ("imagenet", "ner", "pii")
PATHS = ("frontend", "direct")
VERSION = "1"  # one version per new model (the contract)
UNITS = {"imagenet": "images/s", "ner": "texts/s", "pii": "texts/s"}
INPUTS = {"imagenet": "IMAGE", "ner": "TEXT", "pii": "TEXT"}
# Every output of the contract: the frontend needs them all (SCORES for top_k), so the
# direct path asks for the same work.
OUTPUTS = {
    "imagenet": ("LABEL", "SCORE", "SCORES", "WIDTH", "HEIGHT"),
    "ner": ("ENTITIES", "NUM_TOKENS", "TRUNCATED"),
    "pii": ("ENTITIES", "NUM_TOKENS", "TRUNCATED"),
}
DESCRIPTIONS = {
    "frontend": "infergate frontend (1 worker) REST -> Triton gRPC, response cache bypassed",
    "direct": "Triton gRPC directly (tritonclient.grpc.aio, 4 channels), raw item as BYTES",
}
ENTITY_TEXTS = [
    "Barack Obama met Angela Merkel in Berlin on 3 May 2016 to talk about NATO.",
    "Apple is looking at buying a U.K. startup for $1 billion, Tim Cook told Reuters.",
    "Please send the invoice to maria.gonzalez@example.com before Friday.",
    "Call John Smith on +1 415 555 0199 or write to 42 Elm Street, Springfield.",
    "My card number is 4111 1111 1111 1111 and it expires in September.",
    "Dr. Priya Natarajan flew from Mumbai to Toronto with Air Canada last Tuesday.",
    "The server at 192.168.10.24 logged in as admin@acme.io at 03:14 on 2024-02-29.",
    "Sophie Martin, 27 rue de la Paix, Paris, tel 01 42 68 53 00, IBAN FR763000600001123456789",
]
HEADROOM = 2  # connection pool = 2 x clients, as RestCaller: the pool never holds a client back


@dataclass(frozen=True)
class Item:
    """One request's input: the bytes Triton receives, and how the frontend is sent them."""

    name: str
    data: bytes
    content_type: str  # image/jpeg, image/png; text/plain for texts


def sample_images() -> list[Item]:
    """16 encoded images from scikit-image's bundled photographs: each source as a JPEG
    (long side 480 px at most) and as a PNG of its centre square at 256 px."""
    from PIL import Image
    from skimage import data

    sources = (
        "chelsea",
        "coffee",
        "astronaut",
        "rocket",
        "hubble_deep_field",
        "immunohistochemistry",
        "retina",
        "colorwheel",
    )
    items = []
    for name in sources:
        photo = Image.fromarray(getattr(data, name)()).convert("RGB")
        scale = min(1.0, 480 / max(photo.size))
        whole = photo.resize(
            (round(photo.width * scale), round(photo.height * scale)), Image.Resampling.BILINEAR
        )
        side = min(photo.size)
        left, top = (photo.width - side) // 2, (photo.height - side) // 2
        square = photo.crop((left, top, left + side, top + side)).resize(
            (256, 256), Image.Resampling.BILINEAR
        )
        for image, fmt, options in ((whole, "JPEG", {"quality": 90}), (square, "PNG", {})):
            buffer = io.BytesIO()
            image.save(buffer, format=fmt, **options)
            suffix = "jpg" if fmt == "JPEG" else "png"
            items.append(
                Item(
                    f"{name}_{image.width}x{image.height}.{suffix}",
                    buffer.getvalue(),
                    f"image/{fmt.lower()}",
                )
            )
    return items


def sample_texts() -> list[Item]:
    return [Item("", text.encode(), "text/plain") for text in [*TEXTS, *ENTITY_TEXTS]]


def items_for(model: str, images: list[Item], texts: list[Item]) -> list[Item]:
    return images if INPUTS[model] == "IMAGE" else texts


class FrontendCaller:
    """aiohttp, as benchmarks.targets.RestCaller (httpx would measure itself here)."""

    def __init__(self, target: Target, concurrency: int) -> None:
        self.session = aiohttp.ClientSession(
            target.url,
            headers={**target.headers, "Cache-Control": "no-cache"},
            connector=aiohttp.TCPConnector(limit=max(concurrency, 1) * HEADROOM),
            timeout=aiohttp.ClientTimeout(total=60),
        )

    async def send(self, model: str, item: Item) -> dict[str, Any]:
        path = f"/v1/models/{model}/predict"
        if INPUTS[model] == "IMAGE":
            # A fresh form per request: aiohttp consumes a FormData once.
            form = aiohttp.FormData()
            form.add_field("file", item.data, filename=item.name, content_type=item.content_type)
            request = self.session.post(path, data=form)
        else:
            request = self.session.post(path, json={"inputs": item.data.decode()})
        async with request as response:
            body = await response.read()
            if response.status >= 400:
                raise RuntimeError(f"HTTP {response.status}: {body[:300].decode(errors='replace')}")
        answer: dict[str, Any] = json.loads(body)
        return answer

    def call(self, model: str, items: list[Item]) -> Call:
        turn = itertools.count()  # round robin over the items, whichever client asks

        async def call(_: int) -> None:
            await self.send(model, items[next(turn) % len(items)])

        return call

    async def close(self) -> None:
        await self.session.close()


class DirectCaller:
    """Triton over gRPC, a few channels shared by the clients (as targets.GrpcCaller)."""

    def __init__(self, url: str) -> None:
        self.clients = [grpcaio.InferenceServerClient(url) for _ in range(4)]

    async def send(self, model: str, item: Item, channel: int = 0) -> Any:
        array = np.array([[item.data]], dtype=object)
        tensor = grpcaio.InferInput(INPUTS[model], list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        return await self.clients[channel % len(self.clients)].infer(
            model,
            [tensor],
            model_version=VERSION,
            outputs=[grpcaio.InferRequestedOutput(o) for o in OUTPUTS[model]],
            client_timeout=60,
        )

    def call(self, model: str, items: list[Item]) -> Call:
        turn = itertools.count()

        async def call(_: int) -> None:
            k = next(turn)
            await self.send(model, items[k % len(items)], k)

        return call

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


def remembering(call: Call, errors: list[str]) -> Call:
    """The same call, keeping the first failure's message (loadgen only counts them)."""

    async def wrapped(i: int) -> None:
        try:
            await call(i)
        except Exception as exc:
            if not errors:
                errors.append(f"{type(exc).__name__}: {exc}"[:400])
            raise

    return wrapped


# ---- pure parts (tests/unit/test_bench_model_kinds.py) ----------------------------------


def average_batch(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    """Requests per execution between two reads of (request_success, exec_count); None
    when Triton ran nothing in between."""
    requests = after[0] - before[0]
    executions = after[1] - before[1]
    if executions <= 0:
        return None
    return round(requests / executions, 2)


def finite(value: float | int | None) -> float | None:
    """A latency, or None where there was none (loadgen's NaN is not JSON)."""
    return None if value is None or math.isnan(value) else float(value)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def summarize(rows: list[dict[str, Any]], models: list[str]) -> dict[str, Any]:
    """Per model and path: medians of the rounds (rps, p50, p99, average batch) and the
    errors summed; per model: the frontend/direct ratios of each round, and their medians.
    A ratio pairs the two paths of the same round only."""
    out: dict[str, Any] = {}
    for model in models:
        entry: dict[str, Any] = {"unit": UNITS.get(model, "requests/s")}
        for path in PATHS:
            mine = [r for r in rows if r["model"] == model and r["path"] == path]
            if not mine:
                continue
            entry[path] = {
                "rps_median": _rounded(_median([r["rps"] for r in mine]), 1),
                "p50_ms_median": _rounded(_median([r["p50_ms"] for r in mine]), 1),
                "p99_ms_median": _rounded(_median([r["p99_ms"] for r in mine]), 1),
                "avg_batch_median": _rounded(_median([r["avg_batch"] for r in mine]), 2),
                "errors": sum(r["errors"] for r in mine),
                "rounds": len(mine),
            }
        rps_ratios: list[float | None] = []
        p99_ratios: list[float | None] = []
        for round_ in sorted({r["round"] for r in rows if r["model"] == model}):
            pair = {r["path"]: r for r in rows if r["model"] == model and r["round"] == round_}
            front, direct = pair.get("frontend"), pair.get("direct")
            if front is None or direct is None:
                continue
            rps_ratios.append(front["rps"] / direct["rps"] if direct["rps"] else None)
            p99_ratios.append(
                front["p99_ms"] / direct["p99_ms"]
                if front["p99_ms"] is not None and direct["p99_ms"]
                else None
            )
        entry["rps_ratio_rounds"] = [_rounded(r, 3) for r in rps_ratios]
        entry["rps_ratio_median"] = _rounded(_median(rps_ratios), 3)
        entry["p99_ratio_median"] = _rounded(_median(p99_ratios), 3)
        out[model] = entry
    return out


def _cell(value: Any) -> str:
    return "—" if value is None else str(value)


def markdown(results: dict[str, Any]) -> list[str]:
    config = results["config"]
    lines = [
        f"{config['concurrency']} concurrent clients, one item per request, "
        f"{config['seconds']} s per scenario, {config['rounds']} interleaved round(s); "
        "medians of rounds; `× direct` = frontend/direct throughput, median of the rounds' "
        "ratios (`kinds.png`).",
        "",
    ]
    for model, entry in results["summary"].items():
        lines += [
            f"## {model}",
            "",
            f"| path | {entry['unit']} | p50 ms | p99 ms | avg batch | errors | × direct |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for path in PATHS:
            row = entry.get(path)
            if row is None:
                continue
            ratio = entry["rps_ratio_median"] if path == "frontend" else 1.0
            lines.append(
                f"| {path} | {_cell(row['rps_median'])} | {_cell(row['p50_ms_median'])} | "
                f"{_cell(row['p99_ms_median'])} | {_cell(row['avg_batch_median'])} | "
                f"{row['errors']} | {_cell(ratio)} |"
            )
        lines.append("")
    first_errors = [r for r in results["rows"] if r.get("first_error")]
    if first_errors:
        lines += ["First error of each scenario that had any:", ""]
        lines += [
            f"- {r['model']} {r['path']} round {r['round']}: `{r['first_error']}`"
            for r in first_errors
        ]
        lines.append("")
    lines.append("Paths: " + "; ".join(f"`{p}` = {d}" for p, d in DESCRIPTIONS.items()) + ".")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.model_kinds", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="per scenario")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s, 1 round")
    parser.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated, of " + ", ".join(MODELS)
    )
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/reports"))
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 3.0, 1
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown or not args.models:
        parser.error(f"--models: {', '.join(unknown) or 'none given'}; choose from {MODELS}")
    if args.seconds <= 0 or args.rounds < 1 or args.concurrency < 1:
        parser.error("--seconds, --rounds and --concurrency must be positive")
    args.warmup = 1.0 if args.quick else 3.0
    return args


def path_order(round_: int) -> tuple[str, ...]:
    """frontend first in even rounds, direct first in odd ones (A B, B A, ...)."""
    return PATHS if round_ % 2 == 0 else PATHS[::-1]


# ---- the run --------------------------------------------------------------------------


def scratch_repository(repository: Path, models: list[str]) -> Path:
    """A directory of links to just the measured models (and a gpu build's `<name>_core`),
    so that Triton does not load chat, embed and the rest on a small machine."""
    missing = [m for m in models if not (repository / m / "config.pbtxt").is_file()]
    if missing:
        raise SystemExit(
            f"{', '.join(missing)} not in {repository}: build them first (`make models`)"
        )
    scratch = Path(tempfile.mkdtemp(prefix="infergate-kinds-"))
    for name in models:
        for entry in (name, f"{name}_core"):
            if (repository / entry).is_dir():
                (scratch / entry).symlink_to((repository / entry).resolve())
    return scratch


def counters(metrics_url: str, model: str) -> tuple[float, float]:
    return (
        settled_counter(metrics_url, "nv_inference_request_success", model, VERSION),
        settled_counter(metrics_url, "nv_inference_exec_count", model, VERSION),
    )


async def _load(
    triton: EmbeddedTriton,
    target: Target,
    model: str,
    path: str,
    items: list[Item],
    concurrency: int,
    seconds: float,
) -> tuple[dict[str, Any], str | None]:
    caller = (
        FrontendCaller(target, concurrency) if path == "frontend" else DirectCaller(triton.grpc_url)
    )
    errors: list[str] = []
    try:
        result = await closed_loop(
            remembering(caller.call(model, items), errors), concurrency, seconds
        )
    finally:
        await caller.close()
    return result.summary(), (errors[0] if errors else None)


def scenario(
    triton: EmbeddedTriton,
    target: Target,
    model: str,
    path: str,
    items: list[Item],
    args: argparse.Namespace,
    seconds: float,
) -> dict[str, Any]:
    before = counters(triton.metrics_url, model)
    summary, first_error = asyncio.run(
        _load(triton, target, model, path, items, args.concurrency, seconds)
    )
    after = counters(triton.metrics_url, model)
    return {
        "model": model,
        "path": path,
        "requests": summary["requests"],
        "errors": summary["errors"],
        "seconds": summary["seconds"],
        "rps": summary["rps"],
        "p50_ms": finite(summary["p50_ms"]),
        "p95_ms": finite(summary["p95_ms"]),
        "p99_ms": finite(summary["p99_ms"]),
        "avg_batch": average_batch(before, after),
        "triton_requests": after[0] - before[0],
        "triton_executions": after[1] - before[1],
        "first_error": first_error,
    }


async def _preflight(triton: EmbeddedTriton, target: Target, model: str, item: Item) -> None:
    """One request per path, its answer checked: a path that is broken fails here, with
    the reason, rather than as a scenario of nothing but errors."""
    front = FrontendCaller(target, 1)
    direct = DirectCaller(triton.grpc_url)
    try:
        answer = await front.send(model, item)
        prediction = (answer.get("predictions") or [{}])[0]
        wanted = "label" if INPUTS[model] == "IMAGE" else "entities"
        if wanted not in prediction:
            raise RuntimeError(f"frontend {model}: no {wanted!r} in its answer: {answer}")
        result = await direct.send(model, item)
        for name in OUTPUTS[model]:
            if result.as_numpy(name) is None:
                raise RuntimeError(f"Triton {model}: output {name} missing")
    finally:
        await front.close()
        await direct.close()


def _versions() -> dict[str, str]:
    found = {}
    for dist in ("aiohttp", "pillow", "scikit-image", "spacy", "numpy"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "absent"
    return found


def plot(out: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    models = list(summary)
    fig, axes = plt.subplots(2, len(models), figsize=(3.6 * len(models), 6.5), squeeze=False)
    for k, model in enumerate(models):
        entry = summary[model]
        present = [p for p in PATHS if p in entry]
        top, bottom = axes[0][k], axes[1][k]
        top.bar(present, [entry[p]["rps_median"] or 0 for p in present], color=["C0", "C1"])
        ratio = entry["rps_ratio_median"]
        top.set_title(f"{model}" + (f"  (frontend {ratio:.2f}× direct)" if ratio else ""))
        top.set_ylabel(entry["unit"])
        width = 0.38
        for j, metric in enumerate(("p50_ms_median", "p99_ms_median")):
            bottom.bar(
                [i + (j - 0.5) * width for i in range(len(present))],
                [entry[p][metric] or 0 for p in present],
                width,
                label=metric.split("_")[0],
            )
        bottom.set_xticks(range(len(present)), present)
        bottom.set_ylabel("latency (ms)")
        bottom.legend(fontsize=8)
    fig.suptitle(
        f"{results['config']['concurrency']} clients, one item per request (medians of rounds)"
    )
    fig.tight_layout()
    fig.savefig(out / "kinds.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    images, texts = sample_images(), sample_texts()
    repository = scratch_repository(args.repository, args.models)
    rows: list[dict[str, Any]] = []
    target: Target | None = None
    triton = EmbeddedTriton(repository, TritonPorts.free()).start(300)
    try:
        target = start_frontend(
            triton.grpc_url, repository, workers=1, triton_admin_key=triton.admin_key
        )
        for model in args.models:
            items = items_for(model, images, texts)
            asyncio.run(_preflight(triton, target, model, items[0]))
            for path in PATHS:  # warm-up, not recorded
                scenario(triton, target, model, path, items, args, args.warmup)
        for round_ in range(args.rounds):
            for model in args.models:
                items = items_for(model, images, texts)
                for path in path_order(round_):
                    row = {
                        "round": round_,
                        **scenario(triton, target, model, path, items, args, args.seconds),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        if target is not None:
            target.stop()
        triton.stop()
        shutil.rmtree(repository, ignore_errors=True)
    results: dict[str, Any] = {
        "config": {
            "command": "python -m benchmarks.model_kinds" + (" --quick" if args.quick else ""),
            "seconds": args.seconds,
            "rounds": args.rounds,
            "warmup_seconds": args.warmup,
            "concurrency": args.concurrency,
            "models": args.models,
            "wall_seconds": round(time.time() - started, 1),
        },
        "machine": {**machine(), "more_packages": _versions()},
        "descriptions": DESCRIPTIONS,
        "images": [
            {"name": i.name, "bytes": len(i.data), "content_type": i.content_type} for i in images
        ],
        "texts": len(texts),
        "rows": rows,
        "summary": summarize(rows, args.models),
    }
    out = args.out / (time.strftime("%Y-%m-%d_%H%M%S") + "-kinds")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "report.md").write_text(
        "# New model kinds: frontend vs direct Triton\n\n" + "\n".join(markdown(results)) + "\n"
    )
    plot(out, results)
    print("\n".join(markdown(results)))
    print(f"report: {out}")


if __name__ == "__main__":
    main()
