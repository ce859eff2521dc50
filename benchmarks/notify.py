"""`make bench-notify` (also run by `make bench`): job notification delivery latency.

    python -m benchmarks.notify            # 2 rounds × 100 events per variant
    python -m benchmarks.notify --quick    # 1 round × 50 events per variant

What is measured: a job's state change → its webhook delivery arriving at a receiver on
this machine, `time.time()` at the receiver's handler minus the event's `created_at` (the
state change's time, written by the frontend on the same clock). The state change is a
cancel (`DELETE /v1/jobs/{id}`) of a queued job: the frontends run with
INFERGATE_JOBS__EXECUTOR=off, so a job stays queued until it is cancelled, and the cancel
commits the `job.cancelled` event in its own transaction (the SQL outbox).

Two variants, side by side over one embedded Triton, each on its own frontend (1 worker,
its own SQLite database), both started once for the whole run:
(a) in process: the frontend's own dispatcher (INFERGATE_NOTIFY__DISPATCHER=on), woken
    right after the commit that wrote an event (and polling every notify.poll_s);
(b) standalone: the frontend with INFERGATE_NOTIFY__DISPATCHER=off and
    `python -m frontend notifier` on the same database and secret, which only polls
    (every notify.poll_s): nothing wakes it when another process commits.

Each round of a variant: N jobs are submitted first (not measured), then cancelled one at
a time, one cancel started every `--pace-ms` (50 ms; never two in flight), then the
round waits until every event has arrived. Rounds alternate the variants' order (a, b /
b, a, ...) so that drift favours neither. Figures only: there is no pass/fail goal.

Writes benchmarks/results/<date>_<time>-notify/{results.json, report.md, notify.png}.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from aiohttp import web

from export.triton_launcher import EmbeddedTriton, TritonPorts
from procs.ports import free_port
from procs.process import start_python
from procs.process import stop as stop_process
from procs.wait import wait_http

from .machine import machine
from .targets import Target, start_frontend

VARIANTS = {
    "in_process": "(a) the frontend's own dispatcher (woken at the commit, polls every poll_s)",
    "standalone": "(b) `python -m frontend notifier` beside a frontend with the dispatcher "
    "off (polls every poll_s only)",
}
POLL_S = 0.5  # notify.poll_s, the default; set explicitly so the report states it


class Receiver:
    """The webhook receiver: an aiohttp server in a thread of its own (its own event loop,
    so that the benchmark's HTTP calls never delay a timestamp), answering 200 at once.
    Every arrival is kept (duplicates too), with its signature checked afterwards."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrivals: list[dict[str, Any]] = []
        self.secrets: dict[str, str] = {}  # path → the webhook's signing secret
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    def url(self, variant: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{variant}"

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.time()
        body = await request.read()
        item: dict[str, Any] = {
            "path": request.path,
            "arrived": arrived,
            "webhook_id": request.headers.get("Webhook-Id"),
            "timestamp": request.headers.get("Webhook-Timestamp"),
            "signature": request.headers.get("Webhook-Signature"),
            "body": body,
        }
        with self._lock:
            self.arrivals.append(item)
        return web.Response(status=200)

    def start(self) -> Receiver:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            app = web.Application()
            app.router.add_post("/hook/{variant}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="webhook-receiver", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the webhook receiver did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def snapshot(self, variant: str) -> list[dict[str, Any]]:
        path = f"/hook/{variant}"
        with self._lock:
            return [a for a in self.arrivals if a["path"] == path]

    def job_ids(self, variant: str) -> set[str]:
        return {_job_of(a) for a in self.snapshot(variant)}


def _job_of(arrival: dict[str, Any]) -> str:
    payload = arrival.get("payload")
    if payload is None:
        payload = arrival["payload"] = json.loads(arrival["body"])
    return str(payload["data"]["job"]["id"])


def _signed(secret: str, arrival: dict[str, Any]) -> bool:
    """docs/webhooks.md's check (without the freshness window: arrivals are checked after
    the round)."""
    stamp, header = arrival["timestamp"] or "", arrival["signature"] or ""
    fields = [part.strip().partition("=") for part in header.split(",")]
    ts = [v for k, _, v in fields if k == "t"]
    sigs = [v for k, _, v in fields if k == "v1"]
    if ts != [stamp] or not stamp.isdigit():
        return False
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + arrival["body"], hashlib.sha256)
    return any(hmac.compare_digest(expected.hexdigest(), s) for s in sigs)


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    a = np.asarray(values, dtype=float)
    return {
        "n": len(values),
        "min": round(float(a.min()), 2),
        "p50": round(float(np.percentile(a, 50)), 2),
        "p90": round(float(np.percentile(a, 90)), 2),
        "p99": round(float(np.percentile(a, 99)), 2),
        "max": round(float(a.max()), 2),
        "mean": round(float(a.mean()), 2),
    }


class Variant:
    """One variant's frontend (and, for (b), its notifier) and its webhook."""

    def __init__(self, name: str, target: Target, notifier: subprocess.Popen[bytes] | None):
        self.name = name
        self.target = target
        self.notifier = notifier
        self.client = httpx.Client(base_url=target.url, headers=target.headers, timeout=60)
        self.webhook_id = ""

    def register(self, receiver: Receiver) -> None:
        r = self.client.post(
            "/v1/webhooks", json={"url": receiver.url(self.name), "events": ["job.cancelled"]}
        )
        if r.status_code != 201:
            raise RuntimeError(f"{self.name}: POST /v1/webhooks: {r.status_code} {r.text}")
        made = r.json()
        self.webhook_id = made["id"]
        receiver.secrets[f"/hook/{self.name}"] = made["secret"]

    def submit(self, i: int) -> str:
        r = self.client.post("/v1/jobs", json={"model": "intent", "inputs": [f"a b c {i}"]})
        if r.status_code != 201 or r.json().get("state") != "queued":
            raise RuntimeError(f"{self.name}: POST /v1/jobs: {r.status_code} {r.text}")
        job_id: str = r.json()["id"]
        return job_id

    def cancel(self, job_id: str) -> dict[str, Any]:
        sent = time.time()
        started = time.perf_counter()
        r = self.client.delete(f"/v1/jobs/{job_id}")
        delete_ms = (time.perf_counter() - started) * 1000
        answered = time.time()
        if r.status_code not in (200, 202) or r.json().get("state") != "cancelled":
            raise RuntimeError(f"{self.name}: DELETE /v1/jobs/{job_id}: {r.status_code} {r.text}")
        return {"job_id": job_id, "sent": sent, "answered": answered, "delete_ms": delete_ms}

    def delivery_log(self) -> dict[str, Any]:
        """The frontend's own record of this webhook's deliveries: states and attempts."""
        states: dict[str, int] = {}
        attempts = 0
        more_than_one = 0
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100}
            if cursor:
                params["cursor"] = cursor
            r = self.client.get(f"/v1/webhooks/{self.webhook_id}/deliveries", params=params)
            r.raise_for_status()
            page = r.json()
            for d in page["data"]:
                states[d["state"]] = states.get(d["state"], 0) + 1
                attempts += d["attempts"]
                more_than_one += d["attempts"] > 1
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return {"states": states, "attempts": attempts, "deliveries_with_retries": more_than_one}

    def close(self) -> dict[str, Any]:
        stopped: dict[str, Any] = {}
        self.client.close()
        if self.notifier is not None:
            began = time.monotonic()
            code = stop_process(self.notifier)  # SIGTERM, then SIGKILL after 30 s
            stopped = {"notifier_exit_code": code, "notifier_stop_s": time.monotonic() - began}
        self.target.stop()
        return stopped


def run_round(
    variant: Variant, receiver: Receiver, events: int, pace_s: float, wait_s: float, tag: str
) -> dict[str, Any]:
    """`events` jobs submitted, then cancelled one every `pace_s` (sequential), then every
    delivery waited for (up to `wait_s` after the last cancel)."""
    jobs = [variant.submit(i) for i in range(events)]
    time.sleep(POLL_S * 2)  # nothing from the submissions is still in flight
    cancels: list[dict[str, Any]] = []
    started = time.monotonic()
    for i, job_id in enumerate(jobs):
        delay = started + i * pace_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        cancels.append(variant.cancel(job_id))
    cancel_seconds = time.monotonic() - started
    wanted = set(jobs)
    deadline = time.monotonic() + wait_s
    while not wanted <= receiver.job_ids(variant.name) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(POLL_S * 2)  # a late duplicate of this round's events would show up here
    arrivals = [a for a in receiver.snapshot(variant.name) if _job_of(a) in wanted]
    first: dict[str, dict[str, Any]] = {}
    for a in sorted(arrivals, key=lambda a: a["arrived"]):
        first.setdefault(_job_of(a), a)
    secret = receiver.secrets[f"/hook/{variant.name}"]
    events_out: list[dict[str, Any]] = []
    for c in cancels:
        got = first.get(c["job_id"])
        if got is None:
            continue
        created = float(got["payload"]["created_at"])
        events_out.append(
            {
                "job_id": c["job_id"],
                "event_id": got["webhook_id"],
                "latency_ms": round((got["arrived"] - created) * 1000, 3),
                "delete_ms": round(c["delete_ms"], 3),
                # The state change's time after the DELETE was sent, and the arrival after
                # its answer came back (negative: delivered before the answer).
                "changed_after_send_ms": round((created - c["sent"]) * 1000, 3),
                "arrived_after_answer_ms": round((got["arrived"] - c["answered"]) * 1000, 3),
            }
        )
    ids = [a["webhook_id"] for a in arrivals]
    latencies = [e["latency_ms"] for e in events_out]
    bursts = _bursts(sorted(a["arrived"] for a in first.values()), gap_s=max(2 * pace_s, 0.25))
    return {
        "tag": tag,
        "variant": variant.name,
        "events": events,
        "cancel_seconds": round(cancel_seconds, 2),
        "received": len(first),
        "missing": len(wanted - set(first)),
        "arrivals": len(arrivals),
        "duplicates": len(ids) - len(set(ids)),
        "bad_signatures": sum(not _signed(secret, a) for a in arrivals),
        "wrong_type": sum(a["payload"].get("type") != "job.cancelled" for a in arrivals),
        "latency_ms": _percentiles(latencies),
        "delete_ms": _percentiles([e["delete_ms"] for e in events_out]),
        "arrival_bursts": bursts,
        "samples": events_out,
    }


def _bursts(arrived: list[float], gap_s: float) -> dict[str, Any]:
    """Arrivals grouped where more than `gap_s` separates two: for a dispatcher that only
    polls, one burst per outbox read, so the starts' spacing is its real read period."""
    starts = [t for i, t in enumerate(arrived) if i == 0 or t - arrived[i - 1] > gap_s]
    period = [round((b - a) * 1000, 1) for a, b in itertools.pairwise(starts)]
    return {
        "gap_ms": round(gap_s * 1000),
        "count": len(starts),
        "period_ms_median": float(np.median(period)) if period else None,
        "period_ms": period,
    }


def summarize(rounds: list[dict[str, Any]], variant: str) -> dict[str, Any]:
    mine = [r for r in rounds if r["variant"] == variant]
    samples = [s for r in mine for s in r["samples"]]
    return {
        "events": sum(r["events"] for r in mine),
        "received": sum(r["received"] for r in mine),
        "missing": sum(r["missing"] for r in mine),
        "duplicates": sum(r["duplicates"] for r in mine),
        "bad_signatures": sum(r["bad_signatures"] for r in mine),
        "latency_ms": _percentiles([s["latency_ms"] for s in samples]),
        "delete_ms": _percentiles([s["delete_ms"] for s in samples]),
        "arrived_after_answer_ms": _percentiles([s["arrived_after_answer_ms"] for s in samples]),
        "latencies_ms": [s["latency_ms"] for s in samples],
    }


def markdown(results: dict[str, Any]) -> list[str]:
    c = results["config"]
    s = results["summary"]
    lines = [
        f"{c['rounds']} round(s) × {c['events_per_round']} events per variant (after "
        f"{c['warmup_events']} warm-up events each, not recorded), variants alternating "
        f"round by round; one cancel (`DELETE /v1/jobs/{{id}}` of a queued job) started "
        f"every {c['pace_ms']} ms, sequentially; notify.poll_s = {c['poll_s']} s. Latency: "
        "the receiver's arrival time minus the event's `created_at` (the state change), "
        "same clock. Each variant has its own frontend (1 worker, own SQLite database), "
        "both started once over one embedded Triton.",
        "",
        "| variant | events | received | dup. | p50 ms | p90 ms | p99 ms | max ms | mean ms "
        "| DELETE p50 / p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in VARIANTS:
        v = s[name]
        lat, dm = v["latency_ms"], v["delete_ms"]
        lines.append(
            f"| {VARIANTS[name]} | {v['events']} | {v['received']} | {v['duplicates']} "
            f"| {lat['p50']} | {lat['p90']} | {lat['p99']} | {lat['max']} | {lat['mean']} "
            f"| {dm['p50']} / {dm['p99']} |"
        )
    lines += [
        "",
        "Per round (bursts: arrivals more than the gap apart start a new one; for the "
        "standalone notifier one burst is one outbox read, so their spacing is its real "
        "read period):",
        "",
        "| round | variant | received / events | p50 ms | p99 ms | max ms | bursts "
        "| burst spacing, median ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["rounds"]:
        lat, b = r["latency_ms"], r["arrival_bursts"]
        lines.append(
            f"| {r['tag']} | {r['variant']} | {r['received']} / {r['events']} | {lat['p50']} "
            f"| {lat['p99']} | {lat['max']} | {b['count']} | {b['period_ms_median'] or '–'} |"
        )
    problems = [
        f"{name}: {v[k]} {k.replace('_', ' ')}"
        for name, v in s.items()
        for k in ("missing", "duplicates", "bad_signatures")
        if v[k]
    ]
    clean = "none (0 missing, 0 duplicates, every signature verified)."
    lines += ["", "Problems: " + ("; ".join(problems) if problems else clean)]
    return lines


def plot(out: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["summary"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"in_process": "tab:blue", "standalone": "tab:orange"}
    for name in VARIANTS:
        values = np.sort(np.asarray(s[name]["latencies_ms"], dtype=float))
        if values.size:
            y = np.arange(1, values.size + 1) / values.size
            lat = s[name]["latency_ms"]
            left.step(
                values,
                y,
                where="post",
                color=colors[name],
                label=f"{name}: p50 {lat['p50']} / p99 {lat['p99']} ms",
            )
    left.set_xscale("log")
    left.set_xlabel("state change → receiver (ms, log)")
    left.set_ylabel("share of events")
    left.set_title("delivery latency, CDF")
    left.grid(True, which="both", alpha=0.3)
    poll_ms = results["config"]["poll_s"] * 1000
    left.axvline(poll_ms, color="gray", linestyle=":", label=f"poll_s ({poll_ms:g} ms)")
    left.legend(loc="center", fontsize=8)
    rounds = results["rounds"]
    data = [[x["latency_ms"] for x in r["samples"]] or [np.nan] for r in rounds]
    labels = [f"{r['variant']}\n{r['tag']}" for r in rounds]
    box = right.boxplot(data, patch_artist=True, whis=(1, 99))
    for patch, r in zip(box["boxes"], rounds, strict=True):
        patch.set_facecolor(colors[r["variant"]])
    right.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
    right.set_yscale("log")
    right.set_ylabel("latency (ms, log; whiskers p1–p99)")
    right.set_title("per round, in the order run")
    fig.tight_layout()
    fig.savefig(out / "notify.png", dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.notify")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, help="events per round per variant")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--warmup", type=int, default=5, help="events per variant, not kept")
    parser.add_argument("--pace-ms", type=float, default=50.0, help="between cancel starts")
    parser.add_argument("--wait-s", type=float, default=30.0, help="for the last deliveries")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    args.events = args.events or (50 if args.quick else 100)
    args.rounds = args.rounds or (1 if args.quick else 2)
    return args


def start_variants(triton_grpc: str, repository: Path, scratch: Path) -> dict[str, Variant]:
    common = {
        "INFERGATE_JOBS__EXECUTOR": "off",
        "INFERGATE_JOBS__MIN_FREE_BYTES": "0",
        "INFERGATE_NOTIFY__ALLOW_LOOPBACK": "true",
        "INFERGATE_NOTIFY__POLL_S": str(POLL_S),
    }
    variants: dict[str, Variant] = {}
    try:
        (scratch / "a").mkdir()
        a = start_frontend(
            triton_grpc,
            repository,
            workers=1,
            env_extra={
                **common,
                "INFERGATE_JOBS__STORAGE_DIR": str(scratch / "a"),
                "INFERGATE_NOTIFY__DISPATCHER": "on",
            },
        )
        variants["in_process"] = Variant("in_process", a, None)
        # (b): our own database and secret, so that the notifier can share them.
        (scratch / "b").mkdir()
        shared = {
            "INFERGATE_DATABASE__URL": f"sqlite+aiosqlite:///{(scratch / 'b.db').resolve()}",
            "INFERGATE_SECRET_KEY": secrets.token_urlsafe(32),
        }
        b = start_frontend(
            triton_grpc,
            repository,
            workers=1,
            env_extra={
                **common,
                **shared,
                "INFERGATE_JOBS__STORAGE_DIR": str(scratch / "b"),
                "INFERGATE_NOTIFY__DISPATCHER": "off",
            },
        )
        metrics_port = free_port()
        log = (scratch / "notifier.log").open("wb")
        notifier = start_python(
            ["-m", "frontend", "notifier", "--metrics-port", str(metrics_port)],
            env={
                **shared,
                "INFERGATE_NOTIFY__ALLOW_LOOPBACK": "true",
                "INFERGATE_NOTIFY__POLL_S": str(POLL_S),
                "INFERGATE_LOG__LEVEL": "WARNING",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        variants["standalone"] = Variant("standalone", b, notifier)
        # Its Prometheus port answers once it runs (the warm-up shows that it delivers).
        wait_http(f"http://127.0.0.1:{metrics_port}/metrics", proc=notifier)
    except BaseException:
        for v in variants.values():
            v.close()
        raise
    return variants


def _print_notifier_log(scratch: Path) -> None:
    path = scratch / "notifier.log"
    if path.exists() and path.stat().st_size:
        tail = path.read_bytes()[-4000:].decode(errors="replace")
        print("notifier log (last 4000 bytes):\n" + tail)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    began = time.time()
    pace_s = args.pace_ms / 1000
    scratch = Path(tempfile.mkdtemp(prefix="infergate-bench-notify-"))
    receiver = Receiver().start()
    triton = EmbeddedTriton(args.repository, TritonPorts.free()).start(300)
    variants: dict[str, Variant] = {}
    rounds: list[dict[str, Any]] = []
    log: dict[str, Any] = {}
    stopped: dict[str, Any] = {}
    finished = False
    try:
        variants = start_variants(triton.grpc_url, args.repository, scratch)
        for v in variants.values():
            v.register(receiver)
        for v in variants.values():  # warm-up: the first deliveries of each, not recorded
            warm = run_round(v, receiver, args.warmup, pace_s, args.wait_s, "warm-up")
            if warm["missing"]:
                raise RuntimeError(f"{v.name}: {warm['missing']} warm-up events never arrived")
        for round_ in range(args.rounds):
            order = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
            for name in order:
                row = run_round(
                    variants[name], receiver, args.events, pace_s, args.wait_s, str(round_)
                )
                rounds.append(row)
                print(
                    json.dumps({k: v for k, v in row.items() if k != "samples"}),
                    flush=True,
                )
        log = {name: v.delivery_log() for name, v in variants.items()}
        finished = True
    finally:
        for name, v in variants.items():
            stopped[name] = v.close()
        triton.stop()
        receiver.stop()
        if not finished or any(
            s.get("notifier_exit_code") not in (None, 0) for s in stopped.values()
        ):
            _print_notifier_log(scratch)
        shutil.rmtree(scratch, ignore_errors=True)
    results: dict[str, Any] = {
        "config": {
            "command": "python -m benchmarks.notify" + (" --quick" if args.quick else ""),
            "rounds": args.rounds,
            "events_per_round": args.events,
            "warmup_events": args.warmup,
            "pace_ms": args.pace_ms,
            "pacing": "sequential cancels, one started every pace_ms (never two in flight)",
            "poll_s": POLL_S,
            "variants": VARIANTS,
            "topology": "one frontend per variant (1 worker, own SQLite database, started "
            "once), both over one embedded Triton; (b) adds `python -m frontend notifier` "
            "on (b)'s database; rounds alternate the variants' order",
            "latency": "receiver arrival time.time() - event created_at (the state change)",
            "wall_seconds": round(time.time() - began, 1),
        },
        "machine": machine(),
        "rounds": rounds,
        "summary": {name: summarize(rounds, name) for name in VARIANTS},
        "frontend_delivery_log": log,
        "shutdown": stopped,
    }
    out = args.out / (time.strftime("%Y-%m-%d_%H%M%S") + "-notify")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "report.md").write_text(
        "# Job notifications: delivery latency\n\n" + "\n".join(markdown(results)) + "\n"
    )
    plot(out, results)
    print("\n".join(markdown(results)))
    print(f"report: {out}")


if __name__ == "__main__":
    main()
