"""EKS by name on the lab's real Kubernetes: moto's EKS API describes the lab's API server, and
aws-iam-authenticator, EKS's own token authenticator, turns the provider's token into the user the
Airflow role is mapped to.

An Airflow outside the cluster (MWAA) names the cluster; the operator gets its kubeconfig from the
Amazon provider's EksHook through an Airflow AWS connection whose role may only
``eks:DescribeCluster`` (moto enforces IAM). The kubeconfig KPO loads names the endpoint and CA that
``DescribeCluster`` answers, which are the lab cluster's (``Cluster.eks_tags``), and authenticates
with the ``k8s-aws-v1.`` token the provider's exec plugin signs. The real kube-apiserver hands the
token to aws-iam-authenticator (tests/lab/iam_authenticator.py), which has moto's STS check it at
``sts.us-west-2.amazonaws.com`` and maps the Airflow role to a user of the group the README's
RoleBinding names: KPO's own code then creates the pod in the example DAGs' namespace, and a real
kubelet runs it.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from kubernetes.client.exceptions import ApiException

from airflow_ecr_promote.operators import EcrPromoteOperator
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST
from tests.test_eks import bearer, kubeconfigs

from . import iam_authenticator, moto_iam
from .cluster import AIRFLOW_GROUP, NAMESPACE, SERVICE_ACCOUNT, Cluster
from .lab import Lab
from .operator_run import run_task_on_cluster

pytestmark = [pytest.mark.lab, pytest.mark.cluster, pytest.mark.timeout(300)]

__all__ = ["kubeconfigs"]  # the fixture, used by name below

CLUSTER, REGION = moto_iam.LAB_EKS_CLUSTER, "us-west-2"
MAPPED, NOT_ALLOWED, UNMAPPED = "lab_eks", "lab_eks_no_role", "lab_eks_unmapped"
AIRFLOW_SESSION = f"arn:aws:sts::{SOURCE_ACCOUNT}:assumed-role/ecr-promote-airflow/"


def session_as(lab: Lab, role_arn: str) -> boto3.Session:
    """A boto3 session of the lab's base identity having assumed ``role_arn`` in moto."""
    sts = boto3.client(
        "sts",
        aws_access_key_id=moto_iam.BASE_ACCESS_KEY_ID,
        aws_secret_access_key=moto_iam.BASE_SECRET_ACCESS_KEY,
        endpoint_url=lab.moto_endpoint,
        region_name=REGION,
        verify=str(lab.ca_bundle),
    )
    keys = sts.assume_role(RoleArn=role_arn, RoleSessionName="lab-eks-setup")["Credentials"]
    return boto3.Session(
        aws_access_key_id=keys["AccessKeyId"],
        aws_secret_access_key=keys["SecretAccessKey"],
        aws_session_token=keys["SessionToken"],
        region_name=REGION,
    )


def boto3_as(lab: Lab, role_arn: str, service: str) -> Any:
    """A boto3 client of ``service`` in moto, as the lab's base identity having assumed ``role_arn``."""
    return session_as(lab, role_arn).client(
        service, endpoint_url=lab.moto_endpoint, verify=str(lab.ca_bundle)
    )


def lab_eks_cluster(lab: Lab, cluster: Cluster) -> dict[str, Any]:
    """The lab's EKS cluster in moto, describing the lab cluster's API server (made again when an
    earlier one describes something else: another test's, or a cluster started before)."""
    eks = boto3_as(lab, moto_iam.EKS_ADMIN_ROLE_ARN, "eks")
    if CLUSTER in eks.list_clusters()["clusters"]:
        described: dict[str, Any] = eks.describe_cluster(name=CLUSTER)["cluster"]
        if described["endpoint"] == cluster.server:
            return described
        eks.delete_cluster(name=CLUSTER)
    eks.create_cluster(
        name=CLUSTER,
        roleArn=f"arn:aws:iam::{SOURCE_ACCOUNT}:role/eks-cluster",
        resourcesVpcConfig={},
        tags=cluster.eks_tags(),
    )
    described = eks.describe_cluster(name=CLUSTER)["cluster"]
    return described


