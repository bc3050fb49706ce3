"""Every night, promote the recent releases that staging has and production may lack.

Discovery lists the staging tags matching ``1.*`` pushed in the last 7 days, keeps the 20
highest semantic versions, and maps one promotion per tag (one pod each, retried and shown on
its own). A tag that production already holds with the same digest is a no-op for skopeo.
"""

from __future__ import annotations

from datetime import datetime

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[assignment,no-redef]

from airflow_ecr_promote.discovery import EcrListTagsOperator
from airflow_ecr_promote.operators import EcrPromoteOperator

# Replace with your accounts, regions and roles.
STAGING_REGISTRY = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
PRODUCTION_REGISTRY = "210987654321.dkr.ecr.us-east-1.amazonaws.com"
PULL_ROLE = "arn:aws:iam::123456789012:role/ecr-promote-pull"
PUSH_ROLE = "arn:aws:iam::210987654321:role/ecr-promote-push"
NAMESPACE = "ecr-promote"
SERVICE_ACCOUNT = "ecr-promote"
# An Airflow AWS connection that may read the staging registry (for example with
# ``{"role_arn": "arn:aws:iam::123456789012:role/ecr-promote-pull"}`` in its extras).
STAGING_CONN_ID = "aws_ecr_staging"

REPOSITORY = "team/app"

with DAG(
    dag_id="ecr_backfill_discovered",
    schedule="0 3 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["ecr", "backfill"],
) as dag:
    discover = EcrListTagsOperator(
        task_id="discover",
        repository=f"{STAGING_REGISTRY}/{REPOSITORY}",
        pattern="1.*",
        # The 7 days before this run's data interval ends (the run's nightly point in time).
        # A manual run on Airflow 3 may have no data interval: count back from now then.
        pushed_since=(
            "{{ ((data_interval_end or macros.datetime.now(macros.dateutil.tz.UTC))"
            " - macros.timedelta(days=7)).isoformat() }}"
        ),
        sort="semver",
        descending=True,
        limit=20,
        output="promotions",
        dest_repository=f"{PRODUCTION_REGISTRY}/{REPOSITORY}",
        aws_conn_id=STAGING_CONN_ID,
    )

    EcrPromoteOperator.partial(
        task_id="promote",
        source_role_arn=PULL_ROLE,
        dest_role_arn=PUSH_ROLE,
        engine="skopeo",
        namespace=NAMESPACE,
        service_account_name=SERVICE_ACCOUNT,
        max_active_tis_per_dag=4,
    ).expand_kwargs(discover.output)
