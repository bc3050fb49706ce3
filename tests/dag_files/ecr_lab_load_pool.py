"""A backfill as a release team maps it: one promotion per tag, in an Airflow pool, for the load
bench's real deployment (tests/lab/deployment.py, bench/load.py). The promotion's keyword
arguments, the tags' source and destination images and the pool come from ``$ECR_LAB_LOAD``
(JSON: ``partial``, ``expand`` and ``pool``), which the bench sets."""

from __future__ import annotations

import json
import os
from datetime import datetime

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[assignment,no-redef]

from airflow_ecr_promote import EcrPromoteOperator

load = json.loads(os.environ["ECR_LAB_LOAD"])

with DAG(dag_id="ecr_lab_load_pool", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    EcrPromoteOperator.partial(task_id="promote", pool=load["pool"], **load["partial"]).expand_kwargs(
        load["expand"]
    )
