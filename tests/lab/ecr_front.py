"""ECR's repository rules in front of each lab registry.

A distribution registry accepts a push to any repository name and overwrites any tag; ECR does
neither. This front sits between the SNI router (haproxy) and one account's registry, ends TLS
with the registry's certificate, and runs inside the moto process (like ecr_mirror.py) so it reads
moto's ECR backend directly. For each authenticated request on ``/v2/<repository>/...``:

- the repository is not in moto's ECR backend of that account and region (it exists only once
  created through the ECR API, ``CreateRepository``): ECR's answer, 404 ``NAME_UNKNOWN`` "The
  repository with name '<repo>' does not exist in the registry with id '<account>'", for pushes
  and pulls alike;
- the repository is IMMUTABLE and a manifest is PUT by a tag that already names another digest:
  ECR's answer, 400 ``TAG_INVALID`` "The image tag '<tag>' already exists in the '<repo>'
  repository and cannot be overwritten because the repository is immutable." (the same digest
  again is accepted, as ECR does);
- everything else goes to the registry unchanged, streamed both ways (uploads are not buffered);
  a manifest PUT's bytes (at most ECR's 4 MiB) are kept by digest (``manifests``), for the lab's
  ECR API (ecr_mirror.py) to answer ``BatchGetImage`` with the manifest that was pushed.

Before the repository rules, ECR's IAM: the registry password names who got it (moto_iam.py
binds each ``GetAuthorizationToken`` answer to its caller), and each request needs the action ECR
maps it to (``registry_action``) on the repository's ARN in the caller's policies, or it gets
ECR's 403 ``DENIED`` "User: <arn> is not authorized to perform: <action> on resource: <ARN> ...".
A password of another account is accepted when this registry's policy grants that account
(``identify`` decides: moto hands each principal a token of its own account, where ECR's token
opens every registry that lets the principal in).
The lab's own setup password (``<account>-auth-token``, the registry's htpasswd) is not checked.

Before everything else, ECR's throttling (tests/lab/throttle.py): a manifest PUT (``ecr:PutImage``)
or an upload's closing PUT (``ecr:CompleteLayerUpload``) past its token bucket for this account and
region gets ECR's 429 ``TOOMANYREQUESTS`` "Rate exceeded". The lab's own setup password is never
throttled (a test's setup must not depend on the rates it sets).
The registry behind the front knows that password only: the front passes it on in place of the
caller's. A request without the account's credentials goes to the registry as it is, which
answers 401, as ECR checks authentication before the repository. One request per connection: the front
answers ``Connection: close``, and clients open a new connection for the next request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

# the repository part of a registry API path (a name may hold slashes)
_ROUTES = (
    re.compile(r"/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)"),
    re.compile(r"/v2/(?P<name>.+)/blobs/uploads/[^/]*"),
    re.compile(r"/v2/(?P<name>.+)/blobs/[^/]+"),
    re.compile(r"/v2/(?P<name>.+)/tags/list"),
    re.compile(r"/v2/(?P<name>.+)/referrers/[^/]+"),
)
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "expect", "te", "upgrade", "trailer"}
MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
CHUNK = 256 * 1024
MANIFEST_MAX = 4 * 1024 * 1024  # ECR's limit on a manifest's size
# repository name -> its imageTagMutability ("MUTABLE", "IMMUTABLE", ...), None when it does not exist
RepositoryLookup = Callable[[str], str | None]


class Throttle(Protocol):
    """tests/lab/throttle.Throttles, as the front uses it (it is loaded by path: no import)."""

    def admit(self, api: str, account: str, region: str) -> bool: ...

    @staticmethod
    def registry_api(method: str, path: str) -> str | None: ...


THROTTLED_BODY = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"Rate exceeded"}]}'


class Identity(Protocol):
    """Who a registry password was issued to (moto_iam.RegistryIdentity)."""

    arn: str

    def allows(self, action: str, resource: str) -> bool: ...


# password, account -> the identity it was issued to, when valid for that account's registry (its
# own, or one its registry policy grants), None otherwise
Identify = Callable[[str, str], Identity | None]

# ECR's action for each registry API request (AWS documents the pull and push sets; the referrers
# API needs ecr:BatchGetImage, as ListImageReferrers does)
_ACTIONS = {
    ("manifests", "GET"): "ecr:BatchGetImage",
    ("manifests", "HEAD"): "ecr:BatchGetImage",
    ("manifests", "PUT"): "ecr:PutImage",
    ("manifests", "DELETE"): "ecr:BatchDeleteImage",
    ("uploads", "POST"): "ecr:InitiateLayerUpload",
    ("uploads", "PATCH"): "ecr:UploadLayerPart",
    ("uploads", "GET"): "ecr:UploadLayerPart",
    ("uploads", "PUT"): "ecr:CompleteLayerUpload",
    ("uploads", "DELETE"): "ecr:InitiateLayerUpload",
    ("blobs", "GET"): "ecr:GetDownloadUrlForLayer",
    ("blobs", "HEAD"): "ecr:BatchCheckLayerAvailability",
    ("tags", "GET"): "ecr:ListImages",
    ("referrers", "GET"): "ecr:BatchGetImage",
}
_KINDS = ("manifests", "uploads", "blobs", "tags", "referrers")  # in _ROUTES' order


def registry_action(method: str, path: str) -> tuple[str, str] | None:
    """(ECR action, repository) of a registry API request; None for other paths (``/v2/``)."""
    for kind, route in zip(_KINDS, _ROUTES, strict=True):
        match = route.fullmatch(path)
        if match:
            return _ACTIONS.get((kind, method), f"ecr:{method}Unknown"), match["name"]
    return None


def denied(identity: str, action: str, resource: str) -> tuple[int, str, str]:
    """ECR's answer to a registry request the caller's policies do not allow."""
    message = (
        f"User: {identity} is not authorized to perform: {action} on resource: {resource} "
        f"because no identity-based policy allows the {action} action"
    )
    return 403, "DENIED", message


def repository_of(path: str) -> tuple[str, str | None] | None:
    """(repository, manifest reference or None) of a registry API path, None for other paths."""
    for route in _ROUTES:
        match = route.fullmatch(path)
        if match:
            return match["name"], match.groupdict().get("ref")
    return None


def name_unknown(repository: str, account: str) -> tuple[int, str, str]:
    """ECR's answer to a request on a repository that does not exist."""
    message = f"The repository with name '{repository}' does not exist in the registry with id '{account}'"
    return 404, "NAME_UNKNOWN", message


