"""Read a finished promotion pod: the task's return value, or a failure message that says why.

No XCom sidecar is needed. The copy script prints its full report (one line per copy,
``<n> <status> <dest digest> <source digest> [reason]``) to its log between frame lines, and
writes to its termination message (which Kubernetes cuts to 4 KiB, less with more containers) a
summary: counts per status and the sha256 of the report. The operator reads the report from the
copier's log only when the termination message does not hold it whole, and uses it only when it
matches the summary's sha256. kaniko writes the pushed digest (``--digest-file``), and the login
script writes its reason for failing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client import models as k8s

from airflow_ecr_promote.pod import INIT_CONTAINER_NAME, REPOSITORY_CONTAINER_NAME
from airflow_ecr_promote.promotion import Copy, Promotion
from airflow_ecr_promote.repository import ecr_refusal, explain, interpret
from airflow_ecr_promote.signatures import (
    TRAVELLED,
    VERIFY_CONTAINER_NAME,
    gate_failure,
    parse_travelled,
    verify_images,
)
from airflow_ecr_promote.throttling import login_throttled

# how scripts/login.sh begins refusing a source that is not a container image (CHECK_SOURCES)
LOGIN_REFUSED_ARTIFACT = "ecr-promote login: engine="

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}", re.ASCII)
_RETRIES = re.compile(r"retries=(\d{1,6})", re.ASCII)
_REPORT_LINE = re.compile(r"[0-9]+ [a-z]+ ", re.ASCII)
STATUSES = ("copied", "present", "skipped", "failed")
_SUMMARY = re.compile(
    r"ecr-promote summary copies=(?P<copies>\d+) copied=(?P<copied>\d+) present=(?P<present>\d+) "
    r"skipped=(?P<skipped>\d+) failed=(?P<failed>\d+)(?: retries=(?P<retries>\d+))?"
    r"(?: login_retries=(?P<login_retries>\d+))? "
    r"report=sha256:(?P<sha>[a-f0-9]{64})",
    re.ASCII,
)
REPORT_BEGIN = "ecr-promote report begin "
REPORT_END = "ecr-promote report end "
RESULT_LINE = "ecr-promote result "  # one copy's line, printed as it ends
MAX_LISTED_FAILURES = 50
# (log text or None, why it could not be read or None)
LogReader = Callable[[], tuple[str | None, str | None]]
# copies -> for each, its source's digest when the destination is seen holding it, else None
Confirm = Callable[[list[Copy]], list[str | None]]
CONFIRMED_BY = "ECR API"  # the "confirmed" field of an entry completed after the log was lost


@dataclass(frozen=True)
class Summary:
    copies: int
    failed: int
    sha256: str
    copied: int = 0
    present: int = 0
    skipped: int = 0
    retries: int = 0
    login_retries: int = 0


def parse_summary(message: str) -> Summary | None:
    """The copy script's summary line in a termination message, if there is one."""
    for line in message.split("\n"):
        match = _SUMMARY.fullmatch(line)
        if match:
            return Summary(
                int(match["copies"]),
                int(match["failed"]),
                match["sha"],
                int(match["copied"]),
                int(match["present"]),
                int(match["skipped"]),
                int(match["retries"] or 0),
                int(match["login_retries"] or 0),
            )
    return None


def _report_lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line and not line.startswith("ecr-promote summary ")]


def report_matches(lines: list[str], summary: Summary) -> bool:
    text = "".join(f"{line}\n" for line in lines)
    return len(lines) == summary.copies and hashlib.sha256(text.encode()).hexdigest() == summary.sha256


