"""End-to-end promotions through the operator's own pod, in the lab.

The on-demand example DAG's task is rendered with a real context and executed by KPO against the
lab's real Kubernetes, which runs the pod it builds (tests/lab/operator_run.py). Registries,
STS/ECR (moto), the aws CLI and the engines are all real.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request

import pytest
from kubernetes.client import ApiClient

from airflow_ecr_promote.operators import EcrPromoteError
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .cluster import Cluster
from .lab import Lab
from .operator_run import TaskRun, lab_conf, run_task

pytestmark = [pytest.mark.lab, pytest.mark.cluster]

REPO = "team/app"


@pytest.fixture(autouse=True)
def destination_repository(lab: Lab) -> None:
    """The destination repository exists, as ECR needs (made once, as IaC would)."""
    lab.create_repository(DEST_ACCOUNT, REPO)


SOURCE, DEST = SOURCE_ACCOUNT, DEST_ACCOUNT
PULL_ROLE = "arn:aws:iam::123456789012:role/ecr-promote-pull"
PUSH_ROLE = "arn:aws:iam::210987654321:role/ecr-promote-push"


COPYING_ENGINES = ("skopeo", "crane", "regctl")


@pytest.fixture(params=COPYING_ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """The digest-preserving engines run the same tests (kaniko: tests/lab/test_kaniko_e2e.py)."""
    return str(request.param)


def promote(cluster: Cluster, source: str, dest: str, engine: str = "skopeo", **conf: object) -> TaskRun:
    inputs = lab_conf(cluster.lab, source_image=source, dest_image=dest, engine=engine, **conf)
    return run_task(cluster, conf=inputs)


def test_two_platform_image_is_promoted_with_its_digest(lab: Lab, cluster: Cluster, engine: str) -> None:
    tag = f"2.0.0-{engine}"
    digest = lab.push_image(SOURCE, REPO, tag, seed=1)
    run = promote(cluster, f"{SOURCE_HOST}/{REPO}:{tag}", f"{DEST_HOST}/{REPO}:{tag}", engine)
    assert run.error is None, "\n".join(run.log[-30:])
    assert lab.digest(DEST, REPO, tag) == digest
    assert sorted(lab.platforms(DEST, REPO, tag)) == ["linux/amd64", "linux/arm64"]
    for platform_digest in _platform_digests(lab, DEST, tag):
        assert lab.inspect_raw(DEST, REPO, platform_digest) is not None
    assert run.result["digest"] == digest
    assert run.result["source_digest"] == digest
    assert run.result["digest_kept"] is True
    assert run.result["status"] == "copied"
    assert "return_value" not in run.pushed  # the task runner stores the returned value


def test_rerun_succeeds_with_the_same_digest_and_uploads_nothing(
    lab: Lab, cluster: Cluster, engine: str
) -> None:
    tag = f"2.1.0-{engine}"
    digest = lab.push_image(SOURCE, REPO, tag, seed=2)
    first = promote(cluster, f"{SOURCE_HOST}/{REPO}:{tag}", f"{DEST_HOST}/{REPO}:{tag}", engine)
    assert first.error is None, "\n".join(first.log[-30:])
    uploads_before = len(lab.upload_requests(DEST))
    manifests_before = _manifest_puts(lab)
    second = promote(cluster, f"{SOURCE_HOST}/{REPO}:{tag}", f"{DEST_HOST}/{REPO}:{tag}", engine)
    assert second.error is None, "\n".join(second.log[-30:])
    assert second.result["status"] == "present"
    assert second.result["digest"] == digest
    assert len(lab.upload_requests(DEST)) == uploads_before, "no blob upload on a re-run"
    assert _manifest_puts(lab) == manifests_before, "no manifest written on a re-run"


def test_promotion_by_source_digest_to_a_tag(lab: Lab, cluster: Cluster, engine: str) -> None:
    tag = f"2.2.0-{engine}"
    digest = lab.push_image(SOURCE, REPO, tag, seed=3)
    run = promote(
        cluster, f"{SOURCE_HOST}/{REPO}@{digest}", f"{DEST_HOST}/{REPO}:from-digest-{engine}", engine
    )
    assert run.error is None, "\n".join(run.log[-30:])
    assert lab.digest(DEST, REPO, f"from-digest-{engine}") == digest
    assert run.result["digest_kept"] is True


def test_destination_role_in_the_wrong_account_fails_naming_the_image(lab: Lab, cluster: Cluster) -> None:
    lab.push_image(SOURCE, REPO, "2.4.0", seed=5)
    wrong = PULL_ROLE  # assumable, but its token is for account 123456789012, not the destination's
    run = promote(
        cluster,
        f"{SOURCE_HOST}/{REPO}:2.4.0",
        f"{DEST_HOST}/{REPO}:2.4.0",
        source_role_arn=PULL_ROLE,
        dest_role_arn=wrong,
    )
    assert isinstance(run.error, EcrPromoteError)
    message = str(run.error)
    assert f"cannot read destination {DEST_HOST}/{REPO}:2.4.0" in message
    assert any(word in message.lower() for word in ("unauthorized", "authentication required")), message
    assert lab.digest(DEST, REPO, "2.4.0") is None


def test_missing_source_tag_fails_naming_it(lab: Lab, cluster: Cluster, engine: str) -> None:
    source = f"{SOURCE_HOST}/{REPO}:does-not-exist"
    run = promote(cluster, source, f"{DEST_HOST}/{REPO}:does-not-exist", engine)
    assert isinstance(run.error, EcrPromoteError)
    assert f"source {source} not found" in str(run.error)


def test_no_password_or_session_key_reaches_logs_results_or_the_pod(lab: Lab, cluster: Cluster) -> None:
    lab.push_image(SOURCE, REPO, "2.5.0", seed=6)
    run = promote(
        cluster,
        f"{SOURCE_HOST}/{REPO}:2.5.0",
        f"{DEST_HOST}/{REPO}:2.5.0",
        source_role_arn=PULL_ROLE,
        dest_role_arn=PUSH_ROLE,
    )
    assert run.error is None, "\n".join(run.log[-30:])
    # The kubelet keeps the logs of init containers that succeeded: the login container's log is
    # in the outcomes too.
    assert any("ecr-promote copy:" in line for line in run.log), "the copier's log was captured"
    seen = "\n".join(
        [
            *run.log,
            json.dumps(run.result),
            json.dumps(run.pushed, default=str),
            json.dumps(run.rendered, default=str),
            *(json.dumps(ApiClient().sanitize_for_serialization(p)) for p in run.pods),
            *(c.message + c.logs for o in run.outcomes for c in [*o.init_containers, *o.containers]),
        ]
    )
    assert_no_secret(lab, seen)


def test_failure_messages_hold_no_secret(lab: Lab, cluster: Cluster) -> None:
    """A login that gets its passwords and then fails at the registry: every message the task
    raises or logs is free of passwords and keys."""
    lab.push_image(SOURCE, REPO, "2.7.0", seed=9)
    run = promote(
        cluster, f"{SOURCE_HOST}/{REPO}:2.7.0", f"{DEST_HOST}/{REPO}:2.7.0", dest_role_arn=PULL_ROLE
    )
    assert isinstance(run.error, EcrPromoteError)
    assert_no_secret(lab, "\n".join([str(run.error), repr(run.error.__cause__), *run.log]))


def assert_no_secret(lab: Lab, seen: str) -> None:
    """No ECR password (plain or as Docker auth), base secret key, session key or token."""
    from .moto_iam import BASE_SECRET_ACCESS_KEY

    for account in ("123456789012", "210987654321"):
        password = f"{account}-auth-token"
        assert password not in seen
        assert base64.b64encode(f"AWS:{password}".encode()).decode() not in seen
    assert BASE_SECRET_ACCESS_KEY not in seen
    for secret in _session_secrets(lab):
        assert secret not in seen


def wait_until_ecr_api_reports(conn_id: str, image: str, digest: str, timeout: float = 10.0) -> None:
    """Registry push events reach the lab's ECR API asynchronously (within milliseconds)."""
    import time

    from airflow_ecr_promote.discovery import ecr_hook
    from airflow_ecr_promote.refs import parse_image_ref
    from airflow_ecr_promote.triggers import find_image_digest

    ref = parse_image_ref("image", image)
    hook = ecr_hook(conn_id, ref.region)
    deadline = time.monotonic() + timeout
    while find_image_digest(hook, ref, repository_missing_ok=True) != digest:
        assert time.monotonic() < deadline, f"the lab's ECR API never reported {image} as {digest}"
        time.sleep(0.1)


