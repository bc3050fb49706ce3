"""moto with IAM enforced, as the lab's STS + ECR API: the entry point and the identities it seeds.

Run as a script (`python tests/lab/moto_iam.py -H HOST -p PORT -c CERT -k KEY`, the same
options as `python -m moto.server`). Before serving, it writes straight into moto's IAM
backends what a real pair of accounts would hold, then turns on moto's IAM enforcement from
the very first request (`INITIAL_NO_AUTH_ACTION_COUNT=0`):

- account 123456789012: IAM user `ecr-promote-pod`, the pod's base identity (IRSA / Pod
  Identity stand-in), with the fixed access key `BASE_ACCESS_KEY_ID` / `BASE_SECRET_ACCESS_KEY`
  (moto's API cannot choose a key id, so the key is rewritten in the model). Its inline policy
  allows `sts:AssumeRole` ONLY on the roles below, plus `ecr:GetAuthorizationToken` (the
  pod-identity path: login with the base identity, no role);
- role `arn:aws:iam::123456789012:role/ecr-promote-pull` (source account): pull actions;
- role `arn:aws:iam::210987654321:role/ecr-promote-push` (destination account): pull + push,
  without `ecr:CreateRepository` (the README's push policy without `create_repository`);
- role `arn:aws:iam::210987654321:role/ecr-promote-push-create`: the same plus
  `ecr:CreateRepository` (the README's policy for `create_repository`).
  They trust exactly the user's ARN and allow `ecr:GetAuthorizationToken`.
- role `arn:aws:iam::345678901234:role/ecr-promote-push-create` (a third, "tools" account): the
  same actions; the destination's registry policy grants that account (`REGISTRY_GRANTS`), so an
  ECR call of it naming the destination's `registryId` acts on the destination's registry, and the
  destination's registry accepts its login (tests/lab/ecr_front.py), as in AWS;
- role `ecr-promote-lab-admin` in each account (`ecr:*`): the lab's own setup, e.g. creating the
  repositories a test pushes to (`Lab.create_repository`), never a promotion's identity.
- role `ecr-promote-airflow` (source account, trusting the user too): the identity of an Airflow
  outside the cluster (MWAA's execution role), allowed only `eks:DescribeCluster`; role
  `ecr-promote-eks-admin` may also create EKS clusters, for tests to set one up.

What is enforced (moto's access control, 5.x): every STS/ECR request must be SigV4-signed
with a known key (an unknown key id -> `InvalidClientTokenId`, a wrong secret ->
`SignatureDoesNotMatch`, an unsigned request -> `MissingAuthenticationToken`, all 403; ECR
answers in JSON as AWS does: `UnrecognizedClientException`, `InvalidSignatureException`,
`MissingAuthenticationTokenException`, `AccessDeniedException`);
the caller's policies must allow the action (`AccessDenied` otherwise); `sts:AssumeRole` is
matched against the role ARN (the only Resource moto compares: ECR actions are checked
against `*`, so the role policies name `*`); keys handed out by assume-role act with the
role's policies, in the role's account. Four small patches, applied only in this process,
bring the assume-role check closer to AWS: the role's trust policy is read from the ROLE's
account (moto only looks in the caller's, so cross-account trust was never checked), a role
that does not exist is refused, and the AccessDenied message names the role
("... is not authorized to perform: sts:AssumeRole on resource: <role ARN>"); and a bodiless
GET (EKS DescribeCluster) is signature-checked as sent (moto signed its parsed parameters as a body).
An ECR request naming another account's `registryId` acts on that account's registry when its
registry policy grants the caller's account (`REGISTRY_GRANTS`), and is refused otherwise (moto
kept every repository in the caller's own account, whatever the registryId).
Not enforced: other resource policies, permission boundaries, conditions other than moto's trust
policy ones; `/moto-api/` stays open (the lab reads `/moto-api/data.json`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

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

PULL_ACTIONS = [
    "ecr:GetAuthorizationToken",
    "ecr:BatchCheckLayerAvailability",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchGetImage",
    "ecr:DescribeImages",
    "ecr:DescribeRepositories",
    "ecr:ListImages",
]
PUSH_ACTIONS = [
    *PULL_ACTIONS,
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
]
# the push role of a promotion with create_repository (README: "IAM policies")
PUSH_CREATE_ACTIONS = [*PUSH_ACTIONS, "ecr:CreateRepository"]
PUSH_CREATE_ROLE_ARN = f"arn:aws:iam::{DEST_ACCOUNT}:role/ecr-promote-push-create"
# a third account (e.g. a CI/tools account) whose push role the destination's registry policy lets
# push and create repositories: an ECR call naming the destination's registryId acts there
TOOLS_ACCOUNT = "345678901234"
TOOLS_PUSH_CREATE_ROLE_ARN = f"arn:aws:iam::{TOOLS_ACCOUNT}:role/ecr-promote-push-create"
REGISTRY_GRANTS = {DEST_ACCOUNT: (TOOLS_ACCOUNT,)}  # registry account -> accounts its policy allows
# the lab's own setup (creating repositories before a test) in each account, never a pod's identity
LAB_ADMIN_ROLE_ARNS = {
    a: f"arn:aws:iam::{a}:role/ecr-promote-lab-admin" for a in (SOURCE_ACCOUNT, DEST_ACCOUNT)
}


def _doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


BASE_POLICY = _doc(
    {"Sid": "AssumeThePromotionRoles", "Effect": "Allow", "Action": "sts:AssumeRole",
     "Resource": [PULL_ROLE_ARN, PUSH_ROLE_ARN, PUSH_CREATE_ROLE_ARN, TOOLS_PUSH_CREATE_ROLE_ARN,
                  AIRFLOW_ROLE_ARN, EKS_ADMIN_ROLE_ARN, *LAB_ADMIN_ROLE_ARNS.values()]},
    {"Sid": "PodIdentityLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
)  # fmt: skip
TRUST_POLICY = _doc({"Effect": "Allow", "Principal": {"AWS": BASE_USER_ARN}, "Action": "sts:AssumeRole"})
ROLES = {  # role ARN -> actions its inline policy allows (on "*": moto compares ECR actions to "*")
    PULL_ROLE_ARN: PULL_ACTIONS,
    PUSH_ROLE_ARN: PUSH_ACTIONS,
    PUSH_CREATE_ROLE_ARN: PUSH_CREATE_ACTIONS,
    TOOLS_PUSH_CREATE_ROLE_ARN: PUSH_CREATE_ACTIONS,
    **{arn: ["ecr:*"] for arn in LAB_ADMIN_ROLE_ARNS.values()},
    AIRFLOW_ROLE_ARN: ["eks:DescribeCluster"],
    EKS_ADMIN_ROLE_ARN: ["eks:CreateCluster", "eks:DescribeCluster", "eks:ListClusters"],
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
    for arn, actions in ROLES.items():
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
        backend.put_role_policy(name, name, _doc({"Effect": "Allow", "Action": actions, "Resource": "*"}))


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

    def authorize(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        try:
            if "Authorization" not in self.headers:  # moto would fail with a KeyError (HTTP 500)
                raise MissingAuthenticationToken()
            original_authorize(self, iam_request_cls, resource)
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
        original_check(self, resource)

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
    _registry_ids()
    base.check_action_permitted = check_action_permitted  # type: ignore[method-assign]
    base._is_assuming_role_operation = is_assuming_role_operation  # type: ignore[method-assign]
    base._check_role_trust_relationship = check_role_trust_relationship  # type: ignore[method-assign]
    access_control.IAMRequest._raise_access_denied = raise_access_denied  # type: ignore[method-assign]


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


def main(argv: list[str] | None = None) -> None:
    """Seed, enforce, then serve with moto's own server (same options as `moto.server`)."""
    os.environ.pop("MOTO_ACCOUNT_ID", None)  # the account must come from the access key
    args = list(argv if argv is not None else sys.argv[1:])
    seed()
    enforce()
    if "--mirror-port" in args:
        at = args.index("--mirror-port")
        port = int(args[at + 1])
        del args[at : at + 2]
        host = args[args.index("-H") + 1] if "-H" in args else "127.0.0.1"
        _load_sibling("ecr_mirror").start(host, port)
    if "--fronts" in args:
        at = args.index("--fronts")
        specs = json.loads(args[at + 1])
        del args[at : at + 2]
        _load_sibling("ecr_front").start_all(specs)
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
