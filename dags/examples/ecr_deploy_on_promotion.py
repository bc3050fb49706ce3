"""Deploy what a promotion published, by digest: a DAG scheduled on the promoted image's asset.

Every EcrPromoteOperator task publishes each image it copies as an event of the destination
repository's asset, ``ecr://<account>.dkr.ecr.<region>.amazonaws.com/<repository>``; the event's
``extra`` holds the source, the destination, both digests, the status and ``image``, the
destination by digest. This DAG runs on those events (from ``ecr_release_pipeline`` or any
other promotion into the production repository) and points the ``app`` Deployment at exactly
the digest it received: a tag moved or overwritten later cannot change what is deployed.

A re-run that finds the image already promoted publishes no event, so it deploys nothing again
(except on a retry of the promotion task: see the README, "Assets").
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

try:
    from airflow.sdk import DAG, Asset, get_current_context, task
except ImportError:  # Airflow 2.11: assets are called datasets
    from airflow import DAG  # type: ignore[assignment,no-redef]
    from airflow.datasets import Dataset as Asset  # type: ignore[assignment,no-redef]
    from airflow.decorators import task  # type: ignore[attr-defined,no-redef]
    from airflow.operators.python import get_current_context  # type: ignore[attr-defined,no-redef]

# Replace with your production registry, repository and Deployment.
PRODUCTION_APP = Asset("ecr://210987654321.dkr.ecr.us-east-1.amazonaws.com/team/app")
KUBERNETES_CONN_ID = "kubernetes_default"
NAMESPACE = "production"
DEPLOYMENT = "app"
CONTAINER = "app"

with DAG(
    dag_id="ecr_deploy_on_promotion",
    schedule=[PRODUCTION_APP],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["ecr", "deploy"],
) as dag:

    @task
    def image_to_deploy() -> str:
        """The newest promoted image of the events that triggered this run, by digest."""
        context: Any = get_current_context()
        events = context.get("triggering_asset_events") or context.get("triggering_dataset_events") or {}
        received = [event for key in events for event in events[key]]
        if not received:
            raise ValueError(
                "no promotion event triggered this run: it runs when an EcrPromoteOperator task "
                f"publishes {PRODUCTION_APP.uri}"
            )
        newest = max(received, key=lambda event: event.timestamp)
        return str(newest.extra["image"])

    @task
    def deploy(image: str) -> str:
        """Point the Deployment's container at ``image`` (``<repository>@sha256:...``)."""
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
        from kubernetes.client import AppsV1Api

        apps = AppsV1Api(KubernetesHook(conn_id=KUBERNETES_CONN_ID).get_conn())
        patch = {"spec": {"template": {"spec": {"containers": [{"name": CONTAINER, "image": image}]}}}}
        apps.patch_namespaced_deployment(DEPLOYMENT, NAMESPACE, patch)
        return image

    deploy(image_to_deploy())
