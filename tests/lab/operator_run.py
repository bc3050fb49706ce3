"""Run an example DAG's task through the operator, with the lab as its cluster.

The task is loaded from the example DAGs with Airflow's DagBag, rendered with a real context
(the lab's images chosen through the operator's own ``init_image`` / ``copier_image``
parameters), and executed by KubernetesPodOperator's own ``execute``.

``run_task(cluster, ...)`` runs it on the lab's real Kubernetes (tests/lab/cluster.py): KPO talks
to the API server through Airflow's ``kubernetes_default`` connection, a real kubelet runs the
pod, and nothing is stood in for. The run's record (``TaskRun.outcomes``: exit codes, reasons,
termination messages, start and finish times, logs, and what containerd applied of the security
context) is read from the API server and containerd just before KPO deletes the pod.

``run_task(lab, ...)`` is the older path, kept for the tests that still need it: only the
Kubernetes API is stood in for (tests/kube_stand_in.py), the pod KPO builds is played by podman
(tests/lab/runner.py), and its status is what KPO reads back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache, partial
from typing import TYPE_CHECKING, Any

from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

from airflow_ecr_promote.compat import TaskDeferred
from tests.airflow_context import make_context, temporary_environ
from tests.conftest import REPO
from tests.kube_stand_in import kubernetes_stand_in

from .cluster import Cluster
from .images import REPO_PREFIX
from .runner import ContainerOutcome, PodOutcome, play_pod

if TYPE_CHECKING:
    from .lab import Lab


@dataclass
class TaskRun:
    result: Any = None
    error: BaseException | None = None
    pods: list[k8s.V1Pod] = field(default_factory=list)
    outcomes: list[PodOutcome] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    pushed: dict[str, Any] = field(default_factory=dict)
    rendered: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    log_reads: list[str] = field(default_factory=list)
    # (time.time() when the worker logged it, the line), appended as the task logs: a watcher
    # thread sees a line as soon as the worker logs it, and a test can order lines in time
    stamped: list[tuple[float, str]] = field(default_factory=list)

    @property
    def copier_seconds(self) -> float | None:
        """The last pod's copier container alone, start to finish (None when it did not run)."""
        copier = self.outcomes[-1].container("base") if self.outcomes else None
        if copier is None or not (copier.started_at and copier.finished_at):
            return None
        return float((copier.finished_at - copier.started_at).total_seconds())


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str], stamped: list[tuple[float, str]]) -> None:
        super().__init__(logging.DEBUG)
        self.lines, self.stamped = lines, stamped

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.stamped.append((record.created, record.getMessage()))


def _event_text(event: Any) -> str:
    text = str(event.get("event", ""))
    args = event.get("positional_args")
    with suppress(TypeError, ValueError):
        text = text % tuple(args) if args else text
    return " ".join([text, *(f"{k}={v}" for k, v in event.items() if k not in ("event", "positional_args"))])


@contextmanager
def captured_task_log(lines: list[str], stamped: list[tuple[float, str]] | None = None) -> Iterator[None]:
    """Everything logged while the task runs: structlog events (Airflow 3) and stdlib records;
    ``stamped`` gets each line with the time it was logged, as it is logged."""
    stamped = [] if stamped is None else stamped
    handler = _ListHandler(lines, stamped)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        try:
            import structlog.testing
        except ImportError:  # Airflow 2.11 logs through the standard library only
            yield
            return

        def stamp(_logger: Any, _method: str, event: Any) -> Any:
            stamped.append((time.time(), _event_text(event)))
            return event

        with structlog.testing.capture_logs(processors=[stamp]) as events:
            try:
                yield
            finally:  # a task that failed logged too
                lines.extend(_event_text(event) for event in events)
    finally:
        root.removeHandler(handler)


@cache
def example_dags() -> Any:
    from tests.airflow_context import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "examples"))
    if bag.import_errors:
        raise RuntimeError(f"example DAGs failed to import: {bag.import_errors}")
    return bag


SOURCE_CONN_ID, DEST_CONN_ID = "lab_source", "lab_dest"


