"""with_signatures and the signature gate: inputs, the pod they add, and what the task reports.

Keys are real ones (made with ``cryptography``); the lab proves the rest with real cosign
(tests/lab/test_signatures_e2e.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from airflow_ecr_promote.compat import build_pod_offline
from airflow_ecr_promote.engines import ENGINES, script
from airflow_ecr_promote.operators import EcrPromoteError, EcrPromoteOperator
from airflow_ecr_promote.pod import (
    AUTH_VOLUME,
    INIT_CONTAINER_NAME,
    REPOSITORY_CONTAINER_NAME,
    SCRATCH_VOLUME,
)
from airflow_ecr_promote.refs import PromotionInputError
from airflow_ecr_promote.signatures import (
    COSIGN_IMAGE,
    GATE_DIR,
    GATE_VOLUME,
    KEY_ENV,
    PINNED_DOCKERFILE,
    PINNED_FILE,
    VERIFY_CONTAINER_NAME,
    gate_failure,
    parse_public_key,
    parse_travelled,
    parse_with_signatures,
)
from tests.airflow_context import make_context
from tests.conftest import DEST_HOST, SOURCE_HOST
from tests.kube_stand_in import finished, kubernetes_stand_in, terminated

SOURCE = f"{SOURCE_HOST}/team/app:1.0"
DEST = f"{DEST_HOST}/team/app:1.0"
DIGEST = "sha256:" + "a" * 64
PLATFORM = "sha256:" + "c" * 64


def public_pem(key: Any) -> str:
    return str(
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


EC_KEY = public_pem(ec.generate_private_key(ec.SECP256R1()))


def operator(**kwargs: Any) -> EcrPromoteOperator:
    return EcrPromoteOperator(
        task_id="promote", namespace="ns", **{"source_image": SOURCE, "dest_image": DEST, **kwargs}
    )


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ed25519.Ed25519PrivateKey.generate(),
    ],
    ids=["ecdsa-p256", "ecdsa-p384", "rsa", "ed25519"],
)
def test_public_keys_of_every_kind_cosign_makes_or_reads_are_accepted(key: Any) -> None:
    pem = public_pem(key)
    assert parse_public_key(pem) == pem.strip() + "\n"
    assert parse_public_key("\n  " + pem.replace("\n", "\r\n") + "\n\n") == pem.strip() + "\n"


def test_no_key_means_no_gate() -> None:
    assert parse_public_key(None) is None


@pytest.mark.parametrize("value", ["", " ", "\n", " \r\n\t "])
def test_an_empty_or_blank_key_is_refused_naming_the_parameter_not_taken_for_no_gate(value: str) -> None:
    with pytest.raises(PromotionInputError) as caught:
        operator(engine="regctl", verify_signature_key=value)
    message = str(caught.value)
    assert message.startswith(f"verify_signature_key={value!r}: is empty"), message
    assert "only None does" in message and "BEGIN PUBLIC KEY" in message


def test_a_key_that_renders_empty_is_refused_after_rendering_before_any_pod() -> None:
    """An emptied Airflow Variable, or "$(cat cosign.pub)" of a missing file: the gate is not off."""
    op = operator(engine="regctl", verify_signature_key="{{ params.key }}")
    context = make_context(op, conf={"key": "  \n"})
    op.render_template_fields(context)

    def never(pod: k8s.V1Pod) -> k8s.V1Pod:
        raise AssertionError("no pod may start")

    with kubernetes_stand_in(never), pytest.raises(PromotionInputError) as caught:
        op.execute(context)
    assert str(caught.value).startswith("verify_signature_key='  \\n': is empty"), str(caught.value)


@pytest.mark.parametrize("value", ["", "   "])
def test_render_refuses_an_empty_key_naming_the_flag(capsys: pytest.CaptureFixture[str], value: str) -> None:
    from airflow_ecr_promote import cli

    argv = ["render", "--source-image", SOURCE, "--dest-image", DEST, "--engine", "regctl"]
    code = cli.main([*argv, "--verify-signature-key", value])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert f"argument --verify-signature-key: verify_signature_key={value!r}: is empty" in err, err


def test_a_private_key_is_refused_and_never_shown() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(PromotionInputError) as caught:
        operator(engine="regctl", verify_signature_key=pem)
    message = str(caught.value)
    assert message.startswith("verify_signature_key=")
    assert "is a private key" in message and "cosign.pub" in message
    body = pem.splitlines()[1]
    assert body not in message


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("cosign.pub", "is not a PEM public key block"),
        ("awskms:///alias/release", "is a key reference"),
        (EC_KEY.replace("PUBLIC KEY", "CERTIFICATE"), "is not a PEM public key block"),
        (EC_KEY + EC_KEY, "is not a PEM public key block"),
        ("-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----", "is not a PEM public key block"),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "does not hold a DER"),
        ("-----BEGIN PUBLIC KEY-----\nAAA\n-----END PUBLIC KEY-----", "not base64"),
        (42, "is not a string"),
    ],
)
def test_a_bad_key_is_refused_before_any_pod_naming_the_parameter(value: object, problem: str) -> None:
    with pytest.raises(PromotionInputError) as caught:
        operator(engine="skopeo", verify_signature_key=value)
    message = str(caught.value)
    assert message.startswith("verify_signature_key=") and problem in message
    assert "BEGIN PUBLIC KEY" in message, "says what a valid key looks like"


def test_templated_key_is_checked_after_rendering_before_the_pod() -> None:
    op = operator(engine="regctl", verify_signature_key="{{ params.key }}")
    context = make_context(op, conf={"key": "not a key"})
    op.render_template_fields(context)
    with pytest.raises(PromotionInputError, match="verify_signature_key='not a key'"):
        build_pod_offline(op)


def test_with_signatures_defaults_to_what_the_engine_can_copy() -> None:
    assert parse_with_signatures(ENGINES["regctl"], None) is True
    for name in ("kaniko", "skopeo", "crane"):
        assert parse_with_signatures(ENGINES[name], None) is False
        assert parse_with_signatures(ENGINES[name], False) is False
    assert parse_with_signatures(ENGINES["regctl"], False) is False


@pytest.mark.parametrize("engine", ["kaniko", "skopeo", "crane"])
def test_with_signatures_is_refused_for_engines_that_cannot_copy_them(engine: str) -> None:
    with pytest.raises(PromotionInputError) as caught:
        operator(engine=engine, with_signatures=True)
    message = str(caught.value)
    assert message.startswith("with_signatures=True")
    assert f"engine {engine!r}" in message and "engine='regctl'" in message


def test_with_signatures_must_be_a_boolean() -> None:
    with pytest.raises(PromotionInputError, match="with_signatures='yes': is not a boolean"):
        operator(engine="regctl", with_signatures="yes")


def env_of(container: k8s.V1Container) -> dict[str, str]:
    return {e.name: e.value for e in container.env or []}


def test_regctl_copies_signatures_by_default_and_can_be_told_not_to() -> None:
    pod = build_pod_offline(operator(engine="regctl"))
    copier = pod.spec.containers[0]
    assert env_of(copier)["COPY_TOOL"] == "regctl"
    assert env_of(copier)["WITH_SIGNATURES"] == "1"
    assert copier.image == ENGINES["regctl"].default_image
    pod = build_pod_offline(operator(engine="regctl", with_signatures=False))
    assert "WITH_SIGNATURES" not in env_of(pod.spec.containers[0])


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_the_gate_runs_after_the_login_and_before_the_copier_with_any_engine(engine: str) -> None:
    pod = build_pod_offline(operator(engine=engine, verify_signature_key=EC_KEY))
    names = [c.name for c in pod.spec.init_containers]
    assert names == [INIT_CONTAINER_NAME, VERIFY_CONTAINER_NAME]
    gate = pod.spec.init_containers[1]
    assert gate.image == COSIGN_IMAGE and COSIGN_IMAGE.endswith("-dev"), "cosign with busybox"
    assert gate.command == ["/busybox/sh", "-c", script("gate.sh")]
    assert not gate.args
    env = env_of(gate)
    assert env[KEY_ENV] == EC_KEY.strip() + "\n", "the key reaches cosign only through the environment"
    assert env["VERIFY_IMAGES"] == SOURCE, "the images too"
    assert env["REGISTRY_AUTH_FILE"] == f"{GATE_DIR}/auth-source.json", "the source's credentials only"
    assert "DOCKER_CONFIG" not in env
    security = gate.security_context
    assert (security.run_as_non_root, security.read_only_root_filesystem) == (True, True)
    assert security.capabilities.drop == ["ALL"]
    assert gate.termination_message_policy == "FallbackToLogsOnError"


def test_the_gate_script_resolves_once_and_verifies_oci11_referrers_and_sig_tags() -> None:
    text = script("gate.sh")
    assert "triangulate --type digest" in text
    verify = next(line for line in text.split("\n") if " verify --key" in line)
    assert "--key env://COSIGN_PUBLIC_KEY --insecure-ignore-tlog=true --experimental-oci11" in verify


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_the_gate_mounts_only_its_own_volume_which_holds_only_the_source_credentials(engine: str) -> None:
    pod = build_pod_offline(operator(engine=engine, verify_signature_key=EC_KEY))
    login, gate = pod.spec.init_containers
    assert [(m.name, m.mount_path) for m in gate.volume_mounts] == [(GATE_VOLUME, GATE_DIR)]
    assert {AUTH_VOLUME, SCRATCH_VOLUME}.isdisjoint(m.name for m in gate.volume_mounts), (
        "not the auth volume (auth-dest.json, config.json with the push token) nor the shared scratch"
    )
    volume = next(v for v in pod.spec.volumes if v.name == GATE_VOLUME)
    assert volume.empty_dir.medium == "Memory"
    # the login container writes the source's auth file there (scripts/login.sh, GATE_DIR) and
    # nothing else: write_auths "$GATE_DIR/auth-source.json" source
    assert env_of(login)["GATE_DIR"] == GATE_DIR
    assert (GATE_VOLUME, GATE_DIR) in [(m.name, m.mount_path) for m in login.volume_mounts]
    writes = [line.split("||")[0].strip() for line in script("login.sh").split("\n") if "$GATE_DIR/" in line]
    assert [w for w in writes if w.startswith("write_auths")] == [
        'write_auths "$GATE_DIR/auth-source.json" source'
    ]


def test_without_a_gate_there_is_no_gate_volume() -> None:
    pod = build_pod_offline(operator(engine="regctl"))
    assert GATE_VOLUME not in {v.name for v in pod.spec.volumes}
    assert "GATE_DIR" not in env_of(pod.spec.init_containers[0])
    assert "PINNED_SOURCES" not in env_of(pod.spec.containers[0])


@pytest.mark.parametrize("engine", ["skopeo", "crane", "regctl"])
def test_the_copier_copies_the_digests_the_gate_pinned(engine: str) -> None:
    copier = build_pod_offline(operator(engine=engine, verify_signature_key=EC_KEY)).spec.containers[0]
    assert env_of(copier)["PINNED_SOURCES"] == PINNED_FILE
    mount = next(m for m in copier.volume_mounts if m.name == GATE_VOLUME)
    assert (mount.mount_path, mount.read_only) == (GATE_DIR, True)


def test_kaniko_builds_from_the_digest_the_gate_pinned() -> None:
    pod = build_pod_offline(operator(engine="kaniko", verify_signature_key=EC_KEY))
    copier = pod.spec.containers[0]
    dockerfiles = [a for a in copier.args if a.startswith("--dockerfile=")]
    assert dockerfiles == [f"--dockerfile={PINNED_DOCKERFILE}"]
    assert "SOURCE_IMAGE" not in env_of(pod.spec.init_containers[0]), "no FROM <tag> Dockerfile"
    assert GATE_VOLUME in {m.name for m in copier.volume_mounts}
    plain = build_pod_offline(operator(engine="kaniko"))
    assert env_of(plain.spec.init_containers[0])["SOURCE_IMAGE"] == SOURCE


def test_the_repository_is_created_after_the_gate_in_a_container_of_its_own() -> None:
    pod = build_pod_offline(operator(engine="regctl", verify_signature_key=EC_KEY, create_repository=True))
    names = [c.name for c in pod.spec.init_containers]
    assert names == [INIT_CONTAINER_NAME, VERIFY_CONTAINER_NAME, REPOSITORY_CONTAINER_NAME]
    login, _, repository = pod.spec.init_containers
    assert "create-repository" not in login.command[2], "the login container creates nothing"
    assert "CREATE_REPOSITORIES" not in env_of(login)
    assert script("repository.sh") in repository.command[2]
    assert env_of(repository)["CREATE_REPOSITORIES"]
    assert GATE_VOLUME not in {m.name for m in repository.volume_mounts}
    plain = build_pod_offline(operator(engine="regctl", create_repository=True))
    assert [c.name for c in plain.spec.init_containers] == [INIT_CONTAINER_NAME, REPOSITORY_CONTAINER_NAME]


def test_the_gate_verifies_each_source_of_a_batch_once() -> None:
    other = f"{SOURCE_HOST}/team/app:1.1"
    pinned = f"{SOURCE_HOST}/team/app:1.2@{DIGEST}"
    op = EcrPromoteOperator(
        task_id="promote",
        engine="regctl",
        promotions=[
            {"source_image": SOURCE, "dest_image": DEST},
            {"source_image": SOURCE, "dest_image": f"{DEST_HOST}/team/mirror:1.0"},
            {"source_image": other, "dest_image": f"{DEST_HOST}/team/app:1.1"},
            {"source_image": pinned, "dest_image": f"{DEST_HOST}/team/app:1.2"},
        ],
        verify_signature_key=EC_KEY,
        cosign_image="registry.example.com/mirror/cosign:v2.6.5-dev",
    )
    gate = build_pod_offline(op).spec.init_containers[1]
    assert gate.image == "registry.example.com/mirror/cosign:v2.6.5-dev"
    # as the copier lists them (repo@digest for repo:tag@digest, as skopeo needs)
    assert env_of(gate)["VERIFY_IMAGES"].split("\n") == [SOURCE, other, f"{SOURCE_HOST}/team/app@{DIGEST}"]


def test_cosign_image_option_is_the_cluster_wide_default() -> None:
    from tests.airflow_context import temporary_environ

    with temporary_environ({"AIRFLOW__ECR_PROMOTE__COSIGN_IMAGE": "mirror.example.com/cosign:v2.6.5-dev"}):
        gate = build_pod_offline(operator(engine="skopeo", verify_signature_key=EC_KEY)).spec.init_containers[
            1
        ]
    assert gate.image == "mirror.example.com/cosign:v2.6.5-dev"


def test_no_gate_container_without_a_key() -> None:
    pod = build_pod_offline(operator(engine="regctl"))
    assert [c.name for c in pod.spec.init_containers] == [INIT_CONTAINER_NAME]


IMAGES = [f"{SOURCE_HOST}/team/app:1.0", f"{SOURCE_HOST}/team/app:1.1", f"{SOURCE_HOST}/team/app:1.2"]
WARNING = "WARNING: Skipping tlog verification is an insecure practice\n"


def test_gate_failure_names_the_image_after_the_last_verified_one() -> None:
    message = "ecr-promote gate: verified 1 of 3 source images; cosign verify failed: no signatures found\n"
    assert gate_failure(message, IMAGES) == (
        f"the signature gate refused source image {IMAGES[1]}: cosign verify failed: no signatures found"
    )


def test_gate_failure_of_the_first_image() -> None:
    message = "ecr-promote gate: verified 0 of 3 source images; cosign verify failed: no matching signatures"
    assert f"refused source image {IMAGES[0]}: cosign verify failed: no matching signatures" in (
        gate_failure(message, IMAGES)
    )


def test_gate_failure_to_resolve_a_source_says_so() -> None:
    message = f"ecr-promote gate: could not resolve source image {IMAGES[2]} to a digest: MANIFEST_UNKNOWN"
    assert gate_failure(message, IMAGES) == (
        f"the signature gate could not resolve source image {IMAGES[2]} to a digest: MANIFEST_UNKNOWN"
    )


def test_gate_failure_without_its_message_does_not_guess_the_image() -> None:
    tail = WARNING + "x" * 2100 + "\nError: GET https://...: unauthorized"
    message = gate_failure(tail, IMAGES)
    assert "refused one of 3 source images" in message and message.endswith("unauthorized")
    assert f"refused source image {IMAGES[0]}:" in gate_failure(tail, IMAGES[:1])


def test_a_refused_source_fails_the_task_naming_it_with_nothing_copied() -> None:
    op = operator(engine="regctl", verify_signature_key=EC_KEY)
    reason = "ecr-promote gate: verified 0 of 1 source images; cosign verify failed: no signatures found"

    def run(pod: k8s.V1Pod) -> k8s.V1Pod:
        statuses = [terminated(INIT_CONTAINER_NAME, 0), terminated(VERIFY_CONTAINER_NAME, 1, reason)]
        waiting = k8s.V1ContainerStatus(
            name="base",
            image="",
            image_id="",
            ready=False,
            restart_count=0,
            state=k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(reason="PodInitializing")),
        )
        return finished(pod, statuses, [waiting])

    with kubernetes_stand_in(run), pytest.raises(EcrPromoteError) as caught:
        op.execute(make_context(op))
    assert str(caught.value) == (
        f"Promotion {SOURCE} -> {DEST} failed before copying anything: the signature gate refused "
        f"source image {SOURCE}: cosign verify failed: no signatures found"
    )


def test_the_return_value_lists_what_travelled() -> None:
    op = operator(engine="regctl")
    tags = f"sha256-{'a' * 64}.sig,sha256-{'a' * 64}.att,sha256-{'c' * 64}.sig"
    line = f"1 copied {DIGEST} {DIGEST} travelled tags={tags} referrers={PLATFORM}\n"

    def run(pod: k8s.V1Pod) -> k8s.V1Pod:
        return finished(pod, [terminated(INIT_CONTAINER_NAME, 0)], [terminated("base", 0, line)])

    with kubernetes_stand_in(run):
        result = op.execute(make_context(op))
    assert result["cosign_tags"] == tags.split(",")
    assert result["referrers"] == [PLATFORM]
    assert (result["status"], result["digest"], "reason" in result) == ("copied", DIGEST, False)


def test_parse_travelled_with_nothing_found() -> None:
    assert parse_travelled("travelled tags= referrers=") == {"cosign_tags": [], "referrers": []}


def test_a_gate_always_starts_the_pod_without_asking_the_ecr_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate must run; with signatures alone the precheck compares them too (tests/test_precheck.py)."""

    def asked(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the ECR API was asked")

    monkeypatch.setattr("airflow_ecr_promote.operators.find_in_place", asked)
    op = operator(engine="skopeo", dest_aws_conn_id="aws_default", verify_signature_key=EC_KEY)
    op._plan()
    assert op._all_in_place() is False


def test_gate_pod_serializes() -> None:
    pod = ApiClient().sanitize_for_serialization(build_pod_offline(operator(verify_signature_key=EC_KEY)))
    assert pod["spec"]["initContainers"][1]["env"][0] == {"name": KEY_ENV, "value": EC_KEY.strip() + "\n"}


def test_render_carries_the_gate_and_the_signatures_choice(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    import yaml

    from airflow_ecr_promote import cli

    values = tmp_path / "values.yaml"
    values.write_text(f"source_image: {SOURCE}\ndest_image: {DEST}\nengine: regctl\nwith_signatures: false\n")
    capsys.readouterr()
    code = cli.main(["render", "--values", str(values), "--verify-signature-key", EC_KEY, "--kind", "pod"])
    out, err = capsys.readouterr()
    assert code == 0, err
    spec = yaml.safe_load(out)["spec"]
    assert [c["name"] for c in spec["initContainers"]] == [INIT_CONTAINER_NAME, VERIFY_CONTAINER_NAME]
    assert "WITH_SIGNATURES" not in {e["name"] for e in spec["containers"][0]["env"]}
    code = cli.main(["render", "--values", str(values), "--with-signatures", "true", "--engine", "crane"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "argument --with-signatures: with_signatures=True: cannot be honoured by engine 'crane'" in err


def test_the_signed_example_dag_gates_on_the_release_key_from_a_variable() -> None:
    from tests.airflow_context import DagBag
    from tests.conftest import REPO

    bag = DagBag(dag_folder=str(REPO / "dags" / "examples"))
    task = bag.dags["ecr_promote_signed"].get_task("promote_signed").prepare_for_execution()
    context = make_context(task, conf={"tag": "1.4.2"})
    context["var"] = {"value": {"release_signing_public_key": EC_KEY}}  # what Airflow's accessor returns
    task.render_template_fields(context)
    pod = context["task"].build_pod_request_obj(context)
    assert pod.spec.containers[0].env  # rendered and built as KPO does
    gate = pod.spec.init_containers[1]
    assert gate.name == VERIFY_CONTAINER_NAME
    assert env_of(gate)[KEY_ENV] == EC_KEY.strip() + "\n"
    assert env_of(pod.spec.containers[0])["WITH_SIGNATURES"] == "1"
