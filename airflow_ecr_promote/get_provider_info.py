"""Provider metadata read by Airflow's ProvidersManager through the entry point.

Every Airflow process calls this at start, so it imports nothing heavier than the engine table.
"""

from __future__ import annotations

from typing import Any

from airflow_ecr_promote import __version__

_INTEGRATION = "Amazon ECR promotion"
_URI_HANDLER = {"schemes": ["ecr"], "handler": "airflow_ecr_promote.assets.sanitize_uri"}


def _config() -> dict[str, Any]:
    from airflow_ecr_promote.engines import DEFAULT_ENGINE, ENGINES

    def option(description: str, example: str) -> dict[str, Any]:
        return {
            "description": description,
            "version_added": "0.1.0",
            "type": "string",
            "example": example,
            "default": "",
        }

    options = {
        "default_engine": option(
            f"Engine of EcrPromoteOperator tasks that pass no ``engine``: one of {', '.join(ENGINES)}. "
            f"Unset: {DEFAULT_ENGINE}.",
            "skopeo",
        ),
        "init_image": option(
            "Image of the login init container (sh, AWS CLI v2, coreutils) of tasks that pass no "
            "``init_image``. Unset: the AWS CLI image pinned by this release.",
            "registry.example.com/mirror/aws-cli:2.27.50",
        ),
    }
    for engine in ENGINES.values():
        options[f"{engine.name}_image"] = option(
            f"Copier image of the {engine.name} engine for tasks that pass no ``copier_image``. "
            f"Unset: {engine.default_image}.",
            f"registry.example.com/mirror/{engine.default_image.rsplit('/', 1)[-1]}",
        )
    return {
        "ecr_promote": {
            "description": "Cluster-wide defaults of airflow-ecr-promote (a task's own argument wins), "
            "e.g. for clusters that admit only images from approved registries.",
            "options": options,
        }
    }


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-ecr-promote",
        "name": "ECR Promote",
        "description": "Promote container images between Amazon ECR registries of different "
        "AWS accounts and regions, in a Kubernetes pod.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://docs.aws.amazon.com/AmazonECR/latest/userguide/what-is-ecr.html",
                "tags": ["aws"],
            }
        ],
        "operators": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_ecr_promote.operators", "airflow_ecr_promote.discovery"],
            }
        ],
        "sensors": [{"integration-name": _INTEGRATION, "python-modules": ["airflow_ecr_promote.sensors"]}],
        "triggers": [{"integration-name": _INTEGRATION, "python-modules": ["airflow_ecr_promote.triggers"]}],
        "extra-links": ["airflow_ecr_promote.links.EcrImageLink"],
        "asset-uris": [_URI_HANDLER],
        "dataset-uris": [_URI_HANDLER],
        "config": _config(),
    }
