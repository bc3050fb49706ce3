"""Local end-to-end lab: fake ECR registries + STS/ECR (moto) + podman as the kubelet.

See /work/shared/LAB.md for the recipe and its traps.
"""

from .lab import Lab
from .procs import LabError
from .runner import ContainerOutcome, PodOutcome, play_pod, run_v1pod

__all__ = ["ContainerOutcome", "Lab", "LabError", "PodOutcome", "play_pod", "run_v1pod"]
