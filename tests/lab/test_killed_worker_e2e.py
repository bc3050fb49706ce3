"""A worker killed while its promotion's copier runs (issue 22, item 4), on the lab's real Kubernetes.

The first try runs through Airflow's own task runner (``dag.test()``) in a child process
(tests/dag_run.py), against the real API server. The copier is kept busy by a destination that
answers every manifest PUT with ECR's 429 (the lab's throttle at rate 0): once the API server
reports the pod ``Running``, its copier container running, and the copier has logged a throttled
attempt it will try again, the child is SIGKILLed (no handler runs, nothing is cleaned up, as when
a node is lost). Then the retry: the scheduler's answer to a task whose process stopped
heart-beating (``up_for_retry``, ``try_number`` 2), run through the task runner in a new process.
It takes one of KPO's two paths, and the test decides which:

- ``reattach``: the throttle lifts only once the retry has found the first try's pod still running
  (KPO's ``reattach_on_restart``, ``durable`` on Airflow 3.3): the retry follows that pod to its end
  and reads its report; every copy is ``copied``, by the one pod.
- ``rerun``: the throttle lifts at the kill and the first try's pod finishes on its own before the
  retry starts: KPO deletes that finished pod and starts another, whose copier finds every copy
  ``present``.

Each in sync and deferrable mode. In deferrable mode the killed process is running the trigger
(``dag.test()`` runs it in the worker's process); on a real deployment a triggerer that dies
hands its triggers to another triggerer within the same try, so the retry here is the harder case.

Asserted each time: each tag's manifest written once (201s for ``PUT /v2/<repo>/manifests/<tag>``
in the destination registry's log: nothing written twice, with whatever digest), the source's
digests at the destination, a return value listing every copy with its digest, never two live
pods of the task at once, and the path KPO's log says it took.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import CoreV1Api

from tests.conftest import DEST_ACCOUNT, DEST_HOST, REPO, SOURCE_HOST
from tests.dag_run import DagRunProcess, migrated_db, retry_killed_run, start_dag_run

from .cluster import NAMESPACE, SERVICE_ACCOUNT, Cluster
from .lab import Lab
from .load import tag_writes
from .operator_run import DEST_CONN_ID, PULL_ROLE, PUSH_ROLE, SOURCE_CONN_ID, lab_connections
from .test_batch_scale_e2e import seeded_tags
from .test_promote_e2e import wait_until_ecr_api_reports

pytestmark = [pytest.mark.lab, pytest.mark.cluster, pytest.mark.timeout(600)]

DAG_ID = "ecr_lab_killed_worker"
DAG_FILE = REPO / "tests" / "dag_files" / "ecr_lab_killed_worker.py"
LABEL = "killed-worker-test"
WAITING = "trying again"  # the copy script's line before it waits to try a throttled copy again
REATTACHED = "Reusing existing pod"  # KPO's line when get_or_create_pod found the pod running
DELETED_FINISHED = "Deleted pod to handle rerun"  # KPO's line when it found it finished, deleted it


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_db(sys.executable, tmp_path_factory.mktemp("airflow-db"))


@pytest.fixture
def throttled_lab(lab: Lab) -> Iterator[Lab]:
    lab.reset_throttles()
    try:
        yield lab
    finally:
        lab.reset_throttles()


def wait_until(what: str, probe: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.5)


class PodWatch:
    """The task's pods as the API server lists them, every half second, in a thread: every name
    seen, and the most that were alive (not being deleted) at once."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        from kubernetes.config import new_client_from_config

        self.api = CoreV1Api(new_client_from_config(config_file=str(cluster.kubeconfig)))
        self.selector = f"{LABEL}={name}"
        self.names: list[str] = []
        self.most_alive = 0
        self.latest: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> PodWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def list(self) -> list[Any]:
        return list(self.api.list_namespaced_pod(NAMESPACE, label_selector=self.selector).items)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                pods = self.list()
            except Exception:  # the API server is busy; the next look will tell
                pods = self.latest
            self.latest = pods
            for pod in pods:
                if pod.metadata.name not in self.names:
                    self.names.append(pod.metadata.name)
            alive = [p for p in pods if p.metadata.deletion_timestamp is None]
            self.most_alive = max(self.most_alive, len(alive))
            self._stop.wait(0.5)

    def copier_waiting(self, cluster: Cluster) -> bool:
        """The pod is Running (the API server's phase), its copier is running and has logged a
        throttled attempt it will try again."""
        for pod in self.latest:
            statuses = {s.name: s for s in (pod.status.container_statuses or [])}
            base = statuses.get("base")
            if pod.status.phase != "Running" or base is None or base.state.running is None:
                continue
            log = cluster.kubectl("logs", "-n", NAMESPACE, pod.metadata.name, "-c", "base", check=False)
            if WAITING in log.stdout:
                return True
        return False

    def phase(self) -> str | None:
        return self.latest[0].status.phase if len(self.latest) == 1 else None


