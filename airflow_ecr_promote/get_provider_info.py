"""Provider metadata read by Airflow's ProvidersManager through the entry point."""

from __future__ import annotations

from typing import Any

from airflow_ecr_promote import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-ecr-promote",
        "name": "ECR Promote",
        "description": "Promote container images between Amazon ECR registries of different "
        "AWS accounts and regions, in a Kubernetes pod.",
        "versions": [__version__],
        "operators": [
            {
                "integration-name": "Amazon ECR promotion",
                "python-modules": ["airflow_ecr_promote.operators", "airflow_ecr_promote.discovery"],
            }
        ],
        "sensors": [
            {"integration-name": "Amazon ECR promotion", "python-modules": ["airflow_ecr_promote.sensors"]}
        ],
        "triggers": [
            {"integration-name": "Amazon ECR promotion", "python-modules": ["airflow_ecr_promote.triggers"]}
        ],
    }
