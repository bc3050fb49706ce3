"""Bad inputs: each gets a message naming the parameter, showing the value and saying what a
valid one looks like, before any pod exists (at construction when literal, after rendering
when templated)."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

from airflow_ecr_promote.operators import EcrPromoteOperator
from airflow_ecr_promote.promotion import parse_promotion
from airflow_ecr_promote.refs import PromotionInputError, parse_image_ref, parse_role_arn
from tests.airflow_context import make_context
from tests.conftest import DEST_HOST, SOURCE_HOST

SOURCE = f"{SOURCE_HOST}/team/app:1.0"
DEST = f"{DEST_HOST}/team/app:1.0"
VALID: dict[str, Any] = {"source_image": SOURCE, "dest_image": DEST}

BAD_INPUTS = [
    # (changed inputs, parameter named, fragments of the message)
    (
        {"source_image": "team/app:1.0"},
        "source_image",
        ["is not an ECR registry", "Expected a fully qualified"],
    ),
    ({"source_image": f"{SOURCE_HOST}/"}, "source_image", ["has no repository"]),
    ({"source_image": "docker.io/library/nginx:1"}, "source_image", ["is not an ECR registry"]),
    ({"source_image": "12345.dkr.ecr.us-west-2.amazonaws.com/app:1"}, "source_image", ["12-digit account"]),
    ({"source_image": f"{SOURCE_HOST}/Team/App:1"}, "source_image", ["not a valid ECR repository name"]),
    ({"source_image": f"{SOURCE_HOST}/team/app"}, "source_image", ["names no tag or digest"]),
    ({"source_image": f"{SOURCE_HOST}/team/app@sha256:abc"}, "source_image", ["sha256:<64 hex digits>"]),
    ({"source_image": f" {SOURCE}"}, "source_image", ["whitespace"]),
    ({"source_image": f"{SOURCE}\n"}, "source_image", ["whitespace"]),
    ({"source_image": f"{SOURCE_HOST}/team/app:1;reboot"}, "source_image", ["is not a valid tag"]),
    ({"source_image": f"{SOURCE_HOST}/team/app:$(rm -rf /)"}, "source_image", ["not a valid ECR repository"]),
    ({"source_image": 42}, "source_image", ["must be a string, not int"]),
    ({"dest_image": f"{DEST_HOST}/team/app"}, "dest_image", ["needs a tag"]),
    ({"dest_image": f"{DEST_HOST}/team/app@sha256:{'a' * 64}"}, "dest_image", ["needs a tag and no digest"]),
    ({"dest_image": f"{DEST_HOST}/team/app:-bad"}, "dest_image", ["is not a valid tag"]),
    (
        {"dest_image": "210987654321.dkr.ecr.cn-north-1.amazonaws.com/app:1"},
        "dest_image",
        ["China regions use .amazonaws.com.cn"],
    ),
    ({"source_role_arn": "ecr-role"}, "source_role_arn", ["is not an IAM role ARN", "arn:aws:iam::"]),
    ({"dest_role_arn": "arn:aws:iam::210987654321:user/bob"}, "dest_role_arn", ["is not an IAM role ARN"]),
    (
        {"dest_role_arn": "arn:aws-cn:iam::210987654321:role/push"},
        "dest_role_arn",
        ["partition 'aws-cn'", "Expected an ARN starting with 'arn:aws:iam::'"],
    ),
    ({"source_account": "999999999999"}, "source_account", ["disagrees with the account '123456789012'"]),
    ({"dest_region": "eu-west-1"}, "dest_region", ["disagrees with the region 'us-east-1'"]),
    ({"engine": "docker"}, "engine", ["not a known engine", "'kaniko', 'skopeo', 'crane'"]),
    ({"engine": "skopeo", "on_conflict": "replace"}, "on_conflict", ["'fail', 'overwrite', 'skip'"]),
    ({"engine": "kaniko", "on_conflict": "skip"}, "on_conflict", ["not supported by engine 'kaniko'"]),
    (
        {
            "engine": "kaniko",
            "dest_image": f"{SOURCE_HOST}/prod/app:1.0",
            "source_role_arn": "arn:aws:iam::123456789012:role/pull",
            "dest_role_arn": "arn:aws:iam::123456789012:role/push",
        },
        "engine",
        ["one credential per registry host", "use one role that can both pull and push", "engine='skopeo'"],
    ),
    (
        {
            "engine": "crane",
            "dest_image": f"{SOURCE_HOST}/prod/app:1.0",
            "dest_role_arn": "arn:aws:iam::1:role/x",
        },
        "dest_role_arn",
        ["is not an IAM role ARN"],
    ),
    ({"engine": "kaniko", "tags": ["1.0", "1.1"]}, "engine", ["cannot promote 2 images in one pod"]),
    ({"engine": "skopeo", "tags": ["1.0", "1.0"]}, "tags", ["more than once"]),
    ({"engine": "skopeo", "tags": "1.0"}, "tags", ["is not a list of tags"]),
    ({"engine": "skopeo", "tags": ["ok", "no good"]}, "tags[1]", ["is not a valid image tag"]),
    ({"copier_image": ""}, "copier_image", ["is not a container image reference"]),
    ({"init_image": "quay.io/aws:1\n;touch /tmp/x"}, "init_image", ["is not a container image reference"]),
    ({"parallel": 0}, "parallel", ["Expected 1 to 64"]),
]


def _ids() -> list[str]:
    return [f"{param}-{index}" for index, (_, param, _) in enumerate(BAD_INPUTS)]


@pytest.mark.parametrize(("changes", "param", "fragments"), BAD_INPUTS, ids=_ids())
def test_bad_literal_input_fails_at_construction(
    changes: dict[str, Any], param: str, fragments: list[str]
) -> None:
    with pytest.raises(PromotionInputError) as caught:
        EcrPromoteOperator(task_id="promote", **{**VALID, **changes})
    error = caught.value
    assert error.param == param
    message = str(error)
    assert message.startswith(f"{param}=")
    assert repr(error.value)[:40] in message, "the message shows the bad value"
    for fragment in fragments:
        assert fragment in message
    assert "Expected" in message or "Fix:" in message


TEMPLATED_BAD_INPUTS = [case for case in BAD_INPUTS if case[1] != "parallel"]  # not a template field


@pytest.mark.parametrize(
    ("changes", "param", "fragments"),
    TEMPLATED_BAD_INPUTS,
    ids=[f"{param}-{index}" for index, (_, param, _) in enumerate(TEMPLATED_BAD_INPUTS)],
)
def test_bad_templated_input_fails_after_rendering_before_any_pod(
    changes: dict[str, Any], param: str, fragments: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    templated = {key: f"{{{{ params.{key} }}}}" for key in {**VALID, **changes}}
    created: list[object] = []
    monkeypatch.setattr(KubernetesPodOperator, "get_or_create_pod", lambda self, *a, **k: created.append(a))
    try:
        from airflow.sdk import DAG
    except ImportError:
        from airflow import DAG  # type: ignore[assignment,no-redef]
    with DAG("bad_inputs", schedule=None, params={**VALID, **changes}, render_template_as_native_obj=True):
        op = EcrPromoteOperator(task_id="promote", **templated)
    context = make_context(op)
    op.render_template_fields(context)
    with pytest.raises(PromotionInputError) as caught:
        op.execute(context)
    assert caught.value.param == param
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert created == []


def test_valid_references_parse_into_parts() -> None:
    ref = parse_image_ref("source_image", f"{SOURCE_HOST}/team/app:1.0@sha256:{'b' * 64}")
    assert (ref.account, ref.region, ref.repository, ref.tag, ref.digest) == (
        "123456789012",
        "us-west-2",
        "team/app",
        "1.0",
        f"sha256:{'b' * 64}",
    )
    cn = parse_image_ref(
        "dest_image", "210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn/app:1", need_tag=True
    )
    assert (cn.partition, cn.region) == ("aws-cn", "cn-north-1")
    fips = parse_image_ref("x", "210987654321.dkr.ecr-fips.us-gov-west-1.amazonaws.com/app:1")
    assert fips.partition == "aws-us-gov"
    dual = parse_image_ref("x", "210987654321.dkr-ecr.eu-central-1.on.aws/app:1")
    assert dual.region == "eu-central-1"
    role = parse_role_arn("r", "arn:aws-us-gov:iam::123456789012:role/path/to/promote")
    assert role is not None
    assert (role.partition, role.name) == ("aws-us-gov", "path/to/promote")
    assert parse_role_arn("r", None) is None


def test_accounts_and_regions_that_agree_are_accepted_and_tags_expand() -> None:
    promotion = parse_promotion(
        source_image=f"{SOURCE_HOST}/team/app",
        dest_image=f"{DEST_HOST}/prod/app",
        source_account="123456789012",
        dest_region="us-east-1",
        dest_tags=["1.0", "1.1"],
    )
    assert [(str(c.source), str(c.dest)) for c in promotion.copies] == [
        (f"{SOURCE_HOST}/team/app:1.0", f"{DEST_HOST}/prod/app:1.0"),
        (f"{SOURCE_HOST}/team/app:1.1", f"{DEST_HOST}/prod/app:1.1"),
    ]


def test_huge_value_is_shortened_in_the_message() -> None:
    with pytest.raises(PromotionInputError) as caught:
        EcrPromoteOperator(task_id="promote", source_image="x" * 100_000, dest_image=DEST)
    assert len(str(caught.value)) < 600
    assert "100002 chars" in str(caught.value)


EUROPE = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/team/app:1.0"
OTHER_ACCOUNT = "345678901234.dkr.ecr.us-east-1.amazonaws.com/team/app:1.0"
PUSH_B = "arn:aws:iam::210987654321:role/push"
PUSH_C = "arn:aws:iam::345678901234:role/push"

BAD_PAIRS = [
    (
        {"source_image": SOURCE, "promotions": [{"source_image": SOURCE, "dest_image": DEST}]},
        "promotions",
        "cannot be combined",
    ),
    ({"promotions": "x"}, "promotions", "is not a list of mappings"),
    ({"promotions": [{"source_image": SOURCE}]}, "promotions[0]", "with source_image and dest_image"),
    (
        {"promotions": [{"source_image": SOURCE, "dest_image": DEST, "role": "x"}]},
        "promotions[0]",
        "unknown keys",
    ),
    (
        {"promotions": [{"source_image": SOURCE, "dest_image": f"{DEST_HOST}/team/app"}]},
        "promotions[0].dest_image",
        "needs a tag",
    ),
    ({"promotions": [{"source_image": SOURCE, "dest_image": DEST}] * 2}, "promotions", "more than once"),
    (
        {
            "promotions": [
                {"source_image": SOURCE, "dest_image": DEST, "dest_role_arn": PUSH_B},
                {"source_image": SOURCE, "dest_image": f"{DEST_HOST}/other/app:1.0", "dest_role_arn": PUSH_C},
            ],
        },
        "dest_role_arn",
        f"gives dest registry {DEST_HOST} more than one role",
    ),
]


@pytest.mark.parametrize(("kwargs", "param", "fragment"), BAD_PAIRS)
def test_bad_promotion_lists(kwargs: dict[str, Any], param: str, fragment: str) -> None:
    with pytest.raises(PromotionInputError) as caught:
        EcrPromoteOperator(task_id="promote", engine="skopeo", **kwargs)
    assert caught.value.param == param
    assert fragment in str(caught.value)


def test_fan_out_to_two_accounts_logs_in_once_per_registry_and_role() -> None:
    from airflow_ecr_promote.engines import ENGINES
    from airflow_ecr_promote.pod import plan_pod

    promotion = parse_promotion(
        source_role_arn="arn:aws:iam::123456789012:role/pull",
        pairs=[
            {"source_image": SOURCE, "dest_image": DEST, "dest_role_arn": PUSH_B},
            {"source_image": SOURCE, "dest_image": EUROPE, "dest_role_arn": PUSH_B},
            {"source_image": SOURCE, "dest_image": OTHER_ACCOUNT, "dest_role_arn": PUSH_C},
        ],
    )
    plan = plan_pod(promotion, ENGINES["crane"])
    env = {e.name: e.value for e in plan.init_container.env}
    assert env["LOGINS"].splitlines() == [
        f"{SOURCE_HOST} us-west-2 arn:aws:iam::123456789012:role/pull source",
        f"{DEST_HOST} us-east-1 {PUSH_B} dest",
        f"210987654321.dkr.ecr.eu-west-1.amazonaws.com eu-west-1 {PUSH_B} dest",
        f"345678901234.dkr.ecr.us-east-1.amazonaws.com us-east-1 {PUSH_C} dest",
    ]
    copier_env = {e.name: e.value for e in plan.env}
    # the first copy's two repositories are named once; a copy between them is its tag alone
    repos = (copier_env["SOURCE_REPO"], copier_env["DEST_REPO"])
    assert repos == (SOURCE.removesuffix(":1.0"), DEST.removesuffix(":1.0"))
    assert copier_env["COPIES"].splitlines() == [
        "1.0",
        f"{SOURCE} {EUROPE}",
        f"{SOURCE} {OTHER_ACCOUNT}",
    ]
