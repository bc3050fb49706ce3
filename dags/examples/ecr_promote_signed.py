"""Promote only signed images, with their signatures: a release tag goes from staging to
production if, and only if, cosign verifies its signature with the release key; the signature,
attestations and SBOM travel with it, so production's admission controller admits the image.

    airflow dags trigger ecr_promote_signed --conf '{"tag": "1.4.2"}'

The release public key (the ``cosign.pub`` of ``cosign generate-key-pair``) is read from the
Airflow Variable ``release_signing_public_key``, which only release managers may edit; never take
the key from ``dag_run.conf``, since whoever chooses the key chooses what passes the gate.
"""

from __future__ import annotations

from datetime import datetime

try:
    from airflow.sdk import DAG, Param
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[assignment,no-redef]
    from airflow.models.param import Param  # type: ignore[no-redef]

from airflow_ecr_promote.operators import EcrPromoteOperator

# Replace with your accounts, regions and roles.
STAGING_REGISTRY = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
PRODUCTION_REGISTRY = "210987654321.dkr.ecr.us-east-1.amazonaws.com"
PULL_ROLE = "arn:aws:iam::123456789012:role/ecr-promote-pull"
PUSH_ROLE = "arn:aws:iam::210987654321:role/ecr-promote-push"

with DAG(
    dag_id="ecr_promote_signed",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"tag": Param("1.4.2", type="string", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")},
    tags=["ecr", "release", "signed"],
) as dag:
    EcrPromoteOperator(
        task_id="promote_signed",
        source_image=f"{STAGING_REGISTRY}/team/app:{{{{ params.tag }}}}",
        dest_image=f"{PRODUCTION_REGISTRY}/team/app:{{{{ params.tag }}}}",
        source_role_arn=PULL_ROLE,
        dest_role_arn=PUSH_ROLE,
        engine="regctl",  # copies cosign's .sig/.att/.sbom tags and the OCI referrers (with_signatures)
        verify_signature_key="{{ var.value.release_signing_public_key }}",
        namespace="ecr-promote",
        service_account_name="ecr-promote",
    )