def find_report(log: str, summary: Summary) -> list[str] | None:
    """The report lines framed in the copier's log whose sha256 is the summary's, if any.

    Only report-shaped lines between the frame's begin and end count, and only when they hash to
    the summary, so no text printed elsewhere in the log (a registry's error quoted by a tool) can
    pass for the report. Other lines inside the frame are skipped: the container runtime copies
    stdout (the report) and stderr (the script's messages) separately, and under load a message
    written before the report can land in the log among its lines.
    """
    begin, end = f"{REPORT_BEGIN}{summary.copies}", f"{REPORT_END}{summary.copies} sha256:{summary.sha256}"
    lines = log.split("\n")
    for start, line in enumerate(lines):
        if line != begin:
            continue
        report: list[str] = []
        for framed in lines[start + 1 :]:
            if framed == end:
                if report_matches(report, summary):
                    return report
                break
            if framed == begin:
                break
            if _REPORT_LINE.match(framed):
                report.append(framed)
    return None


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


def _container_states(pod: k8s.V1Pod) -> list[str]:
    states = []
    status = pod.status
    for kind, items in (
        ("init container", status.init_container_statuses),
        ("container", status.container_statuses),
    ):
        for item in items or []:
            state = item.state
            if state is not None and state.waiting is not None:
                states.append(f"{kind} {item.name!r} {state.waiting.reason or 'waiting'}")
            elif state is not None and state.running is not None:
                states.append(f"{kind} {item.name!r} running")
    return states


def not_started(
    pod: k8s.V1Pod, startup_timeout: int | None = None, schedule_timeout: int | None = None
) -> str:
    """Why a pod never ran its copier, from its status: what it still waits for, and what to change
    when it stayed ``Pending`` past KubernetesPodOperator's timeouts."""
    waiting = _waiting_reasons(pod)
    if waiting:
        return "; ".join(waiting)
    status = pod.status
    if status.phase != "Pending":
        return f"pod phase {status.phase}"
    fewer = "or start fewer promotions at once (the task's pool, max_active_tis_per_dag, parallel=)"
    scheduled = next((c for c in status.conditions or [] if c.type == "PodScheduled"), None)
    if scheduled is None or scheduled.status != "True":
        within = f" within schedule_timeout_seconds ({schedule_timeout} s)" if schedule_timeout else ""
        said = (
            f" ({scheduled.reason}: {(scheduled.message or '').strip()})"
            if scheduled and scheduled.reason
            else ""
        )
        return (
            f"the pod stayed Pending: no node took it{within}{said}. Ask for less "
            f"(container_resources), make room on the cluster, {fewer}"
        )
    within = f" within startup_timeout_seconds ({startup_timeout} s)" if startup_timeout else ""
    states = ", ".join(_container_states(pod)) or "no container created yet"
    node = f" on node {pod.spec.node_name}" if pod.spec and pod.spec.node_name else ""
    return (
        f"the pod stayed Pending: scheduled{node}, it did not start its containers{within} "
        f"({states}). A busy node creates containers slowly: raise startup_timeout_seconds, {fewer}"
    )


def _digest(text: str) -> str | None:
    return text if _DIGEST.fullmatch(text) else None


def parse_copy_lines(
    message: str, promotion: Promotion, missing: str = "no report from the pod"
) -> list[dict[str, Any]]:
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
            entries.append(_entry(copy.source, copy.dest, "unknown", None, None, missing))
            continue
        fields = found
        extra = fields[4] if len(fields) > 4 else None
        retries = 0
        counted = _RETRIES.match(extra or "")
        if extra and counted and (len(extra) == counted.end() or extra[counted.end()] == " "):
            retries, extra = int(counted[1]), extra[counted.end() + 1 :] or None
        travelled = None
        if extra and extra.startswith(f"{TRAVELLED} ") and fields[1] in ("copied", "present"):
            travelled, extra = parse_travelled(extra), None
        digest = _digest(fields[2])
        if extra and fields[1] in ("failed", "skipped"):
            extra = interpret(extra, fields[1], copy, digest, retries)  # the script's fact, as a reason
        entry = _entry(copy.source, copy.dest, fields[1], digest, _digest(fields[3]), extra, retries)
        entries.append({**entry, **(travelled or {})})
    return entries


