"""EcrImageTrigger: the deferred half of :class:`~airflow_ecr_promote.sensors.EcrImageSensor`.

It runs in the triggerer, polls ``describe_images`` every ``poke_interval`` seconds (the
blocking boto3 call runs in a thread, so the triggerer's event loop never waits on AWS) and
yields one event: ``{"status": "success", "image", "digest"}`` once the image exists, or
``{"status": "error", "image", "reason", "message"}`` on an error that waiting will not cure
(``reason``: ``"repository_not_found"``, ``"aws_error"`` or ``"bad_input"``). The task's
own ``timeout`` (given to ``defer``) bounds the wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.amazon.aws.hooks.ecr import EcrHook
from airflow.triggers.base import BaseTrigger, TriggerEvent
from botocore.exceptions import ClientError

from airflow_ecr_promote.discovery import (
    EcrRepositoryNotFoundError,
    ecr_hook,
    error_code,
    repository_not_found_message,
)
from airflow_ecr_promote.refs import ImageRef, parse_image_ref

__all__ = ["EcrImageTrigger", "find_image_digest"]


def find_image_digest(hook: EcrHook, image: ImageRef, *, repository_missing_ok: bool = False) -> str | None:
    """The digest of ``image`` (by tag, digest, or both) in its registry, or None while absent.

    :raises EcrRepositoryNotFoundError: the repository does not exist, unless
        ``repository_missing_ok`` (then it counts as the image being absent)
    """
    image_id = {}
    if image.tag:
        image_id["imageTag"] = image.tag
    if image.digest:
        image_id["imageDigest"] = image.digest
    try:
        response = hook.conn.describe_images(
            registryId=image.account, repositoryName=image.repository, imageIds=[image_id]
        )
    except ClientError as error:
        code = error_code(error)
        if code == "ImageNotFoundException":
            return None
        if code == "RepositoryNotFoundException":
            if repository_missing_ok:
                return None
            raise EcrRepositoryNotFoundError(
                repository_not_found_message(image.repository, image.account, image.region)
            ) from error
        raise
    details = response.get("imageDetails") or []
    return str(details[0]["imageDigest"]) if details else None


def _event(**payload: str) -> TriggerEvent:
    return TriggerEvent(payload)  # type: ignore[no-untyped-call]


class EcrImageTrigger(BaseTrigger):
    """Wait in the triggerer until ``image`` exists in ECR.

    :param image: a full ECR reference with a tag and/or digest
    :param aws_conn_id: the Airflow AWS connection (its extras may name a ``role_arn``)
    :param region_name: the region to call; None: the image's region
    :param poke_interval: seconds between two ``describe_images`` calls
    :param repository_missing_ok: a missing repository counts as the image being absent
    """

    def __init__(
        self,
        *,
        image: str,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        poke_interval: float = 60.0,
        repository_missing_ok: bool = False,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.image = image
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.poke_interval = poke_interval
        self.repository_missing_ok = repository_missing_ok

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "image": self.image,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
                "poke_interval": self.poke_interval,
                "repository_missing_ok": self.repository_missing_ok,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            ref = parse_image_ref("image", self.image)
            hook = ecr_hook(self.aws_conn_id, self.region_name or ref.region)
        except Exception as error:
            yield _event(status="error", image=self.image, reason="bad_input", message=str(error))
            return
        attempt = 0
        while True:
            attempt += 1
            try:
                digest = await asyncio.to_thread(
                    find_image_digest, hook, ref, repository_missing_ok=self.repository_missing_ok
                )
            except EcrRepositoryNotFoundError as error:
                self.log.error("%s", error)
                yield _event(
                    status="error", image=self.image, reason="repository_not_found", message=str(error)
                )
                return
            except Exception as error:
                self.log.error("Checking %s failed: %s", self.image, error)
                message = f"checking {self.image} failed: {type(error).__name__}: {error}"
                yield _event(status="error", image=self.image, reason="aws_error", message=message)
                return
            if digest:
                self.log.info("%s exists: %s", self.image, digest)
                yield _event(status="success", image=self.image, digest=digest)
                return
            self.log.info(
                "%s not there yet (check %d); next check in %s s", self.image, attempt, self.poke_interval
            )
            await asyncio.sleep(self.poke_interval)
