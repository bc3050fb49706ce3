"""``airflow-ecr-promote render``: the operator's promotion pod as a Kubernetes Job, without Airflow.

The pod comes from the operator itself: the command instantiates :class:`EcrPromoteOperator` with
the given inputs and calls KubernetesPodOperator's ``build_pod_request_obj(dry_run=True)``, which
needs no Kubernetes API and no running Airflow. The pod's spec becomes the Job's pod template
unchanged; only the labels that describe an Airflow task run are dropped.

stdout carries the manifest and nothing else (Airflow's logs go to stderr), so the output can be
piped to ``kubectl apply -f -``. Bad input exits with code 2 and a message on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from airflow_ecr_promote import __version__
from airflow_ecr_promote.engines import DEFAULT_ENGINE, ENGINES
from airflow_ecr_promote.pod import DEFAULT_INIT_IMAGE, LABEL_PREFIX
from airflow_ecr_promote.promotion import ON_CONFLICT_CHOICES
from airflow_ecr_promote.refs import EXAMPLE_DEST, EXAMPLE_IMAGE, EXAMPLE_ROLE, PromotionInputError, show
from airflow_ecr_promote.signatures import COSIGN_IMAGE

if TYPE_CHECKING:
    from kubernetes.client import models as k8s

__all__ = ["AIRFLOW_RUN_LABELS", "TASK_ID", "CliError", "build_manifest", "default_name", "dump", "main"]

PROG = "airflow-ecr-promote"
# The operator's task_id; KPO also names the role session after it (ROLE_SESSION_NAME).
TASK_ID = "render"
ROLE_SESSION_NAME = "airflow-ecr-promote-cli"  # what CloudTrail shows for roles the Job assumes
# Labels KPO adds to identify an Airflow task run; meaningless outside Airflow.
AIRFLOW_RUN_LABELS = frozenset(
    {
        "airflow_version",
        "airflow_kpo_in_cluster",
        "kubernetes_pod_operator",
        "dag_id",
        "task_id",
        "run_id",
        "try_number",
        "map_index",
        "parent_dag_id",
    }
)
DEFAULT_NAMESPACE = "default"
DEFAULT_TTL = 600
_NAME_MAX = 63
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", re.ASCII)
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", re.ASCII)


class CliError(Exception):
    """Input the command cannot use; printed as ``airflow-ecr-promote: error: <message>``, exit 2."""


@dataclass(frozen=True)
class _Option:
    key: str  # snake_case: the operator's parameter, and the key in a --values file
    metavar: str
    help: str
    kind: type = str

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


_ENGINE_NAMES = ", ".join(ENGINES)
_PROMOTION_OPTIONS = (
    _Option(
        "source_image",
        "IMAGE",
        "image to copy, fully qualified, with a tag or a digest, e.g. "
        f"{EXAMPLE_IMAGE} or .../team/app@sha256:<64 hex>; with --tag, the repository alone "
        "(required)",
    ),
    _Option(
        "dest_image",
        "IMAGE",
        f"where to write it, fully qualified, with a tag, e.g. {EXAMPLE_DEST}; with --tag, the "
        "repository alone (required)",
    ),
    _Option(
        "source_role_arn",
        "ARN",
        f"IAM role assumed to pull, e.g. {EXAMPLE_ROLE}; unset: the pod's own identity "
        "(IRSA / EKS Pod Identity of --service-account)",
    ),
    _Option("dest_role_arn", "ARN", "IAM role assumed to push; unset: the pod's own identity"),
    _Option(
        "source_account",
        "ACCOUNT",
        "optional check: 12-digit AWS account that must equal the one in --source-image",
    ),
    _Option(
        "dest_account",
        "ACCOUNT",
        "optional check: 12-digit AWS account that must equal the one in --dest-image",
    ),
    _Option(
        "source_region", "REGION", "optional check: region (e.g. us-west-2) that must equal --source-image's"
    ),
    _Option(
        "dest_region", "REGION", "optional check: region (e.g. us-east-1) that must equal --dest-image's"
    ),
    _Option(
        "engine",
        "ENGINE",
        f"copier: one of {_ENGINE_NAMES} (default {DEFAULT_ENGINE}, the original design: a new digest, "
        "one platform); skopeo and crane keep the digest and every platform",
    ),
    _Option(
        "copier_image",
        "IMAGE",
        "override the engine's pinned image, e.g. "
        + ", ".join(f"{e.default_image} ({e.name})" for e in ENGINES.values()),
    ),
    _Option(
        "init_image", "IMAGE", f"override the login init container's image (default {DEFAULT_INIT_IMAGE})"
    ),
    _Option(
        "on_conflict",
        "POLICY",
        f"when the destination tag already holds another digest: one of {', '.join(ON_CONFLICT_CHOICES)} "
        "(default fail; kaniko supports only overwrite, its default)",
    ),
    _Option(
        "platform",
        "OS/ARCH",
        "kaniko only: the platform kaniko takes from a multi-arch source (default linux/amd64); "
        "skopeo and crane copy every platform",
    ),
    _Option(
        "tags",
        "TAG",
        "promote this tag from the repository of --source-image to the repository of --dest-image; "
        "repeat for a batch in one pod (skopeo, crane), e.g. --tag 1.4.2 --tag 1.4.3",
        kind=list,
    ),
    _Option("parallel", "N", "copies of a batch run at once, 1 to 64 (default 4)", kind=int),
    _Option(
        "create_repository",
        "{false,true,JSON}",
        "a missing destination repository: false (default) fails naming it; true creates it with the "
        "source repository's settings; a JSON object gives them, e.g. "
        '\'{"imageTagMutability": "IMMUTABLE", "scanOnPush": true}\' (needs ecr:CreateRepository and '
        "ecr:DescribeRepositories)",
    ),
    _Option(
        "with_signatures",
        "{true,false}",
        "also copy cosign's sha256-<hex>.sig/.att/.sbom tags and the OCI referrers of the image and "
        "each platform (default true with regctl, the engine that can; false otherwise)",
        kind=bool,
    ),
    _Option(
        "verify_signature_key",
        "PEM",
        'the signature gate: a PEM public key (e.g. "$(cat cosign.pub)"); cosign verifies every '
        "source image with it before anything is copied",
    ),
    _Option(
        "cosign_image",
        "IMAGE",
        f"override the signature gate's image, cosign with a shell (default {COSIGN_IMAGE})",
    ),
)
_MANIFEST_OPTIONS = (
    _Option("kind", "{job,pod}", "print a batch/v1 Job (default) or a bare v1 Pod"),
    _Option("output", "{yaml,json}", "output format (default yaml)"),
    _Option(
        "namespace", "NAMESPACE", f"Kubernetes namespace, a DNS-1123 label (default {DEFAULT_NAMESPACE})"
    ),
    _Option(
        "service_account",
        "NAME",
        "pod's service account (e.g. one bound to an IAM role with IRSA / Pod Identity); default: the "
        "namespace's default",
    ),
    _Option(
        "name",
        "NAME",
        "Job (or Pod) name, a DNS-1123 label of at most 63 characters (default derived from the "
        "destination, e.g. ecr-promote-team-app-1-4-2)",
    ),
    _Option(
        "ttl_seconds_after_finished",
        "SECONDS",
        f"Job only: delete the finished Job after this many seconds (default {DEFAULT_TTL})",
        kind=int,
    ),
)
_OPTIONS = {option.key: option for option in (*_PROMOTION_OPTIONS, *_MANIFEST_OPTIONS)}
# In a values file the batch may be written "tags" (the operator's name) or "tag" (the flag's).
_VALUE_ALIASES = {"tag": "tags"}
_CHOICES = {"kind": ("job", "pod"), "output": ("yaml", "json"), "with_signatures": ("true", "false")}

_DESCRIPTION = f"""\
Print the Kubernetes manifest that promotes (copies) an image between Amazon ECR registries:
the same pod EcrPromoteOperator runs in Airflow, as a batch/v1 Job (backoffLimit 0,
ttlSecondsAfterFinished, restartPolicy Never) to run with kubectl, Spinnaker or any other tool.
No Kubernetes API and no Airflow scheduler are used: the manifest is only printed.

