"""Every manifest the project emits validates, strictly (unknown fields rejected), against the
Kubernetes OpenAPI schemas of the oldest and the newest Kubernetes the README supports.

The schemas come from the ``kubernetes-validate`` package (the Kubernetes API's own OpenAPI
definitions converted to JSON schema). Covered: the operator's pod for each engine, single and
batch, as KPO builds it after the templates are rendered, and ``render``'s Job and Pod.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes.client import ApiClient

from airflow_ecr_promote import cli
from airflow_ecr_promote.compat import build_pod_offline
from airflow_ecr_promote.engines import ENGINES
from tests.airflow_context import DagBag, render_pod
from tests.conftest import DEST_HOST, REPO, SOURCE_HOST

# The Kubernetes versions the README names as supported (its "Requirements" line).
OLDEST_KUBERNETES = "1.29"
NEWEST_KUBERNETES = "1.37"
VERSIONS = (OLDEST_KUBERNETES, NEWEST_KUBERNETES)
PULL_ROLE = "arn:aws:iam::123456789012:role/ecr-promote-pull"
PUSH_ROLE = "arn:aws:iam::210987654321:role/ecr-promote-push"


def validate(manifest: dict[str, Any], version: str) -> None:
    """Raise with the schema's own message when ``manifest`` is not valid for ``version``."""
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = "/".join(str(p) for p in error.path)
        kind = manifest["kind"]
        raise AssertionError(f"{kind} invalid for Kubernetes {version} at {where}: {error.message}") from None


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(REPO / "dags" / "examples"))


def operator_pod(dagbag: DagBag, dag_id: str, task_id: str, **conf: Any) -> dict[str, Any]:
    _, pod = render_pod(dagbag.dags[dag_id].get_task(task_id), conf=conf)
    manifest: dict[str, Any] = ApiClient().sanitize_for_serialization(pod)
    return manifest


def test_schemas_exist_for_the_supported_range() -> None:
    versions = {kubernetes_validate.utils.major_minor(v) for v in kubernetes_validate.utils.all_versions()}
    for version in VERSIONS:
        assert kubernetes_validate.utils.major_minor(version) in versions


@pytest.mark.parametrize("version", VERSIONS)
def test_strict_validation_rejects_an_unknown_field(version: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "securityContxt": {}}]},
    }
    with pytest.raises(AssertionError, match="securityContxt"):
        validate(pod, version)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_operator_pod_of_each_engine(dagbag: DagBag, engine: str, version: str) -> None:
    pod = operator_pod(
        dagbag,
        "ecr_promote_on_demand",
        "promote",
        engine=engine,
        source_image=f"{SOURCE_HOST}/team/app:2.0.1",
        dest_image=f"{DEST_HOST}/team/app:2.0.1",
    )
    assert pod["kind"] == "Pod" and pod["apiVersion"] == "v1"
    validate(pod, version)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("engine", [name for name, e in sorted(ENGINES.items()) if e.can_batch])
def test_operator_batch_pod(engine: str, version: str) -> None:
    from airflow_ecr_promote.operators import EcrPromoteOperator

    operator = EcrPromoteOperator(
        task_id="promote",
        engine=engine,
        source_image=f"{SOURCE_HOST}/team/app",
        dest_image=f"{DEST_HOST}/team/app",
        tags=[f"1.{i}.0" for i in range(40)],
        source_role_arn=PULL_ROLE,
        dest_role_arn=PUSH_ROLE,
    )
    pod = ApiClient().sanitize_for_serialization(build_pod_offline(operator))
    validate(pod, version)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_operator_pod_with_the_signature_gate(engine: str, version: str) -> None:
    from airflow_ecr_promote.operators import EcrPromoteOperator
    from tests.test_signatures import EC_KEY

    operator = EcrPromoteOperator(
        task_id="promote",
        engine=engine,
        source_image=f"{SOURCE_HOST}/team/app:2.0.1",
        dest_image=f"{DEST_HOST}/team/app:2.0.1",
        source_role_arn=PULL_ROLE,
        dest_role_arn=PUSH_ROLE,
        verify_signature_key=EC_KEY,
    )
    pod = ApiClient().sanitize_for_serialization(build_pod_offline(operator))
    assert len(pod["spec"]["initContainers"]) == 2
    validate(pod, version)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kind", ["job", "pod"])
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_render_manifests(capsys: pytest.CaptureFixture[str], engine: str, kind: str, version: str) -> None:
    capsys.readouterr()
    code = cli.main(
        [
            "render",
            "--source-image",
            f"{SOURCE_HOST}/team/app:1.4.2",
            "--dest-image",
            f"{DEST_HOST}/team/app:1.4.2",
            "--source-role-arn",
            PULL_ROLE,
            "--dest-role-arn",
            PUSH_ROLE,
            "--engine",
            engine,
            "--kind",
            kind,
            "--service-account",
            "ecr-promote",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    manifest = yaml.safe_load(out)
    assert manifest["kind"] == kind.capitalize()
    validate(manifest, version)
