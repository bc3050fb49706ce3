"""docker-registry (distribution 2.8) configuration and log reading.

The registry logs one JSON line per request ("response completed"), which the
tests read to count blob uploads against the destination registry; the byte
count of an upload is the `Offset` inside the signed `_state` query parameter of
the final PUT (the registry's own bookkeeping of what was PATCHed).
"""

from __future__ import annotations

import base64
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

UPLOAD_METHODS = ("POST", "PATCH", "PUT")


def write_config(
    path: Path,
    *,
    addr: str,
    storage: Path,
    cert: Path,
    key: Path,
    htpasswd: Path,
    host: str,
    notify_url: str | None = None,
) -> None:
    """Write a registry config: TLS, htpasswd auth, filesystem storage, JSON logs, and push
    events sent to `notify_url` (the lab's ECR API mirror)."""
    storage.mkdir(parents=True, exist_ok=True)
    notifications = (
        {
            "endpoints": [
                {"name": "ecr-mirror", "url": notify_url, "timeout": "2s", "threshold": 3, "backoff": "1s"}
            ]
        }
        if notify_url
        else {}
    )
    path.write_text(
        json.dumps(
            {
                "notifications": notifications,
                "version": 0.1,
                "log": {"level": "info", "formatter": "json", "accesslog": {"disabled": True}},
                "storage": {
                    "filesystem": {"rootdirectory": str(storage)},
                    "delete": {"enabled": True},
                    "maintenance": {"uploadpurging": {"enabled": False}},
                },
                "http": {
                    "addr": addr,
                    "host": f"https://{host}",
                    "secret": "ecr-promote-lab",
                    "tls": {"certificate": str(cert), "key": str(key)},
                },
                "auth": {"htpasswd": {"realm": host, "path": str(htpasswd)}},
            },
            indent=2,
        )
    )


def write_htpasswd(path: Path, user: str, password: str) -> None:
    """bcrypt htpasswd (the only hash registry 2.8 accepts)."""
    subprocess.run(["htpasswd", "-Bbc", str(path), user, password], check=True, capture_output=True)


@dataclass(frozen=True)
class Request:
    """One request the registry answered."""

    method: str
    path: str
    status: int
    query: str = ""

    @property
    def is_blob_upload(self) -> bool:
        """POST/PATCH/PUT on /v2/<repo>/blobs/uploads[/...]: bytes moving in."""
        return self.method in UPLOAD_METHODS and "/blobs/uploads" in self.path


def read_requests(log: Path) -> list[Request]:
    """All requests from a registry log, in order."""
    out: list[Request] = []
    if not log.exists():
        return out
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") != "response completed" or "http.request.uri" not in rec:
            continue
        parts = urlsplit(rec["http.request.uri"])
        out.append(
            Request(
                rec["http.request.method"], parts.path, int(rec.get("http.response.status", 0)), parts.query
            )
        )
    return out


def upload_offset(req: Request) -> int:
    """Bytes received for an upload, from the `_state` token of its final PUT (0 if unknown)."""
    state = parse_qs(req.query).get("_state", [""])[0]
    if not state:
        return 0
    try:
        raw = base64.urlsafe_b64decode(state + "=" * (-len(state) % 4))
        return int(json.loads(raw[32:]).get("Offset", 0))  # 32-byte HMAC, then JSON
    except (ValueError, TypeError):
        return 0
