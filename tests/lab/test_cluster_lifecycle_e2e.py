"""The promotion pod's lifecycle on a real kubelet (issue 20, item 6), through KPO's own
``execute`` on the lab's real API server (tests/lab/cluster.py): what ``on_finish_action`` leaves
behind, a pod deleted by someone else while its copier runs, a copier the kernel kills at its
memory limit, a pod no node can take, and the copier's log reaching the task's log while the
copier still runs. ``keep_pod`` and the deletion run in deferrable mode too: KPO's trigger polls
the real API server and the resumed task reads what the kubelet left.

A copier that waits: the destination registry is stopped, so the copier's first read of the
destination fails with a transient error and the copy script waits ``RETRY_DELAY`` seconds
before it tries again (scripts/copy.sh), logging the failure first.
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from inspect import signature
from typing import Any

import pytest
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

from airflow_ecr_promote.operators import EcrPromoteError
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .cluster import CGROUP_ROOT, NAMESPACE, SERVICE_ACCOUNT, Cluster
from .lab import Lab
from .operator_run import TaskRun, lab_operator, run_task_on_cluster

pytestmark = [pytest.mark.lab, pytest.mark.cluster, pytest.mark.timeout(300)]

REPO = "cluster/lifecycle"
LABEL = "lifecycle-test"  # each test's pods carry it (the operator's ``labels``), to find them
WAITING = "trying again"  # what the copy script logs before it waits to retry a transient failure


@pytest.fixture(autouse=True)
def destination_repository(lab: Lab) -> None:
    lab.create_repository(DEST_ACCOUNT, REPO)


def operator(lab: Lab, name: str, tag: str, source_tag: str | None = None, **kwargs: Any) -> Any:
    """A skopeo promotion of ``REPO:<source_tag or tag>`` whose pods carry ``LABEL=name``."""
    return lab_operator(
        lab,
        "skopeo",
        task_id=name,
        source_image=f"{SOURCE_HOST}/{REPO}:{source_tag or tag}",
        dest_image=f"{DEST_HOST}/{REPO}:{tag}",
        namespace=NAMESPACE,
        service_account_name=SERVICE_ACCOUNT,
        labels={LABEL: name},
        **kwargs,
    )


def pods(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    """The pods of the test ``name``, as the API server has them now."""
    listed = cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", f"{LABEL}={name}", "-o", "json")
    return list(json.loads(listed.stdout)["items"])


def wait_until(what: str, probe: Callable[[], bool], timeout: float = 60.0) -> float:
    """Seconds until ``probe()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not probe():
        assert time.monotonic() - started < timeout, f"not within {timeout}s: {what}"
        time.sleep(0.25)
    return time.monotonic() - started


def copier_state(pod: dict[str, Any]) -> dict[str, Any]:
    """The copier container's (``base``) state in a pod as JSON: {"running": ...} or {"terminated": ...}."""
    statuses = pod["status"].get("containerStatuses") or []
    return next((dict(s.get("state") or {}) for s in statuses if s["name"] == "base"), {})


def delete_pods(cluster: Cluster, name: str) -> None:
    cluster.kubectl("delete", "pods", "-n", NAMESPACE, "-l", f"{LABEL}={name}", "--wait=true", timeout=120)


@contextmanager
def destination_down(lab: Lab) -> Iterator[None]:
    """The destination registry stopped (its front answers 502), started again afterwards."""
    lab.stop_registry(DEST_ACCOUNT)
    try:
        yield
    finally:
        lab.start_registry(DEST_ACCOUNT)


