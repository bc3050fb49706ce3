"""Before any pod: ask the ECR API whether every copy is already promoted.

A re-run of a release or backfill usually finds everything in place. The pod would find that
too (it compares digests before copying), but only after starting and logging in to every
registry. With Airflow AWS connections that can read both sides, the worker compares the
digests ECR reports (``DescribeImages``, one call per repository and 100 images) and skips the
pod when every destination tag already holds its source's digest. Anything else (absent,
different, an API error) goes to the pod, which decides per copy and per ``on_conflict``.

After a pod whose full report could not be read (its node gone with its log), the same lookups
confirm the copies whose lines are missing: a destination that holds its source's digest.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from airflow_ecr_promote.discovery import ecr_hook, error_code
from airflow_ecr_promote.promotion import Copy, Promotion
from airflow_ecr_promote.refs import ImageRef

log = logging.getLogger(__name__)

_BATCH = 100  # DescribeImages takes at most 100 image ids


def _image_id(image: ImageRef) -> dict[str, str]:
    return {"imageTag": image.tag} if image.tag else {"imageDigest": str(image.digest)}


def _digests(conn_id: str | None, images: list[ImageRef]) -> dict[ImageRef, str] | None:
    """Each image's digest, or None as soon as one is missing."""
    groups: dict[tuple[str, str, str], list[ImageRef]] = defaultdict(list)
    for image in images:
        groups[(image.account, image.region, image.repository)].append(image)
    found: dict[ImageRef, str] = {}
    hooks: dict[str, Any] = {}
    for (account, region, repository), members in groups.items():
        hook = hooks.setdefault(region, ecr_hook(conn_id, region))
        for start in range(0, len(members), _BATCH):
            chunk = members[start : start + _BATCH]
            try:
                response = hook.conn.describe_images(
                    registryId=account, repositoryName=repository, imageIds=[_image_id(i) for i in chunk]
                )
            except ClientError as error:
                if error_code(error) in ("ImageNotFoundException", "RepositoryNotFoundException"):
                    return None
                raise
            by_tag = {
                tag: d["imageDigest"]
                for d in response.get("imageDetails", [])
                for tag in d.get("imageTags", [])
            }
            by_digest = {d["imageDigest"]: d["imageDigest"] for d in response.get("imageDetails", [])}
            for image in chunk:
                digest = by_tag.get(image.tag) if image.tag else by_digest.get(str(image.digest))
                if digest is None:
                    return None
                found[image] = str(digest)
    return found


def already_promoted(
    promotion: Promotion, *, source_conn_id: str | None, dest_conn_id: str | None
) -> list[str] | None:
    """The digest of every copy when all are already promoted, else None."""
    try:
        dests = _digests(dest_conn_id, [c.dest for c in promotion.copies])
        if dests is None:
            return None
        unpinned = [c.source for c in promotion.copies if not c.source.digest]
        sources = _digests(source_conn_id, unpinned) if unpinned else {}
        if sources is None:
            return None
    except (ClientError, BotoCoreError) as error:
        log.warning("Could not compare digests through the ECR API (%s); the pod will compare them.", error)
        return None
    digests = []
    for copy in promotion.copies:
        source = copy.source.digest or sources[copy.source]
        if dests[copy.dest] != source:
            return None
        digests.append(source)
    return digests


def _digest_each(conn_id: str | None, images: list[ImageRef]) -> dict[ImageRef, str | None]:
    """Each image's digest, None for one ECR does not hold: 100 images a call, and a hundred with
    a missing one asked again one by one."""
    found: dict[ImageRef, str | None] = {}
    for start in range(0, len(images), _BATCH):
        chunk = images[start : start + _BATCH]
        whole = _digests(conn_id, chunk)
        if whole is not None:
            found.update(whole)
            continue
        for image in chunk:
            one = _digests(conn_id, [image])
            found[image] = one[image] if one else None
    return found


def confirm_promoted(
    copies: list[Copy], *, source_conn_id: str | None, dest_conn_id: str | None
) -> list[str | None]:
    """For each copy, its source's digest when ECR shows its destination holding it, else None:
    what confirms a copy whose line of the pod's report could not be read. An API error
    confirms nothing."""
    try:
        dests = _digest_each(dest_conn_id, [c.dest for c in copies])
        unpinned = [c.source for c in copies if not c.source.digest]
        sources = _digest_each(source_conn_id, unpinned) if unpinned else {}
    except (ClientError, BotoCoreError) as error:
        log.warning("Could not read the digests through the ECR API (%s): nothing confirmed.", error)
        return [None] * len(copies)
    confirmed: list[str | None] = []
    for copy in copies:
        source = copy.source.digest or sources.get(copy.source)
        confirmed.append(source if source is not None and dests.get(copy.dest) == source else None)
    return confirmed
