"""Before any pod: ask the ECR API which copies are already promoted; the pod gets only the rest.

A re-run of a release or backfill usually finds most of its copies in place. The pod would find
that too (it compares digests before copying), but only after starting and logging in to every
registry, and then it reads every copy again. With Airflow AWS connections that can read both
sides, the worker looks every image up through the ECR API (``BatchGetImage``, one call per
repository and 100 images, which reports a missing image as a failure of that image alone) and
marks a copy in place when its destination tag holds its source's digest. Anything else (absent,
a different digest, whatever ``on_conflict`` says about it) goes to the pod, which decides per
copy as it always does. An API error, or no connection, sends everything to the pod.

With signatures on, a copy is in place only when its signatures travelled too: every cosign tag
(``sha256-<hex>.sig``, ``.att``, ``.sbom``) that the source holds for the image and for each of
its platforms is at the destination with the same digest, and so is every OCI referrer, where the
API lists them (``ListImageReferrers``).

After a pod whose full report could not be read (its node gone with its log), the same lookups
confirm the copies whose lines are missing: a destination that holds its source's digest.

The deciding is pure (:func:`in_place`, :func:`signatures_in_place`, :func:`signature_tags`,
:func:`platform_digests`); the ECR calls are at the edge (:func:`look_up`, :func:`referrers`).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from airflow_ecr_promote.artifacts import Kind, classify
from airflow_ecr_promote.discovery import ecr_hook, error_code
from airflow_ecr_promote.promotion import Copy, Promotion
from airflow_ecr_promote.refs import ImageRef

log = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")

BATCH = 100  # BatchGetImage and DescribeImages take at most 100 image ids
WORKERS = 4  # calls at once; botocore retries a throttled one with backoff
# Without acceptedMediaTypes, BatchGetImage may convert a manifest (and so change its digest).
MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
SIGNATURE_SUFFIXES = ("sig", "att", "sbom")
# What an endpoint answers for an operation it does not have (moto, an older ECR-compatible API).
_NOT_SERVED = ("UnknownOperationException", "InvalidAction", "NotImplemented", "InvalidRequest")


@dataclass(frozen=True)
class Seen:
    """An image as the ECR API shows it: its digest, and its manifest when BatchGetImage sent it."""

    digest: str
    manifest: str | None = None


# --------------------------------------------------------------------------------------------
# Pure: what counts as in place
# --------------------------------------------------------------------------------------------


def in_place(copy: Copy, source: Seen | None, dest: Seen | None) -> str | None:
    """The digest when the destination tag holds the source's image, else None (the pod decides:
    absent, or another digest, which ``on_conflict`` governs)."""
    digest = copy.source.digest or (source.digest if source else None)
    if digest is None or dest is None or dest.digest != digest:
        return None
    return digest


def platform_digests(manifest: str | None) -> list[str]:
    """The platform manifests an image index lists (none for a single manifest or an unknown body)."""
    if not manifest:
        return []
    try:
        body = json.loads(manifest)
    except ValueError:
        return []
    entries = body.get("manifests") if isinstance(body, dict) else None
    return [str(e["digest"]) for e in entries or [] if isinstance(e, dict) and e.get("digest")]


def signature_tags(digest: str) -> list[str]:
    """cosign's tags for a digest: ``sha256-<hex>.sig``, ``.att``, ``.sbom``."""
    name = digest.replace(":", "-", 1)
    return [f"{name}.{suffix}" for suffix in SIGNATURE_SUFFIXES]


def signatures_in_place(
    tags: Iterable[str],
    source_tags: Mapping[str, str | None],
    dest_tags: Mapping[str, str | None],
    source_referrers: set[str] | None = None,
    dest_referrers: set[str] | None = None,
) -> bool:
    """True when every one of ``tags`` the source holds is at the destination with the same
    digest, and every source referrer is a destination referrer (None: not listed by the API)."""
    for tag in tags:
        wanted = source_tags.get(tag)
        if wanted is not None and dest_tags.get(tag) != wanted:
            return False
    if source_referrers is not None:
        return dest_referrers is not None and source_referrers <= dest_referrers
    return True


def split(promotion: Promotion, found: Sequence[str | None]) -> tuple[dict[int, str], Promotion | None]:
    """({index of a copy in place: its digest}, the promotion of the rest, None when nothing is left)."""
    done = {i: d for i, d in enumerate(found) if d is not None}
    rest = tuple(c for i, c in enumerate(promotion.copies) if i not in done)
    return done, Promotion(rest, promotion.on_conflict) if rest else None


