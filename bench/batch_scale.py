"""A 1,000-tag backfill in one task, against bare skopeo copies of the same tags, in one run.

The source repository holds N tags (default 1,000) spread over a few distinct two-platform
images that share a base layer (tags are made with the registry API, as a pipeline tags one
build many times). The worker has Airflow AWS connections to the lab's ECR API (moto, fed by
the registries' push events), as `dest_aws_conn_id` / `source_aws_conn_id`, except where said.
Measured side by side:
  1. the operator: one task, `tags=` all N, its pod in the lab (precheck, login, digest checks,
     copies);
  2. the same task again without AWS connections: the pod finds every tag `present`;
  3. the same task again with them: the worker finds every tag in place (goal: no pod, < 5 s);
  4. a task of N tags of which 10 are new (the pipeline tagged 10 more builds, and the window
     moved by 10): the worker sends only those 10 to the pod (goal: < 10% of run 1's time);
  5. bare `skopeo copy --all --preserve-digests` of the same N tags, run on the host (in the
     lab's namespace), as many at once as the operator's `parallel`, into another repository.
  6. the cost of a new tag, interleaved: --rounds rounds, each tagging --round-tags more builds
     and copying them once by the operator's pod and once by bare skopeo copies (the same
     `parallel`), the order swapped every round so that the machine's drifting load falls on
     both alike. The pod's figure is its copier container alone (start to end: what each new tag
     costs once the pod has logged in; the pod's start is bench/single_promotion.py's figure).
Printed: wall time, pods, copies the pod got, time per tag and its ratio to the bare copies
(goal <= 1.2x for the interleaved rounds; runs 1 and 5, ten minutes apart, are printed too),
bytes uploaded against the unique blob bytes (goal equal), entries in the return value, and the
worker's peak memory (the process's max RSS, and the Python heap peak during the task). Times on
these shared machines are noisy: read the ratios.

    python bench/batch_scale.py [--tags 1000] [--images 20] [--base-mb 4] [--tag-mb 1] [--parallel 4]
                                [--rounds 4] [--round-tags 100]
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airflow_ecr_promote.operators import EcrPromoteOperator
from airflow_ecr_promote.refs import parse_image_ref
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST
from tests.lab.fixtures import missing_prerequisites
from tests.lab.lab import Lab
from tests.lab.operator_run import DEST_CONN_ID, SOURCE_CONN_ID, TaskRun, lab_connections, run_task
from tests.lab.test_batch_scale_e2e import RegistryApi
from tests.lab.test_precheck_e2e import pod_tags, wait_until_ecr_api_holds

PULL_ROLE = f"arn:aws:iam::{SOURCE_ACCOUNT}:role/ecr-promote-pull"
PUSH_ROLE = f"arn:aws:iam::{DEST_ACCOUNT}:role/ecr-promote-push"
SOURCE_REPO = "bench/backfill"
MIB = 1024 * 1024
NEW = 10  # new tags in run 4


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


def operator_run(
    lab: Lab, tags: list[str], parallel: int, *, connections: bool = True, heap: bool = True
) -> tuple[TaskRun, float, int]:
    """(run, seconds, Python heap peak in bytes during the task; 0 without ``heap``: tracing every
    allocation slows the worker's own work, which is all a run without a pod does)."""
    conns = {"source_aws_conn_id": SOURCE_CONN_ID, "dest_aws_conn_id": DEST_CONN_ID} if connections else {}
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
        **conns,
    )
    if heap:
        tracemalloc.start()
    started = time.monotonic()
    run = run_task(lab, task=task, pod_timeout=7200)
    seconds = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1] if heap else 0
    tracemalloc.stop()
    if run.error is not None:
        raise SystemExit(f"bench: the task failed: {str(run.error)[:2000]}")
    return run, seconds, peak


