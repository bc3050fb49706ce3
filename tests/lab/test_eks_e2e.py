"""EKS by name in the lab: moto's EKS API describes the cluster, the pod is then played as usual.

An Airflow outside the cluster (MWAA) names the cluster; the operator gets its kubeconfig from the
Amazon provider's EksHook through an Airflow AWS connection whose role may only
``eks:DescribeCluster`` (moto enforces IAM). The kubeconfig KPO loads must name the endpoint moto
gave the cluster and authenticate with a ``k8s-aws-v1.`` token that the provider's exec plugin
makes; then podman plays the pod, and the image is promoted with its digest kept.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from airflow_ecr_promote.operators import EcrPromoteOperator
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST
from tests.test_eks import bearer, kubeconfigs

from . import moto_iam
from .lab import Lab
from .operator_run import run_task

pytestmark = pytest.mark.lab

__all__ = ["kubeconfigs"]  # the fixture, used by name below

CLUSTER, REGION = "platform-lab", "us-west-2"
ALLOWED, NOT_ALLOWED = "lab_eks", "lab_eks_no_role"


def boto3_as(lab: Lab, role_arn: str, service: str) -> Any:
    """A boto3 client of ``service`` in moto, as the lab's base identity having assumed ``role_arn``."""
    common = {"endpoint_url": lab.moto_endpoint, "region_name": REGION, "verify": str(lab.ca_bundle)}
    sts = boto3.client(
        "sts",
        aws_access_key_id=moto_iam.BASE_ACCESS_KEY_ID,
        aws_secret_access_key=moto_iam.BASE_SECRET_ACCESS_KEY,
        **common,
    )
    keys = sts.assume_role(RoleArn=role_arn, RoleSessionName="lab-eks-setup")["Credentials"]
    return boto3.client(
        service,
        aws_access_key_id=keys["AccessKeyId"],
        aws_secret_access_key=keys["SecretAccessKey"],
        aws_session_token=keys["SessionToken"],
        **common,
    )


@pytest.fixture
def eks_cluster(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A cluster in moto's EKS, and Airflow AWS connections with and without the Airflow role."""
    eks = boto3_as(lab, moto_iam.EKS_ADMIN_ROLE_ARN, "eks")
    if CLUSTER not in eks.list_clusters()["clusters"]:
        eks.create_cluster(
            name=CLUSTER, roleArn=f"arn:aws:iam::{SOURCE_ACCOUNT}:role/eks-cluster", resourcesVpcConfig={}
        )
    described: dict[str, Any] = eks.describe_cluster(name=CLUSTER)["cluster"]

    def connection(role_arn: str | None) -> str:
        extra: dict[str, Any] = {
            "region_name": REGION,
            "endpoint_url": lab.moto_endpoint,
            "service_config": {"sts": {"endpoint_url": lab.moto_endpoint}},
        }
        if role_arn:
            extra["role_arn"] = role_arn
        login = {"login": moto_iam.BASE_ACCESS_KEY_ID, "password": moto_iam.BASE_SECRET_ACCESS_KEY}
        return json.dumps({"conn_type": "aws", **login, "extra": extra})

    monkeypatch.setenv(f"AIRFLOW_CONN_{ALLOWED.upper()}", connection(moto_iam.AIRFLOW_ROLE_ARN))
    monkeypatch.setenv(f"AIRFLOW_CONN_{NOT_ALLOWED.upper()}", connection(None))
    monkeypatch.setenv("AWS_CA_BUNDLE", str(lab.ca_bundle))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # The provider's token command runs `python3.X`: on a worker, Airflow's own interpreter.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return described


def operator(lab: Lab, repo: str, tag: str, conn_id: str) -> EcrPromoteOperator:
    return EcrPromoteOperator(
        task_id="promote",
        engine="skopeo",
        init_image=lab.init_image,
        copier_image=lab.copier_image,
        source_image=f"{SOURCE_HOST}/{repo}:{tag}",
        dest_image=f"{DEST_HOST}/{repo}:{tag}",
        source_role_arn=f"arn:aws:iam::{SOURCE_ACCOUNT}:role/ecr-promote-pull",
        dest_role_arn=f"arn:aws:iam::{DEST_ACCOUNT}:role/ecr-promote-push",
        namespace="promotions",
        eks_cluster_name=CLUSTER,
        eks_region=REGION,
        eks_aws_conn_id=conn_id,
    )


def presigned_request(token: str) -> tuple[str, dict[str, list[str]]]:
    """The STS request a ``k8s-aws-v1.`` token carries (base64url, unpadded): host and query."""
    encoded = token.removeprefix("Bearer ").removeprefix("k8s-aws-v1.")
    url = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    parts = urlsplit(url)
    return parts.netloc, parse_qs(parts.query)


def test_cluster_named_by_the_task_runs_the_pod_with_the_providers_token(
    lab: Lab, eks_cluster: dict[str, Any], kubeconfigs: list[dict[str, Any]]
) -> None:
    repo, tag = "eks/app", "1.0.0"
    lab.create_repository(DEST_ACCOUNT, repo)  # the destination repository exists, as in ECR
    digest = lab.push_image(SOURCE_ACCOUNT, repo, tag, seed=1400)
    run = run_task(lab, task=operator(lab, repo, tag, ALLOWED))
    assert run.error is None, run.log[-20:]
    assert run.result is not None and run.result["status"] == "copied", run.result
    assert lab.digest(DEST_ACCOUNT, repo, tag) == digest
    assert len(run.pods) == 1 and run.pods[0].metadata.namespace == "promotions"
    [loaded] = kubeconfigs
    kubeconfig = loaded["kubeconfig"]
    assert kubeconfig["clusters"][0]["cluster"]["server"] == eks_cluster["endpoint"]
    assert kubeconfig["contexts"][0]["context"]["namespace"] == "promotions"
    assert "eks_get_token" in " ".join(kubeconfig["users"][0]["user"]["exec"]["args"])
    assert loaded["configuration"].host == eks_cluster["endpoint"].rstrip("/")
    token = bearer(loaded["configuration"])
    assert token.startswith("Bearer k8s-aws-v1.")
    host, query = presigned_request(token)
    assert host == f"sts.{REGION}.amazonaws.com"
    assert query["Action"] == ["GetCallerIdentity"]
    assert "x-k8s-aws-id" in query["X-Amz-SignedHeaders"][0]
    assert query["X-Amz-Credential"][0].split("/")[2] == REGION
    assert not Path(loaded["path"]).exists(), "the kubeconfig outlived the task"


def test_identity_without_describe_cluster_fails_before_any_pod(
    lab: Lab, eks_cluster: dict[str, Any], kubeconfigs: list[dict[str, Any]]
) -> None:
    run = run_task(lab, task=operator(lab, "eks/app", "2.0.0", NOT_ALLOWED))
    assert run.error is not None
    assert "AccessDenied" in str(run.error) and "eks:DescribeCluster" in str(run.error), run.error
    assert run.pods == []
    assert kubeconfigs == []
