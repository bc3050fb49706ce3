"""`make demo`: one real promotion, through the operator's own pod, in the local lab.

Starts the lab (two ECR-like registries for accounts 123456789012 / us-west-2 and
210987654321 / us-east-1, moto for STS and ECR, podman as the kubelet), pushes a two-platform
image to the source account, promotes it through EcrPromoteOperator (executed by
KubernetesPodOperator, its pod played by podman) with skopeo and with the default engine,
kaniko (the original design), prints what arrived side by side, and tears the lab down.

It builds only what it runs: the aws CLI and skopeo images, and kaniko from its Go module. On a
cold cache kaniko's build (minutes) runs in the background while the skopeo promotion goes first.
"""

from __future__ import annotations

import os

# The demo prints its own figures; Airflow's info lines would bury them.
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from airflow_ecr_promote.engines import DEFAULT_ENGINE
from tests.conftest import DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST

from . import gotools
from .engine_compare import EngineFigures, promote_with, source_blob_bytes, table, warm_up
from .fixtures import missing_prerequisites
from .images import DEMO_IMAGES
from .lab import Lab
from .paths import cache_dir_default

STARTED = time.monotonic()
FIRST_IMAGES = tuple(name for name in DEMO_IMAGES if name != DEFAULT_ENGINE)


def say(line: str) -> None:
    """One progress line, with the seconds since the demo started."""
    print(f"[{time.monotonic() - STARTED:5.0f} s] {line.removeprefix('demo: ')}", flush=True)


class Background(threading.Thread):
    """A build in a thread of its own; `wait` reports progress while it runs."""

    def __init__(self, what: str, build: Callable[[], object]) -> None:
        super().__init__(daemon=True, name=what)
        self.what, self.build = what, build
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self.build()
        except Exception as error:  # reported by wait()
            self.error = error

    def wait(self) -> None:
        while self.is_alive():
            self.join(timeout=30)
            if self.is_alive():
                say(f"still building {self.what} ...")
        if self.error is not None:
            raise RuntimeError(f"building {self.what} failed: {self.error}") from self.error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--size-mb", type=int, default=50, help="size of the image's random layer")
    parser.add_argument("--tag", default="1.0.0")
    args = parser.parse_args(argv)
    problems = missing_prerequisites()
    if problems:
        print(f"demo: cannot start the lab: {'; '.join(problems)}", file=sys.stderr)
        return 1
    repo = "demo/app"
    source = f"{SOURCE_HOST}/{repo}:{args.tag}"
    default_tool = gotools.TOOLS[DEFAULT_ENGINE]
    default_build = Background(
        f"{DEFAULT_ENGINE} (Go)", lambda: gotools.build(default_tool, cache_dir_default(), say)
    )
    default_build.start()
    with tempfile.TemporaryDirectory(prefix="ecr-promote-demo-") as state:
        say(f"starting the lab; it builds (once, then cached): {', '.join(DEMO_IMAGES)}")
        with Lab(Path(state), log=say).start(images=FIRST_IMAGES) as lab:
            say("lab up")
            source_digest = lab.push_image(SOURCE_ACCOUNT, repo, args.tag, extra_mb=args.size_mb, seed=7)
            unique = source_blob_bytes(lab, repo, args.tag)
            say(f"pushed {source} ({args.size_mb} MB random layer, linux/amd64 + linux/arm64)")
            say(f"  source digest {source_digest}")
            warm_up(lab)
            rows: list[EngineFigures] = []
            for engine in ("skopeo", None):
                name = engine or f"{DEFAULT_ENGINE}, the default engine (no engine= given)"
                if engine is None:
                    default_build.wait()
                    lab.add_images(DEFAULT_ENGINE)
                say(f"promoting to {DEST_HOST}/{repo}-{engine or DEFAULT_ENGINE} with {name} ...")
                try:
                    rows.append(promote_with(lab, engine, repo, args.tag, source_digest))
                except RuntimeError as error:
                    print(f"demo: {error}", file=sys.stderr)
                    return 1
                say(f"  task return value {rows[-1].run.result}")
            print()
            print(table(rows, unique))
            print()
            print(
                "demo: skopeo copies the index: same digest, every platform. kaniko (the original "
                "design) rebuilds the image: a new config, so a new digest, and one platform of a "
                "multi-arch source (platform=, default linux/amd64)."
            )
        say("lab down; the demo is done")
    skopeo, kaniko = rows
    ok = (
        kaniko.platforms == ["linux/amd64"]
        and not kaniko.digest_kept
        and skopeo.digest_kept
        and len(skopeo.platforms) == 2
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
