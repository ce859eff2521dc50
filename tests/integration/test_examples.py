"""The README's example works as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_raw_text_example(triton):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "triton_raw_text.py"), "--url", triton.grpc_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "intent v1: [('connect_to_human'" in out
    assert "intent v2: [('connect_to_human'" in out
    assert "sentiment: [('positive'" in out and "('negative'" in out
    assert "embed: (1, 384) norm=1.0000" in out


def test_curl_examples_printed_by_serve_work(frontend):
    import json
    import shlex

    from frontend.__main__ import EXAMPLES

    printed = EXAMPLES.format(host="127.0.0.1", port=frontend.port)
    readme = (
        (ROOT / "README.md").read_text().replace("127.0.0.1:8000", f"127.0.0.1:{frontend.port}")
    )
    text = (printed + "\n" + readme).replace("\\\n", " ")
    commands = [line.strip() for line in text.splitlines() if line.strip().startswith("curl ")]
    assert len(commands) >= 11
    for command in commands:
        out = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=30, check=True
        ).stdout
        body = json.loads(out)
        assert "error" not in body, (command, body)
