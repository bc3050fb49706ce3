"""Run DAGs through Airflow's own task runner (``dag.test()``), each run in a process of its own.

A run gets a fresh ``AIRFLOW_HOME`` holding a copy of a migrated SQLite metadata DB, so runs share
no state with each other or with other test sessions, and Airflow reads its configuration
(``[ecr_promote]`` options, connections) from that run's environment. The promotion pods are
answered with the statuses a kubelet reports after a successful copy (``pods="canned"``) or played
by podman in the lab (``pods="lab"``), both behind a stand-in for the Kubernetes API
(tests/kube_stand_in.py), where a Deployment patch is recorded; or they run on the lab's real
Kubernetes (``pods="cluster"``: nothing stood in for, the run's environment names the cluster in
``kubernetes_default``). Everything above the API (the task runner, KPO, the operator, XCom,
asset events) is Airflow's own.

A worker killed mid-task: :func:`start_dag_run` gives the running child (its log written as it
runs), which the test kills; :func:`retry_killed_run` then does in the same ``AIRFLOW_HOME`` what
the scheduler does for a task whose process stopped heart-beating (a retry while tries remain) and
runs that retry through the task runner, ``try_number`` incremented as the scheduler does.

After the DAG run, DAGs scheduled on the assets it produced get their runs from the scheduler's
own code (``SchedulerJobRunner._create_dagruns_for_dags``) and run the same way. The child
prints one JSON document: task states, XComs, asset events, link XComs, consumer runs.

Parent side: :func:`migrated_db` once per session, then :func:`run_dags`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests.run_state import UNREACHABLE_KUBECONFIG

REPO = Path(__file__).resolve().parent.parent
MARK = "DAG-RUN-RESULT "


def base_env(home: Path, dags_folder: Path) -> dict[str, str]:
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text(UNREACHABLE_KUBECONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "KUBECONFIG": str(kubeconfig),
            "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(
                {
                    "conn_type": "kubernetes",
                    "extra": {"in_cluster": False, "kube_config_path": str(kubeconfig)},
                }
            ),
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def migrated_db(python: str, workdir: Path) -> Path:
    """A metadata DB migrated by ``airflow db migrate`` (about 12 s), to copy into each run."""
    home = workdir / "template-home"
    home.mkdir(parents=True, exist_ok=True)
    env = base_env(home, home / "dags")
    done = subprocess.run(
        [python, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return home / "airflow.db"


def run_dags(
    python: str,
    db: Path,
    workdir: Path,
    *,
    dag_files: list[Path],
    dag_id: str,
    conf: dict[str, Any] | None = None,
    pods: str = "canned",
    lab_state: str | None = None,
    mark_success: str | None = None,
    run_consumers: bool = False,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> dict[str, Any]:
    """Run ``dag_id`` (from copies of ``dag_files``) with ``dag.test()`` in a child process."""
    home = _new_home(db, workdir, dag_id, dag_files)
    spec = {
        "dag_id": dag_id,
        "conf": conf,
        "pods": pods,
        "lab_state": lab_state,
        "mark_success": mark_success,
        "run_consumers": run_consumers,
    }
    done = subprocess.run(
        [python, "-m", "tests.dag_run", json.dumps(spec)],
        env=_child_env(home, env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return _result(home / "run.log", done.returncode, done.stdout, done.stderr)


def _new_home(db: Path, workdir: Path, dag_id: str, dag_files: list[Path]) -> Path:
    home = workdir / f"home-{dag_id}-{time.monotonic_ns()}"
    dags_folder = home / "dags"
    dags_folder.mkdir(parents=True)
    for file in dag_files:
        shutil.copy(file, dags_folder / file.name)
    shutil.copy(db, home / "airflow.db")
    return home


def _child_env(home: Path, env: dict[str, str] | None) -> dict[str, str]:
    return {**base_env(home, home / "dags"), **(env or {})}


def _result(log: Path, returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    """The child's report (its last ``MARK`` line), with its whole output as ``log``."""
    lines = [line for line in stdout.splitlines() if line.startswith(MARK)]
    if returncode != 0 or not lines:
        raise RuntimeError(f"dag run failed (exit {returncode}):\n{stdout[-6000:]}\n{stderr[-6000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len(MARK) :])
    result["log"] = stdout + stderr
    log.write_text(result["log"])
    return result


@dataclass
class DagRunProcess:
    """A DAG run's child process, started by :func:`start_dag_run`; its output goes to ``log`` as
    it runs (a file, so that nothing blocks on a pipe the test does not read)."""

    process: subprocess.Popen[bytes]
    home: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL, as a node lost or an OOM kill ends a worker: no handler, no cleanup runs. The
        child leads its own process group (anything it started goes with it)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)


