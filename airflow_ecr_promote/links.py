"""The task's extra link to the promoted image in the Amazon ECR console.

Built on the Amazon provider's :class:`BaseAwsLink`: the console domain follows the partition
(``console.aws.amazon.com``, ``console.amazonaws.cn``, ``console.amazonaws-us-gov.com``) and the
link's values are kept in an XCom of the task, written only when the task stores XComs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from airflow.providers.amazon.aws.links.base_aws import BASE_AWS_CONSOLE_LINK, BaseAwsLink

from airflow_ecr_promote.refs import ImageRef

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_ecr_promote.compat import BaseOperator

_REPOSITORY = (
    BASE_AWS_CONSOLE_LINK + "/ecr/repositories/private/{account_id}/{repository}?region={region_name}"
)
_IMAGE = (
    BASE_AWS_CONSOLE_LINK
    + "/ecr/repositories/private/{account_id}/{repository}/_/image/{digest}/details?region={region_name}"
)


class EcrImageLink(BaseAwsLink):
    """``ECR image``: the destination image (by digest) in the ECR console; for a batch, the
    destination repository of its first image."""

    name: ClassVar[str] = "ECR image"
    key: ClassVar[str] = "ecr_promote_image"
    format_str: ClassVar[str] = _IMAGE

    def format_link(self, **kwargs: Any) -> str:
        if not kwargs.get("aws_domain"):
            return ""
        values = {k: quote(str(v), safe="/:") for k, v in kwargs.items()}
        return (_IMAGE if kwargs.get("digest") else _REPOSITORY).format(**values)

    @classmethod
    def persist_image(
        cls, context: Context, operator: BaseOperator, dest: ImageRef, digest: str | None
    ) -> None:
        """Store the link's values for ``dest`` (and its digest, when known)."""
        cls.persist(
            context=context,
            operator=operator,
            region_name=dest.region,
            aws_partition=dest.partition,
            account_id=dest.account,
            repository=dest.repository,
            digest=digest or "",
        )


def link_target(result: Mapping[str, Any] | None) -> tuple[str, str | None] | None:
    """(destination image, digest) the link points at: the image of a single promotion, the
    repository of a batch's first destination (no digest)."""
    if not result:
        return None
    if "promotions" in result:
        first = result["promotions"][0] if result["promotions"] else None
        return (first["dest_image"], None) if first else None
    return result["dest_image"], result.get("digest")