example:
  {PROG} render \\
      --source-image 123456789012.dkr.ecr.us-west-2.amazonaws.com/team/app:1.4.2 \\
      --dest-image 210987654321.dkr.ecr.us-east-1.amazonaws.com/team/app:1.4.2 \\
      --source-role-arn arn:aws:iam::123456789012:role/ecr-promote-pull \\
      --dest-role-arn arn:aws:iam::210987654321:role/ecr-promote-push \\
      --engine skopeo --namespace ci | kubectl apply -f -

Inputs may also come from --values FILE, a YAML or JSON mapping with the same names in
snake_case (source_image: ..., tags: [1.4.2, 1.4.3], ...); flags given on the command line win
over the file. Bad input exits with code 2 and prints nothing on stdout.

There is no EKS cluster name here (EcrPromoteOperator's eks_cluster_name): the manifest talks to
no cluster, so the tool that applies it chooses one with its own credentials, e.g.
'aws eks update-kubeconfig --name CLUSTER --region REGION' before kubectl.
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Wrap help text without breaking image names and ARNs at their hyphens."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Promote container images between Amazon ECR registries; "
        "render the promotion as a Kubernetes Job for use without Airflow.",
        epilog=f"Run '{PROG} render --help' for the inputs and an example.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{render}", required=True)
    render = commands.add_parser(
        "render",
        help="print the promotion as a Kubernetes Job (or Pod) manifest",
        description=_DESCRIPTION,
        formatter_class=_HelpFormatter,
    )
    render.add_argument(
        "--values",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="YAML or JSON mapping of the inputs below in snake_case; flags win over it",
    )
    promotion = render.add_argument_group("promotion (the operator's parameters)")
    manifest = render.add_argument_group("manifest")
    for group, options in ((promotion, _PROMOTION_OPTIONS), (manifest, _MANIFEST_OPTIONS)):
        for option in options:
            flag = "--tag" if option.key == "tags" else option.flag
            kwargs: dict[str, Any] = {
                "dest": option.key,
                "metavar": option.metavar,
                "default": argparse.SUPPRESS,
                "help": option.help,
            }
            if option.kind is list:
                kwargs["action"] = "append"
            elif option.kind is int:
                kwargs["type"] = int
            if option.key in _CHOICES:
                kwargs["choices"] = _CHOICES[option.key]
            group.add_argument(flag, **kwargs)
    return parser


