"""A 1,000-tag backfill in one task, against bare skopeo copies of the same tags, in one run.

The source repository holds N tags (default 1,000) spread over a few distinct two-platform
images that share a base layer (tags are made with the registry API, as a pipeline tags one
build many times). Measured side by side:
  1. the operator: one task, `tags=` all N, its pod in the lab (login, digest checks, copies);
  2. the same task again: every tag must be `present`, nothing written;
  3. bare `skopeo copy --all --preserve-digests` of the same N tags, run on the host (in the
     lab's namespace), as many at once as the operator's `parallel`, into another repository.
Printed: wall time, pods, time per tag and its ratio to the bare copies (goal <= 1.2x), bytes
uploaded against the unique blob bytes (goal equal), entries in the return value, and the
worker's peak memory (the process's max RSS, and the Python heap peak during the task).
Times on these shared machines are noisy: read the ratios.

    python bench/batch_scale.py [--tags 1000] [--images 20] [--base-mb 4] [--tag-mb 1] [--parallel 4]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airflow_ecr_promote.operators import EcrPromoteOperator
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST
from tests.lab.fixtures import missing_prerequisites
from tests.lab.lab import Lab
from tests.lab.operator_run import TaskRun, run_task
from tests.lab.test_batch_scale_e2e import RegistryApi

PULL_ROLE = f"arn:aws:iam::{SOURCE_ACCOUNT}:role/ecr-promote-pull"
PUSH_ROLE = f"arn:aws:iam::{DEST_ACCOUNT}:role/ecr-promote-push"
SOURCE_REPO = "bench/backfill"
MIB = 1024 * 1024


def unique_blob_bytes(lab: Lab, refs: list[str]) -> int:
    sizes: dict[str, int] = {}
    for ref in refs:
        index = json.loads(lab.inspect_raw(SOURCE_ACCOUNT, SOURCE_REPO, ref) or b"{}")
        for entry in index["manifests"]:
            manifest = json.loads(lab.inspect_raw(SOURCE_ACCOUNT, SOURCE_REPO, entry["digest"]) or b"{}")
            for blob in [manifest["config"], *manifest["layers"]]:
                sizes[blob["digest"]] = blob["size"]
    return sum(sizes.values())


def writes(lab: Lab) -> tuple[int, int]:
    """(bytes uploaded, manifest PUTs) at the destination so far."""
    puts = sum(r.method == "PUT" and "/manifests/" in r.path for r in lab.requests(DEST_ACCOUNT))
    return lab.uploaded_bytes(DEST_ACCOUNT), puts


def operator_run(lab: Lab, tags: list[str], parallel: int) -> tuple[TaskRun, float, int]:
    """(run, seconds, Python heap peak in bytes during the task)."""
    task = EcrPromoteOperator(
        task_id="backfill",
        engine="skopeo",
        init_image=lab.init_image,
        copier_image=lab.copier_image,
        source_role_arn=PULL_ROLE,
        dest_role_arn=PUSH_ROLE,
        source_image=f"{SOURCE_HOST}/{SOURCE_REPO}",
        dest_image=f"{DEST_HOST}/{SOURCE_REPO}",
        tags=tags,
        parallel=parallel,
    )
    tracemalloc.start()
    started = time.monotonic()
    run = run_task(lab, task=task, pod_timeout=7200)
    seconds = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    if run.error is not None:
        raise SystemExit(f"bench: the task failed: {str(run.error)[:2000]}")
    return run, seconds, peak


def bare_copies(lab: Lab, tags: list[str], parallel: int) -> float:
    """Bare skopeo copies of the same tags on the host, ``parallel`` at once; seconds."""
    src, dst = lab.authfile(SOURCE_ACCOUNT), lab.authfile(DEST_ACCOUNT)
    copy = (
        f"skopeo copy --all --preserve-digests --quiet --src-authfile {src} --dest-authfile {dst} "
        f'"docker://{SOURCE_HOST}/{SOURCE_REPO}:$0" "docker://{DEST_HOST}/bench/bare:$0"'
    )
    started = time.monotonic()
    done = lab.run(
        ["sh", "-c", f"xargs -P {parallel} -n 1 sh -c '{copy}'"], input="\n".join(tags), timeout=7200
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"bench: bare skopeo copies failed: {done.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tags", type=int, default=1000)
    parser.add_argument("--images", type=int, default=20, help="distinct images the tags point at")
    parser.add_argument("--base-mb", type=int, default=4, help="size of the base layer all images share")
    parser.add_argument("--tag-mb", type=int, default=1, help="size of each image's own random layer")
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args(argv)
    problems = missing_prerequisites()
    if problems:
        print(f"bench: the lab cannot run here: {'; '.join(problems)}", file=sys.stderr)
        return 1
    tags = [f"2026.{i // 100:02d}.{i % 100:02d}" for i in range(args.tags)]
    with tempfile.TemporaryDirectory(prefix="ecr-promote-bench-") as state, Lab(state) as lab:
        seeds = [f"build-{i}" for i in range(args.images)]
        for repo in (SOURCE_REPO, "bench/bare"):  # the destination repositories exist, as ECR needs
            lab.create_repository(DEST_ACCOUNT, repo)
        for i, seed in enumerate(seeds):
            lab.push_image(
                SOURCE_ACCOUNT, SOURCE_REPO, seed, extra_mb=args.tag_mb, seed=5000 + i, base_mb=args.base_mb
            )
        api = RegistryApi(lab, SOURCE_ACCOUNT)
        for i, seed in enumerate(seeds):
            api.tag(SOURCE_REPO, seed, tags[i :: args.images])
        unique = unique_blob_bytes(lab, seeds)

        before = writes(lab)
        first, first_s, first_heap = operator_run(lab, tags, args.parallel)
        after_first = writes(lab)
        second, second_s, second_heap = operator_run(lab, tags, args.parallel)
        after_second = writes(lab)
        bare_s = bare_copies(lab, tags, args.parallel)
        after_bare = writes(lab)

    entries = first.result["promotions"]
    statuses = sorted({e["status"] for e in entries})
    rerun_statuses = sorted({e["status"] for e in second.result["promotions"]})
    uploaded = after_first[0] - before[0]
    bare_uploaded = after_bare[0] - after_second[0]
    rerun_written = (after_second[0] - after_first[0], after_second[1] - after_first[1])
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    per_tag, bare_per_tag = first_s / args.tags, bare_s / args.tags
    print(
        f"\n{args.tags} tags over {args.images} two-platform images (base {args.base_mb} MiB shared, "
        f"{args.tag_mb} MiB each); unique blob bytes {unique / MIB:.1f} MiB; parallel={args.parallel}\n"
    )
    print(f"{'run':<28}{'pods':>6}{'wall s':>10}{'ms/tag':>9}{'uploaded MiB':>15}{'manifest PUTs':>15}")
    rows = [
        ("operator, one task", len(first.pods), first_s, uploaded, after_first[1] - before[1]),
        ("operator re-run", len(second.pods), second_s, rerun_written[0], rerun_written[1]),
        ("bare skopeo copy on host", 0, bare_s, bare_uploaded, after_bare[1] - after_second[1]),
    ]
    for name, pods, seconds, up, puts in rows:
        ms = seconds / args.tags * 1000
        print(f"{name:<28}{pods:>6}{seconds:>10.1f}{ms:>9.0f}{up / MIB:>15.1f}{puts:>15}")
    ratio = per_tag / bare_per_tag
    print()
    print(f"entries in the return value     : {len(entries)} {statuses}; re-run {rerun_statuses}")
    print(f"report read from the copier log : {first.log_reads == ['base']}")
    print(f"time per tag / bare skopeo copy : {ratio:.2f}x   (goal <= 1.2x)")
    print(f"bytes uploaded / unique blobs   : {uploaded / unique:.3f}   (goal 1.000)")
    print(f"re-run bytes, manifest PUTs     : {rerun_written[0]}, {rerun_written[1]}   (goal 0, 0)")
    print(f"worker peak: max RSS {max_rss / MIB:.0f} MiB; Python heap during the task "
          f"{first_heap / MIB:.1f} MiB (re-run {second_heap / MIB:.1f} MiB)")  # fmt: skip
    met = (
        len(entries) == args.tags
        and statuses == ["copied"]
        and rerun_statuses == ["present"]
        and rerun_written == (0, 0)
        and uploaded == unique
        and ratio <= 1.2
    )
    print(f"\ngoals {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
