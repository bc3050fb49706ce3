"""The scan-findings gate through the operator: its settings are refused before any pod when they
cannot be read, and its judgement runs on the worker through the Amazon provider's EcrHook against
moto's ECR API (in this process, extended by tests/lab/moto_scan.py so that each image has the
scan a test gives it). Only the Kubernetes API is stood in for (tests/kube_stand_in.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from kubernetes.client import models as k8s

from airflow_ecr_promote.operators import EcrPromoteError, EcrPromoteOperator
from airflow_ecr_promote.pod import INIT_CONTAINER_NAME
from airflow_ecr_promote.refs import PromotionInputError
from airflow_ecr_promote.scan_gate import parse_scan_gate
from tests.airflow_context import make_context
from tests.conftest import SOURCE_ACCOUNT, SOURCE_HOST, SOURCE_REGION
from tests.kube_stand_in import finished, kubernetes_stand_in, terminated
from tests.lab import moto_scan
from tests.test_discovery import manifest

CONN_ID = "scan_gate"
DEST = "210987654321.dkr.ecr.us-east-1.amazonaws.com/prod/app"

# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------

BAD_SETTINGS = [
    # (inputs, parameter named, fragments of the message)
    ({"max_severity": ""}, "max_severity", ["is empty", "'CRITICAL'"]),
    ({"max_severity": "   "}, "max_severity", ["is empty"]),
    ({"max_severity": "SEVERE"}, "max_severity", ["'SEVERE'", "not one of ECR's", "'INFORMATIONAL', 'LOW'"]),
    ({"max_severity": "UNDEFINED"}, "max_severity", ["not one of ECR's", "UNDEFINED findings always do"]),
    ({"max_severity": 3}, "max_severity", ["must be a string, not int"]),
    ({"max_severity": "HIGH", "ignore_findings": [""]}, "ignore_findings[0]", ["is not a vulnerability id"]),
    ({"max_severity": "HIGH", "ignore_findings": 7}, "ignore_findings", ["is not a list"]),
    ({"max_severity": "HIGH", "ignore_findings": ["CVE-1; rm"]}, "ignore_findings[0]", ["'CVE-1; rm'"]),
    ({"max_severity": "HIGH", "scan_wait": -1}, "scan_wait", ["out of range", "0 to 3600"]),
    ({"max_severity": "HIGH", "scan_wait": "soon"}, "scan_wait", ["'soon'", "not a number of seconds"]),
    ({"max_severity": "HIGH", "scan_wait": True}, "scan_wait", ["not a number"]),
    ({"max_severity": "HIGH", "on_findings": "warn"}, "on_findings", ["'warn'", "'fail'", "'skip'"]),
    ({"ignore_findings": ["CVE-2024-1"]}, "ignore_findings", ["no effect without max_severity"]),
    ({"on_findings": "skip"}, "on_findings", ["no effect without max_severity"]),
]


@pytest.mark.parametrize(("inputs", "param", "fragments"), BAD_SETTINGS)
def test_bad_settings_are_refused_naming_the_parameter(
    inputs: dict[str, Any], param: str, fragments: list[str]
) -> None:
    with pytest.raises(PromotionInputError) as raised:
        parse_scan_gate(
            inputs.get("max_severity"),
            inputs.get("ignore_findings"),
            inputs.get("scan_wait"),
            inputs.get("on_findings"),
            aws_conn_id=CONN_ID,
        )
    assert raised.value.param == param
    for fragment in fragments:
        assert fragment in str(raised.value)


def test_settings_are_read_as_templates_render_them() -> None:
    gate = parse_scan_gate(
        "high", "CVE-2024-1, GHSA-abcd-efgh-ijkl CVE-2024-1", "60", "skip", aws_conn_id=CONN_ID
    )
    assert gate is not None
    assert (gate.max_severity, gate.ignore, gate.wait, gate.on_findings) == (
        "HIGH",
        ("CVE-2024-1", "GHSA-abcd-efgh-ijkl"),
        60.0,
        "skip",
    )
    assert parse_scan_gate(None) is None


def test_a_gate_without_a_connection_is_refused_at_parse_time() -> None:
    with pytest.raises(PromotionInputError, match="max_severity='HIGH': needs an Airflow AWS connection"):
        EcrPromoteOperator(
            task_id="t", engine="skopeo", source_image=f"{SOURCE_HOST}/team/app:1", dest_image=f"{DEST}:1",
            max_severity="HIGH",
        )  # fmt: skip


def test_a_templated_setting_is_checked_after_rendering_before_any_call_or_pod() -> None:
    op = EcrPromoteOperator(
        task_id="t",
        engine="skopeo",
        source_image=f"{SOURCE_HOST}/team/app:1",
        dest_image=f"{DEST}:1",
        max_severity="{{ params.gate }}",
        source_aws_conn_id=CONN_ID,
    )
    context = make_context(op, conf={"gate": ""})
    op.render_template_fields(context)
    with (
        kubernetes_stand_in(lambda pod: pod) as cluster,
        pytest.raises(PromotionInputError, match="is empty"),
    ):
        op.execute(context)
    assert cluster.created == []


# ---------------------------------------------------------------------------------------------
# Judged through the ECR API (moto, in this process)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def ecr(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from moto import mock_aws

    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"region_name": SOURCE_REGION},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
    for name in ("AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("airflow_ecr_promote.scan_api.POLL", (0.1,))
    moto_scan.install()
    with mock_aws():
        client = boto3.client(
            "ecr", region_name=SOURCE_REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
        )
        client.create_repository(repositoryName="team/app")
        yield client
    moto_scan.clear()


def image(client: Any, tag: str, **plan: Any) -> str:
    """Push ``team/app:<tag>`` and give it a scan (``plan``: moto_scan.ScanPlan's fields)."""
    digest = client.put_image(repositoryName="team/app", imageManifest=manifest(tag), imageTag=tag)["image"]
    moto_scan.set_plan(SOURCE_ACCOUNT, SOURCE_REGION, "team/app", tag, moto_scan.ScanPlan(**plan))
    return str(digest["imageId"]["imageDigest"])


def findings(*severities: str) -> list[dict[str, str]]:
    return [{"name": f"CVE-2026-{1000 + i}", "severity": s} for i, s in enumerate(severities)]


def gated(tags: list[str] | None = None, tag: str = "1.0", **kwargs: Any) -> EcrPromoteOperator:
    where: dict[str, Any] = (
        {"source_image": f"{SOURCE_HOST}/team/app", "dest_image": DEST, "tags": tags}
        if tags
        else {"source_image": f"{SOURCE_HOST}/team/app:{tag}", "dest_image": f"{DEST}:{tag}"}
    )
    kwargs.setdefault("max_severity", "HIGH")
    return EcrPromoteOperator(task_id="promote", namespace="ns", engine="skopeo", source_aws_conn_id=CONN_ID,
                              **where, **kwargs)  # fmt: skip


def copier_reports_each() -> Any:
    """A pod whose copier reports every copy it was given as copied."""

    def run(pod: k8s.V1Pod) -> k8s.V1Pod:
        digests = [f"sha256:{hashlib.sha256(tag.encode()).hexdigest()}" for tag in pod_copies(pod)]
        lines = [f"{n} copied {d} {d}" for n, d in enumerate(digests, start=1)]
        return finished(pod, [terminated(INIT_CONTAINER_NAME, 0)], [terminated("base", 0, "\n".join(lines))])

    return run


def pod_copies(pod: k8s.V1Pod) -> list[str]:
    env = {e.name: e.value for e in pod.spec.containers[0].env or []}
    return [line.rsplit(":", 1)[-1] for line in env["COPIES"].splitlines()]  # the destination tags


def pod_sources(pod: k8s.V1Pod) -> list[str]:
    env = {e.name: e.value for e in pod.spec.containers[0].env or []}
    return [line.split(" ")[0] for line in env["COPIES"].splitlines()]


def test_a_clean_image_is_promoted_and_the_result_shows_its_counts(ecr: Any) -> None:
    digest = image(ecr, "1.0", findings=findings("MEDIUM", "LOW", "LOW"))
    op = gated()
    with kubernetes_stand_in(copier_reports_each()) as cluster:
        result = op.execute(make_context(op))
    assert len(cluster.created) == 1
    assert pod_sources(cluster.created[0]) == [f"{SOURCE_HOST}/team/app@{digest}"], "the digest judged"
    assert result["status"] == "copied"
    assert result["source_image"] == f"{SOURCE_HOST}/team/app:1.0", "shown as given"
    assert result["scan"] == {"status": "COMPLETE", "counts": {"MEDIUM": 1, "LOW": 2}, "passed": True}


def test_a_critical_finding_refuses_the_image_with_no_pod_and_names_it(ecr: Any) -> None:
    image(ecr, "1.0", findings=findings("CRITICAL", "HIGH", "LOW"))
    op = gated()
    context = make_context(op)
    with kubernetes_stand_in(copier_reports_each()) as cluster, pytest.raises(EcrPromoteError) as raised:
        op.execute(context)
    assert cluster.created == []
    text = str(raised.value)
    assert "refused by the scan gate" in text
    assert "1 CRITICAL, 1 HIGH, 1 LOW" in text
    assert "CVE-2026-1000 (CRITICAL), CVE-2026-1001 (HIGH)" in text
    pushed = context["ti"].pushed["return_value"]
    assert (pushed["status"], pushed["digest"], pushed["scan"]["passed"]) == ("failed", None, False)


def test_ignored_findings_let_the_image_through(ecr: Any) -> None:
    image(ecr, "1.0", findings=findings("CRITICAL", "LOW"), enhanced=True)
    op = gated(ignore_findings=["CVE-2026-1000"])
    with kubernetes_stand_in(copier_reports_each()) as cluster:
        result = op.execute(make_context(op))
    assert len(cluster.created) == 1
    assert result["scan"] == {
        "status": "ACTIVE",
        "counts": {"LOW": 1},
        "passed": True,
        "ignored": ["CVE-2026-1000"],
    }


def test_a_batch_with_skip_promotes_the_others_and_lists_the_skipped(ecr: Any) -> None:
    image(ecr, "1.0", findings=findings("LOW"))
    image(ecr, "1.1", findings=findings("CRITICAL"))
    image(ecr, "1.2")
    op = gated(["1.0", "1.1", "1.2"], on_findings="skip")
    carried: list[list[str]] = []
    run = copier_reports_each()

    def record(pod: k8s.V1Pod) -> k8s.V1Pod:
        carried.append(pod_copies(pod))
        return run(pod)

    with kubernetes_stand_in(record):
        result = op.execute(make_context(op))
    assert carried == [["1.0", "1.2"]]
    assert [e["status"] for e in result["promotions"]] == ["copied", "skipped", "copied"]
    assert result["scan_refused"] == [f"{SOURCE_HOST}/team/app:1.1"]
    assert result["promotions"][1]["scan"]["counts"] == {"CRITICAL": 1}
    assert "CVE-2026-1000 (CRITICAL)" in result["promotions"][1]["reason"]
    assert (result["copied"], result["skipped"], result["failed"]) == (2, 1, 0)


def test_a_batch_with_fail_promotes_the_others_then_fails_naming_the_refused(ecr: Any) -> None:
    image(ecr, "1.0")
    image(ecr, "1.1", findings=findings("HIGH"))
    op = gated(["1.0", "1.1"])
    context = make_context(op)
    with kubernetes_stand_in(copier_reports_each()) as cluster, pytest.raises(EcrPromoteError) as raised:
        op.execute(context)
    assert [pod_copies(p) for p in cluster.created] == [["1.0"]]
    assert "1 of 2 promotions failed" in str(raised.value)
    assert f"{SOURCE_HOST}/team/app:1.1 -> {DEST}:1.1: refused by the scan gate" in str(raised.value)
    assert [e["status"] for e in context["ti"].pushed["return_value"]["promotions"]] == ["copied", "failed"]


def test_an_image_never_scanned_gets_a_scan_and_is_judged_when_it_completes(ecr: Any) -> None:
    image(ecr, "1.0", scanned=False, in_progress_seconds=0.3, findings=findings("LOW"))
    op = gated(scan_wait=30)
    with kubernetes_stand_in(copier_reports_each()) as cluster:
        result = op.execute(make_context(op))
    assert len(cluster.created) == 1
    assert result["scan"] == {"status": "COMPLETE", "counts": {"LOW": 1}, "passed": True}


def test_a_scan_in_progress_is_waited_for(ecr: Any) -> None:
    image(ecr, "1.0", in_progress_seconds=0.3, findings=findings("CRITICAL"))
    op = gated(scan_wait=30, on_findings="skip")
    with kubernetes_stand_in(copier_reports_each()) as cluster:
        result = op.execute(make_context(op))
    assert cluster.created == []
    assert result["status"] == "skipped"
    assert result["scan"]["counts"] == {"CRITICAL": 1}


def test_a_scan_still_running_after_scan_wait_refuses_saying_so(ecr: Any) -> None:
    image(ecr, "1.0", in_progress_seconds=60)
    op = gated(scan_wait=0)
    with (
        kubernetes_stand_in(copier_reports_each()) as cluster,
        pytest.raises(EcrPromoteError, match="still IN_PROGRESS after scan_wait"),
    ):
        op.execute(make_context(op))
    assert cluster.created == []


@pytest.mark.parametrize("status", ["FAILED", "UNSUPPORTED_IMAGE"])
def test_a_failed_or_unsupported_scan_refuses(ecr: Any, status: str) -> None:
    image(ecr, "1.0", status=status)
    op = gated()
    with (
        kubernetes_stand_in(copier_reports_each()),
        pytest.raises(EcrPromoteError, match=f"its scan is {status}"),
    ):
        op.execute(make_context(op))


def test_findings_over_many_pages_are_all_read(ecr: Any) -> None:
    many = [{"name": f"CVE-2025-{i}", "severity": "LOW"} for i in range(2500)] + findings("CRITICAL")
    image(ecr, "1.0", findings=many)
    op = gated(max_severity="CRITICAL", ignore_findings=["CVE-2026-1000"])
    with kubernetes_stand_in(copier_reports_each()):
        result = op.execute(make_context(op))
    assert result["scan"]["counts"] == {"LOW": 2500}


def test_a_missing_image_is_refused_with_aws_words(ecr: Any) -> None:
    op = gated(tag="9.9")
    with (
        kubernetes_stand_in(copier_reports_each()),
        pytest.raises(EcrPromoteError, match="ImageNotFoundException"),
    ):
        op.execute(make_context(op))


# ---------------------------------------------------------------------------------------------
# The example DAG
# ---------------------------------------------------------------------------------------------


def scan_gated_task() -> Any:
    from tests.airflow_context import DagBag
    from tests.conftest import REPO

    bag = DagBag(dag_folder=str(REPO / "dags" / "examples" / "ecr_promote_scan_gated.py"))
    return bag.dags["ecr_promote_scan_gated"].get_task("promote_scanned")


def rendered_example(variables: dict[str, str], tags: list[str]) -> tuple[Any, dict[str, Any]]:
    task = scan_gated_task().prepare_for_execution()
    context = make_context(task, conf={"tags": tags})
    context["var"] = {"value": variables}  # what Airflow's accessor answers to .get(key, default)
    task.render_template_fields(context)
    return context["task"], context


def test_the_scan_gated_example_renders_its_gate_from_variables() -> None:
    from tests.airflow_context import containers, env_of

    task, context = rendered_example(
        {"release_ignored_findings": "CVE-2024-3094, CVE-2023-4863"}, ["1.4.2", "1.4.3"]
    )
    gate = task._scan_gate()
    assert (gate.max_severity, gate.ignore, gate.on_findings) == (
        "HIGH",
        ("CVE-2024-3094", "CVE-2023-4863"),
        "skip",
    )
    copies = env_of(containers(task.build_pod_request_obj(context))["base"])["COPIES"].splitlines()
    assert [line.rsplit(":", 1)[-1] for line in copies] == ["1.4.2", "1.4.3"]


def test_the_scan_gated_example_refuses_an_emptied_severity_before_any_call() -> None:
    task, context = rendered_example({"release_max_severity": ""}, ["1.4.2"])
    with (
        kubernetes_stand_in(lambda pod: pod) as cluster,
        pytest.raises(PromotionInputError, match="max_severity=''"),
    ):
        task.execute(context)
    assert cluster.created == []


def test_a_deferred_task_resumes_knowing_which_copies_the_gate_refused(ecr: Any) -> None:
    """The resumed task is a new instance: the pod's annotation says which copies the gate kept
    out of it, so the result lists them in order and the task fails naming them ("fail")."""
    from airflow_ecr_promote.compat import TaskDeferred
    from airflow_ecr_promote.operators import SCAN_REFUSED_ANNOTATION

    image(ecr, "1.0", findings=findings("CRITICAL"))
    image(ecr, "1.1")
    context = make_context(gated(["1.0", "1.1"], deferrable=True))
    with kubernetes_stand_in(copier_reports_each()) as cluster:
        with pytest.raises(TaskDeferred):
            context["task"].execute(context)
        pod = cluster.created[0]
        assert pod_copies(pod) == ["1.1"]
        assert pod.metadata.annotations[SCAN_REFUSED_ANNOTATION] == "0"
        fresh = gated(["1.0", "1.1"], deferrable=True)  # a resumed task is a new instance
        event = {"status": "success", "name": pod.metadata.name, "namespace": "ns"}
        with pytest.raises(EcrPromoteError, match="refused by the scan gate before the pod started"):
            fresh.trigger_reentry(context, event)
    entries = context["ti"].pushed["return_value"]["promotions"]
    assert [e["status"] for e in entries] == ["failed", "copied"]
