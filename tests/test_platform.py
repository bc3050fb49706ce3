"""The ``platform`` parameter: kaniko builds one platform of a multi-arch source, chosen by the
user (default linux/amd64); skopeo and crane copy every platform and refuse the parameter."""

from __future__ import annotations

import pytest

from airflow_ecr_promote.compat import build_pod_offline
from airflow_ecr_promote.engines import DEFAULT_PLATFORM, ENGINES, parse_platform
from airflow_ecr_promote.operators import EcrPromoteOperator
from airflow_ecr_promote.refs import PromotionInputError
from tests.conftest import DEST_HOST, SOURCE_HOST

SOURCE = f"{SOURCE_HOST}/team/app:1.0.0"
DEST = f"{DEST_HOST}/team/app:1.0.0"


def kaniko_args(**kwargs: object) -> list[str]:
    operator = EcrPromoteOperator(task_id="promote", source_image=SOURCE, dest_image=DEST, **kwargs)
    pod = build_pod_offline(operator)
    return list(pod.spec.containers[0].args)


def test_kaniko_defaults_to_linux_amd64() -> None:
    assert DEFAULT_PLATFORM == "linux/amd64"
    assert "--custom-platform=linux/amd64" in kaniko_args()


@pytest.mark.parametrize("platform", ["linux/arm64", "linux/arm/v7", "linux/amd64"])
def test_kaniko_takes_the_chosen_platform(platform: str) -> None:
    args = kaniko_args(platform=platform)
    assert [a for a in args if a.startswith("--custom-platform")] == [f"--custom-platform={platform}"]


@pytest.mark.parametrize(
    "value", ["linux", "amd64", "linux/amd64 --push", "Linux/AMD64", "linux/amd64/v8/x", "", 7, "linux/$(id)"]
)
def test_bad_platform_is_refused_naming_it(value: object) -> None:
    with pytest.raises(PromotionInputError) as caught:
        parse_platform(ENGINES["kaniko"], value)
    message = str(caught.value)
    assert message.startswith("platform=")
    assert repr(value)[:20] in message
    assert "linux/amd64" in message


@pytest.mark.parametrize("engine", ["skopeo", "crane"])
def test_copying_engines_refuse_a_platform(engine: str) -> None:
    with pytest.raises(PromotionInputError, match="copies every platform") as caught:
        EcrPromoteOperator(
            task_id="promote", source_image=SOURCE, dest_image=DEST, engine=engine, platform="linux/arm64"
        )
    assert str(caught.value).startswith("platform='linux/arm64'")


@pytest.mark.parametrize("engine", ["skopeo", "crane"])
def test_copying_engines_have_no_platform_flag(engine: str) -> None:
    assert parse_platform(ENGINES[engine], None) is None
