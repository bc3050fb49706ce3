"""Batches at real size, without a cluster: the copy list's encoding and limits, the real copy
script reading it under ``sh`` (with registry stand-ins for skopeo), and the operator reading
the script's report back through KPO's own execute, with only the Kubernetes API stood in for.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import models as k8s

from airflow_ecr_promote.compat import build_pod_offline
from airflow_ecr_promote.copylist import (
    CHUNK_BYTES,
    MAX_ARG_STRLEN,
    MAX_COPIES,
    MAX_COPY_LIST_BYTES,
    copies_env,
    copy_lines,
    wire_ref,
)
from airflow_ecr_promote.engines import ENGINES, script
from airflow_ecr_promote.operators import EcrPromoteError, EcrPromoteOperator
from airflow_ecr_promote.pod import INIT_CONTAINER_NAME
from airflow_ecr_promote.promotion import parse_promotion
from airflow_ecr_promote.refs import PromotionInputError, parse_image_ref
from airflow_ecr_promote.result import find_report, parse_summary
from tests.airflow_context import make_context
from tests.conftest import DEST_HOST, SOURCE_HOST
from tests.kube_stand_in import finished, kubernetes_stand_in, terminated

REPO = "team/app"
MANIFEST = b'{"schemaVersion":2}'
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
PINNED = "sha256:" + "c" * 64


def long_tags(count: int, width: int = 128) -> list[str]:
    return [f"{i:05d}-" + "t" * (width - 6) for i in range(count)]


# encoding and limits --------------------------------------------------------------------------


def test_a_batch_names_its_repositories_once_and_splits_under_the_kernel_limit() -> None:
    tags = long_tags(MAX_COPIES)
    promotion = parse_promotion(
        source_image=f"{SOURCE_HOST}/{REPO}", dest_image=f"{DEST_HOST}/{REPO}", dest_tags=tags
    )
    env = copies_env(promotion)
    assert (env["SOURCE_REPO"], env["DEST_REPO"]) == (f"{SOURCE_HOST}/{REPO}", f"{DEST_HOST}/{REPO}")
    chunks = [env["COPIES"], *(env[f"COPIES_{i}"] for i in range(2, int(env["COPY_CHUNKS"]) + 1))]
    assert len(chunks) == int(env["COPY_CHUNKS"]) == 7
    assert all(len(chunk.encode()) <= CHUNK_BYTES < MAX_ARG_STRLEN for chunk in chunks)
    assert "\n".join(chunks).split("\n") == tags, "every tag, in order, each on a whole line"


def test_pairs_that_leave_the_batch_repositories_are_written_whole() -> None:
    other = f"{DEST_HOST}/prod/app:2"
    promotion = parse_promotion(
        pairs=[
            {"source_image": f"{SOURCE_HOST}/{REPO}:1", "dest_image": f"{DEST_HOST}/{REPO}:1"},
            {"source_image": f"{SOURCE_HOST}/{REPO}:1", "dest_image": other},
            {"source_image": f"{SOURCE_HOST}/{REPO}:3@{PINNED}", "dest_image": f"{DEST_HOST}/{REPO}:3"},
        ]
    )
    assert copy_lines(promotion)[1] == [
        "1",
        f"{SOURCE_HOST}/{REPO}:1 {other}",
        f"{SOURCE_HOST}/{REPO}@{PINNED} {DEST_HOST}/{REPO}:3",
    ]


def test_a_single_promotion_keeps_its_full_references() -> None:
    source = f"{SOURCE_HOST}/{REPO}:1.4.2@{PINNED}"
    promotion = parse_promotion(source_image=source, dest_image=f"{DEST_HOST}/{REPO}:1.4.2")
    assert copies_env(promotion) == {
        "COPIES": f"{SOURCE_HOST}/{REPO}@{PINNED} {DEST_HOST}/{REPO}:1.4.2",
        "COPY_CHUNKS": "1",
    }
    assert str(promotion.source) == source, "the user's reference is what the result shows"


@pytest.mark.parametrize("engine", ["skopeo", "crane"])
def test_tag_plus_digest_reaches_the_copier_as_a_digest_reference(engine: str) -> None:
    ref = parse_image_ref("source_image", f"{SOURCE_HOST}/{REPO}:1.4.2@{PINNED}")
    assert wire_ref(ref) == f"{SOURCE_HOST}/{REPO}@{PINNED}"
    op = EcrPromoteOperator(
        task_id="promote", engine=engine, source_image=str(ref), dest_image=f"{DEST_HOST}/{REPO}:1.4.2"
    )
    env = {e.name: e.value for e in op.build_pod_request_obj(make_context(op)).spec.containers[0].env}
    assert env["COPIES"] == f"{SOURCE_HOST}/{REPO}@{PINNED} {DEST_HOST}/{REPO}:1.4.2"


def test_more_copies_than_a_task_can_report_are_refused_at_parse_time_with_the_fix() -> None:
    with pytest.raises(PromotionInputError) as caught:
        EcrPromoteOperator(
            task_id="promote",
            engine="skopeo",
            source_image=f"{SOURCE_HOST}/{REPO}",
            dest_image=f"{DEST_HOST}/{REPO}",
            tags=[f"1.0.{i}" for i in range(MAX_COPIES + 1)],
        )
    message = str(caught.value)
    assert caught.value.param == "tags"
    assert f"holds {MAX_COPIES + 1} copies, over the limit of {MAX_COPIES} copies per task" in message
    assert ".expand(tags=" in message
    assert len(message) < 1200


def test_a_copy_list_larger_than_a_pod_can_carry_is_refused_before_any_pod() -> None:
    repo = "/".join(["deep-team-name-" + "r" * 40] * 4)
    pairs = [
        {
            "source_image": f"{SOURCE_HOST}/{repo}:{tag}",
            "dest_image": f"{DEST_HOST}/{repo}-{i % 2}:{tag}",
        }
        for i, tag in enumerate(long_tags(2500))
    ]
    op = EcrPromoteOperator(task_id="promote", engine="skopeo", promotions="{{ params.pairs }}")
    context = make_context(op, conf={"pairs": pairs})
    op.render_template_fields(context)
    op.promotions = pairs  # as rendered with render_template_as_native_obj
    with kubernetes_stand_in(lambda pod: pod) as cluster, pytest.raises(PromotionInputError) as caught:
        op.execute(context)
    assert cluster.created == []
    assert caught.value.param == "promotions"
    assert f"over the limit of {MAX_COPY_LIST_BYTES} bytes" in str(caught.value)
    assert "1.5 MiB" in str(caught.value) and ".expand(" in str(caught.value)


def test_an_environment_string_over_the_kernel_limit_cannot_start_a_process() -> None:
    """Why the list is split: the kernel refuses one env string over MAX_ARG_STRLEN (E2BIG)."""
    with pytest.raises(OSError, match="Argument list too long") as caught:
        subprocess.run(["true"], env={"COPIES": "x" * MAX_ARG_STRLEN}, check=False)
    assert caught.value.errno == errno.E2BIG
    subprocess.run(["true"], env={"COPIES": "x" * CHUNK_BYTES}, check=True)


# the real copy script, at size -----------------------------------------------------------------

SKOPEO = f"""#!/bin/sh
for last; do :; done
case "$1" in
inspect)
    case "$last" in
        *missing*) echo "manifest unknown: $last" >&2; exit 1 ;;
        docker://{SOURCE_HOST}/*) printf '%s' '{MANIFEST.decode()}' ;;
        *) if [ -n "${{DEST_PRESENT:-}}" ]; then printf '%s' '{MANIFEST.decode()}'; exit 0; fi
           echo "manifest unknown" >&2; exit 1 ;;
    esac ;;
