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
        engine=kwargs.pop("engine", "skopeo"),
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


def test_a_batch_with_one_missing_tag_sends_that_tag_alone_to_the_pod(ecr: Any) -> None:
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
        assert pod_copies(pod) == ["1.1"]
        line = "1 copied sha256:" + "b" * 64 + " sha256:" + "b" * 64
        return finished(pod, [terminated(INIT_CONTAINER_NAME, 0)], [terminated("base", 0, line)])

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


# ---------------------------------------------------------------------------------------------
# Per copy: the pod gets only what is not in place
# ---------------------------------------------------------------------------------------------

OTHER = "sha256:" + "9" * 64


def batch(source_repo: str, dest_repo: str, tags: list[str], **kwargs: Any) -> EcrPromoteOperator:
    return EcrPromoteOperator(
        task_id="promote",
        namespace="ns",
        engine=kwargs.pop("engine", "skopeo"),
        source_image=f"{SOURCE_HOST}/{source_repo}",
        dest_image=f"{SOURCE_HOST}/{dest_repo}",
        tags=tags,
        dest_aws_conn_id=CONN_ID,
        **kwargs,
    )


def pod_copies(pod: k8s.V1Pod) -> list[str]:
    """The tags of the copy list the pod's copier reads."""
    env = {e.name: e.value for e in pod.spec.containers[0].env or []}
    chunks = int(env["COPY_CHUNKS"])
    text = "\n".join(env["COPIES" if n == 1 else f"COPIES_{n}"] for n in range(1, chunks + 1))
    # one copy is not a batch: its line names both images
    return [line.rsplit(":", 1)[-1] for line in text.split("\n")]


def copier_copies(digests: dict[str, str], seen: list[list[str]]) -> Any:
    """A copier that copies whatever its list holds and reports each as copied."""

    def run(pod: k8s.V1Pod) -> k8s.V1Pod:
        tags = pod_copies(pod)
        seen.append(tags)
        lines = [f"{n} copied {digests[t]} {digests[t]}" for n, t in enumerate(tags, start=1)]
        message = "\n".join(lines) if len(lines) > 1 else lines[0]
        return finished(pod, [terminated(INIT_CONTAINER_NAME, 0)], [terminated("base", 0, message)])

    return run


def test_a_batch_sends_only_the_missing_copies_and_returns_every_copy_in_order(ecr: Any) -> None:
    source_repo, dest_repo = new_repository(ecr), new_repository(ecr, "prod/app")
    tags = [f"1.{i}" for i in range(12)]
    digests = {tag: put(ecr, source_repo, tag, seed=tag) for tag in tags}
    missing = {"1.3", "1.10"}
    for tag in tags:
        if tag not in missing:
            put(ecr, dest_repo, tag, seed=tag)
    op = batch(source_repo, dest_repo, tags)
    seen: list[list[str]] = []
    with kubernetes_stand_in(copier_copies(digests, seen)) as cluster:
        result = op.execute(make_context(op))
    assert len(cluster.created) == 1
    assert seen == [["1.3", "1.10"]], "the pod gets only the copies not in place, in order"
    entries = result["promotions"]
    assert [e["dest_image"].rsplit(":", 1)[1] for e in entries] == tags
    assert [e["status"] for e in entries] == ["copied" if t in missing else "present" for t in tags]
    assert [e["digest"] for e in entries] == [digests[t] for t in tags]
    assert (result["present"], result["copied"], result["failed"]) == (10, 2, 0)


def test_a_destination_tag_with_another_digest_goes_to_the_pod_for_on_conflict(ecr: Any) -> None:
    source_repo, dest_repo = new_repository(ecr), new_repository(ecr, "prod/app")
    tags = ["2.0", "2.1", "2.2"]
    digests = {tag: put(ecr, source_repo, tag, seed=tag) for tag in tags}
    put(ecr, dest_repo, "2.0", seed="2.0")
    put(ecr, dest_repo, "2.1", seed="something else")
    put(ecr, dest_repo, "2.2", seed="2.2")
    op = batch(source_repo, dest_repo, tags, on_conflict="skip")

    def run(pod: k8s.V1Pod) -> k8s.V1Pod:
        assert pod_copies(pod) == ["2.1"]
        line = f"1 skipped {OTHER} {digests['2.1']} the destination tag holds another digest"
        return finished(pod, [terminated(INIT_CONTAINER_NAME, 0)], [terminated("base", 0, line)])

    with kubernetes_stand_in(run) as cluster:
        result = op.execute(make_context(op))
    assert len(cluster.created) == 1
    assert [e["status"] for e in result["promotions"]] == ["present", "skipped", "present"]