def _load_values(path: str) -> dict[str, Any]:
    """The --values file as a mapping of known snake_case keys."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise CliError(f"--values {show(path)}: cannot read the file: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise CliError(f"--values {show(path)}: not UTF-8 text: {error}") from None
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise CliError(
            f"--values {show(path)}: not valid JSON: line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    except yaml.YAMLError as error:
        where = ""
        mark = getattr(error, "problem_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}: "
        problem = getattr(error, "problem", None) or str(error)
        raise CliError(f"--values {show(path)}: not valid YAML: {where}{problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CliError(
            f"--values {show(path)}: expected a mapping such as 'source_image: <ecr image>', "
            f"not a {type(data).__name__}"
        )
    known = sorted([*(key for key in _OPTIONS if key != "tags"), "tag", "tags"])
    unknown = [
        key for key in data if not isinstance(key, str) or _VALUE_ALIASES.get(key, key) not in _OPTIONS
    ]
    if unknown:
        hints = [
            f"{show(key)} (did you mean {key.replace('-', '_')!r}?)"
            if isinstance(key, str) and key.replace("-", "_") in known
            else repr(key)
            for key in unknown
        ]
        raise CliError(
            f"--values {show(path)}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}. "
            f"Expected keys among: {', '.join(known)}"
        )
    if "tag" in data and "tags" in data:
        raise CliError(f"--values {show(path)}: give either 'tag' or 'tags', not both")
    values: dict[str, Any] = {}
    for key, value in data.items():
        key = _VALUE_ALIASES.get(key, key)
        if key == "tags" and isinstance(value, str):
            value = [value]
        is_number = isinstance(value, int) and not isinstance(value, bool)
        if key in ("source_account", "dest_account") and is_number:
            value = str(value)  # YAML reads an unquoted account as a number; the host check still applies
        values[key] = value
    return values


def _origin(key: str, from_flags: Mapping[str, Any], values_path: str | None) -> str:
    """Where an input came from, for error messages: its flag, or its key in the values file."""
    if key in from_flags or values_path is None:
        return "argument " + ("--tag" if key == "tags" else _OPTIONS[key].flag)
    return f"{key} in {values_path}"


def _check_manifest_options(options: Mapping[str, Any], origin: Callable[[str], str]) -> None:
    for key, choices in _CHOICES.items():
        given_bool = key == "with_signatures" and isinstance(options.get(key), bool)  # from a values file
        if key in options and options[key] not in choices and not given_bool:
            raise CliError(
                f"{origin(key)}: {show(options[key])} is not a known choice. Expected one of "
                f"{', '.join(map(repr, choices))}"
            )
    for key, pattern, limit, what in (
        ("namespace", _DNS_LABEL, 63, "a DNS-1123 label such as 'ci' (lowercase letters, digits, '-')"),
        ("name", _DNS_LABEL, _NAME_MAX, "a DNS-1123 label such as 'ecr-promote-team-app-1-4-2'"),
        (
            "service_account",
            _DNS_SUBDOMAIN,
            253,
            "a service account name such as 'ecr-promote' (lowercase letters, digits, '-', '.')",
        ),
    ):
        if key in options:
            value = options[key]
            if not isinstance(value, str) or len(value) > limit or not pattern.fullmatch(value):
                raise CliError(
                    f"{origin(key)}: {show(value)} is not a valid name. Expected {what}, "
                    f"at most {limit} characters"
                )
    ttl = options.get("ttl_seconds_after_finished", DEFAULT_TTL)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0:
        raise CliError(
            f"{origin('ttl_seconds_after_finished')}: {show(ttl)} is not a number of seconds. "
            "Expected a whole number >= 0, e.g. 600"
        )
    parallel = options.get("parallel", 4)
    if isinstance(parallel, bool):
        raise CliError(f"{origin('parallel')}: {show(parallel)} is not a number. Expected 1 to 64")


def _dns_label(text: str) -> str:
    name = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]+", "-", text.lower())).strip("-")
    if len(name) > _NAME_MAX:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        name = f"{name[: _NAME_MAX - len(digest) - 1].rstrip('-')}-{digest}"
    return name or "ecr-promote"


def default_name(pod: k8s.V1Pod) -> str:
    """``ecr-promote-<repository>-<tag>`` of the (first) destination, as a DNS-1123 label <= 63 chars.

    Taken from the annotations the operator puts on the pod, so the name always matches what the
    pod promotes; a batch adds ``-and-<n>-more``. Too long a name is cut and ends with a hash.
    """
    from airflow_ecr_promote.refs import parse_image_ref

    annotations = pod.metadata.annotations or {}
    dest = parse_image_ref("dest_image", annotations[f"{LABEL_PREFIX}/dest-image"], need_tag=True)
    copies = int(annotations.get(f"{LABEL_PREFIX}/copies", "1"))
    more = f"-and-{copies - 1}-more" if copies > 1 else ""
    return _dns_label(f"ecr-promote-{dest.repository}-{dest.tag}{more}")


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout meanwhile to stderr: Python-level writes (Airflow 2's
    handlers, Airflow 3's structlog, print) and, where stdout is a real file, writes to fd 1."""
    streams = [s for s in (sys.stdout, sys.__stdout__) if s is not None]
    for stream in streams:
        stream.flush()
    saved: int | None = None
    with contextlib.suppress(OSError):
        saved = os.dup(1)
        try:
            os.dup2(2, 1)
        except OSError:
            os.close(saved)
            saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def _operator_pod(inputs: Mapping[str, Any], namespace: str, service_account: str | None) -> k8s.V1Pod:
    """The operator's own pod for these inputs (KPO's ``build_pod_request_obj(dry_run=True)``)."""
    from airflow_ecr_promote.compat import build_pod_offline
    from airflow_ecr_promote.operators import EcrPromoteOperator

    kpo_kwargs: dict[str, Any] = {"namespace": namespace}
    if service_account:
        kpo_kwargs["service_account_name"] = service_account
    operator = EcrPromoteOperator(
        task_id=TASK_ID, role_session_name=ROLE_SESSION_NAME, **inputs, **kpo_kwargs
    )
    return build_pod_offline(operator)


