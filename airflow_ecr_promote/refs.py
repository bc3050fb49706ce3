"""Parse and validate ECR image references and IAM role ARNs.

Everything downstream (pod building, the CLI, the operator) takes the frozen objects made here,
never raw strings: a value that reaches a pod has passed one of these parsers, and a value that
does not parse raises :class:`PromotionInputError` naming the parameter, showing the value and
giving an example of a valid one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "ImageRef",
    "PromotionInputError",
    "RoleArn",
    "parse_image_ref",
    "parse_role_arn",
    "parse_tag",
]

EXAMPLE_IMAGE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/team/app:1.4.2"
EXAMPLE_DEST = "210987654321.dkr.ecr.us-east-1.amazonaws.com/team/app:1.4.2"
EXAMPLE_ROLE = "arn:aws:iam::123456789012:role/ecr-promote-pull"

_REGION = r"[a-z]{2}(?:-[a-z]+){1,2}-\d{1,2}"
# Standard, FIPS, dual-stack and China hosts. The account is always the first label.
_HOST = re.compile(
    rf"(?P<account>\d{{12}})\."
    rf"(?:dkr\.ecr(?:-fips)?\.(?P<region>{_REGION})\.amazonaws\.com(?P<cn>\.cn)?"
    rf"|dkr-ecr(?:-fips)?\.(?P<ds_region>{_REGION})\.on\.aws)",
    re.ASCII,
)
# ECR repository names: lowercase path components separated by '/', 2-256 characters.
# Every pattern is matched whole (fullmatch: "$" would also match before a final newline)
# and in ASCII (\d would also match Arabic-Indic and other Unicode digits).
_REPOSITORY = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*", re.ASCII)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}", re.ASCII)
# IAM: a path of at most 512 characters, a role name of at most 64.
_ROLE_ARN = re.compile(
    r"arn:(?P<partition>aws|aws-cn|aws-us-gov):iam::(?P<account>\d{12}):"
    r"role/(?P<name>(?=[A-Za-z0-9_+=,.@/-]{1,576}\Z)(?:[A-Za-z0-9_+=,.@-]+/)*[A-Za-z0-9_+=,.@-]{1,64})",
    re.ASCII,
)
# What a container image reference can hold (registry, path, tag, digest); never a shell character.
IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,511}", re.ASCII)
_MAX_SHOWN = 160


class PromotionInputError(ValueError):
    """A promotion input that cannot be used: raised before any pod is created."""

    def __init__(self, param: str, value: object, problem: str, expected: str) -> None:
        self.param = param
        self.value = value
        self.problem = problem
        self.expected = expected
        super().__init__(f"{param}={show(value)}: {problem}. {expected}")


def show(value: object) -> str:
    """repr() of a user value, shortened so that a huge hostile value stays readable."""
    text = repr(value)
    if len(text) > _MAX_SHOWN:
        text = f"{text[: _MAX_SHOWN - 20]}...({len(text)} chars)"
    return text


def partition_of_region(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


@dataclass(frozen=True)
class ImageRef:
    """An ECR image: ``<account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag][@digest]``."""

    host: str
    account: str
    region: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def partition(self) -> str:
        return partition_of_region(self.region)

    @property
    def repository_url(self) -> str:
        return f"{self.host}/{self.repository}"

    def with_tag(self, tag: str) -> ImageRef:
        return ImageRef(self.host, self.account, self.region, self.repository, tag, None)

    def __str__(self) -> str:
        text = self.repository_url
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


@dataclass(frozen=True)
class RoleArn:
    """An IAM role ARN of the aws, aws-cn or aws-us-gov partition."""

    arn: str
    partition: str
    account: str
    name: str

    def __str__(self) -> str:
        return self.arn


def _expect_str(param: str, value: object, expected: str) -> str:
    if not isinstance(value, str):
        raise PromotionInputError(param, value, f"must be a string, not {type(value).__name__}", expected)
    return value


def parse_image_ref(param: str, value: object, *, need_tag: bool = False) -> ImageRef:
    """Parse a fully qualified ECR reference; ``param`` names the input in error messages."""
    expected = f"Expected a fully qualified ECR image such as {EXAMPLE_IMAGE!r}"
    text = _expect_str(param, value, expected)
    if text != text.strip():
        raise PromotionInputError(param, value, "has leading or trailing whitespace", expected)
    host, slash, rest = text.partition("/")
    if not slash or not rest:
        raise PromotionInputError(param, value, "has no repository after the registry host", expected)
    match = _HOST.fullmatch(host)
    if not match:
        raise PromotionInputError(
            param,
            value,
            f"registry host {show(host)} is not an ECR registry "
            "(<12-digit account>.dkr.ecr.<region>.amazonaws.com[.cn])",
            expected,
        )
    region = match["region"] or match["ds_region"]
    if bool(match["cn"]) != region.startswith("cn-"):
        raise PromotionInputError(
            param,
            value,
            f"region {region!r} does not belong to the domain of {show(host)} "
            "(China regions use .amazonaws.com.cn, all others .amazonaws.com)",
            expected,
        )
    name, at, digest = rest.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise PromotionInputError(
            param, value, f"digest {show(digest)} is not sha256:<64 hex digits>", expected
        )
    repository, tag = name, None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repository, _, tag = name.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise PromotionInputError(
                param,
                value,
                f"tag {show(tag)} is not a valid tag (letters, digits, '_', '.', '-'; "
                "at most 128; not starting with '.' or '-')",
                expected,
            )
    if not (2 <= len(repository) <= 256 and _REPOSITORY.fullmatch(repository)):
        raise PromotionInputError(
            param,
            value,
            f"repository {show(repository)} is not a valid ECR repository name "
            "(lowercase letters, digits, '.', '_', '-' separated by '/', 2-256 characters)",
            expected,
        )
    if need_tag and (tag is None or at):
        raise PromotionInputError(
            param,
            value,
            "a destination is written by tag, so it needs a tag and no digest",
            f"Expected for example {EXAMPLE_DEST!r}",
        )
    if not need_tag and tag is None and not at:
        raise PromotionInputError(
            param, value, "names no tag or digest", f"{expected} or .../team/app@sha256:<64 hex>"
        )
    return ImageRef(host, match["account"], region, repository, tag, digest or None)


def parse_tag(param: str, value: object) -> str:
    expected = "Expected an image tag such as '1.4.2' (letters, digits, '_', '.', '-'; at most 128)"
    text = _expect_str(param, value, expected)
    if not _TAG.fullmatch(text):
        raise PromotionInputError(param, value, "is not a valid image tag", expected)
    return text


def parse_role_arn(param: str, value: object) -> RoleArn | None:
    """Parse an IAM role ARN; None or '' means: use the pod's own identity."""
    if value is None or value == "":
        return None
    expected = f"Expected an IAM role ARN such as {EXAMPLE_ROLE!r}, or None to use the pod's own identity"
    text = _expect_str(param, value, expected)
    match = _ROLE_ARN.fullmatch(text)
    if not match:
        raise PromotionInputError(param, value, "is not an IAM role ARN", expected)
    return RoleArn(text, match["partition"], match["account"], match["name"])
