"""ECR's image scan findings, read and judged: the pure half of the scan-findings gate.

A release team promotes only what ECR's scan let through. ECR answers ``DescribeImageScanFindings``
in two shapes: basic scanning lists ``findings`` (``name`` is the CVE id, ``severity`` one of
``INFORMATIONAL LOW MEDIUM HIGH CRITICAL UNDEFINED``), enhanced scanning (Amazon Inspector) lists
``enhancedFindings`` (the CVE id is ``packageVulnerabilityDetails.vulnerabilityId``, ``title`` names
it and the package, and the severity may also be ``UNTRIAGED``). Both carry
``findingSeverityCounts``, the counts of the whole image, across every page.

The gate judges what it reads, failing closed:

- a finding at ``max_severity`` or worse refuses the image, unless its id is in ``ignore_findings``;
- a finding whose severity ECR does not know (``UNDEFINED``, Inspector's ``UNTRIAGED``, or any
  other value) cannot be shown to be below the threshold, so it refuses too, unless ignored;
- when ``findingSeverityCounts`` counts more findings of a severity than the pages listed, the
  unlisted ones count against the image (they have no id, so no ignore can match them);
- a scan that did not complete (``FAILED``, ``UNSUPPORTED_IMAGE``, ``FINDINGS_UNAVAILABLE``...,
  still ``IN_PROGRESS`` after ``scan_wait``, or no scan at all) refuses, saying which.

Everything here is pure; the ECR calls are in :mod:`airflow_ecr_promote.scan_api`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COMPLETE_STATUSES",
    "SEVERITIES",
    "UNKNOWN_SEVERITY",
    "WAIT_STATUSES",
    "Finding",
    "ScanReport",
    "Verdict",
    "describe_refusal",
    "judge",
    "parse_page",
    "report_from_pages",
]

# ECR's severities, least to most severe: what max_severity may name
SEVERITIES = ("INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL")
UNKNOWN_SEVERITY = "UNDEFINED"  # basic scanning's; Inspector's UNTRIAGED is counted under it
# a scan whose findings can be judged (ACTIVE: enhanced scanning, continuously scanned)
COMPLETE_STATUSES = ("COMPLETE", "ACTIVE")
# a scan still running: the gate waits for it, up to scan_wait
WAIT_STATUSES = ("IN_PROGRESS", "PENDING")
NO_SCAN = "NO_SCAN"  # the status the gate reports for an image ECR has no scan of
FIRST_NAMED = 5  # findings named in a refusal, worst first


@dataclass(frozen=True)
class Finding:
    """One finding: its id (a CVE id, or the title when there is none) and its severity."""

    name: str
    severity: str


@dataclass(frozen=True)
class ScanReport:
    """What ECR says of one image's scan: its status (with ECR's description) and, when it
    completed, the findings listed over all pages and the counts ECR gives for the whole image;
    the digest of the image ECR answered for (None: not said)."""

    status: str
    description: str = ""
    findings: tuple[Finding, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)
    digest: str | None = None


@dataclass(frozen=True)
class Verdict:
    """The gate's judgement of one image: the counts it judged (ignored findings left out), the
    findings that refuse it (worst first), and why it is refused (None: it passes)."""

    status: str
    counts: dict[str, int]
    refusing: tuple[Finding, ...]
    refused: str | None
    ignored: tuple[str, ...] = ()
    digest: str | None = None  # the image judged: what the pod copies, so a moved tag is not

    @property
    def passed(self) -> bool:
        return self.refused is None

    def as_result(self) -> dict[str, Any]:
        """The return value's ``scan`` field of one image."""
        shown: dict[str, Any] = {"status": self.status, "counts": self.counts, "passed": self.passed}
        if self.ignored:
            shown["ignored"] = list(self.ignored)
        if self.refused:
            shown["refused"] = self.refused
        return shown


def _severity(value: object) -> str:
    text = str(value or "").upper()
    return text if text in SEVERITIES else UNKNOWN_SEVERITY


