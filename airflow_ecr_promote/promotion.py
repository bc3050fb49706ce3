"""What one pod promotes: image copies, the roles used for each side, and the registry logins.

A :class:`Promotion` is the parsed, validated form of the operator's (and the CLI's) inputs.
The pod builder derives everything from it; it never sees a raw string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from airflow_ecr_promote.copylist import SPLIT_HINT, size_problem
from airflow_ecr_promote.refs import (
    ImageRef,
    PromotionInputError,
    RoleArn,
    parse_image_ref,
    parse_role_arn,
    parse_tag,
    partition_of_region,
    show,
)

ON_CONFLICT_CHOICES = ("fail", "overwrite", "skip")


@dataclass(frozen=True)
class Copy:
    """One image copied from ``source`` to ``dest``, read and written under these roles."""

    source: ImageRef
    dest: ImageRef
    source_role: RoleArn | None = None
    dest_role: RoleArn | None = None


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
    """The copies one pod makes: one image, a batch of tags, or any list of pairs (fan-out)."""

    copies: tuple[Copy, ...]
    on_conflict: str = "fail"

    @property
    def source(self) -> ImageRef:
        return self.copies[0].source

    @property
    def dest(self) -> ImageRef:
        return self.copies[0].dest

    @property
    def source_role(self) -> RoleArn | None:
        return self.copies[0].source_role

    @property
    def dest_role(self) -> RoleArn | None:
        return self.copies[0].dest_role

    def _uses(self) -> list[tuple[str, ImageRef, RoleArn | None]]:
        return [
            use
            for copy in self.copies
            for use in (("source", copy.source, copy.source_role), ("dest", copy.dest, copy.dest_role))
        ]

    @property
    def logins(self) -> tuple[Login, ...]:
        """One login per (registry host, role): a host read and written with one role logs in once."""
        found: dict[tuple[str, RoleArn | None], tuple[str, list[str]]] = {}
        for side, ref, role in self._uses():
            _, sides = found.setdefault((ref.host, role), (ref.region, []))
            if side not in sides:
                sides.append(side)
        return tuple(
            Login(host, region, role, tuple(sides)) for (host, role), (region, sides) in found.items()
        )

    def roles_by_host(self, side: str | None = None) -> dict[str, set[RoleArn | None]]:
        """The roles each registry host is used with, on one side or on both."""
        roles: dict[str, set[RoleArn | None]] = {}
        for use_side, ref, role in self._uses():
            if side is None or side == use_side:
                roles.setdefault(ref.host, set()).add(role)
        return roles

    def shared_hosts_with_different_roles(self) -> list[str]:
        """Hosts used under two different roles (typically read as source, written as dest).

        One Docker ``config.json`` holds one credential per host, so an engine that reads only
        that file cannot serve such a host.
        """
        return sorted(host for host, roles in self.roles_by_host().items() if len(roles) > 1)


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
    source_image: object = None,
    dest_image: object = None,
    source_role_arn: object = None,
    dest_role_arn: object = None,
    source_account: object = None,
    dest_account: object = None,
    source_region: object = None,
    dest_region: object = None,
    on_conflict: object = "fail",
    dest_tags: Sequence[object] | None = None,
    pairs: Sequence[object] | None = None,
) -> Promotion:
    """Validate the operator's inputs into a :class:`Promotion`.

    Three forms: one ``source_image`` -> ``dest_image``; ``dest_tags``, where the two images name
    repositories and each tag is copied between them; or ``pairs``, a list of mappings with
    ``source_image``, ``dest_image`` and optional ``source_role_arn`` / ``dest_role_arn``
    (defaulting to the top-level roles), e.g. one source fanned out to several accounts.
    An empty ``dest_tags`` or ``pairs`` list is valid: a promotion of no copies (nothing to do).
    Raises when the list is too large for one pod (see :mod:`airflow_ecr_promote.copylist`).
    """
    source_role = parse_role_arn("source_role_arn", source_role_arn)
    dest_role = parse_role_arn("dest_role_arn", dest_role_arn)
    if pairs is not None:
        if dest_tags is not None or source_image is not None or dest_image is not None:
            raise PromotionInputError(
                "promotions",
                pairs,
                "cannot be combined with source_image, dest_image or tags",
                "Expected either promotions=[{'source_image': ..., 'dest_image': ...}, ...] alone, "
                "or source_image and dest_image (with tags for a batch)",
            )
        copies = _pair_copies(pairs, source_role, dest_role)
    elif dest_tags is not None:
        copies = tuple(
            Copy(c.source, c.dest, source_role, dest_role)
            for c in _tag_copies(source_image, dest_image, dest_tags)
        )
    else:
        source = parse_image_ref("source_image", source_image)
        dest = parse_image_ref("dest_image", dest_image, need_tag=True)
        copies = (Copy(source, dest, source_role, dest_role),)
    for copy in copies:
        _check_agrees("source_account", source_account, copy.source.account, "source_image", "account")
        _check_agrees("dest_account", dest_account, copy.dest.account, "dest_image", "account")
        _check_agrees("source_region", source_region, copy.source.region, "source_image", "region")
        _check_agrees("dest_region", dest_region, copy.dest.region, "dest_image", "region")
        _check_role_partition("source_role_arn", copy.source_role, copy.source, "source_image")
        _check_role_partition("dest_role_arn", copy.dest_role, copy.dest, "dest_image")
    promotion = Promotion(copies, parse_on_conflict(on_conflict))
    for side in ("source", "dest"):
        for host, roles in promotion.roles_by_host(side).items():
            if len(roles) > 1:
                names = sorted(str(r) if r else "the pod's own identity" for r in roles)
                raise PromotionInputError(
                    f"{side}_role_arn",
                    names,
                    f"gives {side} registry {host} more than one role in one pod",
                    f"Expected one role per {side} registry host; split the promotions into two tasks",
                )
    problem = size_problem(promotion)
    if problem:
        param, value = ("promotions", pairs) if pairs is not None else ("tags", dest_tags)
        raise PromotionInputError(param, value, problem, SPLIT_HINT)
    return promotion


_PAIR_KEYS = ("source_image", "dest_image", "source_role_arn", "dest_role_arn")


def _pair_copies(pairs: object, source_role: RoleArn | None, dest_role: RoleArn | None) -> tuple[Copy, ...]:
    expected = "Expected a list like [{'source_image': '<ecr image>', 'dest_image': '<ecr image:tag>'}]"
    if isinstance(pairs, str | bytes) or not isinstance(pairs, Sequence):
        raise PromotionInputError("promotions", pairs, "is not a list of mappings", expected)
    copies = []
    for index, pair in enumerate(pairs):
        param = f"promotions[{index}]"
        if not isinstance(pair, Mapping) or not {"source_image", "dest_image"} <= set(pair):
            raise PromotionInputError(
                param, pair, "is not a mapping with source_image and dest_image", expected
            )
        unknown = sorted(set(pair) - set(_PAIR_KEYS))
        if unknown:
            raise PromotionInputError(
                param, pair, f"has unknown keys {show(unknown)}", f"Expected keys among {_PAIR_KEYS}"
            )
        own_source_role = parse_role_arn(f"{param}.source_role_arn", pair.get("source_role_arn"))
        own_dest_role = parse_role_arn(f"{param}.dest_role_arn", pair.get("dest_role_arn"))
        copies.append(
            Copy(
                parse_image_ref(f"{param}.source_image", pair["source_image"]),
                parse_image_ref(f"{param}.dest_image", pair["dest_image"], need_tag=True),
                own_source_role or source_role,
                own_dest_role or dest_role,
            )
        )
    dests = [str(c.dest) for c in copies]
    repeated = sorted({d for d in dests if dests.count(d) > 1})
    if repeated:
        raise PromotionInputError("promotions", pairs, f"writes {repeated} more than once", expected)
    return tuple(copies)


def _repository_ref(param: str, value: object) -> ImageRef:
    if isinstance(value, str) and "@" not in value and ":" not in value.rsplit("/", 1)[-1]:
        value_with_tag = f"{value}:latest"
        ref = parse_image_ref(param, value_with_tag)
        return ImageRef(ref.host, ref.account, ref.region, ref.repository)
    ref = parse_image_ref(param, value)
    return ImageRef(ref.host, ref.account, ref.region, ref.repository)


def _tag_copies(source_image: object, dest_image: object, tags: Sequence[object]) -> tuple[Copy, ...]:
    expected = "Expected a list of tags such as ['1.4.2', '1.4.3']"
    if isinstance(tags, str | bytes) or not isinstance(tags, Sequence):
        raise PromotionInputError("tags", tags, "is not a list of tags", expected)
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
