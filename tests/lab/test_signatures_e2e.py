"""Signatures, attestations and SBOMs travel with a promoted image, and the signature gate holds.

Everything is real: cosign and regctl built from their Go modules, keys made by
``cosign generate-key-pair``, the lab's registries, and the operator's own pod on the lab's real
Kubernetes (regctl copier, cosign gate; kaniko in the namespace enforcing Pod Security
``baseline``). The lab's registries (distribution 2.8) have no referrers API, so
cosign's tag scheme (``sha256-<hex>.sig/.att/.sbom``) is tested there; the OCI 1.1 referrers API
is tested against tests/lab/go/referrers-registry (go-containerregistry's registry, which serves it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import models as k8s

from airflow_ecr_promote.operators import EcrPromoteError
from airflow_ecr_promote.pod import INIT_CONTAINER_NAME, REPOSITORY_CONTAINER_NAME, SCRATCH_VOLUME
from airflow_ecr_promote.signatures import GATE_DIR, GATE_VOLUME, VERIFY_CONTAINER_NAME
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .cluster import Cluster
from .cosign import KeyPair, Tools
from .fixtures import BASELINE_NAMESPACE
from .lab import Lab
from .moto_iam import PUSH_CREATE_ROLE_ARN
from .operator_run import TaskRun, lab_operator, run_task
from .paths import account
from .referrers import ReferrersRegistry, referrers_registry

pytestmark = [pytest.mark.lab, pytest.mark.cluster]

SOURCE_REPO = "signed/app"


def new_dest_repository(lab: Lab, name: str, *, in_ecr: bool = True, immutable: bool = False) -> str:
    """The one place these tests choose a destination repository: a new one per test, created in the
    destination account's ECR as ECR needs (so a write the gate stops would otherwise succeed);
    `in_ecr=False` for the referrers registry, which is no ECR stand-in."""
    repo = f"promoted-{name}/app"
    if in_ecr:
        lab.create_repository(DEST_ACCOUNT, repo, immutable=immutable)
    return repo


@pytest.fixture(scope="module")
def tools(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Tools:
    return Tools(lab, tmp_path_factory.mktemp("cosign"))


@pytest.fixture(scope="module")
def key(tools: Tools) -> KeyPair:
    return tools.key_pair("release")


@pytest.fixture(scope="module")
def other_key(tools: Tools) -> KeyPair:
    return tools.key_pair("someone-else")


def promote(cluster: Cluster, source: str, dest: str, **kwargs: Any) -> TaskRun:
    """Promote with the regctl engine (signatures on by default) through the operator's pod."""
    lab = cluster.lab
    assert lab.images is not None
    kwargs.setdefault("cosign_image", lab.images.cosign)
    return run_task(cluster, task=lab_operator(lab, "regctl", source_image=source, dest_image=dest, **kwargs))


def writes(lab: Lab) -> int:
    """Requests that write to the destination registry (blob uploads, manifest and tag PUTs)."""
    return sum(1 for r in lab.requests(DEST_ACCOUNT) if r.method in ("POST", "PUT", "PATCH", "DELETE"))


