"""Load against the throttling lab on its real Kubernetes (issue 22, item 3), for the load tests
(tests/lab/test_load_e2e.py) and the bench at full size (bench/load.py).

Two shapes of a backfill, each against ECR's default registry quotas (tests/lab/throttle.py,
``ECR_REGISTRY_QUOTAS``: PutImage and CompleteLayerUpload 10 a second; GetAuthorizationToken 20 a
second with 200 of burst, the lab's default):

- ``mapped_promotions``: a mapped task of one promotion per tag, its map indexes run ``limit`` at
  once, each through KPO's own ``execute`` and a pod of its own (``run_mapped_on_cluster``);
- ``one_batch``: one task promoting every tag in one pod, ``parallel`` copies at once.

Each returns a ``Load``: what every task returned, and the figures (time, tags a second, the
retries the return values count, the 429s and throttle errors the lab answered, the most pods at
once, and peak memory: of the pods, from their cgroups, and of the worker process).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.client import CoreV1Api

from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_HOST

from .cluster import CGROUP_ROOT, NAMESPACE, Cluster
from .lab import Lab
from .operator_run import TaskRun, lab_operator, run_mapped_on_cluster, run_task_on_cluster
from .test_batch_scale_e2e import RegistryApi, seeded_tags
from .throttle import ECR_REGISTRY_QUOTAS

MiB = 1024 * 1024


def tag_writes(lab: Lab, repo: str) -> Counter[str]:
    """Manifest PUTs the destination registry accepted (201), per tag; platform manifests, written
    by digest, are not counted."""
    prefix = f"/v2/{repo}/manifests/"
    return Counter(
        r.path[len(prefix) :]
        for r in lab.requests(DEST_ACCOUNT)
        if r.method == "PUT" and r.status == 201 and r.path.startswith(prefix)
        and not r.path[len(prefix) :].startswith("sha256:")
    )  # fmt: skip


def ecr_default_quotas(lab: Lab) -> None:
    """The destination throttled at ECR's default registry quotas, counts at zero."""
    lab.reset_throttles()
    for api, (rate, burst) in ECR_REGISTRY_QUOTAS.items():
        lab.set_throttle(api, rate, burst, which=DEST_ACCOUNT)


class PodCensus:
    """The namespace's pods, counted every half second in a thread: the most that existed at once
    (not being deleted), and the most that were Running at once."""

    def __init__(self, cluster: Cluster, selector: str) -> None:
        from kubernetes.config import new_client_from_config

        self.api = CoreV1Api(new_client_from_config(config_file=str(cluster.kubeconfig)))
        self.selector = selector
        self.most_alive = self.most_running = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._count, daemon=True)

    def __enter__(self) -> PodCensus:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _count(self) -> None:
        while not self._stop.is_set():
            try:
                pods = self.api.list_namespaced_pod(NAMESPACE, label_selector=self.selector).items
            except Exception:  # a busy API server: count at the next look
                pods = []
            alive = [p for p in pods if p.metadata.deletion_timestamp is None]
            self.most_alive = max(self.most_alive, len(alive))
            self.most_running = max(self.most_running, sum(p.status.phase == "Running" for p in alive))
            self._stop.wait(0.5)


def _kubepods(cluster: Cluster) -> Path:
    return CGROUP_ROOT / "memory" / cluster.cgroup_root.lstrip("/") / "kubepods"


def reset_memory_peaks(cluster: Cluster) -> None:
    """Zero the peak of every pod together (the kubelet's ``kubepods`` cgroup, cgroup v1) and of
    this process (``/proc/self/clear_refs`` 5 resets VmHWM)."""
    peak = _kubepods(cluster) / "memory.max_usage_in_bytes"
    with suppress(OSError):
        peak.write_text("0")
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def pods_memory_peak(cluster: Cluster) -> int | None:
    """The most memory every pod of the node used together since ``reset_memory_peaks``."""
    peak = _kubepods(cluster) / "memory.max_usage_in_bytes"
    return int(peak.read_text()) if peak.exists() else None


