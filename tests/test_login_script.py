"""The init container's login script, run for real: sh, the real aws CLI, a real moto_server.

moto's ECR password is deterministic (``AWS:<account>-auth-token``) and ``sts assume-role``
binds the returned keys to the role's account, so the decoded config.json proves which
account each registry's credential came from.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from airflow_ecr_promote.engines import ENGINES, script
from airflow_ecr_promote.pod import plan_pod
from airflow_ecr_promote.promotion import parse_promotion
from tests.conftest import DEST_HOST, SOURCE_HOST, aws_cli, require
from tests.test_discovery import ecr_client, put

pytestmark = pytest.mark.moto

SOURCE_ROLE = "arn:aws:iam::123456789012:role/ecr-promote-pull"
DEST_ROLE = "arn:aws:iam::210987654321:role/ecr-promote-push"


def init_env(
    engine: str,
    source_role: str | None = SOURCE_ROLE,
    dest_role: str | None = DEST_ROLE,
    source: str = f"{SOURCE_HOST}/team/app:1.0",
    dest: str = f"{DEST_HOST}/team/app:1.0",
) -> dict[str, str]:
    promotion = parse_promotion(
        source_image=source,
        dest_image=dest,
        source_role_arn=source_role,
        dest_role_arn=dest_role,
        on_conflict=ENGINES[engine].default_on_conflict,
    )
    plan = plan_pod(promotion, ENGINES[engine])
    return {env.name: env.value for env in plan.init_container.env}


def run_login(tmp_path: Path, moto_server: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cli = aws_cli()
    require(cli, "no aws CLI that honours AWS_ENDPOINT_URL: run 'make venv' (.venv-awscli)")
    auth = tmp_path / "auth"
    auth.mkdir()
    full_env = {
        "PATH": f"{Path(str(cli)).parent}:/usr/bin:/bin",
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "pod-identity-key",
        "AWS_SECRET_ACCESS_KEY": "pod-identity-secret",
        **env,
        "AUTH_DIR": str(auth),
        "HOME": str(tmp_path),
        "TERMINATION_LOG": str(tmp_path / "termination-log"),
    }
    return subprocess.run(
        ["sh", "-c", script("login.sh")], env=full_env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def source_image(moto_server: str) -> None:
    """``team/app:1.0`` in moto: the kaniko pod's login reads its source's manifest first
    (CHECK_SOURCES; tests/test_artifacts.py)."""
    client = ecr_client(moto_server)
    try:
        client.create_repository(repositoryName="team/app")
        put(client, "team/app", "1.0")
    except client.exceptions.RepositoryAlreadyExistsException:
        pass


def decode(path: Path) -> dict[str, str]:
    auths = json.loads(path.read_text())["auths"]
    return {host: base64.b64decode(entry["auth"]).decode() for host, entry in auths.items()}


def test_kaniko_login_writes_config_with_both_accounts_and_dockerfile(
    tmp_path: Path, moto_server: str, source_image: None
) -> None:
    done = run_login(tmp_path, moto_server, init_env("kaniko"))
    assert done.returncode == 0, done.stderr
    auth = tmp_path / "auth"
    assert decode(auth / "config.json") == {
        SOURCE_HOST: "AWS:123456789012-auth-token",
        DEST_HOST: "AWS:210987654321-auth-token",
    }
    assert (auth / "Dockerfile").read_text() == f"FROM {SOURCE_HOST}/team/app:1.0\n"
    assert sorted(p.name for p in auth.iterdir()) == [
        "Dockerfile",
        "auth-dest.json",
        "auth-source.json",
        "config.json",
        "login-retries",
    ], "temporary password files must be gone"
    assert (auth / "login-retries").read_text() == "0\n", "no login was tried again"
    assert oct((auth / "config.json").stat().st_mode & 0o777) == "0o444"


def test_skopeo_login_writes_one_auth_file_per_side(tmp_path: Path, moto_server: str) -> None:
    done = run_login(tmp_path, moto_server, init_env("skopeo"))
    assert done.returncode == 0, done.stderr
    auth = tmp_path / "auth"
    assert decode(auth / "auth-source.json") == {SOURCE_HOST: "AWS:123456789012-auth-token"}
    assert decode(auth / "auth-dest.json") == {DEST_HOST: "AWS:210987654321-auth-token"}
    assert not (auth / "config.json").exists()
    assert not (auth / "Dockerfile").exists()


def test_same_registry_with_two_roles_gets_two_credentials_for_skopeo(
    tmp_path: Path, moto_server: str
) -> None:
    other_role = "arn:aws:iam::210987654321:role/writer"
    env = init_env(
        "skopeo",
        source_role=SOURCE_ROLE,
        dest_role=other_role,
        source=f"{SOURCE_HOST}/team/app:1.0",
        dest=f"{SOURCE_HOST}/prod/app:1.0",
    )
    done = run_login(tmp_path, moto_server, env)
    assert done.returncode == 0, done.stderr
    auth = tmp_path / "auth"
    assert decode(auth / "auth-source.json") == {SOURCE_HOST: "AWS:123456789012-auth-token"}
    assert decode(auth / "auth-dest.json") == {SOURCE_HOST: "AWS:210987654321-auth-token"}


def test_pod_identity_is_used_when_no_role_is_given(tmp_path: Path, moto_server: str) -> None:
    done = run_login(tmp_path, moto_server, init_env("crane", source_role=None, dest_role=None))
    assert done.returncode == 0, done.stderr
    # moto's default account stands for the pod's own identity.
    assert decode(tmp_path / "auth" / "config.json") == {
        SOURCE_HOST: "AWS:123456789012-auth-token",
        DEST_HOST: "AWS:123456789012-auth-token",
    }
    assert "the pod's own identity" in done.stderr


def test_login_logs_name_the_roles_and_never_the_password(
    tmp_path: Path, moto_server: str, source_image: None
) -> None:
    done = run_login(tmp_path, moto_server, init_env("kaniko"))
    assert done.returncode == 0, done.stderr
    assert SOURCE_ROLE in done.stderr and DEST_ROLE in done.stderr
    for secret in ("auth-token", base64.b64encode(b"AWS:123456789012-auth-token").decode()):
        assert secret not in done.stdout + done.stderr


def test_unreachable_sts_fails_with_the_role_and_registry_in_the_message(tmp_path: Path) -> None:
    # two attempts, not the default ten: the message is the point, not the CLI's backoff (about
    # 60 s of waiting for a refused connection)
    done = run_login(tmp_path, "http://127.0.0.1:9", {**init_env("skopeo"), "AWS_MAX_ATTEMPTS": "2"})
    assert done.returncode == 1
    message = (tmp_path / "termination-log").read_text()
    # one CLI start assumes the role and asks for the password: a dropped connection cannot say
    # which of the two it was, and the message says so
    assert (
        f"cannot assume role {SOURCE_ROLE} or get an ECR login password for registry {SOURCE_HOST}" in message
    )
    assert f"cannot assume role {DEST_ROLE} or get an ECR login password for registry {DEST_HOST}" in message
    assert message.strip() in done.stderr
    assert not list((tmp_path / "auth").glob(".pw-*"))


def test_hostile_values_in_the_environment_are_refused_not_run(tmp_path: Path, moto_server: str) -> None:
    canary = tmp_path / "canary"
    env = init_env("kaniko")
    env["LOGINS"] = f"{SOURCE_HOST} us-west-2 $(touch {canary}) source\n"
    env["SOURCE_IMAGE"] = f"x;touch {canary}"
    done = run_login(tmp_path, moto_server, env)
    assert done.returncode == 1
    assert "refusing role value" in (tmp_path / "termination-log").read_text()
    assert not canary.exists()
    assert os.listdir(tmp_path / "auth") == []
