"""Keep the lab's ECR API (moto) in step with the lab's registries.

In AWS, ECR's API and its registry are one service: ``DescribeImages`` reports the digest of
what was pushed. In the lab they are two programs, so each registry sends its push events
(distribution's ``notifications``) to this listener, which runs inside the moto process and
records every tagged manifest push in moto's ECR backend of that account and region, with the
registry's digest and, when the registry's ECR front saw the manifest go by (it keeps each
manifest PUT's bytes, ``manifests``), the manifest itself, as ECR's ``BatchGetImage`` returns it.
Then the worker-side digest comparison (``dest_aws_conn_id``), the sensor, tag discovery and the
check of what a source is (an image, a Helm chart, another OCI artifact) see what was pushed.

The same listener is the lab's control path for throttling (tests/lab/throttle.py), which lives
in this process: ``POST /throttle`` with ``{"api": ..., "rate": ..., "burst": ..., "account": ...}``
sets a rate, ``POST /throttle/reset`` goes back to AWS's defaults, ``GET /throttle`` answers the
counts of requests let through and refused.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


def record_push(
    account: str, region: str, event: dict[str, Any], manifests: Mapping[str, bytes] | None = None
) -> bool:
    """Record one registry event in moto's ECR backend; True when it was a tagged manifest push.
    ``manifests``: the manifests' bytes by digest, as the ECR fronts saw them pushed."""
    from moto.ecr.exceptions import ImageAlreadyExistsException
    from moto.ecr.models import ecr_backends

    target = event.get("target") or {}
    media_type = target.get("mediaType")
    if event.get("action") != "push" or not target.get("tag") or media_type not in MANIFEST_TYPES:
        return False
    backend = ecr_backends[account][region]
    repository = target["repository"]
    if repository not in backend.repositories:
        return False
    # moto keeps the manifest as given; the digest is the registry's (sha256 of the bytes pushed).
    manifest = _pushed(manifests or {}, str(target["digest"]))
    if manifest is None:  # not seen by a front: a stand-in (moto tells images apart by their
        # manifest text, so the digest goes into it)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": media_type,
                "manifests": [],
                "annotations": {"lab.digest": target["digest"]},
            }
        )
    try:
        backend.put_image(repository, manifest, target["tag"], media_type, target["digest"])
    except ImageAlreadyExistsException:  # the same digest pushed again under the same tag
        return False
    return True


def _pushed(manifests: Mapping[str, bytes], digest: str) -> str | None:
    """The manifest pushed under ``digest``, when a front saw it and it is JSON text."""
    raw = manifests.get(digest)
    if raw is None:
        return None
    try:
        text = raw.decode()
        json.loads(text)
    except ValueError:
        return None
    return text


class _Handler(BaseHTTPRequestHandler):
    server: _MirrorServer

    def _answer(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        throttles = self.server.throttles
        if self.path != "/throttle" or throttles is None:
            self._answer(404)
            return
        self._answer(200, json.dumps(throttles.counts()).encode())

    def _throttle(self, body: bytes) -> None:
        throttles = self.server.throttles
        if throttles is None:
            self._answer(404, b"no throttling in this lab")
            return
        try:
            if self.path == "/throttle/reset":
                throttles.reset()
            else:
                rule = json.loads(body)
                rate, burst = float(rule["rate"]), float(rule["burst"])
                throttles.set(rule["api"], rate, burst, rule.get("account", "*"), rule.get("start"))
        except (ValueError, KeyError, TypeError) as error:
            self._answer(400, str(error).encode())
            return
        self._answer(200)

    def do_POST(self) -> None:
        parts = self.path.strip("/").split("/")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if parts[0] == "throttle":
            self._throttle(body)
            return
        if len(parts) != 3 or parts[0] != "events":
            self.send_response(404)
            self.end_headers()
            return
        _, account, region = parts
        try:
            for event in json.loads(body).get("events", []):
                record_push(account, region, event, self.server.manifests)
        except Exception as error:  # answer the registry; it retries on errors
            self.send_response(500)
            self.end_headers()
            self.wfile.write(str(error).encode())
            return
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


class _MirrorServer(ThreadingHTTPServer):
    throttles: Any = None  # tests/lab/throttle.Throttles, when the lab throttles
    manifests: Mapping[str, bytes] | None = None  # digest -> bytes, filled by the ECR fronts


def start(
    host: str, port: int, throttles: Any = None, manifests: Mapping[str, bytes] | None = None
) -> ThreadingHTTPServer:
    """Serve ``POST /events/<account>/<region>`` (and the ``/throttle`` control path) in a daemon
    thread of this (moto's) process; ``manifests`` is where the fronts keep what was pushed."""
    server = _MirrorServer((host, port), _Handler)
    server.throttles = throttles
    server.manifests = manifests
    threading.Thread(target=server.serve_forever, name="ecr-mirror", daemon=True).start()
    return server
