"""Signatures travel with the image, and a promotion can require a valid one (pure parts).

Two concerns, both chosen by the operator's parameters:

- ``with_signatures``: the copier also copies, for every promoted digest (the index and each
  platform's manifest), cosign's tags (``sha256-<hex>.sig``, ``.att``, ``.sbom``) and the OCI 1.1
  referrers (signatures, SBOMs, attestations stored with a ``subject``). Only the ``regctl`` engine
  can (``regctl image copy --referrers --digest-tags``); the others are refused when it is asked.
  Default: on for regctl, because a production cluster that admits only signed images refuses an
  image promoted without its signature, and copying what is there costs a tag listing and one
  referrers call per digest; skopeo, crane and kaniko cannot copy them, so for them it is off.
- ``verify_signature_key``: a gate. An init container running cosign (``COSIGN_IMAGE``, the
  project's pinned cosign release in its ``-dev`` variant: distroless with busybox, for the gate's
  script, scripts/gate.sh) runs after the login container and before the copier and the
  repository step. It resolves every source image to its digest once (``cosign triangulate --type
  digest``), verifies the signatures of exactly those digests (``cosign verify``, with
  ``--experimental-oci11`` so that OCI 1.1 referrer signatures pass as well as cosign's
  ``.sig`` tags), and hands the digests to the copier, which copies ``repo@sha256:...``: a tag moved
  after the check is not what gets promoted. A source without a valid signature fails the pod
  before anything is written at the destination, repositories included.
  The gate sees only the source's credentials: the login container writes them, and only them, to
  a volume of the gate's own (``GATE_VOLUME``); the auth volume with the destination's push token
  and the shared scratch volume are not mounted in it.

cosign v2 is pinned, not v3: v3 defaults to the sigstore bundle format and to trust roots fetched
over the internet (TUF), which a cluster in a private network cannot reach; with ``--key`` and
``--insecure-ignore-tlog`` v2 verifies a key-made signature offline (no Rekor lookup).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence

from kubernetes.client import models as k8s

from airflow_ecr_promote.copylist import wire_ref
from airflow_ecr_promote.engines import Engine, script
from airflow_ecr_promote.refs import ImageRef, PromotionInputError

# the -dev variant: the same cosign on distroless's debug-nonroot base (busybox in /busybox)
COSIGN_IMAGE = "ghcr.io/sigstore/cosign/cosign:v2.6.5-dev"
VERIFY_CONTAINER_NAME = "ecr-promote-verify"
KEY_ENV = "COSIGN_PUBLIC_KEY"
GATE_VOLUME = "ecr-promote-gate"
GATE_VOLUME_SIZE = "16Mi"
GATE_DIR = "/ecr-promote/gate"
# written by the gate, read by the copier: "<source as listed> <repository>@<digest>" a line
PINNED_FILE = f"{GATE_DIR}/pinned"
# written by the gate for kaniko: "FROM <repository>@<digest>"
PINNED_DOCKERFILE = f"{GATE_DIR}/Dockerfile"
_GATE_MESSAGE = re.compile(
    r"ecr-promote gate: (?:verified (?P<verified>\d+) of \d+ source images; )?(?P<rest>.*)"
)
TRAVELLED = "travelled"  # the copy script's report field listing what came along
_PEM = re.compile(
    r"-----BEGIN PUBLIC KEY-----\n(?P<body>[A-Za-z0-9+/=\n]+?)\n?-----END PUBLIC KEY-----", re.ASCII
)
KEY_EXAMPLE = (
    "Expected a PEM public key, the cosign.pub that `cosign generate-key-pair` writes: "
    "'-----BEGIN PUBLIC KEY-----\\n<base64>\\n-----END PUBLIC KEY-----'"
)


def parse_with_signatures(engine: Engine, value: object) -> bool:
    """Whether the copier carries signatures and referrers: the engine's default when None."""
    if value is None:
        return engine.copies_signatures
    if not isinstance(value, bool):
        raise PromotionInputError(
            "with_signatures",
            value,
            "is not a boolean",
            "Expected True, False or None (the engine's default)",
        )
    if value and not engine.copies_signatures:
        raise PromotionInputError(
            "with_signatures",
            value,
            f"cannot be honoured by engine {engine.name!r}, which copies the image but not its cosign "
            "signatures, attestations, SBOMs or OCI referrers",
            "Fix: engine='regctl' (regctl image copy --referrers --digest-tags), or with_signatures=False",
        )
    return value