def start_dag_run(
    python: str,
    db: Path,
    workdir: Path,
    *,
    dag_files: list[Path],
    dag_id: str,
    conf: dict[str, Any] | None = None,
    pods: str = "cluster",
    env: dict[str, str] | None = None,
) -> DagRunProcess:
    """Start ``dag_id``'s run (``dag.test()``) in a child process and return at once."""
    home = _new_home(db, workdir, dag_id, dag_files)
    spec = {"dag_id": dag_id, "conf": conf, "pods": pods, "lab_state": None, "mark_success": None,
            "run_consumers": False}  # fmt: skip
    return _start_child(python, home, spec, env, home / "first-try.log")


def retry_killed_run(
    python: str, home: Path, *, dag_id: str, pods: str = "cluster", env: dict[str, str] | None = None,
    timeout: float = 600,
) -> dict[str, Any]:  # fmt: skip
    """After the run in ``home`` was killed: the scheduler's answer to its task instances left
    running (a retry while tries remain, else failed), then the run's remaining tries, through
    the task runner in a new child process. Returns the child's report; its output is written to
    ``home/retry.log`` as it runs."""
    spec = {"dag_id": dag_id, "pods": pods, "retry_killed": True}
    child = _start_child(python, home, spec, env, home / "retry.log")
    try:
        returncode = child.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        raise
    return _result(home / "retry-report.log", returncode, child.output(), "")


def _start_child(
    python: str, home: Path, spec: dict[str, Any], env: dict[str, str] | None, log: Path
) -> DagRunProcess:
    """``python -m tests.dag_run SPEC`` in a session of its own, its output going to ``log``."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [python, "-m", "tests.dag_run", json.dumps(spec)],
            env=_child_env(home, env),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return DagRunProcess(process, home, log)


# ------------------------------------------------------------------------------------ child side


def canned_digest(image: str) -> str:
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()


def _canned(pod: Any) -> Any:
    """A kubelet's report of a successful skopeo/crane pod: one ``copied`` line per copy."""
    from tests.kube_stand_in import finished, terminated

    base = next(c for c in pod.spec.containers if c.name == "base")
    env = {e.name: e.value for e in base.env or []}
    lines = []
    for n, line in enumerate(env["COPIES"].splitlines(), start=1):
        # A batch line is a bare tag of SOURCE_REPO (airflow_ecr_promote.copylist).
        source = line.split(" ")[0] if " " in line else f"{env['SOURCE_REPO']}:{line}"
        digest = canned_digest(source.split("@")[0])
        lines.append(f"{n} copied {digest} {digest}")
    init = [terminated(c.name, 0) for c in pod.spec.init_containers or []]
    return finished(pod, init, [terminated("base", 0, "\n".join(lines) + "\n")])


def _lab_runner(state: str) -> Any:
    from kubernetes.client import ApiClient

    from tests.lab.lab import Lab
    from tests.lab.runner import play_pod

    lab = Lab.attach(state)

    def play(pod: Any) -> Any:
        outcome = play_pod(lab, ApiClient().sanitize_for_serialization(pod))
        for container in [*outcome.init_containers, *outcome.containers]:
            for line in container.logs.splitlines():
                print(f"[pod {pod.metadata.name} {container.name}] {line}", flush=True)
        return outcome.as_v1pod(pod)

    return play


