"""The chat benchmark's figures on paper: its plot, its markdown table (also a section of
`make bench`'s report) and its own report directory. Kept apart from `chat` (which runs
the streams) so that `report` can render chat results without importing the runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def plot(out: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = results["concurrency"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(
        [str(level["streams"]) for level in levels],
        [level["aggregate_tokens_per_s"] for level in levels],
    )
    ax.set_xlabel("concurrent streams (frontend, SSE)")
    ax.set_ylabel("aggregate tokens/s")
    ax.set_title("chat (SmolLM2-135M, CPU): in-flight batching")
    fig.tight_layout()
    fig.savefig(out / "chat.png", dpi=120)
    plt.close(fig)


def markdown(results: dict[str, Any]) -> list[str]:
    single, levels = results["single_stream"], results["concurrency"]
    goal = results["goal"]
    return [
        f"Greedy, {results['tokens_per_stream']} tokens per stream (`chat.png`).",
        "",
        "| single stream | tokens/s (median) | time to first token (median) |",
        "| --- | --- | --- |",
        *(
            f"| {path} | {s['tokens_per_s_median']} | {s['ttft_ms_median']} ms |"
            for path, s in single.items()
        ),
        "",
        "| streams | aggregate tokens/s | median TTFT | sequences per decode step |",
        "| --- | --- | --- | --- |",
        *(
            f"| {x['streams']} | {x['aggregate_tokens_per_s']} | {x['ttft_ms_median']} ms | "
            f"{x['sequences_per_decode_step']} |"
            for x in levels
        ),
        "",
        f"Goal: {goal['name']}: ratio {goal['ratio']} ({'PASS' if goal['met'] else 'FAIL'}).",
    ]


def write(out: Path, results: dict[str, Any]) -> None:
    """`make bench-chat`'s own report: results.json, report.md and chat.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot(out, results)
    lines = [
        "# Text generation benchmark",
        "",
        f"Machine: {json.dumps(results['machine'])}",
        "",
        *markdown(results),
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