def parse_public_key(value: object, param: str = "verify_signature_key") -> str | None:
    """The gate's public key as cosign reads it (one PEM ``PUBLIC KEY`` block), or None (no gate).

    Only None turns the gate off. An empty or blank value is refused: it is what an emptied Airflow
    Variable or ``"$(cat cosign.pub)"`` with a missing file renders to, and taking it for "no
    gate" would promote unsigned images without a word.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise PromotionInputError(param, value, "is not a string", KEY_EXAMPLE)
    if not value.strip():
        raise PromotionInputError(
            param,
            value,
            "is empty: an empty key does not turn the signature gate off (an emptied Variable or a "
            "missing key file must not promote unsigned images); only None does",
            KEY_EXAMPLE + "; or None, for no gate",
        )
    if "PRIVATE KEY" in value:
        raise PromotionInputError(
            param,
            "<a private key, not shown>",
            "is a private key: the gate needs only the public key, and a private key must never "
            "reach a pod spec",
            KEY_EXAMPLE + " (cosign.pub, not cosign.key)",
        )
    text = value.strip().replace("\r\n", "\n")
    match = _PEM.fullmatch(text)
    if match is None:
        if "://" in text:
            problem = "is a key reference; the gate takes the PEM public key itself"
        else:
            problem = "is not a PEM public key block"
        raise PromotionInputError(param, value, problem, KEY_EXAMPLE)
    try:
        der = base64.b64decode(match["body"].replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        raise PromotionInputError(param, value, "has a body that is not base64", KEY_EXAMPLE) from None
    if len(der) < 32 or der[0] != 0x30:  # a DER SubjectPublicKeyInfo is a SEQUENCE
        raise PromotionInputError(
            param,
            value,
            "does not hold a DER SubjectPublicKeyInfo (an ECDSA, RSA or Ed25519 key)",
            KEY_EXAMPLE,
        )
    return text + "\n"


def verify_images(sources: Sequence[ImageRef]) -> list[str]:
    """The source images the gate verifies, each once, in copy order, as the user wrote them."""
    return list(dict.fromkeys(str(source) for source in sources))


def gate_sources(sources: Sequence[ImageRef]) -> list[str]:
    """The same images as the gate's script and the copier read them (``repo@digest`` for a
    ``repo:tag@digest``, as skopeo refuses both at once): the keys of the pinned list."""
    return list(dict.fromkeys(wire_ref(source) for source in sources))


def verify_container(
    sources: Sequence[ImageRef],
    key: str,
    image: str,
    *,
    security_context: k8s.V1SecurityContext,
    resources: k8s.V1ResourceRequirements,
) -> k8s.V1Container:
    """The gate: scripts/gate.sh, which pins every source to its digest and runs ``cosign verify
    --key`` on those digests, with the source's credentials only.

    The key reaches cosign only through the environment (``--key env://...``), the images only
    through ``VERIFY_IMAGES``. cosign (through go-containerregistry) reads registry credentials
    from ``$REGISTRY_AUTH_FILE`` when neither ``$HOME/.docker/config.json`` nor ``$DOCKER_CONFIG``
    holds any: the copy of the source's auth file that the login container wrote to the gate's
    own volume, the only volume the gate mounts.
    """
    return k8s.V1Container(
        name=VERIFY_CONTAINER_NAME,
        image=image,
        command=["/busybox/sh", "-c", script("gate.sh")],
        env=[
            k8s.V1EnvVar(name=KEY_ENV, value=key),
            k8s.V1EnvVar(name="VERIFY_IMAGES", value="\n".join(gate_sources(sources))),
            k8s.V1EnvVar(name="GATE_DIR", value=GATE_DIR),
            k8s.V1EnvVar(name="REGISTRY_AUTH_FILE", value=f"{GATE_DIR}/auth-source.json"),
            k8s.V1EnvVar(name="HOME", value=f"{GATE_DIR}/home"),
            k8s.V1EnvVar(name="TMPDIR", value=f"{GATE_DIR}/home"),
        ],
        volume_mounts=[k8s.V1VolumeMount(name=GATE_VOLUME, mount_path=GATE_DIR)],
        resources=resources,
        security_context=security_context,
        termination_message_policy="FallbackToLogsOnError",
    )


def gate_volume() -> k8s.V1Volume:
    """The gate's own volume, in memory: the source's auth file, then the pinned digests."""
    return k8s.V1Volume(
        name=GATE_VOLUME,
        empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=GATE_VOLUME_SIZE),
    )


def gate_failure(message: str, images: Sequence[str]) -> str:
    """Which source image the gate refused, and why, from its termination message.

    scripts/gate.sh reports ``ecr-promote gate: verified <k> of <n> source images; <cosign's
    error>`` (cosign verifies in order and stops at the first failure: image k+1 is the one
    refused) or ``ecr-promote gate: <why>`` when it could not resolve a source. Without that
    message (a gate killed), cosign's log tail gives the reason; it names the digests verified,
    not the images as written, so the image is named only when there is one.
    """
    own = _GATE_MESSAGE.search(message)
    if own is not None and own["verified"] is None:
        return f"the signature gate {own['rest'].strip()[:1000]}"
    failed: str | None = None
    if own is not None:
        index = int(own["verified"])
        failed = images[index] if index < len(images) else None
        reason = own["rest"].strip().removeprefix("cosign verify failed:").strip()[:1000]
    else:
        # the log names the digests verified, not the images as written: name one only when
        # there is one
        failed = images[0] if len(images) == 1 else None
        reason = _cosign_reason(message)
    who = f"source image {failed}" if failed else f"one of {len(images)} source images"
    return f"the signature gate refused {who}: cosign verify failed: {reason}"


def _cosign_reason(message: str) -> str:
    lines = [line.strip() for line in message.split("\n") if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    if errors:
        return errors[-1][len("Error:") :].strip()[:1000]
    return (lines[-1] if lines else "no output")[:1000]


def parse_travelled(field: str) -> dict[str, list[str]]:
    """The copy script's ``travelled tags=<t>,... referrers=<digest>,...`` field of a result line."""
    found: dict[str, list[str]] = {"cosign_tags": [], "referrers": []}
    for part in field.split(" ")[1:]:
        name, _, items = part.partition("=")
        key = {"tags": "cosign_tags", "referrers": "referrers"}.get(name)
        if key:
            found[key] = [item for item in items.split(",") if item]
    return found
