"""Helm charts and other OCI artifacts, promoted through the operator's own pod on the lab's real
Kubernetes (issue 23, part 2).

The chart is packaged and pushed by helm, built from its Go module (tests/lab/charts.py); the
non-image artifacts (a WASM module with its own config type, an SBOM-only artifact with an OCI 1.1
``artifactType`` over the empty config) are written by tests/lab/ocigen.py and pushed with regctl.
Every digest-preserving engine promotes them with their digest, and helm, logged in to the
destination as a user is, pulls the chart from there and reads it. kaniko, which would rebuild
the chart as an image, is refused: before any pod when the worker has an AWS connection (the
ECR API shows the manifest), by its pod's login container, before anything is written, when not.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest
from kubernetes.client import models as k8s

from airflow_ecr_promote.operators import EcrPromoteError
from airflow_ecr_promote.pod import INIT_CONTAINER_NAME
from airflow_ecr_promote.refs import PromotionInputError
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT

from .charts import Helm, Pushed, push_artifact, push_chart, sha256_file
from .cluster import SERVICE_ACCOUNT, Cluster
from .fixtures import BASELINE_NAMESPACE
from .lab import Lab
from .ocigen import ARTIFACTS
from .operator_run import (
    SOURCE_CONN_ID,
    TaskRun,
    lab_conf,
    lab_connections,
    lab_operator,
    run_task_on_cluster,
)

pytestmark = [pytest.mark.lab, pytest.mark.cluster, pytest.mark.helm, pytest.mark.timeout(300)]

ENGINES = ("skopeo", "crane", "regctl")
CHART, VERSION = "demo", "0.1.0"


@pytest.fixture(scope="module")
def helm(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(lab, tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="module")
def chart(lab: Lab, helm: Helm) -> Pushed:
    """The chart helm pushed to the source: ``charts/demo:0.1.0``."""
    pushed = push_chart(lab, helm, SOURCE_ACCOUNT, "charts", CHART, VERSION)
    assert lab.digest(SOURCE_ACCOUNT, pushed.repository, VERSION) == pushed.digest
    return pushed


@pytest.fixture(scope="module")
def artifacts(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pushed]:
    workdir = tmp_path_factory.mktemp("artifacts")
    return {
        kind: push_artifact(lab, workdir, kind, SOURCE_ACCOUNT, f"artifacts/{kind}", "1.0")
        for kind in ARTIFACTS
    }


def promote(lab: Lab, cluster: Cluster, engine: str, source: Pushed, dest_repository: str) -> TaskRun:
    """The on-demand example DAG's task."""
    lab.create_repository(DEST_ACCOUNT, dest_repository)
    dest = f"{DEST_HOST}/{dest_repository}:{source.tag}"
    return run_task_on_cluster(
        cluster, conf=lab_conf(lab, source_image=source.ref, dest_image=dest, engine=engine)
    )


def promote_chart(lab: Lab, cluster: Cluster, engine: str, chart: Pushed, dest_repository: str) -> TaskRun:
    """The chart example DAG's task (dags/examples/ecr_promote_chart.py)."""
    lab.create_repository(DEST_ACCOUNT, dest_repository)
    conf = lab_conf(
        lab,
        chart_version=chart.tag,
        source_chart=f"{chart.host}/{chart.repository}",
        dest_chart=f"{DEST_HOST}/{dest_repository}",
        engine=engine,
    )
    return run_task_on_cluster(cluster, dag_id="ecr_promote_chart", task_id="promote_chart", conf=conf)


