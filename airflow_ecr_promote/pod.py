"""Promotion -> the pieces of the promotion pod (pure: no Kubernetes API, no Airflow).

The operator puts these pieces into KubernetesPodOperator's fields before KPO builds the pod,
and the ``airflow-ecr-promote render`` command goes through the operator, so both produce the
same pod from the same plan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kubernetes.client import models as k8s

from airflow_ecr_promote.artifacts import artifact_engines, check_sources_env, fix_advice
from airflow_ecr_promote.engines import (
    AUTH_DIR,
    ENGINES,
    NON_ROOT_UID,
    SCRATCH_DIR,
    Engine,
    check_supports,
    parse_platform,
    script,
)
from airflow_ecr_promote.promotion import Promotion
from airflow_ecr_promote.repository import RepositorySettings, create_repositories_env
from airflow_ecr_promote.signatures import (
    COSIGN_IMAGE,
    GATE_DIR,
    GATE_VOLUME,
    PINNED_DOCKERFILE,
    PINNED_FILE,
    gate_volume,
    parse_public_key,
    parse_with_signatures,
    verify_container,
)

DEFAULT_INIT_IMAGE = "public.ecr.aws/aws-cli/aws-cli:2.27.50"
INIT_CONTAINER_NAME = "ecr-promote-login"
REPOSITORY_CONTAINER_NAME = "ecr-promote-repository"
AUTH_VOLUME = "ecr-promote-auth"
SCRATCH_VOLUME = "ecr-promote-scratch"
OWN_VOLUMES = (AUTH_VOLUME, SCRATCH_VOLUME, GATE_VOLUME)
AUTH_VOLUME_SIZE = "16Mi"
SCRATCH_VOLUME_SIZE = "2Gi"
# Label and annotation keys live under a DNS name of the project's own (the GitHub Pages host of
# the airflow-ecr-promote organisation), not under a domain another project owns.
LABEL_PREFIX = "airflow-ecr-promote.github.io"

# The AWS CLI's retries in the pod (login and repository containers): standard mode backs off
# exponentially with jitter on throttling (Throttling, ThrottlingException, 429) and 5xx answers,
# up to AWS_MAX_ATTEMPTS calls in all; login.sh also retries ECR's ThrottleException, which the
# CLI does not count as throttling (README "Running at scale").
AWS_RETRY_ENV = {"AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "10"}

_LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]+")
_SESSION_NAME = re.compile(r"[^A-Za-z0-9_+=,.@-]+")


@dataclass(frozen=True)
class PodPlan:
    """Everything the promotion adds to a pod; the copier fields map onto KPO's own fields."""

    init_container: k8s.V1Container
    image: str
    cmds: list[str] | None
    args: list[str]
    env: list[k8s.V1EnvVar]
    volume_mounts: list[k8s.V1VolumeMount]
    volumes: list[k8s.V1Volume]
    container_security_context: k8s.V1SecurityContext
    pod_security_context: k8s.V1PodSecurityContext
    resources: k8s.V1ResourceRequirements
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    # the signature gate (cosign verify), run after the login container and before the copier
    gate_container: k8s.V1Container | None = None
    # create_repository (scripts/repository.sh), run after the gate: a refused promotion writes nothing
    repository_container: k8s.V1Container | None = None

    @property
    def init_containers(self) -> list[k8s.V1Container]:
        """The promotion's init containers, in the order they run: login, gate, repository."""
        return [
            c for c in (self.init_container, self.gate_container, self.repository_container) if c is not None
        ]


def label_value(text: str) -> str:
    """A Kubernetes label value (63 chars of [A-Za-z0-9._-], alphanumeric at both ends)."""
    return _LABEL_VALUE.sub(".", text)[:63].strip("._-")


def session_name(*parts: str) -> str:
    """An STS role session name ([\\w+=,.@-], 2-64 chars) that says who promoted, for CloudTrail."""
    name = _SESSION_NAME.sub("-", "-".join(p for p in parts if p))[:64].strip("-")
    return name if len(name) >= 2 else "ecr-promote"


