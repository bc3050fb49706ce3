"""The example DAGs load cleanly and Airflow finds the provider through its entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from airflow_ecr_promote import __version__
from tests.airflow_context import DagBag
from tests.conftest import REPO

EXAMPLES = REPO / "dags" / "examples"


def test_example_dags_load_with_zero_import_errors() -> None:
    bag = DagBag(dag_folder=str(EXAMPLES))
    assert bag.import_errors == {}
    files = {Path(dag.fileloc).name for dag in bag.dags.values()}
    assert files == {p.name for p in EXAMPLES.glob("*.py")}, "every example file defines a DAG"
    assert {"ecr_promote_on_demand", "ecr_promote_nightly", "ecr_promote_backfill"} <= set(bag.dags)


def test_provider_is_registered_with_airflow() -> None:
    from airflow.providers_manager import ProvidersManager

    providers = ProvidersManager().providers
    assert "airflow-ecr-promote" in providers
    assert providers["airflow-ecr-promote"].version == __version__


def test_airflow_providers_list_shows_it() -> None:
    airflow = Path(sys.executable).parent / "airflow"
    done = subprocess.run(
        [str(airflow), "providers", "list", "--output", "plain"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "airflow-ecr-promote" in done.stdout


def test_discovery_window_renders_for_scheduled_and_manual_runs() -> None:
    from datetime import UTC, datetime, timedelta

    from tests.airflow_context import make_context

    task = DagBag(dag_folder=str(EXAMPLES)).dags["ecr_backfill_discovered"].get_task("discover")
    for interval_end in (datetime(2026, 11, 29, 3, tzinfo=UTC), None):
        rendered = task.prepare_for_execution()
        context = make_context(rendered)
        context["data_interval_end"] = interval_end
        rendered.render_template_fields(context)
        since = datetime.fromisoformat(rendered.pushed_since)
        expected = (interval_end or datetime.now(UTC)) - timedelta(days=7)
        assert abs((since - expected).total_seconds()) < 60


def test_release_pipeline_fans_out_the_digest_the_sensor_found() -> None:
    from tests.airflow_context import containers, env_of, render_pod

    digest = "sha256:" + "d" * 64
    task = DagBag(dag_folder=str(EXAMPLES)).dags["ecr_release_pipeline"].get_task("fan_out_to_other_regions")
    _, pod = render_pod(task, conf={"tag": "2.0.0"}, xcoms={"wait_for_staging_image": digest})
    source = f"123456789012.dkr.ecr.us-west-2.amazonaws.com/team/app@{digest}"
    assert env_of(containers(pod)["base"])["COPIES"].splitlines() == [
        f"{source} 210987654321.dkr.ecr.eu-west-1.amazonaws.com/team/app:2.0.0",
        f"{source} 210987654321.dkr.ecr.ap-southeast-2.amazonaws.com/team/app:2.0.0",
    ]
