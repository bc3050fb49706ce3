"""The init container's repository step (scripts/repository.sh), run for real: sh, the real aws
CLI, a real moto_server. A source repository whose tag mutability has exclusion filters
(IMMUTABLE_WITH_EXCLUSION, MUTABLE_WITH_EXCLUSION: typically ``sha256-*`` so that cosign's tags
can move) gives a destination with the same mode and the same filters, never the plain mode."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from airflow_ecr_promote.engines import script
from tests.conftest import aws_cli, require

pytestmark = pytest.mark.moto

ACCOUNT = "123456789012"  # moto's default account: the pod's own identity here
FILTERS = [{"filterType": "WILDCARD", "filter": "sha256-*"}, {"filterType": "WILDCARD", "filter": "dev-*"}]


def ecr(moto_server: str) -> Any:
    import boto3

    return boto3.client(
        "ecr", region_name="us-east-1", endpoint_url=moto_server,
        aws_access_key_id="pod-identity-key", aws_secret_access_key="pod-identity-secret",
    )  # fmt: skip


def run_repository_step(tmp_path: Path, moto_server: str, name: str, settings: str = "source") -> Any:
    """Create prod/<name> from team/<name>."""
    cli = aws_cli()
    require(cli, "no aws CLI that honours AWS_ENDPOINT_URL: run 'make venv' (.venv-awscli)")
    env = {
        "PATH": f"{Path(str(cli)).parent}:/usr/bin:/bin",
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "pod-identity-key",
        "AWS_SECRET_ACCESS_KEY": "pod-identity-secret",
        "CREATE_REPOSITORIES": f"us-east-1 - {ACCOUNT} prod/{name} us-east-1 - {ACCOUNT} team/{name}",
        "REPOSITORY_SETTINGS": settings,
        "ROLE_SESSION_NAME": "ecr-promote-test",
        "AUTH_DIR": str(tmp_path),
        "HOME": str(tmp_path),
        "TERMINATION_LOG": str(tmp_path / "termination-log"),
    }
    return subprocess.run(
        ["sh", "-c", script("repository.sh")], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("mode", ["IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION"])
def test_the_source_repositorys_exclusion_filters_are_copied(
    tmp_path: Path, moto_server: str, mode: str
) -> None:
    client = ecr(moto_server)
    name = mode.lower()
    client.create_repository(
        repositoryName=f"team/{name}", imageTagMutability=mode, imageTagMutabilityExclusionFilters=FILTERS
    )
    done = run_repository_step(tmp_path, moto_server, name)
    assert done.returncode == 0, done.stderr
    [created] = client.describe_repositories(repositoryNames=[f"prod/{name}"])["repositories"]
    assert created["imageTagMutability"] == mode
    assert created["imageTagMutabilityExclusionFilters"] == FILTERS


def test_plain_modes_are_created_without_filters(tmp_path: Path, moto_server: str) -> None:
    client = ecr(moto_server)
    client.create_repository(repositoryName="team/plain", imageTagMutability="IMMUTABLE")
    done = run_repository_step(tmp_path, moto_server, "plain")
    assert done.returncode == 0, done.stderr
    [created] = client.describe_repositories(repositoryNames=["prod/plain"])["repositories"]
    assert created["imageTagMutability"] == "IMMUTABLE"
    assert not created.get("imageTagMutabilityExclusionFilters")
