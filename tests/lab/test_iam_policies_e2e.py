"""The IAM policies the README documents (airflow_ecr_promote/policies/*.json) are what it takes.

Each test gives the lab's probe roles (``moto_iam.PROBE_ROLE_ARNS``, one per account) exactly the
package's policy files, scoped as the files scope them (repositories ``team/*`` of their own
account and region), and runs the promotion or the feature as those roles:

- with the files, it succeeds, and the actions it needed (the lab's audit of every IAM decision
  by moto's ECR API and by the registries, tests/lab/ecr_front.py) are exactly the files'
  actions: none is missing, none is spare;
- with one action taken out, it fails with ECR's AccessDenied naming that action.

moto checks ECR actions against the repository's ARN (moto_iam.py extends it: moto compares with
``*``), and the registries check each request's action (ecr_front.py): without both, a policy
missing an action, or scoped to another account, passed every test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_ecr_promote import policies
from airflow_ecr_promote.operators import EcrPromoteError
from airflow_ecr_promote.signatures import VERIFY_CONTAINER_NAME
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .cluster import Cluster
from .cosign import Tools
from .fixtures import BASELINE_NAMESPACE
from .lab import Lab
from .moto_iam import (
    BASE_ACCESS_KEY_ID,
    BASE_SECRET_ACCESS_KEY,
    LAB_EKS_CLUSTER,
    PROBE_ROLE_ARNS,
    policy,
    without,
)
from .operator_run import TaskRun, lab_operator, run_task

pytestmark = [pytest.mark.lab, pytest.mark.cluster]

SOURCE_PROBE = f"arn:aws:sts::{SOURCE_ACCOUNT}:assumed-role/ecr-promote-probe/"
DEST_PROBE = f"arn:aws:sts::{DEST_ACCOUNT}:assumed-role/ecr-promote-probe/"


@pytest.fixture(autouse=True)
def no_probe_policies(lab: Lab) -> Iterator[None]:
    """The probe roles hold no policy before and after each test."""
    for acct in (SOURCE_ACCOUNT, DEST_ACCOUNT):
        lab.set_probe_policy(acct, None)
    yield
    for acct in (SOURCE_ACCOUNT, DEST_ACCOUNT):
        lab.set_probe_policy(acct, None)


def files(*names: str) -> dict[str, Any]:
    """The package's policy files, as the README shows them (repositories ``team/*``)."""
    return policy(*names, repositories="team/*")


def promote(cluster: Cluster, engine: str, repo: str, tag: str, **kwargs: Any) -> TaskRun:
    """On the lab's real Kubernetes; kaniko (root, three capabilities) in the ``baseline`` namespace."""
    if engine == "kaniko":
        kwargs.setdefault("namespace", BASELINE_NAMESPACE)
    operator = lab_operator(
        cluster.lab,
        engine,
        source_image=f"{SOURCE_HOST}/{repo}:{tag}",
        dest_image=f"{DEST_HOST}/{repo}:{tag}",
        source_role_arn=PROBE_ROLE_ARNS[SOURCE_ACCOUNT],
        dest_role_arn=PROBE_ROLE_ARNS[DEST_ACCOUNT],
        **kwargs,
    )
    return run_task(cluster, task=operator)


def used(decisions: list[dict[str, Any]], identity: str) -> set[str]:
    return {d["action"] for d in decisions if d["identity"].startswith(identity) and d["allowed"]}


def refused(decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in decisions if d["identity"].startswith((SOURCE_PROBE, DEST_PROBE)) and not d["allowed"]]


# case -> (pull role's files, push role's files, operator arguments): every file is used by one
# (regctl-signatures' source is signed too, and the gate verifies it: cosign reads with the pull role)
ENGINE_CASES = {
    "skopeo": (("pull", "create-repository-pull"), ("push-skopeo", "create-repository-push"),
               {"create_repository": True}),
    "crane": (("pull",), ("push-crane",), {}),
    "regctl": (("pull",), ("push-regctl",), {"with_signatures": False}),
    # regctl's default: signatures on (with_signatures=None)
    "regctl-signatures": (("pull", "signatures-pull"), ("push-regctl", "signatures-push"), {}),
    "kaniko": (("pull",), ("push-kaniko",), {}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ENGINE_CASES))
