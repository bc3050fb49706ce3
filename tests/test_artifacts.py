"""Helm charts and other OCI artifacts: what a source is, and the engines refused for one.

The pure parts (``classify``, the refusal, the login container's CHECK_SOURCES) run alone; the
two places a refusal happens run for real: the worker's check through a real Airflow AWS
connection to a real moto_server (no pod is created), and the login container's check, the real
scripts/login.sh with the real aws CLI against the same moto_server (nothing is written).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import models as k8s

from airflow_ecr_promote.artifacts import Kind, artifact_engines, check_sources_env, classify, refusal
from airflow_ecr_promote.engines import ENGINES
from airflow_ecr_promote.operators import EcrPromoteError, EcrPromoteOperator
from airflow_ecr_promote.pod import INIT_CONTAINER_NAME, plan_pod
from airflow_ecr_promote.promotion import parse_promotion
from airflow_ecr_promote.refs import PromotionInputError, parse_image_ref
from tests.airflow_context import make_context
from tests.conftest import DEST_HOST, SOURCE_HOST
from tests.kube_stand_in import finished, kubernetes_stand_in, terminated
from tests.test_discovery import CONN_ID, connect_airflow_to, ecr_client, new_repository, put
from tests.test_login_script import SOURCE_ROLE, init_env, run_login

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
WASM_CONFIG = "application/vnd.wasm.config.v0+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
D = "sha256:" + "d" * 64


def descriptor(media_type: str, seed: str = "x", **extra: Any) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(seed.encode()).hexdigest()
    return {"mediaType": media_type, "digest": digest, "size": 12, **extra}


def manifest(config_type: str, layer_type: str, *, seed: str = "x", **extra: Any) -> str:
    """An OCI manifest with one layer, laid out with spaces and newlines as some tools write it."""
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        **extra,
        "config": descriptor(config_type, "config-" + seed),
        "layers": [descriptor(layer_type, "layer-" + seed)],
    }
    return json.dumps(body, indent=3)


CHART = manifest(HELM_CONFIG, "application/vnd.cncf.helm.chart.content.v1.tar+gzip")
WASM = manifest(WASM_CONFIG, "application/wasm")
SBOM = manifest(EMPTY_CONFIG, "application/spdx+json", artifactType="application/spdx+json")
IMAGE = manifest("application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip")
DOCKER_IMAGE = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": descriptor("application/vnd.docker.container.image.v1+json"),
        "layers": [descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip")],
    }
)
INDEX = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [descriptor(OCI_MANIFEST, platform={"os": "linux", "architecture": "amd64"})],
    }
)


# ---------------------------------------------------------------------------------------------
# Pure: classify, the refusal, the login container's lines
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (IMAGE, Kind("image", "application/vnd.oci.image.config.v1+json")),
        (DOCKER_IMAGE, Kind("image", "application/vnd.docker.container.image.v1+json")),
        (INDEX, Kind("index")),
        (json.dumps({"schemaVersion": 2, "manifests": []}), Kind("index")),
        (json.dumps({"schemaVersion": 1, "name": "team/app", "fsLayers": []}), Kind("image")),
        (CHART, Kind("helm-chart", HELM_CONFIG)),
        (WASM, Kind("artifact", WASM_CONFIG)),
        (SBOM, Kind("artifact", "application/spdx+json")),
        (
            json.dumps({"schemaVersion": 2, "manifests": [], "artifactType": "application/vnd.example+type"}),
            Kind("artifact", "application/vnd.example+type"),
        ),
        (manifest(EMPTY_CONFIG, "x", artifactType=HELM_CONFIG), Kind("helm-chart", HELM_CONFIG)),
        (json.dumps({"schemaVersion": 2, "layers": []}), Kind("unknown")),
        ("not json", Kind("unknown")),
        ("[]", Kind("unknown")),
        (None, Kind("unknown")),
    ],
    ids=[
        "oci-image", "docker-image", "oci-index", "bare-index", "schema1", "helm-chart", "wasm",
        "sbom-artifact-type", "artifact-index", "artifact-type-helm", "no-config", "not-json",
        "not-an-object", "none",
    ],
)  # fmt: skip
def test_classify_tells_images_from_charts_and_other_artifacts(body: str | None, kind: Kind) -> None:
    assert classify(body) == kind
    assert classify(body.encode() if body else body) == kind
    assert kind.is_image == (kind.name in ("image", "index"))


def test_only_kaniko_cannot_carry_artifacts() -> None:
    assert artifact_engines(ENGINES.values()) == ["skopeo", "crane", "regctl"]
    assert not ENGINES["kaniko"].carries_artifacts


def test_the_refusal_names_the_parameter_the_value_the_source_and_the_engines_to_use() -> None:
    source = parse_image_ref("source_image", f"{SOURCE_HOST}/team/chart:0.1.0")
    error = refusal("kaniko", source, Kind("helm-chart", HELM_CONFIG), ["skopeo", "crane", "regctl"])
    assert isinstance(error, PromotionInputError)
    assert (error.param, error.value) == ("engine", "kaniko")
    text = str(error)
    assert text.startswith("engine='kaniko': cannot promote ")
    assert f"{SOURCE_HOST}/team/chart:0.1.0" in text
    assert f"a Helm chart (config media type {HELM_CONFIG})" in text
    assert "nothing was written" in text
    assert text.endswith(
        "Fix: engine='skopeo' or engine='crane' or engine='regctl', which copy any OCI artifact "
        "(Helm charts included) with its digest"
    )
    other = str(refusal("kaniko", source, Kind("artifact", WASM_CONFIG), ["crane"]))
    assert f"an OCI artifact of type {WASM_CONFIG}, not a container image" in other


def test_check_sources_names_the_login_that_reads_each_source() -> None:
    promotion = parse_promotion(
        source_image=f"{SOURCE_HOST}/team/chart:0.1.0@{D}",
        dest_image=f"{DEST_HOST}/team/chart:0.1.0",
        source_role_arn=SOURCE_ROLE,
        dest_role_arn="arn:aws:iam::210987654321:role/ecr-promote-push",
        on_conflict="overwrite",
    )
    assert check_sources_env(promotion) == f"1 123456789012 us-west-2 team/chart imageDigest={D}"
    by_tag = parse_promotion(
        source_image=f"{DEST_HOST}/team/app:1.0",
        dest_image=f"{SOURCE_HOST}/prod/app:1.0",
        source_role_arn=None,
        dest_role_arn=SOURCE_ROLE,
        on_conflict="overwrite",
    )
    assert check_sources_env(by_tag) == "1 210987654321 us-east-1 team/app imageTag=1.0"


def test_only_the_kaniko_pod_checks_its_sources() -> None:
    kaniko = init_env("kaniko")
    assert kaniko["CHECK_SOURCES"] == "1 123456789012 us-west-2 team/app imageTag=1.0"
    assert kaniko["ENGINE"] == "kaniko"
    assert kaniko["ARTIFACT_FIX"].startswith("Fix: engine='skopeo' or engine='crane' or engine='regctl'")
    for engine in ("skopeo", "crane", "regctl"):
        assert not {"CHECK_SOURCES", "ENGINE", "ARTIFACT_FIX"} & init_env(engine).keys()
    promotion = parse_promotion(
        source_image=f"{SOURCE_HOST}/team/app:1.0", dest_image=f"{DEST_HOST}/team/app:1.0", on_conflict="fail"
    )
    assert "CHECK_SOURCES" not in {e.name for e in plan_pod(promotion, ENGINES["crane"]).init_container.env}


# ---------------------------------------------------------------------------------------------
# The worker's check, through a real Airflow AWS connection to moto: before any pod
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def ecr(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    connect_airflow_to(monkeypatch, moto_server)
    return ecr_client(moto_server)


def put_manifest(client: Any, repository: str, tag: str, body: str) -> None:
    client.put_image(
        repositoryName=repository, imageManifest=body, imageManifestMediaType=OCI_MANIFEST, imageTag=tag
    )


def promote(engine: str, repository: str, tag: str) -> EcrPromoteOperator:
    return EcrPromoteOperator(
        task_id="promote",
        namespace="ns",
        engine=engine,
        source_image=f"{SOURCE_HOST}/{repository}:{tag}",
        dest_image=f"{SOURCE_HOST}/prod/{repository}:{tag}",
        source_aws_conn_id=CONN_ID,
    )


def pod_runs(pod: k8s.V1Pod) -> k8s.V1Pod:
    """The pod as it ends: the copier's report (kaniko's is the digest it pushed)."""
    kaniko = not pod.spec.containers[0].command
    report = D if kaniko else f"1 copied {D} {D}"
    return finished(pod, [terminated(INIT_CONTAINER_NAME, 0)], [terminated("base", 0, report)])


@pytest.mark.moto
@pytest.mark.parametrize(
    ("body", "what"), [(CHART, "a Helm chart"), (WASM, "an OCI artifact"), (SBOM, "an OCI artifact")]
)
def test_kaniko_is_refused_for_an_artifact_before_any_pod(ecr: Any, body: str, what: str) -> None:
    repository = new_repository(ecr, "team/chart")
    put_manifest(ecr, repository, "0.1.0", body)
    op = promote("kaniko", repository, "0.1.0")
    with kubernetes_stand_in(pod_runs) as cluster, pytest.raises(PromotionInputError) as refused:
        op.execute(make_context(op))
    assert cluster.created == []
    assert refused.value.param == "engine" and refused.value.value == "kaniko"
    assert f"cannot promote {SOURCE_HOST}/{repository}:0.1.0: it is {what}" in str(refused.value)
    assert "engine='crane'" in str(refused.value)


@pytest.mark.moto
def test_kaniko_promotes_an_image_and_the_other_engines_any_artifact(ecr: Any) -> None:
    image_repository, chart_repository = new_repository(ecr), new_repository(ecr, "team/chart")
    put(ecr, image_repository, "1.0")
    put_manifest(ecr, chart_repository, "0.1.0", CHART)
    runs = [
        ("kaniko", image_repository, "1.0"),
        *((e, chart_repository, "0.1.0") for e in ("skopeo", "crane", "regctl")),
    ]
    for engine, repository, tag in runs:
        op = promote(engine, repository, tag)
        with kubernetes_stand_in(pod_runs) as cluster:
            op.execute(make_context(op))
        assert len(cluster.created) == 1, engine


def test_a_pod_whose_login_refused_an_artifact_fails_the_task_saying_nothing_was_written() -> None:
    op = EcrPromoteOperator(
        task_id="promote",
        namespace="ns",
        engine="kaniko",
        source_image=f"{SOURCE_HOST}/team/chart:0.1.0",
        dest_image=f"{DEST_HOST}/team/chart:0.1.0",
    )
    said = (
        "ecr-promote login: engine='kaniko' cannot promote team/chart:0.1.0 in registry 123456789012 "
        f"(us-west-2): it is a Helm chart (config media type {HELM_CONFIG}). ... Fix: engine='crane'"
    )

    def login_refuses(pod: k8s.V1Pod) -> k8s.V1Pod:
        return finished(pod, [terminated(INIT_CONTAINER_NAME, 1, said)], [])

    with kubernetes_stand_in(login_refuses), pytest.raises(EcrPromoteError) as failed:
        op.execute(make_context(op))
    assert str(failed.value) == (
        f"Promotion {SOURCE_HOST}/team/chart:0.1.0 -> {DEST_HOST}/team/chart:0.1.0 refused before "
        f"anything was written: {said}"
    )


# ---------------------------------------------------------------------------------------------
# The login container's check (no AWS connection on the worker): the real script, aws CLI, moto
# ---------------------------------------------------------------------------------------------


@pytest.mark.moto
@pytest.mark.parametrize(
    ("body", "what"),
    [
        (CHART, f"a Helm chart (config media type {HELM_CONFIG})"),
        (WASM, f"an OCI artifact of type {WASM_CONFIG}, not a container image"),
        (SBOM, "an OCI artifact of type application/spdx+json, not a container image"),
        (json.dumps({"schemaVersion": 2, "layers": []}), "a manifest whose kind cannot be told"),
    ],
    ids=["helm-chart", "wasm", "sbom", "no-config"],
)  # fmt: skip
def test_the_kaniko_pods_login_refuses_an_artifact_and_writes_nothing(
    tmp_path: Path, ecr: Any, body: str, what: str
) -> None:
    repository = new_repository(ecr, "team/chart")
    put_manifest(ecr, repository, "0.1.0", body)
    env = init_env("kaniko", source=f"{SOURCE_HOST}/{repository}:0.1.0")
    done = run_login(tmp_path, str(ecr.meta.endpoint_url), env)
    assert done.returncode == 1, done.stderr
    message = (tmp_path / "termination-log").read_text()
    where = f"{repository}:0.1.0 in registry 123456789012 (us-west-2)"
    assert f"engine='kaniko' cannot promote {where}: it is {what}" in message
    assert "nothing was written. Fix: engine='skopeo' or engine='crane' or engine='regctl'" in message
    assert sorted(p.name for p in (tmp_path / "auth").iterdir()) == [], "no auth file, no Dockerfile"


@pytest.mark.moto
@pytest.mark.parametrize("body", [IMAGE, DOCKER_IMAGE, INDEX], ids=["oci-image", "docker-image", "index"])
def test_the_kaniko_pods_login_lets_an_image_through(tmp_path: Path, ecr: Any, body: str) -> None:
    repository = new_repository(ecr)
    put_manifest(ecr, repository, "1.0", body)
    done = run_login(
        tmp_path, str(ecr.meta.endpoint_url), init_env("kaniko", source=f"{SOURCE_HOST}/{repository}:1.0")
    )
    assert done.returncode == 0, done.stderr
    assert "every source is a container image: engine kaniko can promote it" in done.stderr
    assert (tmp_path / "auth" / "Dockerfile").read_text() == f"FROM {SOURCE_HOST}/{repository}:1.0\n"
    assert not (tmp_path / "auth" / ".manifest").exists()


@pytest.mark.moto
def test_the_kaniko_pods_login_fails_closed_on_a_missing_source(tmp_path: Path, ecr: Any) -> None:
    repository = new_repository(ecr)
    done = run_login(
        tmp_path, str(ecr.meta.endpoint_url), init_env("kaniko", source=f"{SOURCE_HOST}/{repository}:9.9")
    )
    assert done.returncode == 1
    assert (
        f"the source {repository}:9.9 in registry 123456789012 (us-west-2) was not found"
        in (tmp_path / "termination-log").read_text()
    )
    assert sorted(p.name for p in (tmp_path / "auth").iterdir()) == []


def test_the_chart_example_promotes_the_version_it_is_given_with_an_engine_that_carries_charts() -> None:
    from tests.airflow_context import DagBag
    from tests.conftest import REPO

    dag = DagBag(dag_folder=str(REPO / "dags" / "examples")).dags["ecr_promote_chart"]
    assert set(dag.params.get_param("engine").schema["enum"]) == set(artifact_engines(ENGINES.values()))
    task = dag.get_task("promote_chart").prepare_for_execution()
    context = make_context(task, conf={"chart_version": "2.3.4"})
    task.render_template_fields(context)
    operator = context["task"]
    assert operator.source_image == "123456789012.dkr.ecr.us-west-2.amazonaws.com/charts/app:2.3.4"
    assert operator.dest_image == "210987654321.dkr.ecr.us-east-1.amazonaws.com/charts/app:2.3.4"
    assert operator.build_pod_request_obj().spec.containers[0].env  # a pod the operator can build


@pytest.mark.moto
def test_hostile_check_lines_are_refused_not_run(tmp_path: Path, moto_server: str) -> None:
    canary = tmp_path / "canary"
    env = init_env("kaniko")
    for line in (
        f"1 123456789012 us-west-2 team/app imageTag=$(touch {canary})",
        f"1 123456789012 us-west-2 team/app;touch${{IFS}}{canary} imageTag=1.0",
        "1; 123456789012 us-west-2 team/app imageTag=1.0",
        "7 123456789012 us-west-2 team/app imageTag=1.0",
    ):
        done = run_login(tmp_path, moto_server, {**env, "CHECK_SOURCES": line})
        assert done.returncode == 1, line
        message = (tmp_path / "termination-log").read_text()
        assert "refusing" in message or "LOGINS does not have" in message, message
        assert not canary.exists()
        assert os.listdir(tmp_path / "auth") == [], line
        shutil.rmtree(tmp_path / "auth")
