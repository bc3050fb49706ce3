"""The scan-findings gate in the lab, through the operator's own pod path: the worker reads each
source's scan from the lab's ECR API (moto, with each image's scan set by the test through
tests/lab/moto_scan.py), with the Airflow connection of the source's read role (the package's
scan-gate policy, enforced by the lab's IAM), then the pod, on the lab's real Kubernetes, promotes
only what passed."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_ecr_promote import policies
from airflow_ecr_promote.operators import EcrPromoteError
from airflow_ecr_promote.refs import parse_image_ref
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST, SOURCE_REGION

from .cluster import Cluster
from .lab import Lab
from .moto_iam import READ_ROLE_ARNS
from .moto_scan import post_plan
from .operator_run import SOURCE_CONN_ID, lab_connections, lab_operator, run_task
from .test_iam_policies_e2e import probe_connection  # noqa: F401 (a fixture)
from .test_precheck_e2e import manifest_puts, pod_tags, wait_until_ecr_api_holds

pytestmark = pytest.mark.lab

SOURCE_READER = READ_ROLE_ARNS[SOURCE_ACCOUNT].replace(":iam::", ":sts::").replace(":role/", ":assumed-role/")


def findings(*severities: str) -> list[dict[str, str]]:
    return [{"name": f"CVE-2026-{2000 + i}", "severity": s} for i, s in enumerate(severities)]


def pushed(lab: Lab, repo: str, plans: dict[str, dict[str, Any]], seed: int) -> dict[str, str]:
    """Push each tag (an image of its own) to the source, wait until the lab's ECR API holds them,
    and give each its scan; the destination repository exists, empty."""
    digests = {tag: lab.push_image(SOURCE_ACCOUNT, repo, tag, seed=seed + i) for i, tag in enumerate(plans)}
    lab.create_repository(DEST_ACCOUNT, repo)
    with lab_connections(lab):
        wait_until_ecr_api_holds(
            SOURCE_CONN_ID, [parse_image_ref("i", f"{SOURCE_HOST}/{repo}:{t}") for t in plans]
        )
    for tag, plan in plans.items():
        post_plan(lab.moto_endpoint, str(lab.ca_bundle), SOURCE_ACCOUNT, SOURCE_REGION, repo, tag, **plan)
    return digests


def gated(lab: Lab, repo: str, **kwargs: Any) -> Any:
    kwargs.setdefault("max_severity", "HIGH")
    if "tags" in kwargs:
        kwargs.update(source_image=f"{SOURCE_HOST}/{repo}", dest_image=f"{DEST_HOST}/{repo}")
    return lab_operator(lab, "skopeo", source_aws_conn_id=SOURCE_CONN_ID, **kwargs)


def dest_puts(lab: Lab, repo: str) -> list[str]:
    return [p for p in manifest_puts(lab) if p.startswith(f"/v2/{repo}/")]


@pytest.mark.cluster
def test_a_clean_image_is_promoted_with_its_counts(lab: Lab, cluster: Cluster) -> None:
    repo = "scan/clean"
    digest = pushed(lab, repo, {"1.0": {"findings": findings("MEDIUM", "LOW")}}, seed=2300)["1.0"]
    task = gated(lab, repo, source_image=f"{SOURCE_HOST}/{repo}:1.0", dest_image=f"{DEST_HOST}/{repo}:1.0")
    with lab_connections(lab):
        run = run_task(cluster, task=task)
    assert run.error is None, "\n".join(run.log[-30:])
    assert len(run.pods) == 1
    assert (run.result["status"], run.result["digest"], run.result["digest_kept"]) == ("copied", digest, True)
    assert run.result["scan"] == {"status": "COMPLETE", "counts": {"MEDIUM": 1, "LOW": 1}, "passed": True}
    calls = [d["action"] for d in lab.iam_decisions(SOURCE_READER) if "scan/clean" in d["resource"]]
    assert "ecr:DescribeImages" in calls
    assert "ecr:DescribeImageScanFindings" not in calls, "a clean summary needs no findings read"


@pytest.mark.cluster
def test_a_critical_finding_is_refused_and_nothing_is_written(lab: Lab, cluster: Cluster) -> None:
    repo = "scan/critical"
    pushed(lab, repo, {"1.0": {"findings": findings("CRITICAL", "LOW"), "enhanced": True}}, seed=2310)
    puts_before = dest_puts(lab, repo)
    task = gated(lab, repo, source_image=f"{SOURCE_HOST}/{repo}:1.0", dest_image=f"{DEST_HOST}/{repo}:1.0")
    with lab_connections(lab):
        run = run_task(cluster, task=task)
    assert isinstance(run.error, EcrPromoteError), "\n".join(run.log[-30:])
    text = str(run.error)
    assert "refused by the scan gate: scan ACTIVE, findings 1 CRITICAL, 1 LOW" in text
    assert "CVE-2026-2000 (CRITICAL)" in text
    assert run.pods == [], "no pod"
    assert dest_puts(lab, repo) == puts_before, "nothing written at the destination"
    assert lab.ecr_client(DEST_ACCOUNT).list_images(repositoryName=repo)["imageIds"] == []
    assert run.pushed["return_value"]["scan"]["counts"] == {"CRITICAL": 1, "LOW": 1}


@pytest.mark.cluster
def test_a_batch_with_skip_promotes_what_passed_and_lists_what_did_not(lab: Lab, cluster: Cluster) -> None:
    """A clean tag, a CRITICAL one, one whose scan is IN_PROGRESS and then completes, and one
    never scanned (the gate starts its scan, then waits for it)."""
    repo = "scan/batch"
    plans = {
        "1.0": {"findings": findings("LOW")},
        "1.1": {"findings": findings("CRITICAL", "HIGH")},
        "1.2": {"in_progress_seconds": 3, "findings": findings("MEDIUM")},
        "1.3": {"scanned": False, "in_progress_seconds": 2},
    }
    digests = pushed(lab, repo, plans, seed=2320)
    task = gated(lab, repo, tags=list(plans), on_findings="skip", scan_wait=60)
    with lab_connections(lab):
        run = run_task(cluster, task=task)
    assert run.error is None, "\n".join(run.log[-30:])
    assert pod_tags(run) == [["1.0", "1.2", "1.3"]], "the refused tag never reaches the pod"
    entries = run.result["promotions"]
    assert [e["status"] for e in entries] == ["copied", "skipped", "copied", "copied"]
    assert [e["digest"] for e in entries] == [digests["1.0"], None, digests["1.2"], digests["1.3"]]
    assert run.result["scan_refused"] == [f"{SOURCE_HOST}/{repo}:1.1"]
    assert [e["scan"]["counts"] for e in entries] == [
        {"LOW": 1},
        {"CRITICAL": 1, "HIGH": 1},
        {"MEDIUM": 1},
        {},
    ]
    assert "CVE-2026-2000 (CRITICAL), CVE-2026-2001 (HIGH)" in entries[1]["reason"]
    assert not [p for p in dest_puts(lab, repo) if p.endswith("/1.1")], "the refused tag was not written"
    calls = [d["action"] for d in lab.iam_decisions(SOURCE_READER) if "scan/batch" in d["resource"]]
    assert calls.count("ecr:StartImageScan") == 1, "one scan started, for the tag never scanned"


@pytest.mark.usefixtures("probe_connection")
def test_scan_gate_policy_is_enough_and_each_action_is_needed(lab: Lab) -> None:
    """With exactly the scan-gate policy the gate judges a clean image (DescribeImages), a
    CRITICAL one (DescribeImageScanFindings) and one never scanned (StartImageScan); without one
    action the API refuses it and the gate fails closed for the images that needed it."""
    from airflow_ecr_promote.scan_gate import ScanGate

    from .moto_iam import policy

    repo = "team/iam-scan-gate"
    plans = {
        "1.0": {"findings": findings("LOW")},
        "1.1": {"findings": findings("CRITICAL")},
        "1.2": {"scanned": False, "in_progress_seconds": 0},
    }
    pushed(lab, repo, plans, seed=2330)
    images = [parse_image_ref("i", f"{SOURCE_HOST}/{repo}:{t}") for t in plans]
    gate = ScanGate("HIGH", wait=30)
    document = policy("scan-gate", repositories="team/*")
    lab.set_probe_policy(SOURCE_ACCOUNT, document)
    try:
        check_each_action(lab, repo, images, gate, document)
    finally:
        lab.set_probe_policy(SOURCE_ACCOUNT, None)


def check_each_action(lab: Lab, repo: str, images: list[Any], gate: Any, document: dict[str, Any]) -> None:
    from airflow_ecr_promote.scan_api import judge_images

    from .moto_iam import without
    from .test_iam_policies_e2e import PROBE_CONN, refused, used

    seen = len(lab.iam_decisions())
    verdicts = judge_images(f"{PROBE_CONN}_{SOURCE_ACCOUNT}", images, gate)
    decisions = lab.iam_decisions()[seen:]
    assert [verdicts[i].passed for i in images] == [True, False, True]
    assert refused(decisions) == []
    probe = f"arn:aws:sts::{SOURCE_ACCOUNT}:assumed-role/ecr-promote-probe"
    assert used(decisions, probe) == set(policies.actions(document))
    for action in policies.actions(document):
        post_plan(lab.moto_endpoint, str(lab.ca_bundle), SOURCE_ACCOUNT, SOURCE_REGION, repo, "1.2",
                  scanned=False, in_progress_seconds=0)  # fmt: skip
        lab.set_probe_policy(SOURCE_ACCOUNT, without(document, action))
        seen = len(lab.iam_decisions())
        verdicts = judge_images(f"{PROBE_CONN}_{SOURCE_ACCOUNT}", images, gate)
        assert action in {d["action"] for d in refused(lab.iam_decisions()[seen:])}
        judged = [verdicts[i].passed for i in images]
        if action == "ecr:DescribeImages":  # each image's findings are then read on their own
            assert judged == [True, False, True]
        elif action == "ecr:DescribeImageScanFindings":  # the clean summary suffices; the rest refuse
            assert judged == [True, False, False]
        else:  # the image never scanned cannot get a scan
            assert judged == [True, False, False]
            assert "StartImageScan: AccessDeniedException" in str(verdicts[images[2]].refused)