@contextmanager
def lab_connections(lab: Lab) -> Iterator[None]:
    """Airflow AWS connections ``lab_source`` / ``lab_dest`` to the lab's ECR API (moto), as a
    worker would have them: the base identity assuming each account's ``ecr-promote-read`` role,
    whose policy is the package's compare-digests, list-tags, sensor and scan-gate policies."""
    from .moto_iam import BASE_ACCESS_KEY_ID, BASE_SECRET_ACCESS_KEY, READ_ROLE_ARNS
    from .paths import DESTINATION, SOURCE

    def connection(role_arn: str, region: str) -> str:
        extra = {
            "role_arn": role_arn,
            "region_name": region,
            "endpoint_url": lab.moto_endpoint,
            "service_config": {"sts": {"endpoint_url": lab.moto_endpoint}},
        }
        login = {"login": BASE_ACCESS_KEY_ID, "password": BASE_SECRET_ACCESS_KEY}
        return json.dumps({"conn_type": "aws", **login, "extra": extra})

    source, dest = READ_ROLE_ARNS[SOURCE.account_id], READ_ROLE_ARNS[DESTINATION.account_id]
    values = {
        f"AIRFLOW_CONN_{SOURCE_CONN_ID.upper()}": connection(source, SOURCE.region),
        f"AIRFLOW_CONN_{DEST_CONN_ID.upper()}": connection(dest, DESTINATION.region),
        "AWS_CA_BUNDLE": str(lab.ca_bundle),  # the lab CA, as a worker trusts a private CA
    }
    with temporary_environ(values):
        yield


def lab_conf(lab: Lab, **conf: Any) -> dict[str, Any]:
    """A dag_run.conf for the on-demand example that uses the lab's images (the copier image of
    ``conf["engine"]``, skopeo when no engine is given)."""
    engine = str(conf.get("engine") or "skopeo")
    return {"init_image": lab.init_image, "copier_image": lab.copier_image_for(engine), **conf}


def run_task(
    where: Lab | Cluster,
    *,
    dag_id: str = "ecr_promote_on_demand",
    task_id: str = "promote",
    conf: dict[str, Any] | None = None,
    prepare: Any = None,
    task: Any = None,
    pod_timeout: float = 300.0,
    trigger_timeout: float = 240.0,
    run: TaskRun | None = None,
) -> TaskRun:
    """Render and execute the task on ``where``: the lab's real Kubernetes (a ``Cluster``), or
    podman behind the API stand-in (a ``Lab``). ``prepare(pod) -> pod`` may adjust the pod before
    it is created. On podman a pod still running after ``pod_timeout`` seconds is stopped
    (DeadlineExceeded); on the cluster the test's own timeout bounds the run, a deferring
    task's trigger must fire within ``trigger_timeout`` seconds, and ``run`` may be the TaskRun
    to fill (a test's thread may watch its ``stamped`` log while the task runs)."""
    if isinstance(where, Cluster):
        return _run_on_cluster(
            where, dag_id=dag_id, task_id=task_id, conf=conf, prepare=prepare, task=task,
            trigger_timeout=trigger_timeout, run=run,
        )  # fmt: skip
    return _run_on_podman(
        where, dag_id=dag_id, task_id=task_id, conf=conf, prepare=prepare, task=task, pod_timeout=pod_timeout
    )


def _run_on_podman(
    lab: Lab,
    *,
    dag_id: str,
    task_id: str,
    conf: dict[str, Any] | None,
    prepare: Any,
    task: Any,
    pod_timeout: float,
) -> TaskRun:
    run = TaskRun()
    if task is None:
        task = example_dags().dags[dag_id].get_task(task_id)
    task = task.prepare_for_execution()
    context = make_context(task, conf=conf)
    task.render_template_fields(context)
    operator = context["task"]
    run.rendered = {name: getattr(operator, name, None) for name in operator.template_fields}

    logs: dict[str, str] = {}

    def play(pod: k8s.V1Pod) -> k8s.V1Pod:
        if prepare is not None:
            pod = prepare(pod)
        run.pods.append(pod)
        outcome = play_pod(lab, ApiClient().sanitize_for_serialization(pod), timeout=pod_timeout)
        run.outcomes.append(outcome)
        logs.clear()
        logs.update({c.name: c.logs for c in outcome.containers if c.terminated})
        for container in [*outcome.init_containers, *outcome.containers]:
            for line in container.logs.splitlines():
                operator.log.info("[%s] %s", container.name, line)
        return outcome.as_v1pod(pod)

    with _recorded(run, context):
        with captured_task_log(run.log), kubernetes_stand_in(play, logs.get) as stand_in:
            run.log_reads = stand_in.log_reads
            run.result = operator.execute(context)
    return run


