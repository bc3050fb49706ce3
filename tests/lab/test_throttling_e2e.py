"""ECR's and STS's throttling, and a registry that fails mid-batch, in the lab (issue 22).

The lab throttles like AWS (tests/lab/throttle.py): the registry fronts answer 429
``TOOMANYREQUESTS`` past a PutImage / CompleteLayerUpload rate, moto answers ``ThrottleException``
(ECR) and ``Throttling`` (STS) past theirs. Through the operator's real pod, on the lab's real
Kubernetes:

- a batch against a low PutImage rate completes, and its return value counts the retries;
- STS and ECR API throttling of the init container is ridden out (the CLI's standard retries, and
  login.sh's own for ThrottleException, which the CLI does not retry), and counted;
- a throttle that never lifts fails naming the throttled API and what to change, nothing written;
- a destination registry restarted in the middle of a 300-tag batch: the batch completes after
  retries, or names exactly the tags that failed, and no tag holds a partial image.

Each test prints its figures (time, retries, requests refused) for README "Running at scale".
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from airflow_ecr_promote.operators import EcrPromoteError
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .cluster import Cluster
from .lab import Lab
from .operator_run import TaskRun, lab_operator, run_task
from .test_batch_scale_e2e import RegistryApi, seeded_tags

pytestmark = [pytest.mark.lab, pytest.mark.cluster]


@pytest.fixture
def throttled_lab(lab: Lab) -> Iterator[Lab]:
    """The session's lab, back to AWS's default rates (and zero counts) before and after."""
    lab.reset_throttles()
    try:
        yield lab
    finally:
        lab.reset_throttles()


def run(cluster: Cluster, engine: str, **kwargs: object) -> TaskRun:
    started = time.monotonic()
    done = run_task(cluster, task=lab_operator(cluster.lab, engine, **kwargs))
    done.seconds = time.monotonic() - started
    return done


def batch(repo: str, tags: list[str]) -> dict[str, object]:
    return {"source_image": f"{SOURCE_HOST}/{repo}", "dest_image": f"{DEST_HOST}/{repo}", "tags": tags}


def assert_whole_or_absent(lab: Lab, repo: str, tag: str, digest: str) -> bool:
    """The destination tag is missing, or names the source's digest with every platform there."""
    held = lab.digest(DEST_ACCOUNT, repo, tag)
    if held is None:
        return False
    assert held == digest, (tag, held, digest)
    index = json.loads(lab.inspect_raw(DEST_ACCOUNT, repo, tag) or b"{}")
    for entry in index["manifests"]:
        assert lab.inspect_raw(DEST_ACCOUNT, repo, entry["digest"]), (
            f"{tag}: platform {entry['digest']} missing"
        )
    return True


@pytest.mark.parametrize("engine", ["skopeo", "crane"])
def test_a_batch_against_a_low_put_image_rate_completes_and_counts_its_retries(
    throttled_lab: Lab, cluster: Cluster, engine: str
) -> None:
    lab = throttled_lab
    repo = f"throttle/batch-{engine}"
    lab.create_repository(DEST_ACCOUNT, repo)
    tags = [f"5.0.{i}" for i in range(40)]
    expected = seeded_tags(lab, repo, tags, images=3, seed=2200)
    # 4 manifest writes a second (ECR's default is 10) against 4 copies at once, which ask for about
    # twice that: many attempts meet a 429, and the batch still completes
    lab.set_throttle("ecr:PutImage", rate=4, burst=4, which=DEST_ACCOUNT)
    done = run(cluster, engine, parallel=4, **batch(repo, tags))
    counts = lab.throttled()
    entries = done.result["promotions"] if done.result else []
    print(
        f"throttled batch ({engine}): {len(tags)} tags, PutImage 4/s, parallel=4: {done.seconds:.1f} s, "
        f"retries {done.result and done.result['retries']}, 429s {counts['refused'].get('ecr:PutImage', 0)}, "
        f"PutImage let through {counts['allowed'].get('ecr:PutImage', 0)}"
    )
    assert done.error is None, "\n".join(done.log[-30:])
    assert [e["status"] for e in entries] == ["copied"] * len(tags)
    assert [e["digest"] for e in entries] == [expected[tag] for tag in tags]
    assert counts["refused"].get("ecr:PutImage", 0) > 0, "the registry throttled the batch"
    assert done.result["retries"] == sum(e["retries"] for e in entries)
    if engine == "skopeo":  # crane retries TOOMANYREQUESTS inside too (go-containerregistry), uncounted
        assert done.result["retries"] > 0
    api = RegistryApi(lab, DEST_ACCOUNT)
    assert [api.digest(repo, tag) for tag in tags] == [expected[tag] for tag in tags]


def test_sts_and_ecr_api_throttling_of_the_logins_is_ridden_out_and_counted(
    throttled_lab: Lab, cluster: Cluster
) -> None:
    lab = throttled_lab
    repo, tag = "throttle/login", "1.0"
    lab.create_repository(DEST_ACCOUNT, repo)
    digest = lab.push_image(SOURCE_ACCOUNT, repo, tag, seed=2300)
    # empty buckets that fill slowly: the first AssumeRole and GetAuthorizationToken calls are refused
    lab.set_throttle("sts:AssumeRole", rate=0.5, burst=1, start=0)
    lab.set_throttle("ecr:GetAuthorizationToken", rate=0.5, burst=1, start=0)
    done = run(
        cluster, "skopeo", source_image=f"{SOURCE_HOST}/{repo}:{tag}", dest_image=f"{DEST_HOST}/{repo}:{tag}"
    )
    counts = lab.throttled()
    print(
        f"throttled logins: {done.seconds:.1f} s, refused {counts['refused']}, "
        f"login_retries {done.result and done.result.get('login_retries')}"
    )
    assert done.error is None, "\n".join(done.log[-30:])
    assert (done.result["status"], done.result["digest"]) == ("copied", digest)
    assert counts["refused"].get("sts:AssumeRole", 0) > 0
    assert counts["refused"].get("ecr:GetAuthorizationToken", 0) > 0
    # ThrottleException is retried by login.sh (the CLI does not know it), and counted
    assert done.result["login_retries"] >= 1


