"""Run an example DAG's task through the operator, with the lab as its cluster.

The task is loaded from the example DAGs with Airflow's DagBag, rendered with a real context
(the lab's images chosen through the operator's own ``init_image`` / ``copier_image``
parameters), and executed by KubernetesPodOperator's own ``execute``. Only the Kubernetes API
is stood in for: the pod KPO builds is played by podman, and its status (exit codes,
termination messages) is what KPO reads back, and a container's log read through the API is
podman's log of that container. Container logs are written to the task's log as KPO does when
it follows a pod's logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache, partial
from typing import TYPE_CHECKING, Any

from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from airflow_ecr_promote.compat import TaskDeferred
from tests.airflow_context import make_context, temporary_environ
from tests.conftest import REPO
from tests.kube_stand_in import kubernetes_stand_in

from .runner import PodOutcome, play_pod

if TYPE_CHECKING:
    from .cluster import Cluster
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
            yield
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
    lab: Lab,
    *,
    dag_id: str = "ecr_promote_on_demand",
    task_id: str = "promote",
    conf: dict[str, Any] | None = None,
    prepare: Any = None,
    task: Any = None,
    pod_timeout: float = 300.0,
) -> TaskRun:
    """Render and execute the task; ``prepare(pod) -> pod`` may adjust the pod before it runs;
    a pod still running after ``pod_timeout`` seconds is stopped (DeadlineExceeded)."""
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

    started = time.monotonic()
    try:
        with captured_task_log(run.log), kubernetes_stand_in(play, logs.get) as stand_in:
            run.log_reads = stand_in.log_reads
            run.result = operator.execute(context)
    except Exception as error:  # the caller asserts on it
        run.error = error
        run.log.append(str(error))
    finally:
        run.seconds = time.monotonic() - started
    run.pushed = dict(context["ti"].pushed)
    return run


def run_task_on_cluster(
    cluster: Cluster,
    *,
    dag_id: str = "ecr_promote_on_demand",
    task_id: str = "promote",
    conf: dict[str, Any] | None = None,
    task: Any = None,
    trigger_timeout: float = 240.0,
    run: TaskRun | None = None,
) -> TaskRun:
    """Render and execute the task against the lab's real Kubernetes (tests/lab/cluster.py):
    KPO's own code talks to the API server through Airflow's ``kubernetes_default`` connection,
    which names the cluster's kubeconfig; nothing is stood in for. A deferring task's trigger
    (KPO's own, polling the real API server) runs here until its first event, within
    ``trigger_timeout`` seconds, and a new instance of the task resumes with it. ``run``: the
    TaskRun to fill (a test's thread may watch its ``stamped`` log while the task runs)."""
    run = TaskRun() if run is None else run
    if task is None:
        task = example_dags().dags[dag_id].get_task(task_id)
    original, task = task, task.prepare_for_execution()
    context = make_context(task, conf=conf)
    task.render_template_fields(context)
    operator = context["task"]
    run.rendered = {name: getattr(operator, name, None) for name in operator.template_fields}
    started = time.monotonic()
    try:
        connection = {"AIRFLOW_CONN_KUBERNETES_DEFAULT": cluster.airflow_connection()}
        # The test run's KUBECONFIG names an unreachable dummy (tests/run_state.py). A worker or
        # triggerer that talks to one cluster names it there too; and KPO's async hook (provider
        # 10.1.0, Airflow 2.11) fell back to it after a re-deferral, ignoring the connection.
        connection["KUBECONFIG"] = str(cluster.dir / "airflow.kubeconfig")
        with captured_task_log(run.log, run.stamped), temporary_environ(connection):
            run.result = _resume_until_done(
                original, context, lambda: operator.execute(context), run.log, trigger_timeout
            )
    except Exception as error:  # the caller asserts on it
        run.error = error
        run.log.append(str(error))
    finally:
        run.seconds = time.monotonic() - started
    run.pushed = dict(context["ti"].pushed)
    return run


def _resume_until_done(
    original: Any, context: dict[str, Any], step: Any, log: list[str], timeout: float
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
            resumed = context["task"] = original.prepare_for_execution()  # a new instance resumes
            resumed.render_template_fields(context)
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
