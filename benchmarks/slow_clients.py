"""Slow and oversized clients against each candidate server, and its throughput (issue 11
item 2). Loopback only; every loop is bounded in time.

    python -m benchmarks.slow_clients                    # all servers, ~6 min
    python -m benchmarks.slow_clients --servers guarded --window 20 --rounds 1

Every server runs the same app (`frontend.app:create_app`, one worker, real Triton). For
each in turn:
1. baseline: a normal client (2 loops of single-text predicts) measures its latency, 10 s;
2. attack, for `--window` seconds: slowloris (1 byte / 2 s of head), idle connections,
   kept-alive idle connections, stalled 1 MiB uploads, one 32 MB header, one 32 MB bearer
   token, 10 000 header fields, a 1 MB URL, an 8 KB X-API-Key, no Host, two Hosts —
   while the normal client goes on; each attack connection records when the server
   closed it and the status it got;
Then 3. throughput: closed loops at fixed concurrency on the predict route and on
/health/live (the server's own cost, which the CPU-bound inference path hides), the
servers interleaved over `--rounds` rounds; medians of req/s, p99 and the server
process tree's CPU ms per request (the figure other load on a shared machine disturbs
least).
Writes JSON to benchmarks/results/slow_clients_<time>.json (and prints it).

granian and hypercorn are not dependencies (the measurement chose uvicorn): a server whose
package is missing is skipped (`pip install granian==2.8.7 hypercorn==0.18.0` to compare).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from export.triton_launcher import EmbeddedTriton, TritonPorts
from procs.ports import free_port
from procs.process import start_python

from .loadgen import closed_loop
from .targets import BENCH_ADMIN_KEY, RestCaller, Target, scratch_database

PREDICT = "/v1/models/intent/versions/1/predict"
SERVERS = {
    "guarded": "uvicorn + httptools + frontend/server protocol (python -m frontend serve)",
    "uvicorn": "uvicorn + httptools as before (no limits of our own)",
    "granian": "granian 2.8 ASGI, --http1-header-read-timeout 10000 (its max buffer default)",
    "hypercorn": "hypercorn 0.18, --keep-alive 5 --read-timeout 10 (h11, 16 KiB head cap)",
}
MODULES = {  # the package each needs
    "guarded": "uvicorn",
    "uvicorn": "uvicorn",
    "granian": "granian",
    "hypercorn": "hypercorn",
}


def start_server(name: str, triton_grpc: str, repository: Path) -> Target:
    port = free_port()
    scratch, database_url = scratch_database()
    env = {
        "INFERGATE_DATABASE__URL": database_url,  # every server its own, never `.infergate/`
        "INFERGATE_LOG__LEVEL": "WARNING",
        "INFERGATE_AUTH__BOOTSTRAP_ADMIN_KEY": BENCH_ADMIN_KEY,
        "INFERGATE_SECRET_KEY": secrets.token_urlsafe(32),
        "INFERGATE_TRITON__URL": triton_grpc,
        "INFERGATE_TRITON__MODEL_REPOSITORY": str(repository),
    }
    app = "frontend.app:create_app"
    args = {
        "guarded": ["-m", "frontend", "serve", "--port", str(port), "--triton-url", triton_grpc,
                    "--repository", str(repository)],
        "uvicorn": ["-m", "uvicorn", app, "--factory", "--port", str(port), "--loop", "uvloop",
                    "--http", "httptools", "--no-access-log", "--log-level", "warning"],
        "granian": ["-m", "granian", "--interface", "asgi", "--factory", app, "--port",
                    str(port), "--loop", "uvloop", "--http", "1", "--no-ws",
                    "--http1-header-read-timeout", "10000", "--log-level", "warning"],
        "hypercorn": ["-m", "hypercorn", f"{app}()", "--bind", f"127.0.0.1:{port}", "-k",
                      "uvloop", "--keep-alive", "5", "--read-timeout", "10",
                      "--log-level", "warning"],
    }[name]  # fmt: skip
    target = Target(
        f"frontend-{name}",
        SERVERS[name],
        url=f"http://127.0.0.1:{port}",
        process=start_python(args, env=env),
        headers={"X-API-Key": BENCH_ADMIN_KEY},
        scratch=scratch,
    )
    target.wait_ready("/health/ready")
    return target


# --- one attack connection -----------------------------------------------------------
async def _watch(reader: asyncio.StreamReader, started: float) -> dict[str, Any]:
    """Reads until the server closes; the status it sent (if any) and when it closed."""
    first = b""
    try:
        while chunk := await reader.read(65_536):
            first = first or chunk
    except OSError:
        pass
    status = first.split(b" ", 2)[1].decode() if first.startswith(b"HTTP/") else None
    return {"closed_after_s": round(time.monotonic() - started, 2), "status": status}


async def attack(port: int, head: bytes, dribble: bytes = b"", window: float = 30.0) -> dict:
    """Sends `head` (then `dribble` one byte every 2 s); the outcome within `window`."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    except OSError as exc:
        return {"closed_after_s": 0.0, "status": f"connect failed: {exc.strerror}"}
    watch = asyncio.create_task(_watch(reader, started))
    try:
        writer.write(head)
        await writer.drain()
        for byte in dribble:
            if watch.done() or time.monotonic() - started > window:
                break
            await asyncio.wait([watch], timeout=2.0)
            writer.write(bytes([byte]))
            await writer.drain()
    except OSError:
        pass  # reset while sending: the server refused; the watcher tells when
    done, _ = await asyncio.wait([watch], timeout=max(0.0, window - (time.monotonic() - started)))
    writer.close()
    if not done:
        watch.cancel()
        return {"closed_after_s": None, "status": "still open"}
    return watch.result()


