"""A scan-gated release: the release's tags go from staging to production only when ECR's scan
found nothing HIGH or CRITICAL in them (basic scanning or Amazon Inspector). A tag that fails the
gate is skipped and listed; the others are promoted; a follow-up task reports what was held back.

    airflow dags trigger ecr_promote_scan_gated --conf '{"tags": ["1.4.2", "1.4.3"]}'

The threshold and the accepted findings come from Airflow Variables that only the security team
may edit (``release_max_severity``, default ``HIGH``; ``release_ignored_findings``, ids separated
by commas). An emptied ``release_max_severity`` is refused before any pod (the gate fails closed);
never take these from ``dag_run.conf``, since whoever sets them decides what passes.
The connection ``aws_staging`` reads the scans (policy ``scan-gate``, README "IAM").
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

try:
    from airflow.sdk import DAG, Param, task
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[assignment,no-redef]
    from airflow.decorators import task  # type: ignore[no-redef]
    from airflow.models.param import Param  # type: ignore[no-redef]

from airflow_ecr_promote.operators import EcrPromoteOperator

# Replace with your accounts, regions and roles.
STAGING_REPOSITORY = "123456789012.dkr.ecr.us-west-2.amazonaws.com/team/app"
PRODUCTION_REPOSITORY = "210987654321.dkr.ecr.us-east-1.amazonaws.com/team/app"
PULL_ROLE = "arn:aws:iam::123456789012:role/ecr-promote-pull"
PUSH_ROLE = "arn:aws:iam::210987654321:role/ecr-promote-push"

with DAG(
    dag_id="ecr_promote_scan_gated",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"tags": Param(["1.4.2"], type="array", items={"type": "string"}, minItems=1)},
    render_template_as_native_obj=True,
    tags=["ecr", "release", "scan"],
) as dag:
    release = EcrPromoteOperator(
        task_id="promote_scanned",
        source_image=STAGING_REPOSITORY,
        dest_image=PRODUCTION_REPOSITORY,
        tags="{{ params.tags }}",
        source_role_arn=PULL_ROLE,
        dest_role_arn=PUSH_ROLE,
        engine="skopeo",
        max_severity="{{ var.value.get('release_max_severity', 'HIGH') }}",
        ignore_findings="{{ var.value.get('release_ignored_findings', '') }}",
        scan_wait=600,  # a scan started by the gate (or on push) usually completes within minutes
        on_findings="skip",
        source_aws_conn_id="aws_staging",
        namespace="ecr-promote",
        service_account_name="ecr-promote",
    )

    @task
    def held_back(result: dict[str, Any]) -> list[str]:
        """The tags the gate refused, with why: what the release notes say was held back."""
        refused = [e for e in result["promotions"] if e["status"] == "skipped" and "scan" in e]
        for entry in refused:
            print(f"{entry['source_image']}: {entry['reason']}")
        return [str(e["source_image"]) for e in refused]

    held_back(release.output)
