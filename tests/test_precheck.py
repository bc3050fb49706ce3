"""Re-runs without a pod: the worker compares digests through the ECR API (a real moto_server,
through a real Airflow connection) and starts a pod only when something is missing or differs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from kubernetes.client import models as k8s

from airflow_ecr_promote.operators import EcrPromoteError, EcrPromoteOperator
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


def copier_message(lines: list[str]) -> str:
    """The copy script's termination message: its summary, then the report lines that fit in 1 KiB."""
    report = "".join(f"{line}\n" for line in lines)
    counts = {
        s: sum(line.split(" ")[1] == s for line in lines) for s in ("copied", "present", "skipped", "failed")
    }
    summary = (
        f"ecr-promote summary copies={len(lines)} "
        + " ".join(f"{s}={n}" for s, n in counts.items())
        + f" report=sha256:{hashlib.sha256(report.encode()).hexdigest()}"
    )
    message, size = [summary], len(summary) + 1
    for line in lines:
        size += len(line) + 1
        if size > 1024:
            break
        message.append(line)
    return "\n".join(message) + "\n"


@pytest.mark.parametrize("lost_in_ecr", [False, True])
def test_a_lost_log_is_completed_from_the_ecr_api_failing_only_what_it_cannot_confirm(
    ecr: Any, lost_in_ecr: bool
) -> None:
    """The copier's node is gone with its log, and its termination message holds only the
    summary (failed=0) and the first lines: the worker confirms the others through the ECR API.
    With ``lost_in_ecr``, the destination does not hold the last tag's image (deleted since): that
    one copy alone fails, saying why."""
    source_repo, dest_repo = new_repository(ecr), new_repository(ecr, "prod/app")
    tags = [f"1.{i}" for i in range(12)]
    digests = {tag: put(ecr, source_repo, tag, seed=tag) for tag in tags}
    op = EcrPromoteOperator(
        task_id="promote",
        namespace="ns",
        engine="skopeo",
        source_image=f"{SOURCE_HOST}/{source_repo}",
        dest_image=f"{SOURCE_HOST}/{dest_repo}",
        tags=tags,
        dest_aws_conn_id=CONN_ID,
    )
    lines = [f"{n} copied {digests[tag]} {digests[tag]}" for n, tag in enumerate(tags, start=1)]
    message = copier_message(lines)
    in_message = message.count("\n") - 1
    assert 0 < in_message < len(tags), "the report does not fit in the termination message"

    def run(pod: k8s.V1Pod) -> k8s.V1Pod:
        for tag in tags[:-1] if lost_in_ecr else tags:  # what the copier wrote, as ECR shows it
            put(ecr, dest_repo, tag, seed=tag)
        return finished(pod, [terminated(INIT_CONTAINER_NAME, 0)], [terminated("base", 0, message)])

    context = make_context(op)
    with kubernetes_stand_in(run) as cluster:  # no log to read: its node is gone
        if lost_in_ecr:
            with pytest.raises(EcrPromoteError) as caught:
                op.execute(context)
            result = context["ti"].pushed["return_value"]
        else:
            result = op.execute(context)
    assert cluster.log_reads == ["base"]
    entries = result["promotions"]
    assert [e["status"] for e in entries[:-1]] == ["copied"] * (len(tags) - 1)
    assert [e["digest"] for e in entries[:-1]] == [digests[t] for t in tags[:-1]]
    assert all(e.get("confirmed") == "ECR API" for e in entries[in_message:-1])
    assert all("confirmed" not in e for e in entries[:in_message]), "read from the message"
    if lost_in_ecr:
        assert entries[-1]["status"] == "unknown"
        assert "could not be read" in entries[-1]["reason"]
        assert (
            "the ECR API does not show the destination holding the source's digest" in entries[-1]["reason"]
        )
        assert "1 of 12 promotions failed" in str(caught.value)
        assert f"{dest_repo}:1.11" in str(caught.value) and f"{dest_repo}:1.10" not in str(caught.value)
    else:
        assert (entries[-1]["status"], entries[-1]["confirmed"]) == ("copied", "ECR API")
        assert result["copied"] == 12 and result["failed"] == 0
