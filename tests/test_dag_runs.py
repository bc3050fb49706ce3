"""Real DAG runs through Airflow's task runner (``dag.test()``), on the Airflow of this venv.

Each run is a child process with its own metadata DB (tests/dag_run.py); the promotion pods get
a kubelet's report of a successful copy, so everything above the Kubernetes API is Airflow's and
the operator's own: the return value, mapping over it, asset events, the console link.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from airflow import __version__ as airflow_version

from airflow_ecr_promote.links import EcrImageLink
from tests.dag_run import REPO, canned_digest, migrated_db, retry_killed_run, run_dags, start_dag_run

HERE = Path(__file__).resolve().parent
AIRFLOW_3 = int(airflow_version.split(".")[0]) >= 3
STAGING = "123456789012.dkr.ecr.us-west-2.amazonaws.com/team/app"
PRODUCTION = "210987654321.dkr.ecr.us-east-1.amazonaws.com/team/app"
ASSET = f"ecr://{PRODUCTION}"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_db(sys.executable, tmp_path_factory.mktemp("airflow-db"))


@pytest.fixture(scope="module")
def mapping_run(db: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_dags(
        sys.executable,
        db,
        tmp_path_factory.mktemp("runs"),
        dag_files=[
            HERE / "dag_files" / "ecr_xcom_mapping.py",
            REPO / "dags" / "examples" / "ecr_deploy_on_promotion.py",
        ],
        dag_id="ecr_xcom_mapping",
        run_consumers=True,
    )


def pinned(tag: str) -> str:
    return f"{PRODUCTION}@{canned_digest(f'{STAGING}:{tag}')}"


def test_every_task_succeeds(mapping_run: dict[str, Any]) -> None:
    assert mapping_run["state"].endswith("success"), mapping_run["log"][-4000:]
    assert set(mapping_run["states"].values()) == {"success"}, mapping_run["states"]
    assert mapping_run["pods"] == 5


def test_a_mapped_task_maps_over_the_mapped_promotions(mapping_run: dict[str, Any]) -> None:
    xcoms = mapping_run["xcoms"]
    for index, tag in enumerate(["1.0", "1.1"]):
        result = xcoms[f"promote[{index}].return_value"]
        assert (result["status"], result["dest_image"]) == ("copied", f"{PRODUCTION}:{tag}")
        assert xcoms[f"deploy[{index}].return_value"] == pinned(tag)
    assert "deploy[2].return_value" not in xcoms


def test_a_mapped_task_maps_over_the_list_inside_a_batch_result(mapping_run: dict[str, Any]) -> None:
    xcoms = mapping_run["xcoms"]
    result = xcoms["batch[-1].return_value"]
    assert (result["copied"], len(result["promotions"])) == (3, 3)
    deployed = sorted(xcoms[f"deploy_entry[{i}].return_value"] for i in range(3))
    assert deployed == sorted(pinned(tag) for tag in ("2.0", "2.1", "2.2"))
    assert sorted(p["dest_image"] for p in result["promotions"]) == [f"{PRODUCTION}:2.{i}" for i in range(3)]


def test_a_single_promotion_returns_its_result(mapping_run: dict[str, Any]) -> None:
    xcoms = mapping_run["xcoms"]
    assert xcoms["single[-1].return_value"]["digest"] == canned_digest(f"{STAGING}:3.0")
    assert xcoms["after_single[-1].return_value"] == pinned("3.0")


def test_do_xcom_push_false_stores_no_result_and_no_link(mapping_run: dict[str, Any]) -> None:
    quiet = {key: value for key, value in mapping_run["xcoms"].items() if key.startswith("quiet[")}
    # Not ours: pod_name / pod_namespace are KubernetesPodOperator's own, pushed for any of its tasks;
    # Airflow 3's task runner stores every extra link's rendered value (here empty: nothing to link
    # to); Airflow 2.11's lineage stores the outlets of any task that has some.
    others = {"pod_name", "pod_namespace", "_link_EcrImageLink", "pipeline_outlets"}
    assert set(quiet) <= {f"quiet[-1].{key}" for key in others}
    assert not quiet.get("quiet[-1]._link_EcrImageLink")
    assert "quiet[-1].return_value" not in quiet


def test_each_copied_image_is_an_asset_event_with_its_digests(mapping_run: dict[str, Any]) -> None:
    events = mapping_run["asset_events"]
    assert {e["uri"] for e in events} == {ASSET}
    by_dest = {e["extra"]["dest_image"]: e for e in events}
    # 2 mapped + 3 batch + single + quiet: the asset events do not depend on do_xcom_push.
    assert sorted(by_dest) == sorted(
        f"{PRODUCTION}:{t}" for t in ("1.0", "1.1", "2.0", "2.1", "2.2", "3.0", "4.0")
    )
    extra = by_dest[f"{PRODUCTION}:3.0"]["extra"]
    digest = canned_digest(f"{STAGING}:3.0")
    assert extra == {
        "source_image": f"{STAGING}:3.0",
        "dest_image": f"{PRODUCTION}:3.0",
        "digest": digest,
        "source_digest": digest,
        "status": "copied",
        "image": f"{PRODUCTION}@{digest}",
    }
    assert by_dest[f"{PRODUCTION}:3.0"]["task_id"] == "single"


def test_the_console_link_points_at_the_promoted_image(mapping_run: dict[str, Any]) -> None:
    stored = mapping_run["xcoms"]["single[-1]." + EcrImageLink.key]
    digest = canned_digest(f"{STAGING}:3.0")
    assert EcrImageLink().format_link(**stored) == (
        "https://console.aws.amazon.com/ecr/repositories/private/210987654321/team/app/_/image/"
        f"{digest}/details?region=us-east-1"
    )
    link_xcom = f"single[-1]._link_{EcrImageLink.__name__}"
    if link_xcom in mapping_run["xcoms"]:  # Airflow 3 stores the rendered link at the end of the task
        assert mapping_run["xcoms"][link_xcom] == EcrImageLink().format_link(**stored)
    batch = mapping_run["xcoms"]["batch[-1]." + EcrImageLink.key]
    assert EcrImageLink().format_link(**batch) == (
        "https://console.aws.amazon.com/ecr/repositories/private/210987654321/team/app?region=us-east-1"
    )


def test_the_deploy_dag_runs_on_the_events_and_deploys_the_newest_digest(mapping_run: dict[str, Any]) -> None:
    (consumer,) = mapping_run["consumers"]
    assert consumer["dag_id"] == "ecr_deploy_on_promotion"
    assert consumer["run_type"].endswith("asset_triggered") or consumer["run_type"].endswith(
        "dataset_triggered"
    )
    assert consumer["state"].endswith("success"), consumer["states"]
    # The scheduler hands a run the events queued up to its creation; the rest go to the next run.
    assert consumer["consumed"]
    assert {e["extra"]["image"] for e in consumer["consumed"]} <= {
        e["extra"]["image"] for e in mapping_run["asset_events"]
    }
    newest = max(consumer["consumed"], key=lambda e: e["timestamp"])
    assert consumer["xcoms"]["image_to_deploy[-1].return_value"] == newest["extra"]["image"]
    (patched,) = mapping_run["deployments"]
    assert (patched["name"], patched["namespace"]) == ("app", "production")
    container = patched["body"]["spec"]["template"]["spec"]["containers"][0]
    assert container == {"name": "app", "image": newest["extra"]["image"]}


@pytest.mark.skipif(not AIRFLOW_3, reason="the killed-worker retry is run on Airflow 3 (tests/lab)")
def test_a_run_whose_worker_was_killed_is_retried_as_the_scheduler_retries_it(
    db: Path, tmp_path: Path
) -> None:
    """The retry of tests/lab/test_killed_worker_e2e.py, without the lab: a run's task left
    ``running`` (as a killed worker leaves it) fails as the scheduler fails a task without
    heartbeat, and its retry runs as try 2."""
    promotion = {"source_image": f"{STAGING}:2.0", "dest_image": f"{PRODUCTION}:2.0", "engine": "skopeo"}
    env = {"ECR_LAB_PROMOTION": json.dumps(promotion)}
    dag_file = HERE / "dag_files" / "ecr_lab_killed_worker.py"
    first = start_dag_run(sys.executable, db, tmp_path, dag_files=[dag_file], dag_id="ecr_lab_killed_worker",
                          pods="canned", env=env)  # fmt: skip
    assert first.process.wait(timeout=300) == 0, first.output()[-4000:]
    with sqlite3.connect(first.home / "airflow.db") as connection:  # what a killed worker leaves
        connection.execute(
            "UPDATE task_instance SET state = 'running' WHERE dag_id = 'ecr_lab_killed_worker'"
        )
    retry = retry_killed_run(
        sys.executable, first.home, dag_id="ecr_lab_killed_worker", pods="canned", env=env
    )
    assert retry["state"].endswith("success"), retry["log"][-4000:]
    assert "[retry] promote[-1] try 1: up_for_retry" in retry["log"]
    assert retry["tries"] == {"promote[-1]": 2}
    assert retry["xcoms"]["promote[-1].return_value"]["status"] == "copied"
