"""Shared test helpers: a run's own Airflow home and database, a moto_server, the CI rule.

A test that needs something this machine lacks skips with the reason, except under CI=true,
where CI is expected to have installed it and the missing part is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.run_state import isolate, migrate_airflow_db

REPO = Path(__file__).resolve().parent.parent
# Before Airflow is imported (it reads its home once): a folder of this run's own.
RUN_STATE = isolate(REPO / "dags" / "examples")
IN_CI = os.environ.get("CI", "").lower() == "true"
SOURCE_ACCOUNT, SOURCE_REGION = "123456789012", "us-west-2"
DEST_ACCOUNT, DEST_REGION = "210987654321", "us-east-1"
SOURCE_HOST = f"{SOURCE_ACCOUNT}.dkr.ecr.{SOURCE_REGION}.amazonaws.com"
DEST_HOST = f"{DEST_ACCOUNT}.dkr.ecr.{DEST_REGION}.amazonaws.com"


def require(condition: object, reason: str) -> None:
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI prerequisite missing: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def aws_cli() -> str | None:
    """An aws CLI that honours AWS_ENDPOINT_URL (v1 from PyPI, or v2 >= 2.13)."""
    candidates = [os.environ.get("ECR_PROMOTE_TEST_AWS"), str(REPO / ".venv-awscli/bin/aws")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="session", autouse=True)
def airflow_db() -> Path:
    """This run's metadata database, migrated once per session (connections, variables, XCom)."""
    return migrate_airflow_db()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A real moto_server on 127.0.0.1 answering STS and ECR; yields its URL."""
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    require(exe, "moto_server is not installed (pip install 'moto[server]')")
    port = free_port()
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("moto_server did not start in 30 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