def tag_invalid(repository: str, tag: str) -> tuple[int, str, str]:
    """ECR's answer to a manifest PUT that would move a tag of an immutable repository."""
    message = (
        f"The image tag '{tag}' already exists in the '{repository}' repository and cannot be "
        "overwritten because the repository is immutable."
    )
    return 400, "TAG_INVALID", message


def is_immutable(mutability: str | None) -> bool:
    return mutability in ("IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _FrontServer

    def setup(self) -> None:
        self.request.do_handshake()  # here, in the request's thread, not in the accepting one
        super().setup()

    def _any(self) -> None:
        self.close_connection = True
        front = self.server
        path = self.path.split("?", 1)[0]
        target = repository_of(path)
        body: bytes | None = None
        authorization = self.headers.get("Authorization")
        if self._throttled(path, authorization):
            return
        identity = self._identity(authorization)
        if identity is not None:
            checked = registry_action(self.command, path)
            if checked is not None:
                action, repository = checked
                resource = f"arn:aws:ecr:{front.region}:{front.account}:repository/{repository}"
                # a monolithic upload (the layer's bytes in the closing PUT, as regctl and crane
                # send small blobs) stores a part too: ECR's registry calls UploadLayerPart for it
                actions = [action]
                if action == "ecr:CompleteLayerUpload" and self._has_body():
                    actions.insert(0, "ecr:UploadLayerPart")
                for needed in actions:
                    if not identity.allows(needed, resource):
                        self._discard_small_body()
                        self._refuse(*denied(identity.arn, needed, resource))
                        return
            authorization = front.authorization  # the registry knows the lab's password only
        if target is not None and authorization == front.authorization:
            repository, ref = target
            mutability = front.lookup(repository)
            if mutability is None:
                self._discard_small_body()
                self._refuse(*name_unknown(repository, front.account))
                return
            if self.command == "PUT" and ref and not ref.startswith("sha256:") and is_immutable(mutability):
                body = self._read_body()
                existing = self._upstream_digest(path)
                if existing is not None and existing != "sha256:" + hashlib.sha256(body).hexdigest():
                    self._refuse(*tag_invalid(repository, ref))
                    return
            if self.command == "PUT" and ref and front.manifests is not None:
                length = int(self.headers.get("Content-Length") or 0)
                if body is None and 0 < length <= MANIFEST_MAX:
                    body = self._read_body()
                if body is not None:
                    front.manifests["sha256:" + hashlib.sha256(body).hexdigest()] = body
        self._forward(body, authorization)

    def _throttled(self, path: str, authorization: str | None) -> bool:
        """Answer ECR's 429 when the request's metered action is past its rate (True: answered)."""
        front = self.server
        if front.throttle is None or authorization == front.authorization:
            return False
        api = front.throttle.registry_api(self.command, path)
        if api is None or front.throttle.admit(api, front.account, front.region):
            return False
        self._discard_small_body()
        self.send_response(429, "Too Many Requests")
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(THROTTLED_BODY)))
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(THROTTLED_BODY)
        return True

    def _has_body(self) -> bool:
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        return chunked or int(self.headers.get("Content-Length") or 0) > 0

    def _identity(self, authorization: str | None) -> Identity | None:
        """The caller of a password issued for this registry (not the lab's own)."""
        front = self.server
        if not authorization or not authorization.startswith("Basic ") or front.identify is None:
            return None
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except ValueError:
            return None
        return front.identify(password, front.account) if user == "AWS" else None

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    # ---------------------------------------------------------------- answers
    def _refuse(self, status: int, code: str, message: str) -> None:
        payload = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _discard_small_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= 1 << 20:
            self.rfile.read(length)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            self._pipe_chunked(out.extend)
            return bytes(out)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    # -------------------------------------------------------------- upstream
    def _connect(self) -> ssl.SSLSocket:
        front = self.server
        raw = socket.create_connection((front.upstream_host, front.upstream_port), timeout=10)
        raw.settimeout(None)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return front.client_context.wrap_socket(raw, server_hostname=front.registry_host)

    def _upstream_digest(self, path: str) -> str | None:
        """The digest the registry holds under a manifest path (HEAD, the lab's credentials)."""
        head = (
            f"HEAD {path} HTTP/1.1\r\nHost: {self.server.registry_host}\r\n"
            f"Authorization: {self.server.authorization}\r\nAccept: {MANIFEST_ACCEPT}\r\n"
            "Connection: close\r\n\r\n"
        )
        with self._connect() as upstream:
            upstream.sendall(head.encode())
            answer = b""
            while b"\r\n\r\n" not in answer:
                data = upstream.recv(CHUNK)
                if not data:
                    break
                answer += data
        lines = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        if len(lines[0].split()) < 2 or lines[0].split()[1] != "200":
            return None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "docker-content-digest":
                return value.strip()
        return None

    def _forward(self, body: bytes | None, authorization: str | None) -> None:
        try:
            upstream = self._connect()
        except OSError as error:
            self._refuse(502, "UNAVAILABLE", f"the lab registry does not answer: {error}")
            return
        with upstream:
            lines = [f"{self.command} {self.path} HTTP/1.1"]
            for name, value in self.headers.items():
                if name.lower() == "authorization" and authorization is not None:
                    value = authorization
                if name.lower() not in _HOP_BY_HOP:
                    lines.append(f"{name}: {value}")
            lines.append("Connection: close")
            upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            if body is not None:
                upstream.sendall(body)
            elif "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                pending = bytearray()

                def send(data: bytes) -> None:  # few large writes: one TLS record per chunk, not three
                    pending.extend(data)
                    if len(pending) >= CHUNK or data in (b"\r\n", b"\n", b""):
                        upstream.sendall(pending)
                        pending.clear()

                self._pipe_chunked(send, raw=True)
                if pending:
                    upstream.sendall(pending)
            else:
                left = int(self.headers.get("Content-Length") or 0)
                while left > 0:
                    data = self.rfile.read1(min(left, CHUNK))
                    if not data:
                        return
                    upstream.sendall(data)
                    left -= len(data)
            while True:
                data = upstream.recv(CHUNK)
                if not data:
                    break
                self.wfile.write(data)

    def _pipe_chunked(self, write: Callable[[bytes], Any], *, raw: bool = False) -> None:
        """Read a chunked request body; pass on the chunks' bytes (or the raw framing, ``raw``)."""
        while True:
            size_line = self.rfile.readline(1024)
            if raw:
                write(size_line)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    line = self.rfile.readline(8192)
                    if raw:
                        write(line)
                    if line in (b"\r\n", b"\n", b""):
                        return
            left = size
            while left > 0:
                data = self.rfile.read1(min(left, CHUNK))
                if not data:
                    return
                write(data)
                left -= len(data)
            crlf = self.rfile.readline(8)
            if raw:
                write(crlf)

    def log_message(self, format: str, *args: Any) -> None:
        return


