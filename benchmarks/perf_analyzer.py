"""Triton's own load generator, `perf_analyzer` from tritonclient 2.51.0 (needs Debian's
libb64-0d and the nvidia-cuda-runtime-cu12 wheel's libcudart on LD_LIBRARY_PATH)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .inputs import TEXTS


def _cudart_dir() -> str | None:
    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(next(iter(spec.submodule_search_locations))) / "lib")


def binary() -> str | None:
    candidate = Path(sys.executable).parent / "perf_analyzer"
    return str(candidate) if candidate.exists() else shutil.which("perf_analyzer")


def run(
    http_url: str, concurrency: int, window_ms: int, *, headers: dict[str, str] | None = None
) -> dict:
    """Over Triton's HTTP port: perf_analyzer reads the model's config, a restricted API,
    and 2.51 can send a header (`headers`: the launch's admin key) only over HTTP (its -H
    is ignored for gRPC, and it has no gRPC metadata option)."""
    exe = binary()
    cudart = _cudart_dir()
    if exe is None or cudart is None:
        return {"error": "perf_analyzer or nvidia-cuda-runtime-cu12 is not installed"}
    work = Path(tempfile.mkdtemp(prefix="perf-analyzer-"))
    data = work / "input.json"
    data.write_text(json.dumps({"data": [{"TEXT": [t]} for t in TEXTS]}))
    out = work / "result.csv"
    cmd = [
        exe,
        "-m",
        "intent",
        "-x",
        "1",
        "-i",
        "http",
        "-u",
        http_url.removeprefix("http://"),
        "-b",
        "1",
        "--shape",
        "TEXT:1",
        "--input-data",
        str(data),
        "--concurrency-range",
        f"{concurrency}",
        "--measurement-interval",
        str(window_ms),
        "--stability-percentage",
        "25",
        "--max-trials",
        "6",
        "-f",
        str(out),
    ]
    for name, value in (headers or {}).items():
        cmd += ["-H", f"{name}:{value}"]
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": os.pathsep.join(
            p for p in (cudart, os.environ.get("LD_LIBRARY_PATH", "")) if p
        ),
    }
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"perf_analyzer failed to run: {exc}"}
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": "perf_analyzer failed: " + " | ".join(tail)}
    with out.open() as handle:
        row = next(csv.DictReader(handle))
    shutil.rmtree(work, ignore_errors=True)
    return {
        "rps": round(float(row["Inferences/Second"]), 1),
        "p50_ms": round(float(row["p50 latency"]) / 1000, 1),
        "p95_ms": round(float(row["p95 latency"]) / 1000, 1),
        "p99_ms": round(float(row["p99 latency"]) / 1000, 1),
    }