def interleaved_rounds(
    lab: Lab, api: RegistryApi, seeds: list[str], rounds: int, size: int, parallel: int
) -> list[tuple[float, float]]:
    """Per round, (the pod's copier seconds, the bare copies' seconds) for ``size`` new tags."""
    figures = []
    for round_no in range(rounds):
        fresh = [f"new.{round_no}.{i:04d}" for i in range(size)]
        for i, seed in enumerate(seeds):
            api.tag(SOURCE_REPO, seed, fresh[i :: len(seeds)])
        measured: dict[str, float] = {}
        for side in ("pod", "bare") if round_no % 2 == 0 else ("bare", "pod"):
            if side == "bare":
                measured[side] = bare_copies(lab, fresh, parallel)
                continue
            run, _, _ = operator_run(lab, fresh, parallel, connections=False, heap=False)
            if run.copier_seconds is None or {e["status"] for e in run.result["promotions"]} != {"copied"}:
                raise SystemExit("bench: an interleaved round's pod did not copy every new tag")
            measured[side] = run.copier_seconds
        figures.append((measured["pod"], measured["bare"]))
    return figures


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
    parser.add_argument("--rounds", type=int, default=4, help="interleaved new-tag rounds (run 6)")
    parser.add_argument("--round-tags", type=int, default=100, help="new tags per interleaved round")
    args = parser.parse_args(argv)
    problems = missing_prerequisites()
    if problems:
        print(f"bench: the lab cannot run here: {'; '.join(problems)}", file=sys.stderr)
        return 1
    every = [f"2026.{i // 100:02d}.{i % 100:02d}" for i in range(args.tags + NEW)]
    tags, moved = every[: args.tags], every[NEW:]  # run 4's window holds NEW tags run 1 did not
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

        def refs(host: str, names: list[str]) -> list[Any]:
            return [parse_image_ref("image", f"{host}/{SOURCE_REPO}:{n}") for n in names]

        with lab_connections(lab):
            wait_until_ecr_api_holds(SOURCE_CONN_ID, refs(SOURCE_HOST, tags), timeout=120)
            before = writes(lab)
            first, first_s, first_heap = operator_run(lab, tags, args.parallel)
            after_first = writes(lab)
            second, second_s, second_heap = operator_run(lab, tags, args.parallel, connections=False)
            after_second = writes(lab)
            wait_until_ecr_api_holds(DEST_CONN_ID, refs(DEST_HOST, tags), timeout=120)
            in_place, in_place_s, _ = operator_run(lab, tags, args.parallel, heap=False)
            after_in_place = writes(lab)
            for i, seed in enumerate(seeds):  # the pipeline tags NEW more builds
                api.tag(SOURCE_REPO, seed, every[args.tags :][i :: args.images])
            wait_until_ecr_api_holds(SOURCE_CONN_ID, refs(SOURCE_HOST, every), timeout=120)
            new, new_s, _ = operator_run(lab, moved, args.parallel, heap=False)
            after_new = writes(lab)
        bare_s = bare_copies(lab, tags, args.parallel)
        after_bare = writes(lab)
        rounds = interleaved_rounds(lab, api, seeds, args.rounds, args.round_tags, args.parallel)

    entries = first.result["promotions"]
    statuses = sorted({e["status"] for e in entries})
    rerun_statuses = sorted({e["status"] for e in second.result["promotions"]})
    uploaded = after_first[0] - before[0]
    bare_uploaded = after_bare[0] - after_new[0]
    rerun_written = (after_second[0] - after_first[0], after_second[1] - after_first[1])
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    per_tag, bare_per_tag = first_s / args.tags, bare_s / args.tags
    print(
        f"\n{args.tags} tags over {args.images} two-platform images (base {args.base_mb} MiB shared, "
        f"{args.tag_mb} MiB each); unique blob bytes {unique / MIB:.1f} MiB; parallel={args.parallel}\n"
    )
    print(
        f"{'run':<36}{'pods':>6}{'to pod':>8}{'wall s':>9}{'ms/tag':>8}{'% run 1':>9}"
        f"{'uploaded MiB':>14}{'manifest PUTs':>15}"
    )
    rows = [
        ("1. operator, one task", first, first_s, after_first, before),
        ("2. re-run, no AWS connection", second, second_s, after_second, after_first),
        ("3. re-run, all in place", in_place, in_place_s, after_in_place, after_second),
        (f"4. re-run, {NEW} new among {args.tags}", new, new_s, after_new, after_in_place),
    ]
    for name, run, seconds, after, since in rows:
        to_pod = sum(len(t) for t in pod_tags(run))
        ms, share = seconds / args.tags * 1000, seconds / first_s * 100
        up, puts = (after[0] - since[0]) / MIB, after[1] - since[1]
        print(
            f"{name:<36}{len(run.pods):>6}{to_pod:>8}{seconds:>9.1f}{ms:>8.0f}{share:>8.1f}%{up:>14.1f}{puts:>15}"
        )
    bare_puts = after_bare[1] - after_new[1]
    share = bare_s / first_s * 100
    print(f"{'5. bare skopeo copy on host':<36}{0:>6}{'-':>8}{bare_s:>9.1f}{bare_s / args.tags * 1000:>8.0f}"
          f"{share:>8.1f}%{bare_uploaded / MIB:>14.1f}{bare_puts:>15}")  # fmt: skip
    ratio = sum(pod for pod, _ in rounds) / sum(bare for _, bare in rounds)
    print(
        f"6. a new tag, {args.rounds} interleaved rounds of {args.round_tags} tags "
        "(pod: its copier container)"
    )
    for n, (pod, bare) in enumerate(rounds, 1):
        print(f"   round {n}: pod {pod:6.1f} s, bare {bare:6.1f} s, {pod / bare:.2f}x")
    print()
    print(f"entries in the return value     : {len(entries)} {statuses}; re-run {rerun_statuses}")
    print(f"report read from the copier log : {first.log_reads == ['base']}")
    print(f"new tag / bare skopeo copy      : {ratio:.2f}x interleaved   (goal <= 1.2x); "
          f"runs 1 / 5: {per_tag / bare_per_tag:.2f}x")  # fmt: skip
    print(f"bytes uploaded / unique blobs   : {uploaded / unique:.3f}   (goal 1.000)")
    print(f"re-run bytes, manifest PUTs     : {rerun_written[0]}, {rerun_written[1]}   (goal 0, 0)")
    in_place_entries = in_place.result["promotions"]
    new_entries = new.result["promotions"]
    new_statuses = [e["status"] for e in new_entries]
    in_place_met = (
        in_place.pods == []
        and in_place_s < 5
        and [e["status"] for e in in_place_entries] == ["present"] * args.tags
    )
    new_met = (
        pod_tags(new) == [moved[-NEW:]]
        and new_s < 0.1 * first_s
        and [e["dest_image"].rsplit(":", 1)[1] for e in new_entries] == moved
        and new_statuses == ["present"] * (args.tags - NEW) + ["copied"] * NEW
    )
    print(f"re-run all in place             : {len(in_place.pods)} pods, {in_place_s:.1f} s, "
          f"{len(in_place_entries)} entries   (goal no pod, < 5 s)")  # fmt: skip
    print(f"re-run with {NEW} new              : {sum(map(len, pod_tags(new)))} copies to the pod, "
          f"{new_s / first_s * 100:.1f}% of run 1, {len(new_entries)} entries in order "
          f"(goal only the {NEW} new, < 10%)")  # fmt: skip
    print(f"worker peak: max RSS {max_rss / MIB:.0f} MiB; Python heap during the task "
          f"{first_heap / MIB:.1f} MiB (re-run {second_heap / MIB:.1f} MiB)")  # fmt: skip
    met = (
        len(entries) == args.tags
        and statuses == ["copied"]
        and rerun_statuses == ["present"]
        and rerun_written == (0, 0)
        and uploaded == unique
        and ratio <= 1.2
        and in_place_met
        and new_met
    )
    print(f"\ngoals {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
