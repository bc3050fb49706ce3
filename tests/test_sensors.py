"""EcrImageSensor and EcrImageTrigger against a moto_server, through a real Airflow connection."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator
from datetime import timedelta
from typing import Any

import pytest

from airflow_ecr_promote import triggers
from airflow_ecr_promote.compat import AirflowException, TaskDeferred
from airflow_ecr_promote.discovery import EcrRepositoryNotFoundError
from airflow_ecr_promote.refs import PromotionInputError
from airflow_ecr_promote.sensors import EcrImageSensor
from airflow_ecr_promote.triggers import EcrImageTrigger
from tests.airflow_context import make_context
from tests.conftest import SOURCE_HOST
from tests.test_discovery import CONN_ID, connect_airflow_to, ecr_client, new_repository, put


@pytest.fixture
def ecr(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    connect_airflow_to(monkeypatch, moto_server)
    return ecr_client(moto_server)


def sensor(image: str, **kwargs: Any) -> EcrImageSensor:
    kwargs.setdefault("deferrable", False)
    return EcrImageSensor(task_id="wait", image=image, aws_conn_id=CONN_ID, **kwargs)


def moto_digest(ecr: Any, repository: str, tag: str) -> str:
    details = ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])["imageDetails"]
    return str(details[0]["imageDigest"])


# ---------------------------------------------------------------------------------------------
# Sensor
# ---------------------------------------------------------------------------------------------


def test_image_is_checked_at_parse_time_unless_templated() -> None:
    with pytest.raises(PromotionInputError, match=r"^image="):
        EcrImageSensor(task_id="wait", image="docker.io/library/app:1.0")
    EcrImageSensor(task_id="wait", image=f"{SOURCE_HOST}/team/app:{{{{ params.tag }}}}")


def test_deferrable_defaults_to_the_airflow_setting() -> None:
    assert EcrImageSensor(task_id="wait", image=f"{SOURCE_HOST}/team/app:1.0").deferrable is False


@pytest.mark.moto
def test_poke_false_until_the_tag_exists_then_returns_moto_digest(ecr: Any) -> None:
    repository = new_repository(ecr)
    put(ecr, repository, "1.0.0")
    wait = sensor(f"{SOURCE_HOST}/{repository}:1.1.0")
    context = make_context(wait)
    first = wait.poke(context)
    assert not first
    pushed = put(ecr, repository, "1.1.0")
    found = wait.poke(context)
    assert found
    assert found.xcom_value == pushed == moto_digest(ecr, repository, "1.1.0")


@pytest.mark.moto
def test_poke_by_digest_and_by_tag_with_digest(ecr: Any) -> None:
    repository = new_repository(ecr)
    digest = put(ecr, repository, "1.0.0")
    other = put(ecr, repository, "2.0.0")
    base = f"{SOURCE_HOST}/{repository}"
    assert sensor(f"{base}@{digest}").poke({}).xcom_value == digest
    assert sensor(f"{base}:1.0.0@{digest}").poke({}).xcom_value == digest
    assert not sensor(f"{base}:1.0.0@{other}").poke({})  # the tag does not point there (yet)
    assert not sensor(f"{base}@sha256:{'0' * 64}").poke({})


@pytest.mark.moto
def test_execute_in_poke_mode_returns_the_digest(ecr: Any) -> None:
    repository = new_repository(ecr)
    wait = sensor(f"{SOURCE_HOST}/{repository}:1.0.0", poke_interval=0.2, timeout=30)
    pusher = threading.Timer(0.5, put, args=(ecr, repository, "1.0.0"))
    pusher.start()
    try:
        digest = wait.execute(make_context(wait))
    finally:
        pusher.join()
    assert digest == moto_digest(ecr, repository, "1.0.0")


@pytest.mark.moto
def test_missing_repository_fails_fast_with_a_clear_message(ecr: Any) -> None:
    wait = sensor(f"{SOURCE_HOST}/team/nowhere:1.0.0")
    with pytest.raises(EcrRepositoryNotFoundError) as caught:
        wait.poke({})
    message = str(caught.value)
    assert "'team/nowhere' was not found in registry 123456789012, region us-west-2" in message
    assert "ecr:DescribeImages" in message
    # ... unless told to wait for the repository as well.
    assert not sensor(f"{SOURCE_HOST}/team/nowhere:1.0.0", repository_missing_ok=True).poke({})


@pytest.mark.moto
def test_deferrable_execute_returns_at_once_when_present_and_defers_otherwise(ecr: Any) -> None:
    repository = new_repository(ecr)
    digest = put(ecr, repository, "1.0.0")
    present = sensor(f"{SOURCE_HOST}/{repository}:1.0.0", deferrable=True)
    assert present.execute(make_context(present)) == digest

    absent = sensor(
        f"{SOURCE_HOST}/{repository}:2.0.0",
        deferrable=True,
        poke_interval=7,
        timeout=600,
        repository_missing_ok=True,
        region_name="us-west-2",
    )
    with pytest.raises(TaskDeferred) as caught:
        absent.execute(make_context(absent))
    deferred = caught.value
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout == timedelta(seconds=600)
    assert isinstance(deferred.trigger, EcrImageTrigger)
    assert deferred.trigger.serialize()[1] == {
        "image": f"{SOURCE_HOST}/{repository}:2.0.0",
        "aws_conn_id": CONN_ID,
        "region_name": "us-west-2",
        "poke_interval": 7.0,
        "repository_missing_ok": True,
    }


def test_execute_complete_success_and_errors() -> None:
    wait = sensor(f"{SOURCE_HOST}/team/app:1.0.0", deferrable=True)
    digest = "sha256:" + "a" * 64
    assert wait.execute_complete({}, {"status": "success", "image": wait.image, "digest": digest}) == digest
    with pytest.raises(AirflowException, match="AccessDenied"):
        wait.execute_complete(
            {}, {"status": "error", "reason": "aws_error", "message": "checking ...: AccessDenied"}
        )
    with pytest.raises(EcrRepositoryNotFoundError, match="was not found"):
        wait.execute_complete(
            {}, {"status": "error", "reason": "repository_not_found", "message": "... was not found ..."}
        )
    with pytest.raises(AirflowException, match="No event"):
        wait.execute_complete({}, None)


# ---------------------------------------------------------------------------------------------
# Trigger
# ---------------------------------------------------------------------------------------------


def test_trigger_serialize_round_trip() -> None:
    trigger = EcrImageTrigger(
        image=f"{SOURCE_HOST}/team/app:1.0.0",
        aws_conn_id="staging",
        region_name="us-west-2",
        poke_interval=15.0,
        repository_missing_ok=True,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_ecr_promote.triggers.EcrImageTrigger"
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(__import__(module, fromlist=[name]), name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)


async def first_event(trigger: EcrImageTrigger, timeout: float = 30) -> dict[str, Any]:
    events: AsyncGenerator[Any, None] = trigger.run()  # type: ignore[assignment]
    event = await asyncio.wait_for(events.__anext__(), timeout)
    await events.aclose()
    return dict(event.payload)


@pytest.mark.moto
def test_trigger_yields_success_when_the_tag_appears_after_a_first_poll(
    ecr: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    repository = new_repository(ecr)
    image = f"{SOURCE_HOST}/{repository}:1.4.2"
    answers: list[str | None] = []
    real = triggers.find_image_digest

    def recording(*args: Any, **kwargs: Any) -> str | None:
        answer = real(*args, **kwargs)
        answers.append(answer)
        return answer

    monkeypatch.setattr(triggers, "find_image_digest", recording)

    async def push_after_first_poll() -> str:
        while not answers:
            await asyncio.sleep(0.02)
        return await asyncio.to_thread(put, ecr, repository, "1.4.2")

    async def scenario() -> tuple[dict[str, Any], str]:
        trigger = EcrImageTrigger(image=image, aws_conn_id=CONN_ID, poke_interval=0.2)
        async with asyncio.timeout(60):  # a trigger that fails before its first poll must not hang
            event, pushed = await asyncio.gather(first_event(trigger), push_after_first_poll())
        return event, pushed

    event, pushed = asyncio.run(scenario())
    assert answers[0] is None, "the first poll saw no image"
    assert answers[-1] == pushed
    assert event == {"status": "success", "image": image, "digest": pushed}
    assert pushed == moto_digest(ecr, repository, "1.4.2")


@pytest.mark.moto
def test_trigger_yields_an_error_for_a_missing_repository(ecr: Any) -> None:
    image = f"{SOURCE_HOST}/team/nowhere:1.0.0"
    event = asyncio.run(first_event(EcrImageTrigger(image=image, aws_conn_id=CONN_ID, poke_interval=0.1)))
    assert event["status"] == "error"
    assert event["reason"] == "repository_not_found"
    assert "'team/nowhere' was not found" in event["message"]
    # With repository_missing_ok it keeps waiting instead.
    waiting = EcrImageTrigger(image=image, aws_conn_id=CONN_ID, poke_interval=0.1, repository_missing_ok=True)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        asyncio.run(first_event(waiting, timeout=0.5))
    assert time.monotonic() - started >= 0.5


def test_trigger_reports_a_bad_image_as_an_error_event() -> None:
    event = asyncio.run(first_event(EcrImageTrigger(image="not-an-ecr-image", aws_conn_id=CONN_ID)))
    assert event["status"] == "error"
    assert event["reason"] == "bad_input"
    assert event["message"].startswith("image='not-an-ecr-image'")


def test_sensor_and_trigger_flow_through_execute_complete() -> None:
    """The event a trigger yields is what execute_complete accepts."""
    wait = sensor(f"{SOURCE_HOST}/team/app:1.0.0", deferrable=True)
    event = asyncio.run(first_event(EcrImageTrigger(image="bad", aws_conn_id=CONN_ID)))
    with pytest.raises(AirflowException, match="image='bad'"):
        wait.execute_complete({}, event)