def _platform_digests(lab: Lab, which: str, tag: str) -> list[str]:
    index = json.loads(lab.inspect_raw(which, REPO, tag) or b"{}")
    return [m["digest"] for m in index.get("manifests", [])]


def _manifest_puts(lab: Lab) -> int:
    return sum(1 for r in lab.requests(DEST) if r.method == "PUT" and "/manifests/" in r.path)


def _session_secrets(lab: Lab) -> list[str]:
    """The secret keys and session tokens moto handed out to the pods' assume-role calls."""
    context = ssl.create_default_context(cafile=str(lab.ca_bundle))
    with urllib.request.urlopen(f"{lab.moto_endpoint}/moto-api/data.json", context=context) as response:
        data = json.load(response)
    roles = data.get("sts", {}).get("AssumedRole", [])
    secrets = [r[key] for r in roles for key in ("secret_access_key", "session_token")]
    assert secrets, "the pods assumed roles, so moto must have handed out session keys"
    return secrets


def test_rerun_with_ecr_api_connections_starts_no_pod(lab: Lab, cluster: Cluster) -> None:
    """The registries report their pushes to the lab's ECR API, as ECR is one service; with
    Airflow connections to it the worker finds the image promoted and starts no pod."""
    from airflow_ecr_promote.operators import EcrPromoteOperator

    from .operator_run import DEST_CONN_ID, SOURCE_CONN_ID, lab_connections

    digest = lab.push_image(SOURCE, REPO, "2.6.0", seed=8)
    source, dest = f"{SOURCE_HOST}/{REPO}:2.6.0", f"{DEST_HOST}/{REPO}:2.6.0"

    def task() -> EcrPromoteOperator:
        return EcrPromoteOperator(
            task_id="promote",
            engine="skopeo",
            source_image=source,
            dest_image=dest,
            source_role_arn=PULL_ROLE,
            dest_role_arn=PUSH_ROLE,
            init_image=lab.init_image,
            copier_image=lab.copier_image,
            source_aws_conn_id=SOURCE_CONN_ID,
            dest_aws_conn_id=DEST_CONN_ID,
        )

    with lab_connections(lab):
        first = run_task(cluster, task=task())
        assert first.error is None, "\n".join(first.log[-30:])
        assert len(first.pods) == 1, "nothing at the destination yet: the pod copies"
        wait_until_ecr_api_reports(DEST_CONN_ID, dest, digest)
        second = run_task(cluster, task=task())
    assert second.error is None, "\n".join(second.log[-30:])
    assert second.pods == [], "already promoted: no pod"
    assert (second.result["status"], second.result["digest"]) == ("present", digest)
    assert any("no pod started" in line for line in second.log)
