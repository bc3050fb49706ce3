"""Apache Airflow provider that promotes container images between Amazon ECR registries.

``from airflow_ecr_promote import EcrPromoteOperator`` works; the operators are imported on first
use only, so that Airflow's provider discovery (``get_provider_info``) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "EcrPromoteOperator": "airflow_ecr_promote.operators",
    "EcrPromoteError": "airflow_ecr_promote.operators",
    "EcrListTagsOperator": "airflow_ecr_promote.discovery",
    "EcrImageSensor": "airflow_ecr_promote.sensors",
}

__all__ = ["EcrImageSensor", "EcrListTagsOperator", "EcrPromoteError", "EcrPromoteOperator", "__version__"]

if TYPE_CHECKING:
    from airflow_ecr_promote.discovery import EcrListTagsOperator
    from airflow_ecr_promote.operators import EcrPromoteError, EcrPromoteOperator
    from airflow_ecr_promote.sensors import EcrImageSensor


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