def worker_memory_peak() -> int:
    """This process's peak resident memory (VmHWM) since ``reset_memory_peaks``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Load:
    """A load's outcome: every task's run, and its figures."""

    shape: str
    tags: list[str]
    expected: dict[str, str]
    runs: list[TaskRun]
    seconds: float
    throttled: dict[str, dict[str, int]]
    most_pods: int
    most_running: int
    pods_peak: int | None
    worker_peak: int
    entries: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def retries(self) -> int:
        return sum(int(e.get("retries") or 0) for e in self.entries)

    @property
    def login_retries(self) -> int:
        return sum(int(r.result.get("login_retries") or 0) for r in self.runs if r.result)

    @property
    def pod_peaks(self) -> list[int]:
        return [o.memory_peak for r in self.runs for o in r.outcomes if o.memory_peak]

    def figures(self) -> dict[str, Any]:
        refused = self.throttled.get("refused", {})
        pod_peaks = self.pod_peaks
        return {
            "shape": self.shape,
            "tags": len(self.tags),
            "seconds": round(self.seconds, 1),
            "tags_per_s": round(len(self.tags) / self.seconds, 2),
            "failed": sum(r.error is not None for r in self.runs),
            "retries": self.retries,
            "login_retries": self.login_retries,
            "429_put_image": refused.get("ecr:PutImage", 0),
            "429_complete_upload": refused.get("ecr:CompleteLayerUpload", 0),
            "throttled_tokens": refused.get("ecr:GetAuthorizationToken", 0),
            "put_image_allowed": self.throttled.get("allowed", {}).get("ecr:PutImage", 0),
            "most_pods_at_once": self.most_pods,
            "most_running_at_once": self.most_running,
            "tasks_at_once": self.extra.get("tasks_at_once"),
            "pod_peak_mib": round(max(pod_peaks) / MiB, 1) if pod_peaks else None,
            "pods_together_peak_mib": round(self.pods_peak / MiB, 1) if self.pods_peak else None,
            "worker_peak_mib": round(self.worker_peak / MiB, 1),
        }


def _measured(
    shape: str, tags: list[str], expected: dict[str, str], runs: list[TaskRun], seconds: float,
    lab: Lab, cluster: Cluster, census: PodCensus,
) -> Load:  # fmt: skip
    peaks = pods_memory_peak(cluster), worker_memory_peak()
    return Load(
        shape, tags, expected, runs, seconds, lab.throttled(), census.most_alive, census.most_running, *peaks
    )


def _seed(lab: Lab, repo: str, count: int, seed: int) -> tuple[list[str], dict[str, str]]:
    lab.create_repository(DEST_ACCOUNT, repo)
    tags = [f"10.{i // 1000}.{i % 1000}" for i in range(count)]
    return tags, seeded_tags(lab, repo, tags, images=3, seed=seed)


def _mapped_kwargs(
    lab: Lab, repo: str, tags: list[str], engine: str
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """A mapped promotion of one tag per map index: its ``partial`` and ``expand_kwargs`` arguments."""
    from .operator_run import PULL_ROLE, PUSH_ROLE

    partial = {
        "engine": engine,
        "init_image": lab.init_image,
        "copier_image": lab.copier_image_for(engine),
        "source_role_arn": PULL_ROLE,
        "dest_role_arn": PUSH_ROLE,
        # 16 pods starting at once on one 2-core node shared with other labs stayed Pending past
        # KPO's default 120 s; what is measured here is the promotions, not pod start
        "startup_timeout_seconds": 600,
    }
    expand = [
        {"source_image": f"{SOURCE_HOST}/{repo}:{t}", "dest_image": f"{DEST_HOST}/{repo}:{t}"} for t in tags
    ]
    return partial, expand


def mapped_promotions(
    lab: Lab, cluster: Cluster, repo: str, count: int, *, limit: int, engine: str = "skopeo", seed: int = 4100
) -> Load:
    """``count`` map indexes of one promotion task (one tag each), ``limit`` at once: threads of this
    process, each running KPO's own ``execute`` (no scheduler)."""
    from airflow_ecr_promote.operators import EcrPromoteOperator

    try:
        from airflow.sdk import DAG
    except ImportError:  # Airflow 2.11
        from airflow import DAG  # type: ignore[assignment,no-redef]
    from datetime import datetime

    tags, expected = _seed(lab, repo, count, seed)
    dag_id = "load_" + repo.replace("/", "_").replace("-", "_")
    partial, expand = _mapped_kwargs(lab, repo, tags, engine)
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1)):
        mapped = EcrPromoteOperator.partial(task_id="promote", **partial).expand_kwargs(expand)
    ecr_default_quotas(lab)
    reset_memory_peaks(cluster)
    started = time.monotonic()
    with PodCensus(cluster, f"dag_id={dag_id}") as census:
        runs = run_mapped_on_cluster(cluster, mapped, count, limit=limit)
    seconds = time.monotonic() - started
    load = _measured(
        f"{count} mapped tasks, {limit} at once", tags, expected, runs, seconds, lab, cluster, census
    )
    load.entries = [r.result or r.pushed.get("return_value") or {} for r in runs]
    lab.reset_throttles()
    return load


