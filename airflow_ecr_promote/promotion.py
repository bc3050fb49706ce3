"""What one pod promotes: image copies, the roles used for each side, and the registry logins.

A :class:`Promotion` is the parsed, validated form of the operator's (and the CLI's) inputs.
The pod builder derives everything from it; it never sees a raw string.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from airflow_ecr_promote.refs import (
    ImageRef,
    PromotionInputError,
    RoleArn,
    parse_image_ref,
    parse_role_arn,
    parse_tag,
    partition_of_region,
)

ON_CONFLICT_CHOICES = ("fail", "overwrite", "skip")


@dataclass(frozen=True)
class Copy:
    """One image copied from ``source`` to ``dest``."""

    source: ImageRef
    dest: ImageRef


@dataclass(frozen=True)
class Login:
    """A registry the init container logs in to, the role it assumes for it, and which side
    ("source", "dest" or both) of the copies uses that credential."""

    host: str
    region: str
    role: RoleArn | None
    sides: tuple[str, ...]


@dataclass(frozen=True)
class Promotion:
    copies: tuple[Copy, ...]
    source_role: RoleArn | None
    dest_role: RoleArn | None
    on_conflict: str = "fail"

    @property
    def source(self) -> ImageRef:
        return self.copies[0].source

    @property
    def dest(self) -> ImageRef:
        return self.copies[0].dest

    @property
    def logins(self) -> tuple[Login, ...]:
        """One login per (registry host, role): a host read and written with one role logs in once."""
        found: dict[tuple[str, RoleArn | None], tuple[str, list[str]]] = {}
        for copy in self.copies:
            for side, ref, role in (
                ("source", copy.source, self.source_role),
                ("dest", copy.dest, self.dest_role),
            ):
                _, sides = found.setdefault((ref.host, role), (ref.region, []))
                if side not in sides:
                    sides.append(side)
        return tuple(
            Login(host, region, role, tuple(sides)) for (host, role), (region, sides) in found.items()
        )

    def shared_hosts_with_different_roles(self) -> list[str]:
        """Hosts that are both read and written under two different roles.

        One Docker ``config.json`` holds one credential per host, so an engine that reads only
        that file cannot serve both sides of such a host.
        """
        if self.source_role == self.dest_role:
            return []
        sources = {c.source.host for c in self.copies}
        return sorted(sources & {c.dest.host for c in self.copies})


def _check_agrees(param: str, value: object, derived: str, image_param: str, kind: str) -> None:
    if value is None or value == "":
        return
    if not isinstance(value, str) or value != derived:
        raise PromotionInputError(
            param,
            value,
            f"disagrees with the {kind} {derived!r} in the host of {image_param}",
            f"Expected {derived!r} or leave it unset (it is derived from {image_param})",
        )


def _check_role_partition(param: str, role: RoleArn | None, image: ImageRef, image_param: str) -> None:
    if role and role.partition != image.partition:
        raise PromotionInputError(
            param,
            role.arn,
            f"is in partition {role.partition!r} but {image_param} is in {image.partition!r} "
            f"(region {image.region})",
            f"Expected an ARN starting with 'arn:{image.partition}:iam::'",
        )


def parse_on_conflict(value: object) -> str:
    if value not in ON_CONFLICT_CHOICES:
        raise PromotionInputError(
            "on_conflict",
            value,
            "is not a known choice",
            f"Expected one of {', '.join(map(repr, ON_CONFLICT_CHOICES))}",
        )
    return str(value)


def parse_promotion(
    *,
    source_image: object,
    dest_image: object,
    source_role_arn: object = None,
    dest_role_arn: object = None,
    source_account: object = None,
    dest_account: object = None,
    source_region: object = None,
    dest_region: object = None,
    on_conflict: object = "fail",
    dest_tags: Sequence[object] | None = None,
) -> Promotion:
    """Validate the operator's inputs into a :class:`Promotion`.

    With ``dest_tags``, ``source_image`` and ``dest_image`` name repositories (a tag on them is
    ignored) and each tag is copied from the source repository to the destination one.
    """
    source_role = parse_role_arn("source_role_arn", source_role_arn)
    dest_role = parse_role_arn("dest_role_arn", dest_role_arn)
    if dest_tags is None:
        source = parse_image_ref("source_image", source_image)
        dest = parse_image_ref("dest_image", dest_image, need_tag=True)
        copies: tuple[Copy, ...] = (Copy(source, dest),)
    else:
        copies = _tag_copies(source_image, dest_image, dest_tags)
    first = copies[0]
    _check_agrees("source_account", source_account, first.source.account, "source_image", "account")
    _check_agrees("dest_account", dest_account, first.dest.account, "dest_image", "account")
    _check_agrees("source_region", source_region, first.source.region, "source_image", "region")
    _check_agrees("dest_region", dest_region, first.dest.region, "dest_image", "region")
    _check_role_partition("source_role_arn", source_role, first.source, "source_image")
    _check_role_partition("dest_role_arn", dest_role, first.dest, "dest_image")
    return Promotion(copies, source_role, dest_role, parse_on_conflict(on_conflict))


def _repository_ref(param: str, value: object) -> ImageRef:
    if isinstance(value, str) and "@" not in value and ":" not in value.rsplit("/", 1)[-1]:
        value_with_tag = f"{value}:latest"
        ref = parse_image_ref(param, value_with_tag)
        return ImageRef(ref.host, ref.account, ref.region, ref.repository)
    ref = parse_image_ref(param, value)
    return ImageRef(ref.host, ref.account, ref.region, ref.repository)


def _tag_copies(source_image: object, dest_image: object, tags: Sequence[object]) -> tuple[Copy, ...]:
    expected = "Expected a non-empty list of tags such as ['1.4.2', '1.4.3']"
    if isinstance(tags, str | bytes) or not isinstance(tags, Sequence) or not tags:
        raise PromotionInputError("tags", tags, "is not a non-empty list of tags", expected)
    source_repo = _repository_ref("source_image", source_image)
    dest_repo = _repository_ref("dest_image", dest_image)
    parsed = [parse_tag(f"tags[{index}]", tag) for index, tag in enumerate(tags)]
    repeated = sorted({tag for tag in parsed if parsed.count(tag) > 1})
    if repeated:
        raise PromotionInputError("tags", tags, f"names {repeated} more than once", expected)
    return tuple(Copy(source_repo.with_tag(tag), dest_repo.with_tag(tag)) for tag in parsed)


__all__ = [
    "ON_CONFLICT_CHOICES",
    "Copy",
    "Login",
    "Promotion",
    "parse_on_conflict",
    "parse_promotion",
    "partition_of_region",
]