def build_manifest(
    inputs: Mapping[str, Any],
    *,
    kind: str = "job",
    namespace: str = DEFAULT_NAMESPACE,
    service_account: str | None = None,
    name: str | None = None,
    ttl_seconds_after_finished: int = DEFAULT_TTL,
) -> dict[str, Any]:
    """The Job (or Pod) manifest, as a plain dict, for the operator's parameters in ``inputs``.

    Raises :class:`PromotionInputError` for bad inputs, exactly as the operator does.
    """
    from kubernetes.client import ApiClient

    pod = _operator_pod(inputs, namespace, service_account)
    serialised: dict[str, Any] = ApiClient().sanitize_for_serialization(pod)
    pod_metadata = serialised.get("metadata") or {}
    labels = {k: v for k, v in (pod_metadata.get("labels") or {}).items() if k not in AIRFLOW_RUN_LABELS}
    annotations = dict(pod_metadata.get("annotations") or {})
    metadata: dict[str, Any] = {"name": name or default_name(pod), "namespace": namespace, "labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    if kind == "pod":
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": serialised["spec"]}
    template_metadata: dict[str, Any] = {"labels": dict(labels)}
    if annotations:
        template_metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": ttl_seconds_after_finished,
            "template": {"metadata": template_metadata, "spec": serialised["spec"]},
        },
    }


