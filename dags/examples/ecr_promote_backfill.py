"""Backfill a list of tags, one mapped task (and pod) per tag: trigger with
``{"tags": ["1.4.0", "1.4.1"]}``. Each mapped task is retried and shown on its own; for one pod
and one login for the whole list, pass ``tags=`` to a single EcrPromoteOperator instead."""

from __future__ import annotations

from datetime import datetime
from typing import Any

try:
    from airflow.sdk import DAG, Param, task
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[assignment,no-redef]
    from airflow.decorators import task  # type: ignore[attr-defined,no-redef]
    from airflow.models.param import Param  # type: ignore[assignment,no-redef]

from airflow_ecr_promote.operators import EcrPromoteOperator

# Replace with your accounts, regions and roles.
STAGING_REGISTRY = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
PRODUCTION_REGISTRY = "210987654321.dkr.ecr.us-east-1.amazonaws.com"
PULL_ROLE = "arn:aws:iam::123456789012:role/ecr-promote-pull"
PUSH_ROLE = "arn:aws:iam::210987654321:role/ecr-promote-push"
NAMESPACE = "ecr-promote"
SERVICE_ACCOUNT = "ecr-promote"

REPOSITORY = "team/app"

with DAG(
    dag_id="ecr_promote_backfill",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"tags": Param(["1.4.0", "1.4.1", "1.4.2"], type="array", items={"type": "string"})},
    tags=["ecr", "backfill"],
) as dag:

    @task
    def promotions(params: dict[str, Any] | None = None) -> list[dict[str, str]]:
        tags = (params or {})["tags"]
        return [
            {
                "source_image": f"{STAGING_REGISTRY}/{REPOSITORY}:{tag}",
                "dest_image": f"{PRODUCTION_REGISTRY}/{REPOSITORY}:{tag}",
            }
            for tag in tags
        ]

    EcrPromoteOperator.partial(
        task_id="promote",
        source_role_arn=PULL_ROLE,
        dest_role_arn=PUSH_ROLE,
        engine="skopeo",
        namespace=NAMESPACE,
        service_account_name=SERVICE_ACCOUNT,
        max_active_tis_per_dag=4,
    ).expand_kwargs(promotions())
