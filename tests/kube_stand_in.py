"""A stand-in for the Kubernetes API under KubernetesPodOperator, and nothing else.

No API server can run on these machines, so the calls KPO makes to the cluster (create, find,
wait, read, delete) are answered by ``run``: a function that takes the pod KPO built and
returns that pod with the status a kubelet would report. Unit tests pass canned statuses; the
lab passes ``podman kube play``, which really runs the pod. A container's log
(``read_namespaced_pod_log``) comes from ``logs(container) -> text``: canned text in unit tests,
podman's own container logs in the lab. Everything above the API (KPO's execute, deferral
re-entry, cleanup, and the operator) runs unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest.mock import patch

from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.utils.pod_manager import PodManager
from kubernetes.client import CoreV1Api
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

RunPod = Callable[[k8s.V1Pod], k8s.V1Pod]
ReadLog = Callable[[str], str | None]


def terminated(name: str, exit_code: int, message: str | None = None) -> k8s.V1ContainerStatus:
    return k8s.V1ContainerStatus(
        name=name,
        image="",
        image_id="",
        ready=False,
        restart_count=0,
        state=k8s.V1ContainerState(
            terminated=k8s.V1ContainerStateTerminated(
                exit_code=exit_code, reason="Completed" if exit_code == 0 else "Error", message=message
            )
        ),
    )


def finished(
    pod: k8s.V1Pod, init: list[k8s.V1ContainerStatus], main: list[k8s.V1ContainerStatus]
) -> k8s.V1Pod:
    done = copy.deepcopy(pod)
    ok = all(s.state.terminated and s.state.terminated.exit_code == 0 for s in [*init, *main])
    done.status = k8s.V1PodStatus(
        phase="Succeeded" if ok and main else "Failed", init_container_statuses=init, container_statuses=main
    )
    return done


class StandIn:
    """Records the pods KPO asked for and what was deleted."""

    def __init__(self, run: RunPod, logs: ReadLog | None = None) -> None:
        self.run = run
        self.logs = logs
        self.log_reads: list[str] = []
        self.created: list[k8s.V1Pod] = []
        self.deleted: list[str] = []
        self.final: k8s.V1Pod | None = None
        self.error: Exception | None = None
        self.collected: set[str] = set()  # pods the API server no longer has (garbage-collected)

    def create(self, operator: KubernetesPodOperator, pod_request_obj: k8s.V1Pod, context: Any) -> k8s.V1Pod:
        self.created.append(pod_request_obj)
        try:
            self.final = self.run(pod_request_obj)
        except Exception as error:
            self.error = error
            raise
        return pod_request_obj

    def read_log(self, name: str, namespace: str, container: str | None = None, **kwargs: Any) -> Any:
        """``CoreV1Api.read_namespaced_pod_log``: 404 when the pod or container has no log."""
        self.log_reads.append(str(container))
        text = self.logs(str(container)) if self.logs is not None and self.final is not None else None
        if text is None:
            raise ApiException(status=404, reason=f"no log for container {container!r} of pod {name!r}")
        if kwargs.get("_preload_content", True):
            return text
        return _Response(text.encode())

    def get_pod(self, name: str) -> k8s.V1Pod | None:
        """``KubernetesHook.get_pod``: 404 for a pod in ``collected``."""
        if name in self.collected:
            raise ApiException(status=404, reason=f"pods {name!r} not found")
        return self.final

    def read(self, pod: k8s.V1Pod) -> k8s.V1Pod:
        if self.final is None:
            raise RuntimeError(f"pod {pod.metadata.name} was never run: {self.error!r}")
        return self.final


class _Response:
    """What the client returns with ``_preload_content=False`` (a urllib3 response): ``.data``."""

    def __init__(self, data: bytes) -> None:
        self.data = data


@contextmanager
def kubernetes_stand_in(run: RunPod, logs: ReadLog | None = None) -> Iterator[StandIn]:
    """Answer KPO's Kubernetes API calls with ``run`` (and ``logs``) for the duration of the block."""
    stand_in = StandIn(run, logs)

    def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    def delete(self: Any, pod: k8s.V1Pod, *, reraise: bool = True) -> bool:
        stand_in.deleted.append(pod.metadata.name)
        return True

    replacements: list[tuple[Any, str, Any]] = [
        (
            KubernetesPodOperator,
            "get_or_create_pod",
            lambda self, pod_request_obj, context: stand_in.create(self, pod_request_obj, context),
        ),
        (KubernetesPodOperator, "find_pod", lambda self, namespace, context, **kw: stand_in.final),
        (KubernetesPodOperator, "await_pod_start", nothing),
        (KubernetesPodOperator, "await_init_containers_completion", nothing),
        (KubernetesPodOperator, "await_pod_completion", nothing),
        (KubernetesPodOperator, "patch_already_checked", nothing),
        (KubernetesPodOperator, "_write_logs", nothing),
        (KubernetesPodOperator, "process_pod_deletion", delete),
        (PodManager, "await_pod_completion", lambda self, pod, *args, **kwargs: stand_in.read(pod)),
        (PodManager, "read_pod", lambda self, pod: stand_in.read(pod)),
        (KubernetesHook, "get_pod", lambda self, name, namespace: stand_in.get_pod(name)),
        (
            CoreV1Api,
            "read_namespaced_pod_log",
            lambda self, name, namespace, **kwargs: stand_in.read_log(name, namespace, **kwargs),
        ),
    ]
    with ExitStack() as stack:
        for owner, name, value in replacements:
            stack.enter_context(patch.object(owner, name, value))
        yield stand_in
