"""Run the stack: embedded Triton (unless --triton-url) + the frontend under uvicorn.

python -m frontend serve                      # what `make serve` runs
python -m frontend serve --workers 4          # several workers (in-process state is
                                              # per worker: use Redis for shared state)
python -m frontend serve --triton-url host:8001
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading

EXAMPLES = """
infergate is up at http://{host}:{port}  (docs: http://{host}:{port}/docs)

  curl -s http://{host}:{port}/v1/models
  curl -s http://{host}:{port}/v1/models/intent/predict -H 'Content-Type: application/json' \\
       -d '{{"inputs": ["I want to talk to a human"], "top_k": 3}}'
  curl -s http://{host}:{port}/v1/models/intent/versions/2/predict \\
       -H 'Content-Type: application/json' -d '{{"inputs": "what is my balance"}}'
  curl -s http://{host}:{port}/v1/models/sentiment/predict \\
       -H 'Content-Type: application/json' -d '{{"inputs": ["What a wonderful film!", "Dull."]}}'
  curl -s http://{host}:{port}/v1/embeddings \\
       -H 'Content-Type: application/json' -d '{{"model": "embed", "input": "hello world"}}'
  curl -s http://{host}:{port}/health/ready
"""


def _with_parent_death_signal(cmd: list[str]) -> list[str]:
    # uvicorn re-raises SIGTERM after its graceful shutdown, so this process may end before
    # any `finally` runs: the kernel then sends the launcher SIGTERM and it stops Triton.
    # (setpriv rather than a preexec_fn: no Python between fork and exec.)
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *cmd] if setpriv else cmd


def _start_triton(args: argparse.Namespace) -> subprocess.Popen[str]:
    """The launcher runs as its own process: export and frontend share no imports."""
    cmd = [
        sys.executable,
        "-m",
        "export.triton_launcher",
        "--repository",
        args.repository,
        "--grpc-port",
        str(args.triton_grpc_port),
        "--http-port",
        str(args.triton_http_port),
        "--metrics-port",
        str(args.triton_metrics_port),
    ]
    proc = subprocess.Popen(_with_parent_death_signal(cmd), stdout=subprocess.PIPE, text=True)
    ready = threading.Event()

    def watch() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            if line.startswith("Triton ready"):
                ready.set()

    threading.Thread(target=watch, daemon=True).start()
    while not ready.wait(0.5):
        if proc.poll() is not None:
            raise SystemExit(f"embedded Triton failed to start (exit code {proc.returncode})")
    return proc


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    triton = None
    if args.triton_url:
        os.environ["INFERGATE_TRITON__URL"] = args.triton_url
    else:
        triton = _start_triton(args)
        os.environ["INFERGATE_TRITON__URL"] = f"127.0.0.1:{args.triton_grpc_port}"
    os.environ["INFERGATE_TRITON__MODEL_REPOSITORY"] = args.repository
    if args.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Must be set before any worker imports prometheus_client.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="infergate-metrics-")
    print(EXAMPLES.format(host=args.host, port=args.port), flush=True)
    try:
        uvicorn.run(
            "frontend.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=30,
        )
    finally:
        if triton is not None and triton.poll() is None:
            triton.terminate()
            triton.wait(60)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m frontend")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run embedded Triton + the frontend")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--repository", default="model_repository")
    s.add_argument("--triton-url", help="use a running Triton instead of the embedded one")
    s.add_argument("--triton-grpc-port", type=int, default=8001)
    s.add_argument("--triton-http-port", type=int, default=8003)
    s.add_argument("--triton-metrics-port", type=int, default=8002)
    s.set_defaults(func=serve)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
