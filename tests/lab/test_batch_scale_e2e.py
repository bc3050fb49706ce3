"""Batches at real size through the operator's pod, in the lab: every tag reported, whatever
the number of tags, the length of the reasons or the containers sharing the pod.

The source tags are made with the registry API (one manifest PUT each, the way a CI pipeline
tags one build many times), so a 300-tag batch costs seconds to set up, not a push per tag.
"""

from __future__ import annotations

import base64
import ssl
import urllib.error
import urllib.request
from typing import Any

import pytest
from kubernetes.client import models as k8s

from airflow_ecr_promote.operators import EcrPromoteError
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .cluster import Cluster
from .lab import Lab
from .operator_run import TaskRun, lab_operator, run_task
from .paths import account

pytestmark = [pytest.mark.lab, pytest.mark.cluster]

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json"
)


class RegistryApi:
    """The registry's own HTTP API (distribution v2), as the lab's htpasswd user of one account."""

    def __init__(self, lab: Lab, which: str) -> None:
        acct = account(which)
        self.base = f"https://{lab.bind}:{lab.ports[acct.account_id]}/v2/"
        self.context = ssl.create_default_context(cafile=str(lab.ca_cert))
        self.auth = "Basic " + base64.b64encode(f"AWS:{acct.password}".encode()).decode()

    def _call(self, method: str, path: str, data: bytes | None = None, **headers: str) -> Any:
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", self.auth)
        for name, value in headers.items():
            request.add_header(name.replace("_", "-"), value)
        return urllib.request.urlopen(request, context=self.context, timeout=30)

    def manifest(self, repo: str, ref: str) -> tuple[bytes, str]:
        with self._call("GET", f"{repo}/manifests/{ref}", Accept=INDEX_TYPES) as response:
            return response.read(), response.headers["Content-Type"]

    def digest(self, repo: str, ref: str) -> str | None:
        try:
            with self._call("HEAD", f"{repo}/manifests/{ref}", Accept=INDEX_TYPES) as response:
                return str(response.headers["Docker-Content-Digest"])
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    def tag(self, repo: str, ref: str, tags: list[str]) -> None:
        """Give the manifest ``ref`` every one of ``tags`` (no blob moves)."""
        body, media_type = self.manifest(repo, ref)
        for tag in tags:
            self._call("PUT", f"{repo}/manifests/{tag}", body, Content_Type=media_type).close()


def run_operator(cluster: Cluster, engine: str = "skopeo", **kwargs: Any) -> TaskRun:
    return run_task(cluster, task=lab_operator(cluster.lab, engine, **kwargs))


def writes(lab: Lab) -> int:
    """Requests that write to the destination registry: blob uploads and manifest PUTs."""
    return sum(
        r.is_blob_upload or (r.method == "PUT" and "/manifests/" in r.path)
        for r in lab.requests(DEST_ACCOUNT)
    )


def seeded_tags(lab: Lab, repo: str, tags: list[str], images: int, seed: int) -> dict[str, str]:
    """Source tags spread over ``images`` tiny two-platform images; tag -> digest."""
    api = RegistryApi(lab, SOURCE_ACCOUNT)
    digests = [lab.push_image(SOURCE_ACCOUNT, repo, f"seed-{i}", seed=seed + i) for i in range(images)]
    for i in range(images):
        api.tag(repo, f"seed-{i}", tags[i::images])
    return {tag: digests[index % images] for index, tag in enumerate(tags)}


@pytest.mark.parametrize("engine", ["skopeo", "crane"])
def test_batch_of_300_tags_reports_every_tag_and_its_rerun_writes_nothing(
    lab: Lab, cluster: Cluster, engine: str
) -> None:
    repo = f"scale/{engine}"
    lab.create_repository(DEST_ACCOUNT, repo)  # the destination repository exists, as in ECR
    tags = [f"7.{i // 100}.{i % 100}" for i in range(300)]
    expected = seeded_tags(lab, repo, tags, images=3, seed=700)
    kwargs = {"source_image": f"{SOURCE_HOST}/{repo}", "dest_image": f"{DEST_HOST}/{repo}", "tags": tags}

    first = run_operator(cluster, engine, parallel=8, **kwargs)
    assert first.error is None, "\n".join(first.log[-30:])
    assert len(first.pods) == 1
    entries = first.result["promotions"]
    assert [e["dest_image"] for e in entries] == [f"{DEST_HOST}/{repo}:{tag}" for tag in tags]
    assert [e["status"] for e in entries] == ["copied"] * 300
    assert [e["digest"] for e in entries] == [expected[tag] for tag in tags]
    assert first.log_reads == ["base"], "300 results do not fit a termination message: read from the log"
    api = RegistryApi(lab, DEST_ACCOUNT)
    assert [api.digest(repo, tag) for tag in tags] == [expected[tag] for tag in tags]

    writes_before = writes(lab)
    second = run_operator(cluster, engine, parallel=8, **kwargs)
    assert second.error is None, "\n".join(second.log[-30:])
    assert second.result["present"] == 300
    assert [e["status"] for e in second.result["promotions"]] == ["present"] * 300
    assert writes(lab) == writes_before, "a re-run writes no blob and no manifest"


