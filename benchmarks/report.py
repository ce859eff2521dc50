"""results.json + report.md + PNG plots for one benchmark run. Ratios and goals are
computed here from the run's own rows (never from remembered numbers)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from . import chat_report
from .machine import machine

# Goals from the benchmarks issue, on single-input classification at concurrency 32.
GOALS = [
    ("frontend >= 0.80 x direct Triton throughput", "triton", "rps", ">=", 0.80),
    ("frontend p99 <= 1.5 x direct Triton p99", "triton", "p99_ms", "<=", 1.5),
    ("frontend >= 4 x baseline (c) throughput", "st_global", "rps", ">=", 4.0),
    ("frontend p99 <= 1/5 of baseline (c) p99", "st_global", "p99_ms", "<=", 0.2),
    ("frontend >= 1.8 x baseline (d) throughput", "batching_queue", "rps", ">=", 1.8),
    ("frontend p99 < baseline (d) p99", "batching_queue", "p99_ms", "<", 1.0),
]


def aggregate(rows: list[dict]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (scenario, target): mean throughput and p50 over rounds, worst p95/p99."""
    cells: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if "rps" in row:
            cells.setdefault((row["scenario"], row["target"]), []).append(row)
    out = {}
    for key, group in cells.items():
        out[key] = {
            "rps": round(sum(r["rps"] for r in group) / len(group), 1),
            "p50_ms": round(sum(r["p50_ms"] for r in group) / len(group), 1),
            "p95_ms": max(r["p95_ms"] for r in group),
            "p99_ms": max(r["p99_ms"] for r in group),
            "errors": sum(r.get("errors", 0) for r in group),
            "rounds": len(group),
        }
    return out


def goals(agg: dict[tuple[str, str], dict[str, float]]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    front = agg.get(("single-c32", "frontend"))
    for text, other, metric, op, bound in GOALS:
        base = agg.get(("single-c32", other))
        if not front or not base or not base[metric]:
            results.append({"goal": text, "ratio": None, "pass": None})
            continue
        ratio = front[metric] / base[metric]
        ok = {">=": ratio >= bound, "<=": ratio <= bound, "<": ratio < bound}[op]
        results.append({"goal": text, "ratio": round(ratio, 3), "pass": ok})
    return results


def limiter_overhead(agg: dict[tuple[str, str], dict[str, float]]) -> list[dict[str, Any]]:
    """The access-control path (API key + two Redis windows) against authentication off,
    per single-text scenario: added p50 / p99 and the throughput ratio."""
    rows = []
    for scenario in sorted(
        {s for s, _ in agg if s.startswith("single-c")}, key=lambda s: int(s.split("-c")[1])
    ):
        off, on = agg.get((scenario, "frontend_noauth")), agg.get((scenario, "frontend_limits"))
        if not off or not on:
            continue
        rows.append(
            {
                "scenario": scenario,
                "p50_off_ms": off["p50_ms"],
                "p50_on_ms": on["p50_ms"],
                "p50_added_ms": round(on["p50_ms"] - off["p50_ms"], 2),
                "p99_off_ms": off["p99_ms"],
                "p99_on_ms": on["p99_ms"],
                "p99_added_ms": round(on["p99_ms"] - off["p99_ms"], 2),
                "rps_ratio": round(on["rps"] / off["rps"], 3) if off["rps"] else None,
            }
        )
    return rows


def cache_path(agg: dict[tuple[str, str], dict[str, float]]) -> list[dict[str, Any]]:
    """Cache-hit path next to the inference path of the same frontend, at 32 clients."""
    rows = []
    for target in ("frontend", "frontend_limits"):
        hit, miss = agg.get(("cached-c32", target)), agg.get(("single-c32", target))
        if hit and miss:
            rows.append(
                {
                    "target": target,
                    "hit_rps": hit["rps"],
                    "hit_p50_ms": hit["p50_ms"],
                    "hit_p99_ms": hit["p99_ms"],
                    "inference_rps": miss["rps"],
                    "inference_p50_ms": miss["p50_ms"],
                    "inference_p99_ms": miss["p99_ms"],
                    "rps_ratio": round(hit["rps"] / miss["rps"], 2) if miss["rps"] else None,
                }
            )
    return rows


def _plots(
    out: Path, agg: dict[tuple[str, str], dict[str, float]], targets: list[str]
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    concurrencies = sorted({int(s.split("-c")[1]) for s, _ in agg if s.startswith("single-c")})
    if len(concurrencies) > 1:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for target in targets:
            points = [
                (c, agg[(f"single-c{c}", target)]["rps"])
                for c in concurrencies
                if (f"single-c{c}", target) in agg
            ]
            if len(points) > 1:
                ax.plot(*zip(*points, strict=True), marker="o", label=target)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("requests / s")
        ax.set_title("intent v1, one text per request: throughput vs concurrency")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "throughput_vs_concurrency.png", dpi=110)
        plt.close(fig)
        written.append("throughput_vs_concurrency.png")
    for scenario in ("single-c32", "open80"):
        present = [t for t in targets if (scenario, t) in agg]
        if not present:
            continue
        fig, ax = plt.subplots(figsize=(8, 4.5))
        width = 0.27
        for k, metric in enumerate(("p50_ms", "p95_ms", "p99_ms")):
            values = [agg[(scenario, t)][metric] for t in present]
            ax.bar(
                [i + (k - 1) * width for i in range(len(present))],
                values,
                width,
                label=metric.replace("_ms", ""),
            )
        ax.set_xticks(range(len(present)), present, rotation=15)
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms, log scale)")
        ax.set_title(f"latency percentiles, {scenario}")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        name = f"latency_{scenario}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)
    return written


