"""CLI: `python -m tests.lab up|down|status|images|cluster-build [--state-dir DIR] [--cluster]`.

`up` leaves the lab running (PIDs recorded in the state folder) and prints the
values a shell needs; `down` stops exactly the recorded PIDs; `images` builds what the lab's
pods run (Go tools included, the helm the chart tests run and the cluster's aws-iam-authenticator)
into the cache and starts
nothing, so `make test` can build them while the checks that need no lab run (with
ECR_PROMOTE_LAB_CLUSTER=1, the cluster's programs too). `up --cluster` also starts the lab's
real Kubernetes (tests/lab/cluster.py) with the lab's images in it; `cluster-build` builds its
programs (tests/lab/kubebuild.py) and starts nothing;
`status` and `down` include the cluster when one is recorded beside the lab.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import gotools
from .cluster import Cluster
from .images import ensure_images
from .kubebuild import KubeBuild
from .lab import Lab
from .paths import cache_dir_default
from .procs import LabError
from .tls import ensure_ca


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "images", "cluster-build"])
    parser.add_argument("--state-dir", help="default: $ECR_PROMOTE_LAB_DIR or /tmp/ecr-promote-lab")
    parser.add_argument("--cluster", action="store_true", help="up: also start the lab's Kubernetes")
    args = parser.parse_args(argv)
    try:
        if args.command == "images":
            cache = cache_dir_default()
            t0 = time.monotonic()
            images = ensure_images(cache, ensure_ca(cache)[0])
            gotools.build(gotools.REFERRERS_REGISTRY, cache)
            gotools.build(gotools.HELM, cache)  # the chart tests' helm (tests/lab/charts.py)
            gotools.build(gotools.AWS_IAM_AUTHENTICATOR, cache)  # the lab cluster's token webhook
            if os.environ.get("ECR_PROMOTE_LAB_CLUSTER") == "1":
                KubeBuild(cache).all()
            print(f"lab images ready in {time.monotonic() - t0:.0f}s: {images}")
            return 0
        if args.command == "cluster-build":
            builder = KubeBuild(cache_dir_default())
            t0 = time.monotonic()
            built = builder.all()
            print(
                json.dumps({"built_seconds": builder.timings, "paths": {k: str(v) for k, v in built.items()}})
            )
            print(f"lab cluster programs ready in {time.monotonic() - t0:.0f}s")
            return 0
        if args.command == "up":
            lab = Lab(args.state_dir).start()
            cluster = None
            if args.cluster:
                try:
                    cluster = Cluster(lab).start()
                    cluster.import_images(
                        lab.init_image, *(lab.copier_image_for(e) for e in ("skopeo", "crane"))
                    )
                except BaseException:
                    lab.stop()
                    raise
            print(
                json.dumps(
                    {
                        "state_dir": str(lab.state_dir),
                        "moto_endpoint": lab.moto_endpoint,
                        "ca_bundle": str(lab.ca_bundle),
                        "hosts_file": str(lab.hosts_file),
                        "init_image": lab.init_image,
                        "copier_image": lab.copier_image,
                        "pids": {n: p.pid for n, p in lab.procs.items()},
                        "enter": f"nsenter --target={lab.procs['ns'].pid} --mount -- bash",
                        "seconds": round(lab.timings["start"], 2),
                        "cluster": cluster.status() | {"timings": cluster.timings} if cluster else None,
                    },
                    indent=2,
                )
            )
            return 0
        lab = Lab.attach(args.state_dir)
        cluster = Cluster.attach(lab)
        if args.command == "down":
            if cluster is not None:
                cluster.stop()
            lab.stop()
            print(f"stopped lab in {lab.state_dir}")
            return 0
        status = lab.status()
        shown: dict[str, object] = {"state_dir": str(lab.state_dir), "alive": status}
        shown["moto_endpoint"] = lab.moto_endpoint
        if cluster is not None:
            shown["cluster"] = cluster.status()
        print(json.dumps(shown, indent=2))
        healthy = all(status.values()) and (cluster is None or shown["cluster"]["node_ready"])  # type: ignore[index]
        return 0 if healthy else 1
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
