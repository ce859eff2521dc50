"""`make bench-jobs` (also run by `make bench`): batch jobs, measured side by side.

    python -m benchmarks.jobs            # 50 000-row jobs, 2 rounds, 30 s load windows
    python -m benchmarks.jobs --quick    # 5 000 rows, 1 round, 10 s windows

(a) Throughput: an `intent` job of N rows through the frontend (the in-process
executor, the embedded default) against the same rows sent straight to Triton with
`tritonclient.grpc.aio` in requests of `jobs.triton_batch_rows` rows at the same number
of requests in flight (`jobs.triton_requests_in_flight`), interleaved round by round;
also the all-out direct figure (4 requests in flight), for honesty about what the bound
leaves unused.
(b) Fairness: the online p99 of single-text predicts at 8 clients for S seconds without a
job, then with a large job running, interleaved twice.

Writes benchmarks/results/<date>_<time>-jobs/{results.json, report.md, jobs.png}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc.aio as grpcaio

from export.triton_launcher import EmbeddedTriton, TritonPorts
from frontend.job_settings import JobSettings

from .inputs import TEXTS
from .loadgen import LoadResult, closed_loop, open_loop
from .machine import machine
from .targets import RestCaller, Target, start_frontend

ALL_OUT = 4
CHUNK_ROWS = 256


def _texts(n: int) -> list[str]:
    # Distinct texts (a suffix) so that nothing upstream can answer a repeat for free.
    return [f"{TEXTS[i % len(TEXTS)]} ({i})" for i in range(n)]


def _job(target: Target, texts: list[str]) -> str:
    # A JSONL file, as a batch of this size is sent (a JSON body holds at most
    # jobs.max_inline_rows rows).
    body = b"".join(json.dumps({"text": t}).encode() + b"\n" for t in texts)
    r = httpx.post(
        target.url + "/v1/jobs",
        headers=target.headers,
        data={"model": "intent", "version": "1"},
        files={"file": ("rows.jsonl", body, "application/x-ndjson")},
        timeout=300,
    )
    r.raise_for_status()
    job_id: str = r.json()["id"]
    return job_id


def _state(target: Target, job_id: str) -> dict[str, Any]:
    r = httpx.get(f"{target.url}/v1/jobs/{job_id}", headers=target.headers, timeout=30)
    r.raise_for_status()
    job: dict[str, Any] = r.json()
    return job


def _wait(target: Target, job_id: str, timeout_s: float = 3600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = _state(target, job_id)
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} did not finish in {timeout_s} s")


def job_rows_per_s(target: Target, texts: list[str]) -> dict[str, Any]:
    """Submission to the last row committed, as the client sees it (upload and planning
    included)."""
    started = time.monotonic()
    job_id = _job(target, texts)
    job = _wait(target, job_id)
    seconds = time.monotonic() - started
    assert job["state"] == "succeeded", job
    assert job["progress"]["rows_done"] == len(texts), job["progress"]
    return {"rows": len(texts), "seconds": round(seconds, 2), "rows_per_s": len(texts) / seconds}


async def direct_rows_per_s(
    grpc_url: str, texts: list[str], in_flight: int, batch_rows: int
) -> dict[str, Any]:
    """The same rows straight to Triton, `in_flight` requests of `batch_rows` at a time."""
    client = grpcaio.InferenceServerClient(grpc_url)
    batches = [texts[i : i + batch_rows] for i in range(0, len(texts), batch_rows)]
    outputs = [grpcaio.InferRequestedOutput(o) for o in ("LABEL", "SCORE")]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    async def worker() -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            array = np.array([[t.encode()] for t in batch], dtype=object)
            tensor = grpcaio.InferInput("TEXT", list(array.shape), "BYTES")
            tensor.set_data_from_numpy(array)
            await client.infer(
                "intent", [tensor], model_version="1", outputs=outputs, client_timeout=60
            )

    started = time.monotonic()
    try:
        await asyncio.gather(*(worker() for _ in range(in_flight)))
    finally:
        await client.close()
    seconds = time.monotonic() - started
    return {"rows": len(texts), "seconds": round(seconds, 2), "rows_per_s": len(texts) / seconds}


async def capacity(target: Target, seconds: float, concurrency: int = 8) -> LoadResult:
    """Single-text predicts as fast as 8 clients get them answered: the online capacity."""
    caller = RestCaller(target, concurrency)
    try:
        return await closed_loop(caller.classify(1), concurrency, seconds)
    finally:
        await caller.close()


async def online(target: Target, seconds: float, rate: float) -> LoadResult:
    """A steady interactive load: single-text predicts sent at `rate` per second,
    whatever the answers' latency (open loop: a slow answer does not slow the load)."""
    caller = RestCaller(target, 64)
    try:
        return await open_loop(caller.classify(1), rate, seconds)
    finally:
        await caller.close()