def test_a_failed_copy_among_copies_in_place_fails_the_task_and_keeps_every_entry(ecr: Any) -> None:
    source_repo, dest_repo = new_repository(ecr), new_repository(ecr, "prod/app")
    tags = ["3.0", "3.1"]
    for tag in tags:
        put(ecr, source_repo, tag, seed=tag)
    put(ecr, dest_repo, "3.0", seed="3.0")
    op = batch(source_repo, dest_repo, tags)
    context = make_context(op)

    def run(pod: k8s.V1Pod) -> k8s.V1Pod:
        line = "1 failed - - denied: not allowed"
        return finished(pod, [terminated(INIT_CONTAINER_NAME, 0)], [terminated("base", 1, line)])

    with kubernetes_stand_in(run), pytest.raises(EcrPromoteError):
        op.execute(context)
    entries = context["ti"].pushed["return_value"]["promotions"]
    assert [e["status"] for e in entries] == ["present", "failed"]


def test_lookups_go_100_images_a_call_and_report_each_missing_image_alone(ecr: Any) -> None:
    """250 tags over 5 images (so each image holds many tags, as in a backfill), every seventh
    tag missing: three calls, one answer per image, the missing ones None."""
    from airflow_ecr_promote.precheck import look_up
    from airflow_ecr_promote.refs import parse_image_ref

    repo = new_repository(ecr)
    tags = [f"4.{i}" for i in range(250)]
    digests = {t: put(ecr, repo, t, seed=f"image-{i % 5}") for i, t in enumerate(tags) if i % 7}
    images = [parse_image_ref("image", f"{SOURCE_HOST}/{repo}:{t}") for t in tags]
    found = look_up(CONN_ID, images)
    assert [found[i].digest if found[i] else None for i in images] == [digests.get(t) for t in tags]


def test_a_missing_destination_repository_sends_its_copies_to_the_pod(ecr: Any) -> None:
    source_repo = new_repository(ecr)
    digest = put(ecr, source_repo, "5.0")
    op = operator(source_repo, "prod/not-there", "5.0")
    with kubernetes_stand_in(copier_reports(digest)) as cluster:
        result = op.execute(make_context(op))
    assert len(cluster.created) == 1 and result["status"] == "copied"


# ---------------------------------------------------------------------------------------------
# With signatures: in place only with every cosign tag the source holds
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dest_signature", "pod"),
    [("same", False), (None, True), ("other", True)],
    ids=["signature-travelled", "signature-missing", "signature-differs"],
)
def test_with_signatures_a_copy_is_in_place_only_with_its_signature(
    ecr: Any, dest_signature: str | None, pod: bool
) -> None:
    source_repo, dest_repo = new_repository(ecr), new_repository(ecr, "prod/app")
    digest = put(ecr, source_repo, "6.0", seed="6.0")
    put(ecr, dest_repo, "6.0", seed="6.0")
    sig = digest.replace(":", "-") + ".sig"
    put(ecr, source_repo, sig, seed="signature")
    if dest_signature is not None:
        put(ecr, dest_repo, sig, seed="signature" if dest_signature == "same" else "forged")
    op = operator(source_repo, dest_repo, "6.0", engine="regctl")
    with kubernetes_stand_in(copier_reports(digest)) as cluster:
        result = op.execute(make_context(op))
    assert len(cluster.created) == (1 if pod else 0)
    assert result["status"] == ("copied" if pod else "present")
    assert result["digest"] == digest


