"""Discover the tags of an ECR repository: filter, sort and shape them for dynamic task mapping.

A pure core (:func:`parse_query`, :func:`select_tags`, :func:`shape_output`, :func:`semver_key`)
that takes plain values and raises :class:`PromotionInputError` naming the parameter, and a thin
AWS edge (:func:`fetch_tags`) that reads ``describe_images`` through the Amazon provider's
``EcrHook``. :func:`list_tags` joins both for TaskFlow; :class:`EcrListTagsOperator` is the
classic-operator form, with its inputs as template fields.

The return value is JSON-able: a list of tags, of full image references (for
``.expand(source_image=...)``) or of ``{"source_image", "dest_image"}`` dicts (for
``.expand_kwargs(...)``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.ecr import EcrHook
from botocore.exceptions import ClientError

from airflow_ecr_promote.compat import AirflowException, BaseOperator
from airflow_ecr_promote.refs import PromotionInputError, parse_image_ref, show

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = [
    "OUTPUT_CHOICES",
    "SORT_CHOICES",
    "EcrListTagsOperator",
    "EcrRepositoryNotFoundError",
    "RepositoryRef",
    "TagQuery",
    "TaggedImage",
    "ecr_hook",
    "error_code",
    "fetch_tags",
    "images_from_details",
    "list_tags",
    "parse_query",
    "parse_repository",
    "registry_host",
    "repository_not_found_message",
    "run_query",
    "select_tags",
    "semver_key",
    "shape_output",
    "sort_tags",
]

SORT_CHOICES = ("semver", "pushed", "name")
OUTPUT_CHOICES = ("tags", "images", "promotions")
EXAMPLE_REPOSITORY = "123456789012.dkr.ecr.us-west-2.amazonaws.com/team/app"
EXAMPLE_DEST_REPOSITORY = "210987654321.dkr.ecr.us-east-1.amazonaws.com/team/app"

_ACCOUNT = re.compile(r"\d{12}", re.ASCII)
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+){1,2}-\d{1,2}", re.ASCII)
# semver.org's regular expression, with an optional leading "v".
_SEMVER = re.compile(
    r"^[vV]?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+(?P<build>[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
# What makes the first path component a registry host rather than part of a repository name
# (which may hold dots too).
_HOST_LIKE = re.compile(r"^(?:\d+\.|.*\.amazonaws\.com(?:\.cn)?$|.*\.on\.aws$|.*:\d+$)")
# Placeholders that only let a bare repository name go through parse_image_ref's checks.
_PLACEHOLDER_ACCOUNT, _PLACEHOLDER_REGION = "000000000000", "us-east-1"

_log = logging.getLogger(__name__)

SemverKey = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


class EcrRepositoryNotFoundError(AirflowException):
    """The repository does not exist in that registry (or the credentials cannot see it)."""


# ---------------------------------------------------------------------------------------------
# Pure core
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RepositoryRef:
    """An ECR repository; ``account`` and ``region`` are None when left to the AWS connection."""

    repository: str
    account: str | None = None
    region: str | None = None
    registry: str | None = None  # the host as given in a URL (FIPS and dual-stack hosts are kept)

    @property
    def host(self) -> str | None:
        if self.registry:
            return self.registry
        if self.account is None or self.region is None:
            return None
        return registry_host(self.account, self.region)

    def resolved(self, account: str | None, region: str | None) -> RepositoryRef:
        """This repository with the account and region AWS answered for, where they were unknown."""
        return RepositoryRef(self.repository, self.account or account, self.region or region, self.registry)

    def image(self, tag: str) -> str:
        if self.host is None:
            raise ValueError(f"the registry of repository {self.repository!r} is not known yet")
        return f"{self.host}/{self.repository}:{tag}"


@dataclasses.dataclass(frozen=True)
class TaggedImage:
    """One tag of a repository, with the digest it points to and when that image was pushed."""

    tag: str
    digest: str | None = None
    pushed_at: datetime | None = None


@dataclasses.dataclass(frozen=True)
class TagQuery:
    """The parsed, validated inputs of a discovery."""

    repository: RepositoryRef
    pattern: re.Pattern[str] | None = None
    pushed_since: datetime | None = None
    sort: str | None = "semver"
    descending: bool = False
    limit: int | None = None
    output: str = "tags"
    dest_repository: RepositoryRef | None = None


def registry_host(account: str, region: str) -> str:
    suffix = ".cn" if region.startswith("cn-") else ""
    return f"{account}.dkr.ecr.{region}.amazonaws.com{suffix}"


def _parse_repository_url(param: str, value: str, expected: str) -> RepositoryRef:
    """A repository URL ``<account>.dkr.ecr.<region>.amazonaws.com/<repo>``, checked by refs.py."""
    if value != value.strip():
        raise PromotionInputError(param, value, "has leading or trailing whitespace", expected)
    rest = value.partition("/")[2]
    if "@" in rest or ":" in rest.rsplit("/", 1)[-1]:
        raise PromotionInputError(param, value, "names a tag or digest; give the repository only", expected)
    try:
        ref = parse_image_ref(param, f"{value}:latest")
    except PromotionInputError as error:
        raise PromotionInputError(param, value, error.problem, expected) from None
    return RepositoryRef(ref.repository, ref.account, ref.region, ref.host)


def _parse_account(param: str, value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _ACCOUNT.fullmatch(value):
        raise PromotionInputError(
            param, value, "is not a 12-digit AWS account id", "Expected for example '123456789012'"
        )
    return value


def _parse_region(param: str, value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _REGION.fullmatch(value):
        raise PromotionInputError(param, value, "is not an AWS region", "Expected for example 'us-west-2'")
    return value


def parse_repository(
    param: str,
    value: object,
    *,
    registry_id: object = None,
    region: object = None,
    registry_id_param: str = "registry_id",
    region_param: str = "region",
) -> RepositoryRef:
    """A repository name (with optional ``registry_id``/``region``) or a full repository URL.

    With a URL, ``registry_id`` and ``region`` are optional and must agree with it.
    """
    expected = (
        f"Expected a repository name such as 'team/app' or a repository URL such as {EXAMPLE_REPOSITORY!r}"
    )
    if not isinstance(value, str) or not value:
        raise PromotionInputError(param, value, "must be a non-empty string", expected)
    account = _parse_account(registry_id_param, registry_id)
    region_name = _parse_region(region_param, region)
    if "/" in value and _HOST_LIKE.match(value.partition("/")[0]):
        ref = _parse_repository_url(param, value, expected)
        for name, given, found in (
            (registry_id_param, account, ref.account),
            (region_param, region_name, ref.region),
        ):
            if given is not None and given != found:
                raise PromotionInputError(
                    name,
                    given,
                    f"does not agree with {param}={show(value)} ({found!r})",
                    f"Expected {found!r}",
                )
        return ref
    probe = f"{registry_host(_PLACEHOLDER_ACCOUNT, _PLACEHOLDER_REGION)}/{value}"
    _parse_repository_url(param, probe, expected)
    return RepositoryRef(value, account, region_name)


def _parse_pattern(pattern: object, regex: object) -> re.Pattern[str] | None:
    if pattern is None or pattern == "":
        return None
    if not isinstance(regex, bool):
        raise PromotionInputError("regex", regex, "must be True or False", "Expected a bool")
    if not isinstance(pattern, str):
        raise PromotionInputError(
            "pattern", pattern, f"must be a string, not {type(pattern).__name__}", "Expected e.g. '1.*'"
        )
    if not regex:
        return re.compile(fnmatch.translate(pattern))
    try:
        return re.compile(pattern)
    except re.error as error:
        raise PromotionInputError(
            "pattern", pattern, f"is not a valid regular expression ({error})", r"Expected e.g. '1\.\d+\.\d+'"
        ) from None


def _parse_pushed_since(value: object) -> datetime | None:
    expected = "Expected a datetime or an ISO 8601 string such as '2026-11-22T00:00:00+00:00'"
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise PromotionInputError(
                "pushed_since", value, "is not an ISO 8601 date-time", expected
            ) from None
    else:
        raise PromotionInputError(
            "pushed_since", value, f"must be a datetime or a string, not {type(value).__name__}", expected
        )
    # A moment without a zone is taken as UTC, as Airflow does.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _parse_limit(value: object) -> int | None:
    expected = "Expected a positive integer, or None for no limit"
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())  # a rendered template gives a string
    if isinstance(value, bool) or not isinstance(value, int):
        raise PromotionInputError("limit", value, "is not an integer", expected)
    if value < 1:
        raise PromotionInputError("limit", value, "must be at least 1", expected)
    return value


def _parse_choice(param: str, value: object, choices: Sequence[str | None]) -> Any:
    if value not in choices:
        shown = ", ".join(repr(c) for c in choices)
        raise PromotionInputError(param, value, "is not one of the choices", f"Expected one of {shown}")
    return value


def _parse_bool(param: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"  # a rendered template gives a string
    raise PromotionInputError(param, value, "must be True or False", "Expected a bool")


def parse_query(
    repository: object,
    *,
    registry_id: object = None,
    region: object = None,
    pattern: object = None,
    regex: object = False,
    pushed_since: object = None,
    sort: object = "semver",
    descending: object = False,
    limit: object = None,
    output: object = "tags",
    dest_repository: object = None,
) -> TagQuery:
    """Validate every input of a discovery; raises :class:`PromotionInputError` naming the input."""
    repo = parse_repository("repository", repository, registry_id=registry_id, region=region)
    out = _parse_choice("output", output, OUTPUT_CHOICES)
    dest = None
    if out == "promotions":
        expected = f"Expected a repository URL such as {EXAMPLE_DEST_REPOSITORY!r}"
        if not isinstance(dest_repository, str) or "/" not in dest_repository:
            raise PromotionInputError(
                "dest_repository",
                dest_repository,
                "is needed, as a repository URL, for output='promotions'",
                expected,
            )
        dest = _parse_repository_url("dest_repository", dest_repository, expected)
    elif dest_repository not in (None, ""):
        raise PromotionInputError(
            "dest_repository",
            dest_repository,
            f"is only used with output='promotions', not {out!r}",
            "Expected None",
        )
    return TagQuery(
        repository=repo,
        pattern=_parse_pattern(pattern, _parse_bool("regex", regex)),
        pushed_since=_parse_pushed_since(pushed_since),
        sort=_parse_choice("sort", sort, (*SORT_CHOICES, None)),
        descending=_parse_bool("descending", descending),
        limit=_parse_limit(limit),
        output=out,
        dest_repository=dest,
    )


def semver_key(tag: str) -> SemverKey | None:
    """The semver 2.0.0 precedence of ``tag`` (a leading 'v' allowed), or None if it is not one.

    Pre-releases sort before their release; numeric identifiers sort numerically and before
    alphanumeric ones; a longer identifier list wins when the shared prefix is equal. Build
    metadata does not count (and ECR tags cannot hold '+' anyway).
    """
    match = _SEMVER.match(tag)
    if not match:
        return None
    pre = match["pre"]
    identifiers = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in (pre.split(".") if pre else ())
    )
    return int(match["major"]), int(match["minor"]), int(match["patch"]), 0 if pre else 1, identifiers


def _pushed_key(image: TaggedImage) -> datetime:
    return image.pushed_at or datetime.min.replace(tzinfo=UTC)


def sort_tags(images: Iterable[TaggedImage], sort: str | None, descending: bool = False) -> list[TaggedImage]:
    """Order images by ``sort``; ties (and tags that are not semantic versions) by tag name.

    With ``sort="semver"``, tags that are not semantic versions come last in either direction,
    ordered by name; with ``"pushed"``, images without a push time come last.
    """
    by_name = sorted(images, key=lambda image: image.tag)
    if sort is None:
        return by_name[::-1] if descending else by_name
    if sort == "name":
        return sorted(by_name, key=lambda image: image.tag, reverse=descending)
    if sort == "pushed":
        known = [image for image in by_name if image.pushed_at is not None]
        unknown = [image for image in by_name if image.pushed_at is None]
        return sorted(known, key=_pushed_key, reverse=descending) + unknown
    if sort == "semver":
        keyed = [(semver_key(image.tag), image) for image in by_name]
        versions = [(key, image) for key, image in keyed if key is not None]
        # sorted() is stable: equal precedence (e.g. '1.0.0' and 'v1.0.0') keeps name order.
        versions.sort(key=lambda pair: pair[0], reverse=descending)
        return [image for _, image in versions] + [image for key, image in keyed if key is None]
    raise ValueError(f"unknown sort {sort!r}")


def select_tags(images: Iterable[TaggedImage], query: TagQuery) -> list[TaggedImage]:
    """Filter by pattern (full match) and push time, sort, then keep the first ``limit``."""
    chosen = [
        image
        for image in images
        if (query.pattern is None or query.pattern.fullmatch(image.tag))
        and (
            query.pushed_since is None
            or (image.pushed_at is not None and image.pushed_at >= query.pushed_since)
        )
    ]
    ordered = sort_tags(chosen, query.sort, query.descending)
    return ordered if query.limit is None else ordered[: query.limit]


def shape_output(images: Sequence[TaggedImage], query: TagQuery) -> list[str] | list[dict[str, str]]:
    """The JSON-able result for ``query.output``; the source repository must be resolved."""
    tags = [image.tag for image in images]
    if query.output == "tags":
        return tags
    if query.output == "images":
        return [query.repository.image(tag) for tag in tags]
    if query.output == "promotions":
        if query.dest_repository is None:
            raise ValueError("output='promotions' needs dest_repository")
        return [
            {"source_image": query.repository.image(tag), "dest_image": query.dest_repository.image(tag)}
            for tag in tags
        ]
    raise ValueError(f"unknown output {query.output!r}")


def images_from_details(details: Iterable[dict[str, Any]]) -> list[TaggedImage]:
    """One :class:`TaggedImage` per tag of ``describe_images`` ``imageDetails`` (untagged skipped)."""
    found: dict[str, TaggedImage] = {}
    for detail in details:
        pushed = detail.get("imagePushedAt")
        if isinstance(pushed, datetime) and pushed.tzinfo is None:
            pushed = pushed.replace(tzinfo=UTC)
        for tag in detail.get("imageTags") or ():
            found[tag] = TaggedImage(
                tag, detail.get("imageDigest"), pushed if isinstance(pushed, datetime) else None
            )
    return list(found.values())


# ---------------------------------------------------------------------------------------------
# AWS edge
# ---------------------------------------------------------------------------------------------


def ecr_hook(aws_conn_id: str | None, region_name: str | None) -> EcrHook:
    """The Amazon provider's ECR hook: the connection's extras (``role_arn``...) decide the identity."""
    return EcrHook(aws_conn_id=aws_conn_id, region_name=region_name)  # type: ignore[no-untyped-call]


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def repository_not_found_message(repository: str, account: str | None, region: str | None) -> str:
    registry = f"registry {account}" if account else "the connection's default registry"
    where = f"region {region}" if region else "the connection's region"
    return (
        f"ECR repository {repository!r} was not found in {registry}, {where}. Check the repository "
        "name, the account and region, and that the connection's identity (or its role_arn) may "
        "call ecr:DescribeImages on it"
    )


def fetch_tags(hook: EcrHook, repository: RepositoryRef) -> tuple[list[TaggedImage], RepositoryRef]:
    """Every tag of ``repository``, and the repository resolved to the registry AWS answered for."""
    params: dict[str, Any] = {"repositoryName": repository.repository, "filter": {"tagStatus": "TAGGED"}}
    if repository.account:
        params["registryId"] = repository.account
    details: list[dict[str, Any]] = []
    try:
        for page in hook.conn.get_paginator("describe_images").paginate(**params):
            details.extend(page.get("imageDetails", []))
    except ClientError as error:
        if error_code(error) == "RepositoryNotFoundException":
            raise EcrRepositoryNotFoundError(
                repository_not_found_message(repository.repository, repository.account, repository.region)
            ) from error
        raise
    account = next((str(d["registryId"]) for d in details if d.get("registryId")), None)
    return images_from_details(details), repository.resolved(account, hook.conn_region_name)


def list_tags(
    repository: str,
    *,
    registry_id: str | None = None,
    region: str | None = None,
    pattern: str | None = None,
    regex: bool = False,
    pushed_since: datetime | str | None = None,
    sort: str | None = "semver",
    descending: bool = False,
    limit: int | None = None,
    output: str = "tags",
    dest_repository: str | None = None,
    aws_conn_id: str | None = "aws_default",
) -> list[str] | list[dict[str, str]]:
    """List the tags of an ECR repository, filtered, sorted and shaped for task mapping.

    :param repository: a repository name (``team/app``, with ``registry_id``/``region`` or the
        connection's defaults) or a URL ``<account>.dkr.ecr.<region>.amazonaws.com/team/app``
    :param registry_id: the registry's 12-digit account id; must agree with a URL
    :param region: the registry's region; must agree with a URL
    :param pattern: keep only tags that match it whole: a glob (``1.*``), or a regex with ``regex=True``
    :param pushed_since: keep only images pushed at or after this (datetime or ISO string; UTC if naive)
    :param sort: ``"semver"`` (non-versions last), ``"pushed"``, ``"name"`` or None (by name)
    :param descending: reverse the order (newest / highest first); non-versions stay last
    :param limit: keep only the first N after sorting
    :param output: ``"tags"``, ``"images"`` (full refs of the source) or ``"promotions"``
        (``{"source_image", "dest_image"}`` dicts; needs ``dest_repository``, a repository URL)
    :param aws_conn_id: the Airflow AWS connection (its extras may name a ``role_arn`` to assume)
    """
    query = parse_query(
        repository,
        registry_id=registry_id,
        region=region,
        pattern=pattern,
        regex=regex,
        pushed_since=pushed_since,
        sort=sort,
        descending=descending,
        limit=limit,
        output=output,
        dest_repository=dest_repository,
    )
    return run_query(query, aws_conn_id)


def run_query(query: TagQuery, aws_conn_id: str | None, log: Any = None) -> list[str] | list[dict[str, str]]:
    """Read the repository's tags through ``aws_conn_id`` and answer ``query``."""
    hook = ecr_hook(aws_conn_id, query.repository.region)
    images, resolved = fetch_tags(hook, query.repository)
    query = dataclasses.replace(query, repository=resolved)
    chosen = select_tags(images, query)
    (log or _log).info(
        "%d of %d tags of %s selected: %s",
        len(chosen),
        len(images),
        resolved.repository,
        ", ".join(image.tag for image in chosen) or "none",
    )
    return shape_output(chosen, query)


# ---------------------------------------------------------------------------------------------
# Operator
# ---------------------------------------------------------------------------------------------

_TEMPLATE_MARKERS = ("{{", "{%")


def _is_literal(value: object) -> bool:
    """True for a value known at DAG parse time (not a Jinja template, not an XComArg)."""
    if isinstance(value, str):
        return not any(marker in value for marker in _TEMPLATE_MARKERS)
    return value is None or isinstance(value, int | bool | datetime)


class EcrListTagsOperator(BaseOperator):
    """List an ECR repository's tags, filtered and sorted; returns (XCom) a JSON-able list.

    See :func:`list_tags` for the parameters. Literal inputs are checked when the DAG is parsed,
    templated ones after rendering. Feed the output to a mapped ``EcrPromoteOperator``:
    ``output="images"`` to ``.expand(source_image=op.output)``, ``output="promotions"`` to
    ``.expand_kwargs(op.output)``.
    """

    template_fields: Sequence[str] = (
        "repository",
        "registry_id",
        "region",
        "pattern",
        "pushed_since",
        "sort",
        "limit",
        "output_kind",
        "dest_repository",
        "aws_conn_id",
    )
    ui_color = "#e4f0ff"

    def __init__(
        self,
        *,
        repository: str,
        registry_id: str | None = None,
        region: str | None = None,
        pattern: str | None = None,
        regex: bool = False,
        pushed_since: datetime | str | None = None,
        sort: str | None = "semver",
        descending: bool = False,
        limit: int | str | None = None,
        output: str = "tags",
        dest_repository: str | None = None,
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.repository = repository
        self.registry_id = registry_id
        self.region = region
        self.pattern = pattern
        self.regex = regex
        self.pushed_since = pushed_since
        self.sort = sort
        self.descending = descending
        self.limit = limit
        # ``output`` is BaseOperator's XComArg property: the input lives (and renders) as ``output_kind``.
        self.output_kind = output
        self.dest_repository = dest_repository
        self.aws_conn_id = aws_conn_id
        if all(_is_literal(value) for value in self._inputs().values()):
            parse_query(**self._inputs())

    def _inputs(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "registry_id": self.registry_id,
            "region": self.region,
            "pattern": self.pattern,
            "regex": self.regex,
            "pushed_since": self.pushed_since,
            "sort": self.sort,
            "descending": self.descending,
            "limit": self.limit,
            "output": self.output_kind,
            "dest_repository": self.dest_repository,
        }

    def execute(self, context: Context) -> list[str] | list[dict[str, str]]:
        query = parse_query(**self._inputs())
        return run_query(query, self.aws_conn_id, self.log)
