"""Airflow names whose home depends on the installed releases, imported from one place.

``airflow.providers.common.compat.sdk`` (common-compat 1.8.0 and later) maps each name to its home
in the running Airflow. The constraint files of Airflow 2.11.0, 3.0.x and 3.1.0 pin older
common-compat releases without that module (requirements/constraints-pins.toml), so the same names
are then taken from where Airflow 3.0/3.1 (``airflow.sdk``) or Airflow 2.11 keeps them.

KubernetesPodOperator changed across cncf-kubernetes 10.x: ``cleanup`` gained its ``xcom_result``
and ``context`` arguments (:func:`cleanup_kwargs` passes only those the installed provider accepts),
and ``build_pod_request_obj`` its ``dry_run`` flag (:func:`build_pod_offline`).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from kubernetes.client import models as k8s

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.common.compat.sdk import (
        AirflowException,
        BaseOperator,
        BaseSensorOperator,
        PokeReturnValue,
        TaskDeferred,
        conf,
    )
    from airflow.sdk import Asset, AssetAlias
else:
    try:  # Airflow 3
        from airflow.sdk import Asset, AssetAlias
    except ImportError:  # Airflow 2.11: assets are datasets
        from airflow.datasets import Dataset as Asset
        from airflow.datasets import DatasetAlias as AssetAlias
    try:
        from airflow.providers.common.compat.sdk import (
            AirflowException,
            BaseOperator,
            BaseSensorOperator,
            PokeReturnValue,
            TaskDeferred,
            conf,
        )
    except ImportError:  # common-compat < 1.8.0
        from airflow.configuration import conf
        from airflow.exceptions import AirflowException, TaskDeferred

        try:
            from airflow.sdk import BaseOperator, BaseSensorOperator, PokeReturnValue
        except ImportError:  # Airflow 2
            from airflow.models.baseoperator import BaseOperator
            from airflow.sensors.base import BaseSensorOperator, PokeReturnValue

__all__ = [
    "AirflowException",
    "Asset",
    "AssetAlias",
    "BaseOperator",
    "BaseSensorOperator",
    "PokeReturnValue",
    "TaskDeferred",
    "build_pod_offline",
    "cleanup_kwargs",
    "conf",
]


def cleanup_kwargs(cleanup: Any, **optional: Any) -> dict[str, Any]:
    """The subset of ``optional`` keyword arguments that the function ``cleanup`` accepts."""
    accepted = inspect.signature(cleanup).parameters
    return {name: value for name, value in optional.items() if name in accepted}


def build_pod_offline(operator: KubernetesPodOperator) -> k8s.V1Pod:
    """The operator's pod, built without a Kubernetes API client (for ``render``).

    KPO's ``dry_run=True`` skips the one step that needs a client (asking the hook whether it runs
    in a cluster, for a label). Providers without that flag (10.1.0) are told the answer instead:
    the label is one ``render`` drops anyway.
    """
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    if "dry_run" in inspect.signature(KubernetesPodOperator.build_pod_request_obj).parameters:
        return operator.build_pod_request_obj(None, dry_run=True)
    vars(operator.hook)["_is_in_cluster"] = False
    return operator.build_pod_request_obj(None)


KUBE_CONFIG_SOURCES = ("in_cluster", "kube_config", "kube_config_path")


def kube_config_source(extras: dict[str, Any]) -> tuple[str, Any] | None:
    """Where a Kubernetes connection's extras say its cluster config comes from: the first of
    ``in_cluster``, ``kube_config`` and ``kube_config_path`` set (with or without the
    ``extra__kubernetes__`` prefix of connections made before Airflow 2.3), and its value."""
    for name in KUBE_CONFIG_SOURCES:
        value = extras.get(name) or extras.get(f"extra__kubernetes__{name}")
        if value:
            return name, value
    return None


def async_hook_reads_kube_config_path() -> bool:
    """Whether the installed ``AsyncKubernetesHook`` (KPO's trigger) loads a connection's
    ``kube_config_path`` (apache/airflow#45571); cncf-kubernetes 10.1.0's ignores it and loads
    the default kubeconfig instead."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook

    try:
        return '"kube_config_path"' in inspect.getsource(AsyncKubernetesHook._load_config)
    except (OSError, TypeError):  # no source to read: the newer behaviour
        return True