def test_each_engine_needs_exactly_its_documented_policies(
    lab: Lab, cluster: Cluster, case: str, tmp_path: Path
) -> None:
    engine = case.split("-")[0]
    pull, push, arguments = ENGINE_CASES[case]
    repo, tag = f"team/iam-{case}", "1.0"
    lab.push_image(SOURCE_ACCOUNT, repo, tag, seed=1900)
    if case == "regctl-signatures":  # signed: the gate verifies with the pull role, then regctl copies
        tools = Tools(lab, tmp_path)
        key = tools.key_pair("release")
        tools.sign(f"{SOURCE_HOST}/{repo}:{tag}", key, SOURCE_ACCOUNT)
        assert lab.images is not None
        arguments = {**arguments, "verify_signature_key": key.public_pem, "cosign_image": lab.images.cosign}
    if not arguments.get("create_repository"):
        lab.create_repository(DEST_ACCOUNT, repo)
    lab.set_probe_policy(SOURCE_ACCOUNT, files(*pull))
    lab.set_probe_policy(DEST_ACCOUNT, files(*push))
    seen = len(lab.iam_decisions())
    run = promote(cluster, engine, repo, tag, **arguments)
    assert run.error is None, "\n".join(run.log[-30:])
    if "verify_signature_key" in arguments:
        gates = [c for o in run.outcomes for c in o.init_containers if c.name == VERIFY_CONTAINER_NAME]
        assert [c.exit_code for c in gates] == [0], "the gate ran, and passed"
    decisions = lab.iam_decisions()[seen:]
    assert refused(decisions) == []
    assert used(decisions, SOURCE_PROBE) == set(policies.actions(files(*pull)))
    assert used(decisions, DEST_PROBE) == set(policies.actions(files(*push)))


