"""Faults in the middle of a promotion, in the lab: after each, the destination holds either the
complete image or nothing new under the tag, never a partial one, and a clear message says why.

- destination registry stops during a large copy and comes back: the engine's retries
  recover, or the task fails clearly and a re-run completes;
- STS refuses the source role: fails naming the role and the registry; nothing written;
- the registry refuses the login password: fails naming the registry; nothing written;
- destination tag holds another digest (as an immutable ECR tag would): fails showing both
  digests, destination unchanged (tests/lab/test_batch_e2e.py);
- the same digest is already there: success, status present, nothing written
  (tests/lab/test_promote_e2e.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from airflow_ecr_promote.operators import EcrPromoteError
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from . import registry
from .cluster import Cluster
from .lab import Lab
from .operator_run import TaskRun, lab_conf, run_task
from .paths import account

pytestmark = [pytest.mark.lab, pytest.mark.cluster]

PULL_ROLE = "arn:aws:iam::123456789012:role/ecr-promote-pull"
PUSH_ROLE = "arn:aws:iam::210987654321:role/ecr-promote-push"


def promote(cluster: Cluster, repo: str, tag: str, **conf: object) -> TaskRun:
    """The on-demand example DAG's task on the lab's real Kubernetes."""
    inputs: dict[str, object] = {
        "source_image": f"{SOURCE_HOST}/{repo}:{tag}",
        "dest_image": f"{DEST_HOST}/{repo}:{tag}",
        "engine": "skopeo",
        "source_role_arn": PULL_ROLE,
        "dest_role_arn": PUSH_ROLE,
        **conf,
    }
    return run_task(cluster, conf=lab_conf(cluster.lab, **inputs))


def assert_complete_or_absent(lab: Lab, repo: str, tag: str, source_digest: str) -> bool:
    """The destination tag is either missing or the whole image (index and every platform)."""
    digest = lab.digest(DEST_ACCOUNT, repo, tag)
    if digest is None:
        return False
    assert digest == source_digest
    index = json.loads(lab.inspect_raw(DEST_ACCOUNT, repo, tag) or b"{}")
    for entry in index["manifests"]:
        manifest = json.loads(lab.inspect_raw(DEST_ACCOUNT, repo, entry["digest"]) or b"{}")
        assert manifest["layers"], "every platform manifest is there"
    assert sorted(lab.platforms(DEST_ACCOUNT, repo, tag)) == ["linux/amd64", "linux/arm64"]
    return True


def test_destination_registry_restarting_mid_copy_leaves_no_partial_image(lab: Lab, cluster: Cluster) -> None:
    repo, tag = "faults/restart", "1.0"
    lab.create_repository(DEST_ACCOUNT, repo)  # the destination repository exists, as in ECR
    source_digest = lab.push_image(SOURCE_ACCOUNT, repo, tag, extra_mb=150, seed=600)
    uploads_at_start = len(lab.upload_requests(DEST_ACCOUNT))
    interrupted = threading.Event()

    def interrupt() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if len(lab.upload_requests(DEST_ACCOUNT)) > uploads_at_start:
                lab.stop_registry(DEST_ACCOUNT)
                interrupted.set()
                time.sleep(1.5)
                lab.start_registry(DEST_ACCOUNT)
                return
            time.sleep(0.05)

    chaos = threading.Thread(target=interrupt)
    chaos.start()
    try:
        first = promote(cluster, repo, tag)
    finally:
        chaos.join()
        lab.start_registry(DEST_ACCOUNT)
    assert interrupted.is_set(), "the registry was stopped while the copy was uploading"
    print(f"restart mid-copy: first run {'recovered' if first.error is None else f'failed: {first.error}'}")
    if first.error is None:
        assert first.result["digest"] == source_digest
        assert assert_complete_or_absent(lab, repo, tag, source_digest)
        return
    assert isinstance(first.error, EcrPromoteError)
    assert f"{DEST_HOST}/{repo}:{tag}" in str(first.error)
    assert_complete_or_absent(lab, repo, tag, source_digest)
    second = promote(cluster, repo, tag)
    assert second.error is None, "\n".join(second.log[-30:])
    assert assert_complete_or_absent(lab, repo, tag, source_digest)


def test_sts_refusing_the_source_role_names_the_role(lab: Lab, cluster: Cluster) -> None:
    repo, tag = "faults/sts", "1.0"
    lab.push_image(SOURCE_ACCOUNT, repo, tag, seed=601)
    refused = "arn:aws:iam::123456789012:role/not-allowed-to-pull"
    run = promote(cluster, repo, tag, source_role_arn=refused)
    assert isinstance(run.error, EcrPromoteError)
    message = str(run.error)
    assert f"cannot assume role {refused} for registry {SOURCE_HOST}" in message
    assert "AccessDenied" in message
    assert "logging in to the registries" in message
    assert lab.digest(DEST_ACCOUNT, repo, tag) is None


@contextmanager
def registry_password(lab: Lab, which: str, password: str) -> Iterator[None]:
    """Run the registry with another htpasswd password (it reads htpasswd only at start)."""
    acct = account(which)
    htpasswd = lab.state_dir / "registries" / acct.account_id / "htpasswd"
    lab.stop_registry(which)
    registry.write_htpasswd(htpasswd, "AWS", password)
    lab.start_registry(which)
    try:
        yield
    finally:
        lab.stop_registry(which)
        registry.write_htpasswd(htpasswd, "AWS", acct.password)
        lab.start_registry(which)


def test_registry_refusing_the_login_password_names_the_registry(lab: Lab, cluster: Cluster) -> None:
    repo, tag = "faults/password", "1.0"
    lab.create_repository(DEST_ACCOUNT, repo)  # the destination repository exists, as in ECR
    lab.push_image(SOURCE_ACCOUNT, repo, tag, seed=602)
    with registry_password(lab, DEST_ACCOUNT, "rotated-password"):
        run = promote(cluster, repo, tag)
    assert isinstance(run.error, EcrPromoteError)
    message = str(run.error)
    assert f"cannot read destination {DEST_HOST}/{repo}:{tag}" in message
    assert any(word in message.lower() for word in ("unauthorized", "authentication required")), message
    assert lab.digest(DEST_ACCOUNT, repo, tag) is None
