"""Read a finished promotion pod: the task's return value, or a failure message that says why.

The pod reports through Kubernetes termination messages, so no XCom sidecar is needed:
the copy script writes one line per copy (``<n> <status> <dest digest> <source digest> [reason]``),
kaniko writes the pushed digest (``--digest-file=/dev/termination-log``), and the login script
writes its reason for failing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kubernetes.client import models as k8s

from airflow_ecr_promote.pod import INIT_CONTAINER_NAME
from airflow_ecr_promote.promotion import Promotion

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}", re.ASCII)
STATUSES = ("copied", "present", "skipped", "failed")


@dataclass(frozen=True)
class PodOutcome:
    result: dict[str, Any] | None
    failure: str | None


def _terminated(
    statuses: list[k8s.V1ContainerStatus] | None, name: str
) -> k8s.V1ContainerStateTerminated | None:
    for status in statuses or []:
        if status.name == name and status.state is not None:
            return status.state.terminated
    return None


def _waiting_reasons(pod: k8s.V1Pod) -> list[str]:
    reasons = []
    status = pod.status
    for item in [*(status.init_container_statuses or []), *(status.container_statuses or [])]:
        waiting = item.state.waiting if item.state else None
        if waiting and waiting.reason and waiting.reason not in ("PodInitializing", "ContainerCreating"):
            reasons.append(f"container {item.name!r} is {waiting.reason}: {waiting.message or ''}".strip())
    return reasons


def _digest(text: str) -> str | None:
    return text if _DIGEST.fullmatch(text) else None


def parse_copy_lines(message: str, promotion: Promotion) -> list[dict[str, Any]]:
    """One entry per copy of ``promotion``; a copy without a line is reported as unknown."""
    lines: dict[int, list[str]] = {}
    # Only "\n" ends a report line: a reason quoting a registry's error may hold "\r" or other
    # separators that str.splitlines() would take for line ends and so read as a result.
    for line in message.split("\n"):
        fields = line.split(" ", 4)
        if len(fields) >= 4 and fields[0].isdigit() and fields[1] in STATUSES:
            lines[int(fields[0])] = fields
    entries = []
    for index, copy in enumerate(promotion.copies, start=1):
        found = lines.get(index)
        if found is None:
            entries.append(_entry(copy.source, copy.dest, "unknown", None, None, "no report from the pod"))
            continue
        fields = found
        entries.append(
            _entry(
                copy.source,
                copy.dest,
                fields[1],
                _digest(fields[2]),
                _digest(fields[3]),
                fields[4] if len(fields) > 4 else None,
            )
        )
    return entries


def _entry(
    source: object,
    dest: object,
    status: str,
    digest: str | None,
    source_digest: str | None,
    reason: str | None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "source_image": str(source),
        "dest_image": str(dest),
        "status": status,
        "digest": digest,
        "source_digest": source_digest,
        "digest_kept": None if digest is None or source_digest is None else digest == source_digest,
    }
    if reason:
        entry["reason"] = reason
    return entry


def _describe_failures(entries: list[dict[str, Any]]) -> str:
    failed = [e for e in entries if e["status"] in ("failed", "unknown")]
    lines = [f"{len(failed)} of {len(entries)} promotions failed:"] if len(entries) > 1 else []
    for e in failed:
        lines.append(f"{e['source_image']} -> {e['dest_image']}: {e.get('reason') or e['status']}")
    return "\n".join(lines)


def read_pod(pod: k8s.V1Pod, promotion: Promotion, engine: str, copier: str) -> PodOutcome:
    """What the finished pod says: the return value when it has one, and a failure if any."""
    status = pod.status
    if status is None:
        return PodOutcome(None, f"the promotion pod of {promotion.dest} has no status")
    images = f"{promotion.source} -> {promotion.dest}"
    if len(promotion.copies) > 1:
        images = f"{len(promotion.copies)} images from {promotion.source.repository_url}"
    login = _terminated(status.init_container_statuses, INIT_CONTAINER_NAME)
    if login is not None and login.exit_code != 0:
        reason = (login.message or f"exit code {login.exit_code}").strip()
        return PodOutcome(None, f"Promotion {images} failed while logging in to the registries: {reason}")
    done = _terminated(status.container_statuses, copier)
    if done is None:
        waiting = "; ".join(_waiting_reasons(pod)) or f"pod phase {status.phase}"
        return PodOutcome(None, f"Promotion {images} did not run its copier: {waiting}")
    message = (done.message or "").strip()
    if engine == "kaniko":
        digest = _digest(message) if done.exit_code == 0 else None
        entry = _entry(
            promotion.source,
            promotion.dest,
            "copied" if digest else "failed",
            digest,
            promotion.source.digest,
            None if digest else message[-1500:],
        )
        if digest:
            # kaniko writes a new config (created time, platform), so it never keeps the digest,
            # even when the source is named by digest (kaniko issue 673).
            entry["digest_kept"] = False
        entries = [entry]
    else:
        entries = parse_copy_lines(message, promotion)
        if done.exit_code != 0 and all(e["status"] != "failed" for e in entries):
            for e in entries:
                if e["status"] == "unknown":
                    e["reason"] = message[-1500:] or f"copier exit code {done.exit_code}"
    result = summarize(entries, promotion, engine)
    failed = [e for e in entries if e["status"] in ("failed", "unknown")]
    if failed or done.exit_code != 0:
        detail = _describe_failures(entries) if failed else message[-1500:]
        return PodOutcome(result, f"Promotion {images} failed: {detail}")
    return PodOutcome(result, None)


def summarize(entries: list[dict[str, Any]], promotion: Promotion, engine: str) -> dict[str, Any]:
    """The task's return value: the one entry of a single promotion, or every entry of a batch."""
    if len(promotion.copies) == 1:
        return {**entries[0], "engine": engine}
    counts = {s: sum(e["status"] == s for e in entries) for s in STATUSES}
    return {"engine": engine, "promotions": entries, **counts}


def present(promotion: Promotion, digests: list[str]) -> list[dict[str, Any]]:
    """Entries for copies found already promoted (destination digest == source digest)."""
    return [
        _entry(c.source, c.dest, "present", d, d, None)
        for c, d in zip(promotion.copies, digests, strict=True)
    ]
