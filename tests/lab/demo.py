"""`make demo`: one real promotion, through the operator's own pod, in the local lab.

Starts the lab (two ECR-like registries for accounts 123456789012 / us-west-2 and
210987654321 / us-east-1, moto for STS and ECR, podman as the kubelet), pushes a two-platform
image to the source account, runs the example DAG ``ecr_promote_on_demand``'s task (rendered by
Airflow, executed by KubernetesPodOperator, its pod played by podman), prints what arrived,
and tears the lab down.
"""

from __future__ import annotations

import os

# The demo prints its own figures; Airflow's info lines would bury them.
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

import argparse
import sys
import tempfile
import time

from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .fixtures import missing_prerequisites
from .lab import Lab
from .operator_run import lab_conf, run_task

WHY_NOT_KANIKO = (
    "kaniko is not run here: it ships only as a container image (no binary in Debian or PyPI, "
    "and Debian's Go is too old to build it), so the lab runs the digest-preserving skopeo engine; "
    "the kaniko pod is checked at the spec level and its login step for real (make test)."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--size-mb", type=int, default=50, help="size of the image's random layer")
    parser.add_argument("--tag", default="1.0.0")
    args = parser.parse_args(argv)
    problems = missing_prerequisites()
    if problems:
        print(f"demo: cannot start the lab: {'; '.join(problems)}", file=sys.stderr)
        return 1
    repo = "demo/app"
    source = f"{SOURCE_HOST}/{repo}:{args.tag}"
    dest = f"{DEST_HOST}/{repo}:{args.tag}"
    with tempfile.TemporaryDirectory(prefix="ecr-promote-demo-") as state:
        started = time.monotonic()
        print("demo: starting the lab (the first run builds its images: about a minute)")
        with Lab(state) as lab:
            print(f"demo: lab up in {time.monotonic() - started:.1f} s")
            source_digest = lab.push_image(SOURCE_ACCOUNT, repo, args.tag, extra_mb=args.size_mb, seed=7)
            print(f"demo: pushed {source} ({args.size_mb} MB random layer, linux/amd64 + linux/arm64)")
            print(f"demo: promoting to {dest} with EcrPromoteOperator(engine='skopeo') ...")
            run = run_task(
                lab,
                conf=lab_conf(
                    lab,
                    source_image=source,
                    dest_image=dest,
                    engine="skopeo",
                    source_role_arn=f"arn:aws:iam::{SOURCE_ACCOUNT}:role/ecr-promote-pull",
                    dest_role_arn=f"arn:aws:iam::{DEST_ACCOUNT}:role/ecr-promote-push",
                ),
            )
            if run.error is not None:
                print(f"demo: the promotion failed: {run.error}", file=sys.stderr)
                return 1
            dest_digest = lab.digest(DEST_ACCOUNT, repo, args.tag)
            platforms = sorted(lab.platforms(DEST_ACCOUNT, repo, args.tag))
            rows = [
                ("source image", source),
                ("destination image", dest),
                ("source digest", source_digest),
                ("destination digest", str(dest_digest)),
                ("digest kept", "yes" if dest_digest == source_digest else "NO"),
                ("platforms arrived", ", ".join(platforms) or "none"),
                ("task return value", str(run.result)),
                ("promotion time (task)", f"{run.seconds:.1f} s"),
            ]
            width = max(len(k) for k, _ in rows)
            print()
            for key, value in rows:
                print(f"  {key:<{width}}  {value}")
            print()
            print(f"demo: {WHY_NOT_KANIKO}")
        print(f"demo: lab down; {time.monotonic() - started:.1f} s in all")
        return 0 if dest_digest == source_digest and len(platforms) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
