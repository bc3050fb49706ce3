"""Destination repositories: ``create_repository`` settings, and ECR's refusals explained.

ECR refuses a push to a repository that does not exist (``NAME_UNKNOWN``, "The repository with
name '<repo>' does not exist in the registry with id '<account>'") and, in a repository with
immutable tags, a push that would move an existing tag (``TAG_INVALID``, "The image tag '<tag>'
already exists in the '<repo>' repository and cannot be overwritten because the repository is
immutable."). The copy script marks these failures with a fixed reason prefix; kaniko's log holds
ECR's text. This module turns either into a message that names the repository, the account and
the fixes, so no free text is parsed anywhere else.

With ``create_repository`` the init container creates each missing destination repository with
the destination role, before any copy (``scripts/repository.sh``): with the settings given, or
with the source repository's tag mutability, scan-on-push and encryption type (read with the
source role).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_ecr_promote.promotion import Promotion
from airflow_ecr_promote.refs import PromotionInputError, parse_image_ref

# reason prefixes written by scripts/copy.sh
MISSING = "destination repository missing:"
IMMUTABLE = "destination tag immutable:"
SIGNATURE_IMMUTABLE = "signature tag immutable:"
_NAME_UNKNOWN = re.compile(
    r"The repository with name '([^']*)' does not exist in the registry with id '(\d+)'"
)
_TAG_INVALID = re.compile(
    r"The image tag '([^']*)' already exists in the '([^']*)' repository and cannot be overwritten "
    r"because the repository is immutable\."
)
SETTING_KEYS = ("imageTagMutability", "scanOnPush", "encryptionType", "kmsKey")
_KMS_KEY = re.compile(r"[A-Za-z0-9:/_+=,.@-]{1,2048}", re.ASCII)
_EXPECTED = (
    "Expected False (the default: the repository must exist), True (create a missing repository "
    "with the source repository's settings) or a dict of settings with keys from "
    f"{', '.join(SETTING_KEYS)}, e.g. {{'imageTagMutability': 'IMMUTABLE', 'scanOnPush': True}}"
)


@dataclass(frozen=True)
class RepositorySettings:
    """How a missing destination repository is created: copied from the source, or as given."""

    from_source: bool
    image_tag_mutability: str = "MUTABLE"
    scan_on_push: bool = False
    encryption_type: str = "AES256"
    kms_key: str | None = None

    def env_value(self) -> str:
        """``source``, or ``<mutability> <scan on push> <encryption type> <KMS key or ->``."""
        if self.from_source:
            return "source"
        scan = "true" if self.scan_on_push else "false"
        return f"{self.image_tag_mutability} {scan} {self.encryption_type} {self.kms_key or '-'}"


def parse_create_repository(value: object) -> RepositorySettings | None:
    """None when repositories must exist; raises PromotionInputError for anything unusable."""
    if value is None or value is False:
        return None
    if value is True:
        return RepositorySettings(from_source=True)
    if not isinstance(value, Mapping) or not value:
        problem = "is not a boolean or a dict of settings"
        raise PromotionInputError("create_repository", value, problem, _EXPECTED)
    unknown = sorted(str(k) for k in value if k not in SETTING_KEYS)
    if unknown:
        raise PromotionInputError("create_repository", value, f"has unknown keys {unknown}", _EXPECTED)
    mutability = value.get("imageTagMutability", "MUTABLE")
    if mutability not in ("MUTABLE", "IMMUTABLE"):
        raise PromotionInputError(
            "create_repository",
            value,
            f"imageTagMutability {mutability!r} is not ECR's",
            "Expected 'MUTABLE' or 'IMMUTABLE'",
        )
    scan = value.get("scanOnPush", False)
    if not isinstance(scan, bool):
        raise PromotionInputError(
            "create_repository", value, f"scanOnPush {scan!r} is not a boolean", "Expected True or False"
        )
    encryption = value.get("encryptionType", "KMS" if value.get("kmsKey") else "AES256")
    if encryption not in ("AES256", "KMS"):
        raise PromotionInputError(
            "create_repository",
            value,
            f"encryptionType {encryption!r} is not ECR's",
            "Expected 'AES256' or 'KMS'",
        )
    key = value.get("kmsKey")
    if key is not None and (encryption != "KMS" or not isinstance(key, str) or not _KMS_KEY.fullmatch(key)):
        raise PromotionInputError(
            "create_repository",
            value,
            f"kmsKey {key!r} is not a KMS key for encryptionType 'KMS'",
            "Expected a KMS key ARN, key id or alias in the destination account, with encryptionType 'KMS'",
        )
    return RepositorySettings(False, str(mutability), scan, str(encryption), key)


def create_repositories_env(promotion: Promotion, settings: RepositorySettings) -> dict[str, str]:
    """The init container's environment for scripts/repository.sh: one line per destination
    repository, ``<dest region> <dest role or -> <dest account> <dest repository> <source region>
    <source role or -> <source account> <source repository>``, and the settings."""
    lines: dict[tuple[str, str], str] = {}
    for copy in promotion.copies:
        src, dst = copy.source, copy.dest
        line = (
            f"{dst.region} {copy.dest_role or '-'} {dst.account} {dst.repository} "
            f"{src.region} {copy.source_role or '-'} {src.account} {src.repository}"
        )
        lines.setdefault((dst.host, dst.repository), line)
    return {"CREATE_REPOSITORIES": "\n".join(lines.values()), "REPOSITORY_SETTINGS": settings.env_value()}


def ecr_refusal(text: str) -> str | None:
    """ECR's own text of a missing repository or an immutable tag, if ``text`` quotes one."""
    found = _TAG_INVALID.search(text) or _NAME_UNKNOWN.search(text)
    return found[0] if found else None