def promotion(lab: Lab, repo: str, tags: list[str], name: str, deferrable: bool) -> dict[str, Any]:
    return {
        "source_image": f"{SOURCE_HOST}/{repo}",
        "dest_image": f"{DEST_HOST}/{repo}",
        "tags": tags,
        "engine": "skopeo",
        "parallel": 4,
        "init_image": lab.init_image,
        "copier_image": lab.copier_image_for("skopeo"),
        "source_role_arn": PULL_ROLE,
        "dest_role_arn": PUSH_ROLE,
        "namespace": NAMESPACE,
        "service_account_name": SERVICE_ACCOUNT,
        "labels": {LABEL: name},
        "deferrable": deferrable,
        "startup_check_interval_seconds": 1,  # a cadence only: KPO reads a pending pod every 5 s
    }


def child_env(cluster: Cluster, kwargs: dict[str, Any]) -> dict[str, str]:
    """A worker's configuration: the cluster in ``kubernetes_default`` (Airflow's README Role)."""
    return {
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": cluster.airflow_connection(),
        "KUBECONFIG": str(cluster.dir / "airflow.kubeconfig"),
        "ECR_LAB_PROMOTION": json.dumps(kwargs),
    }


def checked_case(
    lab: Lab, cluster: Cluster, case: str, patch: int, **kwargs: Any
) -> tuple[str, str, list[str], dict[str, str], dict[str, str]]:
    """A sync case with the worker's ECR check (``dest_aws_conn_id``): three source tags
    ``9.<i>.<patch>`` in ``killed/<case>``. Returns the label's name, the repository, the tags,
    their digests and the worker's environment: the cluster, the promotion, the AWS connections
    (once the ECR API shows each source tag)."""
    name, repo = f"killed-{case}", f"killed/{case}"
    lab.create_repository(DEST_ACCOUNT, repo)
    tags = [f"9.{i}.{patch}" for i in range(3)]
    expected = seeded_tags(lab, repo, tags, images=3, seed=2950 + 25 * (patch - 1))
    promoted = promotion(lab, repo, tags, name, deferrable=False)
    promoted.update(kwargs, source_aws_conn_id=SOURCE_CONN_ID, dest_aws_conn_id=DEST_CONN_ID)
    with lab_connections(lab):
        for tag, digest in expected.items():
            wait_until_ecr_api_reports(SOURCE_CONN_ID, f"{SOURCE_HOST}/{repo}:{tag}", digest)
        connections = {k: os.environ[k] for k in os.environ if k.startswith("AIRFLOW_CONN_LAB_")}
        connections["AWS_CA_BUNDLE"] = os.environ["AWS_CA_BUNDLE"]
    return name, repo, tags, expected, {**child_env(cluster, promoted), **connections}


def kill_mid_copy(
    cluster: Cluster, pods: PodWatch, db: Path, tmp_path: Path, env: dict[str, str]
) -> DagRunProcess:
    """The first try, through the task runner in a child process, SIGKILLed once its pod's copier
    is retrying a throttled copy."""
    first = start_dag_run(sys.executable, db, tmp_path, dag_files=[DAG_FILE], dag_id=DAG_ID, env=env)

    def mid_copy() -> bool:
        assert first.process.poll() is None, f"the first try ended by itself:\n{first.output()[-4000:]}"
        return pods.copier_waiting(cluster)

    try:
        wait_until("the copier runs and retries a throttled copy", mid_copy, 240)
    finally:
        first.kill()
    assert first.process.returncode == -9, first.output()[-4000:]
    return first


def retry_reattached(lab: Lab, first: DagRunProcess, env: dict[str, str]) -> dict[str, Any]:
    """The retry, the throttle lifted once it has found the first try's pod still running."""
    report: dict[str, Any] = {}

    def run_retry() -> None:
        try:
            report.update(retry_killed_run(sys.executable, first.home, dag_id=DAG_ID, env=env))
        except Exception as error:  # asserted below, with the retry's output
            report["error"] = error

    thread = threading.Thread(target=run_retry, daemon=True)
    thread.start()
    log = first.home / "retry.log"

    def reattached() -> bool:
        return log.exists() and REATTACHED in log.read_text(errors="replace")

    try:
        wait_until("the retry finds the pod running", reattached, 240)
    finally:
        lab.reset_throttles()
        thread.join(timeout=400)
    assert "error" not in report, report.get("error")
    return report