class _FrontServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that hangs up (a readiness probe, a stopped copy) is no error of the front

    account: str
    region: str
    identify: Identify | None
    registry_host: str
    upstream_host: str
    upstream_port: int
    authorization: str
    lookup: RepositoryLookup
    client_context: ssl.SSLContext
    throttle: Throttle | None
    manifests: dict[str, bytes] | None


def serve(
    *,
    bind: str,
    port: int,
    account: str,
    registry_host: str,
    upstream_port: int,
    password: str,
    cert: str,
    key: str,
    ca: str,
    lookup: RepositoryLookup,
    region: str = "us-east-1",
    identify: Identify | None = None,
    throttle: Throttle | None = None,
    manifests: dict[str, bytes] | None = None,
) -> ThreadingHTTPServer:
    """Serve one account's front on ``bind:port`` in a daemon thread, in front of ``bind:upstream_port``;
    ``manifests`` (digest -> bytes) gets every manifest pushed through it."""
    server = _FrontServer((bind, port), _Handler)
    server.account, server.registry_host = account, registry_host
    server.region, server.identify = region, identify
    server.upstream_host, server.upstream_port = bind, upstream_port
    server.authorization = _basic(password)
    server.lookup = lookup
    server.throttle = throttle
    server.manifests = manifests
    server.client_context = ssl.create_default_context(cafile=ca)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=server.serve_forever, name=f"ecr-front-{account}", daemon=True).start()
    return server


def _basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"AWS:{password}".encode()).decode()


def moto_lookup(account: str, region: str) -> RepositoryLookup:
    """Repository name -> imageTagMutability, from moto's ECR backend (this process's)."""

    def lookup(name: str) -> str | None:
        from moto.ecr.models import ecr_backends

        repository = ecr_backends[account][region].repositories.get(name)
        return None if repository is None else str(repository.image_tag_mutability)

    return lookup


def start_all(
    specs: list[dict[str, Any]],
    identify: Identify | None = None,
    throttle: Throttle | None = None,
    manifests: dict[str, bytes] | None = None,
) -> list[ThreadingHTTPServer]:
    """Start one front per spec (``serve``'s keyword arguments), reading moto; ``identify``
    checks registry passwords against IAM (None: the lab's password only, no IAM); ``throttle``
    meters PutImage and CompleteLayerUpload (None: no throttling); ``manifests`` gets the pushed
    manifests (for ecr_mirror.py)."""
    servers = []
    for spec in specs:
        lookup = moto_lookup(spec["account"], spec["region"])
        front = serve(**spec, lookup=lookup, identify=identify, throttle=throttle, manifests=manifests)
        servers.append(front)
    return servers
