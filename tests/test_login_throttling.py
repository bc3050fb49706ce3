"""The login script under AWS throttling, with the real aws CLI against an AWS endpoint that
throttles as AWS does (a small HTTP server: moto has no throttling of its own).

- ECR's API answers ``ThrottleException`` (the name ECR's troubleshooting page gives), which the
  CLI's retry modes do not count as throttling: login.sh tries the login again itself, with a
  jittered, doubling wait, and counts it in ``login-retries``;
- STS answers ``Throttling``, which the CLI retries itself (``AWS_RETRY_MODE=standard``, up to
  ``AWS_MAX_ATTEMPTS`` calls): login.sh does not multiply those, and a throttle that never lifts
  fails with the CLI's words, which the operator turns into what to change
  (airflow_ecr_promote/throttling.py).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from airflow_ecr_promote.pod import AWS_RETRY_ENV
from airflow_ecr_promote.throttling import login_throttled
from tests.test_login_script import SOURCE_ROLE, decode, init_env, run_login

pytestmark = pytest.mark.moto


class ThrottlingAws:
    """ECR's GetAuthorizationToken throttled ``ecr_refusals`` times, STS always when ``sts_throttled``."""

    def __init__(self, ecr_refusals: int, sts_throttled: bool = False) -> None:
        self.ecr_refusals = ecr_refusals
        self.sts_throttled = sts_throttled
        self.calls: list[str] = []


@pytest.fixture
def throttling_aws() -> Iterator[tuple[str, ThrottlingAws]]:
    state = ThrottlingAws(0)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            target = self.headers.get("X-Amz-Target") or "sts"
            with lock:
                state.calls.append(target.rsplit(".", 1)[-1])
                refuse = "GetAuthorizationToken" in target and state.ecr_refusals > 0
                if refuse:
                    state.ecr_refusals -= 1
            if target == "sts":
                body = (
                    b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender'
                    b"</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
                    b"<RequestId>1</RequestId></ErrorResponse>"
                )
                self._answer(400 if state.sts_throttled else 500, body, "text/xml")
            elif refuse:
                self._answer(400, b'{"__type":"ThrottleException","message":"Rate exceeded"}')
            else:
                token = base64.b64encode(b"AWS:123456789012-auth-token").decode()
                data = {"authorizationToken": token, "expiresAt": 1.7e9, "proxyEndpoint": "https://x"}
                self._answer(200, json.dumps({"authorizationData": [data]}).encode())

        def _answer(self, status: int, body: bytes, kind: str = "application/x-amz-json-1.1") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def test_the_pod_states_its_aws_cli_retries() -> None:
    env = init_env("skopeo", source_role=None, dest_role=None)
    assert {k: env[k] for k in AWS_RETRY_ENV} == {"AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "10"}


@pytest.mark.timeout(120)
def test_ecr_throttle_exception_is_ridden_out_by_the_script_and_counted(
    tmp_path: Path, throttling_aws: tuple[str, ThrottlingAws]
) -> None:
    url, aws = throttling_aws
    aws.ecr_refusals = 3
    env = init_env("skopeo", source_role=None, dest_role=None)
    done = run_login(tmp_path, url, env)
    assert done.returncode == 0, done.stderr
    assert aws.calls.count("GetAuthorizationToken") == 5, "two logins, three of their calls refused"
    assert done.stderr.count("throttled logging in to") == 3
    assert (tmp_path / "auth" / "login-retries").read_text() == "3\n"
    assert decode(tmp_path / "auth" / "auth-source.json")


@pytest.mark.timeout(120)
def test_sts_throttling_that_never_lifts_fails_after_the_cli_retries_naming_the_api_and_the_fixes(
    tmp_path: Path, throttling_aws: tuple[str, ThrottlingAws]
) -> None:
    url, aws = throttling_aws
    aws.sts_throttled = True
    env = {**init_env("skopeo", dest_role=SOURCE_ROLE), "AWS_MAX_ATTEMPTS": "3"}
    done = run_login(tmp_path, url, env)
    assert done.returncode == 1
    reason = (tmp_path / "termination-log").read_text()
    assert "(Throttling) when calling the AssumeRole operation (reached max retries: 2)" in reason, reason
    assert aws.calls.count("sts") == 6, (
        "two logins, the CLI's 3 attempts each, not multiplied by the script's own"
    )
    advice = login_throttled(reason)
    assert advice is not None
    assert advice.startswith("STS throttled AssumeRole (Throttling), still after the AWS CLI's retries")
    assert "a smaller Airflow pool" in advice and "parallel=" in advice and "quota" in advice


def test_other_login_failures_get_no_throttling_advice() -> None:
    text = "cannot assume role r: An error occurred (AccessDenied) when calling the AssumeRole operation: no"
    assert login_throttled(text) is None