@pytest.mark.parametrize("engine", ["skopeo", "crane"])
def test_batch_where_a_third_fails_with_long_reasons_reports_each_reason(
    lab: Lab, cluster: Cluster, engine: str
) -> None:
    repo = f"scale/reasons-{engine}/with-a-rather-long-repository-name-as-teams-have"
    lab.create_repository(DEST_ACCOUNT, repo)  # the destination repository exists, as in ECR
    tags = [f"release-candidate-{i:03d}-" + "x" * 90 for i in range(60)]
    present = [tag for i, tag in enumerate(tags) if i % 3 != 1]
    missing = [tag for i, tag in enumerate(tags) if i % 3 == 1]
    expected = seeded_tags(lab, repo, present, images=1, seed=800)
    run = run_operator(
        cluster, engine, source_image=f"{SOURCE_HOST}/{repo}", dest_image=f"{DEST_HOST}/{repo}", tags=tags
    )
    assert isinstance(run.error, EcrPromoteError)
    assert "20 of 60 promotions failed" in str(run.error)
    assert "container 'base' ended: Error, exit code 1" in str(run.error)
    by_tag = {e["dest_image"].rsplit(":", 1)[1]: e for e in run.pushed["return_value"]["promotions"]}
    assert len(by_tag) == 60
    for tag in missing:
        reason = f"source {SOURCE_HOST}/{repo}:{tag} not found"
        assert (by_tag[tag]["status"], by_tag[tag]["reason"]) == ("failed", reason)
        assert reason in str(run.error)
    for tag in present:
        assert (by_tag[tag]["status"], by_tag[tag]["digest"]) == ("copied", expected[tag])


def with_sidecar(lab: Lab) -> k8s.V1Pod:
    """A pod template with a second container, as a service mesh injects one: it fills its own
    termination message (4 KiB), so each container's share of the pod's 12 KiB is smaller. Its
    security context is one Pod Security ``restricted`` admits, as a mesh injector's would be."""
    fill = "head -c 4096 /dev/zero | tr '\\0' x > /dev/termination-log; echo mesh proxy ready"
    return k8s.V1Pod(
        spec=k8s.V1PodSpec(
            containers=[
                k8s.V1Container(name="base"),
                k8s.V1Container(
                    name="mesh-proxy",
                    image=lab.copier_image,
                    command=["sh", "-c", fill],
                    security_context=k8s.V1SecurityContext(
                        allow_privilege_escalation=False,
                        capabilities=k8s.V1Capabilities(drop=["ALL"]),
                        run_as_non_root=True,
                        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
                    ),
                ),
            ]
        )
    )


@pytest.mark.parametrize("engine", ["skopeo", "crane"])
def test_batch_with_an_extra_container_in_the_pod_reports_every_tag(
    lab: Lab, cluster: Cluster, engine: str
) -> None:
    repo = f"scale/sidecar-{engine}"
    lab.create_repository(DEST_ACCOUNT, repo)  # the destination repository exists, as in ECR
    tags = [f"9.0.{i}-" + "y" * 100 for i in range(40)]
    expected = seeded_tags(lab, repo, tags, images=1, seed=900)
    run = run_operator(
        cluster,
        engine,
        source_image=f"{SOURCE_HOST}/{repo}",
        dest_image=f"{DEST_HOST}/{repo}",
        tags=tags,
        full_pod_spec=with_sidecar(lab),
    )
    assert run.error is None, "\n".join(run.log[-30:])
    assert [c.name for c in run.outcomes[0].containers] == ["base", "mesh-proxy"]
    assert len(run.outcomes[0].container("mesh-proxy").message) == 4096
    assert [e["status"] for e in run.result["promotions"]] == ["copied"] * 40
    assert [e["digest"] for e in run.result["promotions"]] == [expected[tag] for tag in tags]


@pytest.mark.parametrize("engine", ["skopeo", "crane"])
def test_source_with_tag_and_digest_is_copied_by_its_digest(lab: Lab, cluster: Cluster, engine: str) -> None:
    repo = f"scale/pinned-{engine}"
    lab.create_repository(DEST_ACCOUNT, repo)  # the destination repository exists, as in ECR
    digest = lab.push_image(SOURCE_ACCOUNT, repo, "10.0.0", seed=1000)
    run = run_operator(
        cluster,
        engine,
        source_image=f"{SOURCE_HOST}/{repo}:10.0.0@{digest}",
        dest_image=f"{DEST_HOST}/{repo}:10.0.0",
    )
    refused = [r for r in lab.requests(SOURCE_ACCOUNT) if repo in r.path and r.status >= 400]
    assert run.error is None, "\n".join([*run.log[-30:], *map(str, refused)])
    assert (run.result["status"], run.result["digest"], run.result["digest_kept"]) == ("copied", digest, True)
    assert run.result["source_image"] == f"{SOURCE_HOST}/{repo}:10.0.0@{digest}"
    assert RegistryApi(lab, DEST_ACCOUNT).digest(repo, "10.0.0") == digest
