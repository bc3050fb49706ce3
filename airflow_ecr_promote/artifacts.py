"""What a source is (a container image, a Helm chart, another OCI artifact), and which engines
may carry it.

ECR holds more than images: Helm charts (config ``application/vnd.cncf.helm.config.v1+json``),
WASM modules (``application/vnd.wasm.config.v0+json``), SBOM-only artifacts (an OCI 1.1
``artifactType`` over the empty config) and others. The digest-preserving engines copy a manifest
and its blobs as they are, whatever they hold. kaniko cannot: it rebuilds what it copies as an
image for one platform (a new config), so an artifact would arrive as something else under a new
digest. Such an engine is refused before any pod (``check_sources``, through the ECR API, where
the worker has an AWS connection), and its pod checks again before writing anything
(``check_sources_env``, read by scripts/login.sh): fail closed, never halfway.

All of it is pure (no AWS, no Airflow); the ECR call that reads the sources' manifests is at the
edge, :func:`airflow_ecr_promote.precheck.look_up_kinds` (``BatchGetImage``, which the
compare-digests policy already grants).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from airflow_ecr_promote.engines import Engine
from airflow_ecr_promote.promotion import Promotion
from airflow_ecr_promote.refs import ImageRef, PromotionInputError

IMAGE_CONFIG_TYPES = (
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
)
HELM_CONFIG_TYPE = "application/vnd.cncf.helm.config.v1+json"
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


@dataclass(frozen=True)
class Kind:
    """What a manifest holds: ``image`` (one platform), ``index`` (a multi-platform image),
    ``helm-chart``, ``artifact`` (any other OCI artifact) or ``unknown`` (not a manifest this
    can read); ``media_type`` is the artifact's type (its ``artifactType``, else its config's)."""

    name: str
    media_type: str = ""

    @property
    def is_image(self) -> bool:
        return self.name in ("image", "index")

    def describe(self) -> str:
        if self.name == "helm-chart":
            return f"a Helm chart (config media type {self.media_type})"
        if self.name == "artifact":
            return f"an OCI artifact of type {self.media_type}, not a container image"
        if self.name == "unknown":
            return "a manifest whose kind cannot be told (no image config in it)"
        return "a multi-platform image" if self.name == "index" else "a container image"


def classify(manifest: str | bytes | None) -> Kind:
    """The kind of a manifest's bytes (as ``BatchGetImage`` or ``inspect --raw`` give them).

    An index is an image unless it declares an ``artifactType``; a manifest is an image when its
    config is an image config (OCI or Docker) and it declares no ``artifactType``; Docker's
    schema 1 manifests are images. Anything unreadable is ``unknown``: callers fail closed.
    """
    try:
        body = json.loads(manifest) if manifest else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return Kind("unknown")
    artifact_type = body.get("artifactType")
    if isinstance(artifact_type, str) and artifact_type:
        return Kind("helm-chart" if artifact_type == HELM_CONFIG_TYPE else "artifact", artifact_type)
    if body.get("schemaVersion") == 1:
        return Kind("image")
    if body.get("mediaType") in INDEX_TYPES or isinstance(body.get("manifests"), list):
        return Kind("index")
    config = body.get("config")
    config_type = config.get("mediaType") if isinstance(config, dict) else None
    if not isinstance(config_type, str) or not config_type:
        return Kind("unknown")
    if config_type in IMAGE_CONFIG_TYPES:
        return Kind("image", config_type)
    return Kind("helm-chart" if config_type == HELM_CONFIG_TYPE else "artifact", config_type)


def artifact_engines(engines: Iterable[Engine]) -> list[str]:
    """The names of the engines that carry any OCI artifact."""
    return [e.name for e in engines if e.carries_artifacts]


def fix_advice(carriers: list[str]) -> str:
    """The fix a refusal names: the engines that carry artifacts."""
    named = " or ".join(f"engine={name!r}" for name in carriers)
    return f"Fix: {named}, which copy any OCI artifact (Helm charts included) with its digest"


def refusal(engine: str, source: ImageRef, kind: Kind, carriers: list[str]) -> PromotionInputError:
    """The error for an engine that cannot carry ``source``: names the parameter, the value, what
    the source is and the engines to use."""
    return PromotionInputError(
        "engine",
        engine,
        f"cannot promote {source}: it is {kind.describe()}. {engine} rebuilds what it copies as a "
        "container image (a new config, one platform), so it would not arrive as itself; nothing "
        "was written",
        fix_advice(carriers),
    )


def refused(engine: str, kinds: Mapping[ImageRef, Kind], carriers: list[str]) -> PromotionInputError | None:
    """The refusal for the first source that is not an image, None when all are images (or were
    not seen: the pod checks those)."""
    for source, kind in kinds.items():
        if not kind.is_image:
            return refusal(engine, source, kind, carriers)
    return None


def check_sources_env(promotion: Promotion) -> str:
    """The login container's CHECK_SOURCES (scripts/login.sh): one line per source,
    ``<login n> <registry id> <region> <repository> <imageTag=...|imageDigest=...>``, the login
    being the one whose credential reads that source (numbered from 1, in LOGINS' order)."""
    logins = promotion.logins
    lines = []
    for copy in promotion.copies:
        source = copy.source
        n = next(
            i
            for i, login in enumerate(logins, 1)
            if login.host == source.host and login.role == copy.source_role and "source" in login.sides
        )
        image_id = f"imageDigest={source.digest}" if source.digest else f"imageTag={source.tag}"
        lines.append(f"{n} {source.account} {source.region} {source.repository} {image_id}")
    return "\n".join(dict.fromkeys(lines))
