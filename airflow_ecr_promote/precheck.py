"""Before any pod: ask the ECR API whether every copy is already promoted.

A re-run of a release or backfill usually finds everything in place. The pod would find that
too (it compares digests before copying), but only after starting and logging in to every
registry. With Airflow AWS connections that can read both sides, the worker compares the
digests ECR reports (``DescribeImages``) and skips the pod when every destination tag already
holds its source's digest. Anything else (absent, different, an API error) goes to the pod,
which decides per copy and per ``on_conflict``.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from airflow_ecr_promote.discovery import ecr_hook
from airflow_ecr_promote.promotion import Promotion
from airflow_ecr_promote.refs import ImageRef
from airflow_ecr_promote.triggers import find_image_digest

log = logging.getLogger(__name__)


def already_promoted(
    promotion: Promotion, *, source_conn_id: str | None, dest_conn_id: str | None
) -> list[str] | None:
    """The digest of every copy when all are already promoted, else None."""
    hooks: dict[tuple[str | None, str], Any] = {}

    def digest(conn_id: str | None, image: ImageRef) -> str | None:
        key = (conn_id, image.region)
        if key not in hooks:
            hooks[key] = ecr_hook(conn_id, image.region)
        return find_image_digest(hooks[key], image, repository_missing_ok=True)

    digests = []
    try:
        for copy in promotion.copies:
            dest = digest(dest_conn_id, copy.dest)
            if dest is None:
                return None
            source = copy.source.digest or digest(source_conn_id, copy.source)
            if source != dest:
                return None
            digests.append(dest)
    except (ClientError, BotoCoreError) as error:
        log.warning("Could not compare digests through the ECR API (%s); the pod will compare them.", error)
        return None
    return digests
