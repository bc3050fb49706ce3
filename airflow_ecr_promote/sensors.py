"""EcrImageSensor: wait until an image (tag or digest) exists in an ECR repository.

The sensor returns the image's digest, so a downstream promotion can copy exactly the image
that was found: ``source_image=".../team/app@{{ ti.xcom_pull(task_ids='wait') }}"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_ecr_promote.compat import AirflowException, BaseSensorOperator, PokeReturnValue, conf
from airflow_ecr_promote.discovery import EcrRepositoryNotFoundError, ecr_hook
from airflow_ecr_promote.refs import ImageRef, parse_image_ref
from airflow_ecr_promote.triggers import EcrImageTrigger, find_image_digest

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["EcrImageSensor"]

_TEMPLATE_MARKERS = ("{{", "{%")


class EcrImageSensor(BaseSensorOperator):
    """Wait until ``image`` exists in Amazon ECR; returns (XCom) its digest.

    :param image: ``<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>`` (or ``@sha256:...``,
        or both: then the tag must point to that digest)
    :param aws_conn_id: the Airflow AWS connection; its extras (``role_arn``, ...) decide which
        role reads the registry
    :param region_name: the region to call; None: the region of ``image``
    :param repository_missing_ok: wait while the repository itself does not exist, instead of
        failing at once with :class:`~airflow_ecr_promote.discovery.EcrRepositoryNotFoundError`
    :param deferrable: wait in the triggerer (:class:`~airflow_ecr_promote.triggers.EcrImageTrigger`)
        instead of a worker slot; defaults to ``[operators] default_deferrable``
    """

    template_fields: Sequence[str] = ("image", "aws_conn_id", "region_name")
    ui_color = "#e4f0ff"

    def __init__(
        self,
        *,
        image: str,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        repository_missing_ok: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.image = image
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.repository_missing_ok = repository_missing_ok
        self.deferrable = deferrable
        if isinstance(image, str) and not any(marker in image for marker in _TEMPLATE_MARKERS):
            parse_image_ref("image", image)

    def _ref(self) -> ImageRef:
        return parse_image_ref("image", self.image)

    def _digest(self) -> str | None:
        ref = self._ref()
        hook = ecr_hook(self.aws_conn_id, self.region_name or ref.region)
        return find_image_digest(hook, ref, repository_missing_ok=self.repository_missing_ok)

    def poke(self, context: Context) -> PokeReturnValue:
        self.log.info("Checking that %s exists", self.image)
        digest = self._digest()
        if digest is None:
            return PokeReturnValue(is_done=False)
        self.log.info("%s exists: %s", self.image, digest)
        return PokeReturnValue(is_done=True, xcom_value=digest)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        # One check here first: an image that is already there needs no trip to the triggerer.
        digest = self._digest()
        if digest is not None:
            self.log.info("%s exists: %s", self.image, digest)
            return digest
        self.defer(
            trigger=EcrImageTrigger(
                image=self.image,
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
                poke_interval=float(self.poke_interval),
                repository_missing_ok=self.repository_missing_ok,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout)),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        if not event:
            raise AirflowException(f"No event came back from the trigger waiting for {self.image}")
        if event.get("status") == "success" and event.get("digest"):
            self.log.info("%s exists: %s", event.get("image", self.image), event["digest"])
            return str(event["digest"])
        message = str(event.get("message") or event)
        if event.get("reason") == "repository_not_found":
            raise EcrRepositoryNotFoundError(message)
        raise AirflowException(f"Waiting for {self.image} failed: {message}")