def assert_promoted_once(
    lab: Lab, repo: str, tags: list[str], expected: dict[str, str], retry: dict[str, Any]
) -> list[dict[str, Any]]:
    """The retry succeeded as try 2, every copy listed with the source's digest, which the
    destination holds, each tag's manifest written once. Returns the entries."""
    output = retry["log"]
    assert retry["state"].endswith("success"), output[-6000:]
    assert retry["tries"] == {"promote[-1]": 2}
    assert "[retry] promote[-1] try 1: up_for_retry" in output
    entries: list[dict[str, Any]] = retry["xcoms"]["promote[-1].return_value"]["promotions"]
    assert [e["dest_image"] for e in entries] == [f"{DEST_HOST}/{repo}:{t}" for t in tags]
    assert [e["digest"] for e in entries] == [expected[t] for t in tags]
    assert all(e["digest_kept"] for e in entries), entries
    assert [lab.digest(DEST_ACCOUNT, repo, t) for t in tags] == [expected[t] for t in tags]
    assert tag_writes(lab, repo) == {t: 1 for t in tags}, "each tag's manifest written once"
    return entries


@pytest.mark.parametrize(
    ("mode", "path"),
    [
        ("sync", "reattach"),
        ("deferrable", "reattach"),
        ("sync", "rerun"),
        ("deferrable", "rerun"),
    ],
)
def test_a_worker_killed_mid_copy_is_retried_without_writing_anything_twice(
    throttled_lab: Lab, cluster: Cluster, db: Path, tmp_path: Path, mode: str, path: str
) -> None:
    lab = throttled_lab
    name = f"killed-{mode}-{path}"
    repo = f"killed/{mode}-{path}"
    lab.create_repository(DEST_ACCOUNT, repo)
    tags = [f"9.{i}.0" for i in range(3)]
    expected = seeded_tags(lab, repo, tags, images=3, seed=2900 + len(name))
    env = child_env(cluster, promotion(lab, repo, tags, name, mode == "deferrable"))
    # every manifest PUT refused with ECR's 429: the copier retries, with backoff, until lifted
    lab.set_throttle("ecr:PutImage", rate=0, burst=0, which=DEST_ACCOUNT)
    started = time.monotonic()
    with PodWatch(cluster, name) as pods:
        first = kill_mid_copy(cluster, pods, db, tmp_path, env)
        killed_at = time.monotonic() - started
        (killed_pod,) = pods.names
        if path == "rerun":  # the first try's pod finishes alone before the retry starts
            lab.reset_throttles()
            wait_until("the first try's pod finishes", lambda: pods.phase() == "Succeeded", 240)
            retry = retry_killed_run(sys.executable, first.home, dag_id=DAG_ID, env=env)
        else:
            retry = retry_reattached(lab, first, env)
        wait_until("the task's pods are gone", lambda: not pods.list(), 120)
    seconds = time.monotonic() - started

    entries = assert_promoted_once(lab, repo, tags, expected, retry)
    output = retry["log"]
    result = retry["xcoms"]["promote[-1].return_value"]
    assert pods.most_alive == 1, f"two pods of the task at once: {pods.names}"
    assert "mutually exclusive" not in output, "the trigger refused its cluster config"
    if path == "reattach":
        assert f"Reusing existing pod '{killed_pod}'" in output, output[-6000:]
        assert pods.names == [killed_pod], "no second pod"
        assert [e["status"] for e in entries] == ["copied"] * len(tags)
        assert result["retries"] > 0, "the first try's pod met the throttle"
    else:
        assert DELETED_FINISHED in output, output[-6000:]
        assert len(pods.names) == 2 and pods.names[0] == killed_pod
        assert [e["status"] for e in entries] == ["present"] * len(tags)
    via = "task state store" if "via identity persisted in task state store" in output else "labels"
    print(
        f"killed worker ({mode}, {path}): killed {killed_at:.1f}s after the start, pod found by {via}, "
        f"pods {pods.names}, statuses {[e['status'] for e in entries]}, retries {result['retries']}, "
        f"whole test {seconds:.1f}s"
    )