@contextmanager
def _counted_pods() -> Iterator[Any]:
    """The pods the run creates, counted as KPO creates them on a real API server (the call goes
    through unchanged)."""
    from kubernetes.client import CoreV1Api

    created: list[str] = []
    create = CoreV1Api.create_namespaced_pod

    def create_namespaced_pod(self: Any, namespace: str, body: Any, **kwargs: Any) -> Any:
        pod = create(self, namespace, body, **kwargs)
        created.append(f"{namespace}/{pod.metadata.name}")
        return pod

    CoreV1Api.create_namespaced_pod = create_namespaced_pod  # type: ignore[method-assign]
    try:
        yield SimpleNamespace(created=created)
    finally:
        CoreV1Api.create_namespaced_pod = create  # type: ignore[method-assign]


def _airflow3() -> bool:
    from airflow import __version__

    return int(__version__.split(".")[0]) >= 3


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _xcom_value(model: Any, row: Any) -> Any:
    if isinstance(row.value, bytes):
        return _jsonable(model.deserialize_value(row))
    # Airflow 2.11: rows still in the session hold the value as pushed; a reloaded one, JSON text.
    if isinstance(row.value, str):
        try:
            return json.loads(row.value)
        except ValueError:
            return row.value
    return _jsonable(row.value)


def _collect(dag_id: str, run_id: str, session: Any) -> dict[str, Any]:
    from airflow.models.taskinstance import TaskInstance

    if _airflow3():
        from airflow.models.asset import AssetEvent
        from airflow.models.xcom import XComModel as XComRow

        events = session.query(AssetEvent).filter(AssetEvent.source_dag_id == dag_id).all()
        asset_events = [
            {
                "uri": e.asset.uri,
                "extra": e.extra,
                "task_id": e.source_task_id,
                "run_id": e.source_run_id,
                "timestamp": e.timestamp.isoformat(),
            }
            for e in events
        ]
    else:
        from airflow.models.dataset import DatasetEvent
        from airflow.models.xcom import BaseXCom as XComRow  # type: ignore[assignment,no-redef]

        events = session.query(DatasetEvent).filter(DatasetEvent.source_dag_id == dag_id).all()
        asset_events = [
            {
                "uri": e.dataset.uri,
                "extra": e.extra,
                "task_id": e.source_task_id,
                "run_id": e.source_run_id,
                "timestamp": e.timestamp.isoformat(),
            }
            for e in events
        ]
    tis = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
    xcoms = session.query(XComRow).filter(XComRow.dag_id == dag_id, XComRow.run_id == run_id)
    return {
        "run_id": run_id,
        "states": {f"{t.task_id}[{t.map_index}]": str(t.state) for t in tis},
        "tries": {f"{t.task_id}[{t.map_index}]": t.try_number for t in tis},
        "xcoms": {f"{x.task_id}[{x.map_index}].{x.key}": _xcom_value(XComRow, x) for x in xcoms},
        "asset_events": [e for e in asset_events if e["run_id"] == run_id],
    }


def _run_existing(dag: Any, dag_run: Any, session: Any) -> None:
    """Run the tasks of a run the scheduler created, with the loop ``dag.test()`` uses."""
    from airflow.utils.state import DagRunState, TaskInstanceState

    if _airflow3():
        from airflow.models.dagbag import DBDagBag
        from airflow.sdk.definitions.dag import _run_task

        dag_run.dag = DBDagBag().get_dag_for_run(dag_run, session=session)
    else:
        from airflow.models.dag import _run_task  # type: ignore[attr-defined,no-redef]

        dag_run.dag = dag
    dag_run.state = DagRunState.RUNNING
    session.commit()
    for _ in range(50):
        if dag_run.state != DagRunState.RUNNING:
            return
        session.expire_all()
        schedulable, _ = dag_run.update_state(session=session)
        for ti in schedulable:
            ti.try_number += 1
            ti.state = TaskInstanceState.SCHEDULED
        session.commit()
        for ti in [t for t in dag_run.get_task_instances(session=session) if t.state == "scheduled"]:
            if _airflow3():
                _run_task(ti=ti, task=dag.task_dict[ti.task_id], run_triggerer=True)
            else:
                ti.task = dag.task_dict[ti.task_id]
                _run_task(ti=ti, inline_trigger=True, session=session)
    raise RuntimeError(f"run {dag_run.run_id} of {dag.dag_id} did not finish")


