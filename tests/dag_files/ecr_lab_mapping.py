"""Tags listed through the ECR API, promoted by a mapped task, deployed by a task mapped over the
promotions' return values (the lab's ECR API, registries and pods)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

try:
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[assignment,no-redef]
    from airflow.decorators import task  # type: ignore[attr-defined,no-redef]

from airflow_ecr_promote import EcrListTagsOperator, EcrPromoteOperator

STAGING = "123456789012.dkr.ecr.us-west-2.amazonaws.com/lab-map/app"
PRODUCTION = "210987654321.dkr.ecr.us-east-1.amazonaws.com/lab-map/app"


def pinned(result: dict[str, Any]) -> str:
    return f"{result['dest_image'].rsplit(':', 1)[0]}@{result['digest']}"


with DAG(dag_id="ecr_lab_mapping", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    listed = EcrListTagsOperator(
        task_id="list_tags",
        repository=STAGING,
        pattern="5.*",
        output="promotions",
        dest_repository=PRODUCTION,
        aws_conn_id="lab_source",
    )
    promote = EcrPromoteOperator.partial(
        task_id="promote",
        engine="skopeo",
        source_role_arn="arn:aws:iam::123456789012:role/ecr-promote-pull",
        dest_role_arn="arn:aws:iam::210987654321:role/ecr-promote-push",
    ).expand_kwargs(listed.output)

    @task
    def deploy(image: str) -> str:
        return image

    deploy.expand(image=promote.output.map(pinned))