def test_cosign_signature_attestation_and_sbom_travel_and_cosign_verify_succeeds_at_destination(
    lab: Lab, cluster: Cluster, tools: Tools, key: KeyPair, other_key: KeyPair
) -> None:
    digest = lab.push_image(SOURCE_ACCOUNT, SOURCE_REPO, "1.0.0", seed=910)
    source = f"{SOURCE_HOST}/{SOURCE_REPO}:1.0.0"
    tools.sign(source, key, SOURCE_ACCOUNT)  # the index and, --recursive, each platform manifest
    tools.attest(source, key, SOURCE_ACCOUNT, {"builder": "lab", "tests": "passed"})
    tools.attach_sbom(source, SOURCE_ACCOUNT)
    dest_repo = new_dest_repository(lab, "signed")
    dest = f"{DEST_HOST}/{dest_repo}:1.0.0"

    run = promote(cluster, source, dest, verify_signature_key=key.public_pem)

    assert run.error is None, "\n".join(run.log[-40:])
    inits = [c.name for c in run.pods[0].spec.init_containers]
    assert inits == ["ecr-promote-login", VERIFY_CONTAINER_NAME], "the gate ran, after the login"
    assert (run.result["status"], run.result["digest"], run.result["digest_kept"]) == ("copied", digest, True)
    platforms = _platform_digests(tools, dest)
    assert len(platforms) == 2
    hex_of = digest.removeprefix("sha256:")
    expected = {f"sha256-{hex_of}.sig", f"sha256-{hex_of}.att", f"sha256-{hex_of}.sbom"}
    expected |= {f"sha256-{p.removeprefix('sha256:')}.sig" for p in platforms}
    assert set(run.result["cosign_tags"]) == expected, "what travelled, per the return value"
    assert expected <= set(tools.tags(f"{DEST_HOST}/{dest_repo}")), "what the destination holds"
    assert run.result["referrers"] == []  # distribution 2.8: the tag scheme only

    verified = tools.verify(dest, key, DEST_ACCOUNT)
    assert verified.returncode == 0, verified.stderr
    assert f"Verification for {dest} --" in verified.stderr
    for platform in platforms:
        one = tools.verify(f"{DEST_HOST}/{dest_repo}@{platform}", key, DEST_ACCOUNT)
        assert one.returncode == 0, one.stderr
    attested = tools.verify_attestation(dest, key, DEST_ACCOUNT)
    assert attested.returncode == 0, attested.stderr
    refused = tools.verify(dest, other_key, DEST_ACCOUNT)
    assert refused.returncode != 0, "cosign verify is a real check: another key fails"


def test_signature_gate_refuses_an_unsigned_image_of_a_batch_and_nothing_is_written(
    lab: Lab, cluster: Cluster, tools: Tools, key: KeyPair
) -> None:
    lab.push_image(SOURCE_ACCOUNT, SOURCE_REPO, "2.0.0", seed=911)
    lab.push_image(SOURCE_ACCOUNT, SOURCE_REPO, "2.0.1-unsigned", seed=912)
    tools.sign(f"{SOURCE_HOST}/{SOURCE_REPO}:2.0.0", key, SOURCE_ACCOUNT)
    dest_repo = new_dest_repository(lab, "gate-unsigned")
    before = writes(lab)

    run = promote(
        cluster,
        f"{SOURCE_HOST}/{SOURCE_REPO}:2.0.0",
        f"{DEST_HOST}/{dest_repo}:2.0.0",
        tags=["2.0.0", "2.0.1-unsigned"],
        verify_signature_key=key.public_pem,
    )

    assert isinstance(run.error, EcrPromoteError), run.error
    message = str(run.error)
    assert f"refused source image {SOURCE_HOST}/{SOURCE_REPO}:2.0.1-unsigned" in message, message
    assert "no signatures found" in message, message
    copier = run.outcomes[0].containers[0]
    assert not copier.terminated, "the copier never started"
    gate = run.outcomes[0].container(VERIFY_CONTAINER_NAME)
    assert gate.applied["user"].split(":")[0] == "65532", "hardened as the other containers"
    assert (gate.applied["read_only_root"], gate.applied["effective_caps"]) == (True, [])
    assert gate.applied["no_new_privileges"] is True
    mounts = {path for path in gate.applied["read_only_mounts"] if path != "/dev/termination-log"}
    assert mounts == {GATE_DIR}, "only its own volume: not the auth volume with the push token"
    assert writes(lab) == before, "nothing was written at the destination"
    assert lab.digest(DEST_ACCOUNT, dest_repo, "2.0.0") is None, "not even the signed image"


