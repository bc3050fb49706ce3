"""Tests of the lab itself: registries, STS/ECR, images and the pod runner.

The promotion pod here is hand-written and minimal (it is not the operator's):
it proves the lab can host a real login-and-copy between the two accounts, with
the security settings the operator's pod uses (uid 65532, read-only root fs).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from .lab import Lab
from .paths import DESTINATION, SOURCE
from .procs import LabError
from .runner import play_pod

pytestmark = pytest.mark.lab
_names = itertools.count()

LOGIN = """\
set -eu
src=$(/usr/bin/aws ecr get-login-password --region {src_region})
set -- $(/usr/bin/aws sts assume-role --role-arn {role} --role-session-name lab --region {dst_region} \\
  --query 'Credentials.[AccessKeyId,SecretAccessKey,SessionToken]' --output text)
dst=$(AWS_ACCESS_KEY_ID=$1 AWS_SECRET_ACCESS_KEY=$2 AWS_SESSION_TOKEN=$3 \\
  /usr/bin/aws ecr get-login-password --region {dst_region})
a=$(printf 'AWS:%s' "$src" | base64 -w0)
b=$(printf 'AWS:%s' "$dst" | base64 -w0)
printf '{{"auths":{{"{src_host}":{{"auth":"%s"}},"{dst_host}":{{"auth":"%s"}}}}}}' "$a" "$b" \\
  > /auth/config.json
printf 'logged in; destination password %s' "$dst" > /dev/termination-log
"""

COPY = """\
set -eu
skopeo copy --all --preserve-digests --authfile /auth/config.json --digestfile "$TMPDIR/digest" \\
  docker://{src} docker://{dst}