def run_task_on_cluster(cluster: Cluster, **kwargs: Any) -> TaskRun:
    """``run_task`` on the lab's real Kubernetes."""
    return run_task(cluster, **kwargs)


def run_mapped_on_cluster(cluster: Cluster, task: Any, count: int, *, limit: int) -> list[TaskRun]:
    """Map indexes 0 to ``count`` - 1 of the mapped ``task``, each rendered for its index and run by
    KPO's own ``execute`` on the cluster, at most ``limit`` at once: what an Airflow pool of
    ``limit`` slots lets through, the tasks here threads of this process rather than one worker
    process each. Not deferrable. Returns each index's run, in order."""
    runs = [TaskRun() for _ in range(count)]
    prepared = []
    for index, run in enumerate(runs):  # rendered one by one, as each task runner would
        instance = task.prepare_for_execution()
        context = make_context(instance, map_index=index)
        instance.render_template_fields(context)
        operator = context["task"]
        run.rendered = {name: getattr(operator, name, None) for name in operator.template_fields}
        _PodRecorder(cluster, run, None).attach(operator)
        prepared.append((operator, context, run))

    def execute(operator: Any, context: dict[str, Any], run: TaskRun) -> None:
        with _recorded(run, context):
            run.result = operator.execute(context)

    connection = {
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": cluster.airflow_connection(),
        "KUBECONFIG": str(cluster.dir / "airflow.kubeconfig"),
    }
    with temporary_environ(connection), ThreadPoolExecutor(max_workers=limit) as pool:
        for done in [pool.submit(execute, *item) for item in prepared]:
            done.result()
    return runs


def _run_on_cluster(
    cluster: Cluster,
    *,
    dag_id: str,
    task_id: str,
    conf: dict[str, Any] | None,
    prepare: Any,
    task: Any,
    trigger_timeout: float,
    run: TaskRun | None,
) -> TaskRun:
    """KPO's own code talks to the API server through Airflow's ``kubernetes_default``
    connection, which names the cluster's kubeconfig; nothing is stood in for. A deferring
    task's trigger (KPO's own, polling the real API server) runs here until its first event,
    within ``trigger_timeout`` seconds, and a new instance of the task resumes with it."""
    run = TaskRun() if run is None else run
    if task is None:
        task = example_dags().dags[dag_id].get_task(task_id)
    original, task = task, task.prepare_for_execution()
    context = make_context(task, conf=conf)
    task.render_template_fields(context)
    operator = context["task"]
    run.rendered = {name: getattr(operator, name, None) for name in operator.template_fields}
    recorder = _PodRecorder(cluster, run, prepare)
    recorder.attach(operator)
    with _recorded(run, context):
        connection = {"AIRFLOW_CONN_KUBERNETES_DEFAULT": cluster.airflow_connection()}
        # The test run's KUBECONFIG names an unreachable dummy (tests/run_state.py). A worker or
        # triggerer that talks to one cluster names it there too; and KPO's async hook (provider
        # 10.1.0, Airflow 2.11) fell back to it after a re-deferral, ignoring the connection.
        connection["KUBECONFIG"] = str(cluster.dir / "airflow.kubeconfig")
        with captured_task_log(run.log, run.stamped), temporary_environ(connection):
            run.result = _resume_until_done(
                original,
                context,
                lambda: operator.execute(context),
                run.log,
                trigger_timeout,
                recorder.attach,
            )
    return run


@contextmanager
def _recorded(run: TaskRun, context: dict[str, Any]) -> Iterator[None]:
    """Around a task's execution: its time, its error (kept for the caller to assert on, not
    raised) and what it pushed to XCom."""
    started = time.monotonic()
    try:
        yield
    except Exception as error:
        interrupted = _interrupted(error)
        if interrupted is not None:
            raise interrupted from error
        run.error = error
        run.log.append(str(error))
    finally:
        run.seconds = time.monotonic() - started
        run.pushed = dict(context["ti"].pushed)


def _interrupted(error: BaseException) -> BaseException | None:
    """A test's timeout (pytest-timeout's failure) or an interrupt that the task's own error
    replaced: KPO's cleanup runs in a ``finally`` and raises the promotion's failure over it, so a
    task that hung until the timeout looked like a task that failed as expected (a signature test
    passed after 911 s)."""
    from _pytest.outcomes import OutcomeException

    seen: set[int] = set()
    cause = error.__context__
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OutcomeException | KeyboardInterrupt):
            return cause
        seen.add(id(cause))
        cause = cause.__context__
    return None