def pooled_promotions(
    lab: Lab,
    cluster: Cluster,
    repo: str,
    count: int,
    *,
    slots: int,
    workdir: Path,
    engine: str = "skopeo",
    seed: int = 4300,
) -> Load:
    """``count`` map indexes of one promotion task (one tag each) in an Airflow pool of ``slots``,
    run by a real deployment (tests/lab/deployment.py): Airflow's scheduler, LocalExecutor worker
    processes and API server. The worker's peak is the deployment's processes' together (their
    proportional set sizes: what forked processes share counted once)."""
    import sys

    from tests.dag_run import migrated_db

    from .deployment import Deployment

    tags, expected = _seed(lab, repo, count, seed)
    partial, expand = _mapped_kwargs(lab, repo, tags, engine)
    env = {
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": cluster.airflow_connection(),
        "KUBECONFIG": str(cluster.dir / "airflow.kubeconfig"),
        "ECR_LAB_LOAD": json.dumps({"pool": "ecr_promote", "partial": partial, "expand": expand}),
    }
    db = migrated_db(sys.executable, workdir)
    dag_file = Path(__file__).resolve().parent.parent / "dag_files" / "ecr_lab_load_pool.py"
    ecr_default_quotas(lab)
    reset_memory_peaks(cluster)
    with Deployment(sys.executable, db, workdir, [dag_file], env, pool="ecr_promote", slots=slots) as airflow:
        with PodCensus(cluster, "dag_id=ecr_lab_load_pool") as census:
            outcome = airflow.run("ecr_lab_load_pool")
    runs = [
        TaskRun(
            result=t.returned,
            error=None if t.state == "success" else RuntimeError(f"map index {t.map_index}: {t.state}"),
            seconds=(t.end - t.start).total_seconds() if t.start and t.end else 0.0,
        )
        for t in outcome.tasks
    ]
    shape = f"{count} mapped tasks, Airflow pool of {slots} (scheduler, LocalExecutor)"
    load = Load(
        shape, tags, expected, runs, outcome.seconds, lab.throttled(), census.most_alive,
        census.most_running, pods_memory_peak(cluster), outcome.peak_pss,
    )  # fmt: skip
    load.entries = [r.result or {} for r in runs]
    load.extra = {"tasks_at_once": outcome.most_at_once, "run_state": outcome.state, "log": str(outcome.log)}
    lab.reset_throttles()
    return load


def one_batch(
    lab: Lab,
    cluster: Cluster,
    repo: str,
    count: int,
    *,
    parallel: int,
    engine: str = "skopeo",
    seed: int = 4200,
) -> Load:
    """One task promoting ``count`` tags in one pod, ``parallel`` copies at once."""
    tags, expected = _seed(lab, repo, count, seed)
    task = lab_operator(
        lab, engine, source_image=f"{SOURCE_HOST}/{repo}", dest_image=f"{DEST_HOST}/{repo}", tags=tags,
        parallel=parallel, task_id="batch",
    )  # fmt: skip
    ecr_default_quotas(lab)
    reset_memory_peaks(cluster)
    started = time.monotonic()
    with PodCensus(cluster, "task_id=batch") as census:
        run = run_task_on_cluster(cluster, task=task)
    seconds = time.monotonic() - started
    shape = f"one batch of {count}, parallel={parallel}"
    load = _measured(shape, tags, expected, [run], seconds, lab, cluster, census)
    result = run.result or run.pushed.get("return_value") or {}
    load.entries = list(result.get("promotions") or [])
    lab.reset_throttles()
    return load


def problems(lab: Lab, repo: str, load: Load) -> list[str]:
    """What is wrong with the load's outcome (empty when every tag was promoted once, with its
    digest, by tasks that all succeeded)."""
    found = [f"task {i} failed: {r.error}" for i, r in enumerate(load.runs) if r.error is not None]
    if len(load.entries) != len(load.tags):
        found.append(f"{len(load.entries)} entries for {len(load.tags)} tags")
    for tag, entry in zip(load.tags, load.entries, strict=False):
        if entry.get("dest_image") != f"{DEST_HOST}/{repo}:{tag}" or entry.get("status") != "copied":
            found.append(f"{tag}: {entry.get('dest_image')} {entry.get('status')} {entry.get('reason')}")
        elif entry.get("digest") != load.expected[tag]:
            found.append(f"{tag}: digest {entry.get('digest')}, the source's {load.expected[tag]}")
    writes = tag_writes(lab, repo)
    found += [f"{tag}: its manifest written {writes[tag]} times" for tag in load.tags if writes[tag] != 1]
    api = RegistryApi(lab, DEST_ACCOUNT)
    held = {tag: api.digest(repo, tag) for tag in load.tags}
    found += [
        f"{tag}: the destination holds {held[tag]}" for tag in load.tags if held[tag] != load.expected[tag]
    ]
    return found


@contextmanager
def lab_cluster(lab: Lab) -> Iterator[Cluster]:
    """The lab's Kubernetes for a bench (the tests get theirs from the ``cluster`` fixture), with
    the lab's init and copier images in containerd; stopped, everything removed, at the end."""
    running = Cluster(lab).start()
    try:
        running.import_images(
            lab.init_image, *(lab.copier_image_for(e) for e in ("skopeo", "crane", "regctl"))
        )
        yield running
    finally:
        running.stop()
