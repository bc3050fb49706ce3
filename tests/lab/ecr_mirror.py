"""Keep the lab's ECR API (moto) in step with the lab's registries.

In AWS, ECR's API and its registry are one service: ``DescribeImages`` reports the digest of
what was pushed. In the lab they are two programs, so each registry sends its push events
(distribution's ``notifications``) to this listener, which runs inside the moto process and
records every tagged manifest push in moto's ECR backend of that account and region, with the
registry's digest. Then the worker-side digest comparison (``dest_aws_conn_id``), the sensor
and tag discovery see what the pods pushed.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


def record_push(account: str, region: str, event: dict[str, Any]) -> bool:
    """Record one registry event in moto's ECR backend; True when it was a tagged manifest push."""
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
    # (moto tells images apart by their manifest text, so the digest goes into it too)
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


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        parts = self.path.strip("/").split("/")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if len(parts) != 3 or parts[0] != "events":
            self.send_response(404)
            self.end_headers()
            return
        _, account, region = parts
        try:
            for event in json.loads(body).get("events", []):
                record_push(account, region, event)
        except Exception as error:  # answer the registry; it retries on errors
            self.send_response(500)
            self.end_headers()
            self.wfile.write(str(error).encode())
            return
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def start(host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``POST /events/<account>/<region>`` in a daemon thread of this (moto's) process."""
    server = ThreadingHTTPServer((host, port), _Handler)
    threading.Thread(target=server.serve_forever, name="ecr-mirror", daemon=True).start()
    return server