def test_signature_gate_refuses_a_source_signed_with_another_key_and_nothing_is_written(
    lab: Lab, cluster: Cluster, tools: Tools, key: KeyPair, other_key: KeyPair
) -> None:
    lab.push_image(SOURCE_ACCOUNT, SOURCE_REPO, "3.0.0", seed=913)
    source = f"{SOURCE_HOST}/{SOURCE_REPO}:3.0.0"
    tools.sign(source, other_key, SOURCE_ACCOUNT)
    dest_repo = new_dest_repository(lab, "gate-other-key")
    before = writes(lab)

    run = promote(cluster, source, f"{DEST_HOST}/{dest_repo}:3.0.0", verify_signature_key=key.public_pem)

    assert isinstance(run.error, EcrPromoteError), run.error
    message = str(run.error)
    assert f"refused source image {source}" in message, message
    assert "no matching signatures" in message, message
    assert writes(lab) == before
    assert lab.digest(DEST_ACCOUNT, dest_repo, "3.0.0") is None


def test_a_signature_made_after_the_promotion_travels_on_a_rerun_and_a_third_run_writes_nothing(
    lab: Lab, cluster: Cluster, tools: Tools, key: KeyPair
) -> None:
    digest = lab.push_image(SOURCE_ACCOUNT, SOURCE_REPO, "5.0.0", seed=915)
    source = f"{SOURCE_HOST}/{SOURCE_REPO}:5.0.0"
    dest = f"{DEST_HOST}/{new_dest_repository(lab, 'rerun')}:5.0.0"
    first = promote(cluster, source, dest)
    assert first.error is None, "\n".join(first.log[-40:])
    assert (first.result["status"], first.result["cosign_tags"]) == ("copied", [])

    tools.sign(source, key, SOURCE_ACCOUNT)
    second = promote(cluster, source, dest)

    assert second.error is None, "\n".join(second.log[-40:])
    assert second.result["status"] == "present", "the image was there: only its signatures were copied"
    assert f"sha256-{digest.removeprefix('sha256:')}.sig" in second.result["cosign_tags"]
    verified = tools.verify(dest, key, DEST_ACCOUNT)
    assert verified.returncode == 0, verified.stderr
    before = writes(lab)
    third = promote(cluster, source, dest)
    assert third.error is None, "\n".join(third.log[-40:])
    assert third.result["cosign_tags"] == second.result["cosign_tags"]
    assert writes(lab) == before, "everything was there: nothing written"


def test_a_signature_added_later_is_refused_by_an_immutable_repository_and_the_first_still_verifies(
    lab: Lab, cluster: Cluster, tools: Tools, key: KeyPair, other_key: KeyPair
) -> None:
    lab.push_image(SOURCE_ACCOUNT, SOURCE_REPO, "5.1.0", seed=916)
    source = f"{SOURCE_HOST}/{SOURCE_REPO}:5.1.0"
    dest = f"{DEST_HOST}/{new_dest_repository(lab, 'immutable-signature', immutable=True)}:5.1.0"
    tools.sign(source, key, SOURCE_ACCOUNT)
    first = promote(cluster, source, dest)
    assert first.error is None, "\n".join(first.log[-40:])
    assert first.result["cosign_tags"], "the signature travelled with the image"

    tools.sign(source, other_key, SOURCE_ACCOUNT)  # cosign rewrites the .sig tag with both signatures
    second = promote(cluster, source, dest)

    assert isinstance(second.error, EcrPromoteError), "\n".join(second.log[-40:])
    message = str(second.error)
    assert "a signature, attestation or SBOM added at the source since cannot follow it" in message, message
    assert "ECR refused to move cosign's tag 'sha256-" in message, message
    assert "--registry-referrers-mode=oci-1-1" in message, message
    assert tools.verify(dest, key, DEST_ACCOUNT).returncode == 0, "the first signature is still there"
    assert tools.verify(dest, other_key, DEST_ACCOUNT).returncode != 0, "the second one was refused"


