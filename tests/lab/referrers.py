"""A registry that serves the OCI 1.1 referrers API, under an ECR host name of the lab.

The lab's ECR stand-ins (distribution 2.8) have no referrers API; ECR has one. This starts
tests/lab/go/referrers-registry (go-containerregistry's registry with its referrers endpoint on,
built from its Go module) with TLS from the lab CA, on port 443 of a loopback address of its
own (``127.1.<c>.<d>`` for a lab bound to ``127.0.<c>.<d>``: haproxy holds the lab's address),
and adds its host name to the lab's hosts file for as long as it runs. Its host is an ECR host
of the destination's region, so the pod's login (the ECR API of that region, in moto) works;
the registry itself checks no credentials. Every request is logged (``requests()``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import gotools, procs
from .lab import Lab
from .paths import DESTINATION
from .tls import ensure_ca, issue_cert

ACCOUNT_ID = "333333333333"
HOST = f"{ACCOUNT_ID}.dkr.ecr.{DESTINATION.region}.amazonaws.com"
_REQUEST = re.compile(r"^\S+ \S+ (?P<method>[A-Z]+) (?P<path>\S+)")


@dataclass(frozen=True)
class ReferrersRegistry:
    host: str
    address: str
    log: Path

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request answered so far."""
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return [(m["method"], m["path"]) for m in map(_REQUEST.match, lines) if m]


def own_address(bind: str) -> str:
    """``127.1.c.d`` for ``127.0.c.d``: a loopback address next to the lab's, free of haproxy."""
    parts = bind.split(".")
    return f"127.1.{parts[2]}.{parts[3]}"


@contextmanager
def referrers_registry(lab: Lab) -> Iterator[ReferrersRegistry]:
    binary = gotools.build(gotools.REFERRERS_REGISTRY, lab.cache_dir, lab.log)
    folder = lab.state_dir / "referrers-registry"
    cert, key = issue_cert(ensure_ca(lab.cache_dir), folder, "tls", [HOST])
    address = own_address(lab.bind)
    if procs.port_in_use(address, 443):
        raise procs.LabError(f"{address}:443 is busy: another lab's referrers registry?")
    registry = ReferrersRegistry(HOST, address, folder / "registry.log")
    argv = [str(binary), "-addr", f"{address}:443", "-cert", str(cert), "-key", str(key)]
    proc, popen = procs.spawn("referrers-registry", argv, registry.log)
    line = f"{address} {HOST}\n"
    try:
        procs.wait_until(
            "the referrers registry",
            lambda: procs.https_status(address, 443, HOST, lab.ca_cert, "/v2/") == 200,
            [(proc, popen)],
        )
        with open(lab.hosts_file, "a") as hosts:  # in place: the namespace bind-mounts this file
            hosts.write(line)
        yield registry
    finally:
        text = lab.hosts_file.read_text()
        if line in text:
            with open(lab.hosts_file, "r+") as hosts:
                hosts.write(text.replace(line, ""))
                hosts.truncate()
        procs.stop(proc, popen)