def _entry(
    source: object,
    dest: object,
    status: str,
    digest: str | None,
    source_digest: str | None,
    reason: str | None,
    retries: int | None = 0,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "source_image": str(source),
        "dest_image": str(dest),
        "status": status,
        "digest": digest,
        "source_digest": source_digest,
        "digest_kept": None if digest is None or source_digest is None else digest == source_digest,
        # registry calls tried again after a throttled (429) or transient (5xx) answer
        "retries": retries,
    }
    if reason:
        entry["reason"] = reason
    return entry


def describe_failures(entries: list[dict[str, Any]]) -> str:
    failed = [e for e in entries if e["status"] in ("failed", "unknown")]
    lines = [f"{len(failed)} of {len(entries)} promotions failed:"] if len(entries) > 1 else []
    for e in failed[:MAX_LISTED_FAILURES]:
        lines.append(f"{e['source_image']} -> {e['dest_image']}: {e.get('reason') or e['status']}")
    if len(failed) > MAX_LISTED_FAILURES:
        lines.append(f"... and {len(failed) - MAX_LISTED_FAILURES} more (each is in the return value)")
    return "\n".join(lines)


def describe_termination(
    name: str, done: k8s.V1ContainerStateTerminated, memory_limit: str | None = None
) -> str:
    """How a container ended, as Kubernetes reports it: reason, exit code, signal; for an
    OOMKilled one, what that means and which parameter gives it more memory."""
    text = f"container {name!r} ended: {done.reason or 'no reason given'}, exit code {done.exit_code}"
    if done.signal:
        text += f", signal {done.signal}"
    if done.reason == "OOMKilled":
        limit = f"at its memory limit ({memory_limit})" if memory_limit else "(no memory limit: the node's)"
        text += (
            f" (out of memory {limit}: the kernel killed it; give the copier more memory with the "
            "operator's container_resources, e.g. limits={'memory': '2Gi'})"
        )
    return text


def memory_limit(pod: k8s.V1Pod, name: str) -> str | None:
    """The memory limit of the pod's container ``name``, as the pod spec has it."""
    for container in (pod.spec.containers if pod.spec else None) or []:
        if container.name == name and container.resources is not None:
            return (container.resources.limits or {}).get("memory")
    return None


def deleted_by_others(pod: k8s.V1Pod, gone: bool) -> str | None:
    """Why a pod stopped, when it was deleted while it ran (``gone``: the API server no longer has
    it; else a deletion timestamp, set before this task's own ``on_finish_action`` ran)."""
    meta = pod.metadata
    if not gone and (meta is None or meta.deletion_timestamp is None):
        return None
    name = f"{meta.namespace}/{meta.name}" if meta is not None else "(unnamed)"
    return (
        f"its pod {name} was deleted while it ran, not by this task (someone or something else "
        "deleted it: kubectl delete, an eviction, a node drain or scale-down); copies it did not "
        "report are unknown, and a re-run finds those already made in place"
    )


def pod_gone_failure(promotion: Promotion, namespace: str, name: str) -> str:
    """The failure of a resumed (deferred) task whose pod the API server no longer has: deleted
    while it ran, before the task came back to read it."""
    pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(namespace=namespace, name=name))
    return f"Promotion {_images(promotion)} failed: {deleted_by_others(pod, gone=True)}"


def collected_pod_entries(
    promotion: Promotion, confirmed: list[str | None] | None, namespace: str, name: str
) -> tuple[list[dict[str, Any]], str | None]:
    """Entries of a resumed (deferred) task whose pod succeeded and was deleted before the task
    read its report (garbage-collected): each copy the ECR API shows in place (``confirmed``: the
    source's digest at the destination, or None; None for all: no API to ask) is ``present`` and
    marked confirmed; any other is unknown, and the failure says why and what to do."""
    lost = f"pod {namespace}/{name} succeeded and was deleted before the task read its report"
    ask = "confirmed" if confirmed is not None else "set dest_aws_conn_id to have the ECR API confirm it"
    entries = []
    for copy, digest in zip(promotion.copies, confirmed or [None] * len(promotion.copies), strict=True):
        if digest is None:
            entries.append(_entry(copy.source, copy.dest, "unknown", None, None, f"{lost}; not {ask}"))
        else:
            entries.append(
                {**_entry(copy.source, copy.dest, "present", digest, digest, None), "confirmed": CONFIRMED_BY}
            )
    if all(e["status"] == "present" for e in entries):
        return entries, None
    return entries, (
        f"Promotion {_images(promotion)} failed: {describe_failures(entries)}. "
        "A retry reads the destination again and finds the copies that are in place"
    )