def _move_tag_after_the_gate(lab: Lab, repository: str, tag: str, to: str) -> Any:
    """A ``prepare`` for run_task: an init container between the gate and the copier that moves
    ``repository:tag`` to the image tagged ``to`` (skopeo, reading with the source's credentials
    from the gate's volume), as someone pushing to the source at that moment would: with their
    own credentials (here the lab's setup password), since the pull role may not write."""
    assert lab.images is not None
    script = (
        'skopeo copy --all --preserve-digests --src-authfile "$GATE/auth-source.json" '
        '--dest-creds "AWS:$WRITER_PASSWORD" docker://"$REPO:$TO" docker://"$REPO:$TAG"'
    )
    writer = account(SOURCE_ACCOUNT).password

    def prepare(pod: k8s.V1Pod) -> k8s.V1Pod:
        mover = k8s.V1Container(
            name="someone-moves-the-tag",
            image=lab.images.skopeo,
            command=["sh", "-c", script],
            env=[
                k8s.V1EnvVar(name=name, value=value)
                for name, value in {
                    "GATE": GATE_DIR,
                    "REPO": repository,
                    "TAG": tag,
                    "TO": to,
                    "WRITER_PASSWORD": writer,
                }.items()
            ],
            volume_mounts=[
                k8s.V1VolumeMount(name=GATE_VOLUME, mount_path=GATE_DIR, read_only=True),
                k8s.V1VolumeMount(name=SCRATCH_VOLUME, mount_path="/tmp"),
            ],
            # what Pod Security restricted admits, as the product's own containers have
            security_context=k8s.V1SecurityContext(
                run_as_non_root=True,
                run_as_user=65532,
                allow_privilege_escalation=False,
                capabilities=k8s.V1Capabilities(drop=["ALL"]),
                seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
            ),
        )
        names = [c.name for c in pod.spec.init_containers]
        pod.spec.init_containers.insert(names.index(VERIFY_CONTAINER_NAME) + 1, mover)
        return pod

    return prepare


def test_the_copier_promotes_the_digest_the_gate_verified_though_the_tag_moves_after_the_gate(
    lab: Lab, cluster: Cluster, tools: Tools, key: KeyPair
) -> None:
    signed = lab.push_image(SOURCE_ACCOUNT, SOURCE_REPO, "6.0.0", seed=917)
    unsigned = lab.push_image(SOURCE_ACCOUNT, SOURCE_REPO, "6.0.0-unsigned", seed=918)
    source = f"{SOURCE_HOST}/{SOURCE_REPO}:6.0.0"
    tools.sign(source, key, SOURCE_ACCOUNT)
    dest_repo = new_dest_repository(lab, "moved-tag")
    dest = f"{DEST_HOST}/{dest_repo}:6.0.0"
    assert lab.images is not None
    task = lab_operator(
        lab, "regctl", source_image=source, dest_image=dest, verify_signature_key=key.public_pem,
        cosign_image=lab.images.cosign,
    )  # fmt: skip
    mover = _move_tag_after_the_gate(lab, f"{SOURCE_HOST}/{SOURCE_REPO}", "6.0.0", "6.0.0-unsigned")

    run = run_task(cluster, task=task, prepare=mover)

    assert run.error is None, "\n".join(run.log[-40:])
    assert run.outcomes[0].container("someone-moves-the-tag").exit_code == 0
    assert lab.digest(SOURCE_ACCOUNT, SOURCE_REPO, "6.0.0") == unsigned, "the tag did move after the gate"
    assert lab.digest(DEST_ACCOUNT, dest_repo, "6.0.0") == signed, "the verified digest was promoted"
    assert (run.result["status"], run.result["digest"], run.result["source_digest"]) == (
        "copied",
        signed,
        signed,
    )
    assert run.result["source_image"] == source, "the return value shows the source as written"
    assert tools.verify(dest, key, DEST_ACCOUNT).returncode == 0, "and its signature came along"