def index_ranges(indexes: Iterable[int]) -> str:
    """Indexes as compact ranges, ``0-29,35``: what a deferred task's pod records of the copies
    found in place before it, so that the resumed task (a new instance) knows what its pod carried."""
    parts: list[str] = []
    ordered = sorted(set(indexes))
    start = 0
    for n, index in enumerate(ordered):
        if n + 1 == len(ordered) or ordered[n + 1] != index + 1:
            first = ordered[start]
            parts.append(str(first) if first == index else f"{first}-{index}")
            start = n + 1
    return ",".join(parts)


def parse_index_ranges(text: str) -> set[int]:
    """The indexes :func:`index_ranges` wrote; raises ValueError for anything else."""
    found: set[int] = set()
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        found.update(range(int(first), int(last or first) + 1))
    return found


# --------------------------------------------------------------------------------------------
# Edge: the ECR API
# --------------------------------------------------------------------------------------------


def _image_id(image: ImageRef) -> dict[str, str]:
    return {"imageTag": image.tag} if image.tag else {"imageDigest": str(image.digest)}


def _key(image_id: Mapping[str, Any]) -> str:
    return str(image_id.get("imageTag") or image_id.get("imageDigest") or "")


def _chunk(
    conn: Any, account: str, repository: str, chunk: list[ImageRef], *, manifests: bool
) -> dict[ImageRef, Seen | None]:
    """Each image of one chunk (at most 100) as ECR shows it, None for one it does not hold.

    DescribeImages answers a chunk whose images all exist in one call, but fails the whole call
    when one is missing; BatchGetImage then reports a failure per image, and sends the manifests
    (``manifests``: asked for first).
    """
    if not manifests:
        described = _described(conn, account, repository, chunk)
        if described is not None:
            return described
    response = conn.batch_get_image(
        registryId=account,
        repositoryName=repository,
        imageIds=[_image_id(i) for i in chunk],
        acceptedMediaTypes=list(MEDIA_TYPES),
    )
    # ImageNotFound, ImageTagDoesNotMatchDigest, KmsError...: not shown in place, so the pod decides
    failed = {_key(f.get("imageId", {})) for f in response.get("failures", [])}
    by_tag: dict[str, Seen] = {}
    by_digest: dict[str, Seen] = {}
    for image in response.get("images", []):
        seen = Seen(str(image["imageId"]["imageDigest"]), image.get("imageManifest"))
        by_digest.setdefault(seen.digest, seen)
        if image["imageId"].get("imageTag"):
            by_tag.setdefault(str(image["imageId"]["imageTag"]), seen)
    found: dict[ImageRef, Seen | None] = {}
    unmatched: list[ImageRef] = []
    for image in chunk:
        key = image.tag or str(image.digest)
        if key in failed:
            found[image] = None
        elif (by_tag if image.tag else by_digest).get(key) is not None:
            found[image] = (by_tag if image.tag else by_digest)[key]
        else:
            unmatched.append(image)
    if unmatched:  # moto answers with an image's latest tag, not the one asked for
        described = _described(conn, account, repository, unmatched) or dict.fromkeys(unmatched)
        found.update({i: by_digest.get(d.digest, d) if d else None for i, d in described.items()})
    return found


def _described(
    conn: Any, account: str, repository: str, images: list[ImageRef]
) -> dict[ImageRef, Seen | None] | None:
    """Each image's digest through DescribeImages; None when one of them is missing."""
    try:
        response = conn.describe_images(
            registryId=account, repositoryName=repository, imageIds=[_image_id(i) for i in images]
        )
    except ClientError as error:
        if error_code(error) == "ImageNotFoundException":
            return None
        raise
    details = response.get("imageDetails", [])
    tags = {t: str(d["imageDigest"]) for d in details for t in d.get("imageTags", [])}
    digests = {str(d["imageDigest"]) for d in details}
    found: dict[ImageRef, Seen | None] = {}
    for image in images:
        digest = tags.get(str(image.tag)) if image.tag else str(image.digest)
        found[image] = Seen(digest) if digest is not None and (image.tag or digest in digests) else None
    return found


Lookup = Callable[[], dict[ImageRef, Seen | None]]


