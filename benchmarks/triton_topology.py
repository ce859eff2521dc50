"""Fused vs split raw-text topology on the CPU target, measured side by side in one run.

fused: one python model tokenizes, runs the ONNX core in-process and post-processes (what
       `export build --target cpu` generates).
split: a python front tokenizes / post-processes and calls a separate core model through
       BLS (the shape of the gpu target and of an ensemble: one extra Triton hop).

    .venv/bin/python -m benchmarks.triton_topology --seconds 15 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from export.triton_launcher import EmbeddedTriton, TritonPorts

from .loadgen import closed_loop
from .targets import GrpcCaller

HERE = Path(__file__).parent


def fused_repository(base: Path, into: Path) -> Path:
    shutil.copytree(base / "intent", into / "intent")
    return into


def split_repository(base: Path, into: Path) -> Path:
    shutil.copytree(base / "intent", into / "intent")
    path = into / "intent" / "config.pbtxt"
    front = text_format.Parse(path.read_text(), mc.ModelConfig())
    front.parameters["core_model"].string_value = "intent_core"
    path.write_text(text_format.MessageToString(front))
    core = mc.ModelConfig(name="intent_core", backend="python", max_batch_size=front.max_batch_size)
    core.version_policy.CopyFrom(front.version_policy)
    for name in ("input_ids", "attention_mask"):
        core.input.add(name=name, data_type=mc.TYPE_INT64, dims=[-1])
    scores = next(o for o in front.output if o.name == "SCORES")
    core.output.add(name="scores", data_type=mc.TYPE_FP32, dims=list(scores.dims))
    core.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=2)
    core.dynamic_batching.SetInParent()
    (into / "intent_core").mkdir()
    (into / "intent_core" / "config.pbtxt").write_text(text_format.MessageToString(core))
    for version in front.version_policy.specific.versions:
        vdir = into / "intent_core" / str(version)
        vdir.mkdir()
        shutil.copy2(HERE / "onnx_core_model.py", vdir / "model.py")
        (vdir / "model.onnx").hardlink_to(into / "intent" / str(version) / "model.onnx")
    return into


def _batch_counters(server: EmbeddedTriton) -> tuple[float, float]:
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    count = exec_count = 0.0
    for line in text.splitlines():
        if line.startswith('nv_inference_count{model="intent",version="1"}'):
            count = float(line.split()[-1])
        if line.startswith('nv_inference_exec_count{model="intent",version="1"}'):
            exec_count = float(line.split()[-1])
    return count, exec_count


async def _measure(server: EmbeddedTriton, concurrency: int, seconds: float) -> dict:
    caller = GrpcCaller(server.grpc_url)
    count0, exec0 = _batch_counters(server)
    result = await closed_loop(caller.classify(1), concurrency, seconds)
    count1, exec1 = _batch_counters(server)
    await caller.close()
    summary = result.summary()
    summary["avg_batch"] = round((count1 - count0) / max(exec1 - exec0, 1), 1)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repository", default="model_repository")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    base = Path(args.repository)
    work = Path(tempfile.mkdtemp(prefix="topology-"))
    repos = {
        "fused": fused_repository(base, work / "fused"),
        "split": split_repository(base, work / "split"),
    }
    servers = {
        name: EmbeddedTriton(repo, TritonPorts.free()).start(180) for name, repo in repos.items()
    }
    rows: list[dict] = []
    try:
        for server in servers.values():  # warm-up, not recorded
            asyncio.run(_measure(server, args.concurrency, 3))
        for round_ in range(args.rounds):  # interleaved: A B A B
            for name, server in servers.items():
                row = {
                    "topology": name,
                    "round": round_,
                    **asyncio.run(_measure(server, args.concurrency, args.seconds)),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    best = {
        n: max((r for r in rows if r["topology"] == n), key=lambda r: r["rps"]) for n in servers
    }
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "concurrency": args.concurrency,
        "rows": rows,
        "split_over_fused_rps": round(best["split"]["rps"] / best["fused"]["rps"], 3),
    }
    out = Path(args.out) / time.strftime("%Y-%m-%d")
    out.mkdir(parents=True, exist_ok=True)
    (out / "triton_topology.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("concurrency", "split_over_fused_rps")}))


if __name__ == "__main__":
    main()