def test_kaniko_builds_from_the_digest_the_gate_verified_though_the_tag_moves_after_the_gate(
    lab: Lab, cluster: Cluster, tools: Tools, key: KeyPair
) -> None:
    import json

    signed = lab.push_image(SOURCE_ACCOUNT, SOURCE_REPO, "6.1.0", seed=922)
    lab.push_image(SOURCE_ACCOUNT, SOURCE_REPO, "6.1.0-unsigned", seed=923)
    source = f"{SOURCE_HOST}/{SOURCE_REPO}:6.1.0"
    tools.sign(source, key, SOURCE_ACCOUNT)
    dest_repo = new_dest_repository(lab, "kaniko-moved-tag")
    assert lab.images is not None
    task = lab_operator(
        lab, "kaniko", source_image=source, dest_image=f"{DEST_HOST}/{dest_repo}:6.1.0",
        verify_signature_key=key.public_pem, cosign_image=lab.images.cosign, namespace=BASELINE_NAMESPACE,
    )  # fmt: skip
    mover = _move_tag_after_the_gate(lab, f"{SOURCE_HOST}/{SOURCE_REPO}", "6.1.0", "6.1.0-unsigned")

    run = run_task(cluster, task=task, prepare=mover)

    assert run.error is None, "\n".join(run.log[-40:])
    assert run.result["source_image"] == source
    index = json.loads(lab.inspect_raw(SOURCE_ACCOUNT, SOURCE_REPO, signed) or b"{}")
    amd64 = next(m["digest"] for m in index["manifests"] if m["platform"]["architecture"] == "amd64")
    layers = [
        layer["digest"]
        for layer in json.loads(lab.inspect_raw(SOURCE_ACCOUNT, SOURCE_REPO, amd64) or b"{}")["layers"]
    ]
    built = json.loads(lab.inspect_raw(DEST_ACCOUNT, dest_repo, "6.1.0") or b"{}")
    assert [layer["digest"] for layer in built["layers"]] == layers, "built FROM the verified digest"


def test_a_refused_promotion_creates_no_repository_and_an_accepted_one_creates_it_after_the_gate(
    lab: Lab, cluster: Cluster, tools: Tools, key: KeyPair
) -> None:
    from botocore.exceptions import ClientError

    lab.push_image(SOURCE_ACCOUNT, SOURCE_REPO, "7.0.0-unsigned", seed=919)
    lab.push_image(SOURCE_ACCOUNT, SOURCE_REPO, "7.0.0", seed=920)
    tools.sign(f"{SOURCE_HOST}/{SOURCE_REPO}:7.0.0", key, SOURCE_ACCOUNT)
    dest_repo = new_dest_repository(lab, "gated-new-repository", in_ecr=False)
    ecr = lab.ecr_client(DEST_ACCOUNT)

    def exists() -> bool:
        try:
            ecr.describe_repositories(repositoryNames=[dest_repo])
        except ClientError as error:
            if error.response["Error"]["Code"] != "RepositoryNotFoundException":
                raise
            return False
        return True

    before = writes(lab)
    refused = promote(
        cluster,
        f"{SOURCE_HOST}/{SOURCE_REPO}:7.0.0-unsigned",
        f"{DEST_HOST}/{dest_repo}:7.0.0",
        verify_signature_key=key.public_pem,
        create_repository=True,
        dest_role_arn=PUSH_CREATE_ROLE_ARN,  # a role that may create it
    )

    assert isinstance(refused.error, EcrPromoteError), refused.error
    assert "the signature gate refused" in str(refused.error), str(refused.error)
    assert not exists(), "a refused promotion writes nothing, repositories included"
    assert writes(lab) == before
    assert not refused.outcomes[0].container(REPOSITORY_CONTAINER_NAME).terminated, "never started"
    # KPO waited for it to start, with no end, until the test's timeout (911 s in a CI run)
    ended = f"Init container {REPOSITORY_CONTAINER_NAME} did not start: the pod ended before it."
    assert any(ended in line for line in refused.log), refused.log[-20:]

    accepted = promote(
        cluster,
        f"{SOURCE_HOST}/{SOURCE_REPO}:7.0.0",
        f"{DEST_HOST}/{dest_repo}:7.0.0",
        verify_signature_key=key.public_pem,
        create_repository=True,
        dest_role_arn=PUSH_CREATE_ROLE_ARN,  # a role that may create it
    )

    assert accepted.error is None, "\n".join(accepted.log[-40:])
    inits = [c.name for c in accepted.pods[0].spec.init_containers]
    assert inits == [INIT_CONTAINER_NAME, VERIFY_CONTAINER_NAME, REPOSITORY_CONTAINER_NAME]
    assert exists() and accepted.result["status"] == "copied"


