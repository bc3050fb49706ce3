"""The operator on a real Kubernetes: KPO's own ``execute`` creates the pod through a real
kube-apiserver, a real kubelet runs it with containerd, and its pods reach the lab's registries,
STS and ECR by their real names through the cluster's DNS (tests/lab/cluster.py).

Selected with ``-m cluster``, with the other lab test files that moved onto the cluster
(README: The lab's Kubernetes).
"""

from __future__ import annotations

import json
import time

import pytest
from kubernetes.client.exceptions import ApiException

from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .cluster import NAMESPACE, SERVICE_ACCOUNT, Cluster
from .lab import Lab
from .operator_run import TaskRun, lab_conf, lab_operator, run_task_on_cluster

pytestmark = [pytest.mark.lab, pytest.mark.cluster, pytest.mark.timeout(300)]

REPO = "cluster/app"


@pytest.fixture(autouse=True)
def destination_repository(lab: Lab) -> None:
    lab.create_repository(DEST_ACCOUNT, REPO)


def assert_promoted(lab: Lab, cluster: Cluster, run: TaskRun, tag: str, digest: str) -> None:
    assert run.error is None, "\n".join(run.log[-40:])
    assert lab.digest(DEST_ACCOUNT, REPO, tag) == digest
    assert sorted(lab.platforms(DEST_ACCOUNT, REPO, tag)) == ["linux/amd64", "linux/arm64"]
    assert run.result["digest"] == digest
    assert run.result["source_digest"] == digest
    assert run.result["digest_kept"] is True
    assert run.result["status"] == "copied"
    # The pod found the registries through the cluster DNS (so on the pod network, not the host's).
    queries = (cluster.dir / "logs" / "dnsmasq-queries.log").read_text()
    assert f"query[A] {DEST_HOST}" in queries
    # KPO's default on_finish_action deletes the pod; the kubelet and API server finish that.
    deadline = time.monotonic() + 60
    while pods := cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "name").stdout.split():
        assert time.monotonic() < deadline, f"pods left after the task: {pods}"
        time.sleep(0.5)


@pytest.mark.parametrize("engine", ["skopeo", "crane", "regctl"])
def test_example_dag_promotes_a_two_platform_image_with_its_digest(
    lab: Lab, cluster: Cluster, engine: str
) -> None:
    tag = f"3.0.0-{engine}"
    digest = lab.push_image(SOURCE_ACCOUNT, REPO, tag, seed=31)
    source, dest = f"{SOURCE_HOST}/{REPO}:{tag}", f"{DEST_HOST}/{REPO}:{tag}"
    run = run_task_on_cluster(
        cluster, conf=lab_conf(lab, source_image=source, dest_image=dest, engine=engine)
    )
    assert_promoted(lab, cluster, run, tag, digest)


def test_deferrable_task_resumes_from_kpos_trigger_on_the_real_api(lab: Lab, cluster: Cluster) -> None:
    tag = "3.1.0-deferrable"
    digest = lab.push_image(SOURCE_ACCOUNT, REPO, tag, seed=32)
    operator = lab_operator(
        lab,
        "skopeo",
        source_image=f"{SOURCE_HOST}/{REPO}:{tag}",
        dest_image=f"{DEST_HOST}/{REPO}:{tag}",
        namespace=NAMESPACE,
        service_account_name=SERVICE_ACCOUNT,
        deferrable=True,
    )
    run = run_task_on_cluster(cluster, task=operator)
    assert "deferred to KubernetesPodTrigger" in run.log, run.log[-20:]
    assert_promoted(lab, cluster, run, tag, digest)


def test_kaniko_pod_is_refused_by_pod_security_restricted(lab: Lab, cluster: Cluster) -> None:
    """kaniko runs as root with three capabilities: the real API server's Pod Security admission
    refuses its pod in the ``restricted`` namespace before any kubelet sees it (the stand-in
    could not)."""
    tag = "3.2.0-kaniko"
    source, dest = f"{SOURCE_HOST}/{REPO}:{tag}", f"{DEST_HOST}/{REPO}:{tag}"
    run = run_task_on_cluster(
        cluster, conf=lab_conf(lab, source_image=source, dest_image=dest, engine="kaniko")
    )
    assert isinstance(run.error, ApiException) and run.error.status == 403, run.log[-10:]
    message = json.loads(run.error.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message
    assert '"CHOWN", "DAC_OVERRIDE", "FOWNER"' in message and "runAsUser=0" in message
    assert lab.digest(DEST_ACCOUNT, REPO, tag) is None


def test_airflows_identity_has_exactly_the_readmes_role(cluster: Cluster) -> None:
    """The Airflow connection of these tests is the README's group ``ecr-promoters`` and nothing
    more: it may run pods in the namespace, and nothing else."""
    who = ["--as=airflow-worker", "--as-group=ecr-promoters"]
    listed = cluster.kubectl("auth", "can-i", "--list", "-n", NAMESPACE, *who).stdout.splitlines()[1:]
    rules = {line.split()[0]: line.split("[")[-1].rstrip("]") for line in listed if not line.startswith(" ")}
    assert {name: verbs for name, verbs in rules.items() if "." not in name} == {
        "pods": "create get list watch patch delete",
        "pods/log": "get list",
        "events": "get list",
    }
    for verb, resource, namespace in (("get", "secrets", NAMESPACE), ("create", "pods", "default")):
        done = cluster.kubectl("auth", "can-i", verb, resource, "-n", namespace, *who, check=False)
        assert done.stdout.strip() == "no", (verb, resource, namespace)
