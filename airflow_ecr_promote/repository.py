"""Destination repositories: ``create_repository`` settings, and ECR's refusals explained.

ECR refuses a push to a repository that does not exist (``NAME_UNKNOWN``, "The repository with
name '<repo>' does not exist in the registry with id '<account>'") and, in a repository with
immutable tags, a push that would move an existing tag (``TAG_INVALID``, "The image tag '<tag>'
already exists in the '<repo>' repository and cannot be overwritten because the repository is
immutable."). The copy script reports what failed as facts (the step, the registry's error code,
the tool's words), and kaniko's log holds ECR's text. This module turns either into a message
that names the repository, the account and the fixes, so no free text is parsed anywhere else:
a missing repository is attributed to the source or the destination by its name and registry
id, and a refused tag by its name (the image's own, or one of cosign's).

With ``create_repository`` the init container creates each missing destination repository with
the destination role, before any copy (``scripts/repository.sh``), in the destination's registry
(``--registry-id``, whatever account the role belongs to): with the settings given, or with the
source repository's tag mutability (with its exclusion filters for the ``*_WITH_EXCLUSION``
modes, or not at all when they cannot be read), scan-on-push and encryption type (read with the
source role).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_ecr_promote.promotion import Copy, Promotion
from airflow_ecr_promote.refs import ImageRef, PromotionInputError, parse_image_ref
from airflow_ecr_promote.throttling import throttled_advice, throttled_api

# cosign's tags of an image's signature, attestations and SBOM: sha256-<hex>.sig/.att/.sbom
_COSIGN_TAG = re.compile(r"sha256-[a-f0-9]{64}(\.[A-Za-z0-9_-]+)?", re.ASCII)
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
    if mutability in ("MUTABLE_WITH_EXCLUSION", "IMMUTABLE_WITH_EXCLUSION"):
        raise PromotionInputError(
            "create_repository",
            value,
            f"imageTagMutability {mutability!r} needs exclusion filters, which these settings do not take "
            "(creating the repository without them would make every tag follow the plain mode, the "
            "sha256-* tags of cosign included)",
            "Create the repository yourself with its filters, or pass create_repository=True to copy the "
            "source repository's settings, exclusion filters included",
        )
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


def _where(dest: ImageRef) -> str:
    return f"repository '{dest.repository}' in account {dest.account} ({dest.region})"


def _missing_destination(dest: ImageRef, ecr: str) -> str:
    return (
        f"the destination {_where(dest)} does not exist (ECR: {ecr}). Fix: create it (with your "
        f"infrastructure code, or `aws ecr create-repository --repository-name {dest.repository} "
        f"--region {dest.region}` in account {dest.account}), or pass create_repository=True to let "
        "the destination role create it (it then needs ecr:CreateRepository and "
        "ecr:DescribeRepositories)"
    )


def _immutable_tag(dest: ImageRef, engine: str, held: str | None) -> str:
    tag = dest.tag or ""
    if engine == "kaniko":
        why = (
            "kaniko gives every push a new digest (it writes a new image config), so it can never push "
            "to an existing tag of an immutable repository, not even to re-run the same promotion. "
            "Fix: engine='skopeo' or engine='crane' (they keep the digest, and a re-run finds the image "
            "present and writes nothing), or promote to a new tag"
        )
    else:
        holds = f" (it holds {held})" if held else ""
        why = (
            f"on_conflict='overwrite' cannot move the tag{holds}. Fix: promote to a new tag, or remove "
            f"the tag first (`aws ecr batch-delete-image --repository-name {dest.repository} --image-ids "
            f"imageTag={tag}`), or make the repository MUTABLE (`aws ecr put-image-tag-mutability`)"
        )
    return (
        f"ECR refused to overwrite tag '{tag}' of the destination {_where(dest)}: its tags are immutable, "
        f"and {why}"
    )


_SIGNATURE_FIXES = (
    "Fix: sign before promoting, sign with OCI 1.1 referrers (`cosign sign "
    "--registry-referrers-mode=oci-1-1`, no tag), or make the repository MUTABLE; with_signatures=False "
    "promotes without them"
)


def _signature_tag(dest: ImageRef, tag: str, image_present: bool) -> str:
    if image_present:
        return (
            f"the image is already in the destination {_where(dest)}, but a signature, attestation or SBOM "
            f"added at the source since cannot follow it: ECR refused to move cosign's tag '{tag}' "
            f"because the repository's tags are immutable. {_SIGNATURE_FIXES}"
        )
    return (
        f"ECR refused to move cosign's tag '{tag}' (a signature, attestation or SBOM of the image) in the "
        f"destination {_where(dest)}: the repository's tags are immutable and that tag already holds "
        f"other content; the image's own tag '{dest.tag or ''}' was not the one refused. {_SIGNATURE_FIXES}"
    )


def interpret(fact: str, status: str, copy: Copy, held: str | None = None, retries: int = 0) -> str:
    """What a fact of the copy script's report (``<step> <class> <tool message>``, ``conflict``,
    ``malformed - <ref>`` or ``no-result``; see scripts/copy.sh) means for ``copy``: the reason a
    user reads. The only place ECR's texts are read: a repository ECR says is missing is matched
    by name AND registry id, and a refused tag by its name (the image's, or one of cosign's)."""
    step, _, rest = fact.partition(" ")
    error, _, message = rest.partition(" ")
    message = message.strip()
    source, dest = copy.source, copy.dest
    if step == "conflict":
        return (
            "destination holds another digest"
            if status == "skipped"
            else "destination tag holds another digest"
        )
    if step == "malformed":
        return f"refusing a malformed reference '{message}'"
    if step == "no-result":
        return "no result"
    if step not in ("read-dest", "read-source", "copy", "signatures", "listing"):
        return fact  # a fact this version does not know: as the script wrote it
    if error == "throttled":
        side = source if step == "read-source" else dest
        api = "BatchGetImage" if step in ("read-source", "read-dest") else throttled_api(message)
        return (
            f"ECR throttled {api} (429 TOOMANYREQUESTS) on {side.host}, still after {retries} retries "
            f"with backoff: {message}. {throttled_advice(api, side.account, side.region)}"
        )
    missing = _NAME_UNKNOWN.search(message) if error == "name_unknown" else None
    named = (missing[1], missing[2]) if missing else None
    if missing and named == (dest.repository, dest.account) and step in ("read-dest", "copy"):
        return _missing_destination(dest, missing[0])
    source_missing = missing and named == (source.repository, source.account)
    if (step == "read-source" and error in ("manifest_unknown", "name_unknown")) or (
        step == "copy" and source_missing
    ):
        return f"source {source} not found" + (f" ({missing[0]})" if missing else "")
    refused = _TAG_INVALID.search(message) if error == "tag_invalid" else None
    if refused and _COSIGN_TAG.fullmatch(refused[1]) and step in ("copy", "signatures"):
        return _signature_tag(dest, refused[1], image_present=step == "signatures")
    if refused and step == "copy" and refused[1] == dest.tag:
        return _immutable_tag(dest, "script", held)
    if step == "read-dest":
        return f"cannot read destination {dest}: {message}"
    if step == "read-source":
        return f"cannot read source {source}: {message}"
    if step == "signatures":
        return f"copying signatures and referrers failed: {message}"
    if step == "listing":
        return f"copied, but listing its signatures and referrers failed: {message}"
    if error == "transient":
        return f"copy failed, and still after {retries} retries: {message}"
    return f"copy failed: {message}"


def explain(entry: dict[str, Any], engine: str) -> dict[str, Any]:
    """kaniko's failed entry (its reason: kaniko's own words) with ECR's refusal, if it quotes one,
    replaced by what it means and the fixes. The copy script's facts go through ``interpret``."""
    reason = entry.get("reason")
    if entry.get("status") != "failed" or not isinstance(reason, str):
        return entry
    dest = parse_image_ref("dest_image", entry["dest_image"])
    missing = _NAME_UNKNOWN.search(reason)
    if missing is not None and (missing[1], missing[2]) == (dest.repository, dest.account):
        return {**entry, "reason": _missing_destination(dest, missing[0])}
    refused = _TAG_INVALID.search(reason)
    if refused is not None:
        return {**entry, "reason": _immutable_tag(dest, engine, entry.get("digest"))}
    return entry