def _images(promotion: Promotion) -> str:
    if len(promotion.copies) > 1:
        return f"{len(promotion.copies)} images from {promotion.source.repository_url}"
    return f"{promotion.source} -> {promotion.dest}"


def _complete(
    entries: list[dict[str, Any]], promotion: Promotion, summary: Summary, confirm: Confirm
) -> None:
    """Complete, from the ECR API, the entries whose report lines were lost, when the summary says
    none of them failed (failures come first in the termination message, so the lost lines are
    copied, present or skipped ones): a destination seen holding its source's digest is confirmed;
    anything else stays unknown, and fails the task."""
    missing = [i for i, e in enumerate(entries) if e["status"] == "unknown"]
    if not missing or sum(e["status"] == "failed" for e in entries) != summary.failed:
        return
    known = {s: sum(e["status"] == s for e in entries) for s in STATUSES}
    # the lost lines' statuses, from the summary's counts: all present, or (some) copied
    status = "present" if summary.copied == known["copied"] else "copied"
    copies = [promotion.copies[i] for i in missing]
    for i, digest in zip(missing, confirm(copies), strict=True):
        if digest is None:
            entries[i]["reason"] += (
                f"; and the {CONFIRMED_BY} does not show the destination holding the source's digest"
            )
            continue
        copy = promotion.copies[i]
        entries[i] = {
            **_entry(copy.source, copy.dest, status, digest, digest, None),
            "confirmed": CONFIRMED_BY,
        }


def _script_entries(
    message: str,
    promotion: Promotion,
    ended: str,
    read_log: LogReader | None,
    confirm: Confirm | None = None,
) -> list[dict[str, Any]]:
    """Entries of the copy script's report: from the termination message when it holds the whole
    report, else from the copier's log, else (``confirm``) from the ECR API; what none of them
    holds is unknown, and says why."""
    summary = parse_summary(message)
    if summary is None:  # the copier ended before its report: keep what its log says it did
        log = read_log()[0] if read_log is not None else None
        done = [line[len(RESULT_LINE) :] for line in (log or "").split("\n") if line.startswith(RESULT_LINE)]
        return parse_copy_lines(
            "\n".join([message, *done]), promotion, f"no report from the pod: its copier {ended}"
        )
    in_message = _report_lines(message)
    if report_matches(in_message, summary):
        return parse_copy_lines("\n".join(in_message), promotion)
    log, error = read_log() if read_log is not None else (None, "no log reader")
    if log is not None:
        report = find_report(log, summary)
        if report is not None:
            return parse_copy_lines("\n".join(report), promotion)
        why = f"the copier's log holds no report matching its summary (sha256:{summary.sha256})"
    else:
        why = f"the copier's log, which holds its full report, could not be read ({error})"
    entries = parse_copy_lines(
        message,
        promotion,
        f"not reported: {why}; its termination message holds only {len(in_message)} of "
        f"{summary.copies} result lines ({summary.failed} failed in all)",
    )
    if confirm is not None:
        _complete(entries, promotion, summary, confirm)
    return entries