def _summary(results: list[dict]) -> dict[str, Any]:
    closed = [r["closed_after_s"] for r in results if r["closed_after_s"] is not None]
    statuses: dict[str, int] = {}
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    return {
        "connections": len(results),
        "closed": len(closed),
        "closed_after_s": {
            "min": min(closed, default=None),
            "median": float(np.median(closed)) if closed else None,
            "max": max(closed, default=None),
        },
        "statuses": statuses,
    }


def _probes(key: str) -> dict[str, tuple[int, bytes, bytes]]:
    """name -> (connections, head, bytes to dribble one by one)."""
    get = b"GET /health/live HTTP/1.1\r\nHost: x\r\n"
    mib = 1 << 20
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(10_000))
    upload = (
        (
            f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {mib}\r\n\r\n"
        ).encode()
        + b'{"inputs": "'
        + b"x" * 65_536
    )
    return {
        "slowloris": (100, get + b"X-Slow: ", b"a" * 40),
        "idle": (50, b"", b""),
        "kept_alive_idle": (20, get + b"\r\n", b""),
        "stalled_1mib_upload": (50, upload, b""),
        "header_32mb": (1, get + b"X-Big: " + b"a" * (32 * mib) + b"\r\n\r\n", b""),
        "bearer_32mb": (
            1,
            b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + b"a" * (32 * mib)
            + b"\r\n\r\n",
            b"",
        ),
        "headers_10000": (1, get + many + b"\r\n", b""),
        "url_1mb": (1, b"GET /" + b"a" * mib + b" HTTP/1.1\r\nHost: x\r\n\r\n", b""),
        "api_key_8kb": (1, get + b"X-API-Key: " + b"a" * 8192 + b"\r\n\r\n", b""),
        "no_host": (1, b"GET /health/live HTTP/1.1\r\n\r\n", b""),
        "two_hosts": (1, get + b"Host: y\r\n\r\n", b""),
    }


# --- the normal client and throughput ------------------------------------------------
async def normal_client(target: Target, seconds: float) -> dict[str, Any]:
    caller = RestCaller(target, 2)
    try:
        result = await closed_loop(caller.classify(1), 2, seconds)
    finally:
        await caller.close()
    keep = ("requests", "errors", "p50_ms", "p99_ms")
    return {k: v for k, v in result.summary().items() if k in keep}