class _PodRecorder:
    """Fills a ``TaskRun`` from the real cluster, around three of the operator's own steps (the
    instance's methods are wrapped; what they do is unchanged):

    - ``build_pod_request_obj``: the pod as built (after ``prepare``) is recorded, and the lab
      images it names are imported into containerd (a cluster pulls them; this one cannot);
    - ``process_pod_deletion``: just before KPO deletes the pod, its status, every container's
      log (through the API, as cluster-admin) and what containerd applied are read;
    - ``_copier_log``: the operator read the copier's log through the API (``log_reads``).
    """

    def __init__(self, cluster: Cluster, run: TaskRun, prepare: Any) -> None:
        from kubernetes.config import new_client_from_config

        self.cluster, self.run, self.prepare = cluster, run, prepare
        self.api = CoreV1Api(new_client_from_config(config_file=str(cluster.kubeconfig)))

    def attach(self, operator: Any) -> None:
        # KPO reads a pending pod every 5 s by default; every pod here starts pending (its init
        # containers), so that cadence alone would add seconds to each test. A cadence, not a
        # behaviour: the lab reads every second.
        operator.startup_check_interval_seconds = 1
        build, delete = operator.build_pod_request_obj, operator.process_pod_deletion
        copier_log = getattr(operator, "_copier_log", None)

        def build_pod_request_obj(context: Any = None, *args: Any, **kwargs: Any) -> k8s.V1Pod:
            pod = build(context, *args, **kwargs)
            if kwargs.get("dry_run"):
                return pod
            if self.prepare is not None:
                pod = self.prepare(pod)
            self.run.pods.append(pod)
            named = [c.image for c in [*(pod.spec.init_containers or []), *pod.spec.containers]]
            self.cluster.import_images(*(i for i in named if i and i.startswith(REPO_PREFIX + "/")))
            return pod

        def process_pod_deletion(pod: k8s.V1Pod | None, *args: Any, **kwargs: Any) -> Any:
            if pod is not None and pod.metadata is not None and pod.metadata.name:
                try:
                    self.record(pod.metadata.name, pod.metadata.namespace)
                except Exception as error:  # the task's own outcome must not be masked
                    self.run.log.append(f"lab: could not record pod {pod.metadata.name}: {error!r}")
            return delete(pod, *args, **kwargs)

        operator.build_pod_request_obj = build_pod_request_obj
        operator.process_pod_deletion = process_pod_deletion
        if copier_log is not None:

            def _copier_log(pod: k8s.V1Pod) -> Any:
                self.run.log_reads.append(str(operator.base_container_name))
                return copier_log(pod)

            operator._copier_log = _copier_log

    def record(self, name: str, namespace: str) -> None:
        """The pod's status, logs and applied settings, appended to ``run.outcomes``."""
        try:
            pod = self.api.read_namespaced_pod(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return  # gone already (deleted by someone else)
            raise
        status = pod.status or k8s.V1PodStatus()
        outcome = PodOutcome(name, str(status.phase or "Unknown"))
        for specs, statuses, init in (
            (pod.spec.init_containers or [], status.init_container_statuses or [], True),
            (pod.spec.containers, status.container_statuses or [], False),
        ):
            by_name = {s.name: s for s in statuses}
            for spec in specs:
                got = self._container(pod, spec, by_name.get(spec.name), init)
                (outcome.init_containers if init else outcome.containers).append(got)
        outcome.memory_peak = self.cluster.pod_memory_peak(pod)
        self.run.outcomes.append(outcome)

    def _container(
        self, pod: k8s.V1Pod, spec: k8s.V1Container, status: k8s.V1ContainerStatus | None, init: bool
    ) -> ContainerOutcome:
        out = ContainerOutcome(name=spec.name, image=spec.image or "", init=init)
        state = status.state if status is not None else None
        if state is not None and state.terminated is not None:
            done = state.terminated
            out.exit_code, out.reason = int(done.exit_code), str(done.reason or "")
            out.message = done.message or ""
            out.started_at, out.finished_at = done.started_at, done.finished_at
        elif state is not None and state.waiting is not None:
            out.reason = str(state.waiting.reason or "Waiting")
        elif state is not None and state.running is not None:
            out.reason, out.started_at = "Running", state.running.started_at
        if status is not None and status.container_id and (out.terminated or out.reason == "Running"):
            out.logs = self._logs(pod, spec.name)
            out.applied = self._applied(status.container_id.split("://", 1)[-1])
        return out

    def _logs(self, pod: k8s.V1Pod, container: str) -> str:
        try:
            response = self.api.read_namespaced_pod_log(
                pod.metadata.name, pod.metadata.namespace, container=container, _preload_content=False
            )
        except ApiException:
            return ""
        return bytes(response.data).decode("utf-8", "replace")

    def _applied(self, container_id: str) -> dict[str, Any]:
        """What containerd applied (the OCI spec it gave runc): user, read-only root filesystem,
        effective capabilities, no-new-privileges, seccomp, and which of the pod's volumes it
        mounted read-only."""
        done = self.cluster.ctr("containers", "info", container_id, check=False, timeout=60)
        if done.returncode != 0:
            return {}
        spec = json.loads(done.stdout).get("Spec") or {}
        process = spec.get("process") or {}
        user = process.get("user") or {}
        seccomp = (spec.get("linux") or {}).get("seccomp")
        volumes = str(self.cluster.run_dir / "kubelet" / "pods") + "/"
        return {
            "user": f"{user.get('uid', '')}:{user.get('gid', '')}",
            "read_only_root": bool((spec.get("root") or {}).get("readonly")),
            "effective_caps": sorted((process.get("capabilities") or {}).get("effective") or []),
            "no_new_privileges": bool(process.get("noNewPrivileges")),
            "seccomp": "unconfined" if not seccomp else "default",
            # the pod's volumes as mounted (not /proc, /etc/hosts, ... that every container gets)
            "read_only_mounts": {
                m.get("destination"): "ro" in (m.get("options") or [])
                for m in spec.get("mounts") or []
                if str(m.get("source", "")).startswith(volumes) and "/volumes/" in str(m.get("source"))
            },
        }


def _resume_until_done(
    original: Any,
    context: dict[str, Any],
    step: Any,
    log: list[str],
    timeout: float,
    attach: Any = None,
) -> Any:
    """Run ``step``; while the task defers, do what the triggerer and a resumed worker do: run
    the trigger to its first event, then call the named method on a new instance of the task
    (KPO may defer again, e.g. after reading logs), all within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    call = step
    while True:
        try:
            return call()
        except TaskDeferred as deferred:
            log.append(f"deferred to {type(deferred.trigger).__name__}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the task still deferred after {timeout}s") from None
            event = asyncio.run(asyncio.wait_for(_first_event(deferred.trigger), remaining))
            payload = event.payload if isinstance(event.payload, dict) else {}
            log.append(f"trigger event: {payload.get('status')}: {str(payload.get('message'))[:300]}")
            resumed = context["task"] = original.prepare_for_execution()  # a new instance resumes
            resumed.render_template_fields(context)
            if attach is not None:
                attach(resumed)
            method = getattr(resumed, deferred.method_name)
            call = partial(method, context, event.payload, **(deferred.kwargs or {}))


async def _first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event
    raise RuntimeError(f"{type(trigger).__name__} ended without an event")


PULL_ROLE = "arn:aws:iam::123456789012:role/ecr-promote-pull"
PUSH_ROLE = "arn:aws:iam::210987654321:role/ecr-promote-push"


def lab_operator(lab: Lab, engine: str | None = None, **kwargs: Any) -> Any:
    """An EcrPromoteOperator with the lab's images and the two promotion roles; ``engine=None``
    leaves ``engine=`` out, so the operator's default engine runs."""
    from airflow_ecr_promote.engines import DEFAULT_ENGINE
    from airflow_ecr_promote.operators import EcrPromoteOperator

    chosen = {"engine": engine} if engine else {}
    kwargs.setdefault("task_id", "promote")
    kwargs.setdefault("source_role_arn", PULL_ROLE)
    kwargs.setdefault("dest_role_arn", PUSH_ROLE)
    return EcrPromoteOperator(
        init_image=lab.init_image,
        copier_image=lab.copier_image_for(engine or DEFAULT_ENGINE),
        **chosen,
        **kwargs,
    )
