"""Batches, conflicts and fan-out through the operator's pod, in the lab, for each engine that
keeps the digest (skopeo, crane, regctl): the same tests, parametrized over ``COPYING_ENGINES``."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import pytest

from airflow_ecr_promote.operators import EcrPromoteError
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .cluster import Cluster
from .lab import Lab
from .moto_iam import SOURCE_PULL_PUSH_ROLE_ARN
from .operator_run import TaskRun, lab_operator, run_task

pytestmark = [pytest.mark.lab, pytest.mark.cluster]

COPYING_ENGINES = ("skopeo", "crane", "regctl")


@pytest.fixture(params=COPYING_ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run_operator(cluster: Cluster, engine: str, **kwargs: Any) -> TaskRun:
    return run_task(cluster, task=lab_operator(cluster.lab, engine, **kwargs))


def blob_sizes(lab: Lab, account: str, repo: str, tag: str) -> dict[str, int]:
    """Layer and config blobs of every platform of an image, by digest."""
    index = json.loads(lab.inspect_raw(account, repo, tag) or b"{}")
    sizes: dict[str, int] = {}
    for entry in index["manifests"]:
        manifest = json.loads(lab.inspect_raw(account, repo, entry["digest"]) or b"{}")
        for blob in [manifest["config"], *manifest["layers"]]:
            sizes[blob["digest"]] = blob["size"]
    return sizes


def test_batch_sends_shared_layers_once_and_reports_every_tag(
    lab: Lab, cluster: Cluster, engine: str
) -> None:
    repo, tags = f"batch/shared-{engine}", [f"3.0.{i}" for i in range(5)]
    lab.create_repository(DEST_ACCOUNT, repo)  # the destination repository exists, as in ECR
    digests = {
        tag: lab.push_image(SOURCE_ACCOUNT, repo, tag, extra_mb=1, seed=100 + i, base_mb=4)
        for i, tag in enumerate(tags)
    }
    unique: dict[str, int] = {}
    for tag in tags:
        unique.update(blob_sizes(lab, SOURCE_ACCOUNT, repo, tag))
    bytes_before = lab.uploaded_bytes(DEST_ACCOUNT)
    requests_before = len(lab.requests(DEST_ACCOUNT))
    run = run_operator(
        cluster, engine, source_image=f"{SOURCE_HOST}/{repo}", dest_image=f"{DEST_HOST}/{repo}", tags=tags
    )
    assert run.error is None, "\n".join(run.log[-30:])
    assert len(run.pods) == 1, "one pod for the whole batch"
    assert [p["status"] for p in run.result["promotions"]] == ["copied"] * 5
    for tag in tags:
        assert lab.digest(DEST_ACCOUNT, repo, tag) == digests[tag]
    done = [r for r in lab.requests(DEST_ACCOUNT)[requests_before:] if r.is_blob_upload and r.method == "PUT"]
    uploaded = sorted(parse_qs(r.query)["digest"][0] for r in done if r.status == 201)
    assert uploaded == sorted(unique), "every distinct blob sent once"
    if engine != "regctl":  # regctl sends a blob in one PUT, whose size the registry's log does not hold
        assert lab.uploaded_bytes(DEST_ACCOUNT) - bytes_before == sum(unique.values())


def test_batch_with_a_missing_tag_promotes_the_others_and_a_rerun_redoes_only_it(
    lab: Lab, cluster: Cluster, engine: str
) -> None:
    repo = f"batch/missing-{engine}"
    lab.create_repository(DEST_ACCOUNT, repo)  # the destination repository exists, as in ECR
    for i, tag in enumerate(["4.0.0", "4.0.2"]):
        lab.push_image(SOURCE_ACCOUNT, repo, tag, seed=200 + i)
    kwargs = {
        "source_image": f"{SOURCE_HOST}/{repo}",
        "dest_image": f"{DEST_HOST}/{repo}",
        "tags": ["4.0.0", "4.0.1", "4.0.2"],
    }
    first = run_operator(cluster, engine, **kwargs)
    assert isinstance(first.error, EcrPromoteError)
    assert "1 of 3 promotions failed" in str(first.error)
    assert f"source {SOURCE_HOST}/{repo}:4.0.1 not found" in str(first.error)
    assert [p["status"] for p in first.pushed["return_value"]["promotions"]] == ["copied", "failed", "copied"]
    assert lab.digest(DEST_ACCOUNT, repo, "4.0.2") is not None

    lab.push_image(SOURCE_ACCOUNT, repo, "4.0.1", seed=299)
    uploads_before = len(lab.upload_requests(DEST_ACCOUNT))
    second = run_operator(cluster, engine, **kwargs)
    assert second.error is None, "\n".join(second.log[-30:])
    assert [p["status"] for p in second.result["promotions"]] == ["present", "copied", "present"]
    assert len(lab.upload_requests(DEST_ACCOUNT)) > uploads_before


def test_conflicting_destination_tag_fails_by_default_and_is_left_unchanged(
    lab: Lab, cluster: Cluster, engine: str
) -> None:
    repo = f"conflict/{engine}"
    new = lab.push_image(SOURCE_ACCOUNT, repo, "5.0.0", seed=300)
    old = lab.push_image(DEST_ACCOUNT, repo, "5.0.0", seed=301)
    kwargs = {"source_image": f"{SOURCE_HOST}/{repo}:5.0.0", "dest_image": f"{DEST_HOST}/{repo}:5.0.0"}

    failed = run_operator(cluster, engine, **kwargs)
    assert isinstance(failed.error, EcrPromoteError)
    assert "destination tag holds another digest" in str(failed.error)
    result = failed.pushed["return_value"]
    assert (result["digest"], result["source_digest"]) == (old, new)
    assert lab.digest(DEST_ACCOUNT, repo, "5.0.0") == old

    skipped = run_operator(cluster, engine, on_conflict="skip", **kwargs)
    assert skipped.error is None
    assert skipped.result["status"] == "skipped"
    assert lab.digest(DEST_ACCOUNT, repo, "5.0.0") == old

    overwritten = run_operator(cluster, engine, on_conflict="overwrite", **kwargs)
    assert overwritten.error is None
    assert overwritten.result["status"] == "copied"
    assert lab.digest(DEST_ACCOUNT, repo, "5.0.0") == new


def test_fan_out_to_two_destinations_in_one_pod(lab: Lab, cluster: Cluster, engine: str) -> None:
    repo = f"fanout/{engine}"
    lab.create_repository(DEST_ACCOUNT, repo)  # the destination repository exists, as in ECR
    lab.create_repository(SOURCE_ACCOUNT, f"release/{engine}")
    digest = lab.push_image(SOURCE_ACCOUNT, repo, "6.0.0", seed=400)
    source = f"{SOURCE_HOST}/{repo}:6.0.0"
    run = run_operator(
        cluster,
        engine,
        source_role_arn=SOURCE_PULL_PUSH_ROLE_ARN,
        promotions=[
            {"source_image": source, "dest_image": f"{DEST_HOST}/{repo}:6.0.0"},
            # a second destination in another account (here the source account's release repo,
            # written with the role that reads there: one role per registry)
            {
                "source_image": source,
                "dest_image": f"{SOURCE_HOST}/release/{engine}:6.0.0",
                "dest_role_arn": SOURCE_PULL_PUSH_ROLE_ARN,
            },
        ],
    )
    assert run.error is None, "\n".join(run.log[-30:])
    assert len(run.pods) == 1
    assert lab.digest(DEST_ACCOUNT, repo, "6.0.0") == digest
    assert lab.digest(SOURCE_ACCOUNT, f"release/{engine}", "6.0.0") == digest
    assert [p["digest_kept"] for p in run.result["promotions"]] == [True, True]
