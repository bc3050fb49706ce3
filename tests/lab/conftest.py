"""Make the `lab` fixture and marker available to the lab's own tests, and bound them.

tests/conftest.py may already load `tests.lab.fixtures` through `pytest_plugins`;
loading it again under the same name would create a second session lab.

A lab test may run several pods, so it gets `LAB_TEST_TIMEOUT` instead of the project's default
(pyproject.toml). The lab's images and Go tools are built before the first lab test runs, so a
cold build (minutes) does not count against any test's limit; so are helm, when a test marked `helm` is
selected, and the cluster's programs
(tests/lab/kubebuild.py, about 15 minutes cold, and aws-iam-authenticator, its token webhook) when
a test marked `cluster` is selected.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

LAB_TEST_TIMEOUT = 900


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker and the fixture plugin once; give a pytest-xdist worker a lab of its own."""
    worker_bind()
    config.addinivalue_line("markers", "lab: needs the local lab (root, podman, skopeo, ...)")
    config.addinivalue_line(
        "markers", "cluster: runs pods on the lab's real Kubernetes (tests/lab/cluster.py)"
    )
    if not config.pluginmanager.has_plugin("tests.lab.fixtures"):
        config.pluginmanager.import_plugin("tests.lab.fixtures")


def worker_bind() -> None:
    """Under pytest-xdist (``make cluster-test`` runs ``-n 3``), worker K > 0 gets the lab address
    ``ECR_PROMOTE_LAB_BIND`` + 20 K (127.0.0.1: workers on .1, .21, .41): each worker's session has
    its own lab and cluster (cluster N, subnet 10.244.N.0/24 and cgroup root /ecrlabN from the
    address's last byte)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or worker == "gw0":
        return
    base = os.environ.get("ECR_PROMOTE_LAB_BIND", "127.0.0.1").split(".")
    last = int(base[3]) + 20 * int(worker.removeprefix("gw"))
    if last > 254:
        raise pytest.UsageError(f"pytest-xdist worker {worker}: no lab address left after {'.'.join(base)}")
    os.environ["ECR_PROMOTE_LAB_BIND"] = ".".join([*base[:3], str(last)])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Bound every lab test; under pytest-xdist, hand the workers the longest files first."""
    for item in items:
        if item.get_closest_marker("lab") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(LAB_TEST_TIMEOUT))
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker collects; all sort alike
        items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))  # stable: files stay whole


# About the seconds each cluster test file takes on one worker of `make cluster-test` (a cold
# fresh-ci, 2026-12-07: its --durations, with the signature test's 900 s hang taken out).
# pytest-xdist hands whole files to its workers in collection order (`--no-loadscope-reorder`):
# longest first, so that no worker is left with a long file at the end while the others sit idle.
# A file not listed goes last; the order changes only the wall time.
FILE_SECONDS: dict[str, float] = {
    "test_throttling_e2e.py": 480,
    "test_batch_scale_e2e.py": 300,
    "test_killed_worker_e2e.py": 240,
    "test_cluster_lifecycle_e2e.py": 210,
    "test_batch_e2e.py": 200,
    "test_load_e2e.py": 190,
    "test_signatures_e2e.py": 150,
    "test_repository_e2e.py": 130,
    "test_iam_policies_e2e.py": 120,
    "test_artifacts_e2e.py": 100,
    "test_airflow_native_e2e.py": 100,
    "test_promote_e2e.py": 90,
    "test_cluster_e2e.py": 60,
    "test_eks_e2e.py": 45,
    "test_kaniko_e2e.py": 60,
    "test_precheck_e2e.py": 45,
    "test_faults.py": 35,
    "test_scan_gate_e2e.py": 30,
}


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build what the selected lab tests run, once, before any of them starts its clock."""
    if not any(item.get_closest_marker("lab") for item in session.items):
        return
    from . import gotools
    from .fixtures import missing_prerequisites
    from .images import ensure_images
    from .paths import cache_dir_default
    from .tls import ensure_ca

    if missing_prerequisites():
        return  # the `lab` fixture reports why (a skip, or a failure under CI=true)
    cache = cache_dir_default()
    started = time.monotonic()
    ensure_images(cache, ensure_ca(cache)[0], lambda line: print(line, file=sys.stderr))
    gotools.build(gotools.REFERRERS_REGISTRY, cache, lambda line: print(line, file=sys.stderr))
    if any(item.get_closest_marker("helm") for item in session.items):
        gotools.build(gotools.HELM, cache, lambda line: print(line, file=sys.stderr))
    if any(item.get_closest_marker("cluster") for item in session.items):
        from .fixtures import missing_cluster_prerequisites
        from .kubebuild import KubeBuild

        if not missing_cluster_prerequisites():
            KubeBuild(cache, lambda line: print(line, file=sys.stderr)).all()
            gotools.build(gotools.AWS_IAM_AUTHENTICATOR, cache, lambda line: print(line, file=sys.stderr))
    if time.monotonic() - started > 5:
        print(f"lab: images ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
