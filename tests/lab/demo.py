"""`make demo`: one real promotion, through the operator's own pod, in the local lab.

Starts the lab (two ECR-like registries for accounts 123456789012 / us-west-2 and
210987654321 / us-east-1, moto for STS and ECR, podman as the kubelet), pushes a two-platform
image to the source account, promotes it through EcrPromoteOperator (executed by
KubernetesPodOperator, its pod played by podman) with the default engine, kaniko (the original
design), and with skopeo, prints what arrived side by side, and tears the lab down.
"""

from __future__ import annotations

import os

# The demo prints its own figures; Airflow's info lines would bury them.
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

import argparse
import sys
import tempfile
import time

from airflow_ecr_promote.engines import DEFAULT_ENGINE
from tests.conftest import DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from .engine_compare import promote_with, source_blob_bytes, table, warm_up
from .fixtures import missing_prerequisites
from .lab import Lab


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
    with tempfile.TemporaryDirectory(prefix="ecr-promote-demo-") as state:
        started = time.monotonic()
        print("demo: starting the lab (the first run builds its images and kaniko and crane: minutes)")
        with Lab(state) as lab:
            print(f"demo: lab up in {time.monotonic() - started:.1f} s")
            source_digest = lab.push_image(SOURCE_ACCOUNT, repo, args.tag, extra_mb=args.size_mb, seed=7)
            unique = source_blob_bytes(lab, repo, args.tag)
            print(f"demo: pushed {source} ({args.size_mb} MB random layer, linux/amd64 + linux/arm64)")
            print(f"demo:   source digest {source_digest}")
            warm_up(lab)
            rows = []
            for engine in (None, "skopeo"):
                name = engine or f"{DEFAULT_ENGINE}, the default engine (no engine= given)"
                print(f"demo: promoting to {DEST_HOST}/{repo}-{engine or DEFAULT_ENGINE} with {name} ...")
                try:
                    rows.append(promote_with(lab, engine, repo, args.tag, source_digest))
                except RuntimeError as error:
                    print(f"demo: {error}", file=sys.stderr)
                    return 1
                print(f"demo:   task return value {rows[-1].run.result}")
            print()
            print(table(rows, unique))
            print()
            print(
                "demo: kaniko (the original design) rebuilds the image: a new config, so a new digest, "
                "and one platform of a multi-arch source (platform=, default linux/amd64). skopeo "
                "copies the index: same digest, every platform."
            )
        print(f"demo: lab down; {time.monotonic() - started:.1f} s in all")
        kaniko, skopeo = rows
        ok = (
            kaniko.platforms == ["linux/amd64"]
            and not kaniko.digest_kept
            and skopeo.digest_kept
            and len(skopeo.platforms) == 2
        )
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
