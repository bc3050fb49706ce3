"""EKS by name: inputs, then the Amazon provider's kubeconfig for a cluster in a moto_server."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from kubernetes import config as kube_config
from kubernetes.client import Configuration

from airflow_ecr_promote import cli
from airflow_ecr_promote.eks import EksTarget, eks_kubeconfig, parse_eks_target
from airflow_ecr_promote.operators import EcrPromoteOperator
from airflow_ecr_promote.pod import INIT_CONTAINER_NAME
from airflow_ecr_promote.refs import PromotionInputError
from tests.airflow_context import make_context
from tests.conftest import DEST_HOST, SOURCE_HOST
from tests.kube_stand_in import finished, kubernetes_stand_in, terminated

CONN_ID, REGION, CLUSTER = "eks_lab", "eu-west-1", "platform-prod"
COMBINED = "cannot be combined with eks_cluster_name"
IMAGES = {"source_image": f"{SOURCE_HOST}/team/app:1.0.0", "dest_image": f"{DEST_HOST}/team/app:1.0.0"}


@pytest.mark.parametrize(
    ("kwargs", "param", "problem"),
    [
        ({"cluster_name": "has space"}, "eks_cluster_name", "is not an EKS cluster name"),
        ({"cluster_name": "-leading-hyphen"}, "eks_cluster_name", "is not an EKS cluster name"),
        ({"cluster_name": "x" * 101}, "eks_cluster_name", "is not an EKS cluster name"),
        ({"cluster_name": "prod\n"}, "eks_cluster_name", "is not an EKS cluster name"),
        ({"cluster_name": 7}, "eks_cluster_name", "is not an EKS cluster name"),
        ({"cluster_name": "prod", "region": "Europe"}, "eks_region", "is not an AWS region"),
        ({"region": "eu-west-1"}, "eks_region", "is set but eks_cluster_name is not"),
        ({"cluster_name": "prod", "aws_conn_id": "a b"}, "eks_aws_conn_id", "is not an Airflow connection"),
        ({"cluster_name": "prod", "config_file": "/k"}, "config_file", COMBINED),
        ({"cluster_name": "prod", "in_cluster": True}, "in_cluster", COMBINED),
        ({"cluster_name": "prod", "deferrable": True}, "deferrable", COMBINED),
    ],
)
def test_bad_inputs_name_the_parameter(kwargs: dict[str, Any], param: str, problem: str) -> None:
    args = {"cluster_name": None, "region": None, "aws_conn_id": "aws_default", **kwargs}
    with pytest.raises(PromotionInputError) as raised:
        parse_eks_target(args.pop("cluster_name"), args.pop("region"), args.pop("aws_conn_id"), **args)
    assert raised.value.param == param
    assert str(raised.value).startswith(f"{param}=")
    assert problem in raised.value.problem
    assert "Expected" in raised.value.expected


def test_good_inputs_and_none() -> None:
    assert parse_eks_target(None, None, "aws_default") is None
    assert parse_eks_target("platform_prod-2", "us-gov-west-1", None) == EksTarget(
        "platform_prod-2", "us-gov-west-1", None
    )


def test_operator_checks_literal_eks_inputs_at_parse_time_and_templated_ones_before_any_pod() -> None:
    with pytest.raises(PromotionInputError, match=r"^eks_cluster_name='bad name'"):
        EcrPromoteOperator(task_id="t", eks_cluster_name="bad name", **IMAGES)
    with pytest.raises(PromotionInputError, match=r"^deferrable=True"):
        EcrPromoteOperator(task_id="t", eks_cluster_name="prod", deferrable=True, **IMAGES)
    operator = EcrPromoteOperator(task_id="t", eks_cluster_name="{{ params.cluster }}", **IMAGES)
    assert {"eks_cluster_name", "eks_region", "eks_aws_conn_id"} <= set(operator.template_fields)
    context = make_context(operator, conf={"cluster": "bad name"})
    operator.render_template_fields(context)
    with kubernetes_stand_in(lambda pod: pytest.fail("a pod was created")) as stand_in:
        with pytest.raises(PromotionInputError, match=r"^eks_cluster_name='bad name'"):
            operator.execute(context)
    assert stand_in.created == []


# ---------------------------------------------------------------------------------------------
# Against a moto_server: a real EKS DescribeCluster, the provider's real token command.
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def cluster(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A cluster in moto and the Airflow connection ``eks_lab`` to it; returns DescribeCluster."""
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": moto_server, "region_name": REGION},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # The provider's token command runs `python3.X`: on a worker, Airflow's own interpreter.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    eks = boto3.client(
        "eks",
        endpoint_url=moto_server,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    existing = eks.list_clusters()["clusters"]
    if CLUSTER not in existing:
        eks.create_cluster(
            name=CLUSTER, roleArn="arn:aws:iam::123456789012:role/eks-cluster", resourcesVpcConfig={}
        )
    described: dict[str, Any] = eks.describe_cluster(name=CLUSTER)["cluster"]
    return described


