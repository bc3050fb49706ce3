"""One promotion through the pod against a bare `skopeo copy --all` of the same image, in one run.

Per round, one two-platform image (a shared base layer plus --size-mb of random, incompressible
data) is pushed to account A and:
  1. promoted to account B by the operator's own pod with skopeo (the init container logs in to
     both registries with their roles, then the copier copies);
  2. copied by a bare `skopeo copy --all --preserve-digests` on the host, with credentials
     already in hand, into another repository of account B.
Printed per round and as medians: the pod's run time (the init container's start to the
copier's end), the init container's own time, the bare copy's time, and the pod's time minus the
bare copy's (the goal: at most 1.0 s). Then the login itself, on the host with the same aws CLI
against the lab's STS and ECR: `sts assume-role` followed by `ecr get-login-password` (two CLI
starts, as the init container did before) against one `ecr get-login-password --profile` whose
profile names the role (one start, as it does now). Times on these shared machines are noisy:
read the differences and ratios of the same run.

    python bench/single_promotion.py [--size-mb 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airflow_ecr_promote.pod import INIT_CONTAINER_NAME
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST
from tests.lab.engine_compare import promote_with, warm_up
from tests.lab.fixtures import missing_prerequisites
from tests.lab.lab import Lab
from tests.lab.moto_iam import PULL_ROLE_ARN
from tests.lab.paths import AWS_CLI

REPO = "bench/single"
GOAL_SECONDS = 1.0


def bare_copy(lab: Lab, tag: str) -> float:
    src, dst = lab.authfile(SOURCE_ACCOUNT), lab.authfile(DEST_ACCOUNT)
    argv = [
        "skopeo", "copy", "--all", "--preserve-digests", "--quiet",
        "--src-authfile", str(src), "--dest-authfile", str(dst),
        f"docker://{SOURCE_HOST}/{REPO}:{tag}", f"docker://{DEST_HOST}/{REPO}-bare:{tag}",
    ]  # fmt: skip
    started = time.monotonic()
    done = lab.run(argv, timeout=600)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"bench: the bare skopeo copy failed: {done.stderr[-2000:]}")
    return seconds


def pod_figures(lab: Lab, tag: str, digest: str) -> tuple[float, float | None]:
    """(the pod's run time, its init container's time or None). The pod's run time is the init
    container's start to the copier's end (the lab's runner reads the init container's times from
    podman's event log, since podman removes an init container that succeeded); when the runtime
    reports no such times, it is the task's whole time (pod creation, KPO's polling and the report
    included): an upper bound."""
    figures = promote_with(lab, "skopeo", REPO, tag, digest)
    if not figures.digest_kept:
        raise SystemExit(f"bench: skopeo did not keep the digest: {figures.digest} != {digest}")
    outcome = figures.run.outcomes[-1]
    init, copier = outcome.container(INIT_CONTAINER_NAME), outcome.container("base")
    if init.started_at is None or init.finished_at is None or copier.finished_at is None:
        return figures.task_seconds, None
    pod = (copier.finished_at - init.started_at).total_seconds()
    return pod, (init.finished_at - init.started_at).total_seconds()


def login_two_starts(lab: Lab) -> float:
    env = lab.aws_env()
    started = time.monotonic()
    assumed = lab.run(
        [AWS_CLI, "sts", "assume-role", "--role-arn", PULL_ROLE_ARN, "--role-session-name", "bench",
         "--query", "Credentials.[AccessKeyId,SecretAccessKey,SessionToken]", "--output", "text"],
        env=env,
        check=True,
    )  # fmt: skip
    key, secret, token = assumed.stdout.split()
    role_env = {**env, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": token}
    lab.run([AWS_CLI, "ecr", "get-login-password", "--region", "us-west-2"], env=role_env, check=True)
    return time.monotonic() - started


def login_one_start(lab: Lab, config: Path) -> float:
    config.write_text(
        f"[profile pull]\nrole_arn = {PULL_ROLE_ARN}\nrole_session_name = bench\n"
        "credential_source = Environment\nregion = us-west-2\n"
    )
    env = {**lab.aws_env(), "AWS_CONFIG_FILE": str(config)}
    started = time.monotonic()
    lab.run(
        [AWS_CLI, "--profile", "pull", "ecr", "get-login-password", "--region", "us-west-2"],
        env=env,
        check=True,
    )
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    problems = missing_prerequisites()
    if problems:
        print(f"bench: cannot start the lab: {'; '.join(problems)}", file=sys.stderr)
        return 1
    pods: list[float] = []
    inits: list[float] = []
    bares: list[float] = []
    two: list[float] = []
    one: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ecr-promote-bench-") as state, Lab(state) as lab:
        warm_up(lab)
        lab.create_repository(DEST_ACCOUNT, f"{REPO}-bare")
        print(f"{'round':>5}  {'pod run':>8}  {'init':>6}  {'bare copy':>9}  {'pod - bare':>10}")
        for round_no in range(1, args.rounds + 1):
            tag = f"r{round_no}"
            digest = lab.push_image(SOURCE_ACCOUNT, REPO, tag, extra_mb=args.size_mb, seed=7000 + round_no)
            pod, init = pod_figures(lab, tag, digest)
            bare = bare_copy(lab, tag)
            pods.append(pod)
            if init is not None:
                inits.append(init)
            bares.append(bare)
            shown = f"{init:>4.2f} s" if init is not None else "   ? s"
            print(f"{round_no:>5}  {pod:>6.2f} s  {shown}  {bare:>7.2f} s  {pod - bare:>8.2f} s")
            two.append(login_two_starts(lab))
            one.append(login_one_start(lab, Path(state) / "aws-config"))
    pod_m, bare_m = statistics.median(pods), statistics.median(bares)
    extra = pod_m - bare_m
    init_m = f"{statistics.median(inits):>4.2f} s" if inits else "   ? s"
    print(
        f"{'median':>5}  {pod_m:>6.2f} s  {init_m}  {bare_m:>7.2f} s  "
        f"{extra:>8.2f} s  (goal <= {GOAL_SECONDS:.1f} s)"
    )
    two_m, one_m = statistics.median(two), statistics.median(one)
    print(
        f"\none registry login (median of {args.rounds}): sts assume-role + ecr get-login-password "
        f"{two_m:.2f} s; ecr get-login-password --profile {one_m:.2f} s ({one_m / two_m:.2f}x)"
    )
    if extra > GOAL_SECONDS:
        print(f"missed: the pod costs {extra:.2f} s more than the bare copy (goal <= {GOAL_SECONDS:.1f} s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