class _ManifestDumper(yaml.SafeDumper):
    """yaml.SafeDumper that writes multi-line strings (the in-pod scripts) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ManifestDumper.add_representer(str, _represent_str)


def dump(manifest: Mapping[str, Any], output: str = "yaml") -> str:
    if output == "json":
        return json.dumps(manifest, indent=2) + "\n"
    text: str = yaml.dump(
        manifest, Dumper=_ManifestDumper, sort_keys=False, default_flow_style=False, width=2**16
    )
    return text


def _create_repository_flag(text: str, origin: Callable[[str], str]) -> bool | dict[str, Any]:
    """--create-repository's text: true, false or a JSON object of settings (checked by the operator)."""
    if text in ("true", "false"):
        return text == "true"
    try:
        settings = json.loads(text)
    except ValueError:
        settings = None
    if not isinstance(settings, dict):
        raise CliError(
            f"{origin('create_repository')}: {show(text)} is not true, false or a JSON object of settings. "
            'Expected e.g. true, or \'{"imageTagMutability": "IMMUTABLE", "scanOnPush": true}\''
        )
    return settings


def _render(args: argparse.Namespace) -> str:
    from_flags = {key: value for key, value in vars(args).items() if key in _OPTIONS}
    values_path: str | None = getattr(args, "values", None)
    merged = {**(_load_values(values_path) if values_path is not None else {}), **from_flags}

    def origin(key: str) -> str:
        return _origin(key, from_flags, values_path)

    missing = [key for key in ("source_image", "dest_image") if merged.get(key) in (None, "")]
    if missing:
        where = " (or in the --values file)" if values_path else ""
        raise CliError(
            "the following arguments are required: "
            + ", ".join(_OPTIONS[key].flag for key in missing)
            + where
            + f"; e.g. --source-image {EXAMPLE_IMAGE} --dest-image {EXAMPLE_DEST}"
        )
    _check_manifest_options(merged, origin)
    inputs = {option.key: merged[option.key] for option in _PROMOTION_OPTIONS if option.key in merged}
    if inputs.get("with_signatures") in ("true", "false"):  # the flag's text; a values file gives a bool
        inputs["with_signatures"] = inputs["with_signatures"] == "true"
    if isinstance(inputs.get("create_repository"), str):  # the flag's text; a values file gives its value
        inputs["create_repository"] = _create_repository_flag(inputs["create_repository"], origin)
    try:
        with _stdout_to_stderr():
            manifest = build_manifest(
                inputs,
                kind=merged.get("kind", "job"),
                namespace=merged.get("namespace", DEFAULT_NAMESPACE),
                service_account=merged.get("service_account"),
                name=merged.get("name"),
                ttl_seconds_after_finished=merged.get("ttl_seconds_after_finished", DEFAULT_TTL),
            )
    except PromotionInputError as error:
        key = re.sub(r"\[\d+\]$", "", error.param)
        where = origin(key) if key in _OPTIONS else f"argument {error.param}"
        raise CliError(f"{where}: {error}") from None
    return dump(manifest, merged.get("output", "yaml"))


def main(argv: Sequence[str] | None = None) -> int:
    """The ``airflow-ecr-promote`` command; returns the exit code (0, or 2 for bad input)."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or argparse's own usage error (exit 2)
        return done.code if isinstance(done.code, int) else 2
    try:
        text = _render(args)
    except CliError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