copy)
    case "$*" in *missing*) echo "reading manifest: manifest unknown" >&2; exit 1 ;; esac
    while [ $# -gt 0 ]; do
        [ "$1" != --digestfile ] || printf %s {DIGEST} > "$2"
        shift
    done ;;
*) echo "skopeo stand-in: '$1' is not served here" >&2; exit 1 ;;
esac
"""


def run_script(tmp_path: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """copy.sh with ``env`` (as the pod gets it); returns (exit code, termination message, log)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "skopeo").write_text(SKOPEO)
    (bin_dir / "skopeo").chmod(0o755)
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    term = tmp_path / "termination-log"
    done = subprocess.run(
        ["sh", "-c", script("copy.sh")],
        env={
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "TMPDIR": str(scratch),
            "TERMINATION_LOG": str(term),
            "SRC_AUTH": "a",
            "DEST_AUTH": "b",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one log, as the kubelet keeps it
        text=True,
        timeout=600,
        check=False,
    )
    return done.returncode, term.read_text(), done.stdout


def batch(tags: list[str], **kwargs: Any) -> EcrPromoteOperator:
    return EcrPromoteOperator(
        task_id="promote",
        namespace="ns",
        engine="skopeo",
        source_image=f"{SOURCE_HOST}/{REPO}",
        dest_image=f"{DEST_HOST}/{REPO}",
        tags=tags,
        **kwargs,
    )


def copier_env(op: EcrPromoteOperator) -> dict[str, str]:
    pod = op.build_pod_request_obj(make_context(op))
    return {e.name: e.value for e in pod.spec.containers[0].env if e.name not in ("HOME", "TMPDIR")}


def pod_that_said(message: str, exit_code: int, reason: str | None = None) -> Any:
    def run(pod: k8s.V1Pod) -> k8s.V1Pod:
        copier = terminated("base", exit_code, message)
        if reason:
            copier.state.terminated.reason = reason
        return finished(pod, [terminated(INIT_CONTAINER_NAME, 0)], [copier])

    return run


def test_1500_long_tags_travel_in_several_variables_and_each_is_reported(tmp_path: Path) -> None:
    tags = long_tags(1500)
    tags[7] = "missing-" + tags[7][8:]
    op = batch(tags, parallel=8)
    env = copier_env(op)
    assert int(env["COPY_CHUNKS"]) == 2
    code, message, log = run_script(tmp_path, env)
    assert code == 1
    summary = parse_summary(message)
    assert summary is not None and (summary.copies, summary.failed) == (1500, 1)
    assert len(message.encode()) <= 1024
    report = find_report(log, summary)
    assert report is not None and len(report) == 1500

    context = make_context(op)
    with kubernetes_stand_in(pod_that_said(message, code), {"base": log}.get) as cluster:
        with pytest.raises(EcrPromoteError) as caught:
            op.execute(context)
    assert cluster.log_reads == ["base"]
    result = context["ti"].pushed["return_value"]
    assert (result["copied"], result["failed"], len(result["promotions"])) == (1499, 1, 1500)
    assert [e["dest_image"] for e in result["promotions"]] == [f"{DEST_HOST}/{REPO}:{t}" for t in tags]
    failed = result["promotions"][7]
    assert failed["reason"] == f"source {SOURCE_HOST}/{REPO}:{tags[7]} not found"
    assert "1 of 1500 promotions failed" in str(caught.value)
    assert "container 'base' ended: Error, exit code 1" in str(caught.value)


def test_a_small_batch_is_read_from_the_termination_message_alone(tmp_path: Path) -> None:
    op = batch(["1.0", "1.1", "1.2"])
    code, message, _ = run_script(tmp_path, {**copier_env(op), "DEST_PRESENT": "1"})
    assert code == 0
    context = make_context(op)
    with kubernetes_stand_in(pod_that_said(message, code)) as cluster:
        result = op.execute(context)
    assert cluster.log_reads == []
    assert [e["status"] for e in result["promotions"]] == ["present"] * 3


def test_when_the_log_cannot_be_read_the_failure_says_so_and_keeps_what_the_message_holds(
    tmp_path: Path,
) -> None:
    tags = [f"missing-{i}" if i % 3 == 1 else f"2.0.{i}" for i in range(60)]
    op = batch(tags)
    code, message, _ = run_script(tmp_path, copier_env(op))
    context = make_context(op)
    with kubernetes_stand_in(pod_that_said(message, code)), pytest.raises(EcrPromoteError) as caught:
        op.execute(context)
    entries = context["ti"].pushed["return_value"]["promotions"]
    failed = [e for e in entries if e["status"] == "failed"]
    unknown = [e for e in entries if e["status"] == "unknown"]
    assert failed, "the failures come first in the termination message"
    assert all("not found" in e["reason"] for e in failed)
    assert len(failed) + len(unknown) == 60 and unknown
    assert all(
        "the copier's log, which holds its full report, could not be read (ApiException" in e["reason"]
        and "(20 failed in all)" in e["reason"]
        for e in unknown
    )
    assert "could not be read" in str(caught.value)


def test_text_in_the_log_cannot_pass_for_the_report(tmp_path: Path) -> None:
    op = batch(long_tags(40))
    code, message, log = run_script(tmp_path, copier_env(op))
    summary = parse_summary(message)
    assert summary is not None
    lines = log.split("\n")
    start = lines.index(f"ecr-promote report begin {summary.copies}")
    forged_lines = [line.replace(" copied ", " failed ", 1) for line in lines[start + 1 : start + 41]]
    forged = "\n".join(
        [lines[start], *forged_lines, lines[start + 41]]  # the real frame lines around a changed report
    )
    context = make_context(op)
    with (
        kubernetes_stand_in(pod_that_said(message, code), {"base": forged}.get),
        pytest.raises(EcrPromoteError),
    ):
        op.execute(context)
    entries = context["ti"].pushed["return_value"]["promotions"]
    assert {e["status"] for e in entries} <= {"copied", "unknown"}
    assert any("holds no report matching its summary" in e.get("reason", "") for e in entries)


def test_a_killed_copier_is_named_with_its_reason_and_exit_code() -> None:
    op = batch(["1.0", "1.1"])
    context = make_context(op)
    with kubernetes_stand_in(pod_that_said("", 137, "OOMKilled")), pytest.raises(EcrPromoteError) as caught:
        op.execute(context)
    assert "container 'base' ended: OOMKilled, exit code 137" in str(caught.value)
    entries = context["ti"].pushed["return_value"]["promotions"]
    assert [e["status"] for e in entries] == ["unknown", "unknown"]
    killed = "no report from the pod: its copier container 'base' ended: OOMKilled, exit code 137"
    assert all(e["reason"].startswith(killed) for e in entries)
    # what OOMKilled means, at the copier's own limit (the plan's), and the parameter that raises it
    assert "(out of memory at its memory limit (1Gi)" in entries[0]["reason"]
    assert "container_resources" in entries[0]["reason"]


# empty lists -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"source_image": f"{SOURCE_HOST}/{REPO}", "dest_image": f"{DEST_HOST}/{REPO}", "tags": []},
        {"promotions": []},
    ],
    ids=["tags", "promotions"],
)
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_an_empty_list_succeeds_without_a_pod(kwargs: dict[str, Any], engine: str) -> None:
    op = EcrPromoteOperator(task_id="promote", engine=engine, **kwargs)
    context = make_context(op)
    with kubernetes_stand_in(lambda pod: pod) as cluster:
        result = op.execute(context)
    assert cluster.created == []
    expected = {
        "engine": engine, "promotions": [], "copied": 0, "present": 0, "skipped": 0, "failed": 0, "retries": 0
    }  # fmt: skip
    assert result == expected
    assert "return_value" not in context["ti"].pushed  # returned: the task runner stores it
    json.dumps(result)


