"""The least-privilege IAM policies the README documents: one JSON file per role and feature.

They are files in the package, not only text in the README, so that there is one copy: the README
shows them (tests/test_policies.py fails when a README block and its file differ), the lab gives
its roles exactly these statements and fails a promotion when one action is missing
(tests/lab/test_iam.py), and infrastructure code can read them
(``airflow_ecr_promote.policies.load("pull")``).

Each file is written for the README's example: source repositories ``team/*`` in account
123456789012 (us-west-2), destination repositories ``team/*`` in account 210987654321
(us-east-1), an EKS cluster ``platform-prod`` in 111122223333 (us-west-2). Replace those in the
ARNs with your own. Which role gets which file:

- pull role (source account): ``pull`` [+ ``signatures-pull``] [+ ``create-repository-pull``];
- push role (destination account): ``push-<engine>`` [+ ``signatures-push``]
  [+ ``batch-push``] [+ ``create-repository-push``];
- Airflow's AWS connections: ``compare-digests`` (``source_aws_conn_id`` / ``dest_aws_conn_id``),
  ``scan-gate`` (``source_aws_conn_id``, with ``max_severity``),
  ``list-tags`` (``EcrListTagsOperator``), ``sensor`` (``EcrImageSensor``),
  ``eks-describe-cluster`` (``eks_cluster_name``).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

NAMES = (
    "pull",
    "push-kaniko",
    "push-skopeo",
    "push-crane",
    "push-regctl",
    "signatures-pull",
    "signatures-push",
    "batch-push",
    "create-repository-pull",
    "create-repository-push",
    "compare-digests",
    "scan-gate",
    "list-tags",
    "sensor",
    "eks-describe-cluster",
)


def load(name: str) -> dict[str, Any]:
    """The policy document ``<name>.json`` (one of ``NAMES``) as a dict."""
    if name not in NAMES:
        raise KeyError(f"unknown policy {name!r}; known: {', '.join(NAMES)}")
    text = resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def actions(document: dict[str, Any]) -> list[str]:
    """Every action a policy document allows, in order, each once."""
    found: list[str] = []
    for statement in document["Statement"]:
        listed = statement["Action"]
        for action in [listed] if isinstance(listed, str) else listed:
            if action not in found:
                found.append(action)
    return found
