"""Promoted images as Airflow Assets (Datasets on Airflow 2.11), under the ``ecr`` URI scheme.

An asset is a destination **repository**: ``ecr://<account>.dkr.ecr.<region>.amazonaws.com/<repo>``
(``.amazonaws.com.cn`` in China). Each promotion adds one event to it whose ``extra`` says which
image landed: source, destination, both digests, status. A DAG scheduled on the asset therefore
deploys exactly the digest of the event that triggered it, whatever the tag points to later.

The operator declares one :class:`AssetAlias` per task as its outlet and adds the concrete
assets through it at run time, so destinations known only after template rendering still emit
events, and an image that was not promoted emits nothing. Airflow resolves alias events to the
concrete asset, so consumers schedule on ``Asset(asset_uri(...))`` directly.

Which results emit an event:

- ``copied``: always.
- ``present`` (the destination already held the source's digest, nothing written): only on a
  retry of the task instance (``try_number > 1``). An earlier try of the same run may have
  copied the image and then failed (another copy of its batch failed, the worker died): Airflow
  records no events for a failed try, so the retry must emit them. A first try that finds the
  image present (a nightly run with nothing new, a second DAG run for the same tag) emits
  nothing, so it does not trigger a deploy again.
- ``skipped``, ``failed``: never. A failed task emits nothing at all (Airflow records outlet
  events only for a successful task).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import SplitResult

from airflow_ecr_promote.refs import ImageRef, PromotionInputError, parse_image_ref

SCHEME = "ecr"
EVENT_KEYS = ("source_image", "dest_image", "digest", "source_digest", "status")


def canonical_host(ref: ImageRef) -> str:
    """The standard registry host of ``ref``'s account and region (FIPS and dual-stack hosts name
    the same registry, so they share one asset)."""
    suffix = ".amazonaws.com.cn" if ref.region.startswith("cn-") else ".amazonaws.com"
    return f"{ref.account}.dkr.ecr.{ref.region}{suffix}"


def asset_uri(ref: ImageRef) -> str:
    """``ecr://<account>.dkr.ecr.<region>.amazonaws.com/<repository>`` for ``ref``'s repository."""
    return f"{SCHEME}://{canonical_host(ref)}/{ref.repository}"


_EXPECTED = (
    f"Expected {SCHEME}://<12-digit account>.dkr.ecr.<region>.amazonaws.com/<repository>, "
    f"e.g. '{SCHEME}://210987654321.dkr.ecr.us-east-1.amazonaws.com/team/app' (no tag, no digest)"
)


def _parse(uri: object, host_and_path: str) -> ImageRef:
    host, slash, repository = host_and_path.partition("/")
    if not slash or not repository:
        raise PromotionInputError("uri", uri, "names no repository", _EXPECTED)
    if any(c in repository for c in ":@?#") or repository.endswith("/"):
        raise PromotionInputError(
            "uri", uri, "holds a tag, digest, query or fragment: an asset is a repository", _EXPECTED
        )
    # The tag only satisfies the image parser; the asset keeps host, account, region, repository.
    try:
        ref = parse_image_ref("uri", f"{host.lower()}/{repository}:latest")
    except PromotionInputError as error:
        problem = error.problem.replace("'latest'", "").strip()
        raise PromotionInputError("uri", uri, problem, _EXPECTED) from None
    return ImageRef(canonical_host(ref), ref.account, ref.region, ref.repository)


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """Airflow's URI normaliser for the ``ecr`` scheme (registered under ``asset-uris`` and
    ``dataset-uris``): canonical registry host, repository checked; raises ValueError otherwise.

    Airflow has already lower-cased the scheme, dropped the fragment and trailing slashes.
    """
    if uri.username or uri.password or uri.port or uri.query:
        raise PromotionInputError(
            "uri",
            uri.geturl(),
            "has a user, password, port or query, which an ECR repository has not",
            _EXPECTED,
        )
    ref = _parse(uri.geturl(), f"{uri.netloc}{uri.path}")
    return uri._replace(scheme=SCHEME, netloc=canonical_host(ref), path=f"/{ref.repository}")


ALIAS_PREFIX = "ecr-promote:"


def alias_name(dag_id: str, task_id: str) -> str:
    """The name of the alias a promotion task emits its assets through."""
    return f"{ALIAS_PREFIX}{dag_id}.{task_id}" if dag_id else f"{ALIAS_PREFIX}{task_id}"


def is_own_alias(name: str) -> bool:
    return name.startswith(ALIAS_PREFIX)


def event_extra(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The asset event's ``extra`` for one promotion entry of the task's return value."""
    extra = {key: entry.get(key) for key in EVENT_KEYS}
    dest = parse_image_ref("dest_image", entry["dest_image"])
    extra["image"] = f"{dest.repository_url}@{entry['digest']}" if entry.get("digest") else None
    return extra


def entries_of(result: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """The promotion entries of a return value: the value itself for one image, else its list."""
    if not result:
        return []
    if "promotions" in result:
        return list(result["promotions"])
    return [result]


def to_emit(entries: Iterable[Mapping[str, Any]], try_number: int) -> list[Mapping[str, Any]]:
    """The entries that emit an asset event (see the module docstring for why)."""
    return [
        e
        for e in entries
        if e.get("digest")
        and (e.get("status") == "copied" or (e.get("status") == "present" and try_number > 1))
    ]


def emit(context: Mapping[str, Any], alias: str, result: Mapping[str, Any] | None) -> list[str]:
    """Add an event per promoted image through the task's alias; returns the asset URIs."""
    from airflow_ecr_promote.compat import Asset, AssetAlias

    outlet_events = context.get("outlet_events")
    ti = context.get("ti")
    if outlet_events is None or ti is None:
        return []
    emitted = []
    for entry in to_emit(entries_of(result), int(getattr(ti, "try_number", 1) or 1)):
        uri = asset_uri(parse_image_ref("dest_image", entry["dest_image"]))
        outlet_events[AssetAlias(name=alias)].add(Asset(uri), extra=event_extra(entry))
        emitted.append(uri)
    return emitted
