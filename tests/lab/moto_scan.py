"""ECR image scans in the lab's ECR API (moto), set per image by a test.

moto's scan answers are fixed: ``DescribeImageScanFindings`` reports one HIGH finding
(``CVE-9999-9999``) for any image scanned, never a scan that is running, never a page after the
first, never Inspector's enhanced shape; ``DescribeImages`` reports no scan at all. A scan gate
cannot be tested against that. :func:`install` patches moto's ECR responses, in the process that
serves them (moto_iam.py runs it; a unit test may run it in its own process under ``mock_aws``),
so that an image with a :class:`ScanPlan` answers as ECR would:

- ``scanned=False``: never scanned: ``ScanNotFoundException`` until ``StartImageScan``, which
  starts a scan (a second one is refused with ``LimitExceededException``, as ECR allows one a day);
- ``in_progress_seconds``: the scan is ``IN_PROGRESS`` that long after it started (when the plan
  was set, for a scanned image; at ``StartImageScan`` otherwise), then completes;
- then ``COMPLETE`` (``ACTIVE`` when ``enhanced``), or ``status`` (``FAILED``,
  ``UNSUPPORTED_IMAGE``...), with ``findings`` paged by ``maxResults`` / ``nextToken``, as basic
  ``findings`` or Inspector's ``enhancedFindings``, and their ``findingSeverityCounts``;
- ``DescribeImages`` reports the same status and counts (``imageScanStatus``,
  ``imageScanFindingsSummary``).

An image without a plan keeps moto's own answers. A test sets a plan over HTTP,
``POST /moto-api/lab/ecr-scan`` (JSON: ``account``, ``region``, ``repository``, ``ref`` (a tag or
digest) and the plan's fields), or in-process with :func:`set_plan`. ``/moto-api/`` is not
IAM-checked (moto_iam.py), like moto's own ``/moto-api/static/ecr/scan-finding-results``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Any

PATH = "/moto-api/lab/ecr-scan"
_PLANS: dict[tuple[str, str, str, str], ScanPlan] = {}
_LOCK = threading.Lock()


class ScanPlan:
    """How ECR answers for one image's scan (see the module's docstring). A plain class: moto_iam.py
    loads this module by path, outside sys.modules, where a dataclass cannot be made."""

    def __init__(
        self,
        findings: list[dict[str, str]] | None = None,  # [{"name": "CVE-...", "severity": "HIGH"}]
        enhanced: bool = False,
        scanned: bool = True,
        in_progress_seconds: float = 0.0,
        status: str | None = None,
    ) -> None:
        self.findings = list(findings or [])
        self.enhanced = enhanced
        self.scanned = scanned
        self.in_progress_seconds = float(in_progress_seconds)
        self.status = status
        self.started_at = time.monotonic()

    def state(self) -> str | None:
        """The scan's status now; None: no scan."""
        if not self.scanned:
            return None
        if time.monotonic() - self.started_at < self.in_progress_seconds:
            return "IN_PROGRESS"
        return self.status or ("ACTIVE" if self.enhanced else "COMPLETE")

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for finding in self.findings:
            found[finding["severity"]] = found.get(finding["severity"], 0) + 1
        return found


def set_plan(account: str, region: str, repository: str, ref: str, plan: ScanPlan) -> None:
    """Answer for the image ``ref`` (a tag or a digest) of that repository with ``plan``."""
    with _LOCK:
        _PLANS[(account, region, repository, ref)] = plan


def clear() -> None:
    with _LOCK:
        _PLANS.clear()


def _plan_of(account: str, region: str, repository: str, image: Any) -> ScanPlan | None:
    with _LOCK:
        for ref in [image.image_digest, *(getattr(image, "image_tags", None) or [])]:
            plan = _PLANS.get((account, region, repository, ref))
            if plan is not None:
                return plan
    return None


def _basic(finding: dict[str, str]) -> dict[str, Any]:
    name = finding["name"]
    return {
        "name": name,
        "uri": f"https://nvd.nist.gov/vuln/detail/{name}",
        "severity": finding["severity"],
        "attributes": [{"key": "package_name", "value": finding.get("package", "lab-package")}],
    }


def _enhanced(account: str, finding: dict[str, str]) -> dict[str, Any]:
    name, package = finding["name"], finding.get("package", "lab-package")
    arn = f"arn:aws:inspector2:us-east-1:{account}:finding/{hashlib.sha256(name.encode()).hexdigest()[:32]}"
    return {
        "awsAccountId": account,
        "findingArn": arn,
        "packageVulnerabilityDetails": {
            "vulnerabilityId": name,
            "vulnerablePackages": [{"name": package, "version": "1.0"}],
            "source": "NVD",
        },
        "severity": finding["severity"],
        "status": finding.get("status", "ACTIVE"),
        "title": f"{name} - {package}",
        "type": "PACKAGE_VULNERABILITY",
    }


