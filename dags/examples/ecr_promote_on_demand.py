"""Promote one image on demand: trigger with a config, e.g.

    airflow dags trigger ecr_promote_on_demand --conf '{"source_image": "...:1.4.2",
        "dest_image": "...:1.4.2"}'

Every value is a param, so the trigger form shows them and ``dag_run.conf`` overrides them.
"""

from __future__ import annotations

from datetime import datetime

try:
    from airflow.sdk import DAG, Param
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[assignment,no-redef]
    from airflow.models.param import Param  # type: ignore[assignment,no-redef]

from airflow_ecr_promote.operators import EcrPromoteOperator

# Replace with your accounts, regions and roles.
STAGING_REGISTRY = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
PRODUCTION_REGISTRY = "210987654321.dkr.ecr.us-east-1.amazonaws.com"
PULL_ROLE = "arn:aws:iam::123456789012:role/ecr-promote-pull"
PUSH_ROLE = "arn:aws:iam::210987654321:role/ecr-promote-push"
NAMESPACE = "ecr-promote"
SERVICE_ACCOUNT = "ecr-promote"

OPTIONAL_STRING = ["null", "string"]

with DAG(
    dag_id="ecr_promote_on_demand",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # Native rendering keeps a None param None (not the string "None").
    render_template_as_native_obj=True,
    params={
        "source_image": Param(f"{STAGING_REGISTRY}/team/app:1.4.2", type="string"),
        "dest_image": Param(f"{PRODUCTION_REGISTRY}/team/app:1.4.2", type="string"),
        "source_role_arn": Param(PULL_ROLE, type=OPTIONAL_STRING),
        "dest_role_arn": Param(PUSH_ROLE, type=OPTIONAL_STRING),
        "engine": Param("skopeo", enum=["skopeo", "crane", "kaniko"]),
        "init_image": Param(None, type=OPTIONAL_STRING, description="override the aws CLI image"),
        "copier_image": Param(None, type=OPTIONAL_STRING, description="override the engine's image"),
    },
    tags=["ecr", "release"],
) as dag:
    EcrPromoteOperator(
        task_id="promote",
        source_image="{{ params.source_image }}",
        dest_image="{{ params.dest_image }}",
        source_role_arn="{{ params.source_role_arn }}",
        dest_role_arn="{{ params.dest_role_arn }}",
        engine="{{ params.engine }}",
        init_image="{{ params.init_image }}",
        copier_image="{{ params.copier_image }}",
        namespace=NAMESPACE,
        service_account_name=SERVICE_ACCOUNT,
    )