def online_with_job(target: Target, seconds: float, rows: int, rate: float) -> dict[str, Any]:
    """The online load while a job of `rows` rows runs (cancelled afterwards, so that the
    next window starts without it); the job's progress during the window is recorded to
    show that it did run."""
    job_id = _job(target, _texts(rows))
    deadline = time.monotonic() + 120
    while _state(target, job_id)["state"] != "running":
        if time.monotonic() > deadline:
            raise TimeoutError("the job never started")
        time.sleep(0.1)
    before = _state(target, job_id)["progress"]["rows_done"]
    result = asyncio.run(online(target, seconds, rate))
    after = _state(target, job_id)["progress"]["rows_done"]
    httpx.delete(f"{target.url}/v1/jobs/{job_id}", headers=target.headers, timeout=30)
    _wait(target, job_id)
    return {**result.summary(), "job_rows_during": after - before}


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    job = _median([r["job"] for r in rounds], "rows_per_s")
    direct = _median([r["direct"] for r in rounds], "rows_per_s")
    all_out = _median([r["direct_all_out"] for r in rounds], "rows_per_s")
    alone = _median([r["online_alone"] for r in rounds], "p99_ms")
    loaded = _median([r["online_with_job"] for r in rounds], "p99_ms")
    return {
        "job_rows_per_s": round(job, 1),
        "direct_rows_per_s": round(direct, 1),
        "direct_all_out_rows_per_s": round(all_out, 1),
        "job_vs_direct": round(job / direct, 3),
        "job_vs_all_out": round(job / all_out, 3),
        "online_p99_ms_alone": round(alone, 1),
        "online_p99_ms_with_job": round(loaded, 1),
        "online_p99_ratio": round(loaded / alone, 3),
        "goals": {"job_vs_direct_at_least": 0.9, "online_p99_ratio_at_most": 1.5},
    }


def markdown(results: dict[str, Any]) -> list[str]:
    s = results["summary"]
    c = results["config"]
    return [
        f"{c['rows']}-row `intent` jobs, {c['rounds']} round(s); the online load: "
        f"{c['online_seconds']} s windows of single-text predicts sent at "
        f"{c['online_rate_rps']}/s (open loop; half the {c['online_capacity_rps']}/s that "
        "8 clients get answered as fast as they can).",
        "",
        "| measure | value | goal |",
        "| --- | --- | --- |",
        f"| job rows/s (in-process executor) | {s['job_rows_per_s']} | |",
        f"| direct Triton rows/s, {c['triton_requests_in_flight']} × "
        f"{c['triton_batch_rows']} rows in flight | "
        f"{s['direct_rows_per_s']} | |",
        f"| job / direct | {s['job_vs_direct']} | ≥ 0.9 |",
        f"| direct Triton rows/s, all out ({ALL_OUT} in flight) | "
        f"{s['direct_all_out_rows_per_s']} | |",
        f"| online p99 without a job (ms) | {s['online_p99_ms_alone']} | |",
        f"| online p99 with a job running (ms) | {s['online_p99_ms_with_job']} | |",
        f"| p99 ratio | {s['online_p99_ratio']} | ≤ 1.5 |",
    ]


