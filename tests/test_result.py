"""The task's return value and failure messages, through KPO's real execute / deferral paths.

Only the Kubernetes API is stood in for (tests/kube_stand_in.py); the pod statuses here are the
ones a kubelet reports, with the termination messages the in-pod scripts write.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import models as k8s

from airflow_ecr_promote.operators import EcrPromoteError, EcrPromoteOperator
from airflow_ecr_promote.pod import INIT_CONTAINER_NAME
from airflow_ecr_promote.result import read_pod
from tests.airflow_context import make_context
from tests.conftest import DEST_HOST, SOURCE_HOST
from tests.kube_stand_in import finished, kubernetes_stand_in, terminated
from tests.run_state import UNREACHABLE_KUBECONFIG

SOURCE = f"{SOURCE_HOST}/team/app:1.0"
DEST = f"{DEST_HOST}/team/app:1.0"
DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
PULL = "arn:aws:iam::123456789012:role/pull"


def operator(**kwargs: Any) -> EcrPromoteOperator:
    return EcrPromoteOperator(
        task_id="promote", namespace="ns", **{"source_image": SOURCE, "dest_image": DEST, **kwargs}
    )


def ends_with(init_code: int, init_message: str | None, copier: k8s.V1ContainerStatus | None):  # type: ignore[no-untyped-def]
    def run(pod: k8s.V1Pod) -> k8s.V1Pod:
        return finished(
            pod, [terminated(INIT_CONTAINER_NAME, init_code, init_message)], [copier] if copier else []
        )

    return run


def test_skopeo_success_returns_and_pushes_the_digest() -> None:
    op = operator(engine="skopeo")
    context = make_context(op)
    run = ends_with(0, None, terminated("base", 0, f"1 copied {DIGEST} {DIGEST}\n"))
    with kubernetes_stand_in(run) as cluster:
        result = op.execute(context)
    assert result == {
        "source_image": SOURCE,
        "dest_image": DEST,
        "engine": "skopeo",
        "status": "copied",
        "digest": DIGEST,
        "source_digest": DIGEST,
        "digest_kept": True,
        "retries": 0,
    }
    # Returned, not pushed: the task runner stores it (and records its length for mapping).
    assert "return_value" not in context["ti"].pushed
    assert len(cluster.created) == 1
    assert cluster.deleted == [cluster.created[0].metadata.name]


def test_already_promoted_is_reported_as_present() -> None:
    op = operator(engine="crane")
    run = ends_with(0, None, terminated("base", 0, f"1 present {DIGEST} {DIGEST}"))
    with kubernetes_stand_in(run):
        result = op.execute(make_context(op))
    assert (result["status"], result["digest_kept"]) == ("present", True)


def test_kaniko_reports_the_new_digest_and_that_it_differs() -> None:
    op = operator(engine="kaniko", source_image=f"{SOURCE_HOST}/team/app@{DIGEST}")
    run = ends_with(0, None, terminated("base", 0, OTHER))
    with kubernetes_stand_in(run):
        result = op.execute(make_context(op))
    assert (result["digest"], result["source_digest"], result["digest_kept"]) == (OTHER, DIGEST, False)


def test_kaniko_by_tag_does_not_claim_to_know_the_source_digest_but_knows_it_changed() -> None:
    """kaniko writes a new config (created time), so the digest is never kept, whatever it was."""
    op = operator(engine="kaniko")
    with kubernetes_stand_in(ends_with(0, None, terminated("base", 0, OTHER))):
        result = op.execute(make_context(op))
    assert (result["digest"], result["source_digest"], result["digest_kept"]) == (OTHER, None, False)


def test_a_kaniko_push_that_fails_says_kanikos_error_not_only_the_digest_it_wrote() -> None:
    """kaniko writes its digest file (the termination message) before it pushes: a push that fails
    otherwise than by an ECR refusal (seen in the lab with a Helm chart: MANIFEST_BLOB_UNKNOWN)
    must say kaniko's own last error, read from its log."""
    op = operator(engine="kaniko")
    said = (
        "error pushing image: failed to push to destination " + DEST + ": PUT https://" + DEST
        + ": MANIFEST_BLOB_UNKNOWN: blob unknown to registry; sha256:" + "d" * 64
    )  # fmt: skip
    log = f"\x1b[36mINFO\x1b[0m[0000] Pushing image to {DEST}\n\x1b[33mWARN\x1b[0m[0000] Retrying\n{said}\n"
    with kubernetes_stand_in(ends_with(0, None, terminated("base", 1, OTHER)), lambda _container: log):
        with pytest.raises(EcrPromoteError) as caught:
            op.execute(make_context(op))
    assert str(caught.value).endswith(f"{OTHER}: {said}")


