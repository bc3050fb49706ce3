"""kaniko, the default engine (the original design), run for real through the operator's own pod.

The lab's kaniko image is built from kaniko's Go module at the version of the pinned default
image and laid out like upstream's (tests/lab/images.py). The operator is constructed with no
``engine=``; only ``init_image`` / ``copier_image`` point at the lab's images.

The pods run on the lab's real Kubernetes, in the namespace that enforces Pod Security
``baseline``: kaniko runs as root with three capabilities, which ``restricted`` refuses
(tests/lab/test_cluster_e2e.py shows the refusal; the README says so).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_ecr_promote.engines import DEFAULT_ENGINE, DEFAULT_PLATFORM, ENGINES
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .cluster import Cluster
from .fixtures import BASELINE_NAMESPACE
from .lab import Lab
from .operator_run import TaskRun, lab_operator, run_task

pytestmark = [pytest.mark.lab, pytest.mark.cluster]

REPO = "kaniko/app"


@pytest.fixture(autouse=True)
def destination_repository(lab: Lab) -> None:
    """The destination repository exists, as ECR needs (made once, as IaC would)."""
    lab.create_repository(DEST_ACCOUNT, REPO)


def promote_default(cluster: Cluster, tag: str, **kwargs: Any) -> TaskRun:
    """Promote with the operator's defaults: no engine given, so kaniko."""
    operator = lab_operator(
        cluster.lab,
        source_image=f"{SOURCE_HOST}/{REPO}:{tag}",
        dest_image=f"{DEST_HOST}/{REPO}:{tag}",
        namespace=BASELINE_NAMESPACE,
        **kwargs,
    )
    return run_task(cluster, task=operator)


def platform_manifest(lab: Lab, account: str, tag: str, platform: str) -> dict[str, Any]:
    """The manifest of one platform of a multi-arch image."""
    index = json.loads(lab.inspect_raw(account, REPO, tag) or b"{}")
    os_name, arch = platform.split("/")[:2]
    for entry in index["manifests"]:
        if (entry["platform"]["os"], entry["platform"]["architecture"]) == (os_name, arch):
            return dict(json.loads(lab.inspect_raw(account, REPO, entry["digest"]) or b"{}"))
    raise AssertionError(f"{platform} not in the source index: {index}")


def layer_digests(manifest: dict[str, Any]) -> list[str]:
    return [layer["digest"] for layer in manifest["layers"]]


def test_kaniko_is_the_default_engine_and_promotes_the_default_platform(lab: Lab, cluster: Cluster) -> None:
    assert DEFAULT_ENGINE == "kaniko"
    source_digest = lab.push_image(SOURCE_ACCOUNT, REPO, "1.0.0", seed=700)
    run = promote_default(cluster, "1.0.0")
    assert run.error is None, "\n".join(run.log[-40:])
    assert run.pods[0].metadata.labels  # the operator's own pod, played unchanged
    pushed = lab.digest(DEST_ACCOUNT, REPO, "1.0.0")
    assert pushed is not None
    # kaniko rebuilds the config: a new digest, one platform, the source's layers reused.
    assert run.result["engine"] == "kaniko"
    assert run.result["status"] == "copied"
    assert run.result["digest"] == pushed, "the digest kaniko wrote to its termination message"
    assert run.result["digest_kept"] is False
    assert pushed != source_digest
    manifest = json.loads(lab.inspect_raw(DEST_ACCOUNT, REPO, "1.0.0") or b"{}")
    assert "layers" in manifest, "a single-platform manifest, not an index"
    source = platform_manifest(lab, SOURCE_ACCOUNT, "1.0.0", DEFAULT_PLATFORM)
    assert layer_digests(manifest) == layer_digests(source)
    assert lab.platforms(DEST_ACCOUNT, REPO, "1.0.0") == [DEFAULT_PLATFORM]


def test_kaniko_takes_the_platform_the_user_chooses(lab: Lab, cluster: Cluster) -> None:
    lab.push_image(SOURCE_ACCOUNT, REPO, "1.1.0", seed=701)
    run = promote_default(cluster, "1.1.0", platform="linux/arm64")
    assert run.error is None, "\n".join(run.log[-40:])
    manifest = json.loads(lab.inspect_raw(DEST_ACCOUNT, REPO, "1.1.0") or b"{}")
    source = platform_manifest(lab, SOURCE_ACCOUNT, "1.1.0", "linux/arm64")
    assert layer_digests(manifest) == layer_digests(source)
    amd64 = platform_manifest(lab, SOURCE_ACCOUNT, "1.1.0", "linux/amd64")
    assert layer_digests(manifest) != layer_digests(amd64)
    assert lab.platforms(DEST_ACCOUNT, REPO, "1.1.0") == ["linux/arm64"]
    assert run.result["digest"] == lab.digest(DEST_ACCOUNT, REPO, "1.1.0")


def test_kaniko_runs_with_exactly_the_security_context_the_operator_emits(lab: Lab, cluster: Cluster) -> None:
    lab.push_image(SOURCE_ACCOUNT, REPO, "1.2.0", seed=702)
    run = promote_default(cluster, "1.2.0")
    assert run.error is None, "\n".join(run.log[-40:])
    container = run.pods[0].spec.containers[0]
    emitted = container.security_context
    assert emitted.run_as_user == 0
    assert emitted.allow_privilege_escalation is False
    assert emitted.capabilities.drop == ["ALL"]
    kept = sorted(emitted.capabilities.add)
    assert kept == sorted(ENGINES["kaniko"].capabilities_add)
    assert emitted.seccomp_profile.type == "RuntimeDefault"
    mounts = {m.mount_path: m for m in container.volume_mounts}
    assert mounts["/kaniko/.docker"].read_only is True

    applied = run.outcomes[0].container("base").applied  # what containerd gave runc
    assert applied["user"].split(":")[0] in ("0", "root", "")
    assert applied["effective_caps"] == sorted(f"CAP_{cap}" for cap in kept)
    assert applied["no_new_privileges"] is True
    assert applied["seccomp"] not in ("unconfined", ""), applied
    assert applied["read_only_mounts"].get("/kaniko/.docker") is True
