"""The engines on the same image, side by side in one run of the local lab.

One two-platform image (a shared base layer plus a random, incompressible layer of --size-mb) is
promoted from account A to account B by kaniko (the default engine, constructed without
``engine=``), skopeo, crane and regctl, each through the operator's own pod and into its own destination
repository. Printed per engine: digest kept, platforms that arrived, task time (and its ratio to
kaniko's), the copier container's own run time, and bytes uploaded (and their ratio to the
source's blob bytes). Times on these shared machines are noisy: read the ratios.

    python bench/engines.py [--size-mb 50] [--rounds 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import SOURCE_ACCOUNT
from tests.lab.engine_compare import promote_with, source_blob_bytes, table, warm_up
from tests.lab.fixtures import missing_prerequisites
from tests.lab.lab import Lab

ENGINES = (None, "skopeo", "crane", "regctl")  # None: the operator's default (kaniko)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1, help="repeat with fresh tags; every round printed")
    args = parser.parse_args(argv)
    problems = missing_prerequisites()
    if problems:
        print(f"bench: cannot start the lab: {'; '.join(problems)}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="ecr-promote-bench-") as state, Lab(state) as lab:
        warm_up(lab)
        for round_no in range(1, args.rounds + 1):
            tag = f"bench-{round_no}"
            digest = lab.push_image(
                SOURCE_ACCOUNT, "bench/engines", tag, extra_mb=args.size_mb, seed=round_no
            )
            unique = source_blob_bytes(lab, "bench/engines", tag)
            rows = [promote_with(lab, engine, "bench/engines", tag, digest) for engine in ENGINES]
            print(
                f"\nround {round_no}: {args.size_mb} MB random layer, linux/amd64 + linux/arm64, "
                f"{unique / 2**20:.1f} MiB of source blobs"
            )
            print(table(rows, unique))
    return 0


if __name__ == "__main__":
    sys.exit(main())
