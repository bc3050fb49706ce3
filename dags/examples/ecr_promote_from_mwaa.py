"""A promotion from Airflow that runs outside the cluster (Amazon MWAA, ECS, a VM): the task names
the EKS cluster and the Amazon provider writes the kubeconfig, with a short-lived EKS token, for
the duration of the task. The worker's identity (on MWAA the execution role) needs
``eks:DescribeCluster`` and an EKS access entry; the pod's own identity comes from its service
account, as in the other examples (README: "Airflow outside the cluster")."""

from __future__ import annotations

from datetime import datetime

try:
    from airflow.sdk import DAG, Param
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[assignment,no-redef]
    from airflow.models.param import Param  # type: ignore[assignment,no-redef]

from airflow_ecr_promote.operators import EcrPromoteOperator

# Replace with your accounts, regions, roles and cluster.
STAGING_REGISTRY = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
PRODUCTION_REGISTRY = "210987654321.dkr.ecr.us-east-1.amazonaws.com"
PULL_ROLE = "arn:aws:iam::123456789012:role/ecr-promote-pull"
PUSH_ROLE = "arn:aws:iam::210987654321:role/ecr-promote-push"
EKS_CLUSTER = "platform-prod"
EKS_REGION = "us-west-2"
NAMESPACE = "ecr-promote"
SERVICE_ACCOUNT = "ecr-promote"

with DAG(
    dag_id="ecr_promote_from_mwaa",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"tag": Param("1.0.0", type="string", description="the tag to promote")},
    tags=["ecr", "release", "mwaa"],
) as dag:
    EcrPromoteOperator(
        task_id="promote",
        source_image=f"{STAGING_REGISTRY}/team/app:{{{{ params.tag }}}}",
        dest_image=f"{PRODUCTION_REGISTRY}/team/app:{{{{ params.tag }}}}",
        source_role_arn=PULL_ROLE,
        dest_role_arn=PUSH_ROLE,
        engine="skopeo",
        eks_cluster_name=EKS_CLUSTER,
        eks_region=EKS_REGION,
        eks_aws_conn_id=None,  # boto3's default credentials: on MWAA, the execution role
        namespace=NAMESPACE,
        service_account_name=SERVICE_ACCOUNT,
    )