def test_login_failure_names_the_cause_and_the_images() -> None:
    op = operator(engine="skopeo", source_role_arn=PULL)
    reason = f"ecr-promote login: cannot assume role {PULL} for registry {SOURCE_HOST}: AccessDenied"
    with kubernetes_stand_in(ends_with(1, reason, None)) as cluster:
        with pytest.raises(EcrPromoteError) as caught:
            op.execute(make_context(op))
    message = str(caught.value)
    assert "logging in to the registries" in message
    assert PULL in message
    assert SOURCE in message
    assert DEST in message
    assert cluster.deleted, "the failed pod is still cleaned up by KPO"


def test_missing_source_fails_naming_it() -> None:
    op = operator(engine="skopeo")
    line = f"1 failed - - source {SOURCE} not found"
    with kubernetes_stand_in(ends_with(0, None, terminated("base", 1, line))):
        with pytest.raises(EcrPromoteError, match=f"source {SOURCE} not found"):
            op.execute(make_context(op))


def test_conflict_shows_both_digests() -> None:
    op = operator(engine="skopeo")
    line = f"1 failed {OTHER} {DIGEST} destination tag holds another digest"
    context = make_context(op)
    with kubernetes_stand_in(ends_with(0, None, terminated("base", 1, line))):
        with pytest.raises(EcrPromoteError, match="destination tag holds another digest"):
            op.execute(context)
    pushed = context["ti"].pushed["return_value"]
    assert (pushed["digest"], pushed["source_digest"], pushed["digest_kept"]) == (OTHER, DIGEST, False)


def test_image_pull_failure_of_the_copier_is_explained() -> None:
    op = operator(engine="skopeo")
    waiting = k8s.V1ContainerStatus(
        name="base",
        image="",
        image_id="",
        ready=False,
        restart_count=0,
        state=k8s.V1ContainerState(
            waiting=k8s.V1ContainerStateWaiting(reason="ImagePullBackOff", message="no such image")
        ),
    )
    with kubernetes_stand_in(ends_with(0, None, waiting)):
        with pytest.raises(EcrPromoteError, match="ImagePullBackOff: no such image"):
            op.execute(make_context(op))


def test_batch_reports_every_tag_and_fails_naming_the_missing_one() -> None:
    op = operator(engine="skopeo", tags=["1.0", "1.1", "1.2"])
    lines = "\n".join(
        [
            f"1 copied {DIGEST} {DIGEST}",
            f"2 failed - - source {SOURCE_HOST}/team/app:1.1 not found",
            f"3 present {OTHER} {OTHER}",
        ]
    )
    context = make_context(op)
    with kubernetes_stand_in(ends_with(0, None, terminated("base", 1, lines))):
        with pytest.raises(EcrPromoteError) as caught:
            op.execute(context)
    assert "1 of 3 promotions failed" in str(caught.value)
    assert f"{SOURCE_HOST}/team/app:1.1 not found" in str(caught.value)
    result = context["ti"].pushed["return_value"]
    assert [p["status"] for p in result["promotions"]] == ["copied", "failed", "present"]
    assert (result["copied"], result["failed"], result["present"]) == (1, 1, 1)


def test_deferrable_mode_returns_the_same_result() -> None:
    from airflow_ecr_promote.compat import TaskDeferred

    op = operator(engine="skopeo", deferrable=True)
    context = make_context(op)
    run = ends_with(0, None, terminated("base", 0, f"1 copied {DIGEST} {DIGEST}"))
    with kubernetes_stand_in(run) as cluster:
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(context)
        name = cluster.created[0].metadata.name
        assert deferred.value.method_name == "trigger_reentry"
        fresh = operator(engine="skopeo", deferrable=True)  # a resumed task is a new instance
        result = fresh.trigger_reentry(context, {"status": "success", "name": name, "namespace": "ns"})
    assert result["digest"] == DIGEST
    assert result["digest_kept"] is True
    assert "return_value" not in context["ti"].pushed