def test_a_retry_that_finds_a_copy_in_place_reads_the_reattached_pods_report_whole(
    throttled_lab: Lab, cluster: Cluster, db: Path, tmp_path: Path
) -> None:
    """With the worker's ECR check (``dest_aws_conn_id``): the first try's pod has written the first
    tag when the worker is killed. The retry's check finds that tag in place and builds a pod for
    the other two, but KPO reattaches to the first try's pod, which carries all three: its report
    must be read against the three it carries. Found by KPO's label search (the pod identity
    Airflow 3.3 stores is removed, as Airflow before 3.3 has none). Two fixes: that search left out
    the plan's labels, which name the first copy a pod carries (different for the retry: KPO found
    no pod and started a second one beside the first); and the report was read against the
    retry's two copies (the pod's first line, the first tag's, became the second tag's entry)."""
    lab = throttled_lab
    name, repo, tags, expected, env = checked_case(lab, cluster, "in-place", 1, parallel=1)
    # three manifest PUTs, then none: one copy at a time, skopeo writes the first tag whole (two
    # platform manifests and the index) and is throttled on the second
    lab.set_throttle("ecr:PutImage", rate=0, burst=3, start=3, which=DEST_ACCOUNT)
    with PodWatch(cluster, name) as pods:
        first = kill_mid_copy(cluster, pods, db, tmp_path, env)
        (killed_pod,) = pods.names
        assert lab.digest(DEST_ACCOUNT, repo, tags[0]) == expected[tags[0]]
        assert lab.digest(DEST_ACCOUNT, repo, tags[1]) is None
        with lab_connections(lab):
            dest = f"{DEST_HOST}/{repo}:{tags[0]}"
            wait_until_ecr_api_reports(DEST_CONN_ID, dest, expected[tags[0]])
        # KPO finds the pod by its labels, as before Airflow 3.3 (no task state store) or when the
        # store does not hold it: the pod identity Airflow 3.3 stored for the first try is removed
        with sqlite3.connect(first.home / "airflow.db") as connection:
            connection.execute("DELETE FROM task_state_store WHERE task_id = 'promote'")
        retry = retry_reattached(lab, first, env)
        wait_until("the task's pods are gone", lambda: not pods.list(), 120)

    entries = assert_promoted_once(lab, repo, tags, expected, retry)
    output = retry["log"]
    assert "1 of 3 images are already at their destination" in output, output[-6000:]
    assert f"Reusing existing pod '{killed_pod}'" in output
    assert "via identity persisted in task state store" not in output, "found by its labels"
    assert f"Reattached to pod {killed_pod}, started by an earlier try" in output
    assert pods.names == [killed_pod]
    # the pod copied all three (the first before the kill); none is reported as the retry saw it
    assert [e["status"] for e in entries] == ["copied"] * len(tags)
    print(f"killed worker, a copy in place at the retry: {[(e['status'], e['retries']) for e in entries]}")


def test_a_retry_that_finds_every_copy_in_place_ends_the_first_trys_pod(
    throttled_lab: Lab, cluster: Cluster, db: Path, tmp_path: Path
) -> None:
    """With the worker's ECR check: the first try's pod finishes every copy after its worker was
    killed, so the retry's check finds all of them in place and starts no pod. The first try's pod
    ends as the task's own pod would (``on_finish_action``, here ``delete_pod``): it was left
    behind before, as no KPO code ran to reattach to it or delete it."""
    lab = throttled_lab
    name, repo, tags, expected, env = checked_case(lab, cluster, "all-in-place", 2)
    lab.set_throttle("ecr:PutImage", rate=0, burst=0, which=DEST_ACCOUNT)
    with PodWatch(cluster, name) as pods:
        first = kill_mid_copy(cluster, pods, db, tmp_path, env)
        (killed_pod,) = pods.names
        lab.reset_throttles()
        wait_until("the first try's pod finishes", lambda: pods.phase() == "Succeeded", 240)
        with lab_connections(lab):
            for tag in tags:
                wait_until_ecr_api_reports(DEST_CONN_ID, f"{DEST_HOST}/{repo}:{tag}", expected[tag])
        retry = retry_killed_run(sys.executable, first.home, dag_id=DAG_ID, env=env)
        # the retry deletes it before it ends: gone at the next look or two of the watch
        wait_until("the first try's pod is gone", lambda: not pods.list(), 30)

    entries = assert_promoted_once(lab, repo, tags, expected, retry)
    output = retry["log"]
    assert "All 3 images are already at their destination" in output, output[-6000:]
    assert f"Pod {killed_pod}, started by an earlier try, is Succeeded" in output, output[-6000:]
    assert f"Deleting pod: {killed_pod}" in output
    assert pods.names == [killed_pod], "the retry started no pod"
    assert [e["status"] for e in entries] == ["present"] * len(tags)
