"""Re-runs of a backfill with the worker's ECR API precheck, in the lab: the registries report
their pushes to the lab's ECR API (moto), as ECR is one service, and the worker's Airflow
connections read it. A re-run with new tags sends only those to the pod; one with nothing new
starts no pod; the return value lists every tag, in order, either way."""

from __future__ import annotations

import time
from typing import Any

import pytest

from airflow_ecr_promote.precheck import look_up
from airflow_ecr_promote.refs import ImageRef, parse_image_ref
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .cluster import Cluster
from .lab import Lab
from .operator_run import DEST_CONN_ID, SOURCE_CONN_ID, TaskRun, lab_connections, lab_operator, run_task
from .test_batch_scale_e2e import RegistryApi

pytestmark = [pytest.mark.lab, pytest.mark.cluster]

REPO = "precheck/backfill"


def wait_until_ecr_api_holds(conn_id: str, images: list[ImageRef], timeout: float = 30.0) -> None:
    """Registry push events reach the lab's ECR API asynchronously (within milliseconds)."""
    deadline = time.monotonic() + timeout
    while not all(look_up(conn_id, images).values()):
        assert time.monotonic() < deadline, "the lab's ECR API never reported every pushed tag"
        time.sleep(0.2)


def pod_tags(run: TaskRun) -> list[str]:
    """The tags of the copy list each pod's copier read."""
    found = []
    for pod in run.pods:
        env = {e.name: e.value for e in pod.spec.containers[0].env or []}
        parts = [env["COPIES" if n == 1 else f"COPIES_{n}"] for n in range(1, int(env["COPY_CHUNKS"]) + 1)]
        found.append([line.rsplit(":", 1)[-1] for line in "\n".join(parts).split("\n")])
    return found


def manifest_puts(lab: Lab) -> list[str]:
    return [r.path for r in lab.requests(DEST_ACCOUNT) if r.method == "PUT" and "/manifests/" in r.path]


def test_a_rerun_with_10_new_tags_sends_only_those_to_the_pod_and_lists_every_tag(
    lab: Lab, cluster: Cluster
) -> None:
    tags = [f"2026.11.{i:02d}" for i in range(40)]
    old, new = tags[:30], tags[30:]
    lab.create_repository(DEST_ACCOUNT, REPO)
    builds = [f"build-{i}" for i in range(3)]
    digests = {b: lab.push_image(SOURCE_ACCOUNT, REPO, b, seed=700 + i) for i, b in enumerate(builds)}
    api = RegistryApi(lab, SOURCE_ACCOUNT)
    for i, build in enumerate(builds):
        api.tag(REPO, build, old[i :: len(builds)])
    digest_of = {tag: digests[builds[i % len(builds)]] for i, tag in enumerate(tags)}

    def task(batch: list[str]) -> Any:
        return lab_operator(
            lab,
            "skopeo",
            source_image=f"{SOURCE_HOST}/{REPO}",
            dest_image=f"{DEST_HOST}/{REPO}",
            tags=batch,
            source_aws_conn_id=SOURCE_CONN_ID,
            dest_aws_conn_id=DEST_CONN_ID,
        )

    dests = [parse_image_ref("image", f"{DEST_HOST}/{REPO}:{tag}") for tag in tags]
    sources = [parse_image_ref("image", f"{SOURCE_HOST}/{REPO}:{tag}") for tag in tags]
    with lab_connections(lab):
        wait_until_ecr_api_holds(SOURCE_CONN_ID, sources[:30])
        first = run_task(cluster, task=task(old))
        assert first.error is None, "\n".join(first.log[-30:])
        assert pod_tags(first) == [old], "nothing at the destination yet: the pod copies every tag"
        wait_until_ecr_api_holds(DEST_CONN_ID, dests[:30])
        for i, build in enumerate(builds):  # the pipeline tags its builds again
            api.tag(REPO, build, new[i :: len(builds)])
        wait_until_ecr_api_holds(SOURCE_CONN_ID, sources)
        puts_before = len(manifest_puts(lab))
        second = run_task(cluster, task=task(tags))
        assert second.error is None, "\n".join(second.log[-30:])
        written = manifest_puts(lab)[puts_before:]
        wait_until_ecr_api_holds(DEST_CONN_ID, dests)
        third = run_task(cluster, task=task(tags))
    why = "\n".join(line for line in second.log if "ECR API" in line or "images" in line)[-3000:]
    assert pod_tags(second) == [new], f"only the 10 new tags reach the pod; the task said:\n{why}"
    assert not [p for p in written if p.rsplit("/", 1)[-1] in old], "no old tag was written again"
    entries = second.result["promotions"]
    assert [e["dest_image"] for e in entries] == [str(d) for d in dests], "every tag, in order"
    assert [e["status"] for e in entries] == ["present"] * 30 + ["copied"] * 10
    assert [e["digest"] for e in entries] == [digest_of[t] for t in tags]
    assert (second.result["present"], second.result["copied"], second.result["failed"]) == (30, 10, 0)
    assert third.error is None and third.pods == [], "everything in place: no pod\n" + "\n".join(
        third.log[-20:]
    )
    assert [e["status"] for e in third.result["promotions"]] == ["present"] * 40
    assert [e["digest"] for e in third.result["promotions"]] == [digest_of[t] for t in tags]
