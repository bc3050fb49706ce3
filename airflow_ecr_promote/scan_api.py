"""The scan-findings gate's ECR calls, on the worker, through the Amazon provider's EcrHook with the
source's Airflow AWS connection, before any pod.

Per repository, one ``DescribeImages`` call per 100 images reads each image's scan status and
severity counts (``imageScanFindingsSummary``): an image whose scan completed with nothing at
``max_severity`` or worse passes on that alone. Only the others cost calls of their own:

- findings at or over the threshold: ``DescribeImageScanFindings``, every page (up to 1,000
  findings a page), for their names and for ``ignore_findings``;
- no scan: ``StartImageScan`` (at once when DescribeImages showed none), then
  ``DescribeImageScanFindings`` until the scan completes;
- a scan ``IN_PROGRESS`` (or ``PENDING``): ``DescribeImageScanFindings`` every 1, 2, 4, 8, then
  15 s, until it completes or ``scan_wait`` has passed (one deadline for the whole gate).

An API error for an image (access denied, throttled past botocore's retries, no such image) is
that image's refusal, with AWS's words: the gate never lets an image through unjudged. The
summaries, then the images' own reads, run a few at once (:func:`precheck.run_calls`).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from airflow_ecr_promote.discovery import ecr_hook, error_code
from airflow_ecr_promote.findings import (
    COMPLETE_STATUSES,
    NO_SCAN,
    WAIT_STATUSES,
    ScanReport,
    Verdict,
    judge,
    report_from_pages,
)
from airflow_ecr_promote.precheck import run_calls
from airflow_ecr_promote.refs import ImageRef
from airflow_ecr_promote.scan_gate import ScanGate

__all__ = ["judge_images", "read_scan", "summaries"]

log = logging.getLogger(__name__)

BATCH = 100  # DescribeImages takes at most 100 image ids
PAGE = 1000  # DescribeImageScanFindings' largest page
API_ERROR = "API_ERROR"  # the status of an image the API could not report on
POLL = (1.0, 2.0, 4.0, 8.0, 15.0)  # seconds between reads of a running scan; then 15 s each


def _image_id(image: ImageRef) -> dict[str, str]:
    """A pinned image is judged by its digest, which is what is copied."""
    return {"imageDigest": image.digest} if image.digest else {"imageTag": str(image.tag)}


def _failed(error: Exception) -> ScanReport:
    if isinstance(error, ClientError):
        message = str(error.response.get("Error", {}).get("Message", ""))
        return ScanReport(API_ERROR, f"{error_code(error)}: {message}"[:500])
    return ScanReport(API_ERROR, f"{type(error).__name__}: {error}"[:500])


def _summary(detail: dict[str, Any]) -> ScanReport:
    """An image's report from its DescribeImages detail: status and counts, no findings."""
    return report_from_pages(
        [
            {
                "imageId": {"imageDigest": detail.get("imageDigest")},
                "imageScanStatus": detail.get("imageScanStatus") or {},
                "imageScanFindings": {
                    "findingSeverityCounts": (detail.get("imageScanFindingsSummary") or {}).get(
                        "findingSeverityCounts"
                    )
                    or {}
                },
            }
        ]
    )


def summaries(
    conn: Any, account: str, repository: str, images: list[ImageRef]
) -> dict[ImageRef, ScanReport | None]:
    """Each image's scan summary from one DescribeImages call (at most 100 images); None for all
    of them when one is missing (the call then fails whole; each is then read on its own)."""
    try:
        response = conn.describe_images(
            registryId=account, repositoryName=repository, imageIds=[_image_id(i) for i in images]
        )
    except ClientError as error:
        if error_code(error) in ("ImageNotFoundException", "RepositoryNotFoundException"):
            return dict.fromkeys(images)
        raise
    by_tag: dict[str, dict[str, Any]] = {}
    by_digest: dict[str, dict[str, Any]] = {}
    for detail in response.get("imageDetails", []):
        by_digest[str(detail.get("imageDigest"))] = detail
        for tag in detail.get("imageTags") or []:
            by_tag[str(tag)] = detail
    found: dict[ImageRef, ScanReport | None] = {}
    for image in images:
        detail = by_digest.get(str(image.digest)) if image.digest else by_tag.get(str(image.tag))
        found[image] = _summary(detail) if detail is not None else None
    return found


