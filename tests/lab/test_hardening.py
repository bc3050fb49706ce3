"""Pod hardening checked where it runs: podman applies the operator's security contexts and the
promotion still works (non-root, read-only root filesystem, no capabilities, no new privileges).
"""

from __future__ import annotations

import copy

import pytest
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .lab import Lab
from .operator_run import lab_conf, run_task
from .runner import play_pod

pytestmark = pytest.mark.lab

REPO = "hardening/app"


@pytest.fixture(autouse=True)
def destination_repository(lab: Lab) -> None:
    """The destination repository exists, as ECR needs (made once, as IaC would)."""
    lab.create_repository(DEST_ACCOUNT, REPO)


@pytest.mark.parametrize("engine", ["skopeo", "crane", "regctl"])
def test_copier_runs_non_root_read_only_without_capabilities(lab: Lab, engine: str) -> None:
    tag = f"1.0-{engine}"
    digest = lab.push_image(SOURCE_ACCOUNT, REPO, tag, seed=500)
    run = run_task(
        lab,
        conf=lab_conf(
            lab,
            source_image=f"{SOURCE_HOST}/{REPO}:{tag}",
            dest_image=f"{DEST_HOST}/{REPO}:{tag}",
            engine=engine,
        ),
    )
    assert run.error is None, "\n".join(run.log[-30:])
    assert lab.digest(DEST_ACCOUNT, REPO, tag) == digest
    copier = run.outcomes[0].container("base")
    assert copier.applied["user"].split(":")[0] == "65532"
    assert copier.applied["read_only_root"] is True
    assert copier.applied["effective_caps"] == []
    assert copier.applied["no_new_privileges"] is True


def test_login_container_runs_non_root_read_only_and_still_logs_in(lab: Lab) -> None:
    """podman removes init containers that succeed, so the operator's login container runs here,
    unchanged, as the main container of a pod of its own, to see what podman applied to it."""
    lab.push_image(SOURCE_ACCOUNT, REPO, "1.1", seed=501)
    captured: list[k8s.V1Pod] = []

    def keep(pod: k8s.V1Pod) -> k8s.V1Pod:
        captured.append(copy.deepcopy(pod))
        return pod

    run_task(
        lab,
        conf=lab_conf(
            lab,
            source_image=f"{SOURCE_HOST}/{REPO}:1.1",
            dest_image=f"{DEST_HOST}/{REPO}:1.1",
            engine="skopeo",
        ),
        prepare=keep,
    )
    pod = captured[0]
    login = pod.spec.init_containers[0]
    pod.spec.init_containers = None
    pod.spec.containers = [login]
    outcome = play_pod(lab, ApiClient().sanitize_for_serialization(pod))
    result = outcome.container(login.name)
    assert result.exit_code == 0, result.logs
    assert "got a password for" in result.logs
    assert result.applied["user"].split(":")[0] == "65532"
    assert result.applied["read_only_root"] is True
    assert result.applied["effective_caps"] == []
    assert result.applied["no_new_privileges"] is True