@contextmanager
def in_background(work: Callable[[threading.Event], None]) -> Iterator[None]:
    """Run ``work(done)`` in a thread while the block runs; ``done`` is set when the block ends."""
    done = threading.Event()
    thread = threading.Thread(target=work, args=(done,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=30)


def timed(run: TaskRun, label: str) -> None:
    print(f"{label}: task {run.seconds:.1f}s")


# ---------------------------------------------------------------- on_finish_action


def test_on_finish_action_delete_pod_removes_the_pod(lab: Lab, cluster: Cluster) -> None:
    name, tag = "lifecycle-delete", "4.0.0-delete"
    digest = lab.push_image(SOURCE_ACCOUNT, REPO, tag, seed=40)
    run = run_task_on_cluster(cluster, task=operator(lab, name, tag, on_finish_action="delete_pod"))
    assert run.error is None, "\n".join(run.log[-40:])
    assert run.result["digest"] == digest
    waited = wait_until("the pod is gone", lambda: not pods(cluster, name))
    timed(run, f"delete_pod (pod gone {waited:.1f}s after the task)")


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_on_finish_action_keep_pod_leaves_the_succeeded_pod(
    lab: Lab, cluster: Cluster, deferrable: bool
) -> None:
    """Deferrable: KPO's trigger polls the real API server, and the resumed task keeps the pod."""
    mode = "deferrable" if deferrable else "sync"
    name, tag = f"lifecycle-keep-{mode}", f"4.0.0-keep-{mode}"
    digest = lab.push_image(SOURCE_ACCOUNT, REPO, tag, seed=41)
    try:
        task = operator(lab, name, tag, on_finish_action="keep_pod", deferrable=deferrable)
        run = run_task_on_cluster(cluster, task=task)
        assert run.error is None, "\n".join(run.log[-40:])
        assert run.result["digest"] == digest
        # the trigger read the pod to its end (it failed on its cluster config once, and KPO's
        # re-deferrals hid that until a loaded machine outlasted them)
        events = [line for line in run.log if line.startswith("trigger event: ")]
        assert all(event.startswith("trigger event: success") for event in events), events
        assert len(events) == int(deferrable), run.log[-40:]
        (kept,) = pods(cluster, name)
        assert kept["status"]["phase"] == "Succeeded"
        assert copier_state(kept)["terminated"]["exitCode"] == 0
        assert kept["metadata"]["labels"]["already_checked"] == "True"  # KPO's mark on a kept pod
        assert "deletionTimestamp" not in kept["metadata"]
        # The kubelet keeps the pod's cgroups under its own cgroupRoot, not the host's /kubepods.
        qos = kept["status"]["qosClass"].lower()
        assert (CGROUP_ROOT / "memory" / cluster.cgroup_root.lstrip("/") / "kubepods" / qos).is_dir()
        assert not (CGROUP_ROOT / "memory" / "kubepods" / qos / f"pod{kept['metadata']['uid']}").exists()
    finally:
        delete_pods(cluster, name)
    assert not pods(cluster, name)
    timed(run, f"keep_pod ({mode})")


def test_on_finish_action_delete_succeeded_pod_keeps_only_the_failed_one(lab: Lab, cluster: Cluster) -> None:
    failing, succeeding, tag = "lifecycle-dsp-failed", "lifecycle-dsp-ok", "4.0.0-dsp"
    digest = lab.push_image(SOURCE_ACCOUNT, REPO, tag, seed=42)
    try:
        # the source tag does not exist: the copier fails, and the pod with it
        failed = run_task_on_cluster(
            cluster,
            task=operator(
                lab, failing, tag, source_tag="no-such-tag", on_finish_action="delete_succeeded_pod"
            ),
        )
        assert isinstance(failed.error, EcrPromoteError), failed.log[-20:]
        assert f"{SOURCE_HOST}/{REPO}:no-such-tag" in str(failed.error)
        (kept,) = pods(cluster, failing)
        assert kept["status"]["phase"] == "Failed"
        assert copier_state(kept)["terminated"]["exitCode"] != 0
        assert "deletionTimestamp" not in kept["metadata"]

        run = run_task_on_cluster(
            cluster, task=operator(lab, succeeding, tag, on_finish_action="delete_succeeded_pod")
        )
        assert run.error is None, "\n".join(run.log[-40:])
        assert run.result["digest"] == digest
        wait_until("the succeeded pod is gone", lambda: not pods(cluster, succeeding))
        assert len(pods(cluster, failing)) == 1  # the failed one is still kept
    finally:
        delete_pods(cluster, failing)
    timed(failed, "delete_succeeded_pod, failing run")
    timed(run, "delete_succeeded_pod, succeeding run")


# ------------------------------------------------------------- deleted mid-run


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_pod_deleted_by_someone_else_mid_run_fails_saying_so(
    lab: Lab, cluster: Cluster, deferrable: bool
) -> None:
    """Deferrable: KPO's trigger, polling the real API server, is the one that sees the pod go;
    the resumed task reads what is left and fails saying who deleted it."""
    mode = "deferrable" if deferrable else "sync"
    name, tag = f"lifecycle-deleted-{mode}", f"4.1.0-deleted-{mode}"
    lab.push_image(SOURCE_ACCOUNT, REPO, tag, seed=43)
    deleted: dict[str, Any] = {}

    def delete_while_copying(done: threading.Event) -> None:
        """As an admin's `kubectl delete pod` would: once the copier runs and has logged."""
        while not done.is_set() and not deleted:
            for pod in pods(cluster, name):
                pod_name = pod["metadata"]["name"]
                if "running" not in copier_state(pod):
                    continue
                log = cluster.kubectl("logs", "-n", NAMESPACE, pod_name, "-c", "base", check=False).stdout
                if WAITING in log:
                    cluster.kubectl(
                        "delete", "pod", "-n", NAMESPACE, pod_name, "--grace-period=2", "--wait=false"
                    )
                    deleted.update(name=pod_name, at=time.time())
            time.sleep(0.5)

    task = operator(lab, name, tag, env_vars={"RETRY_DELAY": "60"}, deferrable=deferrable)
    with destination_down(lab), in_background(delete_while_copying):
        run = run_task_on_cluster(cluster, task=task)
    assert deleted, "the pod was deleted while its copier ran"
    assert isinstance(run.error, EcrPromoteError), "".join(traceback.format_exception(run.error))
    message = str(run.error)
    assert f"{SOURCE_HOST}/{REPO}:{tag} -> {DEST_HOST}/{REPO}:{tag}" in message
    assert f"pod {NAMESPACE}/{deleted['name']} was deleted" in message, message
    assert "not by this task" in message, message
    assert lab.digest(DEST_ACCOUNT, REPO, tag) is None
    wait_until("the deleted pod is gone", lambda: not pods(cluster, name))
    print(
        f"deleted mid-run ({mode}): task failed {time.time() - deleted['at']:.1f}s after the delete;",
        repr(message),
    )
    timed(run, f"deleted mid-run ({mode})")


# ---------------------------------------------------------------------- OOMKilled


def test_copier_killed_at_its_memory_limit_fails_saying_out_of_memory(lab: Lab, cluster: Cluster) -> None:
    """The operator's ``container_resources`` (KPO's) replaces the copier's resources: a memory
    limit too small for four skopeo processes at once (a batch, ``parallel=4``; one alone fitted
    in 20Mi), which the kubelet sets on the container's cgroup and the kernel enforces."""
    name, tags = "lifecycle-oom", [f"4.2.{i}-oom" for i in range(4)]
    for tag in tags:
        lab.push_image(SOURCE_ACCOUNT, REPO, tag, seed=44)
    limit = "16Mi"
    resources = k8s.V1ResourceRequirements(requests={"cpu": "50m", "memory": limit}, limits={"memory": limit})
    task = operator(lab, name, tags[0], tags=tags, parallel=4, container_resources=resources)
    run = run_task_on_cluster(cluster, task=task)
    assert isinstance(run.error, EcrPromoteError), run.log[-30:]
    message = str(run.error)
    assert "OOMKilled" in message, message
    assert f"out of memory at its memory limit ({limit})" in message, message
    assert "container_resources" in message, message
    print(f"OOMKilled: {message!r}")
    timed(run, "OOMKilled")


def test_pod_no_node_can_take_fails_with_the_schedulers_reason(lab: Lab, cluster: Cluster) -> None:
    """A copier asking for more CPU than the node has: the real scheduler leaves the pod Pending
    (``Unschedulable``), KPO gives up at its timeout, and the task's failure says why, from the
    pod's ``PodScheduled`` condition, and which parameters to change (it said only "pod phase
    Pending" before, as 16 of the load test's 20 pods showed on a machine at load 37)."""
    name, tag = "lifecycle-unschedulable", "4.4.0-unschedulable"
    lab.push_image(SOURCE_ACCOUNT, REPO, tag, seed=46)
    resources = k8s.V1ResourceRequirements(requests={"cpu": "64", "memory": "32Mi"})
    timeouts = {"startup_timeout_seconds": 10, "startup_check_interval_seconds": 1}
    has_schedule_timeout = "schedule_timeout_seconds" in signature(KubernetesPodOperator).parameters
    if has_schedule_timeout:  # not in cncf-kubernetes 10.1.0 (Airflow 2.11's lower pin)
        timeouts["schedule_timeout_seconds"] = 10
    task = operator(lab, name, tag, container_resources=resources, **timeouts)
    run = run_task_on_cluster(cluster, task=task)
    assert isinstance(run.error, EcrPromoteError), run.log[-30:]
    message = str(run.error)
    assert "did not run its copier: the pod stayed Pending: no node took it" in message, message
    if has_schedule_timeout:
        assert "schedule_timeout_seconds (10 s)" in message, message
    assert "Unschedulable: 0/1 nodes are available: 1 Insufficient cpu" in message, message
    assert "container_resources" in message, message
    assert lab.digest(DEST_ACCOUNT, REPO, tag) is None
    wait_until("the pod is gone", lambda: not pods(cluster, name))
    print(f"Unschedulable: {message!r}")
    timed(run, "Unschedulable")


# ------------------------------------------------------------------ log streaming


def test_copier_log_reaches_the_task_log_while_the_copier_runs(lab: Lab, cluster: Cluster) -> None:
    """KPO follows the copier's log (``get_logs``): the copier's first line is in the task's log
    while the copier waits, seconds before it ends. The destination comes back only once the
    worker has logged that line, so the promotion succeeds only if the log streamed."""
    name, tag = "lifecycle-stream", "4.3.0-stream"
    digest = lab.push_image(SOURCE_ACCOUNT, REPO, tag, seed=45)
    run = TaskRun()
    seen: dict[str, float] = {}

    def restart_when_logged(done: threading.Event) -> None:
        while not done.is_set():
            line = next((at for at, text in list(run.stamped) if "[base]" in text and WAITING in text), None)
            if line is not None:
                seen["logged"] = line
                lab.start_registry(DEST_ACCOUNT)
                seen["restarted"] = time.time()
                return
            time.sleep(0.1)

    task = operator(lab, name, tag, on_finish_action="keep_pod", env_vars={"RETRY_DELAY": "5"})
    t0 = time.time()
    try:
        with destination_down(lab), in_background(restart_when_logged):
            run_task_on_cluster(cluster, task=task, run=run)
        assert run.error is None, "\n".join(run.log[-40:])
        assert run.result["digest"] == digest
        (pod,) = pods(cluster, name)
        finished = _epoch(copier_state(pod)["terminated"]["finishedAt"])
        started = _epoch(copier_state(pod)["terminated"]["startedAt"])
        written = cluster.kubectl(
            "logs", "-n", NAMESPACE, pod["metadata"]["name"], "-c", "base", "--timestamps"
        )
    finally:
        delete_pods(cluster, name)
    copier = [(at, text) for at, text in run.stamped if "[base]" in text]
    first_at, first = copier[0]
    # The copier's lines, in the order it wrote them, each logged by the worker as it came.
    wrote = [line.split(" ", 1)[1] for line in written.stdout.splitlines() if line.strip()]
    assert [text.split("[base] ", 1)[1].rstrip("\n") for _, text in copier] == wrote[: len(copier)]
    assert [at for at, _ in copier] == sorted(at for at, _ in copier)
    assert WAITING in first
    # A copier line reached the task's log while the copier waited to retry (KPO logs a line once
    # the next one begins, as a line may continue): the destination came back only after that, so
    # the copy could succeed only because the log streamed. The API's finishedAt is cut to whole
    # seconds, so a line logged before it was logged before the copier ended (the retry that
    # follows the restart may succeed within a second or two: no larger margin holds).
    assert "logged" in seen, "the copier's line never reached the task's log while it ran"
    assert seen["logged"] < finished, (seen, finished)
    assert copier[-1][0] >= finished - 1
    print(
        "log streaming: copier started {:.1f}s, first line in the task log {:.1f}s, registry back {:.1f}s,"
        " copier finished {:.1f}s, last line in the task log {:.1f}s (seconds after the task started)".format(
            *(t - t0 for t in (started, first_at, seen["restarted"], finished, copier[-1][0]))
        )
    )
    timed(run, "log streaming")


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
