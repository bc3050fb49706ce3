"""The lab's moto enforces IAM like AWS (tests/lab/moto_iam.py).

The pod's base identity (keys baked into the lab images, `Lab.aws_env()`) may assume only the
pull role (source account) and the push role (destination account); the sessions get the
registry password of the role's own account; anything else is refused with AWS's errors.
"""

from __future__ import annotations

import base64
import json

import pytest

from .lab import Lab
from .moto_iam import (
    BASE_ACCESS_KEY_ID,
    BASE_SECRET_ACCESS_KEY,
    BASE_USER_ARN,
    PULL_ROLE_ARN,
    PUSH_ROLE_ARN,
)
from .paths import AWS_CLI, DESTINATION, SOURCE, Account
from .runner import play_pod

pytestmark = pytest.mark.lab

NOT_ALLOWED = "arn:aws:iam::123456789012:role/not-allowed"


def assume(lab: Lab, role_arn: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """`aws sts assume-role` as the base identity (or `env`): an env holding the session keys."""
    res = lab.run(
        [AWS_CLI, "sts", "assume-role", "--role-arn", role_arn, "--role-session-name", "lab-iam",
         "--region", "us-east-1", "--output", "json"],
        env=env or lab.aws_env(),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    creds = json.loads(res.stdout)["Credentials"]
    return {
        **lab.aws_env(),
        "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
        "AWS_SESSION_TOKEN": creds["SessionToken"],
    }


def aws_as(lab: Lab, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    res = lab.run([AWS_CLI, *args], env=env, timeout=60)
    return res.returncode, res.stdout.strip(), res.stderr.strip()


def test_base_identity_is_the_seeded_user(lab: Lab) -> None:
    env = lab.aws_env()
    assert env["AWS_ACCESS_KEY_ID"] == BASE_ACCESS_KEY_ID == "AKIALABECRPROMOTEPOD"
    code, arn, err = aws_as(lab, env, "sts", "get-caller-identity", "--query", "Arn", "--output", "text")
    assert code == 0, err
    assert arn == BASE_USER_ARN == "arn:aws:iam::123456789012:user/ecr-promote-pod"
    code, password, err = aws_as(lab, env, "ecr", "get-login-password", "--region", SOURCE.region)
    assert code == 0, err  # the pod-identity path: no role
    assert password.startswith(f"{SOURCE.password}."), "a password bound to its caller (moto_iam.py)"


@pytest.mark.parametrize(
    ("role_arn", "acct"),
    [(PULL_ROLE_ARN, SOURCE), (PUSH_ROLE_ARN, DESTINATION)],
    ids=["pull-role-source-account", "push-role-destination-account"],
)
def test_allowed_role_gives_its_accounts_registry_token(lab: Lab, role_arn: str, acct: Account) -> None:
    session = assume(lab, role_arn)
    code, arn, err = aws_as(lab, session, "sts", "get-caller-identity", "--query", "Arn", "--output", "text")
    assert code == 0, err
    role_name = role_arn.rsplit("/", 1)[1]
    assert arn == f"arn:aws:sts::{acct.account_id}:assumed-role/{role_name}/lab-iam"
    code, token, err = aws_as(
        lab, session, "ecr", "get-authorization-token", "--region", acct.region,
        "--query", "authorizationData[0].authorizationToken", "--output", "text",
    )  # fmt: skip
    assert code == 0, err
    user, password = base64.b64decode(token).decode().split(":", 1)
    assert (user, password.split(".")[0]) == ("AWS", f"{acct.account_id}-auth-token")
    code, again, err = aws_as(lab, session, "ecr", "get-login-password", "--region", acct.region)
    assert code == 0, err
    assert again.startswith(f"{acct.password}.") and again != password, "each token names its caller"


@pytest.mark.parametrize(
    "role_arn",
    [NOT_ALLOWED, "arn:aws:iam::210987654321:role/ecr-promote-pull", "arn:aws:iam::999999999999:role/x"],
)
def test_role_not_in_the_policy_is_refused_naming_it(lab: Lab, role_arn: str) -> None:
    res = lab.aws("sts", "assume-role", "--role-arn", role_arn, "--role-session-name", "lab-iam")
    assert res.returncode != 0
    assert "AccessDenied" in res.stderr
    assert (
        f"{BASE_USER_ARN} is not authorized to perform: sts:AssumeRole on resource: {role_arn}" in res.stderr
    )


def test_session_keys_carry_only_the_roles_policy(lab: Lab) -> None:
    session = assume(lab, PULL_ROLE_ARN)
    code, _, err = aws_as(
        lab, session, "sts", "assume-role", "--role-arn", PUSH_ROLE_ARN, "--role-session-name", "chain"
    )
    assert code != 0
    assert "AccessDenied" in err and f"on resource: {PUSH_ROLE_ARN}" in err
    code, _, err = aws_as(
        lab, session, "ecr", "delete-repository", "--repository-name", "lab/any", "--region", SOURCE.region
    )
    assert code != 0
    assert "AccessDeniedException" in err and "ecr:DeleteRepository" in err
    forged = {**session, "AWS_SESSION_TOKEN": "forged"}
    code, _, err = aws_as(lab, forged, "ecr", "get-login-password", "--region", SOURCE.region)
    assert code != 0 and "UnrecognizedClientException" in err, err


def test_unknown_wrong_or_missing_keys_are_refused(lab: Lab) -> None:
    unknown = {
        **lab.aws_env(),
        "AWS_ACCESS_KEY_ID": "AKIAUNKNOWNLABKEY000",
        "AWS_SECRET_ACCESS_KEY": "x" * 40,
    }
    code, _, err = aws_as(lab, unknown, "sts", "get-caller-identity")
    assert code != 0 and "InvalidClientTokenId" in err, err
    code, _, err = aws_as(lab, unknown, "ecr", "get-login-password", "--region", SOURCE.region)
    assert code != 0 and "UnrecognizedClientException" in err, err
    old_dummy = {**lab.aws_env(), "AWS_ACCESS_KEY_ID": "lab", "AWS_SECRET_ACCESS_KEY": "lab"}
    code, _, err = aws_as(lab, old_dummy, "sts", "assume-role", "--role-arn", PULL_ROLE_ARN,
                          "--role-session-name", "lab-iam")  # fmt: skip
    assert code != 0 and "InvalidClientTokenId" in err, err
    wrong_secret = {**lab.aws_env(), "AWS_SECRET_ACCESS_KEY": BASE_SECRET_ACCESS_KEY[::-1]}
    code, _, err = aws_as(lab, wrong_secret, "sts", "get-caller-identity")
    assert code != 0 and "SignatureDoesNotMatch" in err, err
    code, _, err = aws_as(lab, lab.aws_env(), "sts", "assume-role", "--no-sign-request",
                          "--role-arn", PULL_ROLE_ARN, "--role-session-name", "lab-iam")  # fmt: skip
    assert code != 0 and "MissingAuthenticationToken" in err, err
    code, _, err = aws_as(lab, lab.aws_env(), "ecr", "get-authorization-token", "--no-sign-request",
                          "--region", SOURCE.region)  # fmt: skip
    assert code != 0 and "MissingAuthenticationTokenException" in err, err


POD_SCRIPT = """\
set -u
who=$(/usr/bin/aws sts get-caller-identity --query Arn --output text)
if /usr/bin/aws sts assume-role --role-arn {refused} --role-session-name pod >/dev/null 2>"$TMPDIR/err"; then
  echo "refused role was assumed" > /dev/termination-log; exit 3
fi
set -e
set -- $(/usr/bin/aws sts assume-role --role-arn {push} --role-session-name pod \\
  --query 'Credentials.[AccessKeyId,SecretAccessKey,SessionToken]' --output text)
dst=$(AWS_ACCESS_KEY_ID=$1 AWS_SECRET_ACCESS_KEY=$2 AWS_SESSION_TOKEN=$3 \\
  /usr/bin/aws ecr get-login-password --region {dst_region})
printf '%s\\n%s\\n%s\\n' "$who" "$dst" "$(tr '\\n' ' ' < "$TMPDIR/err")" > /dev/termination-log
"""


def test_inside_a_lab_pod_the_baked_identity_is_enforced(lab: Lab) -> None:
    script = POD_SCRIPT.format(refused=NOT_ALLOWED, push=PUSH_ROLE_ARN, dst_region=DESTINATION.region)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "lab-iam-check", "labels": {"app": "ecr-promote-lab"}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": True},
            "volumes": [{"name": "tmp", "emptyDir": {}}],
            "containers": [
                {
                    "name": "iam",
                    "image": lab.init_image,
                    "command": ["/bin/sh", "-c", script],
                    "env": [{"name": "TMPDIR", "value": "/tmp"}, {"name": "HOME", "value": "/tmp"}],
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                }
            ],
        },
    }
    outcome = play_pod(lab, pod, timeout=120)
    iam = outcome.container("iam")
    assert (outcome.phase, iam.exit_code) == ("Succeeded", 0), iam.message
    who, password, refused = iam.message.splitlines()
    assert who == BASE_USER_ARN
    assert password.startswith(f"{DESTINATION.password}.")
    assert "AccessDenied" in refused and f"sts:AssumeRole on resource: {NOT_ALLOWED}" in refused
