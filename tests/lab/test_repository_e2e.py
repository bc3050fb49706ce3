"""ECR's repository rules through the operator's own pod, for every engine the lab runs.

The lab's registries answer like ECR (tests/lab/ecr_front.py): a repository exists only once
created through the ECR API, and an IMMUTABLE repository refuses to move a tag.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_ecr_promote.operators import EcrPromoteError
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .cluster import Cluster
from .fixtures import BASELINE_NAMESPACE
from .lab import Lab
from .moto_iam import LAB_ADMIN_ROLE_ARNS, PUSH_CREATE_ROLE_ARN, TOOLS_ACCOUNT, TOOLS_PUSH_CREATE_ROLE_ARN
from .operator_run import TaskRun, lab_operator, run_task

pytestmark = [pytest.mark.lab, pytest.mark.cluster]

ENGINES = ("skopeo", "crane", "regctl", "kaniko")
COPYING_ENGINES = ("skopeo", "crane", "regctl")


def promote(
    cluster: Cluster, engine: str, repo: str, tag: str, dest_repo: str | None = None, **kwargs: Any
) -> TaskRun:
    """On the lab's real Kubernetes; kaniko (root, three capabilities) in the ``baseline`` namespace."""
    if engine == "kaniko":
        kwargs.setdefault("namespace", BASELINE_NAMESPACE)
    operator = lab_operator(
        cluster.lab,
        engine,
        source_image=f"{SOURCE_HOST}/{repo}:{tag}",
        dest_image=f"{DEST_HOST}/{dest_repo or repo}:{tag}",
        **kwargs,
    )
    return run_task(cluster, task=operator)


