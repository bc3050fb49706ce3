"""The scan-findings gate's settings: ``max_severity``, ``ignore_findings``, ``scan_wait``,
``on_findings``, parsed once into a :class:`ScanGate` before any ECR call or pod.

Failing closed starts here: a gate whose severity is empty, blank or not one of ECR's is refused
with the parameter named, never read as "no gate"; only ``max_severity=None`` turns it off, and
then the other three must be left unset, so that a gate cannot be half-configured by accident.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_ecr_promote.findings import SEVERITIES, UNKNOWN_SEVERITY, Verdict, describe_refusal
from airflow_ecr_promote.promotion import Copy
from airflow_ecr_promote.refs import ImageRef, PromotionInputError
from airflow_ecr_promote.result import refused_entry

__all__ = [
    "DEFAULT_SCAN_WAIT",
    "MAX_SCAN_WAIT",
    "ON_FINDINGS_CHOICES",
    "ScanGate",
    "parse_scan_gate",
    "pin_judged",
    "refused_copies",
    "with_scan",
]

ON_FINDINGS_CHOICES = ("fail", "skip")
DEFAULT_SCAN_WAIT = 300  # seconds: ECR's basic scan of an image usually completes within minutes
MAX_SCAN_WAIT = 3600  # the worker's slot is held while waiting
# a vulnerability id: CVE-2024-3094, GHSA-xxxx-xxxx-xxxx, ALAS2-2024-2470, RHSA-2024:1234, ...
_FINDING_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", re.ASCII)


@dataclass(frozen=True)
class ScanGate:
    """A gate refusing images with a finding of ``max_severity`` or worse (or of unknown
    severity), the findings in ``ignore`` aside; waiting up to ``wait`` seconds for a scan; a
    refused image fails the task (``on_findings="fail"``) or is skipped (``"skip"``)."""

    max_severity: str
    ignore: tuple[str, ...] = ()
    wait: float = DEFAULT_SCAN_WAIT
    on_findings: str = "fail"


def _severity(value: object) -> str:
    expected = (
        f"Expected one of {', '.join(map(repr, SEVERITIES))} (a finding of that severity or worse "
        f"refuses the image; {UNKNOWN_SEVERITY} findings always do), or None for no scan gate"
    )
    if not isinstance(value, str):
        raise PromotionInputError(
            "max_severity", value, f"must be a string, not {type(value).__name__}", expected
        )
    if not value.strip():
        raise PromotionInputError(
            "max_severity", value, "is empty: the scan gate refuses rather than guess a severity", expected
        )
    if value.strip().upper() not in SEVERITIES:
        raise PromotionInputError("max_severity", value, "is not one of ECR's finding severities", expected)
    return value.strip().upper()


def _ignore(value: object) -> tuple[str, ...]:
    expected = (
        "Expected a list of vulnerability ids such as ['CVE-2024-3094', 'GHSA-jfh8-c2jp-5v3q'], or one "
        "string of ids separated by commas or spaces"
    )
    if value is None:
        return ()
    if isinstance(value, str):
        items: Sequence[object] = [p for p in re.split(r"[\s,]+", value) if p]
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise PromotionInputError("ignore_findings", value, "is not a list of vulnerability ids", expected)
    for index, item in enumerate(items):
        if not isinstance(item, str) or not _FINDING_ID.fullmatch(item):
            raise PromotionInputError(
                f"ignore_findings[{index}]", item, "is not a vulnerability id", expected
            )
    return tuple(dict.fromkeys(str(i) for i in items))


def _wait(value: object) -> float:
    expected = f"Expected seconds from 0 to {MAX_SCAN_WAIT}, e.g. 300 (0: do not wait for a running scan)"
    if isinstance(value, str) and re.fullmatch(r"\d{1,6}", value.strip()):
        value = int(value.strip())  # a rendered template
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise PromotionInputError("scan_wait", value, "is not a number of seconds", expected)
    if not 0 <= value <= MAX_SCAN_WAIT:
        raise PromotionInputError("scan_wait", value, "is out of range", expected)
    return float(value)


def _on_findings(value: object) -> str:
    if value not in ON_FINDINGS_CHOICES:
        raise PromotionInputError(
            "on_findings",
            value,
            "is not a known choice",
            "Expected 'fail' (a refused image fails the task; the others of a batch are promoted) "
            "or 'skip' (a refused image is skipped and listed; the task succeeds)",
        )
    return str(value)


def parse_scan_gate(
    max_severity: object,
    ignore_findings: object = None,
    scan_wait: object = None,
    on_findings: object = None,
    *,
    aws_conn_id: str | None = None,
) -> ScanGate | None:
    """The gate the operator's inputs ask for (None: no gate); raises PromotionInputError.

    ``aws_conn_id`` is the connection the gate reads the findings with (the source's): a gate
    without one could read nothing, so it is refused.
    """
    if max_severity is None:
        for param, value in (
            ("ignore_findings", ignore_findings),
            ("scan_wait", scan_wait),
            ("on_findings", on_findings),
        ):
            if value is not None:
                raise PromotionInputError(
                    param,
                    value,
                    "has no effect without max_severity",
                    "Expected max_severity too (e.g. 'HIGH'), or leave it unset",
                )
        return None
    gate = ScanGate(
        _severity(max_severity),
        _ignore(ignore_findings),
        DEFAULT_SCAN_WAIT if scan_wait is None else _wait(scan_wait),
        "fail" if on_findings is None else _on_findings(on_findings),
    )
    if not aws_conn_id:
        raise PromotionInputError(
            "max_severity",
            max_severity,
            "needs an Airflow AWS connection that reads the source's scan findings",
            "Expected source_aws_conn_id (or dest_aws_conn_id, its default) naming a connection allowed "
            "the scan-gate policy (README: IAM)",
        )
    return gate


def refused_copies(
    copies: Sequence[Copy], verdicts: Mapping[ImageRef, Verdict], gate: ScanGate
) -> dict[int, dict[str, Any]]:
    """The entries of the copies whose source the gate refused (index: entry): ``skipped`` with
    ``on_findings="skip"``, else ``failed``; nothing of them is written."""
    status = "skipped" if gate.on_findings == "skip" else "failed"
    return {
        index: refused_entry(copy, status, describe_refusal(verdicts[copy.source]))
        for index, copy in enumerate(copies)
        if copy.source in verdicts and not verdicts[copy.source].passed
    }


def pin_judged(copy: Copy, verdicts: Mapping[ImageRef, Verdict]) -> Copy:
    """``copy`` with its source pinned to the digest the gate judged, when it was named by tag."""
    verdict = verdicts.get(copy.source)
    if verdict is None or not verdict.passed or not verdict.digest or copy.source.digest:
        return copy
    return dataclasses.replace(copy, source=dataclasses.replace(copy.source, digest=verdict.digest))


def with_scan(
    entries: list[dict[str, Any]], copies: Sequence[Copy], verdicts: Mapping[ImageRef, Verdict]
) -> list[dict[str, Any]]:
    """``entries`` with the findings counts the gate judged for each copy's source (``scan``), each
    source shown as it was given (the pod copied a pinned one, ``repo:tag@sha256:...``)."""
    return [
        {**entry, "source_image": str(copy.source), "scan": verdicts[copy.source].as_result()}
        if copy.source in verdicts
        else entry
        for entry, copy in zip(entries, copies, strict=True)
    ]