@pytest.fixture(scope="module")
def referrers_lab(lab: Lab) -> Iterator[ReferrersRegistry]:
    with referrers_registry(lab) as registry:
        yield registry


def test_oci_referrers_travel_through_the_referrers_api(
    lab: Lab, cluster: Cluster, tools: Tools, key: KeyPair, referrers_lab: ReferrersRegistry
) -> None:
    host = referrers_lab.host
    digest = lab.push_image(SOURCE_ACCOUNT, SOURCE_REPO, "4.0.0", seed=914)
    source = f"{host}/team/app:4.0.0"
    tools.copy(f"{SOURCE_HOST}/{SOURCE_REPO}:4.0.0", source)
    tools.sign(source, key, None, referrers=True)  # an OCI 1.1 referrer, not a .sig tag
    tools.put_sbom_referrer(source)
    platform = _platform_digests(tools, source)[0]
    tools.put_sbom_referrer(f"{host}/team/app@{platform}")  # a referrer of one platform manifest
    at_source = sorted(tools.referrers(source))
    on_platform = tools.referrers(f"{host}/team/app@{platform}")
    assert len(at_source) == 2 and len(on_platform) == 1
    dest = f"{host}/{new_dest_repository(lab, 'referrers', in_ecr=False)}:4.0.0"

    # one registry host for both sides: one login, with the pod's own identity
    run = promote(cluster, source, dest, source_role_arn=None, dest_role_arn=None)

    assert run.error is None, "\n".join(run.log[-40:])
    assert run.result["digest"] == digest
    assert sorted(run.result["referrers"]) == sorted(at_source + on_platform), "per the return value"
    assert sorted(tools.referrers(dest)) == at_source, "what the destination serves"
    dest_repo = dest.split("/", 1)[1].rsplit(":", 1)[0]
    assert tools.referrers(f"{host}/{dest_repo}@{platform}") == on_platform, "the platform's referrer too"
    asked = [path for method, path in referrers_lab.requests() if method == "GET"]
    assert f"/v2/{dest_repo}/referrers/{digest}" in asked, "regctl used the referrers API"
    verified = tools.verify(dest, key, None, oci11=True)
    assert verified.returncode == 0, verified.stderr


def test_an_oci11_referrer_signature_passes_the_gate(
    lab: Lab, cluster: Cluster, tools: Tools, key: KeyPair, referrers_lab: ReferrersRegistry
) -> None:
    """What repository.py recommends for immutable repositories: cosign sign
    --registry-referrers-mode=oci-1-1, a signature stored as an OCI 1.1 referrer (no .sig tag)."""
    host = referrers_lab.host
    digest = lab.push_image(SOURCE_ACCOUNT, SOURCE_REPO, "8.0.0", seed=921)
    source = f"{host}/team/referrer-signed:8.0.0"
    tools.copy(f"{SOURCE_HOST}/{SOURCE_REPO}:8.0.0", source)
    tools.sign(source, key, None, referrers=True)
    assert tools.verify(source, key, None).returncode != 0, "without --experimental-oci11 cosign sees none"
    dest = f"{host}/{new_dest_repository(lab, 'referrer-gate', in_ecr=False)}:8.0.0"

    run = promote(
        cluster, source, dest, source_role_arn=None, dest_role_arn=None, verify_signature_key=key.public_pem
    )

    assert run.error is None, "\n".join(run.log[-40:])
    assert run.outcomes[0].container(VERIFY_CONTAINER_NAME).exit_code == 0
    assert (run.result["status"], run.result["digest"]) == ("copied", digest)
    assert tools.verify(dest, key, None, oci11=True).returncode == 0


def _platform_digests(tools: Tools, image: str) -> list[str]:
    listed = tools.regctl(
        "manifest", "get", image, "--format", "{{range .GetManifestList}}{{println .Digest}}{{end}}"
    )
    assert listed.returncode == 0, listed.stderr
    return listed.stdout.split()
