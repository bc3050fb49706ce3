"""moto with IAM enforced, as the lab's STS + ECR API: the entry point and the identities it seeds.

Run as a script (`python tests/lab/moto_iam.py -H HOST -p PORT -c CERT -k KEY`, the same
options as `python -m moto.server`). Before serving, it writes straight into moto's IAM
backends what a real pair of accounts would hold, then turns on moto's IAM enforcement from
the very first request (`INITIAL_NO_AUTH_ACTION_COUNT=0`):

- account 123456789012: IAM user `ecr-promote-pod`, the pod's base identity (IRSA / Pod
  Identity stand-in), with the fixed access key `BASE_ACCESS_KEY_ID` / `BASE_SECRET_ACCESS_KEY`
  (moto's API cannot choose a key id, so the key is rewritten in the model). Its inline policy
  allows `sts:AssumeRole` ONLY on the roles below, plus the package's `pull` policy (the
  pod-identity path: no source role);
- every role's policy is made of the package's policy files (airflow_ecr_promote/policies, the
  ones the README shows; `policy()`), with the lab's repositories (`*`) in place of `team/*`:
  `ecr-promote-pull` (source account): pull, signatures-pull, create-repository-pull;
  `ecr-promote-push` (destination account): push-<each engine>, signatures-push;
  `ecr-promote-push-create`: the same plus create-repository-push;
  `ecr-promote-push-create` in a third, "tools" account 345678901234: the same policy (its ARNs
  name the destination's repositories); the destination's registry policy grants that account
  (`REGISTRY_GRANTS`), so an ECR call of it naming the destination's `registryId` acts on the
  destination's registry, and the destination's registry accepts its login (tests/lab/ecr_front.py),
  as in AWS;
  `ecr-promote-pull-push` (source account): pull and push-<each engine> on the source registry
  (a fan-out that writes there too);
  `ecr-promote-read` (each account, Airflow's connections): compare-digests, list-tags, sensor,
  scan-gate;
  `ecr-promote-airflow` (source account, an Airflow outside the cluster): eks-describe-cluster;
  `ecr-promote-probe` (each account): no policy until a test sets one (`Lab.set_probe_policy`:
  a policy file exactly, or one minus an action). They trust exactly the user's ARN.
- role `ecr-promote-lab-admin` in each account (`ecr:*`, and setting the probe role's policy): the
  lab's own setup, e.g. creating the repositories a test pushes to, never a promotion's identity;
  role `ecr-promote-eks-admin` may also create (and delete) EKS clusters, for tests to set one up.
- an EKS cluster created with the tags `EKS_ENDPOINT_TAG` (a URL) and `EKS_CA_FILE_TAG` (a PEM
  file on this machine) describes that endpoint and that CA (`certificateAuthority.data`, base64
  of the PEM) instead of moto's made-up ones: the lab's own Kubernetes (tests/lab/cluster.py) is
  then the cluster that `eks:DescribeCluster` names. The CA goes by file because an AWS tag value
  is at most 256 characters and a PEM is longer.

What is enforced (moto's access control, 5.x): every STS/ECR/EKS request must be SigV4-signed
with a known key (an unknown key id -> `InvalidClientTokenId`, a wrong secret ->
`SignatureDoesNotMatch`, an unsigned request -> `MissingAuthenticationToken`, all 403; ECR
answers in JSON as AWS does: `UnrecognizedClientException`, `InvalidSignatureException`,
`MissingAuthenticationTokenException`, `AccessDeniedException`);
the caller's policies must allow the action (`AccessDenied` otherwise); keys handed out by
assume-role act with the role's policies, in the role's account. moto compares only
`sts:AssumeRole` (and IAM's role actions) with a resource; ECR and EKS actions it compared with
`*`, so a policy scoped to repositories allowed nothing, and one on `*` everything. Patches,
applied only in this process, bring it closer to AWS:
- ECR actions are checked against the repository's ARN (`arn:aws:ecr:<region>:<registryId or the
  caller's account>:repository/<name>`; `*` for GetAuthorizationToken), `eks:DescribeCluster`
  against the cluster's; a policy's `*` and `?` are IAM's wildcards (moto made the pattern a
  regular expression unescaped: `.` matched any character);
- `GetAuthorizationToken` returns a password bound to its caller (`<account>-auth-token.<random>`),
  and the registry fronts (ecr_front.py, in this process) check each registry request's ECR
  action (`ecr:BatchGetImage`, `ecr:PutImage`, `ecr:ListImages`, ...) on the repository's ARN in
  that caller's policies, as ECR's registry does; the lab's own password (`<account>-auth-token`,
  the registries' htpasswd) is not checked;
- every decision goes to an audit file (`--iam-audit`, `Lab.iam_decisions`): which identity, which
  action on which resource, allowed or not, by the API or a registry;
- the role's trust policy is read from the ROLE's account (moto only looks in the caller's, so
  cross-account trust was never checked), a role that does not exist is refused, and the
  AccessDenied message names the resource ("... is not authorized to perform: sts:AssumeRole on
  resource: <role ARN>"); a bodiless GET (EKS DescribeCluster) is signature-checked as sent
  (moto signed its parsed parameters as a body).
- an ECR request naming another account's `registryId` acts on that account's registry when its
  registry policy grants the caller's account (`REGISTRY_GRANTS`), and is refused otherwise (moto
  kept every repository in the caller's own account, whatever the registryId).
- a request signed in its query string (SigV4 query authentication, a presigned URL) is routed,
  signature-checked and answered as its signer, like one signed in its `Authorization` header: an
  EKS `k8s-aws-v1.` token is a presigned STS `GetCallerIdentity`, which aws-iam-authenticator sends
  on to STS (moto routed such a request by its path, to S3, checked no signature and answered an
  unknown caller); and STS answers JSON to a request that accepts JSON (`Accept:
  application/json`, as aws-iam-authenticator sends), as AWS's STS does (moto answered XML).
Not enforced: other resource policies (repository policies), permission boundaries, conditions other
than moto's trust policy ones, a presigned URL's expiry (the authenticator checks the token's);
`/moto-api/` stays open (the lab reads `/moto-api/data.json`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

SOURCE_ACCOUNT = "123456789012"
DEST_ACCOUNT = "210987654321"
PARTITION = "aws"

BASE_USER = "ecr-promote-pod"
BASE_USER_ARN = f"arn:aws:iam::{SOURCE_ACCOUNT}:user/{BASE_USER}"
BASE_ACCESS_KEY_ID = "AKIALABECRPROMOTEPOD"  # 20 characters, AKIA: a long-term user key
BASE_SECRET_ACCESS_KEY = "lab/ecr-promote/base+identity/secret0000"  # 40 characters

PULL_ROLE_ARN = f"arn:aws:iam::{SOURCE_ACCOUNT}:role/ecr-promote-pull"
PUSH_ROLE_ARN = f"arn:aws:iam::{DEST_ACCOUNT}:role/ecr-promote-push"
AIRFLOW_ROLE_ARN = f"arn:aws:iam::{SOURCE_ACCOUNT}:role/ecr-promote-airflow"
EKS_ADMIN_ROLE_ARN = f"arn:aws:iam::{SOURCE_ACCOUNT}:role/ecr-promote-eks-admin"

REPOSITORY_EXAMPLE = "repository/team/*"  # how the package's policy files scope repositories
EKS_EXAMPLE = ("111122223333", "cluster/platform-prod")  # and the EKS cluster
LAB_EKS_CLUSTER = "platform-lab"  # tests/lab/test_eks_e2e.py's cluster, in the source account
# CreateCluster tags naming the real cluster an EKS cluster of the lab stands for (see the docstring)
EKS_ENDPOINT_TAG = "ecr-promote-lab:endpoint"
EKS_CA_FILE_TAG = "ecr-promote-lab:certificate-authority-file"


def policy(*names: str, repositories: str = "*", destination: str = DEST_ACCOUNT) -> dict[str, Any]:
    """The package's policy files ``names`` (airflow_ecr_promote/policies) as one document, for the lab.

    Their ARNs already name the lab's accounts and regions (the README's example is the lab's);
    only the repository names change, from ``team/*`` to ``repositories`` (the lab's tests use
    many names; ``"team/*"`` keeps the files as they are), and the EKS cluster to the lab's.
    ``destination=SOURCE_ACCOUNT`` moves the push files' statements to the source account's
    registry (a promotion that writes there too needs a push role in that account).
    """
    from airflow_ecr_promote import policies

    statements: list[dict[str, Any]] = []
    for name in names:
        for statement in policies.load(name)["Statement"]:
            if statement in statements:  # the same statement in two files (RegistryLogin)
                continue
            if any(s.get("Sid") == statement.get("Sid") for s in statements):  # Sids must be unique
                suffix = "".join(part.capitalize() for part in name.split("-"))
                statement = {**statement, "Sid": f"{statement['Sid']}{suffix}"}
            statements.append(statement)
    text = json.dumps(statements)
    text = text.replace(REPOSITORY_EXAMPLE, f"repository/{repositories}")
    if destination == SOURCE_ACCOUNT:
        text = text.replace(
            f"arn:aws:ecr:us-east-1:{DEST_ACCOUNT}:", f"arn:aws:ecr:us-west-2:{SOURCE_ACCOUNT}:"
        )
    text = text.replace(f"{EKS_EXAMPLE[0]}:{EKS_EXAMPLE[1]}", f"{SOURCE_ACCOUNT}:cluster/{LAB_EKS_CLUSTER}")
    return {"Version": "2012-10-17", "Statement": json.loads(text)}


def without(document: dict[str, Any], action: str) -> dict[str, Any]:
    """``document`` with ``action`` taken out of every statement (statements left empty dropped)."""
    statements = []
    for statement in document["Statement"]:
        listed = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if [a for a in listed if a != action]:
            statements.append({**statement, "Action": [a for a in listed if a != action]})
    result = {**document, "Statement": statements}
    if _actions(result) == _actions(document):
        raise ValueError(f"{action} is not in the policy")
    return result


def _actions(document: dict[str, Any]) -> set[str]:
    from airflow_ecr_promote.policies import actions

    return set(actions(document))


# The promotion roles hold the package's policy files, every feature the lab's tests use:
PULL_POLICY = policy("pull", "signatures-pull", "create-repository-pull")
PUSH_POLICY = policy(
    "push-skopeo", "push-crane", "push-regctl", "push-kaniko", "signatures-push", "batch-push"
)
# pull and push in the source account, for a promotion that also writes there (a fan-out): crane
# and regctl hold one credential per registry host, so one role reads and writes that registry
SOURCE_PULL_PUSH_ROLE_ARN = f"arn:aws:iam::{SOURCE_ACCOUNT}:role/ecr-promote-pull-push"
SOURCE_PULL_PUSH_FILES = ("pull", "signatures-pull", "push-skopeo", "push-crane", "push-regctl",
                          "push-kaniko", "signatures-push", "batch-push")  # fmt: skip
SOURCE_PULL_PUSH_POLICY = policy(*SOURCE_PULL_PUSH_FILES, destination=SOURCE_ACCOUNT)
# the push role of a promotion with create_repository (README: "IAM")
PUSH_CREATE_POLICY = policy(*(n for n in ("push-skopeo", "push-crane", "push-regctl", "push-kaniko",
                                          "signatures-push", "batch-push",
                                          "create-repository-push")))  # fmt: skip
PUSH_CREATE_ROLE_ARN = f"arn:aws:iam::{DEST_ACCOUNT}:role/ecr-promote-push-create"
# Airflow's AWS connections (tests/lab/operator_run.py: lab_source, lab_dest), one per account
READ_ROLE_ARNS = {a: f"arn:aws:iam::{a}:role/ecr-promote-read" for a in (SOURCE_ACCOUNT, DEST_ACCOUNT)}
READ_POLICY = policy("compare-digests", "list-tags", "sensor", "scan-gate")
# one role per account whose policy a test sets (Lab.set_probe_policy): one policy, or one minus an action
PROBE_ROLE_ARNS = {a: f"arn:aws:iam::{a}:role/ecr-promote-probe" for a in (SOURCE_ACCOUNT, DEST_ACCOUNT)}
# a third account (e.g. a CI/tools account) whose push role the destination's registry policy lets
# push and create repositories: an ECR call naming the destination's registryId acts there
TOOLS_ACCOUNT = "345678901234"
TOOLS_PUSH_CREATE_ROLE_ARN = f"arn:aws:iam::{TOOLS_ACCOUNT}:role/ecr-promote-push-create"
REGISTRY_GRANTS = {DEST_ACCOUNT: (TOOLS_ACCOUNT,)}  # registry account -> accounts its policy allows
# the lab's own setup (creating repositories before a test) in each account, never a pod's identity
LAB_ADMIN_ROLE_ARNS = {
    a: f"arn:aws:iam::{a}:role/ecr-promote-lab-admin" for a in (SOURCE_ACCOUNT, DEST_ACCOUNT, TOOLS_ACCOUNT)
}


def _doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _allow(*actions: str, resource: str | list[str] = "*") -> dict[str, Any]:
    statement = {"Effect": "Allow", "Action": list(actions), "Resource": resource}
    return {"Version": "2012-10-17", "Statement": [statement]}


BASE_POLICY = _doc(
    {"Sid": "AssumeThePromotionRoles", "Effect": "Allow", "Action": "sts:AssumeRole",
     "Resource": [PULL_ROLE_ARN, PUSH_ROLE_ARN, SOURCE_PULL_PUSH_ROLE_ARN, PUSH_CREATE_ROLE_ARN,
                  TOOLS_PUSH_CREATE_ROLE_ARN, AIRFLOW_ROLE_ARN, EKS_ADMIN_ROLE_ARN, *READ_ROLE_ARNS.values(),
                  *PROBE_ROLE_ARNS.values(), *LAB_ADMIN_ROLE_ARNS.values()]},
    # the pod-identity path (no source role): the pod's own identity pulls, with the pull policy
    *policy("pull")["Statement"],
)  # fmt: skip
TRUST_POLICY = _doc({"Effect": "Allow", "Principal": {"AWS": BASE_USER_ARN}, "Action": "sts:AssumeRole"})


def _lab_admin(account_id: str) -> dict[str, Any]:
    statements: list[dict[str, Any]] = [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]
    if account_id in PROBE_ROLE_ARNS:
        probe = ["iam:PutRolePolicy", "iam:DeleteRolePolicy", "iam:ListRolePolicies"]
        statements.append({"Effect": "Allow", "Action": probe, "Resource": PROBE_ROLE_ARNS[account_id]})
    return {"Version": "2012-10-17", "Statement": statements}


ROLES: dict[str, dict[str, Any] | None] = {  # role ARN -> its inline policy (None: none yet)
    PULL_ROLE_ARN: PULL_POLICY,
    PUSH_ROLE_ARN: PUSH_POLICY,
    SOURCE_PULL_PUSH_ROLE_ARN: SOURCE_PULL_PUSH_POLICY,
    PUSH_CREATE_ROLE_ARN: PUSH_CREATE_POLICY,
    TOOLS_PUSH_CREATE_ROLE_ARN: PUSH_CREATE_POLICY,  # the documented policy, from the tools account
    **{arn: READ_POLICY for arn in READ_ROLE_ARNS.values()},
    **{arn: None for arn in PROBE_ROLE_ARNS.values()},
    **{arn: _lab_admin(account_id) for account_id, arn in LAB_ADMIN_ROLE_ARNS.items()},
    AIRFLOW_ROLE_ARN: policy("eks-describe-cluster"),
    EKS_ADMIN_ROLE_ARN: _allow(
        "eks:CreateCluster", "eks:DescribeCluster", "eks:ListClusters", "eks:DeleteCluster"
    ),
}


JSON_ERRORS = {  # query-protocol code (STS) -> JSON-protocol code (ECR), as AWS names them
    "AccessDenied": "AccessDeniedException",
    "InvalidClientTokenId": "UnrecognizedClientException",
    "SignatureDoesNotMatch": "InvalidSignatureException",
    "MissingAuthenticationToken": "MissingAuthenticationTokenException",
}


def seed() -> None:
    """Create the base user (fixed key), its policy, and the two roles in moto's IAM backends."""
    from moto.iam.models import iam_backends

    src = iam_backends[SOURCE_ACCOUNT][PARTITION]
    src.create_user(region_name="us-east-1", user_name=BASE_USER)
    key = src.create_access_key(BASE_USER)
    del src.access_keys[key.access_key_id]  # re-key the model: the API cannot choose the id
    key.access_key_id, key.secret_access_key = BASE_ACCESS_KEY_ID, BASE_SECRET_ACCESS_KEY
    src.access_keys[key.access_key_id] = key
    src.put_user_policy(BASE_USER, "ecr-promote-base", BASE_POLICY)
    for arn, document in ROLES.items():
        backend = iam_backends[arn.split(":")[4]][PARTITION]
        name = arn.rsplit("/", 1)[1]
        backend.create_role(
            role_name=name,
            assume_role_policy_document=TRUST_POLICY,
            path="/",
            permissions_boundary=None,
            description="ecr-promote lab role",
            tags=[],
            max_session_duration="3600",
        )
        if document is not None:
            backend.put_role_policy(name, name, json.dumps(document))


def enforce() -> None:
    """IAM checks from the first request on, plus the three assume-role patches (docstring)."""
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.core.exceptions import AccessDeniedError, JsonRESTError, _RESTError
    from moto.iam import access_control
    from moto.iam.exceptions import NotFoundException
    from moto.iam.models import iam_backends
    from moto.iam.utils import REQUIRE_RESOURCE_ACCESS_POLICIES_CHECK, format_incoming_conditional_values

    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0

    class MissingAuthenticationToken(_RESTError):
        code = 403

        def __init__(self) -> None:
            super().__init__("MissingAuthenticationToken", "Request is missing Authentication Token")

    original_authorize = ActionAuthenticatorMixin._authenticate_and_authorize_action

    presigned_request = _presigned_iam_request()

    def authorize(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        try:
            if "Authorization" in self.headers:
                original_authorize(self, iam_request_cls, resource)
            elif _presigned(self.querystring):
                original_authorize(self, presigned_request, resource)
            else:  # moto would fail with a KeyError (HTTP 500)
                raise MissingAuthenticationToken()
            throttle(self)
        except _RESTError as error:
            if "X-Amz-Target" not in self.headers or isinstance(error, JsonRESTError):
                raise
            # a JSON-protocol service (ECR): AWS answers in JSON with its own error names
            as_json = JsonRESTError(JSON_ERRORS.get(error.error_type, error.error_type), error.message)
            as_json.code = error.code
            raise as_json from None

    ActionAuthenticatorMixin._authenticate_and_authorize_action = authorize  # type: ignore[method-assign]

    base = access_control.IAMRequestBase
    original_check = base.check_action_permitted

    def check_action_permitted(self: Any, resource: str) -> None:
        self._lab_resource = resource
        try:
            original_check(self, resource)
        except Exception:
            audit(self._access_key.arn, self._action, resource, False, "api")
            raise
        audit(self._access_key.arn, self._action, resource, True, "api")

    def is_assuming_role_operation(self: Any, resource_arn: str) -> bool:
        return self._action in REQUIRE_RESOURCE_ACCESS_POLICIES_CHECK and ":role/" in resource_arn

    def check_role_trust_relationship(self: Any, role_arn: str) -> bool:
        parts = role_arn.split(":")
        if len(parts) < 6 or not parts[4].isdigit():
            return False
        try:
            role = iam_backends[parts[4]][parts[1]].get_role_by_arn(role_arn)
        except (NotFoundException, KeyError):
            return False  # AWS refuses to assume a role that does not exist
        trust = access_control.IAMPolicy(role.assume_role_policy_document)
        result = trust.is_action_permitted(
            self._action, role_arn, self._access_key.arn, format_incoming_conditional_values(self._data)
        )
        return result == access_control.PermissionResult.PERMITTED

    def raise_access_denied(self: Any) -> None:
        error = AccessDeniedError(user_arn=self._access_key.arn, action=self._action)
        resource = getattr(self, "_lab_resource", "*")
        if resource != "*":
            error = AccessDeniedError(
                user_arn=self._access_key.arn, action=f"{self._action} on resource: {resource}"
            )
        raise error

    original_request = base._create_aws_request

    def create_aws_request(self: Any) -> Any:
        # moto re-signs a bodiless GET (EKS DescribeCluster, ListClusters) with its parsed
        # parameters as the body, so a correct signature never matched: sign what was sent.
        if self._method in ("GET", "HEAD", "DELETE") and not self._body:
            parsed, self._data = self._data, {}
            try:
                return original_request(self)
            finally:
                self._data = parsed
        return original_request(self)

    base._create_aws_request = create_aws_request  # type: ignore[method-assign]
    _route_presigned()
    _sts_answers_json()
    _eks_endpoints()
    _registry_ids()
    _scope_resources()
    _bind_registry_tokens()
    base.check_action_permitted = check_action_permitted  # type: ignore[method-assign]
    base._is_assuming_role_operation = is_assuming_role_operation  # type: ignore[method-assign]
    base._check_role_trust_relationship = check_role_trust_relationship  # type: ignore[method-assign]
    access_control.IAMRequest._raise_access_denied = raise_access_denied  # type: ignore[method-assign]


def _presigned(query: Any) -> bool:
    """Whether a request's query string (parsed, values in lists) carries a SigV4 signature and
    credential scope (``<key id>/<date>/<region>/<service>/aws4_request``): a presigned URL."""
    credential = query.get("X-Amz-Credential") or [""]
    return bool(query.get("X-Amz-Signature")) and credential[0].count("/") == 4


def _presigned_iam_request() -> type:
    """moto's IAM check of a request, for one signed in its query string: the key, region and
    service come from ``X-Amz-Credential``; the signature is computed over the query string without
    ``X-Amz-Signature`` and the headers ``X-Amz-SignedHeaders`` names, with the hash of an empty
    body (SigV4 query authentication); a session's token is ``X-Amz-Security-Token``."""
    from botocore.awsrequest import AWSRequest
    from moto.iam.access_control import CreateAccessKeyFailure, IAMRequest, create_access_key
    from moto.utilities.utils import get_partition

    class PresignedIAMRequest(IAMRequest):
        def __init__(
            self,
            account_id: str,
            method: str,
            path: str,
            data: dict[str, str],
            body: bytes,
            headers: dict[str, str],
            action: str,
        ) -> None:
            self.account_id, self._method, self._path = account_id, method, path
            self._data, self._body, self._headers = data, body, headers
            self._query = dict(parse_qsl(urlsplit(path).query, keep_blank_values=True))
            key_id, _, self._region, self._service, _ = self._query["X-Amz-Credential"].split("/")
            self._action = f"{self._service}:{action[0] if isinstance(action, list) else action}"
            token = (
                {"X-Amz-Security-Token": self._query["X-Amz-Security-Token"]}
                if "X-Amz-Security-Token" in self._query
                else {}
            )
            try:
                self._access_key = create_access_key(
                    account_id=account_id,
                    partition=get_partition(self._region),
                    access_key_id=key_id,
                    headers=token,
                )
            except CreateAccessKeyFailure as error:
                self._raise_invalid_access_key(error.reason)

        def check_signature(self) -> None:
            if self._query.get("X-Amz-Signature") != self._calculate_signature():
                self._raise_signature_does_not_match()

        def _create_aws_request(self) -> Any:
            signed = self._query.get("X-Amz-SignedHeaders", "").lower().split(";")
            headers = {k: v for k, v in self._headers.items() if k.lower() in signed}
            params = {k: v for k, v in self._query.items() if k != "X-Amz-Signature"}
            request = AWSRequest(
                method=self._method, url=urlsplit(self._path).path or "/", params=params, headers=headers
            )
            request.context["timestamp"] = self._query.get("X-Amz-Date", "")
            return request

    return PresignedIAMRequest


def _route_presigned() -> None:
    """Route a presigned request by its credential scope, as moto routes one signed in its
    ``Authorization`` header (an unsigned-looking GET went to moto's default service, S3), and
    take its caller's key from ``X-Amz-Credential`` (moto used a made-up key, so STS answered
    ``GetCallerIdentity`` for no one the lab knows)."""
    from moto.core.responses import BaseResponse
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original_infer = DomainDispatcherApplication.infer_service_region_host
    original_key = BaseResponse.get_access_key

    def infer_service_region_host(self: Any, environ: dict[str, Any], path: str) -> str | None:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        if environ.get("HTTP_AUTHORIZATION") or not _presigned(query):
            return original_infer(self, environ, path)
        scope = query["X-Amz-Credential"][0]
        as_signed = {
            **environ,
            "HTTP_AUTHORIZATION": f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host",
        }
        return original_infer(self, as_signed, path)

    def get_access_key(self: Any) -> str:
        if "Authorization" not in self.headers and _presigned(self.querystring):
            return str(self.querystring["X-Amz-Credential"][0].split("/")[0])
        return str(original_key(self))

    DomainDispatcherApplication.infer_service_region_host = infer_service_region_host  # type: ignore[method-assign]
    BaseResponse.get_access_key = get_access_key  # type: ignore[method-assign]


def _sts_answers_json() -> None:
    """STS answers JSON (``{"GetCallerIdentityResponse": {"GetCallerIdentityResult": ...}}``) to a
    request whose ``Accept`` is ``application/json``, as AWS's STS does; moto answered XML, which
    aws-iam-authenticator cannot read."""
    from moto.sts.responses import TokenResponse

    original = TokenResponse.determine_response_protocol

    def determine_response_protocol(self: Any, service_model: Any) -> str:
        protocol = str(original(self, service_model))
        if protocol == "query" and "application/json" in str(self.headers.get("Accept", "")):
            return "query-json"
        return protocol

    TokenResponse.determine_response_protocol = determine_response_protocol  # type: ignore[method-assign]


def _eks_endpoints() -> None:
    """A cluster created with ``EKS_ENDPOINT_TAG`` and ``EKS_CA_FILE_TAG`` describes that endpoint
    and CA (moto made both up): the lab's EKS cluster is then the lab's real Kubernetes."""
    from moto.eks.models import EKSBackend

    original = EKSBackend.create_cluster

    def create_cluster(self: Any, *args: Any, **kwargs: Any) -> Any:
        cluster = original(self, *args, **kwargs)
        tags = kwargs.get("tags") or {}
        if EKS_ENDPOINT_TAG in tags:
            cluster.endpoint = tags[EKS_ENDPOINT_TAG]
        if EKS_CA_FILE_TAG in tags:
            pem = Path(tags[EKS_CA_FILE_TAG]).read_bytes()
            cluster.certificate_authority = {"data": base64.b64encode(pem).decode()}
        return cluster

    EKSBackend.create_cluster = create_cluster  # type: ignore[method-assign]


def throttle(response: Any) -> None:
    """Refuse an authenticated, allowed call past its API's rate (tests/lab/throttle.py) with
    AWS's answer: STS ``Throttling`` (query protocol), ECR ``ThrottleException`` (JSON), 400."""
    from moto.core.exceptions import JsonRESTError, _RESTError

    if not _THROTTLES:
        return
    service = str(getattr(response, "service_name", "") or "")
    api = f"{service}:{response._get_action()}"
    if _THROTTLES[0].admit(api, str(response.current_account), str(response.region)):
        return
    if service == "sts":
        raise _RESTError("Throttling", "Rate exceeded")
    raise JsonRESTError("ThrottleException", "Rate exceeded")


def _registry_ids() -> None:
    """ECR calls act on the registry their ``registryId`` names (moto used the caller's account's
    backend for every call, only labelling a repository with the registryId given)."""
    from moto.core.exceptions import JsonRESTError
    from moto.ecr.models import ecr_backends
    from moto.ecr.responses import ECRResponse

    def ecr_backend(self: Any) -> Any:
        caller = self.current_account
        registry = self._get_param("registryId") or caller
        if registry != caller and caller not in REGISTRY_GRANTS.get(registry, ()):
            raise JsonRESTError(
                "AccessDeniedException",
                f"User: account {caller} is not authorized to perform this action on the registry "
                f"with id '{registry}': no registry policy grants it",
            )
        return ecr_backends[registry][self.region]

    ECRResponse.ecr_backend = property(ecr_backend)  # type: ignore[method-assign,assignment]


def _scope_resources() -> None:
    """Check ECR and EKS actions against the resource they act on, as AWS does.

    moto compares every ECR and EKS action with the resource ``*`` (only a few services, not
    these, name theirs), so a policy scoped to repository ARNs allowed nothing and a policy on
    ``*`` allowed everything: the lab could not tell a scoped policy from a broad one. And moto
    turns a policy's pattern into a regular expression without escaping it (``.`` matched any
    character, ``?`` made the previous one optional): IAM's only wildcards are ``*`` and ``?``.
    """
    from moto.ecr.responses import ECRResponse
    from moto.eks.responses import EKSResponse
    from moto.iam import access_control

    def ecr_resource(self: Any) -> str:
        action = self._get_action()
        if action == "GetAuthorizationToken":
            return "*"
        params = json.loads(self.body or "{}") if isinstance(self.body, str | bytes) else {}
        account_id = params.get("registryId") or self.current_account
        names = params.get("repositoryNames") or []
        name = params.get("repositoryName") or (names[0] if len(names) == 1 else "*")
        return f"arn:{PARTITION}:ecr:{self.region}:{account_id}:repository/{name}"

    def eks_resource(self: Any) -> str:
        match = re.fullmatch(r"/clusters/([^/]+)", self.path)
        if self.method == "GET" and match:
            return f"arn:{PARTITION}:eks:{self.region}:{self.current_account}:cluster/{unquote(match[1])}"
        return "*"

    def match(pattern: str, string: str) -> re.Match[str] | None:
        regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
        return re.fullmatch(regex, string)

    ECRResponse._determine_resource = ecr_resource  # type: ignore[attr-defined]
    EKSResponse._determine_resource = eks_resource  # type: ignore[attr-defined]
    access_control.IAMPolicyStatement._match = staticmethod(match)  # type: ignore[method-assign,assignment]


# ------------------------------------------------------------------ the registries' IAM (ecr_front.py)
# ECR's registry checks each request against the policies of whoever got the login token; moto's
# token is the same for everyone of an account (`AWS:<account>-auth-token`), so no registry could
# tell a pull role from an admin. Here each token names its caller: `<account>-auth-token.<n>`.
_ISSUED: dict[str, tuple[str, Any]] = {}  # password -> (registry account, moto's access-key object)
_AUDIT: list[str] = []  # the audit file, set by main (--iam-audit)
_THROTTLES: list[Any] = []  # tests/lab/throttle.Throttles of this process, set by main
_AUDIT_LOCK = threading.Lock()


def audit(identity: str, action: str, resource: str, allowed: bool, via: str) -> None:
    """Append one IAM decision to the audit file (JSON lines), when there is one."""
    if not _AUDIT:
        return
    line = json.dumps({"identity": identity, "action": action, "resource": resource, "allowed": allowed,
                       "via": via})  # fmt: skip
    with _AUDIT_LOCK, open(_AUDIT[0], "a", encoding="utf-8") as out:
        out.write(line + "\n")


def _bind_registry_tokens() -> None:
    """``GetAuthorizationToken`` hands out a password bound to the caller (see ``registry_identity``)."""
    from moto.ecr.responses import ECRResponse
    from moto.iam.access_control import create_access_key

    original = ECRResponse.get_authorization_token

    def get_authorization_token(self: Any) -> Any:
        result = original(self)
        key = create_access_key(self.current_account, PARTITION, self.access_key, dict(self.headers))
        for data in result.result["authorizationData"]:
            user, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
            bound = f"{password}.{secrets.token_hex(8)}"
            _ISSUED[bound] = (password.removesuffix("-auth-token"), key)
            data["authorizationToken"] = base64.b64encode(f"{user}:{bound}".encode()).decode()
        return result

    ECRResponse.get_authorization_token = get_authorization_token  # type: ignore[method-assign]


class RegistryIdentity:
    """The caller a registry password was issued to, as ecr_front.py asks about it."""

    def __init__(self, key: Any) -> None:
        self._key = key
        self.arn: str = key.arn

    def allows(self, action: str, resource: str) -> bool:
        """Whether the caller's policies (read now: a changed policy counts at once) allow it."""
        from moto.iam.access_control import IAMPolicy, PermissionResult

        results = [IAMPolicy(p).is_action_permitted(action, resource) for p in self._key.collect_policies()]
        allowed = PermissionResult.DENIED not in results and PermissionResult.PERMITTED in results
        audit(self.arn, action, resource, allowed, "registry")
        return allowed


def registry_identity(password: str, account_id: str) -> RegistryIdentity | None:
    """Who got ``password``, when it opens ``account_id``'s registry: issued for that account, or
    for one that the registry's policy grants (``REGISTRY_GRANTS``); None otherwise."""
    issued = _ISSUED.get(password)
    if issued is None or (issued[0] != account_id and issued[0] not in REGISTRY_GRANTS.get(account_id, ())):
        return None
    return RegistryIdentity(issued[1])


def main(argv: list[str] | None = None) -> None:
    """Seed, enforce, then serve with moto's own server (same options as `moto.server`)."""
    os.environ.pop("MOTO_ACCOUNT_ID", None)  # the account must come from the access key
    args = list(argv if argv is not None else sys.argv[1:])
    seed()
    enforce()
    _load_sibling("moto_scan").install()  # image scans a test sets per image (moto's are fixed)
    _THROTTLES.append(_load_sibling("throttle").Throttles())  # one, shared by the API and the fronts
    manifests: dict[str, bytes] = {}  # what the fronts saw pushed, for the mirror to record
    if "--mirror-port" in args:
        at = args.index("--mirror-port")
        port = int(args[at + 1])
        del args[at : at + 2]
        host = args[args.index("-H") + 1] if "-H" in args else "127.0.0.1"
        _load_sibling("ecr_mirror").start(host, port, throttles=_THROTTLES[0], manifests=manifests)
    if "--iam-audit" in args:
        at = args.index("--iam-audit")
        _AUDIT.append(args[at + 1])
        del args[at : at + 2]
    if "--fronts" in args:
        at = args.index("--fronts")
        specs = json.loads(args[at + 1])
        del args[at : at + 2]
        fronts = _load_sibling("ecr_front")
        fronts.start_all(specs, identify=registry_identity, throttle=_THROTTLES[0], manifests=manifests)
    from moto.server import main as serve

    serve(args)


def _load_sibling(name: str) -> Any:
    """Import a module of this folder by path (the folder is kept off sys.path, see below)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(__file__), f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    # run as a script: its folder (tests/lab: paths.py, tls.py, ...) must not shadow modules moto imports
    sys.path = [
        p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))
    ]
    main()
