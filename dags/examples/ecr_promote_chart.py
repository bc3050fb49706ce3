"""Promote a Helm chart (an OCI artifact in ECR) from staging to production with its digest, e.g.

    airflow dags trigger ecr_promote_chart --conf '{"chart_version": "0.1.0"}'

ECR stores a chart pushed with ``helm push app-0.1.0.tgz oci://<registry>/charts`` as
``charts/app:0.1.0``, a manifest whose config is ``application/vnd.cncf.helm.config.v1+json``.
skopeo, crane and regctl copy it as it is, so production serves the very chart staging tested
(same digest), and ``helm pull oci://<production registry>/charts/app --version 0.1.0`` works
there. kaniko cannot carry a chart (it would rebuild it as an image) and is refused before it
writes anything. The roles' policies are the engine's (README "IAM"): a chart is pulled and pushed
with the same ECR actions as an image.

Every value is a param, so the trigger form shows them and ``dag_run.conf`` overrides them; the
downstream task logs the command that installs the promoted chart, pinned to what was promoted.
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
STAGING_CHARTS = "123456789012.dkr.ecr.us-west-2.amazonaws.com/charts/app"
PRODUCTION_CHARTS = "210987654321.dkr.ecr.us-east-1.amazonaws.com/charts/app"
PULL_ROLE = "arn:aws:iam::123456789012:role/ecr-promote-pull"
PUSH_ROLE = "arn:aws:iam::210987654321:role/ecr-promote-push"

OPTIONAL_STRING = ["null", "string"]

with DAG(
    dag_id="ecr_promote_chart",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    render_template_as_native_obj=True,
    params={
        "chart_version": Param("0.1.0", type="string", description="the chart's version: its tag in ECR"),
        "source_chart": Param(STAGING_CHARTS, type="string", description="the staging repository"),
        "dest_chart": Param(PRODUCTION_CHARTS, type="string", description="the production repository"),
        # the engines that carry any OCI artifact with its digest (not kaniko)
        "engine": Param("crane", enum=["crane", "regctl", "skopeo"]),
        "init_image": Param(None, type=OPTIONAL_STRING, description="override the aws CLI image"),
        "copier_image": Param(None, type=OPTIONAL_STRING, description="override the engine's image"),
    },
    tags=["ecr", "release", "helm"],
) as dag:
    chart = EcrPromoteOperator(
        task_id="promote_chart",
        source_image="{{ params.source_chart }}:{{ params.chart_version }}",
        dest_image="{{ params.dest_chart }}:{{ params.chart_version }}",
        source_role_arn=PULL_ROLE,
        dest_role_arn=PUSH_ROLE,
        engine="{{ params.engine }}",
        init_image="{{ params.init_image }}",
        copier_image="{{ params.copier_image }}",
        namespace="ecr-promote",
        service_account_name="ecr-promote",
    )

    @task
    def install_command(result: dict[str, Any]) -> str:
        """How to install what was promoted, and the digest production now serves (staging's)."""
        repository, _, version = str(result["dest_image"]).rpartition(":")
        command = f"helm install app oci://{repository} --version {version}"
        print(f"{command}  # {result['digest']}, digest kept: {result['digest_kept']}")
        return command

    install_command(chart.output)
