"""Whole DAG runs through Airflow's task runner with the lab as cluster and cloud.

``dag.test()`` runs in a child process with its own metadata DB (tests/dag_run.py); the lab's real
Kubernetes runs every promotion pod, which KPO creates through the ``kubernetes_default``
connection the child's environment names (the example DAGs' namespace, Pod Security
``restricted``, and service account); the lab's moto answers the ECR API the sensor and the tag
listing read. The lab images reach the pods through the deployment-wide defaults
(``AIRFLOW__ECR_PROMOTE__*``), so the example DAGs run unchanged. Run on Airflow 3 and, by
``make cluster-test``, on 2.11.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEST_ACCOUNT, DEST_HOST, REPO, SOURCE_ACCOUNT, SOURCE_HOST
from tests.dag_run import migrated_db, run_dags

from .cluster import Cluster
from .lab import Lab
from .operator_run import SOURCE_CONN_ID, lab_connections
from .test_promote_e2e import wait_until_ecr_api_reports

pytestmark = [pytest.mark.lab, pytest.mark.cluster]

EXAMPLES = REPO / "dags" / "examples"
RELEASE = [EXAMPLES / "ecr_release_pipeline.py", EXAMPLES / "ecr_deploy_on_promotion.py"]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_db(sys.executable, tmp_path_factory.mktemp("airflow-db"))


def lab_env(cluster: Cluster) -> dict[str, str]:
    """What a deployment on the lab's cluster would configure: connections (AWS, and Kubernetes
    as Airflow's service account) and approved images (which the cluster holds)."""
    lab = cluster.lab
    cluster.import_images(lab.init_image, lab.copier_image)
    with lab_connections(lab):
        source = os.environ[f"AIRFLOW_CONN_{SOURCE_CONN_ID.upper()}"]
    return {
        "AIRFLOW_CONN_AWS_ECR_STAGING": source,
        f"AIRFLOW_CONN_{SOURCE_CONN_ID.upper()}": source,
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": cluster.airflow_connection(),
        "KUBECONFIG": str(cluster.dir / "airflow.kubeconfig"),
        "AWS_CA_BUNDLE": str(lab.ca_bundle),
        "AIRFLOW__ECR_PROMOTE__INIT_IMAGE": lab.init_image,
        "AIRFLOW__ECR_PROMOTE__SKOPEO_IMAGE": lab.copier_image,
    }


def release(cluster: Cluster, db: Path, workdir: Path, tag: str) -> dict[str, Any]:
    # The lab has registries for us-west-2 and us-east-1 only, not for the fan-out's regions.
    return run_dags(sys.executable, db, workdir, dag_files=RELEASE, dag_id="ecr_release_pipeline",
                    conf={"tag": tag}, pods="cluster", env=lab_env(cluster),
                    mark_success="fan_out_to_other_regions", run_consumers=True)  # fmt: skip


def test_release_pipeline_sensor_promote_asset_deploy(
    lab: Lab, cluster: Cluster, db: Path, tmp_path: Path
) -> None:
    digest = lab.push_image(SOURCE_ACCOUNT, "team/app", "7.7.0", seed=77)
    lab.create_repository(DEST_ACCOUNT, "team/app")
    with lab_connections(lab):
        wait_until_ecr_api_reports(SOURCE_CONN_ID, f"{SOURCE_HOST}/team/app:7.7.0", digest)

    first = release(cluster, db, tmp_path, "7.7.0")
    assert first["state"].endswith("success"), first["log"][-6000:]
    assert first["xcoms"]["wait_for_staging_image[-1].return_value"] == digest
    promoted = first["xcoms"]["promote_us_east_1[-1].return_value"]
    assert (promoted["status"], promoted["digest"], promoted["digest_kept"]) == ("copied", digest, True)
    assert lab.digest(DEST_ACCOUNT, "team/app", "7.7.0") == digest
    image = f"{DEST_HOST}/team/app@{digest}"
    (event,) = first["asset_events"]
    assert event["uri"] == f"ecr://{DEST_HOST}/team/app"
    assert event["extra"] == {
        "source_image": f"{SOURCE_HOST}/team/app@{digest}",
        "dest_image": f"{DEST_HOST}/team/app:7.7.0",
        "digest": digest,
        "source_digest": digest,
        "status": "copied",
        "image": image,
    }
    (deploy_run,) = first["consumers"]
    assert deploy_run["dag_id"] == "ecr_deploy_on_promotion"
    assert deploy_run["state"].endswith("success"), deploy_run["states"]
    assert deploy_run["xcoms"]["deploy[-1].return_value"] == image
    (patched,) = first["deployments"]
    assert patched["body"]["spec"]["template"]["spec"]["containers"] == [{"name": "app", "image": image}]

    # Released again: already promoted. On its first try that publishes nothing, so nothing is
    # deployed again; a retry (the try before failed) publishes the image as "present".
    again = release(cluster, db, tmp_path, "7.7.0")
    assert again["state"].endswith("success"), again["log"][-6000:]
    assert again["xcoms"]["promote_us_east_1[-1].return_value"]["status"] == "present"
    if again["tries"]["promote_us_east_1[-1]"] == 1:
        assert (again["asset_events"], again["consumers"], again["deployments"]) == ([], [], [])
    else:
        ((retried,),) = [[e["extra"] for e in again["asset_events"]]]
        assert (retried["status"], retried["image"]) == ("present", image)
        assert [d["body"] for d in again["deployments"]] == [patched["body"]]


def test_a_deploy_task_maps_over_tags_listed_and_promoted(
    lab: Lab, cluster: Cluster, db: Path, tmp_path: Path
) -> None:
    lab.create_repository(DEST_ACCOUNT, "lab-map/app")
    digests = {tag: lab.push_image(SOURCE_ACCOUNT, "lab-map/app", tag, seed=60 + i)
               for i, tag in enumerate(["5.0.0", "5.1.0", "4.9.0"])}  # fmt: skip
    with lab_connections(lab):
        for tag, digest in digests.items():
            wait_until_ecr_api_reports(SOURCE_CONN_ID, f"{SOURCE_HOST}/lab-map/app:{tag}", digest)
    dag_file = REPO / "tests" / "dag_files" / "ecr_lab_mapping.py"
    run = run_dags(sys.executable, db, tmp_path, dag_files=[dag_file], dag_id="ecr_lab_mapping",
                   pods="cluster", env=lab_env(cluster))  # fmt: skip
    assert run["state"].endswith("success"), run["log"][-6000:]
    assert run["pods"] == 2
    deployed = sorted(run["xcoms"][f"deploy[{i}].return_value"] for i in range(2))
    assert deployed == sorted(f"{DEST_HOST}/lab-map/app@{digests[t]}" for t in ("5.0.0", "5.1.0"))
    for tag in ("5.0.0", "5.1.0"):
        assert lab.digest(DEST_ACCOUNT, "lab-map/app", tag) == digests[tag]
    assert lab.digest(DEST_ACCOUNT, "lab-map/app", "4.9.0") is None