async def probe(target: Target, window: float) -> dict[str, Any]:
    port = int(target.url.rsplit(":", 1)[1])
    await normal_client(target, 2)  # warm-up
    baseline = await normal_client(target, 10)
    tasks = {
        name: [asyncio.create_task(attack(port, head, dribble, window)) for _ in range(n)]
        for name, (n, head, dribble) in _probes(BENCH_ADMIN_KEY).items()
    }
    during = await normal_client(target, window)
    outcome = {name: _summary([await t for t in ts]) for name, ts in tasks.items()}
    return {
        "normal_client": {
            "baseline": baseline,
            "during_attack": during,
            "p99_ratio": round(during["p99_ms"] / baseline["p99_ms"], 2),
        },
        "attack": outcome,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and its descendants (granian's workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    stack = [pid]
    while stack:
        proc = Path("/proc") / str(stack.pop())
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            for task in (proc / "task").iterdir():
                stack += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


async def throughput(target: Target, concurrency: int, seconds: float) -> dict[str, Any]:
    """Predicts through real Triton, then /health/live: the cheap route shows the server's
    own cost, which the inference path (CPU-bound here) can hide."""
    caller = RestCaller(target, concurrency)

    async def live(i: int) -> None:
        async with caller.session.get("/health/live") as response:
            await response.read()
            response.raise_for_status()

    out: dict[str, Any] = {}
    assert target.process is not None
    try:
        for route, call in (("predict", caller.classify(1)), ("live", live)):
            await closed_loop(call, concurrency, 1)  # warm-up
            cpu = _cpu_s(target.process.pid)
            loop = await closed_loop(call, concurrency, seconds)
            cpu = _cpu_s(target.process.pid) - cpu
            result = loop.summary()
            out[route] = {k: result[k] for k in ("requests", "errors", "rps", "p50_ms", "p99_ms")}
            # The server's own CPU per request: what other load on the machine hides least.
            out[route]["cpu_ms_per_request"] = round(cpu * 1000 / max(1, loop.requests), 3)
    finally:
        await caller.close()
    return {**out, "load_average_1m": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.slow_clients")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--window", type=float, default=30.0, help="0: throughput only")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--triton-url", help="a running Triton's gRPC address")
    args = parser.parse_args()

    triton = None
    if args.triton_url is None:
        triton = EmbeddedTriton(args.repository, TritonPorts.free(), log_sink=lambda line: None)
        triton.start(ready_timeout=300)
    grpc = args.triton_url or triton.grpc_url  # type: ignore[union-attr]
    names = [n for n in args.servers.split(",") if importlib.util.find_spec(MODULES[n])]
    for skipped in set(args.servers.split(",")) - set(names):
        print(f"skipping {skipped}: {MODULES[skipped]} is not installed", file=sys.stderr)
    report: dict[str, Any] = {
        "cores": os.cpu_count(),
        "window_s": args.window,
        "servers": {name: {"server": SERVERS[name]} for name in names},
    }
    targets: list[Target] = []
    try:
        # All up at once, so that the throughput rounds can be interleaved: on a shared
        # machine, load that comes and goes then falls on every server alike.
        targets = [start_server(name, grpc, args.repository) for name in names]
        for name, target in zip(names, targets, strict=True):
            if args.window > 0:
                report["servers"][name].update(asyncio.run(probe(target, args.window)))
                print(json.dumps({name: report["servers"][name]}, indent=1), flush=True)
        for _ in range(args.rounds):
            for name, target in zip(names, targets, strict=True):
                result = asyncio.run(throughput(target, args.concurrency, args.seconds))
                report["servers"][name].setdefault("throughput_rounds", []).append(result)
        for name in names:
            rounds = report["servers"][name]["throughput_rounds"]
            report["servers"][name]["throughput"] = {
                "concurrency": args.concurrency,
                **{
                    f"{route}_{k}_median": float(np.median([r[route][k] for r in rounds]))
                    for route in ("predict", "live")
                    for k in ("rps", "p99_ms", "cpu_ms_per_request")
                },
            }
    finally:
        for target in targets:
            target.stop()
        if triton is not None:
            triton.stop()
    out = Path("benchmarks/results") / f"slow_clients_{time.strftime('%Y-%m-%d_%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps({n: report["servers"][n]["throughput"] for n in names}, indent=1))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
