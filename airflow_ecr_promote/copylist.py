"""The copy list a copier script reads, and the limits that remain on its size.

The list travels in environment variables of the copier container. Linux refuses any one
environment string longer than ``MAX_ARG_STRLEN`` (128 KiB: the container would not start, a
StartError), so the list is encoded compactly (a batch of tags names its two repositories once,
then one tag a line) and split into variables of at most :data:`CHUNK_BYTES`, read in order by
the script: ``COPIES``, ``COPIES_2`` ... ``COPIES_<COPY_CHUNKS>``.

What remains is refused here, at parse/render time, before any pod exists:

- :data:`MAX_COPY_LIST_BYTES`: the whole pod must stay under the API server's object limit
  (etcd's 1.5 MiB request limit) and the copier's environment plus arguments under ``ARG_MAX``
  (2 MiB with the default 8 MiB stack).
- :data:`MAX_COPIES`: the task's return value lists every copy (about 390 to 1,300 bytes each),
  and the copier's log, which carries the full report, must stay under the kubelet's default
  log rotation size (10 MiB), as the API serves only the current log file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_ecr_promote.refs import ImageRef

if TYPE_CHECKING:
    from airflow_ecr_promote.promotion import Promotion

MAX_ARG_STRLEN = 128 * 1024
CHUNK_BYTES = 96 * 1024
MAX_COPY_LIST_BYTES = 1024 * 1024
MAX_COPIES = 5000
SPLIT_HINT = (
    "Fix: split the list over several tasks, e.g. "
    "EcrPromoteOperator.partial(...).expand(tags=[tags[i:i + 1000] for i in range(0, len(tags), 1000)])"
)


def wire_ref(ref: ImageRef) -> str:
    """The reference the copier reads: ``repo@digest`` for a source written ``repo:tag@digest``.

    skopeo (containers/image) refuses a reference with both a tag and a digest; the digest is
    what is copied, so the tag is dropped. crane accepts both forms, and reads this one too.
    """
    if ref.tag and ref.digest:
        return f"{ref.repository_url}@{ref.digest}"
    return str(ref)


def copy_lines(promotion: Promotion) -> tuple[dict[str, str], list[str]]:
    """(``SOURCE_REPO`` / ``DEST_REPO`` env, one line per copy).

    In a batch, a copy of tag T from the first copy's source repository to its destination
    repository is the line ``T``; any other copy is ``<source ref> <destination ref>``.
    """
    if not promotion.copies:
        return {}, []
    first = promotion.copies[0]
    source_repo, dest_repo = first.source.repository_url, first.dest.repository_url
    batch = len(promotion.copies) > 1
    lines = []
    for copy in promotion.copies:
        if (
            batch
            and copy.source.repository_url == source_repo
            and copy.dest.repository_url == dest_repo
            and copy.source.tag == copy.dest.tag
            and not copy.source.digest
        ):
            lines.append(str(copy.dest.tag))
        else:
            lines.append(f"{wire_ref(copy.source)} {copy.dest}")
    repos = {"SOURCE_REPO": source_repo, "DEST_REPO": dest_repo} if batch else {}
    return repos, lines


def chunks(lines: list[str], limit: int = CHUNK_BYTES) -> list[str]:
    """Whole lines joined by newlines, in order, each chunk at most ``limit`` bytes."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        length = len(line.encode()) + 1
        if current and size + length > limit:
            out.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += length
    if current:
        out.append("\n".join(current))
    return out


def copies_env(promotion: Promotion) -> dict[str, str]:
    """The copy list as the copier script's environment variables."""
    repos, lines = copy_lines(promotion)
    parts = chunks(lines) or [""]
    env = {"COPIES": parts[0], "COPY_CHUNKS": str(len(parts))}
    env.update({f"COPIES_{index}": part for index, part in enumerate(parts[1:], start=2)})
    return {**env, **repos}


def encoded_size(promotion: Promotion) -> int:
    """Bytes of the copy list in the pod (names, values and separators of its variables)."""
    return sum(len(name) + len(value.encode()) + 2 for name, value in copies_env(promotion).items())


def size_problem(promotion: Promotion) -> str | None:
    """Why this copy list cannot travel in one pod, naming the limit; None when it can."""
    count = len(promotion.copies)
    if count > MAX_COPIES:
        return (
            f"holds {count} copies, over the limit of {MAX_COPIES} copies per task (the task's "
            "return value lists each copy, and the copier's log, which carries its report, must "
            "stay under the kubelet's 10 MiB log rotation size)"
        )
    size = encoded_size(promotion)
    if size > MAX_COPY_LIST_BYTES:
        return (
            f"encodes to {size} bytes of copy list in the pod, over the limit of "
            f"{MAX_COPY_LIST_BYTES} bytes (the pod must stay under the API server's 1.5 MiB "
            "object limit, and the copier's environment under ARG_MAX, 2 MiB)"
        )
    return None
