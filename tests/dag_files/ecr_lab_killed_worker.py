"""One promotion task that Airflow retries, for the lab's killed-worker test
(tests/lab/test_killed_worker_e2e.py): the test kills the worker running its first try. What it
promotes, with which images and in which mode, comes from ``$ECR_LAB_PROMOTION`` (the operator's
keyword arguments as JSON), which the test sets per case."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[assignment,no-redef]

from airflow_ecr_promote import EcrPromoteOperator

with DAG(
    dag_id="ecr_lab_killed_worker",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # a retry as soon as the scheduler has failed the killed try
    default_args={"retries": 1, "retry_delay": timedelta(0)},
):
    EcrPromoteOperator(task_id="promote", **json.loads(os.environ["ECR_LAB_PROMOTION"]))
