"""Where one test run keeps its state: a folder made for that run, under a per-version home.

Every pytest process (and `make demo`) gets a new folder, under ``$ECR_PROMOTE_TEST_STATE`` when
that is set (``.ci/run`` points it at a folder it creates) or else under the system's temporary
folder. In it, each Airflow version has its own ``AIRFLOW_HOME`` (Airflow 3 writes keys into
``airflow.cfg`` that Airflow 2.11 refuses to load), and the run has its own kubeconfig. The
metadata database is migrated by the run itself (:func:`migrate_airflow_db`), so nothing a test
relies on survives from an earlier run. The folder is removed when the process exits; set
``ECR_PROMOTE_KEEP_TEST_STATE=1`` to keep it for a post-mortem.

Only content-addressed build caches outlive a run: the lab's images and Go builds
(tests/lab/paths.py, keyed by what went into them).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

PARENT_VARIABLE = "ECR_PROMOTE_TEST_STATE"
KEEP_VARIABLE = "ECR_PROMOTE_KEEP_TEST_STATE"
UNREACHABLE_KUBECONFIG = (
    "apiVersion: v1\nkind: Config\ncurrent-context: none\n"
    "clusters: [{name: none, cluster: {server: 'https://127.0.0.1:1'}}]\n"
    "contexts: [{name: none, context: {cluster: none, user: none}}]\n"
    "users: [{name: none, user: {token: none}}]\n"
)


def new_run_folder() -> Path:
    """A folder no earlier run has seen: under $ECR_PROMOTE_TEST_STATE, or the temp folder."""
    parent = os.environ.get(PARENT_VARIABLE)
    if parent:
        Path(parent).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="ecr-promote-test-run-", dir=parent or None))
    if os.environ.get(KEEP_VARIABLE) != "1":
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def airflow_home_name() -> str:
    """``airflow-<version>``, read from the installed distribution without importing Airflow."""
    return f"airflow-{version('apache-airflow')}"


def isolate(dags_folder: Path) -> Path:
    """Point Airflow and Kubernetes clients at a new run folder; returns the folder.

    Must run before Airflow is imported: Airflow reads ``AIRFLOW_HOME`` and its configuration
    once, at import.
    """
    run = new_run_folder()
    home = run / airflow_home_name()
    home.mkdir()
    kubeconfig = run / "kubeconfig"
    kubeconfig.write_text(UNREACHABLE_KUBECONFIG)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "KUBECONFIG": str(kubeconfig),
            # building a pod makes no API call; only the Kubernetes API is absent here
            "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(
                {
                    "conn_type": "kubernetes",
                    "extra": {"in_cluster": False, "kube_config_path": str(kubeconfig)},
                }
            ),
        }
    )
    os.environ.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)
    return run


def migrate_airflow_db(timeout: float = 300) -> Path:
    """Create this run's metadata database with ``airflow db migrate``; returns its path.

    Runs in a child process with this process's environment, so the database lands in the
    run's ``AIRFLOW_HOME`` and the test process's own Airflow import stays untouched.
    """
    home = Path(os.environ["AIRFLOW_HOME"])
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    db = home / "airflow.db"
    if done.returncode != 0 or not db.is_file() or db.stat().st_size == 0:
        raise RuntimeError(
            f"airflow db migrate in {home} failed (exit {done.returncode}):\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return db