# (engine, pull role's files, push role's files, the action taken out, operator arguments)
MISSING_CASES = [
    ("skopeo", ("pull",), ("push-skopeo",), "ecr:BatchGetImage", {}),
    ("crane", ("pull",), ("push-crane",), "ecr:PutImage", {}),
    ("regctl", ("pull", "signatures-pull"), ("push-regctl", "signatures-push"), "ecr:ListImages",
     {"with_signatures": True}),
    ("skopeo", ("pull", "create-repository-pull"), ("push-skopeo", "create-repository-push"),
     "ecr:CreateRepository", {"create_repository": True}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("engine", "pull", "push", "action", "arguments"),
    MISSING_CASES,
    ids=[f"{c[0]}-without-{c[3].split(':')[1]}" for c in MISSING_CASES],
)
def test_a_missing_action_fails_the_promotion_naming_it(
    lab: Lab,
    cluster: Cluster,
    engine: str,
    pull: tuple[str, ...],
    push: tuple[str, ...],
    action: str,
    arguments: dict[str, Any],
) -> None:
    repo, tag = f"team/iam-without-{action.split(':')[1].lower()}", "1.0"
    lab.push_image(SOURCE_ACCOUNT, repo, tag, seed=1901)
    if not arguments.get("create_repository"):
        lab.create_repository(DEST_ACCOUNT, repo)
    pulling, pushing = files(*pull), files(*push)
    if action in policies.actions(pulling):
        pulling = without(pulling, action)
    else:
        pushing = without(pushing, action)
    lab.set_probe_policy(SOURCE_ACCOUNT, pulling)
    lab.set_probe_policy(DEST_ACCOUNT, pushing)
    seen = len(lab.iam_decisions())
    run = promote(cluster, engine, repo, tag, **arguments)
    assert isinstance(run.error, EcrPromoteError), "\n".join(run.log[-30:])
    assert f"not authorized to perform: {action}" in str(run.error), str(run.error)
    assert {d["action"] for d in refused(lab.iam_decisions()[seen:])} == {action}
    assert lab.digest(DEST_ACCOUNT, repo, tag) is None


@pytest.mark.parametrize("with_batch_policy", [True, False], ids=["batch-push", "without-batch-push"])
def test_a_batch_lists_its_destination_once_with_the_batch_policy(
    lab: Lab, cluster: Cluster, with_batch_policy: bool
) -> None:
    """skopeo, three tags into one repository: with ``batch-push`` the copier lists the
    destination's tags once (ecr:ListImages) and the role uses exactly its files' actions;
    without it the listing is refused and the batch still succeeds, reading tag by tag."""
    repo, tags = f"team/iam-batch-{with_batch_policy}".lower(), ["1.0", "1.1", "1.2"]
    for n, tag in enumerate(tags):
        lab.push_image(SOURCE_ACCOUNT, repo, tag, seed=1910 + n)
    lab.create_repository(DEST_ACCOUNT, repo)
    push = ("push-skopeo", "batch-push") if with_batch_policy else ("push-skopeo",)
    lab.set_probe_policy(SOURCE_ACCOUNT, files("pull"))
    lab.set_probe_policy(DEST_ACCOUNT, files(*push))
    seen = len(lab.iam_decisions())
    operator = lab_operator(
        lab,
        "skopeo",
        source_image=f"{SOURCE_HOST}/{repo}",
        dest_image=f"{DEST_HOST}/{repo}",
        tags=tags,
        source_role_arn=PROBE_ROLE_ARNS[SOURCE_ACCOUNT],
        dest_role_arn=PROBE_ROLE_ARNS[DEST_ACCOUNT],
    )
    run = run_task(cluster, task=operator)
    assert run.error is None, "\n".join(run.log[-30:])
    assert [p["status"] for p in run.result["promotions"]] == ["copied"] * 3
    decisions = lab.iam_decisions()[seen:]
    if with_batch_policy:
        assert refused(decisions) == []
        assert used(decisions, DEST_PROBE) == set(policies.actions(files(*push)))
        listings = [d for d in decisions if d["action"] == "ecr:ListImages"]
        assert len(listings) == 1, "one listing of the destination for the whole batch"
    else:
        assert {d["action"] for d in refused(decisions)} == {"ecr:ListImages"}
        assert used(decisions, DEST_PROBE) == set(policies.actions(files(*push)))


# ----------------------------------------------------------------- Airflow's connections, no pod
PROBE_CONN = "lab_probe"


@pytest.fixture
def probe_connection(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow AWS connections ``lab_probe_<account>``: the base identity assuming the probe role."""
    for acct, region in ((SOURCE_ACCOUNT, "us-west-2"), (DEST_ACCOUNT, "us-east-1")):
        extra = {
            "role_arn": PROBE_ROLE_ARNS[acct],
            "region_name": region,
            "endpoint_url": lab.moto_endpoint,
            "service_config": {"sts": {"endpoint_url": lab.moto_endpoint}},
        }
        conn = {
            "conn_type": "aws",
            "login": BASE_ACCESS_KEY_ID,
            "password": BASE_SECRET_ACCESS_KEY,
            "extra": extra,
        }
        monkeypatch.setenv(f"AIRFLOW_CONN_{PROBE_CONN.upper()}_{acct}", json.dumps(conn))
    monkeypatch.setenv("AWS_CA_BUNDLE", str(lab.ca_bundle))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def list_source_tags(lab: Lab, repo: str) -> object:
    from airflow_ecr_promote.discovery import list_tags

    return list_tags(f"{SOURCE_HOST}/{repo}", aws_conn_id=f"{PROBE_CONN}_{SOURCE_ACCOUNT}")


def sense_destination(lab: Lab, repo: str) -> object:
    from airflow_ecr_promote.sensors import EcrImageSensor
    from tests.airflow_context import make_context

    sensor = EcrImageSensor(task_id="wait", image=f"{DEST_HOST}/{repo}:1.0",
                            aws_conn_id=f"{PROBE_CONN}_{DEST_ACCOUNT}")  # fmt: skip
    return sensor.poke(make_context(sensor)).xcom_value


@pytest.mark.usefixtures("probe_connection")
@pytest.mark.parametrize(
    ("name", "acct", "call"),
    [("list-tags", SOURCE_ACCOUNT, list_source_tags), ("sensor", DEST_ACCOUNT, sense_destination)],
    ids=["list-tags", "sensor"],
)
def test_airflow_connection_policies_are_enough_and_each_action_needed(
    lab: Lab, name: str, acct: str, call: Any
) -> None:
    from botocore.exceptions import ClientError

    repo = "team/iam-airflow"
    digest = lab.push_image(SOURCE_ACCOUNT, repo, "1.0", seed=1902)
    lab.create_repository(DEST_ACCOUNT, repo)
    lab.push_image(DEST_ACCOUNT, repo, "1.0", seed=1902)
    lab.set_probe_policy(acct, files(name))
    found = call(lab, repo)
    assert found == (["1.0"] if name == "list-tags" else digest)
    for action in policies.actions(files(name)):
        lab.set_probe_policy(acct, without(files(name), action))
        with pytest.raises(ClientError, match=f"not authorized to perform: {action} on resource: "
                           f"arn:aws:ecr:[a-z0-9-]+:{acct}:repository/{repo}"):  # fmt: skip
            call(lab, repo)


@pytest.mark.usefixtures("probe_connection")
def test_compare_digests_policy_lets_the_worker_find_the_copies_in_place(lab: Lab) -> None:
    """Two copies, one in place: DescribeImages answers the source's chunk, and the destination's
    (with a missing tag) needs BatchGetImage's per-image failures. Each action is needed: without
    one, the API refuses and the pod decides every copy."""
    from airflow_ecr_promote.precheck import find_in_place
    from airflow_ecr_promote.promotion import parse_promotion

    repo = "team/iam-precheck"
    digest = lab.push_image(SOURCE_ACCOUNT, repo, "1.0", seed=1903)
    lab.push_image(SOURCE_ACCOUNT, repo, "1.1", seed=1904)
    lab.create_repository(DEST_ACCOUNT, repo)
    lab.push_image(DEST_ACCOUNT, repo, "1.0", seed=1903)
    promotion = parse_promotion(
        pairs=[
            {"source_image": f"{SOURCE_HOST}/{repo}:{t}", "dest_image": f"{DEST_HOST}/{repo}:{t}"}
            for t in ("1.0", "1.1")
        ]
    )
    conns = {
        "source_conn_id": f"{PROBE_CONN}_{SOURCE_ACCOUNT}",
        "dest_conn_id": f"{PROBE_CONN}_{DEST_ACCOUNT}",
    }
    for acct in (SOURCE_ACCOUNT, DEST_ACCOUNT):
        lab.set_probe_policy(acct, files("compare-digests"))
    seen = len(lab.iam_decisions())
    assert find_in_place(promotion, **conns) == [digest, None]
    decisions = lab.iam_decisions()[seen:]
    assert refused(decisions) == []
    assert used(decisions, DEST_PROBE) == set(policies.actions(files("compare-digests")))
    for action in policies.actions(files("compare-digests")):
        seen = len(lab.iam_decisions())
        lab.set_probe_policy(DEST_ACCOUNT, without(files("compare-digests"), action))
        assert find_in_place(promotion, **conns) is None  # the pod decides then
        assert [d["action"] for d in refused(lab.iam_decisions()[seen:])] == [action]


def test_eks_policy_allows_describing_only_its_cluster(lab: Lab) -> None:
    admin = lab._client(
        "eks", lab_account(SOURCE_ACCOUNT), "arn:aws:iam::123456789012:role/ecr-promote-eks-admin"
    )
    if LAB_EKS_CLUSTER not in admin.list_clusters()["clusters"]:
        admin.create_cluster(name=LAB_EKS_CLUSTER, roleArn=f"arn:aws:iam::{SOURCE_ACCOUNT}:role/eks-cluster",
                             resourcesVpcConfig={})  # fmt: skip
    lab.set_probe_policy(SOURCE_ACCOUNT, policy("eks-describe-cluster"))
    eks = lab._client("eks", lab_account(SOURCE_ACCOUNT), PROBE_ROLE_ARNS[SOURCE_ACCOUNT])
    assert eks.describe_cluster(name=LAB_EKS_CLUSTER)["cluster"]["name"] == LAB_EKS_CLUSTER
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="not authorized to perform: eks:DescribeCluster on resource: "
                       f"arn:aws:eks:us-west-2:{SOURCE_ACCOUNT}:cluster/other"):  # fmt: skip
        eks.describe_cluster(name="other")


def lab_account(acct: str) -> Any:
    from .paths import account

    return account(acct)
