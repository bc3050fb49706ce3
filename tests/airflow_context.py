"""A real template context for rendering operators outside a running task.

Rendering goes through Airflow's own ``render_template_fields`` (Jinja, params, macros);
only the task instance and dag run are plain objects, since no scheduler created them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from kubernetes.client import models as k8s

LOGICAL_DATE = datetime(2026, 11, 29, 2, 30, tzinfo=UTC)


class RecordingTaskInstance(SimpleNamespace):
    """The ``ti`` of the context: identifies the task, records what the operator pushes."""

    def __init__(self, dag_id: str, task_id: str, map_index: int = -1, xcoms: dict[str, Any] | None = None):
        super().__init__(
            dag_id=dag_id, task_id=task_id, map_index=map_index, try_number=1, run_id="manual__1"
        )
        self.pushed: dict[str, Any] = {}
        self.upstream = xcoms or {}

    def xcom_push(self, key: str, value: Any, **_: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, task_ids: Any = None, *args: Any, **kwargs: Any) -> Any:
        return self.upstream.get(task_ids if isinstance(task_ids, str) else task_ids[0])


def make_context(
    task: Any, *, conf: dict[str, Any] | None = None, map_index: int = -1, xcoms: dict[str, Any] | None = None
) -> dict[str, Any]:
    dag = task.dag if task.has_dag() else None
    params = {key: dag.params[key] for key in dag.params} if dag else {}
    params.update(conf or {})
    ti = RecordingTaskInstance(dag.dag_id if dag else "adhoc", task.task_id, map_index, xcoms)
    return {
        "dag": dag,
        "task": task,
        "ti": ti,
        "task_instance": ti,
        "params": params,
        "run_id": ti.run_id,
        "dag_run": SimpleNamespace(conf=conf or {}, run_id=ti.run_id, logical_date=LOGICAL_DATE),
        "logical_date": LOGICAL_DATE,
        "ds": LOGICAL_DATE.strftime("%Y-%m-%d"),
        "ds_nodash": LOGICAL_DATE.strftime("%Y%m%d"),
        "ts": LOGICAL_DATE.isoformat(),
        "var": {},
        "macros": _macros(),
        "data_interval_start": None,
        "data_interval_end": None,
    }


def _macros() -> Any:
    try:
        from airflow.sdk.execution_time import macros
    except ImportError:  # Airflow 2.11
        from airflow import macros  # type: ignore[no-redef]
    return macros


def render_pod(task: Any, **kwargs: Any) -> tuple[Any, k8s.V1Pod]:
    """Render ``task`` (mapped or not) with a real context and build its pod as KPO does."""
    task = task.prepare_for_execution()  # as the task runner does: render a copy, not the DAG's task
    context = make_context(task, **kwargs)
    task.render_template_fields(context)
    rendered = context["task"]  # a mapped task renders into its unmapped form here
    return rendered, rendered.build_pod_request_obj(context)


def containers(pod: k8s.V1Pod) -> dict[str, k8s.V1Container]:
    return {c.name: c for c in [*(pod.spec.init_containers or []), *pod.spec.containers]}


def env_of(container: k8s.V1Container) -> dict[str, str]:
    return {e.name: e.value for e in container.env or []}


try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 2.11
    from airflow.models.dagbag import DagBag  # type: ignore[no-redef]


@contextmanager
def temporary_environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (as a deployment sets AIRFLOW__* / AIRFLOW_CONN_*),
    then put back what was there."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


__all__ = ["DagBag", "containers", "env_of", "make_context", "render_pod", "temporary_environ"]