def manifest_puts(lab: Lab, repo: str) -> int:
    return sum(
        1 for r in lab.requests(DEST_ACCOUNT) if r.method == "PUT" and f"/v2/{repo}/manifests/" in r.path
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_missing_destination_repository_fails_naming_it_the_account_and_both_fixes(
    lab: Lab, cluster: Cluster, engine: str
) -> None:
    repo = f"repository/missing-{engine}"
    lab.push_image(SOURCE_ACCOUNT, repo, "1.0", seed=1200)
    run = promote(cluster, engine, repo, "1.0")
    assert isinstance(run.error, EcrPromoteError), run.log[-20:]
    message = str(run.error)
    assert f"repository '{repo}' in account {DEST_ACCOUNT} (us-east-1) does not exist" in message
    assert f"does not exist in the registry with id '{DEST_ACCOUNT}'" in message, "ECR's own text"
    assert f"aws ecr create-repository --repository-name {repo} --region us-east-1" in message
    assert "create_repository=True" in message
    assert lab.digest(DEST_ACCOUNT, repo, "1.0") is None


@pytest.mark.parametrize("engine", COPYING_ENGINES)
def test_a_missing_source_repository_named_like_the_destination_is_reported_as_the_source(
    lab: Lab, cluster: Cluster, engine: str
) -> None:
    """dev-to-prod naming: the destination's repository exists, the source's of the same name does
    not. ECR's NAME_UNKNOWN names the source's registry id: the source is missing, not the
    destination, and create_repository is no fix."""
    repo = f"repository/dev-to-prod-{engine}"
    lab.create_repository(DEST_ACCOUNT, repo)
    run = promote(cluster, engine, repo, "1.0")
    assert isinstance(run.error, EcrPromoteError), run.log[-20:]
    message = str(run.error)
    assert f"source {SOURCE_HOST}/{repo}:1.0 not found" in message
    assert "does not exist (ECR" not in message and "create_repository" not in message
    assert lab.digest(DEST_ACCOUNT, repo, "1.0") is None


@pytest.mark.parametrize("engine", ENGINES)
def test_create_repository_copies_the_source_repository_settings(
    lab: Lab, cluster: Cluster, engine: str
) -> None:
    repo = f"repository/created-{engine}"
    lab.create_repository(SOURCE_ACCOUNT, repo, immutable=True, scan_on_push=True, kms=True)
    lab.push_image(SOURCE_ACCOUNT, repo, "1.0", seed=1210)
    run = promote(cluster, engine, repo, "1.0", create_repository=True, dest_role_arn=PUSH_CREATE_ROLE_ARN)
    assert run.error is None, "\n".join(run.log[-30:])
    assert run.result["status"] == "copied"
    assert lab.digest(DEST_ACCOUNT, repo, "1.0") == run.result["digest"]
    created = lab.ecr_client(DEST_ACCOUNT).describe_repositories(repositoryNames=[repo])["repositories"][0]
    assert created["registryId"] == DEST_ACCOUNT
    assert created["imageTagMutability"] == "IMMUTABLE"
    assert created["imageScanningConfiguration"] == {"scanOnPush": True}
    assert created["encryptionConfiguration"]["encryptionType"] == "KMS"


@pytest.mark.parametrize("engine", ["skopeo", "crane"])
def test_create_repository_with_a_push_role_of_a_third_account_creates_it_in_the_destination_account(
    lab: Lab, cluster: Cluster, engine: str
) -> None:
    """The push role belongs to a tools account that the destination's registry policy lets push and
    create repositories: the repository is created in the destination account, not the role's own."""
    from botocore.exceptions import ClientError

    repo = f"repository/third-account-{engine}"
    lab.push_image(SOURCE_ACCOUNT, repo, "1.0", seed=1260)
    run = promote(
        cluster, engine, repo, "1.0", create_repository=True, dest_role_arn=TOOLS_PUSH_CREATE_ROLE_ARN
    )
    assert run.error is None, "\n".join(run.log[-30:])
    assert run.result["status"] == "copied"
    assert lab.digest(DEST_ACCOUNT, repo, "1.0") == run.result["digest"]
    created = lab.ecr_client(DEST_ACCOUNT).describe_repositories(repositoryNames=[repo])["repositories"][0]
    assert created["registryId"] == DEST_ACCOUNT
    # and nothing in the role's own account (read by that account's setup role: the push role's
    # policy, the documented one, names the destination's repositories only)
    tools = lab.ecr_client(DEST_ACCOUNT, role_arn=LAB_ADMIN_ROLE_ARNS[TOOLS_ACCOUNT])
    with pytest.raises(ClientError, match="RepositoryNotFoundException"):
        tools.describe_repositories(repositoryNames=[repo])


def test_create_repository_with_given_settings_and_a_role_that_may_not_create_fails_naming_the_action(
    lab: Lab,
    cluster: Cluster,
) -> None:
    repo = "repository/no-permission"
    lab.push_image(SOURCE_ACCOUNT, repo, "1.0", seed=1220)
    refused = promote(cluster, "crane", repo, "1.0", create_repository={"imageTagMutability": "IMMUTABLE"})
    assert isinstance(refused.error, EcrPromoteError)
    message = str(refused.error)
    assert "failed while creating the destination repository" in message
    # the README's push policy without create-repository-push: the lookup is the first call refused
    assert "AccessDeniedException" in message and "ecr:DescribeRepositories" in message
    assert lab.digest(DEST_ACCOUNT, repo, "1.0") is None

    settings = {"imageTagMutability": "IMMUTABLE", "scanOnPush": False}
    run = promote(
        cluster, "crane", repo, "1.0", create_repository=settings, dest_role_arn=PUSH_CREATE_ROLE_ARN
    )
    assert run.error is None, "\n".join(run.log[-30:])
    created = lab.ecr_client(DEST_ACCOUNT).describe_repositories(repositoryNames=[repo])["repositories"][0]
    assert (created["imageTagMutability"], created["imageScanningConfiguration"]) == (
        "IMMUTABLE",
        {"scanOnPush": False},
    )


@pytest.mark.parametrize("engine", COPYING_ENGINES)
def test_immutable_repository_rerun_is_present_and_writes_nothing(
    lab: Lab, cluster: Cluster, engine: str
) -> None:
    repo = f"immutable/rerun-{engine}"
    lab.create_repository(DEST_ACCOUNT, repo, immutable=True)
    digest = lab.push_image(SOURCE_ACCOUNT, repo, "1.0", seed=1230)
    first = promote(cluster, engine, repo, "1.0")
    assert first.error is None, "\n".join(first.log[-30:])
    puts, uploads = manifest_puts(lab, repo), len(lab.upload_requests(DEST_ACCOUNT))
    second = promote(cluster, engine, repo, "1.0")
    assert second.error is None, "\n".join(second.log[-30:])
    assert (second.result["status"], second.result["digest"]) == ("present", digest)
    assert manifest_puts(lab, repo) == puts, "no manifest written on a re-run"
    assert len(lab.upload_requests(DEST_ACCOUNT)) == uploads


@pytest.mark.parametrize("engine", COPYING_ENGINES)
def test_overwrite_into_an_immutable_repository_fails_saying_it_is_immutable(
    lab: Lab, cluster: Cluster, engine: str
) -> None:
    repo = f"immutable/overwrite-{engine}"
    lab.create_repository(DEST_ACCOUNT, repo, immutable=True)
    old = lab.push_image(DEST_ACCOUNT, repo, "1.0", seed=1240)
    lab.push_image(SOURCE_ACCOUNT, repo, "1.0", seed=1241)
    run = promote(cluster, engine, repo, "1.0", on_conflict="overwrite")
    assert isinstance(run.error, EcrPromoteError)
    message = str(run.error)
    assert f"ECR refused to overwrite tag '1.0' of the destination repository '{repo}'" in message
    assert "its tags are immutable" in message and "on_conflict='overwrite' cannot move the tag" in message
    assert f"(it holds {old})" in message
    assert run.pushed["return_value"]["status"] == "failed"
    assert lab.digest(DEST_ACCOUNT, repo, "1.0") == old


def test_kaniko_on_an_existing_tag_of_an_immutable_repository_fails_clearly(
    lab: Lab, cluster: Cluster
) -> None:
    repo = "immutable/kaniko"
    lab.create_repository(DEST_ACCOUNT, repo, immutable=True)
    lab.push_image(SOURCE_ACCOUNT, repo, "1.0", seed=1250)
    first = promote(cluster, "kaniko", repo, "1.0")
    assert first.error is None, "\n".join(first.log[-30:])
    pushed = lab.digest(DEST_ACCOUNT, repo, "1.0")
    second = promote(cluster, "kaniko", repo, "1.0")
    assert isinstance(second.error, EcrPromoteError)
    message = str(second.error)
    assert "its tags are immutable" in message
    assert "kaniko gives every push a new digest" in message
    assert "engine='skopeo' or engine='crane'" in message
    assert lab.digest(DEST_ACCOUNT, repo, "1.0") == pushed