def test_an_empty_templated_list_succeeds_without_a_pod() -> None:
    op = batch("{{ params.tags }}")  # type: ignore[arg-type]
    context = make_context(op, conf={"tags": []})
    op.render_template_fields(context)
    op.tags = []  # what a native render of the param gives
    with kubernetes_stand_in(lambda pod: pod) as cluster:
        assert op.execute(context)["promotions"] == []
    assert cluster.created == []


def test_an_empty_list_still_needs_valid_repositories() -> None:
    with pytest.raises(PromotionInputError) as caught:
        EcrPromoteOperator(
            task_id="p", engine="skopeo", source_image="nope", dest_image=f"{DEST_HOST}/r", tags=[]
        )
    assert caught.value.param == "source_image"


def test_rendering_an_empty_list_has_no_pod_to_print() -> None:
    op = batch([])
    with pytest.raises(PromotionInputError) as caught:
        build_pod_offline(op)
    assert caught.value.param == "tags"
    assert "nothing to promote" in str(caught.value)


def test_the_script_reports_every_copy_even_at_one_per_worker(tmp_path: Path) -> None:
    """More workers than copies: each copy still runs once and is reported once."""
    op = batch(["1.0", "1.1"], parallel=8)
    code, message, log = run_script(tmp_path, copier_env(op))
    assert code == 0
    summary = parse_summary(message)
    assert summary is not None and summary.copies == 2
    assert find_report(log, summary) == [f"1 copied {DIGEST} {DIGEST}", f"2 copied {DIGEST} {DIGEST}"]
    assert os.listdir(tmp_path / "scratch") == []