@pytest.mark.parametrize("deleted_meanwhile", [False, True])
def test_a_deferred_task_resumes_knowing_which_copies_its_pod_carried(
    ecr: Any, deleted_meanwhile: bool
) -> None:
    """The resumed task is a new instance: the pod's annotation says which copies were in place
    before it, and the ECR API confirms them again. One deleted meanwhile is unknown, and fails."""
    from airflow_ecr_promote.compat import TaskDeferred
    from airflow_ecr_promote.operators import IN_PLACE_ANNOTATION

    source_repo, dest_repo = new_repository(ecr), new_repository(ecr, "prod/app")
    tags = ["7.0", "7.1", "7.2", "7.3"]
    digests = {tag: put(ecr, source_repo, tag, seed=tag) for tag in tags}
    for tag in ("7.0", "7.2", "7.3"):
        put(ecr, dest_repo, tag, seed=tag)
    seen: list[list[str]] = []
    context = make_context(batch(source_repo, dest_repo, tags, deferrable=True))
    with kubernetes_stand_in(copier_copies(digests, seen)) as cluster:
        with pytest.raises(TaskDeferred):
            context["task"].execute(context)
        pod = cluster.created[0]
        assert seen == [["7.1"]]
        assert pod.metadata.annotations[IN_PLACE_ANNOTATION] == "0,2-3"
        if deleted_meanwhile:
            ecr.batch_delete_image(repositoryName=dest_repo, imageIds=[{"imageTag": "7.3"}])
        fresh = batch(source_repo, dest_repo, tags, deferrable=True)  # a resumed task is a new instance
        event = {"status": "success", "name": pod.metadata.name, "namespace": "ns"}
        if deleted_meanwhile:
            with pytest.raises(EcrPromoteError, match="could not confirm it after the deferred task resumed"):
                fresh.trigger_reentry(context, event)
            result = context["ti"].pushed["return_value"]
        else:
            result = fresh.trigger_reentry(context, event)
    entries = result["promotions"]
    assert [e["dest_image"].rsplit(":", 1)[1] for e in entries] == tags
    last = "unknown" if deleted_meanwhile else "present"
    assert [e["status"] for e in entries] == ["present", "copied", "present", last]
    assert [e["digest"] for e in entries[:3]] == [digests[t] for t in tags[:3]]


@pytest.mark.parametrize("deleted_meanwhile", [False, True])
def test_a_deferred_task_whose_succeeded_pod_was_collected_confirms_every_copy(
    ecr: Any, deleted_meanwhile: bool
) -> None:
    """The trigger saw the pod succeed; the pod was garbage-collected before the task resumed, and
    its report with it (KPO 10.25 then returns nothing). The ECR API confirms every copy; one the
    destination does not hold is unknown, and fails the task saying why."""
    from airflow_ecr_promote.compat import TaskDeferred

    source_repo, dest_repo = new_repository(ecr), new_repository(ecr, "prod/app")
    tags = ["8.0", "8.1"]
    digests = {tag: put(ecr, source_repo, tag, seed=tag) for tag in tags}
    seen: list[list[str]] = []
    context = make_context(batch(source_repo, dest_repo, tags, deferrable=True))
    with kubernetes_stand_in(copier_copies(digests, seen)) as cluster:
        with pytest.raises(TaskDeferred):
            context["task"].execute(context)
        name = cluster.created[0].metadata.name
        for tag in tags[: 1 if deleted_meanwhile else 2]:  # what the pod copied
            put(ecr, dest_repo, tag, seed=tag)
        cluster.collected.add(name)
        fresh = batch(source_repo, dest_repo, tags, deferrable=True)
        event = {"status": "success", "name": name, "namespace": "ns"}
        if deleted_meanwhile:
            with pytest.raises(EcrPromoteError) as caught:
                fresh.trigger_reentry(context, event)
            assert f"pod ns/{name} succeeded and was deleted before the task read its report" in str(
                caught.value
            )
            assert f"{dest_repo}:8.1" in str(caught.value)
            result = context["ti"].pushed["return_value"]
        else:
            result = fresh.trigger_reentry(context, event)
    entries = result["promotions"]
    assert [e["status"] for e in entries] == ["present", "unknown" if deleted_meanwhile else "present"]
    assert entries[0]["digest"] == digests["8.0"] and entries[0]["confirmed"] == "ECR API"
