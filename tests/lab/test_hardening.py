"""Pod hardening checked where it runs: on the lab's real Kubernetes, containerd applies the
operator's security contexts (read back from the OCI spec it gave runc) and the promotion still
works (non-root, read-only root filesystem, no capabilities, no new privileges).
"""

from __future__ import annotations

import pytest

from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .cluster import Cluster
from .lab import Lab
from .operator_run import lab_conf, run_task

pytestmark = [pytest.mark.lab, pytest.mark.cluster]

REPO = "hardening/app"


@pytest.fixture(autouse=True)
def destination_repository(lab: Lab) -> None:
    """The destination repository exists, as ECR needs (made once, as IaC would)."""
    lab.create_repository(DEST_ACCOUNT, REPO)


@pytest.mark.parametrize("engine", ["skopeo", "crane", "regctl"])
def test_copier_runs_non_root_read_only_without_capabilities(lab: Lab, cluster: Cluster, engine: str) -> None:
    tag = f"1.0-{engine}"
    digest = lab.push_image(SOURCE_ACCOUNT, REPO, tag, seed=500)
    run = run_task(
        cluster,
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


def test_login_container_runs_non_root_read_only_and_still_logs_in(lab: Lab, cluster: Cluster) -> None:
    """The kubelet keeps an init container that succeeded until its pod goes, so what containerd
    applied to the operator's login container is read from the promotion's own pod."""
    lab.push_image(SOURCE_ACCOUNT, REPO, "1.1", seed=501)
    run = run_task(
        cluster,
        conf=lab_conf(
            lab,
            source_image=f"{SOURCE_HOST}/{REPO}:1.1",
            dest_image=f"{DEST_HOST}/{REPO}:1.1",
            engine="skopeo",
        ),
    )
    assert run.error is None, "\n".join(run.log[-30:])
    login_name = run.pods[0].spec.init_containers[0].name
    login = run.outcomes[0].container(login_name)
    assert login.exit_code == 0, login.logs
    assert "got a password for" in login.logs
    assert login.applied["user"].split(":")[0] == "65532"
    assert login.applied["read_only_root"] is True
    assert login.applied["effective_caps"] == []
    assert login.applied["no_new_privileges"] is True