class Clients:
    """ECR clients by connection and region, each made once per precheck: making one (the
    connection read, its ``role_arn`` assumed, botocore's service model loaded) costs more than
    the ten calls that read 1,000 tags. Made in the calling thread, which reads the Airflow
    connection; boto3's clients are thread-safe, so the calls may run in any thread."""

    def __init__(self) -> None:
        self._made: dict[tuple[str | None, str], Any] = {}

    def __call__(self, conn_id: str | None, region: str) -> Any:
        if (conn_id, region) not in self._made:
            self._made[(conn_id, region)] = ecr_hook(conn_id, region).conn
        return self._made[(conn_id, region)]


def _lookups(
    conn_id: str | None, images: Iterable[ImageRef], manifests: bool, clients: Clients
) -> list[Lookup]:
    """One call per repository and 100 images, to run in any thread."""
    groups: dict[tuple[str, str, str], list[ImageRef]] = defaultdict(list)
    for image in dict.fromkeys(images):
        groups[(image.account, image.region, image.repository)].append(image)
    calls: list[Lookup] = []
    for (account, region, repository), members in groups.items():
        conn = clients(conn_id, region)
        for start in range(0, len(members), BATCH):
            chunk = members[start : start + BATCH]
            calls.append(partial(_chunk_or_none, conn, account, repository, chunk, manifests))
    return calls


def _chunk_or_none(
    conn: Any, account: str, repository: str, chunk: list[ImageRef], manifests: bool
) -> dict[ImageRef, Seen | None]:
    try:
        return _chunk(conn, account, repository, chunk, manifests=manifests)
    except ClientError as error:
        if error_code(error) != "RepositoryNotFoundException":
            raise
        return dict.fromkeys(chunk)  # the pod creates it, or says it is missing


def run_calls(calls: Sequence[Callable[[], Mapping[K, V]]]) -> dict[K, V]:
    """Every call's answer, merged; a few calls at once (each is an ECR round trip, or a wait)."""
    found: dict[K, V] = {}
    if len(calls) <= 1:
        for call in calls:
            found.update(call())
        return found
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(calls))) as pool:
        for part in pool.map(lambda call: call(), calls):
            found.update(part)
    return found


def look_up(
    conn_id: str | None,
    images: Iterable[ImageRef],
    *,
    manifests: bool = False,
    clients: Clients | None = None,
) -> dict[ImageRef, Seen | None]:
    """Each image as ECR shows it (with its manifest, for ``manifests``), None for one it does not
    hold (or reports a failure for). Raises ClientError / BotoCoreError for an error of a whole call."""
    return run_calls(_lookups(conn_id, images, manifests, clients or Clients()))


def look_up_kinds(conn_id: str | None, sources: Iterable[ImageRef]) -> dict[ImageRef, Kind] | None:
    """Each source's kind (image, Helm chart, other OCI artifact) from its manifest, through
    ``BatchGetImage``; a source ECR sent no manifest for is left out (the pod checks it). None
    when the API could not be asked."""
    try:
        seen = look_up(conn_id, sources, manifests=True)
    except (ClientError, BotoCoreError) as error:
        log.warning("Could not read the sources' manifests through the ECR API (%s); the pod checks.", error)
        return None
    return {image: classify(s.manifest) for image, s in seen.items() if s is not None and s.manifest}


def referrers(conn: Any, image: ImageRef, digest: str) -> set[str] | None:
    """The digests of the OCI referrers of ``digest`` in ``image``'s repository (``conn``: an ECR
    client of its region); None when the API does not list referrers (an older botocore, or an
    endpoint without ``ListImageReferrers``)."""
    if not hasattr(conn, "list_image_referrers"):
        return None
    found: set[str] = set()
    params: dict[str, Any] = {
        "registryId": image.account,
        "repositoryName": image.repository,
        "subjectId": {"imageDigest": digest},
    }
    try:
        while True:
            page = conn.list_image_referrers(**params)
            found.update(str(r["digest"]) for r in page.get("referrers", []))
            if not page.get("nextToken"):
                return found
            params["nextToken"] = page["nextToken"]
    except ClientError as error:
        # an endpoint without the operation: an error code of its own, or a bare HTTP error with no
        # AWS error body (moto_server answers an unimplemented operation with an HTML 500)
        if error_code(error) in _NOT_SERVED or error_code(error).isdigit():
            return None
        raise


# --------------------------------------------------------------------------------------------
# Both: per copy, in place or not
# --------------------------------------------------------------------------------------------


def _bare(image: ImageRef, tag: str) -> ImageRef:
    return ImageRef(image.host, image.account, image.region, image.repository).with_tag(tag)


