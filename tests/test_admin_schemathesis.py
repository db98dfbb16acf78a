""" The admin API fuzzed by schemathesis against a live server process, through the OpenAPI
document the server serves, valid and invalid requests alike: any 5xx, any undocumented status,
content type or header, and any response that does not match its schema fails the test, with
schemathesis's findings (each with a curl line to reproduce it) printed.

Bounded: `ZATO_SCHEMATHESIS_MAX_TIME` seconds of testing (90 by default), at most
`ZATO_SCHEMATHESIS_MAX_EXAMPLES` cases per operation and phase (5), seed `ZATO_SCHEMATHESIS_SEED`
(fixed, so a CI failure reproduces; set another to explore). `ZATO_SCHEMATHESIS_REPORT_DIR` keeps
the reports (JSON, and the cases as a pytest file) instead of a temporary directory.

    .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_admin_schemathesis.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from zato.testing import ServerProcess, admin_auth, create_test_server_dir

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance")
# Invalid requests are generated too (they must get a documented 4xx, never a 5xx). Not run:
# negative_data_rejection (it wants unknown query parameters refused, which HTTP APIs ignore, and
# counts a request as unauthenticated although --auth adds the credentials back: flaky either
# way; tests/test_admin_openapi.py checks the bad values it found), positive_data_acceptance (a
# valid body may name an object that does not exist, and "at least one of these query
# parameters" cannot be said in OpenAPI), ignored_auth (it sends wrong credentials, and the login
# throttle makes every later attempt slower).
MAX_TIME = int(os.environ.get("ZATO_SCHEMATHESIS_MAX_TIME", "60"))  # seconds of fuzzing; more locally when changing the API
MAX_EXAMPLES = int(os.environ.get("ZATO_SCHEMATHESIS_MAX_EXAMPLES", "5"))
SEED = os.environ.get("ZATO_SCHEMATHESIS_SEED", "1")
OUTPUT_TAIL = 20_000  # characters of schemathesis's output shown on failure


def _operations(document: dict) -> list[str]:
    return [f"{method.upper()} {path}" for path, item in document["paths"].items()
            for method in item if method != "parameters"]


# Operations whose gateway errors are documented answers, not crashes: invoking or disconnecting a
# WebSocket connection answers 502 when the process holding it does not answer and 504 when the
# client does not answer in time (the outgoing_wsx connections the fuzzer creates may connect to the
# server's own channels, so such connections exist during the run)
GATEWAY_ERRORS = """
[[operations]]
include-path-regex = "^/zato/api/wsx/connections/"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "502", "504"]
"""


def _run_schemathesis(schema_path: Path, address: str, report_dir: Path) -> tuple[int, str, dict]:
    (report_dir / "schemathesis.toml").write_text(GATEWAY_ERRORS)  # read from the working directory
    user, password = admin_auth()
    report = report_dir / "schemathesis.json"
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", str(schema_path), "--url", address,
        "--auth", f"{user}:{password}", "--checks", ",".join(CHECKS),
        "--max-examples", str(MAX_EXAMPLES), "--max-time", str(MAX_TIME), "--seed", SEED,
        # one worker: several make Python 3.11's ast module race inside hypothesis (a crash of the tool)
        "--workers", "1", "--request-timeout", "20", "--generation-database", "none", "--no-color",
        "--report", "json,pytest", "--report-json-path", str(report),
        "--report-pytest-path", str(report_dir / "test_reproduce_failures.py"),
    ]
    started = time.monotonic()
    done = subprocess.run(command, cwd=report_dir, capture_output=True, text=True, timeout=MAX_TIME + 120,
                          env={**os.environ, "NO_COLOR": "1", "COLUMNS": "120"})
    output = done.stdout + done.stderr
    print(f"schemathesis ran {time.monotonic() - started:.0f} s, exit code {done.returncode}; reports in {report_dir}")
    return done.returncode, output, json.loads(report.read_text()) if report.exists() else {}


def test_the_admin_api_answers_as_its_openapi_document_says(tmp_path):
    report_dir = Path(os.environ.get("ZATO_SCHEMATHESIS_REPORT_DIR") or tmp_path / "report")
    report_dir.mkdir(parents=True, exist_ok=True)
    server_dir = create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 3})
    with ServerProcess(server_dir) as server:
        reply = httpx.get(f"{server.address}/zato/api/openapi.json", auth=admin_auth(), timeout=30)
        assert reply.status_code == 200, reply.text
        document = reply.json()
        schema_path = report_dir / "openapi.json"
        schema_path.write_text(json.dumps(document, indent=1))

        code, output, report = _run_schemathesis(schema_path, server.address, report_dir)

        still_up = httpx.get(f"{server.address}/zato/ping", timeout=10).status_code == 200
        server_log = (server_dir / "logs" / "server.log").read_text("utf-8", "replace")
    unhandled = [line for line in server_log.splitlines() if "unhandled error" in line]

    findings = output[-OUTPUT_TAIL:]
    assert report, f"schemathesis wrote no report (exit code {code}):\n{findings}"
    assert still_up, f"the server stopped answering during the run:\n{server.output()[-5000:]}"
    failures = [f"{f['code']} {f['title']}: {', '.join(f['operations'])}" for f in report.get("failures", [])]
    errors = [f"{e['title']} ({e['count']})" for e in report.get("errors", [])]
    assert not failures and not errors and code == 0, (
        "schemathesis found that the admin API and its OpenAPI document disagree:\n  "
        + "\n  ".join(failures + errors) + f"\n\nits findings (each with a curl line to reproduce it):\n{findings}")
    assert not unhandled, "the server logged unhandled errors:\n" + "\n".join(unhandled[:20])

    # It must not pass vacuously: every kind of admin call in the document, most operations
    # tested, with many requests.
    assert {"/zato/api/deploy/{file_name}", "/zato/api/invoke/{service}", "/zato/api/pubsub/topics",
            "/zato/api/scheduler/jobs", "/zato/metrics", "/zato/api/config/reload"} <= set(document["paths"])
    operations = _operations(document)
    assert len(operations) >= 60, operations
    tested = report["operations"]["tested"]
    assert tested >= 0.9 * len(operations), f"only {tested} of {len(operations)} operations were tested: {report}"
    assert report["test_cases"]["generated"] >= 10 * len(operations), report["test_cases"]