def _container_security(engine: Engine | None) -> k8s.V1SecurityContext:
    if engine is None or not engine.runs_as_root:
        return k8s.V1SecurityContext(
            allow_privilege_escalation=False,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
            read_only_root_filesystem=engine.read_only_root if engine else True,
            run_as_non_root=True,
            run_as_user=NON_ROOT_UID,
            run_as_group=NON_ROOT_UID,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        )
    return k8s.V1SecurityContext(
        allow_privilege_escalation=False,
        capabilities=k8s.V1Capabilities(drop=["ALL"], add=list(engine.capabilities_add) or None),
        read_only_root_filesystem=engine.read_only_root,
        run_as_non_root=False,
        run_as_user=0,
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def _env(values: dict[str, str]) -> list[k8s.V1EnvVar]:
    return [k8s.V1EnvVar(name=name, value=value) for name, value in values.items()]


def _logins_env(promotion: Promotion) -> str:
    return "\n".join(
        f"{login.host} {login.region} {login.role or '-'} {','.join(login.sides)}"
        for login in promotion.logins
    )


def _resources(cpu: str, memory: str, memory_limit: str) -> k8s.V1ResourceRequirements:
    return k8s.V1ResourceRequirements(
        requests={"cpu": cpu, "memory": memory}, limits={"memory": memory_limit}
    )


def plan_pod(
    promotion: Promotion,
    engine: Engine,
    *,
    init_image: str | None = None,
    copier_image: str | None = None,
    parallel: int = 4,
    role_session_name: str = "airflow-ecr-promote",
    platform: str | None = None,
    with_signatures: bool | None = None,
    verify_signature_key: str | None = None,
    cosign_image: str | None = None,
    create_repository: RepositorySettings | None = None,
) -> PodPlan:
    """Build the promotion's pod pieces; raises PromotionInputError when the engine cannot do it."""
    check_supports(engine, promotion)
    call = engine.call(promotion, parallel)
    chosen_platform = parse_platform(engine, platform)
    copier_env = dict(call.env)
    if parse_with_signatures(engine, with_signatures):
        copier_env["WITH_SIGNATURES"] = "1"
    key = parse_public_key(verify_signature_key)
    args = list(call.args)
    if engine.platform_flag and chosen_platform:
        args.append(f"{engine.platform_flag}={chosen_platform}")
    init_env = {
        "LOGINS": _logins_env(promotion),
        "ROLE_SESSION_NAME": session_name(role_session_name),
        "WRITE_CONFIG": "0" if engine.separate_auth_per_side else "1",
        "AUTH_DIR": AUTH_DIR,
        "HOME": SCRATCH_DIR,
        "TMPDIR": SCRATCH_DIR,
        "AWS_PAGER": "",
        **AWS_RETRY_ENV,
    }
    if not engine.carries_artifacts:
        # the login container reads each source's manifest (ecr:BatchGetImage, which pulling needs
        # anyway) and refuses one that is not a container image before anything is written
        init_env["CHECK_SOURCES"] = check_sources_env(promotion)
        init_env["ENGINE"] = engine.name
        init_env["ARTIFACT_FIX"] = fix_advice(artifact_engines(ENGINES.values()))
    init_mounts = [
        k8s.V1VolumeMount(name=AUTH_VOLUME, mount_path=AUTH_DIR),
        k8s.V1VolumeMount(name=SCRATCH_VOLUME, mount_path=SCRATCH_DIR),
    ]
    mounts = [k8s.V1VolumeMount(name=AUTH_VOLUME, mount_path=engine.auth_mount, read_only=True)]
    if engine.read_only_root:
        mounts.append(k8s.V1VolumeMount(name=SCRATCH_VOLUME, mount_path=SCRATCH_DIR))
    volumes = [
        # Tokens live only in memory: a tmpfs the size of a few auth files, never the node's disk.
        k8s.V1Volume(
            name=AUTH_VOLUME,
            empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=AUTH_VOLUME_SIZE),
        ),
        k8s.V1Volume(
            name=SCRATCH_VOLUME, empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=SCRATCH_VOLUME_SIZE)
        ),
    ]
    gate = None
    if key is not None:
        # The gate's own volume: the login container writes the source's auth file to it, the gate
        # writes the digests it verified, and the copier copies those digests (read-only here).
        gate = verify_container(
            [copy.source for copy in promotion.copies],
            key,
            cosign_image or COSIGN_IMAGE,
            security_context=_container_security(None),
            resources=_resources("50m", "64Mi", "512Mi"),
        )
        volumes.append(gate_volume())
        init_env["GATE_DIR"] = GATE_DIR
        init_mounts.append(k8s.V1VolumeMount(name=GATE_VOLUME, mount_path=GATE_DIR))
        mounts.append(k8s.V1VolumeMount(name=GATE_VOLUME, mount_path=GATE_DIR, read_only=True))
        if engine.writes_dockerfile:  # kaniko builds FROM the verified digest
            args = [a for a in args if not a.startswith("--dockerfile=")] + [
                f"--dockerfile={PINNED_DOCKERFILE}"
            ]
        else:
            copier_env["PINNED_SOURCES"] = PINNED_FILE
    elif engine.writes_dockerfile:
        init_env["SOURCE_IMAGE"] = str(promotion.source)
    init_container = k8s.V1Container(
        name=INIT_CONTAINER_NAME,
        image=init_image or DEFAULT_INIT_IMAGE,
        command=["sh", "-c", script("login.sh")],
        env=_env(init_env),
        volume_mounts=init_mounts,
        resources=_resources("50m", "128Mi", "512Mi"),
        security_context=_container_security(None),
        termination_message_policy="FallbackToLogsOnError",
    )
    repository = None
    if create_repository is not None:
        # its own container, after the gate: a promotion the gate refuses creates no repository
        repository_env = {
            name: init_env[name]
            for name in ("ROLE_SESSION_NAME", "AUTH_DIR", "HOME", "TMPDIR", "AWS_PAGER", *AWS_RETRY_ENV)
        }
        repository_env.update(create_repositories_env(promotion, create_repository))
        repository = k8s.V1Container(
            name=REPOSITORY_CONTAINER_NAME,
            image=init_image or DEFAULT_INIT_IMAGE,
            command=["sh", "-c", "set -u\numask 077\n" + script("repository.sh")],
            env=_env(repository_env),
            volume_mounts=[
                k8s.V1VolumeMount(name=AUTH_VOLUME, mount_path=AUTH_DIR),
                k8s.V1VolumeMount(name=SCRATCH_VOLUME, mount_path=SCRATCH_DIR),
            ],
            resources=_resources("50m", "128Mi", "512Mi"),
            security_context=_container_security(None),
            termination_message_policy="FallbackToLogsOnError",
        )
    first = promotion.copies[0]
    labels = {
        "app.kubernetes.io/name": "airflow-ecr-promote",
        "app.kubernetes.io/component": "promotion",
        f"{LABEL_PREFIX}/engine": engine.name,
        f"{LABEL_PREFIX}/source-account": first.source.account,
        f"{LABEL_PREFIX}/dest-account": first.dest.account,
        f"{LABEL_PREFIX}/repository": label_value(first.dest.repository),
        f"{LABEL_PREFIX}/tag": label_value(first.dest.tag or "") or "none",
    }
    annotations = {
        f"{LABEL_PREFIX}/source-image": str(first.source),
        f"{LABEL_PREFIX}/dest-image": str(first.dest),
        f"{LABEL_PREFIX}/copies": str(len(promotion.copies)),
    }
    return PodPlan(
        init_container=init_container,
        image=copier_image or engine.default_image,
        cmds=call.cmds,
        args=args,
        env=_env(copier_env),
        volume_mounts=mounts,
        volumes=volumes,
        container_security_context=_container_security(engine),
        pod_security_context=k8s.V1PodSecurityContext(
            fs_group=NON_ROOT_UID,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        resources=(
            _resources("250m", "512Mi", "4Gi") if engine.runs_as_root else _resources("100m", "128Mi", "1Gi")
        ),
        labels=labels,
        annotations=annotations,
        gate_container=gate,
        repository_container=repository,
    )
