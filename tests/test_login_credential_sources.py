"""Every credential source a pod can have, through the init container's one CLI start per login.

login.sh writes an AWS config profile per role whose base credentials name the pod's own
identity (``credential_source`` or, for IRSA, a ``source_profile`` with a web identity), and
asks each password with one ``aws ecr get-login-password --profile``. These tests run the real
script with the real aws CLI against a real moto_server for each source:

- static keys and IRSA (web identity): moto serves them (``AssumeRoleWithWebIdentity``);
- EKS Pod Identity and an instance profile: served by the agent on the node and by IMDS, which
  cannot run here; a small HTTP server speaks their documented protocol (the container
  credentials endpoint with its authorization token, IMDSv2 with its session token) and counts
  the requests, so each test shows the CLI took its base credentials from that source.

moto binds assumed-role keys to the role's account and its ECR password names the caller's
account, so the decoded auth files prove each password came from the role, not the base.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import DEST_HOST, SOURCE_HOST, aws_cli
from tests.test_login_script import DEST_ROLE, SOURCE_ROLE, decode, init_env, run_login

pytestmark = pytest.mark.moto

ROLE_ACCOUNTS = {SOURCE_HOST: "AWS:123456789012-auth-token", DEST_HOST: "AWS:210987654321-auth-token"}
NO_STATIC_KEYS = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_EC2_METADATA_DISABLED": "true"}
BASE_CREDENTIALS = {
    "AccessKeyId": "ASIABASEIDENTITY0001",
    "SecretAccessKey": "base-secret",
    "Token": "base-session-token",
    "Expiration": "2099-01-01T00:00:00Z",
}


@dataclass
class CredentialServer:
    """The node's credential endpoint: EKS Pod Identity's agent or IMDSv2."""

    url: str
    requests: list[str] = field(default_factory=list)


def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def pod_identity_agent(tmp_path: Path) -> Iterator[tuple[CredentialServer, Path]]:
    """The container credentials endpoint: answers only with the pod's authorization token."""
    token = tmp_path / "eks-pod-identity-token"
    token.write_text("pod-identity-jwt")
    seen: list[str] = []

    class Agent(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(f"GET {self.path} {self.headers.get('Authorization')}")
            if self.headers.get("Authorization") != "pod-identity-jwt":
                self.send_error(401)
                return
            body = json.dumps(BASE_CREDENTIALS).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    for server in serve(Agent):
        port = server.server_address[1]
        yield CredentialServer(f"http://127.0.0.1:{port}/v1/credentials", seen), token


@pytest.fixture
def imds() -> Iterator[CredentialServer]:
    """IMDSv2: a session token first, then the instance profile's role and its credentials."""
    seen: list[str] = []
    session = "imds-session-token"
    role = "node-instance-role"

    class Imds(BaseHTTPRequestHandler):
        def reply(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:
            seen.append(f"PUT {self.path}")
            if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                self.reply(200, session)
            else:
                self.reply(400, "")

        def do_GET(self) -> None:
            seen.append(f"GET {self.path}")
            if self.headers.get("X-aws-ec2-metadata-token") != session:
                self.reply(401, "")
            elif self.path == "/latest/meta-data/iam/security-credentials/":
                self.reply(200, role)
            elif self.path == f"/latest/meta-data/iam/security-credentials/{role}":
                self.reply(200, json.dumps({"Code": "Success", "Type": "AWS-HMAC", **BASE_CREDENTIALS}))
            else:
                self.reply(404, "")

        def log_message(self, *args: object) -> None:
            pass

    for server in serve(Imds):
        yield CredentialServer(f"http://127.0.0.1:{server.server_address[1]}/", seen)


def login_as(tmp_path: Path, moto_server: str, identity: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run login.sh for a skopeo promotion with two roles, the pod's own identity as given."""
    env = {**NO_STATIC_KEYS, **identity, **init_env("skopeo")}
    return run_login(tmp_path, moto_server, env)


def assert_role_passwords(tmp_path: Path, done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr
    auth = tmp_path / "auth"
    assert decode(auth / "auth-source.json") == {SOURCE_HOST: ROLE_ACCOUNTS[SOURCE_HOST]}
    assert decode(auth / "auth-dest.json") == {DEST_HOST: ROLE_ACCOUNTS[DEST_HOST]}
    assert not (auth / ".aws-config").exists(), "the profiles are removed with the passwords"
    assert [p.name for p in auth.iterdir() if p.name.startswith(".")] == []
    # the CLI caches an assumed role's credentials under ~/.aws/cli/cache: on the in-memory
    # volume, removed with the rest (and one folder per login: logins running at once raced to
    # create the shared one, "[Errno 17] File exists")
    assert not (tmp_path / ".aws").exists(), "no role credentials cached in the pod's HOME"


def test_static_keys(tmp_path: Path, moto_server: str) -> None:
    done = login_as(tmp_path, moto_server, {"AWS_ACCESS_KEY_ID": "AKIASTATIC", "AWS_SECRET_ACCESS_KEY": "s"})
    assert_role_passwords(tmp_path, done)


def test_irsa_web_identity(tmp_path: Path, moto_server: str) -> None:
    token = tmp_path / "irsa-token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.irsa.token")
    irsa = {
        "AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/airflow-worker",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
    }
    assert_role_passwords(tmp_path, login_as(tmp_path, moto_server, irsa))


def test_without_any_identity_the_login_fails_naming_the_role_and_registry(
    tmp_path: Path, moto_server: str
) -> None:
    done = login_as(tmp_path, moto_server, {})
    assert done.returncode == 1
    message = (tmp_path / "termination-log").read_text()
    assert SOURCE_ROLE in message and SOURCE_HOST in message
    assert DEST_ROLE in message and DEST_HOST in message


def test_eks_pod_identity(
    tmp_path: Path, moto_server: str, pod_identity_agent: tuple[CredentialServer, Path]
) -> None:
    agent, token = pod_identity_agent
    identity = {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": agent.url,
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token),
    }
    assert_role_passwords(tmp_path, login_as(tmp_path, moto_server, identity))
    assert agent.requests, "the base credentials came from the pod identity agent"
    assert all(r.endswith("pod-identity-jwt") for r in agent.requests)


def test_instance_profile(tmp_path: Path, moto_server: str, imds: CredentialServer) -> None:
    identity = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url, "AWS_EC2_METADATA_DISABLED": "false"}
    assert_role_passwords(tmp_path, login_as(tmp_path, moto_server, identity))
    assert "PUT /latest/api/token" in imds.requests, "IMDSv2: a session token first"
    assert any(r.startswith("GET /latest/meta-data/iam/security-credentials/") for r in imds.requests)


def test_one_cli_start_per_login(tmp_path: Path, moto_server: str) -> None:
    """Two registries with two roles: two aws CLI starts in all, not four."""
    cli = Path(str(aws_cli()))
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir()
    calls = tmp_path / "calls"
    shim = shim_dir / "aws"
    shim.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {cli} "$@"\n')
    shim.chmod(0o755)
    env = {
        **init_env("skopeo"),
        "AWS_ACCESS_KEY_ID": "AKIASTATIC",
        "AWS_SECRET_ACCESS_KEY": "s",
        "PATH": f"{shim_dir}:{cli.parent}:/usr/bin:/bin",
    }
    done = run_login(tmp_path, moto_server, env)
    assert_role_passwords(tmp_path, done)
    lines = calls.read_text().splitlines()
    assert sorted(lines) == [
        "--profile ecr-promote-1 ecr get-login-password --region us-west-2",
        "--profile ecr-promote-2 ecr get-login-password --region us-east-1",
    ]
