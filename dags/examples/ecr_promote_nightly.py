"""A scheduled release promotion: every night, the image the build tagged ``nightly-<date>`` in
staging goes to production under the same tag, digest kept. A re-run finds it already there
and writes nothing."""

from __future__ import annotations

from datetime import datetime, timedelta

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[assignment,no-redef]

from airflow_ecr_promote.operators import EcrPromoteOperator

# Replace with your accounts, regions and roles.
STAGING_REGISTRY = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
PRODUCTION_REGISTRY = "210987654321.dkr.ecr.us-east-1.amazonaws.com"
PULL_ROLE = "arn:aws:iam::123456789012:role/ecr-promote-pull"
PUSH_ROLE = "arn:aws:iam::210987654321:role/ecr-promote-push"
NAMESPACE = "ecr-promote"
SERVICE_ACCOUNT = "ecr-promote"

with DAG(
    dag_id="ecr_promote_nightly",
    schedule="30 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["ecr", "release"],
) as dag:
    EcrPromoteOperator(
        task_id="promote_nightly",
        source_image=f"{STAGING_REGISTRY}/team/app:nightly-{{{{ ds_nodash }}}}",
        dest_image=f"{PRODUCTION_REGISTRY}/team/app:nightly-{{{{ ds_nodash }}}}",
        source_role_arn=PULL_ROLE,
        dest_role_arn=PUSH_ROLE,
        engine="skopeo",
        namespace=NAMESPACE,
        service_account_name=SERVICE_ACCOUNT,
    )