def explain(entry: dict[str, Any], engine: str) -> dict[str, Any]:
    """The entry with ECR's refusal (if its reason holds one) replaced by what it means and the fixes."""
    reason = entry.get("reason")
    if entry.get("status") != "failed" or not isinstance(reason, str):
        return entry
    dest = parse_image_ref("dest_image", entry["dest_image"])
    where = f"repository '{dest.repository}' in account {dest.account} ({dest.region})"
    missing = _NAME_UNKNOWN.search(reason)
    ours = missing is not None and (missing[1], missing[2]) == (dest.repository, dest.account)
    if reason.startswith(MISSING) or (engine == "kaniko" and ours):
        ecr = missing[0] if missing else reason
        text = (
            f"the destination {where} does not exist (ECR: {ecr}). Fix: create it (with your "
            f"infrastructure code, or `aws ecr create-repository --repository-name {dest.repository} "
            f"--region {dest.region}` in account {dest.account}), or pass create_repository=True to let "
            "the destination role create it (it then needs ecr:CreateRepository and "
            "ecr:DescribeRepositories)"
        )
        return {**entry, "reason": text}
    refused = _TAG_INVALID.search(reason)
    if refused is not None and SIGNATURE_IMMUTABLE in reason:
        text = (
            f"the image is already in the destination {where}, but a signature, attestation or SBOM "
            f"added at the source since cannot follow it: ECR refused to move cosign's tag '{refused[1]}' "
            "because the repository's tags are immutable. Fix: sign before promoting, sign with OCI 1.1 "
            "referrers (`cosign sign --registry-referrers-mode=oci-1-1`, no tag), or make the repository "
            "MUTABLE; with_signatures=False promotes without them"
        )
        return {**entry, "reason": text}
    if reason.startswith(IMMUTABLE) or refused:
        tag = dest.tag or ""
        if engine == "kaniko":
            why = (
                "kaniko gives every push a new digest (it writes a new image config), so it can never push "
                "to an existing tag of an immutable repository, not even to re-run the same promotion. "
                "Fix: engine='skopeo' or engine='crane' (they keep the digest, and a re-run finds the image "
                "present and writes nothing), or promote to a new tag"
            )
        else:
            held = f" (it holds {entry['digest']})" if entry.get("digest") else ""
            why = (
                f"on_conflict='overwrite' cannot move the tag{held}. Fix: promote to a new tag, or remove "
                f"the tag first (`aws ecr batch-delete-image --repository-name {dest.repository} --image-ids "
                f"imageTag={tag}`), or make the repository MUTABLE (`aws ecr put-image-tag-mutability`)"
            )
        text = (
            f"ECR refused to overwrite tag '{tag}' of the destination {where}: its tags are immutable, and "
            + why
        )
        return {**entry, "reason": text}
    return entry
