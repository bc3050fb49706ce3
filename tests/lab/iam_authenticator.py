"""aws-iam-authenticator as the lab cluster's token webhook: how EKS turns a ``k8s-aws-v1.`` token
into a Kubernetes user, done by the real program (``sigs.k8s.io/aws-iam-authenticator``, built by
tests/lab/gotools.py).

The API server hands each bearer token that none of its own authenticators accepts (its client
certificates and service-account tokens come first) to ``aws-iam-authenticator server``, named by
``--authentication-token-webhook-config-file`` (the kubeconfig the server writes as it starts). The
authenticator checks the token's form (a presigned STS ``GetCallerIdentity`` URL for an STS host of
the partition, ``x-k8s-aws-id`` signed, not expired), sends it on to STS with ``x-k8s-aws-id: <its
cluster id>``, and maps the identity STS answers through its ``mapRoles`` (the form of EKS's
``aws-auth`` ConfigMap). An identity it does not map, or a token STS refuses, is refused: the API
server answers 401.

In the lab STS is moto (tests/lab/moto_iam.py) at its real host name: the authenticator runs in the
lab's mount namespace, whose ``/etc/hosts`` sends ``sts.<region>.amazonaws.com`` to the lab's router
and whose system CA bundle holds the lab CA. The cluster id is the lab's EKS cluster's name
(``moto_iam.LAB_EKS_CLUSTER``), and its one mapping is the Airflow role's
(``moto_iam.AIRFLOW_ROLE_ARN``), to the user ``USERNAME`` in the group that the README's RoleBinding
names: an Airflow outside the cluster gets exactly the README's Role, as an EKS access entry with
that group gives it.

v0.6.13 also serves a health check on port 21363 of every address, whatever its configuration (its
``server.go``); nothing in the lab uses it, and when several lab clusters run only the first has it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import moto_iam

CLUSTER_ID = moto_iam.LAB_EKS_CLUSTER
USERNAME = "ecr-promote-airflow"  # the Kubernetes user the Airflow role maps to


def webhook_kubeconfig(folder: Path) -> Path:
    """The kubeconfig the server writes for the API server (its URL and self-signed certificate)."""
    return folder / "webhook.kubeconfig"


def write_config(folder: Path, *, address: str, port: int, group: str) -> Path:
    """The server's configuration file (JSON, which is YAML), mapping the Airflow role to
    ``USERNAME`` in ``group``; the server listens on ``address:port``."""
    (folder / "state").mkdir(parents=True, exist_ok=True)
    mapping = {"rolearn": moto_iam.AIRFLOW_ROLE_ARN, "username": USERNAME, "groups": [group]}
    config = {
        "clusterID": CLUSTER_ID,
        "server": {
            "address": address,
            "hostname": address,  # the webhook kubeconfig's URL and the certificate's address
            "port": port,
            "stateDir": str(folder / "state"),
            "generateKubeconfig": str(webhook_kubeconfig(folder)),
            "backendMode": ["MountedFile"],
            "mapRoles": [mapping],
        },
    }
    path = folder / "config.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def command(binary: Path, config: Path, namespace_pid: int) -> list[str]:
    """``aws-iam-authenticator server`` in the lab's mount namespace (the lab's hosts and CA)."""
    return [
        "nsenter",
        f"--target={namespace_pid}",
        "--mount",
        "--",
        str(binary),
        "server",
        f"--config={config}",
    ]


def environment() -> dict[str, str]:
    """The server's environment: no AWS settings of the caller's, and no instance metadata (the
    server asks it for its region as it starts, and would wait for timeouts on this machine)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


def audit_policy(path: Path) -> Path:
    """An API server audit policy recording each request of ``USERNAME`` (who, which verb on what,
    the answer's code) and nothing else: the record of which user the API server saw."""
    policy = {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [{"level": "Metadata", "users": [USERNAME]}, {"level": "None"}],
    }
    path.write_text(json.dumps(policy, indent=2))
    return path
