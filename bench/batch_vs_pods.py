"""Batch promotion vs one pod per tag, measured side by side in one run of the local lab.

20 tags of one repository that share a base layer are promoted from account A to account B:
  1. as 20 single-tag tasks (one pod each: pod start, two logins, one copy), one after another;
  2. as one batch task (one pod, one login per registry, copies in parallel);
  3. the batch again, through the pod (it compares digests and writes nothing);
  4. the batch again with Airflow connections to the ECR API (`dest_aws_conn_id`): the worker
     compares digests and starts no pod.
Each run goes to its own destination repository, so none profits from another's uploads.
Printed: wall time, bytes uploaded to the destination registry, blob upload requests, and the
ratios the targets are stated in. Times on these shared machines are noisy: read the ratios.

    python bench/batch_vs_pods.py [--tags 20] [--base-mb 40] [--tag-mb 4] [--parallel 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airflow_ecr_promote.operators import EcrPromoteOperator
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST
from tests.lab.fixtures import missing_prerequisites
from tests.lab.lab import Lab
from tests.lab.operator_run import DEST_CONN_ID, SOURCE_CONN_ID, TaskRun, lab_connections, run_task

PULL_ROLE = f"arn:aws:iam::{SOURCE_ACCOUNT}:role/ecr-promote-pull"
PUSH_ROLE = f"arn:aws:iam::{DEST_ACCOUNT}:role/ecr-promote-push"
SOURCE_REPO = "bench/app"


@dataclass
class Figures:
    name: str
    seconds: float
    uploaded: int
    upload_requests: int
    pods: int  # pods started


def operator(lab: Lab, task_id: str, **kwargs: object) -> EcrPromoteOperator:
    return EcrPromoteOperator(
        task_id=task_id,
        engine="skopeo",
        init_image=lab.init_image,
        copier_image=lab.copier_image,
        source_role_arn=PULL_ROLE,
        dest_role_arn=PUSH_ROLE,
        **kwargs,
    )


def measure(lab: Lab, name: str, tasks: list[EcrPromoteOperator]) -> tuple[Figures, list[TaskRun]]:
    bytes_before = lab.uploaded_bytes(DEST_ACCOUNT)
    requests_before = len(lab.upload_requests(DEST_ACCOUNT))
    started = time.monotonic()
    runs = [run_task(lab, task=task) for task in tasks]
    seconds = time.monotonic() - started
    failed = [r.error for r in runs if r.error is not None]
    if failed:
        raise SystemExit(f"bench: {name} failed: {failed[0]}")
    return (
        Figures(
            name,
            seconds,
            lab.uploaded_bytes(DEST_ACCOUNT) - bytes_before,
            len(lab.upload_requests(DEST_ACCOUNT)) - requests_before,
            sum(len(run.pods) for run in runs),
        ),
        runs,
    )


def unique_blob_bytes(lab: Lab, tags: list[str]) -> int:
    sizes: dict[str, int] = {}
    for tag in tags:
        index = json.loads(lab.inspect_raw(SOURCE_ACCOUNT, SOURCE_REPO, tag) or b"{}")
        for entry in index["manifests"]:
            manifest = json.loads(lab.inspect_raw(SOURCE_ACCOUNT, SOURCE_REPO, entry["digest"]) or b"{}")
            for blob in [manifest["config"], *manifest["layers"]]:
                sizes[blob["digest"]] = blob["size"]
    return sum(sizes.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tags", type=int, default=20)
    parser.add_argument("--base-mb", type=int, default=40, help="size of the base layer all tags share")
    parser.add_argument("--tag-mb", type=int, default=4, help="size of each tag's own random layer")
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args(argv)
    problems = missing_prerequisites()
    if problems:
        print(f"bench: the lab cannot run here: {'; '.join(problems)}", file=sys.stderr)
        return 1
    tags = [f"1.0.{i}" for i in range(args.tags)]
    with tempfile.TemporaryDirectory(prefix="ecr-promote-bench-") as state, Lab(state) as lab:
        for i, tag in enumerate(tags):
            lab.push_image(
                SOURCE_ACCOUNT, SOURCE_REPO, tag, extra_mb=args.tag_mb, seed=1000 + i, base_mb=args.base_mb
            )
        for repo in ("singles/app", "batch/app"):  # the destination repositories exist, as ECR needs
            lab.create_repository(DEST_ACCOUNT, repo)
        unique = unique_blob_bytes(lab, tags)
        source = f"{SOURCE_HOST}/{SOURCE_REPO}"

        singles, _ = measure(
            lab,
            f"{args.tags} single-tag pods",
            [
                operator(
                    lab,
                    f"single_{i}",
                    source_image=f"{source}:{tag}",
                    dest_image=f"{DEST_HOST}/singles/app:{tag}",
                )
                for i, tag in enumerate(tags)
            ],
        )
        batch_task = operator(
            lab,
            "batch",
            source_image=source,
            dest_image=f"{DEST_HOST}/batch/app",
            tags=tags,
            parallel=args.parallel,
        )
        batch, _ = measure(lab, "one batch pod", [batch_task])
        rerun, reruns = measure(lab, "re-run, pod path", [batch_task])
        statuses = [p["status"] for p in reruns[0].result["promotions"]]
        with lab_connections(lab):
            precheck_task = operator(
                lab,
                "batch",
                source_image=source,
                dest_image=f"{DEST_HOST}/batch/app",
                tags=tags,
                parallel=args.parallel,
                source_aws_conn_id=SOURCE_CONN_ID,
                dest_aws_conn_id=DEST_CONN_ID,
            )
            no_pod, no_pod_runs = measure(lab, "re-run, ECR API check", [precheck_task])
        no_pod_statuses = [p["status"] for p in no_pod_runs[0].result["promotions"]]

    mib = 1024 * 1024
    rows = [singles, batch, rerun, no_pod]
    print(
        f"\n{args.tags} tags, base layer {args.base_mb} MiB shared, {args.tag_mb} MiB per tag, "
        f"two platforms each; unique blob bytes {unique / mib:.1f} MiB; parallel={args.parallel}\n"
    )
    print(f"{'run':<22}{'pods':>6}{'wall s':>10}{'uploaded MiB':>15}{'upload reqs':>13}")
    for row in rows:
        uploaded = row.uploaded / mib
        print(f"{row.name:<22}{row.pods:>6}{row.seconds:>10.1f}{uploaded:>15.1f}{row.upload_requests:>13}")
    speedup = singles.seconds / batch.seconds
    rerun_share = rerun.seconds / batch.seconds
    no_pod_share = no_pod.seconds / batch.seconds
    print()
    print(f"batch speed-up over single pods : {speedup:.1f}x   (target >= 4x)")
    print(f"batch bytes / unique blob bytes : {batch.uploaded / unique:.3f}   (target 1.000)")
    print(f"single pods bytes / unique bytes: {singles.uploaded / unique:.3f}")
    print(f"re-run uploaded bytes           : {rerun.uploaded}   (target 0)")
    print(f"re-run (pod path) / first batch : {rerun_share:.1%}")
    print(f"re-run (ECR API) / first batch  : {no_pod_share:.1%}   (target < 10%)")
    print(f"re-run statuses (pod, ECR API)  : {sorted(set(statuses))}, {sorted(set(no_pod_statuses))}")
    met = (
        speedup >= 4
        and batch.uploaded == unique
        and rerun.uploaded == no_pod.uploaded == 0
        and no_pod_share < 0.10
        and no_pod.pods == 0
    )
    print(f"\ntargets {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
