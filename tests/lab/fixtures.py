"""pytest fixture `lab`: one lab per test session.

Without root or a prerequisite binary the lab tests are skipped with the reason,
except under CI=true, where that is a failure (CI installs the prerequisites).
Set ECR_PROMOTE_LAB_REUSE=1 to use a lab already started by
`python -m tests.lab up` (it is then left running).

`cluster`: the lab's real Kubernetes (tests/lab/cluster.py), started beside the session's lab
for the tests marked `cluster`, and stopped (everything it made removed) at session end. Besides
the example DAGs' namespace (Pod Security `restricted`), it has `BASELINE_NAMESPACE`, enforcing
`baseline`, with the same service account and the README's Role: the kaniko pod (root, three
capabilities) is refused under `restricted` and runs there, as the README says.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from .goenv import go_binary
from .images import BUSYBOX_STATIC
from .lab import Lab
from .paths import AWS_CLI, state_dir_default
from .procs import LabError

PREREQUISITES = (
    "skopeo",
    "podman",
    "runc",
    "docker-registry",
    "htpasswd",
    "haproxy",
    "debootstrap",
    "unshare",
    "nsenter",
    "openssl",
    "tar",
    AWS_CLI,
)


CLUSTER_PREREQUISITES = ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "dnsmasq", "ip", "gcc")


def missing_cluster_prerequisites() -> list[str]:
    """Why the lab cluster cannot run here, beyond the lab's own needs (empty when it can)."""
    problems = [f"missing binary {b}" for b in CLUSTER_PREREQUISITES if shutil.which(b) is None]
    problems += [
        f"missing CNI plugin /usr/lib/cni/{p}"
        for p in ("bridge", "host-local", "loopback")
        if not os.path.exists(f"/usr/lib/cni/{p}")
    ]
    return problems


def missing_prerequisites() -> list[str]:
    """Why the lab cannot run here (empty when it can)."""
    problems = [f"missing binary {b}" for b in PREREQUISITES if shutil.which(b) is None]
    if go_binary() is None:
        problems.append("missing Go toolchain (/usr/local/go/bin/go) to build the lab's Go tools")
    if not BUSYBOX_STATIC.is_file():
        problems.append(f"missing {BUSYBOX_STATIC} (Debian busybox-static) for the crane and regctl images")
    try:
        import moto.server  # noqa: F401
    except ImportError:
        problems.append("missing Python package moto[server]")
    if os.geteuid() != 0:
        problems.insert(0, "not root (the lab needs mount namespaces, port 443 and podman as root)")
    return problems


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"lab prerequisites missing under CI=true: {reason}", pytrace=False)
    pytest.skip(f"lab unavailable: {reason}")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A running lab (images built on first use, cached afterwards); stopped at session end."""
    problems = missing_prerequisites()
    if problems:
        _unavailable("; ".join(problems))
    if os.environ.get("ECR_PROMOTE_LAB_REUSE") == "1":
        try:
            running: Lab | None = Lab.attach(state_dir_default())
        except LabError:
            running = None
        if running is not None and running.status() and all(running.status().values()):
            yield running
            return
    state = os.environ.get("ECR_PROMOTE_LAB_DIR") or tmp_path_factory.mktemp("ecr-promote-lab")
    lab = Lab(state)
    with lab:
        yield lab


BASELINE_NAMESPACE = "ecr-promote-baseline"


def add_baseline_namespace(cluster: Any) -> None:
    """A namespace enforcing Pod Security ``baseline`` (for kaniko), with the example DAGs'
    service account and exactly the README's Role and RoleBinding for Airflow's identity."""
    cluster.add_namespace(BASELINE_NAMESPACE, "baseline")


@pytest.fixture(scope="session")
def cluster(lab: Lab) -> Iterator[Any]:
    """The lab's real single-node Kubernetes, with the lab's awscli and copier images in containerd."""
    from .cluster import Cluster

    problems = missing_cluster_prerequisites()
    if problems:
        _unavailable("; ".join(problems))
    running = Cluster(lab).start()
    try:
        add_baseline_namespace(running)
        running.import_images(
            lab.init_image, *(lab.copier_image_for(e) for e in ("skopeo", "crane", "regctl"))
        )
        yield running
    finally:
        running.stop()