def install() -> None:
    """Patch moto's ECR responses (this process) and add the plan-setting route to /moto-api/."""
    from moto.ecr.exceptions import LimitExceededException, ScanNotFoundException
    from moto.ecr.responses import ECRResponse
    from moto.moto_api._internal import urls

    original_describe = ECRResponse.describe_image_scan_findings
    original_start = ECRResponse.start_image_scan
    original_images = ECRResponse.describe_images

    def image_and_plan(self: Any) -> tuple[Any, Any, ScanPlan | None]:
        backend = self.ecr_backend
        name = self._get_param("repositoryName")
        repo = backend._get_repository(name, self._get_param("registryId"))
        image_id = self._get_param("imageId") or {}
        image = repo._get_image(image_id.get("imageTag"), image_id.get("imageDigest"))
        return repo, image, _plan_of(backend.account_id, self.region, name, image)

    def describe_image_scan_findings(self: Any) -> Any:
        from moto.core.responses import ActionResult

        repo, image, plan = image_and_plan(self)
        if plan is None:
            return original_describe(self)
        state = plan.state()
        image_id = {"imageDigest": image.image_digest, "imageTag": image.image_tag}
        if state is None:
            raise ScanNotFoundException(
                image_id=json.dumps(self._get_param("imageId")),
                repository_name=repo.name,
                registry_id=repo.registry_id,
            )
        answer: dict[str, Any] = {
            "registryId": repo.registry_id,
            "repositoryName": repo.name,
            "imageId": image_id,
            "imageScanStatus": {"status": state, "description": f"lab scan: {state}"},
        }
        if state in ("COMPLETE", "ACTIVE"):
            size = int(self._get_param("maxResults") or 100)
            start = int(self._get_param("nextToken") or 0)
            page = plan.findings[start : start + size]
            account = repo.registry_id
            listed = [_enhanced(account, f) for f in page] if plan.enhanced else [_basic(f) for f in page]
            answer["imageScanFindings"] = {
                "enhancedFindings" if plan.enhanced else "findings": listed,
                "findingSeverityCounts": plan.counts(),
            }
            if start + size < len(plan.findings):
                answer["nextToken"] = str(start + size)
        return ActionResult(answer)

    def start_image_scan(self: Any) -> Any:
        from moto.core.responses import ActionResult

        repo, image, plan = image_and_plan(self)
        if plan is None:
            return original_start(self)
        if plan.scanned:
            raise LimitExceededException()
        plan.scanned, plan.started_at = True, time.monotonic()
        return ActionResult(
            {
                "registryId": repo.registry_id,
                "repositoryName": repo.name,
                "imageId": {"imageDigest": image.image_digest, "imageTag": image.image_tag},
                "imageScanStatus": {"status": "IN_PROGRESS"},
            }
        )

    def describe_images(self: Any) -> Any:
        result = original_images(self)
        account, name = self.ecr_backend.account_id, self._get_param("repositoryName")
        for detail in result.result["imageDetails"]:
            plan = _plan_of(account, self.region, name, detail)
            state = plan.state() if plan is not None else None
            if plan is None or state is None:
                continue
            detail.image_scan_status = {"status": state, "description": f"lab scan: {state}"}
            if state in ("COMPLETE", "ACTIVE"):
                detail.image_scan_findings_summary = {"findingSeverityCounts": plan.counts()}
        return result

    def set_scan(request: Any, full_url: str, headers: Any) -> Any:
        body = (
            json.loads(request.data or b"{}")
            if hasattr(request, "data")
            else json.loads(request.body or "{}")
        )
        keys = ("account", "region", "repository", "ref")
        fields = ("findings", "enhanced", "scanned", "in_progress_seconds", "status")
        set_plan(*(str(body[k]) for k in keys), ScanPlan(**{k: body[k] for k in fields if k in body}))
        return 201, {}, ""

    ECRResponse.describe_image_scan_findings = describe_image_scan_findings  # type: ignore[method-assign]
    ECRResponse.start_image_scan = start_image_scan  # type: ignore[method-assign]
    ECRResponse.describe_images = describe_images  # type: ignore[method-assign]
    set_scan.__name__ = "lab_set_ecr_scan"  # moto names each route's Flask endpoint after its function
    urls.url_paths["{0}" + PATH] = set_scan


def post_plan(
    endpoint: str, ca_file: str, account: str, region: str, repository: str, ref: str, **plan: Any
) -> None:
    """Set a plan in the moto process serving ``endpoint`` (the lab's: ``lab.moto_endpoint``,
    ``lab.ca_bundle``); ``plan``: :class:`ScanPlan`'s fields but ``started_at`` (now)."""
    import ssl
    import urllib.request

    body = {"account": account, "region": region, "repository": repository, "ref": ref, **plan}
    request = urllib.request.Request(
        endpoint + PATH,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(
        request, context=ssl.create_default_context(cafile=ca_file), timeout=30
    ) as answer:
        if answer.status != 201:
            raise RuntimeError(f"the lab's moto refused the scan plan: HTTP {answer.status}")