def _tag_digests(
    side: Mapping[ImageRef, Seen | None], image: ImageRef, tags: list[str]
) -> dict[str, str | None]:
    found = {tag: side.get(_bare(image, tag)) for tag in tags}
    return {tag: seen.digest if seen else None for tag, seen in found.items()}


def _signatures_travelled(
    copies: Sequence[Copy],
    found: list[str | None],
    sources: Mapping[ImageRef, Seen | None],
    source_conn_id: str | None,
    dest_conn_id: str | None,
    clients: Clients,
) -> list[str | None]:
    """``found`` with each copy whose cosign tags or referrers have not all travelled set to None."""
    subjects: dict[int, list[str]] = {}
    for index, (copy, digest) in enumerate(zip(copies, found, strict=True)):
        seen = sources.get(copy.source)
        if digest is not None and seen is not None:
            subjects[index] = [digest, *platform_digests(seen.manifest)]
    wanted = {i: [t for s in subjects[i] for t in signature_tags(s)] for i in subjects}
    wanted_at_source = (_bare(copies[i].source, t) for i in wanted for t in wanted[i])
    at_source = look_up(source_conn_id, wanted_at_source, clients=clients)
    held = {i: [t for t in wanted[i] if at_source.get(_bare(copies[i].source, t))] for i in wanted}
    at_dest = look_up(
        dest_conn_id, (_bare(copies[i].dest, t) for i in held for t in held[i]), clients=clients
    )
    listed: dict[tuple[ImageRef, str], set[str] | None] = {}
    served = [True]  # once the API says it lists no referrers, it is not asked again

    def listing(conn_id: str | None, image: ImageRef, digest: str) -> set[str] | None:
        key = (_bare(image, "-"), digest)
        if key not in listed:
            conn = clients(conn_id, image.region)
            listed[key] = referrers(conn, image, digest) if served[0] else None
            served[0] = listed[key] is not None
        return listed[key]

    result: list[str | None] = [None] * len(copies)
    for index, subject_digests in subjects.items():
        copy = copies[index]

        source_tags = _tag_digests(at_source, copy.source, held[index])
        dest_tags = _tag_digests(at_dest, copy.dest, held[index])
        complete = signatures_in_place(held[index], source_tags, dest_tags)
        for subject in subject_digests if complete else []:
            source_refs = listing(source_conn_id, copy.source, subject)
            if source_refs is None:
                break  # the API lists no referrers: the cosign tags are what can be compared
            if not signatures_in_place([], {}, {}, source_refs, listing(dest_conn_id, copy.dest, subject)):
                complete = False
                break
        result[index] = found[index] if complete else None
    return result


def find_in_place(
    promotion: Promotion,
    *,
    source_conn_id: str | None,
    dest_conn_id: str | None,
    with_signatures: bool = False,
) -> list[str | None] | None:
    """For each copy, in order, its digest when the ECR API shows it already promoted (None: the pod
    decides it). None when the API could not be asked: then the pod decides every copy."""
    copies = promotion.copies
    try:
        # both sides at once: a source is read also when its destination turns out to be missing
        asked = [c.source for c in copies if with_signatures or not c.source.digest]
        clients = Clients()
        seen = run_calls(
            _lookups(dest_conn_id, [c.dest for c in copies], False, clients)
            + _lookups(source_conn_id, asked, with_signatures, clients)
        )
        found = [in_place(c, seen.get(c.source), seen.get(c.dest)) for c in copies]
        if with_signatures and any(found):
            found = _signatures_travelled(copies, found, seen, source_conn_id, dest_conn_id, clients)
    except (ClientError, BotoCoreError) as error:
        log.warning("Could not compare digests through the ECR API (%s); the pod will compare them.", error)
        return None
    return found


def confirm_promoted(
    copies: list[Copy], *, source_conn_id: str | None, dest_conn_id: str | None
) -> list[str | None]:
    """For each copy, its source's digest when ECR shows its destination holding it, else None:
    what confirms a copy whose line of the pod's report could not be read. An API error
    confirms nothing."""
    try:
        clients = Clients()
        seen = run_calls(
            _lookups(dest_conn_id, [c.dest for c in copies], False, clients)
            + _lookups(source_conn_id, [c.source for c in copies if not c.source.digest], False, clients)
        )
    except (ClientError, BotoCoreError) as error:
        log.warning("Could not read the digests through the ECR API (%s): nothing confirmed.", error)
        return [None] * len(copies)
    return [in_place(c, seen.get(c.source), seen.get(c.dest)) for c in copies]
