"""One image promoted by several engines in one lab run, with the figures `make demo` and
bench/engines.py print side by side: digest kept, platforms that arrived, time, bytes uploaded.

Each engine writes to its own destination repository, so none profits from another's uploads.
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow_ecr_promote.engines import DEFAULT_ENGINE
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .lab import Lab
from .operator_run import TaskRun, lab_operator, run_task


@dataclass
class EngineFigures:
    engine: str
    source_digest: str
    digest: str | None
    platforms: list[str]
    task_seconds: float  # the whole task: pod built, logins, copy, result read
    copy_seconds: float | None  # the copier container alone, start to finish
    uploaded: int  # bytes of blobs uploaded to the destination registry
    run: TaskRun

    @property
    def digest_kept(self) -> bool:
        return self.digest == self.source_digest


def promote_with(lab: Lab, engine: str | None, repo: str, tag: str, source_digest: str) -> EngineFigures:
    """Promote ``repo:tag`` from the source account to ``<repo>-<engine>:tag``; ``engine=None``
    constructs the operator without ``engine=``, i.e. with the default engine."""
    name = engine or DEFAULT_ENGINE
    dest_repo = f"{repo}-{name}"
    lab.create_repository(DEST_ACCOUNT, dest_repo)  # the destination repository exists, as ECR needs
    operator = lab_operator(
        lab,
        engine,
        task_id=f"promote_{name}",
        source_image=f"{SOURCE_HOST}/{repo}:{tag}",
        dest_image=f"{DEST_HOST}/{dest_repo}:{tag}",
    )
    before = lab.uploaded_bytes(DEST_ACCOUNT)
    run = run_task(lab, task=operator)
    if run.error is not None:
        raise RuntimeError(f"{name}: the promotion failed: {run.error}")
    return EngineFigures(
        engine=name,
        source_digest=source_digest,
        digest=lab.digest(DEST_ACCOUNT, dest_repo, tag),
        platforms=sorted(lab.platforms(DEST_ACCOUNT, dest_repo, tag)),
        task_seconds=run.seconds,
        copy_seconds=run.copier_seconds,
        uploaded=lab.uploaded_bytes(DEST_ACCOUNT) - before,
        run=run,
    )


def warm_up(lab: Lab) -> None:
    """One small promotion, not measured: the first task of a process also pays for Airflow's
    and KPO's lazy imports, which would be charged to whichever engine ran first."""
    digest = lab.push_image(SOURCE_ACCOUNT, "warmup/app", "1", seed=1)
    promote_with(lab, "skopeo", "warmup/app", "1", digest)


def table(rows: list[EngineFigures], unique_bytes: int) -> str:
    """The engines side by side; times relative to the first row as well as absolute."""
    header = ["engine", "digest kept", "platforms arrived", "task time", "copier time", "uploaded"]
    first = rows[0].task_seconds
    lines = []
    for row in rows:
        copy = f"{row.copy_seconds:.1f} s" if row.copy_seconds is not None else "?"
        lines.append(
            [
                row.engine + (" (default)" if row.engine == DEFAULT_ENGINE else ""),
                "yes" if row.digest_kept else f"no ({(row.digest or '?')[:19]}...)",
                ", ".join(row.platforms) or "none",
                f"{row.task_seconds:.1f} s ({row.task_seconds / first:.2f}x)",
                copy,
                f"{row.uploaded / 2**20:.1f} MiB ({row.uploaded / unique_bytes:.2f} of the source's blobs)",
            ]
        )
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in lines]
    return "\n".join(out)


def source_blob_bytes(lab: Lab, repo: str, tag: str) -> int:
    """Bytes of every blob (configs and layers of every platform) of the source image."""
    import json

    index = json.loads(lab.inspect_raw(SOURCE_ACCOUNT, repo, tag) or b"{}")
    sizes: dict[str, int] = {}
    for entry in index.get("manifests", []):
        manifest = json.loads(lab.inspect_raw(SOURCE_ACCOUNT, repo, entry["digest"]) or b"{}")
        for blob in [manifest["config"], *manifest["layers"]]:
            sizes[blob["digest"]] = blob["size"]
    return sum(sizes.values())
