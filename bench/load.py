"""The issue's load, at full size, on the lab's real Kubernetes against ECR's default quotas (issue 22).

Two shapes of one backfill, side by side (tests/lab/load.py; the load tests run smaller ones):

- 50 mapped promotion tasks (one tag each) in an Airflow pool of 16 slots, run by a real Airflow
  deployment (tests/lab/deployment.py: ``airflow standalone``, its scheduler and LocalExecutor
  worker processes; each task a pod of its own); with ``--threads``, the tests' lighter shape
  instead: 16 threads of this process running KPO's own ``execute``;
- one batch task of 1,000 tags, ``parallel=16``, in one pod.

The destination is throttled at ECR's default registry quotas (PutImage and CompleteLayerUpload 10
a second; GetAuthorizationToken 20 a second, 200 burst). Printed per shape: wall time, tags a
second, failed tasks, retries in the return values, 429s the registry answered, PutImage let
through, the most pods at once, and peak memory (the largest pod's and all pods' together, from
the kubelet's cgroups; the worker's: the deployment's processes' PSS together, or this process's
VmHWM); then the batch's figures over the mapped tasks'. Checked: every tag promoted once with its
digest, 0 failed. Times on these shared machines are noisy: read the ratios.

    python bench/load.py [--mapped 50] [--pool 16] [--threads] [--tags 1000] [--parallel 16] [--engine skopeo]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.lab.fixtures import missing_cluster_prerequisites, missing_prerequisites
from tests.lab.lab import Lab
from tests.lab.load import Load, lab_cluster, mapped_promotions, one_batch, pooled_promotions, problems

COLUMNS = (
    ("seconds", "wall time (s)"),
    ("tags_per_s", "tags/s"),
    ("failed", "failed tasks"),
    ("retries", "retries (return values)"),
    ("login_retries", "login retries"),
    ("429_put_image", "PutImage 429s"),
    ("put_image_allowed", "PutImage let through"),
    ("throttled_tokens", "GetAuthorizationToken refused"),
    ("most_pods_at_once", "most pods at once"),
    ("most_running_at_once", "most Running at once"),
    ("tasks_at_once", "most tasks running at once (metadata DB)"),
    ("pod_peak_mib", "largest pod's peak (MiB)"),
    ("pods_together_peak_mib", "all pods' peak (MiB)"),
    ("worker_peak_mib", "worker's peak (MiB)"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mapped", type=int, default=50)
    parser.add_argument("--pool", type=int, default=16)
    parser.add_argument("--threads", action="store_true", help="the mapped tasks as threads, no scheduler")
    parser.add_argument("--tags", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--engine", default="skopeo", choices=("skopeo", "crane", "regctl"))
    args = parser.parse_args(argv)
    missing = missing_prerequisites() + missing_cluster_prerequisites()
    if missing:
        print(f"bench: the lab cannot run here: {'; '.join(missing)}", file=sys.stderr)
        return 1
    loads: list[tuple[str, Load, list[str]]] = []
    with (
        tempfile.TemporaryDirectory(prefix="ecr-promote-bench-") as state,
        Lab(state) as lab,
        lab_cluster(lab) as cluster,
    ):
        if args.mapped:
            if args.threads:
                repo = f"bench/load-mapped-{args.engine}"
                load = mapped_promotions(lab, cluster, repo, args.mapped, limit=args.pool, engine=args.engine)
            else:
                repo, homes = f"bench/load-pool-{args.engine}", Path(state) / "airflow"
                homes.mkdir()
                load = pooled_promotions(
                    lab, cluster, repo, args.mapped, slots=args.pool, workdir=homes, engine=args.engine
                )
            loads.append((repo, load, problems(lab, repo, load)))
            print(f"{load.shape}: {load.figures()}", file=sys.stderr)
        if args.tags:
            repo = f"bench/load-batch-{args.engine}"
            load = one_batch(lab, cluster, repo, args.tags, parallel=args.parallel, engine=args.engine)
            loads.append((repo, load, problems(lab, repo, load)))
            print(f"{load.shape}: {load.figures()}", file=sys.stderr)
    print(
        f"\nengine {args.engine}; destination at ECR's default quotas (PutImage 10/s); the lab's Kubernetes\n"
    )
    print("| figure | " + " | ".join(load.shape for _, load, _ in loads) + " |")
    print("| --- |" + " --- |" * len(loads))
    figures = [load.figures() for _, load, _ in loads]
    for key, title in COLUMNS:
        print(f"| {title} | " + " | ".join(str(f[key]) for f in figures) + " |")
    if len(figures) == 2 and figures[0]["tags_per_s"]:
        ratio = figures[1]["tags_per_s"] / figures[0]["tags_per_s"]
        print(f"\nthe batch's tags a second over the mapped tasks': {ratio:.2f}x")
    failed = False
    for repo, load, found in loads:
        if found:
            failed = True
            print(f"\n{load.shape} ({repo}): {len(found)} problems: " + "; ".join(found[:20]))
        else:
            print(f"\n{load.shape}: every tag promoted once, digests kept, 0 failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
