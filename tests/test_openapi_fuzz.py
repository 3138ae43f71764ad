"""The server's OpenAPI document, fuzzed with schemathesis against the real server: no request
gets a 5xx, every answer is one the document declares (status, content type, headers, body
schema), requests the document calls invalid are refused and valid ones are not refused for
their types. Deterministic (schemathesis' deterministic mode), a few hundred requests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bitnet.testing.server import ServerProcess

pytestmark = pytest.mark.slow  # a server process and a few hundred requests

# A request can fit the schema and still be refused with 400 for what no schema can say: a
# token id past this model's vocabulary, a prompt longer than the context. Everything else
# schema-valid must be accepted (or be 404 model_not_found, or 503 while the queue is full).
# The telemetry stream runs until the client leaves: each case asks it to end after half a
# second (its own `timeout` parameter).
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2XX", "400", "404", "503"]

[[operations]]
include-name = "GET /telemetry/events"
parameters = { "query.timeout" = 0.5 }
"""


def test_schemathesis_finds_nothing(tiny_relu2, tmp_path: Path):
    cli = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    report = tmp_path / "report.json"
    # A small context keeps every generation short, whatever max_tokens a case asks for.
    srv = ServerProcess(tiny_relu2, "-t", "1", "-c", "64", "--parallel", "2", "--queue", "64")
    try:
        proc = subprocess.run(
            [
                cli,
                "--config-file",
                str(config),
                "run",
                srv.url + "/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                "40",
                "--generation-deterministic",
                "--workers",
                "1",
                "--request-timeout",
                "60",
                "--no-color",
                "--output-sanitize",
                "false",
                "--report",
                "json",
                "--report-json-path",
                str(report),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=tmp_path,  # schemathesis keeps a cache folder where it runs
        )
    finally:
        assert srv.stop() == 0
    result = json.loads(report.read_text())
    cases = result["test_cases"]
    print(f"schemathesis: {cases['generated']} cases, {cases['with_failures']} with failures")
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert cases["generated"] >= 200 and cases["with_failures"] == 0 and not result["errors"]
    assert result["operations"]  # every operation of the document was tested
