"""EcrPromoteOperator: KubernetesPodOperator plus one concern, promoting an ECR image.

Inputs are plain string template fields. They are validated at construction when they are
literal, and again after rendering, in ``build_pod_request_obj``, before any pod exists. The
pieces of the pod come from :func:`airflow_ecr_promote.pod.plan_pod` and are set on KPO's own
fields before KPO builds the pod, so the cluster's ``pod_mutation_hook`` sees the whole pod.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import yaml
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.utils.pod_manager import PodNotFoundException
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

from airflow_ecr_promote import assets, defaults
from airflow_ecr_promote.artifacts import artifact_engines, refused
from airflow_ecr_promote.compat import (
    AirflowException,
    AssetAlias,
    async_hook_reads_kube_config_path,
    cleanup_kwargs,
    kube_config_source,
)
from airflow_ecr_promote.discovery import EcrListTagsOperator
from airflow_ecr_promote.eks import EksTarget, eks_kubeconfig, parse_eks_target
from airflow_ecr_promote.engines import ENGINES, Engine
from airflow_ecr_promote.findings import describe_refusal
from airflow_ecr_promote.links import EcrImageLink, link_target
from airflow_ecr_promote.pod import (
    INIT_CONTAINER_NAME,
    LABEL_PREFIX,
    OWN_VOLUMES,
    REPOSITORY_CONTAINER_NAME,
    PodPlan,
    plan_pod,
)
from airflow_ecr_promote.precheck import (
    confirm_promoted,
    find_in_place,
    index_ranges,
    look_up_kinds,
    parse_index_ranges,
    split,
)
from airflow_ecr_promote.promotion import Copy, Promotion, parse_promotion
from airflow_ecr_promote.refs import IMAGE_NAME, PromotionInputError, parse_image_ref, parse_role_arn
from airflow_ecr_promote.repository import parse_create_repository
from airflow_ecr_promote.result import (
    Confirm,
    PodOutcome,
    collected_pod_entries,
    describe_failures,
    entries_of,
    in_place_entries,
    merge_entries,
    pod_gone_failure,
    present,
    read_pod,
    refused_entry,
    summarize,
)
from airflow_ecr_promote.scan_api import judge_images
from airflow_ecr_promote.scan_gate import ScanGate, parse_scan_gate, pin_judged, refused_copies, with_scan
from airflow_ecr_promote.signatures import VERIFY_CONTAINER_NAME

__all__ = ["EcrListTagsOperator", "EcrPromoteError", "EcrPromoteOperator"]

if TYPE_CHECKING:
    from airflow.sdk import Context

_TEMPLATE_MARKERS = ("{{", "{%")
# on a pod that carries only some copies: the indexes of those found in place before it
IN_PLACE_ANNOTATION = f"{LABEL_PREFIX}/in-place"
# on a pod that carries only some copies: the indexes of those the scan gate refused before it
SCAN_REFUSED_ANNOTATION = f"{LABEL_PREFIX}/scan-refused"
SCAN_REFUSED_UNCONFIRMED = (
    "refused by the scan gate before the pod started (the first try's log names its findings)"
)


# The inputs that decide the pod: checked at construction when none of them is templated.
PROMOTION_FIELDS = (
    "source_image",
    "dest_image",
    "source_role_arn",
    "dest_role_arn",
    "source_account",
    "dest_account",
    "source_region",
    "dest_region",
    "engine",
    "copier_image",
    "init_image",
    "on_conflict",
    "platform",
    "tags",
    "promotions",
    "with_signatures",
    "verify_signature_key",
    "cosign_image",
    "create_repository",
)
# The scan-findings gate's inputs (README "Scan-findings gate"), with the connection it reads with.
SCAN_FIELDS = ("max_severity", "ignore_findings", "scan_wait", "on_findings")


def _current_dag() -> Any:
    try:
        from airflow.sdk.definitions._internal.contextmanager import DagContext
    except ImportError:  # Airflow 2.11
        from airflow.models.dag import DagContext  # type: ignore[no-redef]
    return DagContext.get_current_dag()


class EcrPromoteError(AirflowException):
    """The promotion pod ran and failed; the message says why and for which image."""


def _is_literal(value: object) -> bool:
    """True for a value known at DAG parse time (not a Jinja template, not an XComArg)."""
    if value is None:
        return True
    if isinstance(value, str):
        return not any(marker in value for marker in _TEMPLATE_MARKERS)
    if isinstance(value, list | tuple):
        return all(isinstance(v, str | dict) and _is_literal(v) for v in value)
    if isinstance(value, dict):
        return all(_is_literal(v) for v in value.values())
    return isinstance(value, int | bool)


class EcrPromoteOperator(KubernetesPodOperator):
    """Promote (copy) an image from one account's ECR to another's in a Kubernetes pod.

    An init container (aws CLI) assumes ``source_role_arn`` and ``dest_role_arn`` (or uses the
    pod's own identity for a side whose role is None) and writes Docker credentials to an
    in-memory volume; the copier container (``engine``) copies the image.

    :param source_image: ``<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>`` or ``@sha256:...``
    :param dest_image: the destination, with a tag
    :param source_role_arn: role assumed to pull; None: the pod's identity (IRSA / Pod Identity)
    :param dest_role_arn: role assumed to push; None: the pod's identity
    :param source_account: optional; must agree with the account in ``source_image``
    :param dest_account: optional; must agree with the account in ``dest_image``
    :param source_region: optional; must agree with the region in ``source_image``
    :param dest_region: optional; must agree with the region in ``dest_image``
    :param engine: ``"kaniko"`` (the original design), ``"skopeo"``, ``"crane"`` or ``"regctl"``
        (digest kept); None: ``[ecr_promote] default_engine``, else kaniko. skopeo, crane and regctl
        also promote Helm charts and other OCI artifacts; kaniko is refused for a source that is
        not a container image, before any pod when the worker has an AWS connection
        (``source_aws_conn_id`` or ``dest_aws_conn_id``: ``ecr:BatchGetImage``), else by the pod's
        login container before anything is written
    :param copier_image: overrides ``[ecr_promote] <engine>_image`` and the engine's pinned image
    :param init_image: overrides ``[ecr_promote] init_image`` and the pinned AWS CLI image
    :param on_conflict: when the destination tag holds another digest: ``"fail"`` (default for
        skopeo and crane), ``"overwrite"`` or ``"skip"``; kaniko always overwrites
    :param platform: kaniko only: the platform (``os/arch[/variant]``) kaniko takes from a
        multi-arch source (default ``"linux/amd64"``); skopeo and crane copy every platform
    :param tags: promote these tags from the repository of ``source_image`` to the repository of
        ``dest_image`` in one pod (skopeo, crane); the return value lists each
    :param promotions: instead of ``source_image`` / ``dest_image``: a list of
        ``{"source_image", "dest_image"[, "source_role_arn", "dest_role_arn"]}`` copied in one
        pod, e.g. one source fanned out to several accounts or regions (skopeo, crane)
    :param create_repository: False (default): a missing destination repository fails the task,
        naming it and the fixes. True: the destination role creates it, with the source repository's
        tag mutability, scan on push and encryption type; a dict of settings (``imageTagMutability``,
        ``scanOnPush``, ``encryptionType``, ``kmsKey``): creates it with those. The repository is
        created after the signature gate, when there is one, and before any copy. Needs
        ``ecr:CreateRepository`` and ``ecr:DescribeRepositories`` (README "IAM policies")
    :param parallel: copies run at once in a batch
    :param with_signatures: also copy, for the image and each platform manifest, cosign's
        ``sha256-<hex>.sig/.att/.sbom`` tags and the OCI referrers (signatures, attestations, SBOMs);
        the return value lists them (``cosign_tags``, ``referrers``). None: on for ``"regctl"``, the
        engine that can; True with another engine is refused
    :param verify_signature_key: a PEM public key (``cosign.pub``): the signature gate. An init
        container resolves every source image to its digest once and runs ``cosign verify --key``
        on those digests (cosign's ``.sig`` tags and OCI 1.1 referrer signatures) before the
        repository step and the copier, which copies the verified digests; an image without a
        valid signature fails the task and nothing is written, repositories included. The gate
        sees only the source's credentials. None: no gate; an empty or blank key is refused
    :param cosign_image: the gate's image; overrides ``[ecr_promote] cosign_image`` and the pinned
        ``ghcr.io/sigstore/cosign/cosign`` release
    :param dest_aws_conn_id: an Airflow AWS connection that can call ``ecr:BatchGetImage`` and
        ``ecr:DescribeImages`` on the destination: when set, the worker compares digests through
        the ECR API first; the pod gets only the copies whose destination tag does not already hold
        its source's digest (and their signatures, with ``with_signatures``), and no pod starts
        when none is left
    :param source_aws_conn_id: the same for the source (default: ``dest_aws_conn_id``)
    :param role_session_name: the STS session name CloudTrail shows for the assumed roles
        (default: ``ecr-promote-<dag_id>-<task_id>``)
    :param eks_cluster_name: run the pod on this EKS cluster, for Airflow outside it (MWAA, ECS,
        VMs): the Amazon provider's EksHook writes the kubeconfig, as for its EksPodOperator.
        Not with ``config_file``, ``in_cluster`` or ``deferrable``
    :param eks_region: the cluster's region (default: the region of ``eks_aws_conn_id``)
    :param eks_aws_conn_id: the Airflow AWS connection that calls ``eks:DescribeCluster`` and signs
        the cluster token (default ``aws_default``; None: boto3's default credentials)
    :param max_severity: the scan-findings gate: ``"INFORMATIONAL"``, ``"LOW"``, ``"MEDIUM"``,
        ``"HIGH"`` or ``"CRITICAL"``. Before any pod, the worker reads each source image's ECR scan
        (basic or Amazon Inspector enhanced) through ``source_aws_conn_id`` and refuses an image with
        a finding of that severity or worse, or of unknown severity (``UNDEFINED``, ``UNTRIAGED``),
        or whose scan failed, is unsupported or is missing after ``scan_wait``. None: no gate; an
        empty or unknown value is refused
    :param ignore_findings: vulnerability ids (``CVE-...``, ``GHSA-...``) the gate does not count
    :param scan_wait: seconds to wait for a scan that is IN_PROGRESS or that the gate started
        (``StartImageScan``, for an image never scanned); default 300, at most 3600
    :param on_findings: a refused image: ``"fail"`` (default; the task fails naming it, after the
        other images of a batch are promoted) or ``"skip"`` (listed as skipped; the task succeeds)
    :param do_xcom_push: store the result dict as the task's return value, so downstream tasks can
        pull it or ``.expand()`` over it (no XCom sidecar runs either way); False stores nothing
    """

    template_fields: Sequence[str] = (
        *KubernetesPodOperator.template_fields,
        *PROMOTION_FIELDS,
        *SCAN_FIELDS,
        "source_aws_conn_id",
        "dest_aws_conn_id",
        "eks_cluster_name",
        "eks_region",
        "eks_aws_conn_id",
    )
    ui_color = "#f0e4ff"
    # (connect, read) seconds for reading the copier's log in cleanup: a node that is gone
    # (Fargate, Karpenter consolidation) can leave the API server's log request hanging, and the
    # task must then fail with what it knows rather than wait without end
    log_read_timeout: tuple[float, float] = (10.0, 60.0)
    operator_extra_links = (*KubernetesPodOperator.operator_extra_links, EcrImageLink())

    def __init__(
        self,
        *,
        source_image: str | None = None,
        dest_image: str | None = None,
        source_role_arn: str | None = None,
        dest_role_arn: str | None = None,
        source_account: str | None = None,
        dest_account: str | None = None,
        source_region: str | None = None,
        dest_region: str | None = None,
        engine: str | None = None,
        copier_image: str | None = None,
        init_image: str | None = None,
        on_conflict: str | None = None,
        platform: str | None = None,
        tags: list[str] | None = None,
        promotions: list[dict[str, str]] | None = None,
        create_repository: bool | dict[str, Any] = False,
        parallel: int = 4,
        with_signatures: bool | None = None,
        verify_signature_key: str | None = None,
        cosign_image: str | None = None,
        max_severity: str | None = None,
        ignore_findings: list[str] | str | None = None,
        scan_wait: int | str | None = None,
        on_findings: str | None = None,
        source_aws_conn_id: str | None = None,
        dest_aws_conn_id: str | None = None,
        role_session_name: str | None = None,
        eks_cluster_name: str | None = None,
        eks_region: str | None = None,
        eks_aws_conn_id: str | None = "aws_default",
        do_xcom_push: bool = True,
        termination_message_policy: str = "FallbackToLogsOnError",
        init_container_logs: Any = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            do_xcom_push=do_xcom_push,
            termination_message_policy=termination_message_policy,
            init_container_logs=init_container_logs,
            **kwargs,
        )
        self.source_image = source_image
        self.dest_image = dest_image
        self.source_role_arn = source_role_arn
        self.dest_role_arn = dest_role_arn
        self.source_account = source_account
        self.dest_account = dest_account
        self.source_region = source_region
        self.dest_region = dest_region
        self.engine = engine
        self.copier_image = copier_image
        self.init_image = init_image
        self.on_conflict = on_conflict
        self.platform = platform
        self.tags = tags
        self.promotions = promotions
        self.create_repository = create_repository
        self.parallel = parallel
        self.with_signatures = with_signatures
        self.verify_signature_key = verify_signature_key
        self.cosign_image = cosign_image
        self.max_severity = max_severity
        self.ignore_findings = ignore_findings
        self.scan_wait = scan_wait
        self.on_findings = on_findings
        self.source_aws_conn_id = source_aws_conn_id
        self.dest_aws_conn_id = dest_aws_conn_id
        self.role_session_name = role_session_name
        self.eks_cluster_name = eks_cluster_name
        self.eks_region = eks_region
        self.eks_aws_conn_id = eks_aws_conn_id
        self.push_result = do_xcom_push
        self._promotion: Promotion | None = None
        # copies the worker found in place before the pod (index in the promotion: digest, None
        # when a resumed task could not confirm it again); the pod gets only the others
        self._in_place: dict[int, str | None] = {}
        # copies the scan gate refused before the pod (index: their entry), and every source's verdict
        self._refused: dict[int, dict[str, Any]] = {}
        self._verdicts: dict[Any, Any] = {}
        self._gate: ScanGate | None = None
        self._engine: Engine | None = None
        self._result: dict[str, Any] | None = None
        self._context: Context | None = None
        self._in_kpo = False
        self._pod_gone = False  # the API server no longer had the pod when cleanup read it
        self._plan_labels: set[str] = set()  # the label keys the pod plan set (what the pod carries)
        outlets = list(self.outlets or [])
        own = next((o for o in outlets if isinstance(o, AssetAlias) and assets.is_own_alias(o.name)), None)
        if own is None:  # a mapped task gets its alias from partial()
            own = AssetAlias(name=assets.alias_name(self.dag_id if self.has_dag() else "", self.task_id))  # type: ignore[no-untyped-call]
            self.outlets = [*outlets, own]
        self.asset_alias: str = own.name
        self._check_literal_inputs()

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """``.partial()`` declares the task's asset alias too, so that the DAG as parsed (and
        serialized) names it, as it does for an unmapped task."""
        dag = kwargs.get("dag") or _current_dag()
        alias = AssetAlias(name=assets.alias_name(dag.dag_id if dag else "", str(kwargs.get("task_id", ""))))
        kwargs["outlets"] = [*(kwargs.get("outlets") or []), alias]
        return super().partial(**kwargs)

    def _check_literal_inputs(self) -> None:
        """Fail at DAG parse time for literal values; templated ones are checked after rendering."""
        if _is_literal(self.engine):
            defaults.engine(self.engine)
        single = self.tags is None and self.promotions is None
        if _is_literal(self.source_image) and single:
            parse_image_ref("source_image", self.source_image)
        if _is_literal(self.dest_image) and single:
            parse_image_ref("dest_image", self.dest_image, need_tag=True)
        for param in ("source_role_arn", "dest_role_arn"):
            if _is_literal(getattr(self, param)):
                parse_role_arn(param, getattr(self, param))
        if not isinstance(self.parallel, int) or not 1 <= self.parallel <= 64:
            raise PromotionInputError("parallel", self.parallel, "is out of range", "Expected 1 to 64")
        if all(_is_literal(getattr(self, name)) for name in PROMOTION_FIELDS):
            self._plan()
        if all(_is_literal(v) for v in (self.eks_cluster_name, self.eks_region, self.eks_aws_conn_id)):
            self._eks_target()
        gate_inputs = (*SCAN_FIELDS, "source_aws_conn_id", "dest_aws_conn_id")
        if all(_is_literal(getattr(self, name)) for name in gate_inputs):
            self._scan_gate()

    def _scan_gate(self) -> ScanGate | None:
        """The scan-findings gate the (rendered) inputs ask for; raises PromotionInputError."""
        return parse_scan_gate(
            self.max_severity,
            self.ignore_findings,
            self.scan_wait,
            self.on_findings,
            aws_conn_id=self.source_aws_conn_id or self.dest_aws_conn_id,
        )

    def _eks_target(self) -> EksTarget | None:
        return parse_eks_target(
            self.eks_cluster_name,
            self.eks_region,
            self.eks_aws_conn_id,
            config_file=self.config_file,
            in_cluster=self.in_cluster,
            deferrable=self.deferrable,
        )

    def _plan(self) -> PodPlan | None:
        """Parse the (rendered) inputs and plan the pod (None: nothing to promote); raises
        PromotionInputError."""
        engine = defaults.engine(self.engine)
        promotion = parse_promotion(
            source_image=self.source_image,
            dest_image=self.dest_image,
            source_role_arn=self.source_role_arn,
            dest_role_arn=self.dest_role_arn,
            source_account=self.source_account,
            dest_account=self.dest_account,
            source_region=self.source_region,
            dest_region=self.dest_region,
            on_conflict=self.on_conflict or engine.default_on_conflict,
            dest_tags=self.tags,
            pairs=self.promotions,
        )
        for param in ("copier_image", "init_image", "cosign_image"):
            value = getattr(self, param)
            if value is not None and not (isinstance(value, str) and IMAGE_NAME.fullmatch(value)):
                raise PromotionInputError(
                    param,
                    value,
                    "is not a container image reference (letters, digits and . _ : / @ - only)",
                    "Expected e.g. 'quay.io/skopeo/stable:v1.20.0', or None for the default image",
                )
        if not promotion.copies:
            self._promotion, self._engine = promotion, engine
            return None
        dag_id = self.dag_id if self.has_dag() else ""  # type: ignore[no-untyped-call]
        session = self.role_session_name or "-".join(p for p in ("ecr-promote", dag_id, self.task_id) if p)
        plan = plan_pod(
            self._pod_promotion(promotion),
            engine,
            init_image=defaults.init_image(self.init_image),
            copier_image=defaults.copier_image(engine, self.copier_image),
            parallel=self.parallel,
            role_session_name=session,
            platform=self.platform,
            with_signatures=self.with_signatures,
            verify_signature_key=self.verify_signature_key,
            cosign_image=defaults.cosign_image(self.cosign_image),
            create_repository=parse_create_repository(self.create_repository),
        )
        self._promotion, self._engine = promotion, engine
        return plan

    def _pod_promotion(self, promotion: Promotion) -> Promotion:
        """What the pod copies: the promotion without the copies found in place or refused before
        it; a source the scan gate judged by tag is pinned to the digest it judged
        (``repo:tag@sha256:...``), so a tag moved after the gate cannot carry unjudged bytes."""
        decided = self._in_place.keys() | self._refused.keys()
        rest = tuple(
            pin_judged(c, self._verdicts) for i, c in enumerate(promotion.copies) if i not in decided
        )
        return Promotion(rest, promotion.on_conflict) if rest else promotion

    @contextlib.contextmanager
    def _kpo_without_xcom(self) -> Iterator[None]:
        """Run KPO with ``do_xcom_push`` False, then give the task runner the user's choice back.

        The flag has two readers. KPO reads it as "add the XCom sidecar and read
        /airflow/xcom/return.json"; the pod reports through termination messages, so KPO must see
        False. Airflow's task runner reads it as "store the return value" and, only then, records
        the value's length for mapped downstream tasks; a value pushed by hand is not recorded
        (``XComForMappingNotPushed``). So the flag keeps the user's choice outside KPO's calls.
        """
        if self._in_kpo:
            yield
            return
        self.push_result = wanted = self.do_xcom_push
        self.do_xcom_push, self._in_kpo = False, True
        try:
            yield
        finally:
            self.do_xcom_push, self._in_kpo = wanted, False

    def build_pod_request_obj(self, context: Context | None = None, *args: Any, **kwargs: Any) -> k8s.V1Pod:
        with self._kpo_without_xcom():
            return self._build_pod(context, *args, **kwargs)

    def _build_pod(self, context: Context | None, *args: Any, **kwargs: Any) -> k8s.V1Pod:
        plan = self._plan()
        if plan is None:
            param = "tags" if self.tags is not None else "promotions"
            raise PromotionInputError(
                param,
                getattr(self, param),
                "is empty: there is nothing to promote, so there is no pod to build",
                "Expected at least one entry (the operator itself succeeds without a pod)",
            )
        own_env = {env.name for env in plan.env}
        user_env = self.env_vars or []
        if isinstance(user_env, dict):
            user_env = [k8s.V1EnvVar(name=name, value=value) for name, value in user_env.items()]
        self.image = plan.image
        self.cmds = plan.cmds or []
        self.arguments = plan.args
        self.env_vars = [e for e in user_env if getattr(e, "name", None) not in own_env] + plan.env
        own_mounts = {m.name for m in plan.volume_mounts}
        self.volume_mounts = [
            m for m in self.volume_mounts or [] if getattr(m, "name", None) not in own_mounts
        ] + plan.volume_mounts
        self.volumes = [
            v for v in self.volumes or [] if getattr(v, "name", None) not in OWN_VOLUMES
        ] + plan.volumes
        own_inits = (INIT_CONTAINER_NAME, VERIFY_CONTAINER_NAME, REPOSITORY_CONTAINER_NAME)
        self.init_containers = [
            c for c in self.init_containers or [] if getattr(c, "name", None) not in own_inits
        ] + plan.init_containers
        self.labels = {**(self.labels or {}), **plan.labels}
        self._plan_labels = set(plan.labels)
        self.annotations = {**(self.annotations or {}), **plan.annotations}
        self.annotations.pop(IN_PLACE_ANNOTATION, None)
        if self._in_place:  # for a resumed (deferred) task, a new instance: what the pod carries
            self.annotations[IN_PLACE_ANNOTATION] = index_ranges(self._in_place)
        self.annotations.pop(SCAN_REFUSED_ANNOTATION, None)
        if self._refused:
            self.annotations[SCAN_REFUSED_ANNOTATION] = index_ranges(self._refused)
        if not self.security_context:
            self.security_context = plan.pod_security_context
        if not self.container_security_context:
            self.container_security_context = plan.container_security_context
        if not self.container_resources:
            self.container_resources = plan.resources
        pod = super().build_pod_request_obj(context, *args, **kwargs)
        if pod.spec.automount_service_account_token is None:
            # Nothing in the pod talks to the Kubernetes API: no API token in its containers (the
            # gate and the copier included). IRSA and EKS Pod Identity project tokens of their own.
            pod.spec.automount_service_account_token = False
        return pod

    def execute(self, context: Context) -> Any:
        self._context = context
        self._plan()
        eks = self._eks_target()
        self._check_artifacts()
        self._gate = self._scan_gate()
        self._judge_scans()
        no_pod = self._nothing_to_promote(context) or self._all_in_place()
        if no_pod and not self._may_have_earlier_pod(context):
            return self._finish(context)
        with self._kubernetes(eks):
            if no_pod:
                self._settle_earlier_pod(context)
            else:
                with self._kpo_without_xcom():
                    super().execute(context)
        return self._finish(context)

    @contextlib.contextmanager
    def _kubernetes(self, eks: EksTarget | None) -> Iterator[None]:
        """The cluster KPO's client talks to: the connection's, or the EKS cluster named."""
        if eks is None:
            yield
            return
        self.in_cluster = False
        with eks_kubeconfig(eks, self.namespace) as self.config_file:
            yield

    def _may_have_earlier_pod(self, context: Context) -> bool:
        """A retry that may reattach (``reattach_on_restart``): an earlier try's pod may be left."""
        ti = context.get("ti")
        return bool(self.reattach_on_restart) and int(getattr(ti, "try_number", 1) or 1) > 1

    def _settle_earlier_pod(self, context: Context) -> None:
        """A retry that starts no pod (every copy found in place): the pod of an earlier try whose
        worker was killed, found as KPO's reattach finds it, ends as this task's pod would, by
        ``on_finish_action``, labelled checked first so that no later try reattaches to it."""
        try:
            pod = self.find_pod(self.namespace, context=context)
        except Exception as error:  # the promotion is complete; the pod only costs its room
            self.log.warning("Could not look for an earlier try's pod: %s", error)
            return
        if pod is None:
            return
        phase = pod.status.phase if pod.status else None
        self.log.info(
            "Pod %s, started by an earlier try, is %s; every copy is in place without it.",
            pod.metadata.name,
            phase,
        )
        self.patch_already_checked(pod, reraise=False)
        self.process_pod_deletion(pod, reraise=False)

    def _check_artifacts(self) -> None:
        """An engine that cannot carry OCI artifacts (kaniko), with an AWS connection on the worker:
        each source's manifest through the ECR API, before any pod; a Helm chart or another
        artifact is refused, naming the engines that carry it. Sources the API did not show are
        checked by the pod's login container, before it writes anything."""
        engine, promotion = self._engine, self._promotion
        conn_id = self.source_aws_conn_id or self.dest_aws_conn_id
        if engine is None or engine.carries_artifacts or promotion is None or conn_id is None:
            return
        kinds = look_up_kinds(conn_id, [c.source for c in promotion.copies]) or {}
        error = refused(engine.name, kinds, artifact_engines(ENGINES.values()))
        if error is not None:
            raise error
        self.log.info("Every source is a container image (ECR API): engine %s can promote it.", engine.name)

    def _judge_scans(self) -> None:
        """The scan-findings gate, before any pod: each source's findings through the ECR API; the
        copies of a refused source leave the pod (their entries say why)."""
        self._refused, self._verdicts = {}, {}
        if self._gate is None or self._promotion is None or not self._promotion.copies:
            return
        copies = self._promotion.copies
        self._verdicts = judge_images(
            self.source_aws_conn_id or self.dest_aws_conn_id, [c.source for c in copies], self._gate
        )
        self._refused = refused_copies(copies, self._verdicts, self._gate)
        for image, verdict in self._verdicts.items():
            if not verdict.passed:
                self.log.warning("Scan gate: %s %s", image, describe_refusal(verdict))
        self.log.info(
            "Scan gate (max_severity=%s): %d of %d images passed; the refused ones (on_findings=%r) are "
            "not written.",
            self._gate.max_severity,
            sum(v.passed for v in self._verdicts.values()),
            len(self._verdicts),
            self._gate.on_findings,
        )

    def _scan_failure(self, entries: list[dict[str, Any]]) -> str | None:
        """The task's failure when the gate refused images with ``on_findings="fail"``."""
        if not self._refused or self._gate is None or self._gate.on_findings != "fail":
            return None
        return f"Promotion refused by the scan gate: {describe_failures(entries)}"

    def _summarize(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        """The return value of every copy's entry, with each source's judged findings counts."""
        assert self._promotion is not None
        assert self._engine is not None
        copies = self._promotion.copies
        result = summarize(with_scan(entries, copies, self._verdicts), self._promotion, self._engine.name)
        if self._gate is not None and len(copies) > 1:
            result["scan_refused"] = [entries[i]["source_image"] for i in sorted(self._refused)]
        return result

    def _finish(self, context: Context) -> Any:
        """After a successful promotion: the console link, the asset events, the return value."""
        failure = (
            self._scan_failure(entries_of(self._result, self._promotion))
            if self._result and self._promotion
            else None
        )
        if failure:  # no pod ran: every copy was refused or already in place
            if self.push_result:
                context["ti"].xcom_push(key="return_value", value=self._result)
            raise EcrPromoteError(failure)
        target = link_target(self._result)
        if target is not None:
            dest = parse_image_ref("dest_image", target[0])
            EcrImageLink.persist_image(context, self, dest, target[1])
        emitted = assets.emit(context, self.asset_alias, self._result)
        if emitted:
            self.log.info("Asset events: %s", ", ".join(emitted))
        return self._result

    def _nothing_to_promote(self, context: Context) -> bool:
        """An empty ``tags`` or ``promotions`` list: succeed with an empty result, start no pod."""
        if self._promotion is None or self._engine is None or self._promotion.copies:
            return False
        self.log.info("The list of images to promote is empty: nothing to promote, no pod started.")
        self._result = summarize([], self._promotion, self._engine.name)
        return True

    def _copier_log(self, pod: k8s.V1Pod) -> tuple[str | None, str | None]:
        """The copier container's whole log from the Kubernetes API (before the pod is deleted)."""
        try:
            response = self.client.read_namespaced_pod_log(
                name=pod.metadata.name,
                namespace=pod.metadata.namespace,
                container=self.base_container_name,
                _preload_content=False,
                _request_timeout=self.log_read_timeout,
            )
            return bytes(response.data).decode("utf-8", "replace"), None
        except Exception as error:
            status, reason = getattr(error, "status", None), getattr(error, "reason", None)
            text = f"HTTP {status} {reason}" if status else (str(error).strip().split("\n") or [""])[0]
            return None, f"{type(error).__name__}: {text[:300]}"

    def _confirm_through_ecr(self) -> Confirm:
        """Copies whose report lines were lost, confirmed through the ECR API (the worker's AWS
        connections): the destination holds the source's digest."""
        source, dest = self.source_aws_conn_id or self.dest_aws_conn_id, self.dest_aws_conn_id

        def confirm(copies: list[Copy]) -> list[str | None]:
            self.log.info(
                "The copier's full report is lost: confirming %d copies through the ECR API", len(copies)
            )
            return confirm_promoted(copies, source_conn_id=source, dest_conn_id=dest)

        return confirm

    def _all_in_place(self) -> bool:
        """Ask the ECR API (the worker's connections) which copies are already in place: True when
        all are (the result is set and no pod starts); otherwise the pod gets only the rest."""
        self._in_place = {}
        if self._promotion is None or self._engine is None:
            return False
        promotion = self._promotion
        found: list[str | None] | None = None
        if (
            self.dest_aws_conn_id is not None and not self.verify_signature_key
        ):  # a signature gate always runs
            found = find_in_place(
                promotion,
                source_conn_id=self.source_aws_conn_id or self.dest_aws_conn_id,
                dest_conn_id=self.dest_aws_conn_id,
                with_signatures=bool(
                    self.with_signatures or (self.with_signatures is None and self._engine.copies_signatures)
                ),
            )
        found = [
            None if i in self._refused else d for i, d in enumerate(found or [None] * len(promotion.copies))
        ]
        in_place, _ = split(promotion, found)
        if len(in_place) + len(self._refused) == len(promotion.copies):
            if self._refused:
                self.log.info("No image left for a pod after the scan gate: no pod started.")
                decided = {**in_place_entries(promotion, in_place), **self._refused}
                self._result = self._summarize(merge_entries(promotion, decided, []))
                return True
            self.log.info(
                "All %d images are already at their destination with the source's digest "
                "(compared through the ECR API): no pod started.",
                len(in_place),
            )
            self._result = self._summarize(present(promotion, list(in_place.values())))
            return True
        if in_place:
            self.log.info(
                "%d of %d images are already at their destination (compared through the ECR API); "
                "the pod promotes the other %d.",
                len(in_place),
                len(promotion.copies),
                len(promotion.copies) - len(in_place) - len(self._refused),
            )
        self._in_place = dict(in_place)
        return False

    def _build_find_pod_label_selector(
        self, context: Context | None = None, *, exclude_checked: bool = True
    ) -> str:
        """KPO's selector for this task instance's pod, without the plan's labels: those name what
        a pod carries (its first copy's repository and tag, the accounts), and a retry may carry
        less than the try whose pod it must find (copies found in place meanwhile), so with them
        KPO's label search missed that pod and started a second one beside it."""
        labels = self.labels
        self.labels = {k: v for k, v in (labels or {}).items() if k not in self._plan_labels}
        try:
            return str(super()._build_find_pod_label_selector(context, exclude_checked=exclude_checked))
        finally:
            self.labels = labels

    def await_init_containers_completion(self, pod: k8s.V1Pod) -> None:  # type: ignore[override]
        """KPO's, one init container at a time and only for those that start. KPO waits for each
        requested init container to start, with no end: when one fails (the signature gate
        refusing, a login failing), those after it never start in the failed pod, and the task
        hung until something killed it (900 s on the lab's real kubelet, cncf-kubernetes 10.1.0
        and 10.25.0 alike). The task then reads the failed pod as it does any other."""
        requested = self.init_container_logs
        if not requested:
            return
        names = [c.name for c in (pod.spec.init_containers if pod.spec else None) or []]
        wanted = (
            set(names) if requested is True else {requested} if isinstance(requested, str) else set(requested)
        )
        try:
            for name in (n for n in names if n in wanted):
                if not self._init_container_started(pod, name):
                    self.log.info("Init container %s did not start: the pod ended before it.", name)
                    return
                self.init_container_logs = [name]
                super().await_init_containers_completion(pod)
        finally:
            self.init_container_logs = requested

    def _init_container_started(self, pod: k8s.V1Pod, name: str) -> bool:
        """Wait until the init container ``name`` has started (True), or the pod has ended or the
        container is stuck waiting on an error without it (False)."""
        while True:
            remote = self.pod_manager.read_pod(pod)
            status = remote.status
            found = next(
                (s for s in (status.init_container_statuses if status else None) or [] if s.name == name),
                None,
            )
            waiting = found.state.waiting if found is not None and found.state else None
            if found is not None and found.state is not None and waiting is None:
                return True
            if status is not None and status.phase in ("Succeeded", "Failed"):
                return False
            if waiting is not None and waiting.reason not in (None, "PodInitializing", "ContainerCreating"):
                return False
            time.sleep(1)

    def get_or_create_pod(self, pod_request_obj: k8s.V1Pod, context: Context) -> k8s.V1Pod:
        """KPO's, and then: a pod that an earlier try started and KPO reattached to
        (``reattach_on_restart``, after a worker was killed) carries what that try decided, not
        what this try found in place or refused before it (the retry's ECR API check sees the copies
        the pod itself made meanwhile). Its report numbers the copies it carries, so cleanup reads
        it against the pod's own annotations, as a resumed deferred task does."""
        pod = super().get_or_create_pod(pod_request_obj, context)
        if pod is not pod_request_obj:
            name = pod.metadata.name if pod.metadata else None
            if self._in_place or self._refused:
                self.log.info(
                    "Reattached to pod %s, started by an earlier try: its copies are those it "
                    "carries, not the %d this try found in place or refused before it.",
                    name,
                    len(self._in_place) + len(self._refused),
                )
            self._in_place, self._refused = {}, {}
        return pod

    def convert_config_file_to_dict(self) -> None:
        """The cluster config handed to KPO's trigger, chosen as the worker's hook chooses it.

        Without ``config_file``, KPO gives the trigger the file ``KUBECONFIG`` names as a config
        dict, even when the Kubernetes connection (or ``in_cluster``) names its own source. The
        worker's hook uses the connection's source and ignores ``KUBECONFIG``; so does the trigger
        now. cncf-kubernetes 10.25's trigger refused the pair ("kube_config_path, kube_config,
        in_cluster, and config_dict are mutually exclusive"), so a deferred task never read its pod
        again; 10.1's loaded ``KUBECONFIG``'s cluster, as its trigger does not read a connection's
        ``kube_config_path``: it gets that file as the dict instead.
        """
        super().convert_config_file_to_dict()  # type: ignore[no-untyped-call]
        if self.config_file or self._config_dict is None:
            return
        if self.in_cluster:
            self._config_dict = None
            return
        try:
            source = kube_config_source(dict(getattr(self.hook, "conn_extras", None) or {}))
        except Exception as error:  # no such connection: the trigger resolves it as KPO does
            self.log.debug("Kubernetes connection %r not read: %s", self.kubernetes_conn_id, error)
            return
        if source is None:
            return
        name, value = source
        if name != "kube_config_path" or async_hook_reads_kube_config_path():
            self._config_dict = None
            return
        with open(str(value)) as config:
            self._config_dict = yaml.safe_load(config)

    def trigger_reentry(self, context: Context, event: dict[str, Any]) -> Any:
        self._context = context
        if self._promotion is None:
            self._plan()
        self._gate = self._scan_gate()
        with self._kpo_without_xcom():
            try:
                super().trigger_reentry(context, event)
            except (PodNotFoundException, ApiException) as error:
                # KPO reads the pod first: one deleted while the trigger polled is not there
                if isinstance(error, ApiException) and error.status != 404:
                    raise
                if self._promotion is None:
                    raise
                name, namespace = str(event.get("name")), str(event.get("namespace"))
                if event.get("status") != "success":
                    raise EcrPromoteError(pod_gone_failure(self._promotion, namespace, name)) from error
                self._read_a_collected_pod(context, namespace, name)  # KPO 10.1 raises here
        if self._result is None and self._promotion is not None and event.get("status") == "success":
            self._read_a_collected_pod(context, str(event.get("namespace")), str(event.get("name")))
        return self._finish(context)

    def _read_a_collected_pod(self, context: Context, namespace: str, name: str) -> None:
        """The trigger saw the pod succeed, and the pod was gone when the task resumed
        (garbage-collected): the copier's report went with it, and KPO 10.25 returns without
        reading anything (10.1 raises). Each copy is confirmed through the ECR API instead
        (``dest_aws_conn_id``); a copy that is not fails the task, rather than a success that
        returns nothing."""
        assert self._promotion is not None
        promotion = self._promotion
        self.log.warning(
            "Pod %s/%s succeeded and was deleted before the task read its report", namespace, name
        )
        confirmed = None
        if self.dest_aws_conn_id is not None:
            confirmed = self._confirm_through_ecr()(list(promotion.copies))
        entries, failure = collected_pod_entries(promotion, confirmed, namespace, name)
        self._result = self._summarize(entries)
        if failure:
            if self.push_result:
                context["ti"].xcom_push(key="return_value", value=self._result)
            raise EcrPromoteError(failure)

    def _in_place_before(self, pod: k8s.V1Pod, promotion: Promotion) -> dict[int, str | None]:
        """A resumed (deferred) task: the copies its pod's annotation says were in place before the
        pod, confirmed again through the ECR API (None: not confirmed)."""
        text = ((pod.metadata.annotations if pod.metadata else None) or {}).get(IN_PLACE_ANNOTATION)
        if not text:
            return {}
        try:
            indexes = sorted(i for i in parse_index_ranges(text) if i < len(promotion.copies))
        except ValueError:
            return {}
        source, dest = self.source_aws_conn_id or self.dest_aws_conn_id, self.dest_aws_conn_id
        copies = [promotion.copies[i] for i in indexes]
        found = confirm_promoted(copies, source_conn_id=source, dest_conn_id=dest) if dest else []
        return dict(zip(indexes, found or [None] * len(copies), strict=True))

    def _refused_before(self, pod: k8s.V1Pod, promotion: Promotion) -> dict[int, dict[str, Any]]:
        """A resumed (deferred) task: the copies its pod's annotation says the scan gate refused."""
        text = ((pod.metadata.annotations if pod.metadata else None) or {}).get(SCAN_REFUSED_ANNOTATION)
        if not text or self._gate is None:
            return {}
        try:
            indexes = sorted(i for i in parse_index_ranges(text) if i < len(promotion.copies))
        except ValueError:
            return {}
        status = "skipped" if self._gate.on_findings == "skip" else "failed"
        return {i: refused_entry(promotion.copies[i], status, SCAN_REFUSED_UNCONFIRMED) for i in indexes}

    def _fresh(self, pod: k8s.V1Pod | None, remote_pod: k8s.V1Pod | None) -> k8s.V1Pod | None:
        """The pod as it ended: KPO may hand cleanup a copy read before the containers finished.

        None when the pod never existed: KPO then hands cleanup only the pod it asked for (no
        status), e.g. when admission refused it. The task must fail with the API server's reason,
        which KPO raises, not with an error from reading a status that was never there. A pod the
        API server no longer has (HTTP 404) while its copier had not ended was deleted by someone
        else (``_pod_gone``): this task's own deletion comes after cleanup reads the pod.
        """
        candidate = remote_pod or pod
        statuses = candidate.status.container_statuses if candidate and candidate.status else None
        finished = any(s.state and s.state.terminated for s in statuses or [])
        self._pod_gone = False
        if candidate is not None and not finished:
            try:
                candidate = self.pod_manager.read_pod(candidate)
            except Exception as error:
                if remote_pod is None and candidate.status is None:
                    return None
                self._pod_gone = getattr(error, "status", None) == 404
        return candidate

    def cleanup(
        self,
        pod: k8s.V1Pod,
        remote_pod: k8s.V1Pod,
        xcom_result: dict[str, Any] | None = None,
        context: Context | None = None,
    ) -> None:
        context = context or self._context  # older cncf-kubernetes (10.1.0) passes none
        final = self._fresh(pod, remote_pod)
        outcome = None
        if final is not None and self._promotion is not None and self._engine is not None:
            if not self._in_place:
                self._in_place = self._in_place_before(final, self._promotion)
            if not self._refused:
                self._refused = self._refused_before(final, self._promotion)
            carried = self._pod_promotion(self._promotion)
            outcome = read_pod(
                final,
                carried,
                self._engine.name,
                self.base_container_name,
                read_log=lambda: self._copier_log(final),
                confirm=self._confirm_through_ecr() if self.dest_aws_conn_id is not None else None,
                gone=self._pod_gone,
                startup_timeout=getattr(self, "startup_timeout_seconds", None),
                schedule_timeout=getattr(
                    self, "schedule_timeout_seconds", None
                ),  # not in cncf-kubernetes 10.1.0
            )
            if (self._in_place or self._refused or self._verdicts) and outcome.result is not None:
                decided = {**in_place_entries(self._promotion, self._in_place), **self._refused}
                entries = merge_entries(self._promotion, decided, entries_of(outcome.result, carried))
                failure = outcome.failure
                if failure is None and None in self._in_place.values():
                    failure = f"Promotion failed: {describe_failures(entries)}"
                scan_failure = self._scan_failure(entries)
                if scan_failure:
                    failure = f"{failure}\n{scan_failure}" if failure else scan_failure
                outcome = PodOutcome(self._summarize(entries), failure)
            self._result = outcome.result
            # A failed task returns nothing: keep what it did promote readable, as KPO does.
            if outcome.result is not None and outcome.failure and self.push_result and context is not None:
                context["ti"].xcom_push(key="return_value", value=outcome.result)
        try:
            optional = cleanup_kwargs(super().cleanup, xcom_result=xcom_result, context=context)
            super().cleanup(pod=pod, remote_pod=final or remote_pod, **optional)
        except (AirflowException, ApiException) as error:
            # KPO's cleanup may fail reading a pod deleted meanwhile (10.1.0 reads it for istio)
            if outcome is not None and outcome.failure:
                raise EcrPromoteError(outcome.failure) from error
            raise
        if outcome is not None and outcome.failure:
            raise EcrPromoteError(outcome.failure)
