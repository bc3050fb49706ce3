"""The copier script alone (scripts/copy.sh with skopeo, on the host in the lab's namespace, as the
pod runs it) against a destination throttled at ECR's default registry quotas, per `parallel`.

No pods and no lab images: the lab's servers only (moto, the ECR fronts, the registries). The
copier gets registry passwords issued to the promotion roles (so the fronts throttle it as ECR
would, tests/lab/throttle.py), and copies N tags (over 3 two-platform images made with the
registry API) into a fresh destination repository per `parallel` value. Printed per run: wall
time, tags a second, PutImage a second let through, 429s answered, and the copier's summary line
(copies, failures, retries). bench/throttled_batch.py measures the same through the operator's pods.

    python bench/throttled_copier.py [--tags 120] [--rate 10] [--parallel 2 4 8 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airflow_ecr_promote.engines import COPY_RETRIES, COPY_RETRY_DELAY, script
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST
from tests.lab import moto_iam
from tests.lab.fixtures import missing_prerequisites
from tests.lab.lab import Lab
from tests.lab.test_batch_scale_e2e import seeded_tags


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tags", type=int, default=120)
    parser.add_argument("--rate", type=float, default=10.0, help="PutImage and CompleteLayerUpload a second")
    parser.add_argument("--parallel", type=int, nargs="+", default=[2, 4, 8, 16])
    args = parser.parse_args(argv)
    problems = missing_prerequisites()
    if problems:
        print(f"bench: the lab cannot run here: {'; '.join(problems)}", file=sys.stderr)
        return 1
    tags = [f"3.{i // 100}.{i % 100}" for i in range(args.tags)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ecr-promote-bench-") as state:
        lab = Lab(state, log=lambda line: None).start(build_images=False)
        try:
            seeded_tags(lab, "bench/src", tags, images=3, seed=3100)
            auth = {}
            for side, host, acct, role in (
                ("src", SOURCE_HOST, SOURCE_ACCOUNT, moto_iam.PULL_ROLE_ARN),
                ("dst", DEST_HOST, DEST_ACCOUNT, moto_iam.PUSH_ROLE_ARN),
            ):
                data = lab.ecr_client(acct, role).get_authorization_token()["authorizationData"][0]
                auth[side] = f"{state}/{side}.json"
                Path(auth[side]).write_text(
                    json.dumps({"auths": {host: {"auth": data["authorizationToken"]}}})
                )
            for parallel in args.parallel:
                repo = f"bench/dst-p{parallel}"
                lab.create_repository(DEST_ACCOUNT, repo)
                lab.reset_throttles()
                for api in ("ecr:PutImage", "ecr:CompleteLayerUpload"):
                    lab.set_throttle(api, args.rate, args.rate, which=DEST_ACCOUNT)
                term = f"{state}/term-{parallel}"
                env = {
                    "PATH": "/usr/bin:/bin",
                    "COPY_TOOL": "skopeo",
                    "COPIES": "\n".join(tags),
                    "SOURCE_REPO": f"{SOURCE_HOST}/bench/src",
                    "DEST_REPO": f"{DEST_HOST}/{repo}",
                    "ON_CONFLICT": "fail",
                    "PARALLEL": str(parallel),
                    "RETRIES": str(COPY_RETRIES),
                    "RETRY_DELAY": str(COPY_RETRY_DELAY),
                    "SRC_AUTH": auth["src"],
                    "DEST_AUTH": auth["dst"],
                    "TMPDIR": state,
                    "HOME": state,
                    "TERMINATION_LOG": term,
                }
                started = time.monotonic()
                lab.run(["sh", "-c", script("copy.sh")], env=env, timeout=3600)
                seconds = time.monotonic() - started
                counts = lab.throttled()
                summary = Path(term).read_text().split("\n")[0]
                puts = counts["allowed"].get("ecr:PutImage", 0)
                rows.append((parallel, seconds, args.tags / seconds, puts / seconds,
                             counts["refused"].get("ecr:PutImage", 0), summary))  # fmt: skip
                print(rows[-1], file=sys.stderr, flush=True)
        finally:
            lab.stop()
    print(
        f"\n{args.tags} tags over 3 two-platform images, skopeo, destination at {args.rate:g} "
        "PutImage a second\n"
    )
    print("| parallel | wall time | tags/s | PutImage/s let through | 429s | copier's summary |")
    print("| --- | --- | --- | --- | --- | --- |")
    for parallel, seconds, rate, puts, refused, summary in rows:
        print(f"| {parallel} | {seconds:.1f} s | {rate:.2f} | {puts:.1f} | {refused} | `{summary}` |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
