"""The copier engines: one row each (image, what it can do, how it is called), chosen from one table.

Facts behind the capabilities (see README "Engines"):
- kaniko rebuilds the image config on every push, so the destination digest never equals the
  source digest (kaniko issue 673), a multi-arch index becomes one platform, and it runs as root.
- ``skopeo copy --all --preserve-digests`` and ``crane copy`` keep the digest and every platform.
- skopeo takes separate source and destination auth files; kaniko and crane read one Docker
  ``config.json``, so they hold one credential per registry host.
- skopeo, crane and regctl copy a manifest and its blobs as they are, so they carry any OCI
  artifact (Helm charts, WASM modules, SBOMs) with its digest; kaniko does not (it would build an
  image from it), and is refused for one (airflow_ecr_promote/artifacts.py).
- ``regctl image copy --referrers --digest-tags`` keeps the digest and every platform, and also
  copies the image's OCI referrers and cosign's ``sha256-<digest>.sig/.att/.sbom`` tags: the only
  engine that carries signatures, attestations and SBOMs (see airflow_ecr_promote/signatures.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files

from airflow_ecr_promote.copylist import copies_env
from airflow_ecr_promote.promotion import Promotion
from airflow_ecr_promote.refs import PromotionInputError, show

AUTH_DIR = "/ecr-promote/auth"
KANIKO_DOCKER_DIR = "/kaniko/.docker"  # where the original design mounts the shared volume
SCRATCH_DIR = "/tmp"
NON_ROOT_UID = 65532
TERMINATION_LOG = "/dev/termination-log"
# copy.sh tries a throttled (429) or transient (5xx, dropped connection) registry call again this
# many times, waiting 1, 2, 4 ... s up to 60 s (each a random half to the whole: equal jitter),
# about 2 minutes in all on average before it gives up: skopeo writes a tag's manifests again on
# each attempt, and 6 retries (47 s) left a tag failed at twice ECR's rate in the lab
# (README "Running at scale")
COPY_RETRIES = 8
COPY_RETRY_DELAY = 1


def script(name: str) -> str:
    """An in-pod script shipped with the package; user values reach it only through env vars.

    Comment lines are dropped: the pod spec carries the code, the package carries the docs.
    The result never begins with a newline (podman's ``kube play`` rejects such strings).
    """
    text = files("airflow_ecr_promote").joinpath("scripts", name).read_text()
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class CopierCall:
    """How the copier container is started: what KPO calls ``cmds``, ``arguments``, ``env_vars``."""

    cmds: list[str] | None
    args: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class Engine:
    name: str
    default_image: str
    keeps_digest: bool
    all_platforms: bool
    runs_as_root: bool
    read_only_root: bool
    separate_auth_per_side: bool
    can_batch: bool
    auth_mount: str
    summary: str
    call: Callable[[Promotion, int], CopierCall] = field(repr=False)
    capabilities_add: tuple[str, ...] = ()
    writes_dockerfile: bool = False
    on_conflict_choices: tuple[str, ...] = ("fail", "overwrite", "skip")
    default_on_conflict: str = "fail"
    # Engines that build one platform take it as a flag; the others copy every platform.
    platform_flag: str | None = None
    # Copies cosign's digest tags and OCI referrers along with the image (with_signatures).
    copies_signatures: bool = False
    # Copies any OCI artifact (a Helm chart, a WASM module, an SBOM) as it is, with its digest;
    # an engine that rebuilds images cannot (airflow_ecr_promote/artifacts.py).
    carries_artifacts: bool = True


def _copies_env(promotion: Promotion) -> dict[str, str]:
    return copies_env(promotion)


def _kaniko_call(promotion: Promotion, parallel: int) -> CopierCall:
    return CopierCall(
        cmds=None,  # the image's entrypoint, /kaniko/executor
        args=[
            f"--dockerfile={KANIKO_DOCKER_DIR}/Dockerfile",
            f"--destination={promotion.dest}",
            f"--digest-file={TERMINATION_LOG}",
            "--push-retry=3",
            "--image-download-retry=3",
            "--verbosity=info",
        ],
        env={"DOCKER_CONFIG": KANIKO_DOCKER_DIR},
    )


def _script_call(tool: str, shell: str) -> Callable[[Promotion, int], CopierCall]:
    def call(promotion: Promotion, parallel: int) -> CopierCall:
        return CopierCall(
            cmds=[shell, "-c", script("copy.sh")],
            args=[],
            env={
                "COPY_TOOL": tool,
                **_copies_env(promotion),
                "ON_CONFLICT": promotion.on_conflict,
                "PARALLEL": str(parallel),
                "RETRIES": str(COPY_RETRIES),
                "RETRY_DELAY": str(COPY_RETRY_DELAY),
                "LOGIN_RETRIES_FILE": f"{AUTH_DIR}/login-retries",
                "SRC_AUTH": f"{AUTH_DIR}/auth-source.json",
                "DEST_AUTH": f"{AUTH_DIR}/auth-dest.json",
                "DOCKER_CONFIG": AUTH_DIR,
                "HOME": SCRATCH_DIR,
                "TMPDIR": SCRATCH_DIR,
            },
        )

    return call


ENGINES: dict[str, Engine] = {
    engine.name: engine
    for engine in (
        Engine(
            name="kaniko",
            # Upstream's last release (the project was archived in 2025). The maintained fork's
            # module (github.com/osscontainertools/kaniko) is not served by the module proxy the
            # lab builds from, so v1.24.0 is the kaniko this project runs and tests.
            default_image="gcr.io/kaniko-project/executor:v1.24.0",
            keeps_digest=False,
            all_platforms=False,
            runs_as_root=True,
            read_only_root=False,
            separate_auth_per_side=False,
            can_batch=False,
            auth_mount=KANIKO_DOCKER_DIR,
            summary="the original design: a FROM-only build; new config, new digest, one platform",
            call=_kaniko_call,
            # kaniko copies the Dockerfile into /kaniko and chowns it to the source file's owner.
            capabilities_add=("CHOWN", "DAC_OVERRIDE", "FOWNER"),
            writes_dockerfile=True,
            on_conflict_choices=("overwrite",),
            default_on_conflict="overwrite",
            platform_flag="--custom-platform",
            carries_artifacts=False,
        ),
        Engine(
            name="skopeo",
            default_image="quay.io/skopeo/stable:v1.20.0",
            keeps_digest=True,
            all_platforms=True,
            runs_as_root=False,
            read_only_root=True,
            separate_auth_per_side=True,
            can_batch=True,
            auth_mount=AUTH_DIR,
            summary="skopeo copy --all --preserve-digests: same digest, every platform",
            call=_script_call("skopeo", "sh"),
        ),
        Engine(
            name="crane",
            # The :debug variant carries busybox: the copy script needs a shell.
            default_image="gcr.io/go-containerregistry/crane/debug:v0.22.1",
            keeps_digest=True,
            all_platforms=True,
            runs_as_root=False,
            read_only_root=True,
            separate_auth_per_side=False,
            can_batch=True,
            auth_mount=AUTH_DIR,
            summary="crane copy: same digest, every platform, static binary",
            call=_script_call("crane", "/busybox/sh"),
        ),
        Engine(
            name="regctl",
            # The -alpine variant carries a shell (busybox): the copy script needs one.
            default_image="ghcr.io/regclient/regctl:v0.11.7-alpine",
            keeps_digest=True,
            all_platforms=True,
            runs_as_root=False,
            read_only_root=True,
            separate_auth_per_side=False,
            can_batch=True,
            auth_mount=AUTH_DIR,
            summary="regctl image copy: same digest, every platform, with signatures and referrers",
            call=_script_call("regctl", "sh"),
            copies_signatures=True,
        ),
    )
}

DEFAULT_ENGINE = "kaniko"
# The platform kaniko takes from a multi-arch source when none is given: the same on every node,
# whatever the node's architecture (kaniko's own default is the node's platform).
DEFAULT_PLATFORM = "linux/amd64"
_PLATFORM = re.compile(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?", re.ASCII)


def parse_platform(engine: Engine, value: object) -> str | None:
    """The platform an engine builds (``os/arch[/variant]``), or None for engines that copy all."""
    if engine.platform_flag is None:
        if value is not None:
            raise PromotionInputError(
                "platform",
                value,
                f"does not apply to engine {engine.name!r}, which copies every platform of the "
                "source and keeps its digest",
                "Expected None, or engine='kaniko', which builds one platform",
            )
        return None
    if value is None:
        return DEFAULT_PLATFORM
    if not isinstance(value, str) or not _PLATFORM.fullmatch(value):
        raise PromotionInputError(
            "platform",
            value,
            "is not an OCI platform",
            "Expected os/arch[/variant], e.g. 'linux/amd64', 'linux/arm64' or 'linux/arm/v7'",
        )
    return value


def get_engine(name: object) -> Engine:
    if not isinstance(name, str) or name not in ENGINES:
        raise PromotionInputError(
            "engine", name, "is not a known engine", f"Expected one of {', '.join(map(repr, ENGINES))}"
        )
    return ENGINES[name]


def check_supports(engine: Engine, promotion: Promotion) -> None:
    """Refuse a promotion that the engine cannot carry out as asked, naming the fixes."""
    shared = promotion.shared_hosts_with_different_roles()
    if shared and not engine.separate_auth_per_side:
        raise PromotionInputError(
            "engine",
            engine.name,
            f"reads one Docker config.json, which holds one credential per registry host, but "
            f"registry {shared[0]} is both source and destination with different roles "
            f"({show(str(promotion.source_role))} and {show(str(promotion.dest_role))})",
            "Fix: use one role that can both pull and push (pass the same ARN, or None, for "
            "source_role_arn and dest_role_arn), or engine='skopeo', which reads separate source "
            "and destination auth files",
        )
    if len(promotion.copies) > 1 and not engine.can_batch:
        raise PromotionInputError(
            "engine",
            engine.name,
            f"cannot promote {len(promotion.copies)} images in one pod: kaniko rebuilds each image's "
            "config, so it can neither compare digests nor skip what is already promoted",
            "Fix: engine='skopeo' or engine='crane' for batches, or one task per tag with "
            ".partial(...).expand(dest_image=[...])",
        )
    if promotion.on_conflict not in engine.on_conflict_choices:
        raise PromotionInputError(
            "on_conflict",
            promotion.on_conflict,
            f"is not supported by engine {engine.name!r}: it gives every push a new digest, so a "
            "destination tag can never be found 'already promoted'",
            f"Expected one of {engine.on_conflict_choices} with {engine.name}, or a "
            "digest-preserving engine ('skopeo', 'crane')",
        )
