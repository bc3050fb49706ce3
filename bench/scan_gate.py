"""What the scan-findings gate costs a task, per image, side by side with the precheck alone.

In one lab run, --images distinct images (two platforms each) are pushed to one source
repository; the worker-side calls are then timed through the lab's ECR API (moto, with IAM
enforced and each image's scan set through tests/lab/moto_scan.py), with the Airflow connections
a worker would have (each account's read role). Cases:

- precheck alone: ``find_in_place`` for every image (nothing at the destination yet), the
  comparison a task with ``dest_aws_conn_id`` makes before its pod;
- gate, clean: every scan COMPLETE with findings below ``max_severity``: DescribeImages alone;
- gate, findings to read: every image has a HIGH finding that ``ignore_findings`` accepts, so
  each image's findings are read (DescribeImageScanFindings) to tell it is ignored;
- gate, never scanned: every image gets StartImageScan, then its findings are read.

API calls are ECR calls the lab's IAM saw (its audit), per image; seconds are the worker's wall
time, including the Amazon provider's connection set-up and role assumption. The median of
--rounds rounds is printed. A shared 2-core machine: read the ratios.

    python bench/scan_gate.py [--images 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airflow_ecr_promote.precheck import find_in_place
from airflow_ecr_promote.promotion import parse_promotion
from airflow_ecr_promote.refs import parse_image_ref
from airflow_ecr_promote.scan_api import judge_images
from airflow_ecr_promote.scan_gate import ScanGate
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST, SOURCE_REGION
from tests.lab.fixtures import missing_prerequisites
from tests.lab.lab import Lab
from tests.lab.moto_scan import post_plan
from tests.lab.operator_run import DEST_CONN_ID, SOURCE_CONN_ID, lab_connections
from tests.lab.test_precheck_e2e import wait_until_ecr_api_holds

REPO = "bench/scan-gate"
READER = ":assumed-role/ecr-promote-read/"


def ecr_calls(lab: Lab, since: int) -> Counter[str]:
    decisions = lab.iam_decisions()[since:]
    return Counter(d["action"] for d in decisions if READER in d["identity"] and d["via"] == "api")


def measure(lab: Lab, run: Callable[[], Any]) -> tuple[float, Counter[str]]:
    since = len(lab.iam_decisions())
    started = time.monotonic()
    run()
    return time.monotonic() - started, ecr_calls(lab, since)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    problems = missing_prerequisites()
    if problems:
        print(f"bench: cannot start the lab: {'; '.join(problems)}", file=sys.stderr)
        return 1
    tags = [f"1.0.{i}" for i in range(args.images)]
    sources = [parse_image_ref("source", f"{SOURCE_HOST}/{REPO}:{t}") for t in tags]
    promotion = parse_promotion(
        source_image=f"{SOURCE_HOST}/{REPO}", dest_image=f"{DEST_HOST}/{REPO}", dest_tags=tags
    )
    gate = ScanGate("HIGH", ignore=("CVE-2026-9000",), wait=60)
    low = [{"name": "CVE-2026-1000", "severity": "LOW"}, {"name": "CVE-2026-1001", "severity": "MEDIUM"}]
    plans: dict[str, dict[str, Any]] = {
        "gate, clean": {"findings": low},
        "gate, findings to read": {"findings": [*low, {"name": "CVE-2026-9000", "severity": "HIGH"}]},
        "gate, never scanned": {"scanned": False, "findings": low},
    }
    with tempfile.TemporaryDirectory(prefix="ecr-promote-bench-") as state, Lab(state) as lab:
        for i, tag in enumerate(tags):
            lab.push_image(SOURCE_ACCOUNT, REPO, tag, seed=5100 + i)
        lab.create_repository(DEST_ACCOUNT, REPO)
        results: dict[str, list[tuple[float, Counter[str]]]] = {}
        with lab_connections(lab):
            wait_until_ecr_api_holds(SOURCE_CONN_ID, sources)
            judge_images(SOURCE_CONN_ID, sources[:1], gate)  # warm up: imports, the first TLS handshake
            for _ in range(args.rounds):

                def precheck() -> None:
                    find_in_place(promotion, source_conn_id=SOURCE_CONN_ID, dest_conn_id=DEST_CONN_ID)

                results.setdefault("precheck alone", []).append(measure(lab, precheck))
                for case, plan in plans.items():
                    for tag in tags:
                        post_plan(
                            lab.moto_endpoint,
                            str(lab.ca_bundle),
                            SOURCE_ACCOUNT,
                            SOURCE_REGION,
                            REPO,
                            tag,
                            **plan,
                        )
                    verdicts: dict[Any, Any] = {}

                    def gated() -> None:
                        verdicts.update(judge_images(SOURCE_CONN_ID, sources, gate))  # noqa: B023

                    results.setdefault(case, []).append(measure(lab, gated))
                    refused = [v.refused for v in verdicts.values() if not v.passed]
                    if refused:
                        print(f"bench: {case}: {len(refused)} images refused, e.g. {refused[0]}")
                        return 1
    n = args.images
    print(f"{n} images (two platforms each) in one repository; medians of {args.rounds} rounds")
    print("case | ECR API calls | calls per image | seconds | ms per image | calls")
    base = statistics.median(s for s, _ in results["precheck alone"])
    for case, runs in results.items():
        seconds = statistics.median(s for s, _ in runs)
        calls = runs[len(runs) // 2][1]
        total = sum(calls.values())
        shown = ", ".join(f"{a.removeprefix('ecr:')} {c}" for a, c in sorted(calls.items()))
        ratio = "" if case == "precheck alone" else f" ({seconds / base:.2f}x the precheck)"
        print(
            f"{case} | {total} | {total / n:.2f} | {seconds:.2f}{ratio} | {1000 * seconds / n:.0f} | {shown}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