def test_the_report_is_found_when_messages_land_among_its_lines(tmp_path: Path) -> None:
    """The runtime copies stdout and stderr separately: the script's messages can land inside the
    report's frame in the log. The report is still found, and only lines hashing to the summary
    count."""
    op = batch(["1.0", "1.1", "1.2"], parallel=2)
    code, message, log = run_script(tmp_path, copier_env(op))
    summary = parse_summary(message)
    assert code == 0 and summary is not None
    report = find_report(log, summary)
    assert report is not None and len(report) == 3
    lines = log.split("\n")
    begin = lines.index(f"ecr-promote report begin {summary.copies}")
    moved = "ecr-promote copy: copied 210987654321.dkr.ecr.us-east-1.amazonaws.com/app:1.2: " + DIGEST
    interleaved = [*lines[: begin + 1], moved, lines[begin + 1], moved, *lines[begin + 2 :]]
    assert find_report("\n".join(interleaved), summary) == report

    forged = [*lines[: begin + 1], f"9 copied {DIGEST} {DIGEST}", *lines[begin + 1 :]]
    assert find_report("\n".join(forged), summary) is None
    cut = [line for line in lines if line != report[1]]
    assert find_report("\n".join(cut), summary) is None


def test_render_of_an_empty_list_prints_nothing_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from airflow_ecr_promote.cli import main

    values = tmp_path / "promote.yaml"
    values.write_text(
        f"source_image: {SOURCE_HOST}/{REPO}\ndest_image: {DEST_HOST}/{REPO}\nengine: skopeo\ntags: []\n"
    )
    assert main(["render", "--values", str(values)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "tags=[]: is empty: there is nothing to promote, so there is no pod to build" in err


def test_a_report_line_ending_in_a_space_still_matches_its_summary() -> None:
    """A reason cut at 300 characters may end with a space; the sha256 covers it."""
    lines = [f"1 copied {DIGEST} {DIGEST}", f"2 skipped {PINNED} {DIGEST} destination holds another digest "]
    report = "".join(f"{line}\n" for line in lines)
    sha = hashlib.sha256(report.encode()).hexdigest()
    summary = f"ecr-promote summary copies=2 copied=1 present=0 skipped=1 failed=0 report=sha256:{sha}\n"
    op = batch(["1.0", "1.1"], on_conflict="skip")
    context = make_context(op)
    with kubernetes_stand_in(pod_that_said(summary + report, 0)) as cluster:
        result = op.execute(context)
    assert cluster.log_reads == []
    assert [e["status"] for e in result["promotions"]] == ["copied", "skipped"]


def test_a_killed_copier_still_reports_the_copies_its_log_says_it_made(tmp_path: Path) -> None:
    op = batch(["1.0", "1.1", "1.2"])
    _, _, log = run_script(tmp_path, copier_env(op))
    # killed (OOM) after two copies: the log holds their lines, no report, no summary
    cut = log.split("\n")
    lines = [line for line in cut if line.startswith("ecr-promote result ")]
    assert sorted(line.split(" ")[2] for line in lines) == ["1", "2", "3"]  # parallel: any order
    partial = "\n".join(line for line in cut if not line.startswith("ecr-promote result 3 "))
    partial = partial[: partial.index("ecr-promote report begin")]
    context = make_context(op)
    with (
        kubernetes_stand_in(pod_that_said("", 137, "OOMKilled"), {"base": partial}.get),
        pytest.raises(EcrPromoteError) as caught,
    ):
        op.execute(context)
    entries = context["ti"].pushed["return_value"]["promotions"]
    assert [e["status"] for e in entries] == ["copied", "copied", "unknown"]
    assert entries[2]["reason"].startswith(
        "no report from the pod: its copier container 'base' ended: OOMKilled, exit code 137 (out of memory"
    )
    assert "1 of 3 promotions failed" in str(caught.value)
