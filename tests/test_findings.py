"""Reading and judging ECR's scan findings (airflow_ecr_promote/findings.py): pure, no AWS."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_ecr_promote.findings import (
    Finding,
    ScanReport,
    describe_refusal,
    judge,
    parse_page,
    report_from_pages,
)


def basic_page(
    *findings: tuple[str, str], counts: dict[str, int] | None = None, **extra: Any
) -> dict[str, Any]:
    listed = [{"name": n, "severity": s, "uri": "https://nvd.nist.gov"} for n, s in findings]
    tally: dict[str, int] = {}
    for _, severity in findings:
        tally[severity] = tally.get(severity, 0) + 1
    return {
        "imageScanStatus": {"status": "COMPLETE", "description": "The scan was completed successfully."},
        "imageScanFindings": {
            "findings": listed,
            "findingSeverityCounts": counts if counts is not None else tally,
        },
        **extra,
    }


def enhanced_finding(cve: str, severity: str, status: str = "ACTIVE") -> dict[str, Any]:
    return {
        "packageVulnerabilityDetails": {"vulnerabilityId": cve, "vulnerablePackages": [{"name": "openssl"}]},
        "severity": severity,
        "status": status,
        "title": f"{cve} - openssl",
    }


def test_basic_and_enhanced_shapes_give_the_same_findings() -> None:
    basic, _ = parse_page(basic_page(("CVE-2024-1", "CRITICAL"), ("CVE-2024-2", "LOW")))
    enhanced_page = {
        "imageScanStatus": {"status": "ACTIVE"},
        "imageScanFindings": {
            "enhancedFindings": [
                enhanced_finding("CVE-2024-1", "CRITICAL"),
                enhanced_finding("CVE-2024-2", "LOW"),
            ],
            "findingSeverityCounts": {"CRITICAL": 1, "LOW": 1},
        },
    }
    enhanced, counts = parse_page(enhanced_page)
    assert basic == enhanced == [Finding("CVE-2024-1", "CRITICAL"), Finding("CVE-2024-2", "LOW")]
    assert counts == {"CRITICAL": 1, "LOW": 1}


def test_suppressed_inspector_findings_are_not_listed_and_untriaged_is_unknown() -> None:
    page = {
        "imageScanStatus": {"status": "ACTIVE"},
        "imageScanFindings": {
            "enhancedFindings": [
                enhanced_finding("CVE-2024-1", "CRITICAL", status="SUPPRESSED"),
                enhanced_finding("CVE-2024-9", "UNTRIAGED"),
            ],
        },
    }
    assert parse_page(page)[0] == [Finding("CVE-2024-9", "UNDEFINED")]


def test_every_page_is_read_and_the_counts_come_from_the_first() -> None:
    counts = {"HIGH": 2}
    report = report_from_pages(
        [
            basic_page(("CVE-1", "HIGH"), counts=counts, nextToken="t"),
            basic_page(("CVE-2", "HIGH"), counts=counts),
        ]
    )
    assert report.status == "COMPLETE"
    assert [f.name for f in report.findings] == ["CVE-1", "CVE-2"]
    assert report.counts == {"HIGH": 2}


def test_a_clean_image_passes_with_its_counts() -> None:
    verdict = judge(report_from_pages([basic_page(("CVE-1", "MEDIUM"), ("CVE-2", "LOW"))]), "HIGH")
    assert verdict.passed
    assert verdict.counts == {"MEDIUM": 1, "LOW": 1}
    assert verdict.as_result() == {"status": "COMPLETE", "counts": {"MEDIUM": 1, "LOW": 1}, "passed": True}


def test_a_finding_at_the_threshold_or_worse_refuses_and_is_named_worst_first() -> None:
    report = report_from_pages([basic_page(("CVE-1", "HIGH"), ("CVE-2", "CRITICAL"), ("CVE-3", "LOW"))])
    verdict = judge(report, "HIGH")
    assert not verdict.passed
    assert verdict.counts == {"CRITICAL": 1, "HIGH": 1, "LOW": 1}
    assert [f.name for f in verdict.refusing] == ["CVE-2", "CVE-1"]
    text = describe_refusal(verdict)
    assert "1 CRITICAL, 1 HIGH" in text
    assert "CVE-2 (CRITICAL), CVE-1 (HIGH)" in text
    assert "max_severity='HIGH'" in text


def test_ignored_findings_are_not_counted() -> None:
    report = report_from_pages([basic_page(("CVE-2024-3094", "CRITICAL"), ("CVE-2", "LOW"))])
    verdict = judge(report, "HIGH", ["cve-2024-3094"])
    assert verdict.passed
    assert verdict.counts == {"LOW": 1}
    assert verdict.ignored == ("CVE-2024-3094",)


def test_findings_counted_but_not_listed_refuse_and_cannot_be_ignored() -> None:
    report = report_from_pages([basic_page(("CVE-1", "CRITICAL"), counts={"CRITICAL": 3})])
    verdict = judge(report, "CRITICAL", ["CVE-1"])
    assert not verdict.passed
    assert verdict.counts == {"CRITICAL": 2}
    assert "2 counted by ECR but not listed" in str(verdict.refused)


def test_an_undefined_severity_refuses_whatever_the_threshold() -> None:
    verdict = judge(report_from_pages([basic_page(("CVE-1", "UNDEFINED"))]), "CRITICAL")
    assert not verdict.passed
    assert "no known severity" in str(verdict.refused)
    assert judge(report_from_pages([basic_page(("CVE-1", "UNDEFINED"))]), "CRITICAL", ["CVE-1"]).passed


@pytest.mark.parametrize(
    ("status", "words"),
    [
        ("FAILED", "is FAILED"),
        ("UNSUPPORTED_IMAGE", "is UNSUPPORTED_IMAGE"),
        ("FINDINGS_UNAVAILABLE", "is FINDINGS_UNAVAILABLE"),
        ("IN_PROGRESS", "still IN_PROGRESS after scan_wait"),
        ("NO_SCAN", "no scan of this image"),
    ],
)
def test_a_scan_that_did_not_complete_refuses_saying_so(status: str, words: str) -> None:
    verdict = judge(ScanReport(status, "ECR's words"), "CRITICAL")
    assert not verdict.passed
    assert words in str(verdict.refused)
    assert "ECR's words" in describe_refusal(verdict)


def test_no_status_at_all_is_no_scan() -> None:
    assert report_from_pages([{}]).status == "NO_SCAN"
    assert report_from_pages([]).status == "NO_SCAN"
