"""The README's example works as written."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ADMIN_KEY

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
# Where the README's `examples/sample_images.py` writes the photos its image curl sends.
SAMPLES = ROOT / ".infergate" / "samples"


def write_sample_images(folder: Path) -> list[Path]:
    """examples/sample_images.py's `write`, as the README's line before the image curl
    runs it (examples/ is not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location(
        "sample_images", ROOT / "examples" / "sample_images.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write(folder)


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


def test_raw_inputs_example(triton, tmp_path):
    """examples/triton_raw_inputs.py against the real models: run from an empty folder, it
    writes the sample cat there itself (no --image) and sends its bytes as they are."""
    from export.image_export import CAT_CLASSES

    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "triton_raw_inputs.py"), "--url", triton.grpc_url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    assert set(lines) == {"ner", "pii", "imagenet", "summarize"}, out
    assert ("Ada Lovelace", "PERSON") in ast.literal_eval(lines["ner"])
    assert "EMAIL" in {label for _, label in ast.literal_eval(lines["pii"])}
    label, score, (width, height) = ast.literal_eval(lines["imagenet"])
    assert label in CAT_CLASSES and 0 < score <= 1
    assert (width, height) == (451, 300)  # scikit-image's chelsea, as decoded
    assert (tmp_path / ".infergate" / "samples" / "cat.jpg").is_file()
    assert lines["summarize"].strip()


def test_curl_examples_printed_by_serve_work(frontend):
    import json

    from frontend.__main__ import EXAMPLES

    printed = EXAMPLES.format(host="127.0.0.1", port=frontend.port, key_hint="")
    readme = (
        (ROOT / "README.md").read_text().replace("127.0.0.1:8000", f"127.0.0.1:{frontend.port}")
    )
    # Scripts, each run by a test below.
    readme = readme.replace(walkthrough(readme), "").replace(batch_example(readme), "")
    text = (printed + "\n" + readme).replace("\\\n", " ")
    commands = [line.strip() for line in text.splitlines() if line.strip().startswith("curl ")]
    assert len(commands) >= 15
    assert any("-F file=@.infergate/samples/cat.jpg" in c for c in commands)
    # The README runs examples/sample_images.py first; its image curl reads the files
    # from the folder `make serve` runs in.
    write_sample_images(SAMPLES)
    env = {**os.environ, "IG_ADMIN_KEY": ADMIN_KEY}
    for command in commands:
        # Through a shell, as a reader would paste them ($IG_ADMIN_KEY expands).
        out = subprocess.run(
            ["bash", "-c", command],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            env=env,
            cwd=ROOT,
        ).stdout
        body = json.loads(out)
        assert "error" not in body, (command, body)


def walkthrough(readme: str) -> str:
    section = readme.split("### Authenticate and check your usage", 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def batch_example(readme: str) -> str:
    section = readme.split("### Run a batch job", 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def test_readme_batch_job_example_works_as_written(frontend):
    """Submit, follow the events to the end, download the results as CSV: the CSV's
    labels are the predict route's for the same texts."""
    import csv
    import io

    import httpx

    readme = (
        (ROOT / "README.md").read_text().replace("127.0.0.1:8000", f"127.0.0.1:{frontend.port}")
    )
    env = {**os.environ, "IG_ADMIN_KEY": ADMIN_KEY}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", batch_example(readme)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "event: done" in out and '"state":"succeeded"' in out.replace(" ", "")
    table = list(csv.DictReader(io.StringIO(out[out.rindex("\nrow,") + 1 :])))
    texts = ["What a wonderful film!", "Dull and far too long."]
    sync = httpx.post(
        f"{frontend.url}/v1/models/sentiment/predict",
        headers={"X-API-Key": ADMIN_KEY},
        json={"inputs": texts},
        timeout=60,
    ).json()["predictions"]
    assert [row["row"] for row in table] == ["1", "2"]
    assert [row["label"] for row in table] == [p["label"] for p in sync]


def test_readme_auth_walkthrough_works_as_written(frontend):
    readme = (
        (ROOT / "README.md").read_text().replace("127.0.0.1:8000", f"127.0.0.1:{frontend.port}")
    )
    script = walkthrough(readme)
    env = {**os.environ, "IG_ADMIN_KEY": ADMIN_KEY}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert '"key":"ig_live_' in out and '"tier":"free"' in out  # the key, shown once
    assert '"username":"ada"' in out and "password" not in out
    assert "HTTP/1.1 200" in out and '"label":"positive"' in out
    assert 'ratelimit-policy: "pro.minute";q=100;w=60, "pro.day";q=10000;w=86400' in out.lower()
    assert '"tier":"pro"' in out and '"requests":[' in out  # /v1/usage
    assert '"ledger":{' in out and '"group_by":"model"' in out  # /v1/usage?group_by=model
    assert '"scopes":{"models":["intent"]' in out and '"requests_per_minute":60' in out
    assert '"previous_valid_until":' in out and '"action":"key.rotate"' in out  # audit
    assert out.count('"access_token"') == 1  # the refresh answer (login went to a variable)
    assert out.rstrip().endswith("204")


def test_readme_chat_example_works_as_written(frontend, tmp_path):
    """The openai-client example of the README's tour ("Generate text"), run as a
    script from a folder holding the dev key file that `serve` writes."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Generate text", 1)[1]
    script = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "http://localhost:8000/v1" in script
    (tmp_path / ".infergate").mkdir()
    (tmp_path / ".infergate" / "admin.key").write_text(ADMIN_KEY + "\n")
    (tmp_path / "example.py").write_text(script.replace("http://localhost:8000", frontend.url))
    out = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert len(out.split()) >= 5  # a streamed haiku, printed piece by piece