def _kaniko_failure(message: str, read_log: LogReader | None) -> str:
    """Why kaniko failed: its termination message, and ECR's refusal from its log (kaniko writes its
    digest file before it pushes, so a failed push leaves only the digest in the message), else
    kaniko's own last error line (e.g. ``error pushing image: ... MANIFEST_BLOB_UNKNOWN ...``)."""
    refusal = ecr_refusal(message)
    if refusal is None and read_log is not None:
        log = read_log()[0] or ""
        refusal = ecr_refusal(log) or _last_error(log)
    if refusal is None or refusal in message:
        return message[-1500:]
    return f"{message[-1000:]}: {refusal}".lstrip(": ")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _last_error(log: str) -> str | None:
    """kaniko's last error line (``error ...`` as it exits, or a line logged at level ERRO/FATA)."""
    lines = [_ANSI.sub("", line).strip() for line in log.splitlines()]
    errors = [line for line in lines if line.lower().startswith(("error", "erro", "fata"))]
    return errors[-1][:600] if errors else None


def read_pod(
    pod: k8s.V1Pod,
    promotion: Promotion,
    engine: str,
    copier: str,
    read_log: LogReader | None = None,
    confirm: Confirm | None = None,
    gone: bool = False,
    startup_timeout: int | None = None,
    schedule_timeout: int | None = None,
) -> PodOutcome:
    """What the finished pod says: the return value when it has one, and a failure if any.

    ``read_log`` returns the copier container's log (or why it cannot); it is called only when
    the termination message does not hold the whole report. ``confirm`` (the ECR API, when the
    operator has AWS connections) completes what neither holds. ``gone``: the API server no
    longer has the pod (``pod`` is the last copy read), so it was deleted while it ran. The
    timeouts (KubernetesPodOperator's) are named when the pod never started.
    """
    status = pod.status
    if status is None:
        return PodOutcome(None, f"the promotion pod of {promotion.dest} has no status")
    images = _images(promotion)
    login = _terminated(status.init_container_statuses, INIT_CONTAINER_NAME)
    if login is not None and login.exit_code != 0:
        reason = (login.message or f"exit code {login.exit_code}").strip()
        if LOGIN_REFUSED_ARTIFACT in reason:  # scripts/login.sh's CHECK_SOURCES: not an image
            return PodOutcome(None, f"Promotion {images} refused before anything was written: {reason}")
        advice = login_throttled(reason)
        if advice is not None:
            reason = f"{reason}. {advice}"
        return PodOutcome(None, f"Promotion {images} failed while logging in to the registries: {reason}")
    gate = _terminated(status.init_container_statuses, VERIFY_CONTAINER_NAME)
    if gate is not None and gate.exit_code != 0:
        checked = verify_images([copy.source for copy in promotion.copies])
        refused = gate_failure(gate.message or "", checked)
        return PodOutcome(None, f"Promotion {images} failed before copying anything: {refused}")
    repository = _terminated(status.init_container_statuses, REPOSITORY_CONTAINER_NAME)
    if repository is not None and repository.exit_code != 0:  # scripts/repository.sh
        reason = (repository.message or f"exit code {repository.exit_code}").strip()
        return PodOutcome(
            None, f"Promotion {images} failed while creating the destination repository: {reason}"
        )
    deleted = deleted_by_others(pod, gone)
    done = _terminated(status.container_statuses, copier)
    if done is None:
        if deleted:
            return PodOutcome(None, f"Promotion {images} failed: {deleted}; its copier had not ended")
        why = not_started(pod, startup_timeout, schedule_timeout)
        return PodOutcome(None, f"Promotion {images} did not run its copier: {why}")
    message = (done.message or "").strip()
    ended = describe_termination(copier, done, memory_limit(pod, copier))
    if engine == "kaniko":
        digest = _digest(message) if done.exit_code == 0 else None
        entry = _entry(
            promotion.source,
            promotion.dest,
            "copied" if digest else "failed",
            digest,
            promotion.source.digest,
            None if digest else _kaniko_failure(message, read_log),
        )
        entry["retries"] = None  # kaniko retries inside (--push-retry) and does not say how often
        if digest:
            # kaniko writes a new config (created time, platform), so it never keeps the digest,
            # even when the source is named by digest (kaniko issue 673).
            entry["digest_kept"] = False
        entries = [explain(entry, engine)]  # ECR's refusal in kaniko's words, with its fixes
    else:
        # unstripped: a report line may end with a space, and the summary's sha256 covers it
        entries = _script_entries(done.message or "", promotion, ended, read_log, confirm)
        if parse_summary(message) is None and all(e["status"] != "failed" for e in entries):
            for e in entries:
                if e["status"] == "unknown":
                    tail = f": {message[-1500:]}" if message else ""
                    e["reason"] = f"no report from the pod: its copier {ended}{tail}"
    result = summarize(entries, promotion, engine)
    summary = parse_summary(message) if engine != "kaniko" else None
    if summary is not None:
        result["login_retries"] = summary.login_retries  # logins tried again after throttling
    failed = [e for e in entries if e["status"] in ("failed", "unknown")]
    if failed or done.exit_code != 0:
        detail = describe_failures(entries) if failed else message[-1500:]
        if deleted:
            return PodOutcome(result, f"Promotion {images} failed: {deleted} ({ended}): {detail}")
        return PodOutcome(result, f"Promotion {images} failed ({ended}): {detail}")
    return PodOutcome(result, None)