def write(
    out: Path,
    rows: list[dict],
    *,
    descriptions: dict[str, str],
    config: dict[str, Any],
    chat_results: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    agg = aggregate(rows)
    targets = [t for t in descriptions if any(t == key[1] for key in agg)]
    goal_rows = goals(agg)
    overhead = limiter_overhead(agg)
    caching = cache_path(agg)
    facts = machine()
    plots = _plots(out, agg, targets)
    (out / "results.json").write_text(
        json.dumps(
            {
                "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "machine": facts,
                "config": config,
                "targets": descriptions,
                "rows": rows,
                "aggregate": [{"scenario": s, "target": t, **v} for (s, t), v in agg.items()],
                "goals": goal_rows,
                "limiter_overhead": overhead,
                "cache_path": caching,
                "chat": chat_results,
            },
            indent=2,
        )
    )

    lines = [
        f"# infergate benchmark, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"Machine: {facts['cpu']}, {facts['cores']} cores, {facts['platform']}, "
        f"Python {facts['python']}, commit {facts['commit']}. Client, servers and "
        "Triton share this machine.",
        "",
        f"Run: `{config['command']}`; {config['rounds']} round(s) x "
        f"{config['seconds_per_cell']:g} s per cell, targets interleaved within each "
        f"scenario; {config['wall_seconds']:.0f} s in all. Throughput and p50 are the "
        "mean over rounds, p95/p99 the worst round. open80 is an open loop at 80 % of "
        "each target's own single-c32 throughput, latency from the scheduled send time.",
        "",
        "## Targets",
        "",
    ]
    lines += [f"- `{name}`: {text}" for name, text in descriptions.items()]
    lines += [
        "",
        "## Goals (single-c32)",
        "",
        "| goal | measured ratio | result |",
        "| --- | --- | --- |",
    ]
    for g in goal_rows:
        verdict = "n/a" if g["pass"] is None else ("PASS" if g["pass"] else "FAIL")
        lines.append(f"| {g['goal']} | {g['ratio']} | {verdict} |")
    if overhead:
        lines += [
            "",
            "## Access-control overhead (API key + Redis rate limit vs authentication off)",
            "",
            "| scenario | p50 off | p50 on | added p50 ms | p99 off | p99 on | added p99 ms "
            "| throughput on/off |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for o in overhead:
            lines.append(
                f"| {o['scenario']} | {o['p50_off_ms']} | {o['p50_on_ms']} | "
                f"{o['p50_added_ms']} | {o['p99_off_ms']} | {o['p99_on_ms']} | "
                f"{o['p99_added_ms']} | {o['rps_ratio']} |"
            )
    if caching:
        lines += [
            "",
            "## Cache-hit path vs inference path (32 clients, same frontend)",
            "",
            "| target | hit req/s | hit p50 | hit p99 | inference req/s | inference p50 "
            "| inference p99 | req/s ratio |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for c in caching:
            lines.append(
                f"| {c['target']} | {c['hit_rps']} | {c['hit_p50_ms']} | {c['hit_p99_ms']} | "
                f"{c['inference_rps']} | {c['inference_p50_ms']} | {c['inference_p99_ms']} | "
                f"{c['rps_ratio']} |"
            )
    if chat_results:
        chat_report.plot(out, chat_results)
        lines += ["", "## Text generation (chat)", "", *chat_report.markdown(chat_results)]
    lines += [
        "",
        "## Results",
        "",
        "| scenario | target | req/s | p50 ms | p95 ms | p99 ms | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    for scenario in scenarios:
        for target in targets:
            cell = agg.get((scenario, target))
            if cell:
                lines.append(
                    f"| {scenario} | {target} | {cell['rps']} | {cell['p50_ms']} | "
                    f"{cell['p95_ms']} | {cell['p99_ms']} | {cell['errors']} |"
                )
    failed = [r for r in rows if "error" in r]
    if failed:
        lines += ["", "Not measured: " + "; ".join(f"{r['target']}: {r['error']}" for r in failed)]
    lines += [""] + [f"![{p}]({p})" for p in plots]
    if chat_results:
        lines.append("![chat.png](chat.png)")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return {
        "out": str(out),
        "goals": goal_rows,
        "limiter_overhead": overhead,
        "cache_path": caching,
        "chat_goal": chat_results["goal"] if chat_results else None,
    }