def aws_connection(lab: Lab, role_arn: str | None) -> str:
    """An Airflow AWS connection to the lab's moto: the base identity, assuming ``role_arn``."""
    extra: dict[str, Any] = {
        "region_name": REGION,
        "endpoint_url": lab.moto_endpoint,
        "service_config": {"sts": {"endpoint_url": lab.moto_endpoint}},
    }
    if role_arn:
        extra["role_arn"] = role_arn
    login = {"login": moto_iam.BASE_ACCESS_KEY_ID, "password": moto_iam.BASE_SECRET_ACCESS_KEY}
    return json.dumps({"conn_type": "aws", **login, "extra": extra})


@pytest.fixture
def eks_cluster(lab: Lab, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The lab's EKS cluster, and Airflow AWS connections: the Airflow role (mapped), the base
    identity (no eks:DescribeCluster) and the EKS admin role (may describe, mapped to no one)."""
    described = lab_eks_cluster(lab, cluster)
    for conn_id, role_arn in (
        (MAPPED, moto_iam.AIRFLOW_ROLE_ARN),
        (NOT_ALLOWED, None),
        (UNMAPPED, moto_iam.EKS_ADMIN_ROLE_ARN),
    ):
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", aws_connection(lab, role_arn))
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
        namespace=NAMESPACE,
        service_account_name=SERVICE_ACCOUNT,
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


def provider_token(lab: Lab, cluster_name: str) -> str:
    """A ``k8s-aws-v1.`` token for ``cluster_name`` that the Amazon provider's own code signs as the
    Airflow role (its token command's function; provider 9.0's hook method, by the connection)."""
    try:
        from airflow.providers.amazon.aws.utils.eks_get_token import fetch_access_token_for_cluster
    except ImportError:  # provider 9.0
        from airflow.providers.amazon.aws.hooks.eks import EksHook

        return str(
            EksHook(aws_conn_id=MAPPED, region_name=REGION).fetch_access_token_for_cluster(cluster_name)
        )
    sts_url = f"https://sts.{REGION}.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"
    session = session_as(lab, moto_iam.AIRFLOW_ROLE_ARN)
    return str(fetch_access_token_for_cluster(cluster_name, sts_url, REGION, session=session))


def who_am_i(cluster: Cluster, token: str) -> tuple[int, dict[str, Any]]:
    """The API server's answer to a SelfSubjectReview made with ``token``: status and user info."""
    context = ssl.create_default_context(cafile=str(cluster.dir / "pki" / "ca.crt"))
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    request = urllib.request.Request(
        f"{cluster.server}/apis/authentication.k8s.io/v1/selfsubjectreviews",
        data=json.dumps(review).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as answer:
            return answer.status, json.loads(answer.read())["status"]["userInfo"]
    except urllib.error.HTTPError as error:
        return error.code, {}


def authenticator_log(cluster: Cluster) -> str:
    return (cluster.dir / "logs" / "aws-iam-authenticator.log").read_text()


def test_cluster_named_by_the_task_runs_the_pod_as_the_user_its_role_maps_to(
    lab: Lab, cluster: Cluster, eks_cluster: dict[str, Any], kubeconfigs: list[dict[str, Any]]
) -> None:
    repo, tag = "eks/app", "1.0.0"
    lab.create_repository(DEST_ACCOUNT, repo)  # the destination repository exists, as in ECR
    digest = lab.push_image(SOURCE_ACCOUNT, repo, tag, seed=1400)
    run = run_task_on_cluster(cluster, task=operator(lab, repo, tag, MAPPED))
    assert run.error is None, "\n".join(run.log[-40:])
    assert run.result["status"] == "copied", run.result
    assert run.result["digest"] == digest and run.result["digest_kept"] is True
    assert lab.digest(DEST_ACCOUNT, repo, tag) == digest
    [pod] = run.pods
    assert pod.metadata.namespace == NAMESPACE
    # DescribeCluster named the lab's API server and its CA, and KPO loaded exactly that.
    assert eks_cluster["endpoint"] == cluster.server
    ca = (cluster.dir / "pki" / "ca.crt").read_bytes()
    assert base64.b64decode(eks_cluster["certificateAuthority"]["data"]) == ca
    loaded = kubeconfigs[0]
    kubeconfig = loaded["kubeconfig"]
    assert kubeconfig["clusters"][0]["cluster"]["server"] == cluster.server
    assert kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"] == base64.b64encode(ca).decode()
    assert kubeconfig["contexts"][0]["context"]["namespace"] == NAMESPACE
    assert "eks_get_token" in " ".join(kubeconfig["users"][0]["user"]["exec"]["args"])
    assert loaded["configuration"].host == cluster.server
    token = bearer(loaded["configuration"])
    assert token.startswith("Bearer k8s-aws-v1.")
    host, query = presigned_request(token)
    assert host == f"sts.{REGION}.amazonaws.com"
    assert query["Action"] == ["GetCallerIdentity"]
    assert "x-k8s-aws-id" in query["X-Amz-SignedHeaders"][0]
    assert query["X-Amz-Credential"][0].split("/")[2] == REGION
    assert not Path(loaded["path"]).exists(), "the kubeconfig outlived the task"
    # The API server created the pod for the user the authenticator mapped the Airflow role to,
    # in the README's group, after moto's STS had answered who signed the token.
    created = [
        e
        for e in cluster.audit_events()
        if e["verb"] == "create"
        and e["objectRef"].get("resource") == "pods"
        and "subresource" not in e["objectRef"]
    ]
    assert [(e["objectRef"]["namespace"], e["responseStatus"]["code"]) for e in created] == [(NAMESPACE, 201)]
    user = created[0]["user"]
    binding = f'RoleBinding "ecr-promoters/{NAMESPACE}" of Role "ecr-promoters" to Group "{AIRFLOW_GROUP}"'
    assert created[0]["annotations"]["authorization.k8s.io/reason"] == f"RBAC: allowed by {binding}"
    assert user["username"] == iam_authenticator.USERNAME
    assert AIRFLOW_GROUP in user["groups"]
    assert user["extra"]["canonicalArn"] == [moto_iam.AIRFLOW_ROLE_ARN]
    assert user["extra"]["arn"][0].startswith(AIRFLOW_SESSION)
    assert f"username={iam_authenticator.USERNAME}" in authenticator_log(cluster)


def test_identity_without_describe_cluster_fails_before_any_pod(
    lab: Lab, cluster: Cluster, eks_cluster: dict[str, Any], kubeconfigs: list[dict[str, Any]]
) -> None:
    run = run_task_on_cluster(cluster, task=operator(lab, "eks/app", "2.0.0", NOT_ALLOWED))
    assert run.error is not None
    assert "AccessDenied" in str(run.error) and "eks:DescribeCluster" in str(run.error), run.error
    assert run.pods == []
    assert kubeconfigs == []


def test_token_of_a_role_the_cluster_does_not_map_is_refused(
    lab: Lab, cluster: Cluster, eks_cluster: dict[str, Any], kubeconfigs: list[dict[str, Any]]
) -> None:
    """The EKS admin role may describe the cluster, and STS vouches for its token, but the cluster
    maps no user to it: the API server refuses the token (401) and no pod is created."""
    audited = len(cluster.audit_events())
    run = run_task_on_cluster(cluster, task=operator(lab, "eks/app", "3.0.0", UNMAPPED))
    assert isinstance(run.error, ApiException) and run.error.status == 401, run.log[-20:]
    assert len(kubeconfigs) >= 1
    assert bearer(kubeconfigs[0]["configuration"]).startswith("Bearer k8s-aws-v1.")
    pods = cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "name").stdout.split()
    assert pods == []
    assert len(cluster.audit_events()) == audited
    lines = authenticator_log(cluster).splitlines()
    vouched = [
        line for line in lines if "STS response" in line and "assumed-role/ecr-promote-eks-admin/" in line
    ]
    refused = [line for line in lines if "access denied" in line and moto_iam.EKS_ADMIN_ROLE_ARN in line]
    assert vouched and refused, lines[-10:]


def test_token_signed_for_another_cluster_is_refused(
    lab: Lab, cluster: Cluster, eks_cluster: dict[str, Any]
) -> None:
    """EKS's replay protection, checked by the lab's STS: a token signs ``x-k8s-aws-id: <cluster>``,
    the authenticator sends its own cluster id in that header, and STS finds the signature wrong
    for a token made for another cluster. The same role's token for this cluster is the mapped user."""
    own, other = provider_token(lab, CLUSTER), provider_token(lab, "platform-other")
    status, user = who_am_i(cluster, own)
    assert (status, user["username"]) == (201, iam_authenticator.USERNAME)
    assert AIRFLOW_GROUP in user["groups"]
    assert who_am_i(cluster, other) == (401, {})
    refused = [line for line in authenticator_log(cluster).splitlines() if "access denied" in line]
    assert "SignatureDoesNotMatch" in refused[-1], refused[-1:]
