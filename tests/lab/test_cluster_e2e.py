"""The operator on a real Kubernetes: KPO's own ``execute`` creates the pod through a real
kube-apiserver, a real kubelet runs it with containerd, and its pods reach the lab's registries,
STS and ECR by their real names through the cluster's DNS (tests/lab/cluster.py).

Selected with ``-m cluster``; the other lab tests still play pods with podman.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .cluster import NAMESPACE, Cluster
from .lab import Lab
from .operator_run import lab_conf, run_task_on_cluster

pytestmark = [pytest.mark.lab, pytest.mark.cluster, pytest.mark.timeout(300)]

REPO = "cluster/app"


def test_skopeo_promotes_a_two_platform_image_with_its_digest(lab: Lab, cluster: Cluster) -> None:
    lab.create_repository(DEST_ACCOUNT, REPO)
    digest = lab.push_image(SOURCE_ACCOUNT, REPO, "3.0.0", seed=31)
    conf = lab_conf(
        lab,
        source_image=f"{SOURCE_HOST}/{REPO}:3.0.0",
        dest_image=f"{DEST_HOST}/{REPO}:3.0.0",
        engine="skopeo",
    )
    run = run_task_on_cluster(cluster, conf=conf)
    assert run.error is None, "\n".join(run.log[-40:])
    assert lab.digest(DEST_ACCOUNT, REPO, "3.0.0") == digest
    assert sorted(lab.platforms(DEST_ACCOUNT, REPO, "3.0.0")) == ["linux/amd64", "linux/arm64"]
    assert run.result["digest"] == digest
    assert run.result["digest_kept"] is True
    assert run.result["status"] == "copied"
    # KPO's default on_finish_action deletes the pod; the kubelet and API server finish that.
    deadline = time.monotonic() + 60
    while pods := cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "name").stdout.split():
        assert time.monotonic() < deadline, f"pods left after the task: {pods}"
        time.sleep(0.5)
