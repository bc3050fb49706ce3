"""The promotion pod on an EKS cluster named by the task, for Airflow that runs outside the cluster.

The kubeconfig comes from the Amazon provider's ``EksHook``, as its ``EksPodOperator`` gets it: the
cluster's endpoint and CA through ``eks:DescribeCluster`` with an Airflow AWS connection, and a user
entry that is an exec credential plugin running the provider's ``eks_get_token`` whenever the
Kubernetes client needs credentials (a ``k8s-aws-v1.`` token, a presigned STS GetCallerIdentity
request, valid for minutes: never stored). The file lives only while the task runs.

:func:`parse_eks_target` is pure and checks the inputs; :func:`eks_kubeconfig` is the side effect.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from airflow_ecr_promote.refs import PromotionInputError

# EKS: 1 to 100 characters, letters, digits, hyphens and underscores, starting with a letter or digit.
CLUSTER_NAME = re.compile(r"[0-9A-Za-z][A-Za-z0-9_-]{0,99}", re.ASCII)
REGION = re.compile(r"[a-z]{2}(?:-[a-z]+){1,2}-\d{1,2}", re.ASCII)
CONN_ID = re.compile(r"[A-Za-z0-9_.-]{1,250}", re.ASCII)
EXAMPLE_CLUSTER = "eks_cluster_name='platform-prod'"


@dataclass(frozen=True)
class EksTarget:
    """An EKS cluster to run the pod on, and the Airflow AWS connection that may describe it."""

    cluster_name: str
    region: str | None
    aws_conn_id: str | None


def parse_eks_target(
    cluster_name: object,
    region: object,
    aws_conn_id: object,
    *,
    config_file: object = None,
    in_cluster: object = None,
    deferrable: object = False,
) -> EksTarget | None:
    """The EKS target of these operator inputs, or None when no cluster is named.

    Raises :class:`PromotionInputError` naming the parameter for a value EKS would refuse, and for
    KPO arguments that choose the cluster another way.
    """
    if cluster_name is None:
        if region is not None:
            raise PromotionInputError(
                "eks_region", region, "is set but eks_cluster_name is not", f"Expected {EXAMPLE_CLUSTER} too"
            )
        return None
    if not isinstance(cluster_name, str) or not CLUSTER_NAME.fullmatch(cluster_name):
        raise PromotionInputError(
            "eks_cluster_name",
            cluster_name,
            "is not an EKS cluster name (1 to 100 letters, digits, '-' or '_', a letter or digit first)",
            f"Expected e.g. {EXAMPLE_CLUSTER}, or None to use KPO's own cluster settings",
        )
    if region is not None and not (isinstance(region, str) and REGION.fullmatch(region)):
        raise PromotionInputError(
            "eks_region",
            region,
            "is not an AWS region",
            "Expected e.g. 'eu-west-1', or None for the region of the AWS connection",
        )
    if aws_conn_id is not None and not (isinstance(aws_conn_id, str) and CONN_ID.fullmatch(aws_conn_id)):
        raise PromotionInputError(
            "eks_aws_conn_id",
            aws_conn_id,
            "is not an Airflow connection id",
            "Expected e.g. 'aws_default', or None for boto3's default credentials",
        )
    for param, value, why in (
        ("config_file", config_file, "the kubeconfig is written from eks_cluster_name"),
        ("in_cluster", in_cluster, "the pod runs on the EKS cluster named by eks_cluster_name"),
    ):
        if value:
            raise PromotionInputError(
                param, value, f"cannot be combined with eks_cluster_name: {why}", f"Expected {param}=None"
            )
    if deferrable:
        raise PromotionInputError(
            "deferrable",
            deferrable,
            "cannot be combined with eks_cluster_name: the triggerer would get a kubeconfig whose "
            "AWS credentials exist only on the worker",
            "Expected deferrable=False (the default)",
        )
    return EksTarget(cluster_name, region, aws_conn_id)


@contextmanager
def eks_kubeconfig(target: EksTarget, namespace: str | None) -> Iterator[str]:
    """A kubeconfig file for ``target``, written by the Amazon provider's EksHook; removed on exit.

    Follows the three forms the provider has had: ``generate_config_file_with_credentials`` (newest),
    ``generate_config_file(credentials_file=...)`` with ``_secure_credential_context`` (9.1x-9.3x),
    and ``generate_config_file`` whose token command reads the Airflow connection itself (9.0).
    """
    from airflow.providers.amazon.aws.hooks.eks import EksHook

    hook = EksHook(aws_conn_id=target.aws_conn_id, region_name=target.region)
    if hasattr(hook, "generate_config_file_with_credentials"):
        with hook.generate_config_file_with_credentials(
            eks_cluster_name=target.cluster_name, pod_namespace=namespace
        ) as (config_file, _credentials_file):
            yield config_file
        return
    if "credentials_file" not in inspect.signature(hook.generate_config_file).parameters:
        old_form: Callable[..., AbstractContextManager[str]] = hook.generate_config_file
        with old_form(eks_cluster_name=target.cluster_name, pod_namespace=namespace) as path:
            yield path
        return
    credentials = hook.get_session().get_credentials()
    if credentials is None:
        raise PromotionInputError(
            "eks_aws_conn_id",
            target.aws_conn_id,
            "gives no AWS credentials to describe the cluster with",
            "Expected a connection (or worker identity) allowed eks:DescribeCluster",
        )
    key = credentials.get_frozen_credentials()
    with (
        hook._secure_credential_context(key.access_key, key.secret_key, key.token) as credentials_file,
        hook.generate_config_file(
            eks_cluster_name=target.cluster_name, pod_namespace=namespace, credentials_file=credentials_file
        ) as path,
    ):
        yield path