def test_a_collected_pod_without_an_ecr_connection_fails_saying_what_to_set() -> None:
    """No ``dest_aws_conn_id``: nothing can confirm the copies of a pod collected after it
    succeeded, so the task fails instead of succeeding with no return value."""
    from airflow_ecr_promote.compat import TaskDeferred

    op = operator(engine="skopeo", deferrable=True)
    context = make_context(op)
    run = ends_with(0, None, terminated("base", 0, f"1 copied {DIGEST} {DIGEST}"))
    with kubernetes_stand_in(run) as cluster:
        with pytest.raises(TaskDeferred):
            op.execute(context)
        name = cluster.created[0].metadata.name
        cluster.collected.add(name)
        fresh = operator(engine="skopeo", deferrable=True)
        with pytest.raises(EcrPromoteError) as caught:
            fresh.trigger_reentry(context, {"status": "success", "name": name, "namespace": "ns"})
    assert "set dest_aws_conn_id to have the ECR API confirm it" in str(caught.value)
    assert context["ti"].pushed["return_value"]["status"] == "unknown"


@pytest.mark.parametrize(
    "extras",
    [
        {"kube_config_path": "CONNECTION_FILE"},
        {"extra__kubernetes__kube_config_path": "CONNECTION_FILE"},
        {},
    ],
    ids=["connection-path", "connection-path-prefixed", "no-connection-source"],
)
def test_the_trigger_loads_the_cluster_config_the_worker_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extras: dict[str, str]
) -> None:
    """With ``KUBECONFIG`` set and a connection naming its own kubeconfig, KPO handed the trigger
    both: cncf-kubernetes 10.25's hook refused them as mutually exclusive (a deferred task never
    read its pod again), and 10.1's loaded ``KUBECONFIG``'s cluster. The trigger built here is
    KPO's own, and its hook loads one config: the connection's when it names one (as the worker's
    hook does), else ``KUBECONFIG``'s."""
    import asyncio

    from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook

    from airflow_ecr_promote.compat import TaskDeferred, async_hook_reads_kube_config_path

    def kubeconfig(name: str, server: str) -> Path:
        path = tmp_path / name
        path.write_text(UNREACHABLE_KUBECONFIG.replace("https://127.0.0.1:1", server))
        return path

    env_file = kubeconfig("env-kubeconfig", "https://127.0.0.1:2")
    conn_file = kubeconfig("conn-kubeconfig", "https://127.0.0.1:3")
    monkeypatch.setenv("KUBECONFIG", str(env_file))
    conn_extras = {key: str(conn_file) for key in extras}
    monkeypatch.setenv(
        "AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps({"conn_type": "kubernetes", "extra": conn_extras})
    )
    op = operator(engine="skopeo", deferrable=True)
    run = ends_with(0, None, terminated("base", 0, f"1 copied {DIGEST} {DIGEST}"))
    with kubernetes_stand_in(run):
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(make_context(op))
    hook = deferred.value.trigger.hook
    assert isinstance(hook, AsyncKubernetesHook)
    asyncio.run(hook._load_config())  # KPO 10.25 raised "... are mutually exclusive" here
    trigger = deferred.value.trigger
    expected = "https://127.0.0.1:3" if extras else "https://127.0.0.1:2"
    if async_hook_reads_kube_config_path():  # the trigger's hook loads the connection's path
        assert (trigger.config_dict is None) == bool(extras)
        assert hook.client_configuration.host == expected
    else:  # 10.1.0's reads no path: the trigger gets the connection's file as its dict
        assert trigger.config_dict["clusters"][0]["cluster"]["server"] == expected


def test_reading_the_copiers_log_is_bounded_by_a_request_timeout() -> None:
    """A log request the API server never answers (the node is gone) ends after the operator's
    request timeout, as a reason the failure can quote, instead of holding the task forever.
    The Kubernetes client is the real one, talking to a server that accepts and never answers."""
    import socket
    import threading
    import time

    from kubernetes.client import ApiClient, Configuration, CoreV1Api

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])  # and never answered
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    op = operator(engine="skopeo")
    op.log_read_timeout = (1.0, 1.0)
    op.__dict__["client"] = CoreV1Api(
        ApiClient(Configuration(host=f"http://127.0.0.1:{server.getsockname()[1]}"))
    )
    pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="promote-1", namespace="ns"))
    outcome: list[tuple[str | None, str | None]] = []
    reader = threading.Thread(target=lambda: outcome.append(op._copier_log(pod)), daemon=True)
    started = time.monotonic()
    reader.start()
    reader.join(30)
    server.close()
    assert not reader.is_alive(), "the log request is still waiting after 30 s"
    assert held, "the request reached the server"
    log, error = outcome[0]
    assert log is None and error is not None and "timed out" in error, error
    assert time.monotonic() - started < 20


