"""`make bench-options`: what each OpenAI generation option costs per token, one run.

    python -m benchmarks.generation_options [--tokens 64] [--streams 4] [--rounds 3]

The chat engine in process (the same code Triton runs, no gRPC or HTTP in the way, so the
difference is the option's own work): `--streams` greedy sequences decoded together,
`--tokens` each, for every scenario in turn — plain; `logprobs` (top 5 alternatives);
penalties (presence, frequency and repetition together); a logit bias; JSON-schema
constrained decoding (llguidance); all of them at once — round after round, interleaved,
so that a machine that slows down mid-run slows every scenario alike. Each scenario's
figure is the median of its rounds' tokens/s (tokens sampled / wall time), and its ratio
to the plain run of the same round.

The constrained scenario's schema allows one long string, so its sequences run as long as
the others (`ignore_eos` for the rest): the comparison is per token, at the same lengths.
Writes benchmarks/reports/<date>_<time>-options/{results.json, report.md, options.png}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

from export.runtime.generation import ChatEngine, Collector, Limits, Sampling

from .chat import PROMPTS
from .machine import machine

# One long string that cannot close within the token budget (1 000 characters at least):
# every constrained sequence runs as long as the others, so the rates compare per token.
STORY_SCHEMA = {
    "type": "object",
    "properties": {"story": {"type": "string", "minLength": 1000, "maxLength": 4000}},
    "required": ["story"],
    "additionalProperties": False,
}


def scenarios(tokens: int) -> dict[str, tuple[Sampling, dict[str, Any] | None]]:
    plain = Sampling(max_tokens=tokens, ignore_eos=True)
    penalties = dataclasses.replace(
        plain, presence_penalty=0.5, frequency_penalty=0.5, repetition_penalty=1.1
    )
    bias = dataclasses.replace(plain, logit_bias=tuple((i, -5.0) for i in range(100, 400)))
    json_format = {"type": "json_schema", "json_schema": {"name": "s", "schema": STORY_SCHEMA}}
    everything = dataclasses.replace(
        penalties, logprobs=5, logit_bias=bias.logit_bias, ignore_eos=False
    )
    return {
        "plain": (plain, None),
        "logprobs_top5": (dataclasses.replace(plain, logprobs=5), None),
        "penalties": (penalties, None),
        "logit_bias_300": (bias, None),
        "json_schema": (dataclasses.replace(plain, ignore_eos=False), json_format),
        "all_of_them": (everything, json_format),
    }


def run_round(
    engine: ChatEngine, sampling: Sampling, response_format: dict[str, Any] | None, streams: int
) -> tuple[float, int]:
    """(tokens/s, tokens) of `streams` sequences decoded together."""
    grammar = engine.grammar(response_format, None)
    sinks = []
    started = time.perf_counter()
    for prompt in PROMPTS[:streams]:
        ids = engine.encode_prompt(None, [{"role": "user", "content": prompt}])
        sink = Collector()
        engine.submit(ids, sampling, sink, grammar=grammar)
        sinks.append(sink)
    for sink in sinks:
        if not sink.done.wait(600):
            raise RuntimeError("a benchmark sequence did not finish in 10 minutes")
        if sink.error is not None:
            raise RuntimeError(f"generation failed: {sink.error}")
    elapsed = time.perf_counter() - started
    tokens = sum(s.completion_tokens for s in sinks)
    return tokens / elapsed, tokens


def plot(out: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["scenarios"])
    rates = [results["scenarios"][n]["tokens_per_s_median"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(names, rates)
    ax.set_ylabel("tokens/s (median of rounds)")
    ax.set_title(f"chat engine, {results['streams']} streams: cost of each option")
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(out / "options.png", dpi=120)
    plt.close(fig)


def markdown(results: dict[str, Any]) -> list[str]:
    lines = [
        f"{results['streams']} sequences together, {results['tokens']} tokens each, "
        f"{results['rounds']} interleaved rounds (`options.png`).",
        "",
        "| scenario | tokens/s (median) | × plain (median of rounds) | ms per token |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in results["scenarios"].items():
        lines.append(
            f"| {name} | {row['tokens_per_s_median']} | {row['ratio_to_plain_median']} | "
            f"{row['ms_per_token_median']} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    version_dir = args.repository / "chat" / "1"
    engine = ChatEngine(version_dir, Limits(slots=8, queue=8)).start()
    cases = scenarios(args.tokens)
    rates: dict[str, list[float]] = {name: [] for name in cases}
    ratios: dict[str, list[float]] = {name: [] for name in cases}
    try:
        run_round(engine, *cases["plain"], args.streams)  # warm-up: sessions, tokenizer
        for r in range(args.rounds):
            plain_rate = 0.0
            for name, (sampling, response_format) in cases.items():
                rate, tokens = run_round(engine, sampling, response_format, args.streams)
                rates[name].append(rate)
                plain_rate = rate if name == "plain" else plain_rate
                ratios[name].append(rate / plain_rate)
                print(f"round {r + 1} {name}: {rate:.1f} tokens/s ({tokens} tokens)")
    finally:
        engine.stop()
    results = {
        "machine": machine(),
        "streams": args.streams,
        "tokens": args.tokens,
        "rounds": args.rounds,
        "scenarios": {
            name: {
                "tokens_per_s_median": round(statistics.median(rates[name]), 2),
                "ratio_to_plain_median": round(statistics.median(ratios[name]), 3),
                "ms_per_token_median": round(1000 / statistics.median(rates[name]), 2),
                "rounds": [round(x, 2) for x in rates[name]],
            }
            for name in cases
        },
    }
    out = Path("benchmarks/reports") / (time.strftime("%Y-%m-%d_%H%M%S") + "-options")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "report.md").write_text(
        "# Generation options: cost per token\n\n" + "\n".join(markdown(results)) + "\n"
    )
    plot(out, results)
    print("\n".join(markdown(results)))
    print(f"report: {out}")


if __name__ == "__main__":
    main()
