"""Local end-to-end lab: fake ECR registries + STS/ECR (moto) + podman as the kubelet.

See /work/shared/LAB.md for the recipe and its traps. The names below are imported on first use,
so that the cluster's build (``python3 -m tests.lab.kubebuild``) runs on the machine's python3
before the project's virtualenvs, which those modules need, exist.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .lab import Lab
    from .procs import LabError
    from .runner import ContainerOutcome, PodOutcome, play_pod, run_v1pod

_LAZY = {
    "Lab": ".lab",
    "LabError": ".procs",
    "ContainerOutcome": ".runner",
    "PodOutcome": ".runner",
    "play_pod": ".runner",
    "run_v1pod": ".runner",
}

__all__ = ["ContainerOutcome", "Lab", "LabError", "PodOutcome", "play_pod", "run_v1pod"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module, __name__), name)
