"""`make bench`: every target side by side, interleaved in one run, then the report.

    python -m benchmarks.run            # full: 2 rounds x 8 s per cell (~14 min here)
    python -m benchmarks.run --quick    # smoke: 1 round x 3 s, fewer scenarios (< 2 min)

Writes benchmarks/results/<date>_<time>/{results.json, report.md, *.png}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from export.triton_launcher import EmbeddedTriton, TritonPorts

from . import chat, perf_analyzer, report
from .loadgen import LoadResult, closed_loop, open_loop
from .targets import BASELINES, GrpcCaller, RestCaller, Target, start_baseline, start_frontend


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # single | batch | embed | open | cached
    concurrency: int
    batch: int = 1


FULL = [Scenario(f"single-c{c}", "single", c) for c in (1, 8, 32, 64)] + [
    Scenario("batch32-c8", "batch", 8, 32),
    Scenario("embed-c32", "embed", 32),
    Scenario("open80", "open", 32),
    Scenario("cached-c32", "cached", 32),
]
QUICK = [
    Scenario("single-c32", "single", 32),
    Scenario("cached-c32", "cached", 32),
    Scenario("batch32-c8", "batch", 8, 32),
    Scenario("open80", "open", 32),
]


async def _measure(
    target: Target, scenario: Scenario, seconds: float, capacity: float | None
) -> LoadResult:
    caller: RestCaller | GrpcCaller = (
        GrpcCaller(target.url)
        if target.name == "triton"
        else RestCaller(target, scenario.concurrency, cached=scenario.kind == "cached")
    )
    try:
        if scenario.kind == "embed":
            return await closed_loop(caller.embed(), scenario.concurrency, seconds)
        call = caller.classify(scenario.batch)
        if scenario.kind == "open":
            assert capacity
            return await open_loop(call, rate=0.8 * capacity, seconds=seconds)
        return await closed_loop(call, scenario.concurrency, seconds)
    finally:
        await caller.close()


def _applies(target: Target, scenario: Scenario) -> bool:
    if target.name == "triton":
        return scenario.kind != "cached"
    return scenario.kind in target.supports


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--frontend-workers", type=int, default=1)
    parser.add_argument("--repository", default="model_repository")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    scenarios = QUICK if args.quick else FULL
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    rounds = args.rounds or (1 if args.quick else 2)
    repository = Path(args.repository)

    started = time.time()
    triton_server = EmbeddedTriton(repository, TritonPorts.free()).start(300)
    targets: list[Target] = []
    rows: list[dict[str, Any]] = []
    chat_results: dict[str, Any] | None = None
    try:
        print("starting targets (Triton, frontends, Redis, baselines)...", flush=True)
        targets = [
            Target(
                "triton",
                "(b) Triton direct gRPC, raw text (our client)",
                url=triton_server.grpc_url,
                supports={"single", "batch", "open", "embed"},
            ),
            start_frontend(
                triton_server.grpc_url,
                repository,
                args.frontend_workers,
                triton_admin_key=triton_server.admin_key,
            ),
            start_frontend(
                triton_server.grpc_url,
                repository,
                args.frontend_workers,
                "frontend_noauth",
                triton_admin_key=triton_server.admin_key,
            ),
            start_frontend(
                triton_server.grpc_url,
                repository,
                args.frontend_workers,
                "frontend_limits",
                triton_admin_key=triton_server.admin_key,
            ),
        ]
        targets += [start_baseline(name) for name in BASELINES]
        for target in targets:  # warm-up, not recorded
            asyncio.run(_measure(target, Scenario("warm", "single", 8), 2.0, None))
        cells = [
            (r, s, t) for r in range(rounds) for s in scenarios for t in targets if _applies(t, s)
        ]
        capacity: dict[str, float] = {}
        with tqdm(total=len(cells) + 1, desc="bench", unit="run") as bar:
            for round_, scenario, target in cells:  # interleaved: every target per scenario
                bar.set_postfix_str(f"{scenario.name} {target.name}")
                result = asyncio.run(_measure(target, scenario, seconds, capacity.get(target.name)))
                if scenario.name == "single-c32":
                    capacity[target.name] = max(capacity.get(target.name, 0), result.rps)
                rows.append(
                    {
                        "round": round_,
                        "scenario": scenario.name,
                        "concurrency": scenario.concurrency,
                        "batch": scenario.batch,
                        "target": target.name,
                        **result.summary(),
                    }
                )
                bar.update(1)
            bar.set_postfix_str("perf_analyzer")
            pa = perf_analyzer.run(
                triton_server.http_url,
                32,
                int(seconds * 1000),
                headers=triton_server.admin_headers,
            )
            rows.append(
                {
                    "round": 0,
                    "scenario": "single-c32",
                    "concurrency": 32,
                    "batch": 1,
                    "target": "perf_analyzer",
                    **pa,
                }
            )
            bar.update(1)
        # Text generation last (its own figures; nothing else runs meanwhile).
        print("chat: single stream (frontend vs Triton gRPC), then 1/4/8 streams", flush=True)
        chat_args = argparse.Namespace(
            tokens=8 if args.quick else 64,
            rounds=1 if args.quick else 2,
            single_prompts=1 if args.quick else 4,
        )
        frontend = next(t for t in targets if t.name == "frontend")
        chat_results = asyncio.run(
            chat.run(frontend.url, triton_server.grpc_url, triton_server.metrics_url, chat_args)
        )
    finally:
        for target in targets:
            target.stop()
        triton_server.stop()

    descriptions = {t.name: t.description for t in targets}
    descriptions["perf_analyzer"] = "(b) Triton direct HTTP through perf_analyzer 2.51"
    config = {
        "quick": args.quick,
        "seconds_per_cell": seconds,
        "rounds": rounds,
        "frontend_workers": args.frontend_workers,
        "wall_seconds": 0.0,
        "command": "make bench" + (" QUICK=1" if args.quick else ""),
    }
    config["wall_seconds"] = round(time.time() - started, 1)
    out = Path(args.out) / time.strftime("%Y-%m-%d_%H%M%S")
    summary = report.write(
        out, rows, descriptions=descriptions, config=config, chat_results=chat_results
    )
    print(json.dumps(summary, indent=2, default=str))
    print(f"report: {out / 'report.md'}")


if __name__ == "__main__":
    main()