def client_configuration(kubeconfig: str) -> Configuration:
    """What the Kubernetes client makes of the kubeconfig: this runs the exec credential plugin."""
    configuration = Configuration()
    kube_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return configuration


def bearer(configuration: Configuration) -> str:
    """The Authorization value (kubernetes < 32 keys it 'authorization', later 'BearerToken')."""
    [value] = configuration.api_key.values()
    return str(value)


@pytest.mark.moto
def test_kubeconfig_names_the_cluster_endpoint_and_yields_an_eks_token(cluster: dict[str, Any]) -> None:
    target = EksTarget(CLUSTER, REGION, CONN_ID)
    with eks_kubeconfig(target, "promotions") as path:
        written = yaml.safe_load(Path(path).read_text())
        configuration = client_configuration(path)
    assert not Path(path).exists()
    assert written["clusters"][0]["cluster"]["server"] == cluster["endpoint"]
    assert written["contexts"][0]["context"]["namespace"] == "promotions"
    user = written["users"][0]["user"]
    assert "eks_get_token" in " ".join(user["exec"]["args"])
    assert CLUSTER in " ".join(user["exec"]["args"])
    assert configuration.host == cluster["endpoint"].rstrip("/")
    assert bearer(configuration).startswith("Bearer k8s-aws-v1.")


@pytest.fixture
def kubeconfigs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Records each kubeconfig KPO's hook loads, with the client configuration made of it."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    seen: list[dict[str, Any]] = []
    real_get_conn = KubernetesHook.get_conn

    def get_conn(self: KubernetesHook) -> Any:
        client = real_get_conn(self)
        path = self.config_file
        seen.append(
            {
                "path": path,
                "kubeconfig": yaml.safe_load(Path(path).read_text()) if path else None,
                "configuration": client.configuration,
            }
        )
        return client

    monkeypatch.setattr(KubernetesHook, "get_conn", get_conn)
    return seen


@pytest.mark.moto
def test_operator_runs_the_pod_with_the_providers_kubeconfig(
    cluster: dict[str, Any], kubeconfigs: list[dict[str, Any]]
) -> None:
    operator = EcrPromoteOperator(
        task_id="promote",
        engine="skopeo",
        namespace="promotions",
        eks_cluster_name=CLUSTER,
        eks_region=REGION,
        eks_aws_conn_id=CONN_ID,
        **IMAGES,
    )
    context = make_context(operator)
    operator.render_template_fields(context)

    def run(pod: Any) -> Any:
        digest = "sha256:" + "a" * 64
        copier = terminated("base", 0, f"1 copied {digest} {digest}\n")
        return finished(pod, [terminated(INIT_CONTAINER_NAME, 0)], [copier])

    with kubernetes_stand_in(run) as stand_in:
        result = operator.execute(context)
    assert result["status"] == "copied", result
    assert len(stand_in.created) == 1
    assert stand_in.created[0].metadata.namespace == "promotions"
    [loaded] = kubeconfigs
    assert loaded["kubeconfig"]["clusters"][0]["cluster"]["server"] == cluster["endpoint"]
    assert loaded["configuration"].host == cluster["endpoint"].rstrip("/")
    assert bearer(loaded["configuration"]).startswith("Bearer k8s-aws-v1.")
    assert not Path(loaded["path"]).exists()
    assert operator.in_cluster is False


def test_render_says_why_it_takes_no_cluster_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "There is no EKS cluster name here (EcrPromoteOperator's eks_cluster_name)" in help_text
    assert "aws eks update-kubeconfig --name CLUSTER" in help_text