def summarize(entries: list[dict[str, Any]], promotion: Promotion, engine: str) -> dict[str, Any]:
    """The task's return value: the one entry of a single promotion, or every entry of a batch."""
    if len(promotion.copies) == 1:
        return {**entries[0], "engine": engine}
    counts = {s: sum(e["status"] == s for e in entries) for s in STATUSES}
    retries = sum(int(e.get("retries") or 0) for e in entries)
    return {"engine": engine, "promotions": entries, **counts, "retries": retries}


def entries_of(result: dict[str, Any], promotion: Promotion) -> list[dict[str, Any]]:
    """The entries of a return value that :func:`summarize` made for ``promotion``."""
    if len(promotion.copies) == 1:
        return [{k: v for k, v in result.items() if k != "engine"}]
    return list(result["promotions"])


IN_PLACE_UNCONFIRMED = (
    "found in place through the ECR API before the pod started, but the ECR API could not "
    "confirm it after the deferred task resumed"
)


def with_in_place(
    promotion: Promotion, in_place: Mapping[int, str | None], pod_entries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every copy's entry, in order: ``present`` for those the worker found in place (index: digest;
    None: no longer confirmed, so unknown), and the pod's entries, in order, for the rest."""
    return merge_entries(promotion, in_place_entries(promotion, in_place), pod_entries)


def in_place_entries(promotion: Promotion, in_place: Mapping[int, str | None]) -> dict[int, dict[str, Any]]:
    """The entries of the copies found in place (index: digest; None: no longer confirmed)."""
    decided = {}
    for index, digest in in_place.items():
        copy = promotion.copies[index]
        status, reason = ("present", None) if digest else ("unknown", IN_PLACE_UNCONFIRMED)
        decided[index] = _entry(copy.source, copy.dest, status, digest, digest, reason)
    return decided


def merge_entries(
    promotion: Promotion, decided: Mapping[int, dict[str, Any]], pod_entries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every copy's entry, in order: the worker's for the copies it decided before the pod (index:
    entry; found in place, refused by the scan gate), and the pod's entries, in order, for the rest."""
    rest = iter(pod_entries)
    return [decided[i] if i in decided else next(rest) for i in range(len(promotion.copies))]


def refused_entry(copy: Copy, status: str, reason: str) -> dict[str, Any]:
    """The entry of a copy the scan gate refused: ``skipped`` or ``failed``, nothing written."""
    return _entry(copy.source, copy.dest, status, None, None, reason)


def present(promotion: Promotion, digests: list[str]) -> list[dict[str, Any]]:
    """Entries for copies found already promoted (destination digest == source digest)."""
    return [
        _entry(c.source, c.dest, "present", d, d, None)
        for c, d in zip(promotion.copies, digests, strict=True)
    ]