def assert_promoted_as_itself(lab: Lab, run: TaskRun, source: Pushed, dest_repository: str) -> None:
    assert run.error is None, "\n".join(run.log[-40:])
    assert (run.result["status"], run.result["digest"], run.result["digest_kept"]) == (
        "copied",
        source.digest,
        True,
    )
    assert lab.digest(DEST_ACCOUNT, dest_repository, source.tag) == source.digest
    assert lab.inspect_raw(DEST_ACCOUNT, dest_repository, source.tag) == lab.inspect_raw(
        SOURCE_ACCOUNT, source.repository, source.tag
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_a_helm_chart_keeps_its_digest_and_helm_pulls_it_from_the_destination(
    lab: Lab, cluster: Cluster, helm: Helm, chart: Pushed, engine: str
) -> None:
    dest_repository = f"promoted-{engine}/{CHART}"
    run = promote_chart(lab, cluster, engine, chart, dest_repository)
    assert_promoted_as_itself(lab, run, chart, dest_repository)
    helm.login(DEST_ACCOUNT)
    shown = helm.show_chart(DEST_ACCOUNT, dest_repository, VERSION)
    assert f"name: {CHART}" in shown and f"version: {VERSION}" in shown, shown
    pulled = helm.pull(DEST_ACCOUNT, dest_repository, VERSION)
    packaged = helm.workdir / "charts" / "packaged" / f"{CHART}-{VERSION}.tgz"
    assert sha256_file(pulled) == sha256_file(packaged), "the chart's bytes arrived unchanged"
    with tarfile.open(pulled) as archive:
        assert f"{CHART}/templates/configmap.yaml" in archive.getnames()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", list(ARTIFACTS))
def test_a_non_image_artifact_keeps_its_digest(
    lab: Lab, cluster: Cluster, artifacts: dict[str, Pushed], engine: str, kind: str
) -> None:
    source = artifacts[kind]
    dest_repository = f"promoted-{engine}/{kind}"
    run = promote(lab, cluster, engine, source, dest_repository)
    assert_promoted_as_itself(lab, run, source, dest_repository)
    manifest = json.loads(lab.inspect_raw(DEST_ACCOUNT, dest_repository, source.tag) or b"{}")
    assert manifest["config"]["mediaType"] == ARTIFACTS[kind].config_type
    assert manifest.get("artifactType") == ARTIFACTS[kind].artifact_type


def test_kaniko_is_refused_for_a_chart_before_any_pod_through_the_ecr_api(
    lab: Lab, cluster: Cluster, chart: Pushed
) -> None:
    dest_repository = f"promoted-kaniko/{CHART}"
    lab.create_repository(DEST_ACCOUNT, dest_repository)
    operator = lab_operator(
        lab,
        "kaniko",
        source_image=chart.ref,
        dest_image=f"{DEST_HOST}/{dest_repository}:{VERSION}",
        namespace=BASELINE_NAMESPACE,
        service_account_name=SERVICE_ACCOUNT,
        source_aws_conn_id=SOURCE_CONN_ID,
    )
    with lab_connections(lab):
        run = run_task_on_cluster(cluster, task=operator)
    assert isinstance(run.error, PromotionInputError), "\n".join(run.log[-20:])
    assert (run.error.param, run.error.value) == ("engine", "kaniko")
    assert f"cannot promote {chart.ref}: it is a Helm chart" in str(run.error)
    assert "engine='crane'" in str(run.error)
    assert run.pods == [], "no pod was created"
    assert lab.digest(DEST_ACCOUNT, dest_repository, VERSION) is None


def test_kaniko_without_an_aws_connection_is_refused_by_its_pod_before_anything_is_written(
    lab: Lab, cluster: Cluster, chart: Pushed, tmp_path: Path
) -> None:
    dest_repository = f"promoted-kaniko/{CHART}"
    lab.create_repository(DEST_ACCOUNT, dest_repository)
    uploads_before = len(lab.upload_requests(DEST_ACCOUNT))
    operator = lab_operator(
        lab,
        "kaniko",
        source_image=chart.ref,
        dest_image=f"{DEST_HOST}/{dest_repository}:{VERSION}",
        namespace=BASELINE_NAMESPACE,
        service_account_name=SERVICE_ACCOUNT,
    )
    run = run_task_on_cluster(cluster, task=operator)
    assert isinstance(run.error, EcrPromoteError), "\n".join(run.log[-20:])
    message = str(run.error)
    assert "refused before anything was written" in message
    assert "engine='kaniko' cannot promote charts/demo:0.1.0 in registry 123456789012" in message
    assert "it is a Helm chart (config media type application/vnd.cncf.helm.config.v1+json)" in message
    assert "Fix: engine='skopeo' or engine='crane' or engine='regctl'" in message
    login = run.outcomes[-1].container(INIT_CONTAINER_NAME)
    assert login.exit_code == 1
    copier = run.outcomes[-1].container("base")
    assert copier.exit_code is None and copier.started_at is None, "kaniko never started"
    assert lab.digest(DEST_ACCOUNT, dest_repository, VERSION) is None
    assert len(lab.upload_requests(DEST_ACCOUNT)) == uploads_before, "not one blob was uploaded"


def test_kaniko_let_through_does_not_deliver_the_chart(lab: Lab, cluster: Cluster, chart: Pushed) -> None:
    """Why kaniko is refused: its pod with the login container's check taken out (``prepare``
    drops CHECK_SOURCES), so kaniko itself meets the chart. Whatever kaniko does, the destination
    must not hold the chart as itself; what it did is recorded in the test's output."""
    dest_repository = "unchecked-kaniko/demo"
    lab.create_repository(DEST_ACCOUNT, dest_repository)

    def unchecked(pod: k8s.V1Pod) -> k8s.V1Pod:
        login = next(c for c in pod.spec.init_containers if c.name == INIT_CONTAINER_NAME)
        login.env = [e for e in login.env if e.name not in ("CHECK_SOURCES", "ENGINE", "ARTIFACT_FIX")]
        return pod

    operator = lab_operator(
        lab,
        "kaniko",
        source_image=chart.ref,
        dest_image=f"{DEST_HOST}/{dest_repository}:{VERSION}",
        namespace=BASELINE_NAMESPACE,
        service_account_name=SERVICE_ACCOUNT,
    )
    uploads_before = len(lab.upload_requests(DEST_ACCOUNT))
    run = run_task_on_cluster(cluster, task=operator, prepare=unchecked)
    pushed = lab.inspect_raw(DEST_ACCOUNT, dest_repository, VERSION)
    uploads = lab.upload_requests(DEST_ACCOUNT)[uploads_before:]
    copier = run.outcomes[-1].container("base") if run.outcomes else None
    print(
        "kaniko on a chart:",
        json.dumps(
            {
                "error": str(run.error)[-600:] if run.error else None,
                "copier_exit": copier.exit_code if copier else None,
                "copier_log_tail": (copier.logs if copier else "")[-1500:],
                "task_log_tail": [line[-300:] for line in run.log][-25:],
                "dest_upload_requests": uploads,
                "pushed_manifest": json.loads(pushed) if pushed else None,
            },
            indent=1,
        ),
    )
    if pushed is None:
        assert run.error is not None
        # the task says kaniko's own error, not only the digest it wrote first, when the pod's log
        # could be read (with another lab cluster on the machine, its kubelet may remove this
        # pod's log folder from the shared /var/log/pods first: see the report of issue 23)
        if copier is not None and "error pushing image" in copier.logs:
            assert not re.fullmatch(r".*: sha256:[0-9a-f]{64}", str(run.error), re.S), str(run.error)
    else:  # something arrived, but not the chart as itself
        assert lab.digest(DEST_ACCOUNT, dest_repository, VERSION) != chart.digest
