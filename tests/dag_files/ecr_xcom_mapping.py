"""Downstream tasks mapped over what promotions return, in each shape the README documents.

- ``promote`` is mapped (one task per tag): ``promote.output`` is the list of the mapped tasks'
  return values; ``deploy`` maps over it, through ``.map()``, to the digest-pinned images.
- ``batch`` promotes several tags in one pod: its return value is a dict; the list of copies is
  its ``promotions`` entry, handed to a mapped task through a one-line TaskFlow task.
- ``single`` is one promotion: its return value is pulled as a whole.
- ``quiet`` passes ``do_xcom_push=False``: it stores nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

try:
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[assignment,no-redef]
    from airflow.decorators import task  # type: ignore[attr-defined,no-redef]

from airflow_ecr_promote import EcrPromoteOperator

STAGING = "123456789012.dkr.ecr.us-west-2.amazonaws.com/team/app"
PRODUCTION = "210987654321.dkr.ecr.us-east-1.amazonaws.com/team/app"
ROLES = {
    "source_role_arn": "arn:aws:iam::123456789012:role/ecr-promote-pull",
    "dest_role_arn": "arn:aws:iam::210987654321:role/ecr-promote-push",
    "engine": "skopeo",
}


def pinned(result: dict[str, Any]) -> str:
    return f"{result['dest_image'].rsplit(':', 1)[0]}@{result['digest']}"


with DAG(dag_id="ecr_xcom_mapping", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    promote = EcrPromoteOperator.partial(task_id="promote", **ROLES).expand_kwargs(
        [{"source_image": f"{STAGING}:{tag}", "dest_image": f"{PRODUCTION}:{tag}"} for tag in ("1.0", "1.1")]
    )

    @task
    def deploy(image: str) -> str:
        return image

    deploy.expand(image=promote.output.map(pinned))

    batch = EcrPromoteOperator(
        task_id="batch", source_image=STAGING, dest_image=PRODUCTION, tags=["2.0", "2.1", "2.2"], **ROLES
    )

    @task
    def each_promotion(result: dict[str, Any]) -> list[dict[str, Any]]:
        return list(result["promotions"])

    @task
    def deploy_entry(entry: dict[str, Any]) -> str:
        return pinned(entry)

    deploy_entry.expand(entry=each_promotion(batch.output))

    single = EcrPromoteOperator(
        task_id="single", source_image=f"{STAGING}:3.0", dest_image=f"{PRODUCTION}:3.0", **ROLES
    )

    @task
    def after_single(result: dict[str, Any]) -> str:
        return pinned(result)

    after_single(single.output)

    EcrPromoteOperator(
        task_id="quiet",
        source_image=f"{STAGING}:4.0",
        dest_image=f"{PRODUCTION}:4.0",
        do_xcom_push=False,
        **ROLES,
    )