def test_a_pod_the_api_server_refuses_fails_the_task_with_the_api_servers_reason() -> None:
    """Seen on the lab's real cluster: admission (Pod Security) refuses the pod, so nothing ran and
    KPO has no remote pod. The task must fail with the API server's reason, not with an error
    from reading the status of a pod that never existed."""
    from kubernetes.client.exceptions import ApiException

    refusal = 'pods "promote-x" is forbidden: violates PodSecurity "restricted:latest": runAsUser=0'

    def refuse(pod: k8s.V1Pod) -> k8s.V1Pod:
        raise ApiException(status=403, reason=refusal)

    op = operator(engine="kaniko")
    with kubernetes_stand_in(refuse), pytest.raises(ApiException, match="violates PodSecurity"):
        op.execute(make_context(op))


def _copier_pod(
    state: k8s.V1ContainerState | None, *, limit: str | None = None, deleting: bool = False
) -> k8s.V1Pod:
    """A pod as a kubelet reports it: the login done, the copier in ``state`` (None: no status)."""
    from datetime import UTC, datetime

    resources = k8s.V1ResourceRequirements(limits={"memory": limit} if limit else None)
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(
            name="promote-abc",
            namespace="ns",
            deletion_timestamp=datetime(2026, 12, 7, tzinfo=UTC) if deleting else None,
        ),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base", resources=resources)]),
        status=k8s.V1PodStatus(
            phase="Running" if state is None or state.running else "Failed",
            init_container_statuses=[terminated(INIT_CONTAINER_NAME, 0)],
            container_statuses=[
                k8s.V1ContainerStatus(
                    name="base", image="", image_id="", ready=False, restart_count=0, state=state
                )
            ]
            if state
            else [],
        ),
    )


def _promotion() -> Any:
    from airflow_ecr_promote.promotion import parse_promotion

    return parse_promotion(source_image=SOURCE, dest_image=DEST, on_conflict="fail")


def test_an_oomkilled_copier_says_out_of_memory_its_limit_and_the_parameter() -> None:
    from airflow_ecr_promote.result import read_pod

    killed = k8s.V1ContainerState(
        terminated=k8s.V1ContainerStateTerminated(exit_code=137, reason="OOMKilled", message=None)
    )
    outcome = read_pod(_copier_pod(killed, limit="20Mi"), _promotion(), "skopeo", "base")
    assert outcome.failure is not None
    assert "container 'base' ended: OOMKilled, exit code 137" in outcome.failure
    assert "out of memory at its memory limit (20Mi)" in outcome.failure
    assert "container_resources" in outcome.failure


def test_a_pod_deleted_by_someone_else_says_so_whether_gone_or_terminating() -> None:
    from airflow_ecr_promote.result import read_pod

    running = k8s.V1ContainerState(running=k8s.V1ContainerStateRunning())
    gone = read_pod(_copier_pod(running), _promotion(), "skopeo", "base", gone=True)
    assert gone.failure is not None
    assert (
        f"Promotion {SOURCE} -> {DEST} failed: its pod ns/promote-abc was deleted while it ran"
        in gone.failure
    )
    assert "not by this task" in gone.failure and "its copier had not ended" in gone.failure
    killed = k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=137, reason="Error"))
    terminating = read_pod(_copier_pod(killed, deleting=True), _promotion(), "skopeo", "base")
    assert terminating.failure is not None
    assert "its pod ns/promote-abc was deleted while it ran" in terminating.failure
    assert "container 'base' ended: Error, exit code 137" in terminating.failure
    # A pod that ended by itself says nothing of a deletion.
    plain = read_pod(_copier_pod(killed), _promotion(), "skopeo", "base")
    assert plain.failure is not None and "deleted" not in plain.failure


def _report(lines: list[str], login_retries: int = 0) -> str:
    """The copy script's termination message: summary line, then the whole report."""
    import hashlib

    text = "".join(f"{line}\n" for line in lines)
    statuses = [line.split(" ")[1] for line in lines]
    retries = sum(int(f[8:]) for line in lines for f in line.split(" ")[4:5] if f.startswith("retries="))
    counts = " ".join(f"{s}={statuses.count(s)}" for s in ("copied", "present", "skipped", "failed"))
    summary = (
        f"ecr-promote summary copies={len(lines)} {counts} retries={retries} login_retries={login_retries} "
        f"report=sha256:{hashlib.sha256(text.encode()).hexdigest()}"
    )
    return f"{summary}\n{text}"