def test_a_login_throttle_that_never_lifts_fails_naming_the_api_and_the_fixes(
    throttled_lab: Lab, cluster: Cluster
) -> None:
    lab = throttled_lab
    repo, tag = "throttle/never-login", "1.0"
    lab.create_repository(DEST_ACCOUNT, repo)
    lab.push_image(SOURCE_ACCOUNT, repo, tag, seed=2400)
    lab.set_throttle("ecr:GetAuthorizationToken", rate=0, burst=0)
    done = run(
        cluster, "skopeo", source_image=f"{SOURCE_HOST}/{repo}:{tag}", dest_image=f"{DEST_HOST}/{repo}:{tag}"
    )
    print(f"login throttle that never lifts: failed after {done.seconds:.1f} s")
    assert isinstance(done.error, EcrPromoteError)
    message = str(done.error)
    assert "failed while logging in to the registries" in message
    assert "ECR throttled GetAuthorizationToken (ThrottleException)" in message
    assert "smaller Airflow pool" in message and "parallel=" in message
    assert "'Rate of GetAuthorizationToken requests' quota" in message
    assert lab.digest(DEST_ACCOUNT, repo, tag) is None


def test_a_registry_throttle_that_never_lifts_fails_naming_the_api_and_the_fixes(
    throttled_lab: Lab, cluster: Cluster
) -> None:
    lab = throttled_lab
    repo, tag = "throttle/never-put", "1.0"
    lab.create_repository(DEST_ACCOUNT, repo)
    lab.push_image(SOURCE_ACCOUNT, repo, tag, seed=2500)
    lab.set_throttle("ecr:PutImage", rate=0, burst=0, which=DEST_ACCOUNT)
    done = run(
        cluster, "skopeo", source_image=f"{SOURCE_HOST}/{repo}:{tag}", dest_image=f"{DEST_HOST}/{repo}:{tag}"
    )
    print(f"PutImage throttle that never lifts: failed after {done.seconds:.1f} s")
    assert isinstance(done.error, EcrPromoteError)
    message = str(done.error)
    assert f"ECR throttled PutImage (429 TOOMANYREQUESTS) on {DEST_HOST}, still after 8 retries" in message
    assert "a lower parallel=" in message and "a smaller Airflow pool" in message
    assert "'Rate of PutImage requests' quota" in message
    assert done.pushed["return_value"]["retries"] == 8
    assert lab.digest(DEST_ACCOUNT, repo, tag) is None, "nothing under the tag"


def test_a_registry_restarted_mid_batch_leaves_every_tag_whole_or_named(lab: Lab, cluster: Cluster) -> None:
    repo = "faults/mid-batch"
    lab.create_repository(DEST_ACCOUNT, repo)
    tags = [f"8.{i // 100}.{i % 100}" for i in range(300)]
    expected = seeded_tags(lab, repo, tags, images=3, seed=2600)
    puts_at_start = sum(r.method == "PUT" and "/manifests/" in r.path for r in lab.requests(DEST_ACCOUNT))
    down_for = 3.0
    interrupted = threading.Event()

    def interrupt() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            puts = sum(r.method == "PUT" and "/manifests/" in r.path for r in lab.requests(DEST_ACCOUNT))
            if puts - puts_at_start >= 60:  # some 20 tags in
                lab.stop_registry(DEST_ACCOUNT)
                interrupted.set()
                time.sleep(down_for)
                lab.start_registry(DEST_ACCOUNT)
                return
            time.sleep(0.1)

    chaos = threading.Thread(target=interrupt)
    chaos.start()
    try:
        done = run(cluster, "skopeo", parallel=8, **batch(repo, tags))
    finally:
        chaos.join()
        lab.start_registry(DEST_ACCOUNT)
    assert interrupted.is_set(), "the registry was stopped during the batch"
    result = done.result or done.pushed.get("return_value")
    assert result is not None, "\n".join(done.log[-30:])
    entries = result["promotions"]
    failed = [e["dest_image"] for e in entries if e["status"] != "copied"]
    print(
        f"registry down {down_for:.0f} s mid-batch: {len(tags)} tags in {done.seconds:.1f} s, "
        f"retries {result['retries']}, failed {len(failed)}: "
        + "; ".join(f"{e['dest_image']}: {e.get('reason')}" for e in entries if e["status"] != "copied")[
            :3000
        ]
    )
    assert len(entries) == len(tags)
    for tag, entry in zip(tags, entries, strict=True):
        whole = assert_whole_or_absent(lab, repo, tag, expected[tag])
        if entry["status"] == "copied":
            assert whole and entry["digest"] == expected[tag], tag
        else:
            assert entry["status"] == "failed" and entry.get("reason"), entry
    if done.error is None:
        assert failed == []
        assert result["retries"] > 0, "the outage was ridden out by retries"
    else:
        assert isinstance(done.error, EcrPromoteError)
        assert f"{len(failed)} of {len(tags)} promotions failed" in str(done.error)
