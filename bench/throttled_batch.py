"""One batch task against ECR's default registry quotas, at several `parallel` settings, in one run.

The lab's destination registry throttles like ECR with its default quotas (tests/lab/throttle.py,
``ECR_REGISTRY_QUOTAS``: PutImage and CompleteLayerUpload 10 a second per account and region;
GetAuthorizationToken 20 a second, 200 burst, is the lab's default anyway). For each `parallel`
value, a fresh destination repository receives the same N tags (over a few two-platform images,
made with the registry API), through the operator's pod on the lab's real Kubernetes (KPO's own
``execute``, tests/lab/cluster.py). Printed per run: wall time, tags a
second, manifest writes a second the registry let through, the 429s it answered, the retries the
return value counts, and failed tags: which `parallel` stays within the quota, and what the
retries cost above it. Times on these shared machines are noisy: read the ratios.

    python bench/throttled_batch.py [--tags 120] [--engine skopeo] [--parallel 2 4 8 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_HOST
from tests.lab.fixtures import missing_cluster_prerequisites, missing_prerequisites
from tests.lab.lab import Lab
from tests.lab.load import lab_cluster
from tests.lab.operator_run import lab_operator, run_task_on_cluster
from tests.lab.test_batch_scale_e2e import seeded_tags
from tests.lab.throttle import ECR_REGISTRY_QUOTAS

SOURCE_REPO = "bench/throttled"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tags", type=int, default=120)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--engine", default="skopeo", choices=("skopeo", "crane", "regctl"))
    parser.add_argument("--parallel", type=int, nargs="+", default=[2, 4, 8, 16])
    args = parser.parse_args(argv)
    problems = missing_prerequisites() + missing_cluster_prerequisites()
    if problems:
        print(f"bench: the lab cannot run here: {'; '.join(problems)}", file=sys.stderr)
        return 1
    tags = [f"3.{i // 100}.{i % 100}" for i in range(args.tags)]
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="ecr-promote-bench-") as state,
        Lab(state) as lab,
        lab_cluster(lab) as cluster,
    ):
        seeded_tags(lab, SOURCE_REPO, tags, images=args.images, seed=3100)
        for parallel in args.parallel:
            dest_repo = f"bench/throttled-p{parallel}"
            lab.create_repository(DEST_ACCOUNT, dest_repo)
            lab.reset_throttles()
            for api, (rate, burst) in ECR_REGISTRY_QUOTAS.items():
                lab.set_throttle(api, rate, burst, which=DEST_ACCOUNT)
            task = lab_operator(
                lab,
                args.engine,
                source_image=f"{SOURCE_HOST}/{SOURCE_REPO}",
                dest_image=f"{DEST_HOST}/{dest_repo}",
                tags=tags,
                parallel=parallel,
            )
            started = time.monotonic()
            done = run_task_on_cluster(cluster, task=task)
            seconds = time.monotonic() - started
            counts = lab.throttled()
            result = done.result or done.pushed.get("return_value") or {}
            entries = result.get("promotions", [])
            puts = counts["allowed"].get("ecr:PutImage", 0)
            copier = done.copier_seconds or seconds
            rows.append(
                (
                    parallel,
                    seconds,
                    len(tags) / seconds,
                    puts / copier,
                    counts["refused"].get("ecr:PutImage", 0),
                    result.get("retries"),
                    max((e.get("retries") or 0 for e in entries), default=0),
                    sum(e["status"] != "copied" for e in entries) if entries else len(tags),
                )
            )
            print(f"parallel={parallel}: {rows[-1]}", file=sys.stderr)
        lab.reset_throttles()
    print(f"\n{args.tags} tags over {args.images} two-platform images, engine {args.engine}, destination at "
          "ECR's default PutImage / CompleteLayerUpload quota (10 a second)\n")  # fmt: skip
    print("| parallel | wall time | tags/s | PutImage/s let through (copier's time) | 429s | retries (total) "
          "| most retries of one tag | failed |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for p, s, rate, puts, refused, retries, most, failed in rows:
        print(f"| {p} | {s:.1f} s | {rate:.2f} | {puts:.1f} | {refused} | {retries} | {most} | {failed} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
