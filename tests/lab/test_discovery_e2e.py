"""Discovery, the sensor and a promotion together, against the lab's ECR (registries whose
pushes the lab's ECR API reports, reached through Airflow connections that assume roles)."""

from __future__ import annotations

import pytest

from airflow_ecr_promote.discovery import list_tags
from airflow_ecr_promote.operators import EcrPromoteOperator
from airflow_ecr_promote.sensors import EcrImageSensor
from tests.airflow_context import make_context
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .cluster import Cluster
from .lab import Lab
from .operator_run import DEST_CONN_ID, SOURCE_CONN_ID, lab_connections, run_task
from .test_promote_e2e import wait_until_ecr_api_reports

pytestmark = [pytest.mark.lab, pytest.mark.cluster]

REPO = "discover/app"


@pytest.fixture(autouse=True)
def destination_repository(lab: Lab) -> None:
    """The destination repository exists, as ECR needs (made once, as IaC would)."""
    lab.create_repository(DEST_ACCOUNT, REPO)


def test_discovered_tags_are_promoted_in_one_batch_and_the_sensor_sees_them(
    lab: Lab, cluster: Cluster
) -> None:
    digests = {tag: lab.push_image(SOURCE_ACCOUNT, REPO, tag, seed=900 + i)
               for i, tag in enumerate(["1.2.0", "1.10.0", "1.9.1", "2.0.0-rc.1", "nightly"])}  # fmt: skip
    with lab_connections(lab):
        for tag, digest in digests.items():
            wait_until_ecr_api_reports(SOURCE_CONN_ID, f"{SOURCE_HOST}/{REPO}:{tag}", digest)
        tags = list_tags(f"{SOURCE_HOST}/{REPO}", pattern="1.*", sort="semver", descending=True,
                         limit=2, aws_conn_id=SOURCE_CONN_ID)  # fmt: skip
        assert tags == ["1.10.0", "1.9.1"]

        promote = EcrPromoteOperator(
            task_id="promote",
            engine="skopeo",
            source_image=f"{SOURCE_HOST}/{REPO}",
            dest_image=f"{DEST_HOST}/{REPO}",
            tags=tags,
            source_role_arn="arn:aws:iam::123456789012:role/ecr-promote-pull",
            dest_role_arn="arn:aws:iam::210987654321:role/ecr-promote-push",
            init_image=lab.init_image,
            copier_image=lab.copier_image,
        )
        run = run_task(cluster, task=promote)
        assert run.error is None, "\n".join(run.log[-30:])

        sensor = EcrImageSensor(task_id="wait", image=f"{DEST_HOST}/{REPO}:1.10.0", aws_conn_id=DEST_CONN_ID,
                                poke_interval=0.2, timeout=30, mode="poke")  # fmt: skip
        wait_until_ecr_api_reports(DEST_CONN_ID, f"{DEST_HOST}/{REPO}:1.10.0", digests["1.10.0"])
        found = sensor.poke(make_context(sensor))
        assert found.is_done
        assert found.xcom_value == digests["1.10.0"]
        missing = EcrImageSensor(task_id="wait", image=f"{DEST_HOST}/{REPO}:1.2.0", aws_conn_id=DEST_CONN_ID)
        assert not missing.poke(make_context(missing)).is_done
    assert lab.digest(DEST_ACCOUNT, REPO, "1.9.1") == digests["1.9.1"]
