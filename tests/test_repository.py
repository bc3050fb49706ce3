"""create_repository settings, the init container's repository step, and ECR's refusals explained."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_ecr_promote.engines import ENGINES
from airflow_ecr_promote.pod import plan_pod
from airflow_ecr_promote.promotion import parse_promotion
from airflow_ecr_promote.refs import PromotionInputError
from airflow_ecr_promote.repository import (
    IMMUTABLE,
    MISSING,
    SIGNATURE_IMMUTABLE,
    RepositorySettings,
    create_repositories_env,
    explain,
    parse_create_repository,
)

SRC = "123456789012.dkr.ecr.us-west-2.amazonaws.com/team/app"
DST = "210987654321.dkr.ecr.us-east-1.amazonaws.com/prod/app"
PULL = "arn:aws:iam::123456789012:role/pull"
PUSH = "arn:aws:iam::210987654321:role/push"
NO_REPO = "The repository with name 'prod/app' does not exist in the registry with id '210987654321'"
IMMUTABLE_TEXT = (
    "The image tag '1.0' already exists in the 'prod/app' repository and cannot be overwritten because "
    "the repository is immutable."
)


def promotion(**kwargs: Any) -> Any:
    inputs: dict[str, Any] = {
        "source_image": f"{SRC}:1.0",
        "dest_image": f"{DST}:1.0",
        "source_role_arn": PULL,
        "dest_role_arn": PUSH,
        **kwargs,
    }
    return parse_promotion(**inputs)


@pytest.mark.parametrize("value", [None, False])
def test_repositories_must_exist_by_default(value: object) -> None:
    assert parse_create_repository(value) is None


def test_true_copies_the_source_repositorys_settings() -> None:
    settings = parse_create_repository(True)
    assert settings == RepositorySettings(from_source=True)
    assert settings.env_value() == "source"


def test_explicit_settings() -> None:
    settings = parse_create_repository(
        {"imageTagMutability": "IMMUTABLE", "scanOnPush": True, "kmsKey": "alias/ecr"}
    )
    assert settings is not None
    assert settings.env_value() == "IMMUTABLE true KMS alias/ecr"
    assert parse_create_repository({"scanOnPush": False}).env_value() == "MUTABLE false AES256 -"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("yes", "is not a boolean or a dict"),
        ({}, "is not a boolean or a dict"),
        ({"mutability": "IMMUTABLE"}, "unknown keys ['mutability']"),
        ({"imageTagMutability": "immutable"}, "imageTagMutability 'immutable' is not ECR's"),
        ({"scanOnPush": "true"}, "scanOnPush 'true' is not a boolean"),
        ({"encryptionType": "DSSE"}, "encryptionType 'DSSE' is not ECR's"),
        ({"encryptionType": "AES256", "kmsKey": "alias/x"}, "kmsKey 'alias/x' is not a KMS key"),
        ({"kmsKey": "alias/x; rm -rf /"}, "is not a KMS key"),
    ],
)
def test_bad_settings_are_refused_naming_the_parameter(value: object, problem: str) -> None:
    with pytest.raises(PromotionInputError, match="create_repository=") as refused:
        parse_create_repository(value)
    assert problem in str(refused.value)


def test_one_line_per_destination_repository() -> None:
    batch = promotion(source_image=SRC, dest_image=DST, dest_tags=["1.0", "1.1"])
    env = create_repositories_env(batch, RepositorySettings(from_source=True))
    assert env == {
        "CREATE_REPOSITORIES": (
            f"us-east-1 {PUSH} 210987654321 prod/app us-west-2 {PULL} 123456789012 team/app"
        ),
        "REPOSITORY_SETTINGS": "source",
    }


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_the_init_container_creates_repositories_only_when_asked(engine: str) -> None:
    kwargs = {"on_conflict": "overwrite"} if engine == "kaniko" else {}
    plain = plan_pod(promotion(**kwargs), ENGINES[engine])
    assert plain.repository_container is None
    assert "CREATE_REPOSITORIES" not in {e.name for e in plain.init_container.env}
    assert "create-repository" not in plain.init_container.command[2]
    asked = plan_pod(
        promotion(**kwargs), ENGINES[engine], create_repository=RepositorySettings(False, "IMMUTABLE")
    )
    assert asked.repository_container is not None
    # its own init container, after the login (and after the gate, when there is one)
    assert asked.init_containers == [asked.init_container, asked.repository_container]
    assert "create-repository" not in asked.init_container.command[2]
    env = {e.name: e.value for e in asked.repository_container.env}
    assert env["REPOSITORY_SETTINGS"] == "IMMUTABLE false AES256 -"
    assert env["CREATE_REPOSITORIES"].startswith("us-east-1 ")
    script = asked.repository_container.command[2]
    assert "create-repository" in script
    assert "prod/app" not in script, "user values reach the script only through the environment"


def entry(reason: str, status: str = "failed", digest: str | None = None) -> dict[str, Any]:
    return {"source_image": f"{SRC}:1.0", "dest_image": f"{DST}:1.0", "status": status, "digest": digest,
            "reason": reason}  # fmt: skip


@pytest.mark.parametrize("engine", ["skopeo", "crane"])
def test_missing_repository_names_it_the_account_and_both_fixes(engine: str) -> None:
    text = explain(entry(f"{MISSING} {NO_REPO}"), engine)["reason"]
    assert "repository 'prod/app' in account 210987654321 (us-east-1) does not exist" in text
    assert NO_REPO in text
    assert "aws ecr create-repository --repository-name prod/app --region us-east-1" in text
    assert "create_repository=True" in text


def test_kaniko_missing_repository_from_its_log() -> None:
    log = (
        f"error checking push permissions: POST https://x/v2/prod/app/blobs/uploads/: NAME_UNKNOWN: {NO_REPO}"
    )
    text = explain(entry(log), "kaniko")["reason"]
    assert "does not exist" in text and "create_repository=True" in text
    source_missing = NO_REPO.replace("prod/app", "team/app").replace("210987654321", "123456789012")
    assert explain(entry(source_missing), "kaniko")["reason"] == source_missing


def test_immutable_overwrite_says_the_repository_is_immutable() -> None:
    text = explain(entry(f"{IMMUTABLE} {IMMUTABLE_TEXT}", digest="sha256:" + "a" * 64), "crane")["reason"]
    assert "tags are immutable" in text and "on_conflict='overwrite' cannot move the tag" in text
    assert "sha256:" + "a" * 64 in text
    assert "batch-delete-image --repository-name prod/app --image-ids imageTag=1.0" in text


def test_kaniko_on_an_immutable_tag_says_why_it_can_never_succeed() -> None:
    text = explain(entry(f"PUT https://x/v2/prod/app/manifests/1.0: TAG_INVALID: {IMMUTABLE_TEXT}"), "kaniko")
    assert "kaniko gives every push a new digest" in text["reason"]
    assert "engine='skopeo' or engine='crane'" in text["reason"]


def test_a_signature_tag_an_immutable_repository_refuses_is_named_with_its_fixes() -> None:
    sig = "sha256-" + "b" * 64 + ".sig"
    ecr = IMMUTABLE_TEXT.replace("'1.0'", f"'{sig}'")
    text = explain(entry(f"copying signatures and referrers failed: {SIGNATURE_IMMUTABLE} {ecr}"), "regctl")
    assert f"ECR refused to move cosign's tag '{sig}'" in text["reason"]
    assert "already in the destination repository 'prod/app'" in text["reason"]
    assert "--registry-referrers-mode=oci-1-1" in text["reason"] and "on_conflict" not in text["reason"]


def test_other_failures_and_successes_are_left_alone() -> None:
    for given in (entry("copy failed: unauthorized"), entry(NO_REPO, status="copied")):
        assert explain(given, "skopeo") == given


def test_ecr_refusal_finds_ecrs_own_text() -> None:
    from airflow_ecr_promote.repository import ecr_refusal

    assert ecr_refusal(f"error pushing image: TAG_INVALID: {IMMUTABLE_TEXT}\nmore") == IMMUTABLE_TEXT
    assert ecr_refusal(f"NAME_UNKNOWN: {NO_REPO}") == NO_REPO
    assert ecr_refusal("unauthorized") is None
