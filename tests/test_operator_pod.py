"""The operator's pod for each engine, built as KPO builds it: example DAG from a DagBag,
templates rendered with a real Jinja context, then ``build_pod_request_obj``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow import __version__ as airflow_version
from airflow.providers.cncf.kubernetes.operators import pod as kpo_module
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from airflow_ecr_promote.engines import ENGINES, script
from airflow_ecr_promote.operators import EcrPromoteOperator
from airflow_ecr_promote.pod import (
    AUTH_VOLUME,
    DEFAULT_INIT_IMAGE,
    INIT_CONTAINER_NAME,
    LABEL_PREFIX,
    SCRATCH_VOLUME,
)
from tests.airflow_context import DagBag, containers, env_of, render_pod
from tests.conftest import DEST_HOST, REPO, SOURCE_HOST

AIRFLOW_3 = int(airflow_version.split(".")[0]) >= 3
PULL_ROLE = "arn:aws:iam::123456789012:role/ecr-promote-pull"
PUSH_ROLE = "arn:aws:iam::210987654321:role/ecr-promote-push"


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(REPO / "dags" / "examples"))


def on_demand_pod(dagbag: DagBag, **conf: Any) -> tuple[EcrPromoteOperator, k8s.V1Pod]:
    task = dagbag.dags["ecr_promote_on_demand"].get_task("promote")
    return render_pod(task, conf=conf)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_pod_shape_for_each_engine(dagbag: DagBag, engine: str) -> None:
    source = f"{SOURCE_HOST}/team/app:2.0.1"
    dest = f"{DEST_HOST}/team/app:2.0.1"
    _, pod = on_demand_pod(dagbag, engine=engine, source_image=source, dest_image=dest)
    found = containers(pod)
    assert list(found) == [INIT_CONTAINER_NAME, "base"], "one init container, one copier, no sidecar"
    init, copier = found[INIT_CONTAINER_NAME], found["base"]

    assert init.image == DEFAULT_INIT_IMAGE
    assert init.command == ["sh", "-c", script("login.sh")]
    init_env = env_of(init)
    assert init_env["LOGINS"].splitlines() == [
        f"{SOURCE_HOST} us-west-2 {PULL_ROLE} source",
        f"{DEST_HOST} us-east-1 {PUSH_ROLE} dest",
    ]
    assert init_env["WRITE_CONFIG"] == ("0" if engine == "skopeo" else "1")
    assert init_env.get("SOURCE_IMAGE") == (source if engine == "kaniko" else None)
    assert init_env["ROLE_SESSION_NAME"] == "ecr-promote-ecr_promote_on_demand-promote"

    assert copier.image == ENGINES[engine].default_image
    images = [c.image for c in found.values()]
    assert not any(i.endswith(":latest") or ":" not in i.rsplit("/", 1)[-1] for i in images), images
    if engine == "kaniko":
        assert copier.command in (None, [])
        assert copier.args == [
            "--dockerfile=/kaniko/.docker/Dockerfile",
            f"--destination={dest}",
            "--digest-file=/dev/termination-log",
            "--push-retry=3",
            "--image-download-retry=3",
            "--verbosity=info",
            "--custom-platform=linux/amd64",
        ]
    else:
        shell = "/busybox/sh" if engine == "crane" else "sh"
        assert copier.command == [shell, "-c", script("copy.sh")]
        copier_env = env_of(copier)
        assert copier_env["COPY_TOOL"] == engine
        assert copier_env["COPIES"] == f"{source} {dest}"
        assert copier_env["ON_CONFLICT"] == "fail"

    volumes = {v.name: v for v in pod.spec.volumes}
    assert volumes[AUTH_VOLUME].empty_dir.medium == "Memory"
    assert volumes[AUTH_VOLUME].empty_dir.size_limit == "16Mi"
    assert "xcom" not in volumes
    copier_mounts = {m.name: m for m in copier.volume_mounts}
    assert copier_mounts[AUTH_VOLUME].read_only is True
    assert copier_mounts[AUTH_VOLUME].mount_path == ENGINES[engine].auth_mount
    assert {m.name: m.read_only for m in init.volume_mounts} == {AUTH_VOLUME: None, SCRATCH_VOLUME: None}

    for container in (init, copier):
        security = container.security_context
        assert security.allow_privilege_escalation is False
        assert security.capabilities.drop == ["ALL"]
        assert security.seccomp_profile.type == "RuntimeDefault"
        assert container.resources.requests and container.resources.limits["memory"]
        assert container.termination_message_policy == "FallbackToLogsOnError"
    assert init.security_context.run_as_non_root is True
    assert init.security_context.read_only_root_filesystem is True
    if engine == "kaniko":
        assert copier.security_context.run_as_user == 0
        assert copier.security_context.read_only_root_filesystem is False
        assert copier.security_context.capabilities.add == ["CHOWN", "DAC_OVERRIDE", "FOWNER"]
    else:
        assert copier.security_context.run_as_non_root is True
        assert copier.security_context.read_only_root_filesystem is True
        assert copier.security_context.capabilities.add is None
    assert pod.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    assert pod.spec.service_account_name == "ecr-promote"
    assert pod.spec.automount_service_account_token is False, "no Kubernetes API token in the pod"
    assert pod.spec.restart_policy == "Never"

    labels = pod.metadata.labels
    assert labels[f"{LABEL_PREFIX}/engine"] == engine
    assert labels[f"{LABEL_PREFIX}/source-account"] == "123456789012"
    assert labels[f"{LABEL_PREFIX}/dest-account"] == "210987654321"
    assert labels[f"{LABEL_PREFIX}/repository"] == "team.app"
    assert labels[f"{LABEL_PREFIX}/tag"] == "2.0.1"
    assert labels["dag_id"] == "ecr_promote_on_demand"
    assert pod.metadata.annotations[f"{LABEL_PREFIX}/dest-image"] == dest


def test_params_defaults_render_and_none_stays_none(dagbag: DagBag) -> None:
    op, pod = on_demand_pod(dagbag)
    assert op.copier_image is None
    assert op.init_image is None
    assert containers(pod)["base"].image == ENGINES["skopeo"].default_image
    assert op.source_image == f"{SOURCE_HOST}/team/app:1.4.2"


def test_image_overrides_and_pod_identity(dagbag: DagBag) -> None:
    _, pod = on_demand_pod(
        dagbag,
        copier_image="registry.local/skopeo:1",
        init_image="registry.local/awscli:2",
        source_role_arn=None,
        dest_role_arn=None,
    )
    found = containers(pod)
    assert found["base"].image == "registry.local/skopeo:1"
    assert found[INIT_CONTAINER_NAME].image == "registry.local/awscli:2"
    assert env_of(found[INIT_CONTAINER_NAME])["LOGINS"].splitlines() == [
        f"{SOURCE_HOST} us-west-2 - source",
        f"{DEST_HOST} us-east-1 - dest",
    ]


def test_mutation_hook_sees_the_whole_pod(dagbag: DagBag, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def hook(pod: k8s.V1Pod) -> None:
        seen.append([c.name for c in pod.spec.init_containers] + [v.name for v in pod.spec.volumes])

    monkeypatch.setattr(kpo_module, "pod_mutation_hook", hook)
    on_demand_pod(dagbag)
    assert seen == [[INIT_CONTAINER_NAME, AUTH_VOLUME, SCRATCH_VOLUME]]


def test_user_pod_settings_pass_through_and_building_twice_is_stable() -> None:
    op = EcrPromoteOperator(
        task_id="promote",
        source_image=f"{SOURCE_HOST}/team/app:1",
        dest_image=f"{DEST_HOST}/team/app:1",
        engine="skopeo",
        namespace="releases",
        node_selector={"pool": "tools"},
        tolerations=[k8s.V1Toleration(key="tools", operator="Exists")],
        env_vars={"HTTPS_PROXY": "http://proxy:3128", "COPIES": "ignored"},
        labels={"team": "platform"},
        volumes=[k8s.V1Volume(name="extra", empty_dir=k8s.V1EmptyDirVolumeSource())],
        on_finish_action="keep_pod",
    )
    first = op.build_pod_request_obj()
    second = op.build_pod_request_obj()
    for pod in (first, second):
        assert pod.metadata.namespace == "releases"
        assert pod.spec.node_selector == {"pool": "tools"}
        assert pod.spec.tolerations[0].key == "tools"
        assert pod.metadata.labels["team"] == "platform"
        assert [v.name for v in pod.spec.volumes] == ["extra", AUTH_VOLUME, SCRATCH_VOLUME]
        env = env_of(containers(pod)["base"])
        assert env["HTTPS_PROXY"] == "http://proxy:3128"
        assert env["COPIES"] == f"{SOURCE_HOST}/team/app:1 {DEST_HOST}/team/app:1"
        assert len(pod.spec.init_containers) == 1


def test_a_pod_spec_that_asks_for_the_api_token_keeps_it() -> None:
    """The API token is left out only when nothing asked for it: a ``full_pod_spec`` (or a pod
    template) that mounts it, for a sidecar that needs the API, keeps it."""
    op = EcrPromoteOperator(
        task_id="promote",
        source_image=f"{SOURCE_HOST}/team/app:1",
        dest_image=f"{DEST_HOST}/team/app:1",
        engine="skopeo",
        full_pod_spec=k8s.V1Pod(spec=k8s.V1PodSpec(containers=[], automount_service_account_token=True)),
    )
    assert op.build_pod_request_obj().spec.automount_service_account_token is True


def test_pod_spec_serialises_without_newline_leading_strings(dagbag: DagBag) -> None:
    # podman kube play (the lab runtime) rejects string values that begin with a newline.
    _, pod = on_demand_pod(dagbag)
    text = json.dumps(ApiClient().sanitize_for_serialization(pod))
    assert '": "\\n' not in text
    assert '["\\n' not in text


@pytest.mark.skipif(
    not AIRFLOW_3, reason="Airflow 2 resolves an XComArg expansion only through a metadata DB task instance"
)
def test_expand_kwargs_over_tags_gives_one_pod_per_tag(dagbag: DagBag) -> None:
    dag = dagbag.dags["ecr_promote_backfill"]
    mapped = dag.get_task("promote")
    tags = ["1.4.0", "1.4.1", "1.4.2"]
    upstream = [
        {"source_image": f"{SOURCE_HOST}/team/app:{t}", "dest_image": f"{DEST_HOST}/team/app:{t}"}
        for t in tags
    ]
    pods = []
    for index in range(len(tags)):
        _, pod = render_pod(mapped, map_index=index, xcoms={"promotions": upstream})
        pods.append(pod)
    assert [env_of(containers(p)["base"])["COPIES"] for p in pods] == [
        f"{SOURCE_HOST}/team/app:{t} {DEST_HOST}/team/app:{t}" for t in tags
    ]
    assert [p.metadata.labels["map_index"] for p in pods] == ["0", "1", "2"]
    assert len({p.metadata.name for p in pods}) == 3


def test_partial_expand_over_dest_images() -> None:
    try:
        from airflow.sdk import DAG
    except ImportError:
        from airflow import DAG  # type: ignore[assignment,no-redef]
    from datetime import datetime

    europe = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/team/app:3.0"
    with DAG("expand_dest", schedule=None, start_date=datetime(2026, 1, 1)):
        mapped = EcrPromoteOperator.partial(
            task_id="fan_out", source_image=f"{SOURCE_HOST}/team/app:3.0", engine="crane"
        ).expand(dest_image=[f"{DEST_HOST}/team/app:3.0", europe])
    copies = []
    for index in range(2):
        _, pod = render_pod(mapped, map_index=index)
        copies.append(env_of(containers(pod)["base"])["COPIES"].split()[1])
    assert copies == [f"{DEST_HOST}/team/app:3.0", europe]


def test_the_reattach_search_finds_the_task_instances_pod_whatever_it_carries() -> None:
    """KPO finds an earlier try's pod (``reattach_on_restart``) by labels: those of the task
    instance and the user's, not the plan's, which name the first copy the pod carries and so
    differ when a retry carries fewer copies (some found in place meanwhile)."""
    from tests.airflow_context import make_context

    tags = ["1.0", "1.1"]
    operator = EcrPromoteOperator(
        task_id="promote", source_image=f"{SOURCE_HOST}/team/app", dest_image=f"{DEST_HOST}/team/app",
        tags=tags, engine="skopeo", labels={"team": "release"},
    )  # fmt: skip
    context = make_context(operator, map_index=3)
    pod = operator.build_pod_request_obj(context)
    assert pod.metadata.labels[f"{LABEL_PREFIX}/tag"] == "1.0"
    selector = operator._build_find_pod_label_selector(context)
    terms = set(selector.split(","))
    assert {"team=release", "task_id=promote", "map_index=3", "already_checked!=True"} <= terms
    assert not any(
        term.startswith(f"{LABEL_PREFIX}/") or term.startswith("app.kubernetes.io/") for term in terms
    )
    assert operator.labels[f"{LABEL_PREFIX}/tag"] == "1.0", "the pod's own labels are kept"