def plot(out: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["summary"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    in_flight = results["config"]["triton_requests_in_flight"]
    names = ["job", f"direct ({in_flight} in flight)", f"direct ({ALL_OUT} in flight)"]
    values = [s["job_rows_per_s"], s["direct_rows_per_s"], s["direct_all_out_rows_per_s"]]
    left.bar(names, values, color=["tab:blue", "tab:gray", "lightgray"])
    left.set_ylabel("rows per second")
    left.set_title(f"throughput (job / direct = {s['job_vs_direct']})")
    right.bar(
        ["without a job", "with a job"],
        [s["online_p99_ms_alone"], s["online_p99_ms_with_job"]],
        color=["tab:gray", "tab:blue"],
    )
    right.set_ylabel("online p99 (ms)")
    right.set_title(f"fairness (ratio = {s['online_p99_ratio']})")
    fig.tight_layout()
    fig.savefig(out / "jobs.png", dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.jobs")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seconds", type=float, help="each online load window")
    parser.add_argument(
        "--load", type=float, default=0.5, help="the steady online load, a share of capacity"
    )
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    args.rows = args.rows or (5_000 if args.quick else 50_000)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.seconds = args.seconds or (10.0 if args.quick else 30.0)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # The job settings the frontend reads from this environment: the direct figure uses
    # the same batch size and requests in flight.
    settings = JobSettings()
    batch_rows, in_flight = settings.triton_batch_rows, settings.triton_requests_in_flight
    started = time.time()
    texts = _texts(args.rows)
    storage = Path(tempfile.mkdtemp(prefix="infergate-bench-jobs-"))
    triton = EmbeddedTriton(args.repository, TritonPorts.free()).start(300)
    target: Target | None = None
    rounds: list[dict[str, Any]] = []
    online_capacity: dict[str, Any] = {}
    rate = 0.0
    try:
        target = start_frontend(
            triton.grpc_url,
            args.repository,
            workers=1,
            env_extra={
                "INFERGATE_JOBS__STORAGE_DIR": str(storage),
                "INFERGATE_JOBS__EXECUTOR": "local",
                "INFERGATE_JOBS__CHUNK_ROWS": str(CHUNK_ROWS),
                "INFERGATE_JOBS__MIN_FREE_BYTES": "0",
            },
        )
        job_rows_per_s(target, texts[:1000])  # warm-up, not recorded
        # The steady load: half of what 8 clients get answered as fast as they can.
        online_capacity = asyncio.run(capacity(target, args.seconds)).summary()
        rate = round(args.load * online_capacity["rps"], 1)
        print(json.dumps({"online_capacity": online_capacity, "rate": rate}), flush=True)
        asyncio.run(direct_rows_per_s(triton.grpc_url, texts[:1000], in_flight, batch_rows))
        for round_ in range(args.rounds):
            row: dict[str, Any] = {"round": round_}
            # Alternate which goes first, so that drift favours neither.
            order = ("job", "direct") if round_ % 2 == 0 else ("direct", "job")
            for name in order:
                if name == "job":
                    row["job"] = job_rows_per_s(target, texts)
                else:
                    row["direct"] = asyncio.run(
                        direct_rows_per_s(triton.grpc_url, texts, in_flight, batch_rows)
                    )
            row["direct_all_out"] = asyncio.run(
                direct_rows_per_s(triton.grpc_url, texts, ALL_OUT, batch_rows)
            )
            row["online_alone"] = asyncio.run(online(target, args.seconds, rate)).summary()
            row["online_with_job"] = online_with_job(target, args.seconds, args.rows * 4, rate)
            rounds.append(row)
            print(json.dumps(row), flush=True)
    finally:
        if target is not None:
            target.stop()
        triton.stop()
        shutil.rmtree(storage, ignore_errors=True)
    results: dict[str, Any] = {
        "config": {
            "command": "python -m benchmarks.jobs" + (" --quick" if args.quick else ""),
            "rows": args.rows,
            "rounds": args.rounds,
            "online_seconds": args.seconds,
            "online_capacity_rps": online_capacity["rps"],
            "online_rate_rps": rate,
            "triton_batch_rows": batch_rows,
            "triton_requests_in_flight": in_flight,
            "yield_factor": settings.yield_factor,
            "contention_ratio": settings.contention_ratio,
            "chunk_rows": CHUNK_ROWS,
            "wall_seconds": round(time.time() - started, 1),
        },
        "machine": machine(),
        "rounds": rounds,
        "summary": summarize(rounds),
    }
    out = args.out / (time.strftime("%Y-%m-%d_%H%M%S") + "-jobs")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "report.md").write_text("# Batch jobs\n\n" + "\n".join(markdown(results)) + "\n")
    plot(out, results)
    print("\n".join(markdown(results)))
    print(f"report: {out}")


if __name__ == "__main__":
    main()
