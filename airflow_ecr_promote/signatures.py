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
  project's pinned cosign release, distroless: its entrypoint is cosign, no shell) verifies every
  source image with that public key after the login container and before the copier, with the
  source's credentials. A source without a valid signature fails the pod before the copier starts,
  so nothing is written at the destination.

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

from airflow_ecr_promote.engines import AUTH_DIR, SCRATCH_DIR, Engine
from airflow_ecr_promote.refs import PromotionInputError

COSIGN_IMAGE = "ghcr.io/sigstore/cosign/cosign:v2.6.5"
VERIFY_CONTAINER_NAME = "ecr-promote-verify"
KEY_ENV = "COSIGN_PUBLIC_KEY"
TRAVELLED = "travelled"  # the copy script's report field listing what came along
_PEM = re.compile(
    r"-----BEGIN PUBLIC KEY-----\n(?P<body>[A-Za-z0-9+/=\n]+?)\n?-----END PUBLIC KEY-----", re.ASCII
)
_HEADER = re.compile(r"^Verification for (\S+) --$", re.M)
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
    """The gate's public key as cosign reads it (one PEM ``PUBLIC KEY`` block), or None (no gate)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PromotionInputError(param, value, "is not a string", KEY_EXAMPLE)
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


def verify_images(sources: Sequence[object]) -> list[str]:
    """The source images the gate verifies, each once, in copy order."""
    return list(dict.fromkeys(str(source) for source in sources))


def verify_container(
    images: Sequence[str],
    key: str,
    image: str,
    *,
    security_context: k8s.V1SecurityContext,
    resources: k8s.V1ResourceRequirements,
    auth_volume: str,
    scratch_volume: str,
) -> k8s.V1Container:
    """The gate: ``cosign verify --key`` of every source image, with the source's credentials.

    The key reaches cosign only through the environment (``--key env://...``). cosign (through
    go-containerregistry) reads registry credentials from ``$REGISTRY_AUTH_FILE`` when neither
    ``$HOME/.docker/config.json`` nor ``$DOCKER_CONFIG`` holds any: the login container's
    source-side auth file.
    """
    return k8s.V1Container(
        name=VERIFY_CONTAINER_NAME,
        image=image,
        args=["verify", "--key", f"env://{KEY_ENV}", "--insecure-ignore-tlog=true", *images],
        env=[
            k8s.V1EnvVar(name=KEY_ENV, value=key),
            k8s.V1EnvVar(name="REGISTRY_AUTH_FILE", value=f"{AUTH_DIR}/auth-source.json"),
            k8s.V1EnvVar(name="HOME", value=SCRATCH_DIR),
            k8s.V1EnvVar(name="TMPDIR", value=SCRATCH_DIR),
        ],
        volume_mounts=[
            k8s.V1VolumeMount(name=auth_volume, mount_path=AUTH_DIR, read_only=True),
            k8s.V1VolumeMount(name=scratch_volume, mount_path=SCRATCH_DIR),
        ],
        resources=resources,
        security_context=security_context,
        # distroless: cosign cannot write a termination message, so its log tail is the message
        termination_message_policy="FallbackToLogsOnError",
    )


def gate_failure(message: str, images: Sequence[str]) -> str:
    """Which source image failed verification, and cosign's reason (from its log tail).

    cosign verifies the images in order, prints ``Verification for <image> --`` after each one that
    passes and stops at the first that fails: the image after the last header is the one refused.
    """
    verified = _HEADER.findall(message)
    failed: str | None = None
    if verified and verified[-1] in images:
        index = images.index(verified[-1]) + 1
        failed = images[index] if index < len(images) else None
    elif not verified and (len(images) == 1 or len(message.encode()) < 2000):
        failed = images[0] if images else None
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
