"""What the lab's ECR front (tests/lab/ecr_front.py) costs a push, side by side in one run.

The same image (a random, incompressible layer of --size-mb, two platforms) is pushed with
skopeo to the destination registry twice per round (in turn first), each time into a fresh
repository and with skopeo's blob-info cache emptied, so that every blob is uploaded: through
the front (the ECR host name: SNI router -> front -> registry), and straight to the registry's
own port (its certificate also names the lab's address). Printed per round: both times and
their ratio. Times on these shared machines are noisy: read the ratios, over a few rounds.

    python bench/ecr_front.py [--size-mb 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import DEST_ACCOUNT
from tests.lab.fixtures import missing_prerequisites
from tests.lab.lab import SKOPEO_CACHE, Lab
from tests.lab.paths import account


def push_seconds(lab: Lab, layout: Path, target: str, authfile: Path) -> float:
    # skopeo's blob-info cache would mount blobs from an earlier push instead of uploading them
    lab.run(["sh", "-c", f"rm -f {SKOPEO_CACHE}/*"], check=True)
    started = time.monotonic()
    lab.run(
        ["skopeo", "copy", "--all", "--preserve-digests", "--quiet", "--dest-authfile", str(authfile),
         f"oci:{layout}:latest", f"docker://{target}"],
        check=True,
        timeout=900,
    )  # fmt: skip
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    problems = missing_prerequisites()
    if problems:
        print(f"bench: cannot start the lab: {'; '.join(problems)}", file=sys.stderr)
        return 1
    dest = account(DEST_ACCOUNT)
    with tempfile.TemporaryDirectory(prefix="ecr-promote-bench-") as state, Lab(state) as lab:
        lab.push_image(dest, "bench/front-warmup", "1", extra_mb=args.size_mb, seed=77)  # writes the layout
        layout = lab.cache_dir / "oci" / f"seed77-mb{args.size_mb}-base0"
        # Without http.host the registry's upload URLs name the host each request was sent to, so
        # the straight pushes' uploads stay straight (the lab sets it to the ECR host name).
        config = lab.state_dir / "registries" / DEST_ACCOUNT / "config.yml"
        settings = json.loads(config.read_text())
        del settings["http"]["host"]
        lab.stop_registry(dest)
        config.write_text(json.dumps(settings))
        lab.start_registry(dest)
        direct = f"{lab.bind}:{lab.ports[DEST_ACCOUNT]}"
        auth = lab.state_dir / "auth" / "direct.json"
        auth.write_text(
            json.dumps(
                {"auths": {direct: {"auth": base64.b64encode(f"AWS:{dest.password}".encode()).decode()}}}
            )
        )
        print(
            f"{args.size_mb} MB random layer, linux/amd64 + linux/arm64, "
            "skopeo copy --all into a new repository"
        )
        print("round | through the ECR front | straight to the registry | ratio")
        for round_no in range(1, args.rounds + 1):
            repo = f"bench/front-{round_no}"
            lab.create_repository(dest, repo)
            targets = {
                "front": (f"{dest.registry_host}/{repo}:1", lab.authfile(dest)),
                "straight": (f"{direct}/{repo}-direct:1", auth),
            }
            order = ["front", "straight"] if round_no % 2 else ["straight", "front"]  # neither always first
            seconds = {name: push_seconds(lab, layout, *targets[name]) for name in order}
            fronted, straight = seconds["front"], seconds["straight"]
            print(f"{round_no} | {fronted:.2f} s | {straight:.2f} s | {fronted / straight:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
