"""The manifest printed by `airflow-ecr-promote render` promotes an image when it runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_ecr_promote.result import parse_summary
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .lab import Lab
from .runner import play_pod

pytestmark = pytest.mark.lab


def test_rendered_job_pod_template_promotes_an_image(lab: Lab) -> None:
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
    template = job["spec"]["template"]
    metadata = {**template["metadata"], "name": job["metadata"]["name"]}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
    outcome = play_pod(lab, pod)
    assert outcome.phase == "Succeeded", [c.message or c.logs for c in outcome.containers]
    assert lab.digest(DEST_ACCOUNT, repo, tag) == digest
    message = outcome.container("base").message
    summary = parse_summary(message)
    assert summary is not None and (summary.copies, summary.failed) == (1, 0), message
    assert f"1 copied {digest} {digest}" in message.split("\n"), message