def _consumer_runs(bag: Any, producer: str, session: Any) -> list[dict[str, Any]]:
    """Create the asset-triggered runs the scheduler would, run them, report them."""
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.dagrun import DagRun
    from airflow.utils.sqlalchemy import prohibit_commit

    with prohibit_commit(session) as guard:
        SchedulerJobRunner(job=Job())._create_dagruns_for_dags(guard, session)
    session.commit()
    reports = []
    runs = session.query(DagRun).filter(DagRun.dag_id != producer).all()
    for dag_run in runs:
        dag = bag.get_dag(dag_run.dag_id)
        _run_existing(dag, dag_run, session)
        report = _collect(dag_run.dag_id, dag_run.run_id, session)
        report["dag_id"] = dag_run.dag_id
        report["run_type"] = str(dag_run.run_type)
        report["state"] = str(dag_run.state)
        fresh = session.query(DagRun).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).one()
        consumed = getattr(fresh, "consumed_asset_events", None) or fresh.consumed_dataset_events
        report["consumed"] = [{"extra": e.extra, "timestamp": e.timestamp.isoformat()} for e in consumed]
        reports.append(report)
    return reports


def _retry_killed(dag: Any, session: Any) -> Any:
    """The run of ``dag`` whose worker was killed: each task instance it left running, queued or
    deferred fails as the scheduler fails one that stopped heart-beating (``handle_failure``, as
    the callback of SchedulerJobRunner._purge_task_instances_without_heartbeats runs it: a retry
    while tries remain, the try recorded in the history), then the run goes on as the scheduler
    would run it, each retry with ``try_number`` + 1."""
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.utils.state import TaskInstanceState

    dag_run = session.query(DagRun).filter(DagRun.dag_id == dag.dag_id).one()
    serialized = DBDagBag().get_dag_for_run(dag_run, session=session)
    left = (TaskInstanceState.RUNNING, TaskInstanceState.QUEUED, TaskInstanceState.DEFERRED)
    for ti in dag_run.get_task_instances(session=session):
        if ti.state in left:
            was = ti.try_number
            ti.task = serialized.get_task(ti.task_id)
            ti.handle_failure("its worker stopped heart-beating (killed)", test_mode=False, session=session)
            print(f"[retry] {ti.task_id}[{ti.map_index}] try {was}: {ti.state}", flush=True)
    session.commit()
    _run_existing(dag, dag_run, session)
    return dag_run


def main(spec: dict[str, Any]) -> None:
    from unittest.mock import patch

    from kubernetes.client import AppsV1Api

    from tests.airflow_context import DagBag
    from tests.kube_stand_in import kubernetes_stand_in

    if spec["pods"] == "cluster":  # the lab's real Kubernetes, named by the environment's connection
        pods: Any = _counted_pods()
    else:
        pods = kubernetes_stand_in(_lab_runner(spec["lab_state"]) if spec["pods"] == "lab" else _canned)
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    if not _airflow3():
        bag.sync_to_db()  # Airflow 3's dag.test() syncs the DAG folder itself
    dag = bag.get_dag(spec["dag_id"])
    deployments: list[dict[str, Any]] = []

    def patch_deployment(self: Any, name: str, namespace: str, body: Any, **kwargs: Any) -> Any:
        deployments.append({"name": name, "namespace": namespace, "body": body})
        return body

    from airflow.settings import Session

    with (
        pods as cluster,
        patch.object(AppsV1Api, "patch_namespaced_deployment", patch_deployment),
    ):
        session = Session()
        if spec.get("retry_killed"):
            dag_run = _retry_killed(dag, session)
        else:
            dag_run = dag.test(run_conf=spec.get("conf"), mark_success_pattern=spec.get("mark_success"))
        result = _collect(dag.dag_id, dag_run.run_id, session)
        result["state"] = str(dag_run.state)
        result["consumers"] = _consumer_runs(bag, dag.dag_id, session) if spec.get("run_consumers") else []
    result["pods"] = len(cluster.created)
    result["deployments"] = deployments
    print(MARK + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