cat "$TMPDIR/digest" > /dev/termination-log
"""


def promote_pod(
    lab: Lab,
    repo: str,
    tag: str,
    *,
    role: str = "arn:aws:iam::210987654321:role/ecr-promote-push",  # moto enforces IAM: an allowed role
    login_script: str | None = None,
) -> dict[str, Any]:
    """A minimal promotion pod: aws-cli init container writes config.json, skopeo copies."""
    login = login_script or LOGIN.format(
        src_region=SOURCE.region,
        dst_region=DESTINATION.region,
        role=role,
        src_host=SOURCE.registry_host,
        dst_host=DESTINATION.registry_host,
    )
    copy = COPY.format(
        src=f"{SOURCE.registry_host}/{repo}:{tag}", dst=f"{DESTINATION.registry_host}/{repo}:{tag}"
    )
    secured = {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    env = [{"name": "HOME", "value": "/home/lab"}, {"name": "TMPDIR", "value": "/tmp"}]
    mounts = [
        {"name": "auth", "mountPath": "/auth"},
        {"name": "home", "mountPath": "/home/lab"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"lab-promote-{next(_names)}", "labels": {"app": "ecr-promote-lab"}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": True},
            "volumes": [{"name": n, "emptyDir": {}} for n in ("auth", "home", "tmp")],
            "initContainers": [
                {
                    "name": "login",
                    "image": lab.init_image,
                    "command": ["/bin/sh", "-c", login],
                    "env": env,
                    "volumeMounts": mounts,
                    "securityContext": secured,
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                }
            ],
            "containers": [
                {
                    "name": "copy",
                    "image": lab.copier_image,
                    "command": ["/bin/sh", "-c", copy],
                    "env": env,
                    "volumeMounts": mounts,
                    "securityContext": secured,
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                }
            ],
        },
    }


def test_push_image_two_platforms(lab: Lab) -> None:
    digest = lab.push_image(SOURCE.account_id, "lab/push", "v1", seed=1)
    assert lab.digest(SOURCE.account_id, "lab/push", "v1") == digest
    assert lab.digest(SOURCE.account_id, "lab/push", digest) == digest
    assert lab.platforms(SOURCE.account_id, "lab/push", "v1") == ["linux/amd64", "linux/arm64"]
    assert lab.digest(SOURCE.account_id, "lab/push", "absent") is None
    assert lab.digest(DESTINATION.account_id, "lab/push", "v1") is None
    assert ("POST", "/v2/lab/push/blobs/uploads/") in lab.upload_requests(SOURCE.account_id)


def test_aws_cli_reaches_moto_through_real_host_names(lab: Lab) -> None:
    res = lab.aws(
        "sts", "get-caller-identity", "--region", "us-east-1", "--query", "Account", "--output", "text"
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == SOURCE.account_id
    res = lab.aws(
        "ecr",
        "get-authorization-token",
        "--region",
        DESTINATION.region,
        "--query",
        "authorizationData[0].proxyEndpoint",
        "--output",
        "text",
    )
    assert res.stdout.strip() == f"https://{SOURCE.registry_host.replace(SOURCE.region, DESTINATION.region)}"


def test_promotion_pod_preserves_digest(lab: Lab) -> None:
    from kubernetes.client import ApiClient, V1Pod

    digest = lab.push_image(SOURCE.account_id, "lab/app", "1.0", extra_mb=4, seed=2)
    lab.create_repository(DESTINATION.account_id, "lab/app")
    before = len(lab.upload_requests(DESTINATION.account_id))
    pod = promote_pod(lab, "lab/app", "1.0")
    outcome = play_pod(lab, pod, timeout=120)
    assert outcome.phase == "Succeeded", outcome
    login, copy = outcome.container("login"), outcome.container("copy")
    assert (login.exit_code, login.reason) == (0, "Completed")
    assert login.message.startswith(f"logged in; destination password {DESTINATION.password}.")
    assert (copy.exit_code, copy.reason, copy.message) == (0, "Completed", digest)
    assert lab.digest(DESTINATION.account_id, "lab/app", "1.0") == digest
    assert lab.platforms(DESTINATION.account_id, "lab/app", "1.0") == ["linux/amd64", "linux/arm64"]
    uploads = lab.upload_requests(DESTINATION.account_id)[before:]
    assert uploads
    assert all(path.startswith("/v2/lab/app/blobs/uploads") for _, path in uploads)
    assert lab.uploaded_bytes(DESTINATION.account_id) >= 4 * 1024 * 1024

    request = ApiClient()._ApiClient__deserialize(pod, V1Pod)
    status = outcome.as_v1pod(request).status
    assert status.phase == "Succeeded"
    assert status.init_container_statuses[0].state.terminated.exit_code == 0
    assert status.container_statuses[0].state.terminated.message == digest
    assert request.status is None  # a copy, the request is untouched

    again = play_pod(lab, promote_pod(lab, "lab/app", "1.0"), timeout=120)
    assert again.phase == "Succeeded"
    assert len(lab.upload_requests(DESTINATION.account_id)) == before + len(uploads)  # blobs exist: HEAD only


def test_failing_init_container_stops_the_pod(lab: Lab) -> None:
    from kubernetes.client import ApiClient, V1Pod

    lab.push_image(SOURCE.account_id, "lab/fail", "1", seed=3)
    script = "echo 'cannot assume role' >&2\nexit 4\n"
    pod = promote_pod(lab, "lab/fail", "1", login_script=script)
    outcome = play_pod(lab, pod, timeout=60)
    assert outcome.phase == "Failed"
    login, copy = outcome.container("login"), outcome.container("copy")
    assert (login.exit_code, login.reason) == (4, "Error")
    assert login.message == "cannot assume role"  # FallbackToLogsOnError: empty file -> log tail
    assert not copy.terminated
    assert copy.reason == "PodInitializing"
    assert lab.digest(DESTINATION.account_id, "lab/fail", "1") is None

    status = outcome.as_v1pod(ApiClient()._ApiClient__deserialize(pod, V1Pod)).status
    assert status.phase == "Failed"
    assert status.init_container_statuses[0].state.terminated.reason == "Error"
    assert status.container_statuses[0].state.terminated is None
    assert status.container_statuses[0].state.waiting.reason == "PodInitializing"


def test_failing_copier_reports_exit_code_and_message(lab: Lab) -> None:
    pod = promote_pod(lab, "lab/never-pushed", "1")
    outcome = play_pod(lab, pod, timeout=120)
    assert outcome.phase == "Failed"
    copy = outcome.container("copy")
    assert copy.exit_code not in (None, 0)
    assert copy.reason == "Error"
    # the source repository was never created: ECR's (and the lab's) "name unknown"
    assert "name unknown: The repository with name 'lab/never-pushed' does not exist" in copy.message


def test_registry_restart_keeps_storage(lab: Lab) -> None:
    digest = lab.push_image(DESTINATION.account_id, "lab/restart", "1", seed=4)
    lab.stop_registry(DESTINATION.account_id)
    with pytest.raises(LabError, match="skopeo inspect"):
        lab.digest(DESTINATION.account_id, "lab/restart", "1")
    lab.start_registry(DESTINATION.account_id)
    assert lab.digest(DESTINATION.account_id, "lab/restart", "1") == digest


def test_push_to_a_missing_repository_is_refused_with_ecrs_error(lab: Lab) -> None:
    res = lab.run(
        ["skopeo", "copy", "--all", "--preserve-digests", "--dest-authfile", str(lab.authfile(DESTINATION)),
         f"docker://{SOURCE.registry_host}/lab/push:v1", f"docker://{DESTINATION.registry_host}/lab/no-repository:v1",
         "--src-authfile", str(lab.authfile(SOURCE))],
        timeout=120,
    )  # fmt: skip
    assert res.returncode != 0
    assert "name unknown" in res.stderr.lower(), res.stderr
    expected = (
        "The repository with name 'lab/no-repository' does not exist in the registry with id "
        f"'{DESTINATION.account_id}'"
    )
    assert expected in res.stderr, res.stderr
    assert lab.digest(DESTINATION.account_id, "lab/no-repository", "v1") is None
    assert not [p for _, p in lab.upload_requests(DESTINATION.account_id) if "/no-repository/" in p]


def test_immutable_repository_refuses_to_move_a_tag_and_accepts_the_same_digest(lab: Lab) -> None:
    lab.create_repository(DESTINATION.account_id, "lab/immutable", immutable=True)
    first = lab.push_image(DESTINATION.account_id, "lab/immutable", "v1", seed=11)
    assert lab.push_image(DESTINATION.account_id, "lab/immutable", "v1", seed=11) == first
    lab.push_image(SOURCE.account_id, "lab/other", "v1", seed=12)
    # skopeo takes TAG_INVALID for a refused manifest type: ECR's text shows only at debug level
    res = lab.run(
        ["skopeo", "copy", "--debug", "--all", "--preserve-digests",
         "--src-authfile", str(lab.authfile(SOURCE)), "--dest-authfile", str(lab.authfile(DESTINATION)),
         f"docker://{SOURCE.registry_host}/lab/other:v1", f"docker://{DESTINATION.registry_host}/lab/immutable:v1"],
        timeout=120,
    )  # fmt: skip
    assert res.returncode != 0
    assert (
        "tag invalid: The image tag 'v1' already exists in the 'lab/immutable' repository and cannot be "
        "overwritten because the repository is immutable." in res.stderr
    ), res.stderr[-2000:]
    assert lab.digest(DESTINATION.account_id, "lab/immutable", "v1") == first
    assert lab.push_image(DESTINATION.account_id, "lab/immutable", "v2", seed=12) != first