def test_the_return_value_counts_retries_per_copy_in_all_and_of_the_logins() -> None:
    op = operator(engine="crane", tags=["1.0", "1.1", "1.2"])
    message = _report(
        [
            f"1 copied {DIGEST} {DIGEST} retries=2",
            f"2 present {OTHER} {OTHER}",
            f"3 copied {DIGEST} {DIGEST} retries=5",
        ],
        login_retries=1,
    )
    with kubernetes_stand_in(ends_with(0, None, terminated("base", 0, message))):
        result = op.execute(make_context(op))
    assert [p["retries"] for p in result["promotions"]] == [2, 0, 5]
    assert (result["retries"], result["login_retries"], result["copied"], result["failed"]) == (7, 1, 2, 0)
    assert all("reason" not in p for p in result["promotions"]), "a count is no reason"


def test_a_copy_still_throttled_names_the_api_and_what_to_change() -> None:
    op = operator(engine="crane")
    tool = f"PUT https://{DEST_HOST}/v2/team/app/manifests/1.0: TOOMANYREQUESTS: Rate exceeded"
    message = _report([f"1 failed - {DIGEST} retries=6 copy throttled {tool}"])
    context = make_context(op)
    with kubernetes_stand_in(ends_with(0, None, terminated("base", 1, message))):
        with pytest.raises(EcrPromoteError) as caught:
            op.execute(context)
    text = str(caught.value)
    assert f"ECR throttled PutImage (429 TOOMANYREQUESTS) on {DEST_HOST}, still after 6 retries" in text
    assert "a lower parallel=" in text and "a smaller Airflow pool" in text
    assert "'Rate of PutImage requests' quota" in text and "account 210987654321" in text
    assert context["ti"].pushed["return_value"]["retries"] == 6


def test_a_login_still_throttled_names_the_api_and_what_to_change() -> None:
    op = operator(engine="skopeo")
    reason = (
        f"ecr-promote login: cannot get an ECR login password for registry {SOURCE_HOST} in us-west-2 as "
        "the pod's own identity: An error occurred (ThrottleException) when calling the "
        "GetAuthorizationToken operation: Rate exceeded (tried 7 times)"
    )
    with kubernetes_stand_in(ends_with(1, reason, None)):
        with pytest.raises(EcrPromoteError) as caught:
            op.execute(make_context(op))
    text = str(caught.value)
    assert "ECR throttled GetAuthorizationToken (ThrottleException)" in text
    assert "smaller Airflow pool" in text and "parallel=" in text
    assert "'Rate of GetAuthorizationToken requests' quota" in text


def pending_pod(conditions: list[k8s.V1PodCondition], inits: list[k8s.V1ContainerStatus]) -> k8s.V1Pod:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="p", namespace="ns"),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base")], node_name="node-1" if inits else None),
        status=k8s.V1PodStatus(phase="Pending", conditions=conditions, init_container_statuses=inits),
    )


def test_a_pod_no_node_took_names_the_schedulers_reason_and_what_to_change() -> None:
    unschedulable = k8s.V1PodCondition(
        type="PodScheduled",
        status="False",
        reason="Unschedulable",
        message="0/1 nodes are available: 1 Insufficient cpu. ",
    )
    pod = pending_pod([unschedulable], [])
    outcome = read_pod(pod, _promotion(), "skopeo", "base", startup_timeout=120, schedule_timeout=60)
    assert outcome.result is None
    assert outcome.failure == (
        f"Promotion {SOURCE} -> {DEST} did not run its copier: the pod stayed Pending: no node took it "
        "within schedule_timeout_seconds (60 s) (Unschedulable: 0/1 nodes are available: 1 Insufficient "
        "cpu.). Ask for less (container_resources), make room on the cluster, or start fewer promotions "
        "at once (the task's pool, max_active_tis_per_dag, parallel=)"
    )


def test_a_scheduled_pod_that_did_not_start_in_time_names_its_containers_and_the_timeout() -> None:
    scheduled = k8s.V1PodCondition(type="PodScheduled", status="True")
    creating = k8s.V1ContainerStatus(
        name=INIT_CONTAINER_NAME,
        image="",
        image_id="",
        ready=False,
        restart_count=0,
        state=k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(reason="ContainerCreating")),
    )
    outcome = read_pod(
        pending_pod([scheduled], [creating]), _promotion(), "skopeo", "base", startup_timeout=120
    )
    assert outcome.failure == (
        f"Promotion {SOURCE} -> {DEST} did not run its copier: the pod stayed Pending: scheduled on node "
        f"node-1, it did not start its containers within startup_timeout_seconds (120 s) (init container "
        f"'{INIT_CONTAINER_NAME}' ContainerCreating). A busy node creates containers slowly: raise "
        "startup_timeout_seconds, or start fewer promotions at once (the task's pool, "
        "max_active_tis_per_dag, parallel=)"
    )
