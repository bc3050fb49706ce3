"""Re-runs without a pod: the worker compares digests through the ECR API (a real moto_server,
through a real Airflow connection) and starts a pod only when something is missing or differs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client import models as k8s

from airflow_ecr_promote.operators import EcrPromoteOperator
from airflow_ecr_promote.pod import INIT_CONTAINER_NAME
from tests.airflow_context import make_context
from tests.conftest import SOURCE_HOST
from tests.kube_stand_in import finished, kubernetes_stand_in, terminated
from tests.test_discovery import CONN_ID, connect_airflow_to, ecr_client, new_repository, put

pytestmark = pytest.mark.moto


@pytest.fixture
def ecr(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    connect_airflow_to(monkeypatch, moto_server)
    return ecr_client(moto_server)


def copier_reports(digest: str) -> Any:
    def run(pod: k8s.V1Pod) -> k8s.V1Pod:
        return finished(
            pod, [terminated(INIT_CONTAINER_NAME, 0)], [terminated("base", 0, f"1 copied {digest} {digest}")]
        )

    return run


def operator(source_repo: str, dest_repo: str, tag: str, **kwargs: Any) -> EcrPromoteOperator:
    return EcrPromoteOperator(
        task_id="promote",
        namespace="ns",
        engine="skopeo",
        source_image=f"{SOURCE_HOST}/{source_repo}:{tag}",
        dest_image=f"{SOURCE_HOST}/{dest_repo}:{tag}",
        dest_aws_conn_id=CONN_ID,
        **kwargs,
    )


def test_everything_already_promoted_starts_no_pod(ecr: Any) -> None:
    source_repo, dest_repo = new_repository(ecr), new_repository(ecr, "prod/app")
    digest = put(ecr, source_repo, "1.0", seed="same")
    assert put(ecr, dest_repo, "1.0", seed="same") == digest
    op = operator(source_repo, dest_repo, "1.0")
    context = make_context(op)
    with kubernetes_stand_in(copier_reports(digest)) as cluster:
        result = op.execute(context)
    assert cluster.created == []
    assert (result["status"], result["digest"], result["digest_kept"]) == ("present", digest, True)
    assert "return_value" not in context["ti"].pushed


def test_a_batch_with_one_missing_tag_goes_to_the_pod(ecr: Any) -> None:
    source_repo, dest_repo = new_repository(ecr), new_repository(ecr, "prod/app")
    for tag in ("1.0", "1.1"):
        put(ecr, source_repo, tag, seed=tag)
    put(ecr, dest_repo, "1.0", seed="1.0")
    op = EcrPromoteOperator(
        task_id="promote",
        namespace="ns",
        engine="skopeo",
        source_image=f"{SOURCE_HOST}/{source_repo}",
        dest_image=f"{SOURCE_HOST}/{dest_repo}",
        tags=["1.0", "1.1"],
        dest_aws_conn_id=CONN_ID,
    )

    def run(pod: k8s.V1Pod) -> k8s.V1Pod:
        lines = "1 present sha256:" + "a" * 64 + " sha256:" + "a" * 64 + "\n2 copied sha256:" + "b" * 64
        return finished(
            pod, [terminated(INIT_CONTAINER_NAME, 0)], [terminated("base", 0, lines + " sha256:" + "b" * 64)]
        )

    with kubernetes_stand_in(run) as cluster:
        result = op.execute(make_context(op))
    assert len(cluster.created) == 1
    assert [p["status"] for p in result["promotions"]] == ["present", "copied"]


def test_a_different_digest_at_the_destination_goes_to_the_pod(ecr: Any) -> None:
    source_repo, dest_repo = new_repository(ecr), new_repository(ecr, "prod/app")
    digest = put(ecr, source_repo, "2.0", seed="new")
    put(ecr, dest_repo, "2.0", seed="old")
    op = operator(source_repo, dest_repo, "2.0", on_conflict="overwrite")
    with kubernetes_stand_in(copier_reports(digest)) as cluster:
        result = op.execute(make_context(op))
    assert len(cluster.created) == 1
    assert result["status"] == "copied"


def test_an_unreachable_ecr_api_falls_back_to_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    connect_airflow_to(monkeypatch, "http://127.0.0.1:9")
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {
                    "endpoint_url": "http://127.0.0.1:9",
                    "config_kwargs": {"retries": {"max_attempts": 1}},
                },
            }
        ),
    )
    digest = "sha256:" + "c" * 64
    op = operator("team/app", "prod/app", "3.0")
    with kubernetes_stand_in(copier_reports(digest)) as cluster:
        result = op.execute(make_context(op))
    assert len(cluster.created) == 1
    assert result["digest"] == digest