def _pages(conn: Any, image: ImageRef) -> list[dict[str, Any]]:
    """Every page of the image's findings; only the first while its scan has not completed."""
    params: dict[str, Any] = {
        "registryId": image.account,
        "repositoryName": image.repository,
        "imageId": _image_id(image),
        "maxResults": PAGE,
    }
    pages = [conn.describe_image_scan_findings(**params)]
    status = str((pages[0].get("imageScanStatus") or {}).get("status"))
    while status in COMPLETE_STATUSES and pages[-1].get("nextToken"):
        pages.append(conn.describe_image_scan_findings(**params, nextToken=pages[-1]["nextToken"]))
    return pages


def read_scan(
    conn: Any,
    image: ImageRef,
    deadline: float,
    *,
    start_first: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ScanReport:
    """The image's scan as ECR reports it: started when there is none (at once with
    ``start_first``, when DescribeImages showed none), waited for (until ``deadline``, on
    ``clock``) while it runs, every page read once it completed."""
    started = False
    polls = iter(POLL)
    while True:
        try:
            if start_first and not started:
                raise ClientError({"Error": {"Code": "ScanNotFoundException"}}, "DescribeImages")
            report = report_from_pages(_pages(conn, image))
        except ClientError as error:
            if error_code(error) != "ScanNotFoundException":
                return _failed(error)
            if not started:
                started = True
                try:
                    conn.start_image_scan(
                        registryId=image.account, repositoryName=image.repository, imageId=_image_id(image)
                    )
                    log.info("ECR has no scan of %s: started one (StartImageScan)", image)
                    continue
                except ClientError as refused:
                    if start_first and error_code(refused) == "LimitExceededException":
                        continue  # a scan was started since DescribeImages answered: read it
                    # enhanced scanning, an unsupported image, no permission
                    code = error_code(refused)
                    message = str(refused.response.get("Error", {}).get("Message", ""))
                    return ScanReport(NO_SCAN, f"StartImageScan: {code}: {message}"[:500])
            report = ScanReport("IN_PROGRESS", "started; ECR does not report it yet")
        except BotoCoreError as error:
            return _failed(error)
        if report.status not in WAIT_STATUSES or clock() >= deadline:
            return report
        sleep(max(0.0, min(next(polls, POLL[-1]), deadline - clock())))


def _summaries(
    conn: Any, account: str, repository: str, images: list[ImageRef]
) -> dict[ImageRef, ScanReport | None]:
    try:
        return summaries(conn, account, repository, images)
    except (ClientError, BotoCoreError) as error:
        log.warning("DescribeImages failed for %s (%s); reading each image's findings", repository, error)
        return dict.fromkeys(images)


def _read_and_judge(
    conn: Any, image: ImageRef, gate: ScanGate, deadline: float, start_first: bool
) -> dict[ImageRef, Verdict]:
    report = read_scan(conn, image, deadline, start_first=start_first)
    return {image: judge(report, gate.max_severity, gate.ignore)}


def judge_images(
    conn_id: str | None,
    images: Iterable[ImageRef],
    gate: ScanGate,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> dict[ImageRef, Verdict]:
    """Each image's verdict: every repository's images summarized 100 per DescribeImages call,
    then the images the summary cannot pass read one by one; a few calls at once."""
    deadline = clock() + gate.wait
    groups: dict[tuple[str, str, str], list[ImageRef]] = defaultdict(list)
    for image in dict.fromkeys(images):
        groups[(image.account, image.region, image.repository)].append(image)
    clients: dict[str, Any] = {}
    calls: list[Callable[[], dict[ImageRef, Any]]] = []
    for (account, region, repository), members in groups.items():
        if region not in clients:  # made in this thread, which reads the Airflow connection
            clients[region] = ecr_hook(conn_id, region).conn
        for start in range(0, len(members), BATCH):
            calls.append(
                partial(_summaries, clients[region], account, repository, members[start : start + BATCH])
            )
    seen: dict[ImageRef, ScanReport | None] = run_calls(calls)
    verdicts: dict[ImageRef, Verdict] = {}
    reads: list[Callable[[], dict[ImageRef, Any]]] = []
    for image, summary in seen.items():
        if summary is not None and summary.status in COMPLETE_STATUSES:
            verdict = judge(summary, gate.max_severity, gate.ignore)
            if verdict.passed:  # nothing at the threshold or worse: no findings to name or ignore
                verdicts[image] = verdict
                continue
        start_first = summary is not None and summary.status == NO_SCAN
        reads.append(partial(_read_and_judge, clients[image.region], image, gate, deadline, start_first))
    verdicts.update(run_calls(reads))
    return verdicts
