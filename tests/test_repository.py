"""create_repository settings, the init container's repository step, and ECR's refusals explained."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_ecr_promote.engines import ENGINES
from airflow_ecr_promote.pod import plan_pod
from airflow_ecr_promote.promotion import parse_promotion
from airflow_ecr_promote.refs import PromotionInputError
from airflow_ecr_promote.repository import (
    RepositorySettings,
    create_repositories_env,
    explain,
    interpret,
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
        ({"imageTagMutability": "IMMUTABLE_WITH_EXCLUSION"}, "needs exclusion filters, which these settings"),
        ({"imageTagMutability": "MUTABLE_WITH_EXCLUSION"}, "create_repository=True to copy the source"),
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


def copy_of(source: str = f"{SRC}:1.0", dest: str = f"{DST}:1.0") -> Any:
    return promotion(source_image=source, dest_image=dest).copies[0]


@pytest.mark.parametrize("step", ["read-dest", "copy"])
def test_missing_repository_names_it_the_account_and_both_fixes(step: str) -> None:
    text = interpret(f"{step} name_unknown NAME_UNKNOWN: {NO_REPO}", "failed", copy_of())
    assert "repository 'prod/app' in account 210987654321 (us-east-1) does not exist" in text
    assert NO_REPO in text
    assert "aws ecr create-repository --repository-name prod/app --region us-east-1" in text
    assert "create_repository=True" in text


def test_a_missing_source_repository_of_the_destinations_name_is_the_sources() -> None:
    """dev-to-prod naming: both repositories are 'team/app'; ECR's text names the source's account."""
    same = copy_of(dest="210987654321.dkr.ecr.us-east-1.amazonaws.com/team/app:1.0")
    source_missing = (
        "The repository with name 'team/app' does not exist in the registry with id '123456789012'"
    )
    for fact in (f"copy name_unknown NAME_UNKNOWN: {source_missing}",
                 f"read-source name_unknown NAME_UNKNOWN: {source_missing}"):  # fmt: skip
        text = interpret(fact, "failed", same)
        assert text.startswith(f"source {SRC}:1.0 not found"), text
        assert "create_repository" not in text and "destination" not in text
    # the destination's own text, same name, its own account: the destination is missing
    dest_missing = source_missing.replace("123456789012", "210987654321")
    assert "the destination repository 'team/app' in account 210987654321" in interpret(
        f"copy name_unknown NAME_UNKNOWN: {dest_missing}", "failed", same
    )
    # a repository of another account altogether is neither: the tool's words are kept
    other = source_missing.replace("123456789012", "999999999999")
    assert interpret(f"copy name_unknown NAME_UNKNOWN: {other}", "failed", same) == (
        f"copy failed: NAME_UNKNOWN: {other}"
    )


def test_kaniko_missing_repository_from_its_log() -> None:
    log = (
        f"error checking push permissions: POST https://x/v2/prod/app/blobs/uploads/: NAME_UNKNOWN: {NO_REPO}"
    )
    text = explain(entry(log), "kaniko")["reason"]
    assert "does not exist" in text and "create_repository=True" in text
    source_missing = NO_REPO.replace("prod/app", "team/app").replace("210987654321", "123456789012")
    assert explain(entry(source_missing), "kaniko")["reason"] == source_missing


def test_immutable_overwrite_says_the_repository_is_immutable() -> None:
    held = "sha256:" + "a" * 64
    text = interpret(f"copy tag_invalid TAG_INVALID: {IMMUTABLE_TEXT}", "failed", copy_of(), held)
    assert "tags are immutable" in text and "on_conflict='overwrite' cannot move the tag" in text
    assert held in text
    assert "batch-delete-image --repository-name prod/app --image-ids imageTag=1.0" in text


def test_kaniko_on_an_immutable_tag_says_why_it_can_never_succeed() -> None:
    text = explain(entry(f"PUT https://x/v2/prod/app/manifests/1.0: TAG_INVALID: {IMMUTABLE_TEXT}"), "kaniko")
    assert "kaniko gives every push a new digest" in text["reason"]
    assert "engine='skopeo' or engine='crane'" in text["reason"]


def test_a_signature_tag_an_immutable_repository_refuses_is_named_with_its_fixes() -> None:
    sig = "sha256-" + "b" * 64 + ".sig"
    ecr = IMMUTABLE_TEXT.replace("'1.0'", f"'{sig}'")
    text = interpret(f"signatures tag_invalid TAG_INVALID: {ecr}", "failed", copy_of())
    assert f"ECR refused to move cosign's tag '{sig}'" in text
    assert "already in the destination repository 'prod/app'" in text
    assert "--registry-referrers-mode=oci-1-1" in text and "on_conflict" not in text


def test_a_signature_tag_refused_while_copying_a_new_tag_is_not_called_the_images_tag() -> None:
    sig = "sha256-" + "b" * 64 + ".sig"
    ecr = IMMUTABLE_TEXT.replace("'1.0'", f"'{sig}'")
    text = interpret(f"copy tag_invalid TAG_INVALID: {ecr}", "failed", copy_of())
    assert f"ECR refused to move cosign's tag '{sig}'" in text
    assert "the image's own tag '1.0' was not the one refused" in text
    assert "refused to overwrite tag '1.0'" not in text and "on_conflict" not in text
    assert "--registry-referrers-mode=oci-1-1" in text


@pytest.mark.parametrize(
    ("fact", "status", "reason"),
    [
        ("conflict", "failed", "destination tag holds another digest"),
        ("conflict", "skipped", "destination holds another digest"),
        ("malformed - -bad ref", "failed", "refusing a malformed reference '-bad ref'"),
        ("no-result", "failed", "no result"),
        ("read-source manifest_unknown MANIFEST_UNKNOWN: manifest unknown", "failed",
         f"source {SRC}:1.0 not found"),
        ("read-source denied DENIED: no", "failed", f"cannot read source {SRC}:1.0: DENIED: no"),
        ("read-dest other boom", "failed", f"cannot read destination {DST}:1.0: boom"),
        ("copy denied denied: not authorized", "failed", "copy failed: denied: not authorized"),
        ("copy transient 503 Service Unavailable", "failed",
         "copy failed, and still after 0 retries: 503 Service Unavailable"),
        ("listing other x", "failed", "copied, but listing its signatures and referrers failed: x"),
        ("read-dest throttled TOOMANYREQUESTS: Rate exceeded", "failed",
         f"ECR throttled BatchGetImage (429 TOOMANYREQUESTS) on {DST.split('/')[0]}, still after 0 retries "
         "with backoff: TOOMANYREQUESTS: Rate exceeded. Fix: make fewer BatchGetImage requests at once in "
         "account 210987654321 (us-east-1): a lower parallel= for a batch, a smaller Airflow pool (or "
         "max_active_tis_per_dag) for these tasks, fewer promotions at the same time; or ask for a higher "
         "'Rate of BatchGetImage requests' quota (Service Quotas, Amazon ECR). README \"Running at scale\" "
         "gives settings that stay within the defaults"),
        ("a future fact", "failed", "a future fact"),
    ],
)  # fmt: skip
def test_each_fact_of_the_copy_script_reads_as_a_reason(fact: str, status: str, reason: str) -> None:
    assert interpret(fact, status, copy_of()) == reason


def test_other_failures_and_successes_are_left_alone() -> None:
    for given in (entry("copy failed: unauthorized"), entry(NO_REPO, status="copied")):
        assert explain(given, "kaniko") == given


def test_ecr_refusal_finds_ecrs_own_text() -> None:
    from airflow_ecr_promote.repository import ecr_refusal

    assert ecr_refusal(f"error pushing image: TAG_INVALID: {IMMUTABLE_TEXT}\nmore") == IMMUTABLE_TEXT
    assert ecr_refusal(f"NAME_UNKNOWN: {NO_REPO}") == NO_REPO
    assert ecr_refusal("unauthorized") is None