def _rank(severity: str) -> int:
    """Higher is worse; an unknown severity ranks above CRITICAL (it cannot be shown lower)."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def _enhanced_name(finding: Mapping[str, Any]) -> str:
    details = finding.get("packageVulnerabilityDetails") or {}
    return str(details.get("vulnerabilityId") or finding.get("title") or finding.get("findingArn") or "?")


def parse_page(page: Mapping[str, Any]) -> tuple[list[Finding], dict[str, int]]:
    """One DescribeImageScanFindings answer's findings (basic and enhanced shapes) and counts.

    Inspector's findings it marks ``SUPPRESSED`` or ``CLOSED`` are not listed (a suppression rule
    decided them); every other finding is.
    """
    scanned = page.get("imageScanFindings") or {}
    found = [
        Finding(str(f.get("name") or "?"), _severity(f.get("severity")))
        for f in scanned.get("findings") or []
    ]
    for finding in scanned.get("enhancedFindings") or []:
        if str(finding.get("status") or "ACTIVE").upper() in ("SUPPRESSED", "CLOSED"):
            continue
        found.append(Finding(_enhanced_name(finding), _severity(finding.get("severity"))))
    counts: dict[str, int] = {}
    for severity, count in (scanned.get("findingSeverityCounts") or {}).items():
        key = _severity(severity)
        counts[key] = counts.get(key, 0) + int(count)
    return found, counts


def report_from_pages(pages: Iterable[Mapping[str, Any]]) -> ScanReport:
    """The report of an image from every page of its DescribeImageScanFindings answers (the first
    page's status; the counts of the whole image, which every page repeats)."""
    status, description, digest = NO_SCAN, "", None
    findings: list[Finding] = []
    counts: dict[str, int] = {}
    for number, page in enumerate(pages):
        page_findings, page_counts = parse_page(page)
        findings.extend(page_findings)
        if number == 0:
            scan_status = page.get("imageScanStatus") or {}
            status = str(scan_status.get("status") or NO_SCAN)
            description = str(scan_status.get("description") or "")
            digest = (page.get("imageId") or {}).get("imageDigest") or None
            counts = page_counts
    return ScanReport(status, description, tuple(findings), counts, digest)


def judge(report: ScanReport, max_severity: str, ignore: Iterable[str] = ()) -> Verdict:
    """Whether ``report`` lets its image through a gate refusing ``max_severity`` and worse.

    The counts judged are the listed findings without the ignored ones, plus, per severity, the
    findings ECR counts but did not list (fail closed: they cannot be ignored by id).
    """
    if report.status not in COMPLETE_STATUSES:
        return Verdict(report.status, {}, (), _incomplete(report), digest=report.digest)
    ignored_ids = {i.upper() for i in ignore}
    kept = [f for f in report.findings if f.name.upper() not in ignored_ids]
    listed: dict[str, int] = {}
    for finding in report.findings:
        listed[finding.severity] = listed.get(finding.severity, 0) + 1
    counts: dict[str, int] = {}
    for finding in kept:
        counts[finding.severity] = counts.get(finding.severity, 0) + 1
    unlisted: dict[str, int] = {}
    for severity, count in report.counts.items():
        extra = count - listed.get(severity, 0)
        if extra > 0:
            unlisted[severity] = extra
            counts[severity] = counts.get(severity, 0) + extra
    counts = {s: counts[s] for s in sorted(counts, key=_rank, reverse=True) if counts[s]}
    threshold = _rank(max_severity)
    refusing = tuple(
        sorted((f for f in kept if _rank(f.severity) >= threshold), key=lambda f: -_rank(f.severity))
    )
    over = {s: n for s, n in counts.items() if _rank(s) >= threshold}
    ignored = tuple(sorted({f.name for f in report.findings} - {f.name for f in kept}))
    if not over:
        return Verdict(report.status, counts, (), None, ignored, report.digest)
    refused = _over(over, refusing, unlisted, max_severity)
    return Verdict(report.status, counts, refusing, refused, ignored, report.digest)


def _over(
    over: dict[str, int], refusing: tuple[Finding, ...], unlisted: dict[str, int], max_severity: str
) -> str:
    shown = ", ".join(f"{n} {s}" for s, n in over.items())
    text = f"{shown} (max_severity={max_severity!r} refuses {max_severity} and worse"
    if UNKNOWN_SEVERITY in over:
        text += f"; {UNKNOWN_SEVERITY} findings have no known severity, so they refuse too"
    text += ")"
    if refusing:
        names = ", ".join(f"{f.name} ({f.severity})" for f in refusing[:FIRST_NAMED])
        more = f" and {len(refusing) - FIRST_NAMED} more" if len(refusing) > FIRST_NAMED else ""
        text += f": {names}{more}"
    hidden = sum(n for s, n in unlisted.items() if s in over)
    if hidden:
        text += f"; {hidden} counted by ECR but not listed, so they cannot be ignored"
    return text


def _incomplete(report: ScanReport) -> str:
    """Why an image whose scan did not complete is refused."""
    said = f" ({report.description})" if report.description else ""
    if report.status == NO_SCAN:
        return "ECR has no scan of this image, and none could be started" + said
    if report.status in WAIT_STATUSES:
        return f"its scan is still {report.status} after scan_wait{said}; raise scan_wait or re-run later"
    return f"its scan is {report.status}{said}, so its findings are unknown"


def describe_refusal(verdict: Verdict) -> str:
    """Why the gate refused an image, in one line: the scan's status, the counts judged, and why."""
    if verdict.status not in COMPLETE_STATUSES:
        return f"refused by the scan gate: {verdict.refused}"
    counts = ", ".join(f"{n} {s}" for s, n in verdict.counts.items()) or "no findings"
    return (
        f"refused by the scan gate: scan {verdict.status}, findings {counts}; refused for {verdict.refused}"
    )
