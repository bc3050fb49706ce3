"""Release one tag: wait for it in staging, promote it to production, then fan it out to two
more regions in one pod; the promotion to production triggers the deploy DAG.

sensor -> promote -> asset -> deploy: trigger with ``{"tag": "1.4.2"}``. The sensor waits in the
triggerer (no worker slot, no reschedule) until the staging image exists and returns its digest;
every promotion copies that exact digest, so a tag moved in staging meanwhile cannot change what
is released. ``promote_us_east_1`` publishes the image as an event of the asset
``ecr://210987654321.dkr.ecr.us-east-1.amazonaws.com/team/app``, on which
``ecr_deploy_on_promotion`` is scheduled: it deploys the digest the event carries. The other
regions get the image once us-east-1 has it: one pod, one login per registry, two copies (their
events go to the assets of their own registries).
"""

from __future__ import annotations

from datetime import datetime, timedelta

try:
    from airflow.sdk import DAG, Param
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[assignment,no-redef]
    from airflow.models.param import Param  # type: ignore[assignment,no-redef]

from airflow_ecr_promote.operators import EcrPromoteOperator
from airflow_ecr_promote.sensors import EcrImageSensor

# Replace with your accounts, regions and roles.
STAGING_REGISTRY = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
PRODUCTION_REGISTRY = "210987654321.dkr.ecr.us-east-1.amazonaws.com"
FAN_OUT_REGISTRIES = (
    "210987654321.dkr.ecr.eu-west-1.amazonaws.com",
    "210987654321.dkr.ecr.ap-southeast-2.amazonaws.com",
)
PULL_ROLE = "arn:aws:iam::123456789012:role/ecr-promote-pull"
PUSH_ROLE = "arn:aws:iam::210987654321:role/ecr-promote-push"
NAMESPACE = "ecr-promote"
SERVICE_ACCOUNT = "ecr-promote"
# An Airflow AWS connection that may read the staging registry (for example with
# ``{"role_arn": "arn:aws:iam::123456789012:role/ecr-promote-pull"}`` in its extras).
STAGING_CONN_ID = "aws_ecr_staging"

REPOSITORY = "team/app"
TAG = "{{ params.tag }}"
# The digest the sensor found: both copies take exactly that image.
STAGING_IMAGE_BY_DIGEST = (
    f"{STAGING_REGISTRY}/{REPOSITORY}@{{{{ ti.xcom_pull(task_ids='wait_for_staging_image') }}}}"
)

with DAG(
    dag_id="ecr_release_pipeline",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"tag": Param("1.4.2", type="string", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")},
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["ecr", "release"],
) as dag:
    wait = EcrImageSensor(
        task_id="wait_for_staging_image",
        image=f"{STAGING_REGISTRY}/{REPOSITORY}:{TAG}",
        aws_conn_id=STAGING_CONN_ID,
        deferrable=True,
        poke_interval=60,
        timeout=6 * 60 * 60,
        retries=0,
    )

    to_us_east_1 = EcrPromoteOperator(
        task_id="promote_us_east_1",
        source_image=STAGING_IMAGE_BY_DIGEST,
        dest_image=f"{PRODUCTION_REGISTRY}/{REPOSITORY}:{TAG}",
        source_role_arn=PULL_ROLE,
        dest_role_arn=PUSH_ROLE,
        engine="skopeo",
        namespace=NAMESPACE,
        service_account_name=SERVICE_ACCOUNT,
    )

    fan_out = EcrPromoteOperator(
        task_id="fan_out_to_other_regions",
        promotions=[
            {"source_image": STAGING_IMAGE_BY_DIGEST, "dest_image": f"{registry}/{REPOSITORY}:{TAG}"}
            for registry in FAN_OUT_REGISTRIES
        ],
        source_role_arn=PULL_ROLE,
        dest_role_arn=PUSH_ROLE,
        engine="skopeo",
        namespace=NAMESPACE,
        service_account_name=SERVICE_ACCOUNT,
    )

    wait >> to_us_east_1 >> fan_out
