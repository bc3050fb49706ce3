"""The manifest printed by `airflow-ecr-promote render` promotes an image when it runs: applied
with the lab's built kubectl to the lab's real Kubernetes, whose Job controller runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_ecr_promote.result import parse_summary
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .cluster import NAMESPACE, SERVICE_ACCOUNT, Cluster
from .lab import Lab

pytestmark = [pytest.mark.lab, pytest.mark.cluster]


def finished_job(cluster: Cluster, name: str, timeout: float = 240.0) -> dict[str, object]:
    """The Job once its controller reports it succeeded or failed."""
    deadline = time.monotonic() + timeout
    while True:
        job = json.loads(cluster.kubectl("get", "job", name, "-n", NAMESPACE, "-o", "json").stdout)
        status = job.get("status") or {}
        if status.get("succeeded") or status.get("failed"):
            return dict(job)
        assert time.monotonic() < deadline, f"job {name} still running after {timeout}s: {status}"
        time.sleep(1)


def test_rendered_job_promotes_an_image(lab: Lab, cluster: Cluster) -> None:
    repo, tag = "render/app", "7.0.0"
    lab.create_repository(DEST_ACCOUNT, repo)  # the destination repository exists, as in ECR
    digest = lab.push_image(SOURCE_ACCOUNT, repo, tag, seed=700)
    command = Path(sys.executable).parent / "airflow-ecr-promote"
    done = subprocess.run(
        [
            str(command),
            "render",
            "--source-image", f"{SOURCE_HOST}/{repo}:{tag}",
            "--dest-image", f"{DEST_HOST}/{repo}:{tag}",
            "--source-role-arn", "arn:aws:iam::123456789012:role/ecr-promote-pull",
            "--dest-role-arn", "arn:aws:iam::210987654321:role/ecr-promote-push",
            "--engine", "skopeo",
            "--init-image", lab.init_image,
            "--copier-image", lab.copier_image,
            "--output", "json",
            "--namespace", NAMESPACE,
            "--service-account", SERVICE_ACCOUNT,
        ],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["kind"] == "Job"
    assert job["spec"]["backoffLimit"] == 0
    name = job["metadata"]["name"]
    cluster.kubectl("apply", "-f", "-", input=done.stdout)
    try:
        status = finished_job(cluster, name)["status"]
        pods = json.loads(
            cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", f"job-name={name}", "-o", "json").stdout
        )["items"]
    finally:
        cluster.kubectl("delete", "job", name, "-n", NAMESPACE, "--cascade=foreground", "--wait=true")
    assert len(pods) == 1, "backoffLimit 0: one pod"
    base = next(c for c in pods[0]["status"]["containerStatuses"] if c["name"] == "base")
    message = base["state"]["terminated"].get("message", "")
    assert status.get("succeeded") == 1, (status, message)
    assert lab.digest(DEST_ACCOUNT, repo, tag) == digest
    summary = parse_summary(message)
    assert summary is not None and (summary.copies, summary.failed) == (1, 0), message
    assert f"1 copied {digest} {digest}" in message.split("\n"), message
