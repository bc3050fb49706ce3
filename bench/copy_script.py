"""What the copy script itself costs per tag, against the copy tool's own starts, in one run.

A 1,000-tag batch whose tags are all new spends, per tag, one copy tool start plus whatever
programs the script starts around it (listing checks, locks, result files). This bench isolates
that share: the real copy.sh (as the pod runs it, comments dropped) runs a batch under ``sh``
with a stand-in skopeo (a shell script that lists one old tag and writes the digest file, no
registry), and the same number of stand-in starts runs from a bare ``sh`` loop. Printed per
round, interleaved, and as medians: both times, the script's cost per tag (the difference) and
the ratio. The lab's `batch_scale.py` measures the same against real copies; this bench shows
where a regression comes from without a lab. Times on these shared machines are noisy: read the
ratio.

    python bench/copy_script.py [--tags 1000] [--rounds 3] [--parallel 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airflow_ecr_promote.engines import script

STAND_IN = """#!/bin/sh
case "$1" in
    list-tags) printf '{\\n "Repository": "r",\\n "Tags": [\\n  "old"\\n ]\\n}\\n' ;;
    copy)
        while [ $# -gt 0 ]; do
            [ "$1" != --digestfile ] || printf 'sha256:%064d' 1 > "$2"
            shift
        done
        ;;
    *) exit 1 ;;
esac
"""
# the goal for the script's cost per tag: 4% of a bare skopeo copy of a small image in the lab
# (121 ms), so that a new tag stays well within the 1.2x a bare copy that issue 21 set
GOAL_MS = 5.0


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"bench: {argv[:2]} failed: {done.stderr[-2000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tags", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ecr-promote-bench-") as tmp:
        bin_dir = Path(tmp, "bin")
        bin_dir.mkdir()
        stand_in = bin_dir / "skopeo"
        stand_in.write_text(STAND_IN)
        stand_in.chmod(0o755)
        copy_sh = Path(tmp, "copy.sh")
        copy_sh.write_text(script("copy.sh"))
        tags = "\n".join(f"1.0.{i}" for i in range(args.tags))
        env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "TMPDIR": tmp,
            "COPY_TOOL": "skopeo",
            "COPIES": tags,
            "SOURCE_REPO": "src.example/team/app",
            "DEST_REPO": "dst.example/team/app",
            "ON_CONFLICT": "fail",
            "SRC_AUTH": "/dev/null",
            "DEST_AUTH": "/dev/null",
            "TERMINATION_LOG": str(Path(tmp, "termination-log")),
            "PARALLEL": str(args.parallel),
        }
        loop = (
            f'i=0; while [ "$i" -lt {args.tags} ]; do'
            f" {stand_in} copy --digestfile {tmp}/d a b; i=$((i + 1)); done"
        )
        rounds: list[tuple[float, float]] = []
        for n in range(args.rounds):
            measured: dict[str, float] = {}
            for side in ("script", "bare") if n % 2 == 0 else ("bare", "script"):
                if side == "script":
                    measured[side] = timed(["sh", str(copy_sh)], env)
                else:
                    measured[side] = timed(["sh", "-c", loop], env)
            rounds.append((measured["script"], measured["bare"]))
            per_tag = (measured["script"] - measured["bare"]) / args.tags * 1000
            print(
                f"round {n + 1}: copy.sh {measured['script']:6.2f} s, bare starts {measured['bare']:6.2f} s, "
                f"{measured['script'] / measured['bare']:.2f}x, the script's cost {per_tag:5.2f} ms a tag"
            )
    script_s = statistics.median(s for s, _ in rounds)
    bare_s = statistics.median(b for _, b in rounds)
    per_tag = (script_s - bare_s) / args.tags * 1000
    print(
        f"median of {args.rounds} rounds, {args.tags} new tags, parallel={args.parallel}: copy.sh "
        f"{script_s:.2f} s, bare stand-in starts {bare_s:.2f} s ({script_s / bare_s:.2f}x); the "
        f"script's own cost {per_tag:.2f} ms a tag (goal <= {GOAL_MS:.0f} ms)"
    )
    return 0 if per_tag <= GOAL_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
