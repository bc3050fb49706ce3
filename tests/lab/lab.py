"""The lab: two fake ECR registries, STS/ECR API (moto), an SNI router and a
mount namespace whose /etc/hosts sends the real AWS host names to them.

`Lab` starts and stops everything with one call (context manager, or the CLI
`python -m tests.lab up|down|status`, which records PIDs in the state folder).

moto enforces IAM like AWS (tests/lab/moto_iam.py): every STS/ECR call must be signed with a
known key and allowed by the caller's policies. The pod's base identity (what IRSA / Pod
Identity gives a real pod) is the IAM user `arn:aws:iam::123456789012:user/ecr-promote-pod`,
access key id `AKIALABECRPROMOTEPOD` (secret `moto_iam.BASE_SECRET_ACCESS_KEY`), baked into the
lab images as ENV and returned by `Lab.aws_env()`. It may call `sts:AssumeRole` on the lab's roles,
which exist and trust it, among them `arn:aws:iam::123456789012:role/ecr-promote-pull` and
`arn:aws:iam::210987654321:role/ecr-promote-push`, whose policies are the package's policy files
(airflow_ecr_promote/policies, the README's). Any other role ->
`AccessDenied ... sts:AssumeRole on resource: <role ARN>`; unknown key -> `InvalidClientTokenId`;
wrong secret -> `SignatureDoesNotMatch`; unsigned -> `MissingAuthenticationToken`. ECR actions are
checked on the repository's ARN, by moto and by each registry (a registry password names who got
it); `Lab.iam_decisions()` lists every decision.

The registries follow ECR's repository rules (tests/lab/ecr_front.py, in front of each): a
repository exists only once created through the ECR API, e.g. `Lab.create_repository(DEST_ACCOUNT,
"team/app", immutable=True)` (setup, as IaC would), and an IMMUTABLE one refuses to move a tag.
`push_image` creates its repository; a test that promotes into a new destination repository
creates it first, or uses `create_repository=True` with `moto_iam.PUSH_CREATE_ROLE_ARN` (or
`moto_iam.TOOLS_PUSH_CREATE_ROLE_ARN`, a third account's role that the destination's registry
policy grants: ECR calls naming the destination's registryId act there, and the destination's
registry accepts that account's login).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from . import moto_iam, procs, registry
from .content import RegistryContent
from .images import ALL_IMAGES, LabImages, ensure_images
from .paths import (
    ACCOUNTS,
    AWS_CLI,
    SYSTEM_CA_BUNDLE,
    Account,
    account,
    cache_dir_default,
    moto_hosts,
    state_dir_default,
)
from .podman import podman_env
from .procs import LabError, Proc
from .tls import ensure_ca, issue_cert, write_bundle

AccountRef = str | Account
_STATE_SUBDIRS = ("tls", "registries", "logs", "auth", "pods", "ns")
HAPROXY_HEAD = """\
global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    # no retries: a stopped registry must fail fast in fault tests (default: 3 tries, 1 s apart)
    retries 0
    timeout client 1h
    timeout server 1h
frontend sni
    bind {bind}:443
    tcp-request inspect-delay 5s
    tcp-request content accept if {{ req_ssl_hello_type 1 }}
"""
SKOPEO_CACHE = "/var/lib/containers/cache"  # skopeo as root always writes a blob-info cache here


class Lab(RegistryContent):
    """Handle on one lab; `start()` or `attach()` before use.

    Attributes after start: `moto_endpoint` (https://<bind>:<port>, reachable
    without the hosts file), `ca_cert` (lab CA), `ca_bundle` (system + lab CA),
    `hosts_file`, `init_image` / `copier_image` (aws-cli / skopeo images).
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        cache_dir: Path | str | None = None,
        *,
        bind: str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir else state_dir_default()
        self.cache_dir = Path(cache_dir) if cache_dir else cache_dir_default()
        self.bind = bind or os.environ.get("ECR_PROMOTE_LAB_BIND", "127.0.0.1")
        self.log: Callable[[str], None] = log or (lambda msg: print(msg, file=sys.stderr))
        self.procs: dict[str, Proc] = {}
        self._popen: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.images: LabImages | None = None
        self.timings: dict[str, float] = {}
        self.ca_cert = self.cache_dir / "ca" / "lab-ca.crt"
        self.ca_bundle = self.state_dir / "tls" / "ca-bundle.pem"
        self.hosts_file = self.state_dir / "ns" / "hosts"
        self._state_file = self.state_dir / "lab.json"
        self._created: set[tuple[str, str]] = set()  # (account, repository) made by create_repository

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> Lab:
        return self if self.procs else self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, *, build_images: bool = True, images: tuple[str, ...] = ALL_IMAGES) -> Lab:
        """Build/find `images`, start every server, wait until each answers. Stops all on failure."""
        if self._state_file.exists() and any(p.alive() for p in procs.load(self._state_file)[0]):
            raise LabError(f"a lab is already running in {self.state_dir}: `python -m tests.lab down` first")
        if procs.port_in_use(self.bind, 443):
            raise LabError(f"{self.bind}:443 is busy (another lab? set ECR_PROMOTE_LAB_BIND=127.0.0.N)")
        t0 = time.monotonic()
        self._prepare_dirs()
        ca = ensure_ca(self.cache_dir)
        if build_images:
            self.images = ensure_images(self.cache_dir, ca[0], self.log, images)
        self.timings["images"] = time.monotonic() - t0
        try:
            self._start_servers(ca)
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - t0
        return self

    def _prepare_dirs(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for sub in _STATE_SUBDIRS:
            shutil.rmtree(self.state_dir / sub, ignore_errors=True)
            (self.state_dir / sub).mkdir()
        self._state_file.unlink(missing_ok=True)

    def _start_servers(self, ca: tuple[Path, Path]) -> None:
        tls_dir = self.state_dir / "tls"
        write_bundle(ca[0], self.ca_bundle)
        self.ports["moto"] = procs.free_port(self.bind)
        cert, key = issue_cert(ca, tls_dir, "moto", [*moto_hosts(), self.bind, "localhost"])
        port = str(self.ports["moto"])
        tls_args = ["-c", str(cert), "-k", str(key)]
        # moto with IAM enforced and the lab's identities seeded (tests/lab/moto_iam.py), run by path
        self.ports["ecr-mirror"] = procs.free_port(self.bind)
        mirror = ["--mirror-port", str(self.ports["ecr-mirror"])]  # registry pushes -> moto's ECR API
        for acct in ACCOUNTS.values():
            self.ports[acct.account_id] = procs.free_port(self.bind)
            self.ports[f"front-{acct.account_id}"] = procs.free_port(self.bind)
            self._write_registry(ca, acct)
        # ECR's repository rules in front of each registry, inside moto (tests/lab/ecr_front.py)
        fronts = ["--fronts", json.dumps([self._front_spec(acct) for acct in ACCOUNTS.values()])]
        audit = ["--iam-audit", str(self.iam_audit_file)]  # every IAM decision (Lab.iam_decisions)
        argv = [sys.executable, str(Path(moto_iam.__file__)), "-H", self.bind, "-p", port, *tls_args, *mirror]
        argv += audit
        self._spawn("moto", [*argv, *fronts])
        for acct in ACCOUNTS.values():
            self._start_registry_proc(acct)
        self._write_hosts()
        self._write_haproxy()
        self._spawn("haproxy", ["haproxy", "-db", "-f", str(self.state_dir / "ns" / "haproxy.cfg")])
        self._spawn_namespace()
        for acct in ACCOUNTS.values():
            self._wait_registry(acct)
        self._wait(
            "moto",
            lambda: (
                procs.https_status(self.bind, self.ports["moto"], self.bind, self.ca_cert, "/moto-api/")
                == 200
            ),
        )
        for name in [*moto_hosts(), *(a.registry_host for a in ACCOUNTS.values())]:
            self._wait(
                f"haproxy route {name}",
                lambda n=name: procs.https_status(self.bind, 443, n, self.ca_cert) > 0,
            )
        self._wait(
            "mount namespace",
            lambda: Path(f"/proc/{self.procs['ns'].pid}/comm").read_text().strip() == "sleep",
        )
        for proc in self.procs.values():  # record the settled command line (after exec) for `down`
            proc.argv = proc.cmdline() or proc.argv
        self._save()

    def _spawn(self, name: str, argv: list[str]) -> None:
        proc, popen = procs.spawn(name, argv, self.state_dir / "logs" / f"{name}.log")
        self.procs[name], self._popen[name] = proc, popen

    def _wait(self, what: str, probe: Any, timeout: float = 30.0) -> None:
        procs.wait_until(
            what, probe, [(p, self._popen[n]) for n, p in self.procs.items() if n in self._popen], timeout
        )

    def _spawn_namespace(self) -> None:
        """A long-lived process holding the mount namespace every lab command enters (nsenter).

        Inside it: the lab hosts file over /etc/hosts, the system CA bundle + lab CA over the
        system bundle (host-side skopeo/aws/podman trust the lab like they trust real ECR),
        and a tmpfs over skopeo's root blob-info cache (it changes later copies).
        """
        Path(SKOPEO_CACHE).mkdir(parents=True, exist_ok=True)
        script = (
            'mount --bind "$1" /etc/hosts && mount --bind "$2" "$3" '
            '&& mount -t tmpfs -o mode=0700 lab-skopeo-cache "$4" && exec sleep infinity'
        )
        mounts = [str(self.hosts_file), str(self.ca_bundle), str(SYSTEM_CA_BUNDLE), SKOPEO_CACHE]
        unshare = ["unshare", "--mount", "--propagation", "private", "--"]
        self._spawn("ns", [*unshare, "sh", "-c", script, "sh", *mounts])

    def _write_hosts(self) -> None:
        names = [*moto_hosts(), *(a.registry_host for a in ACCOUNTS.values())]
        system = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else "127.0.0.1 localhost\n"
        self.hosts_file.write_text(
            system.rstrip("\n") + "\n# ecr-promote lab\n" + "".join(f"{self.bind} {n}\n" for n in names)
        )

    def _front_spec(self, acct: Account) -> dict[str, Any]:
        d = self._reg_dir(acct)
        return {
            "bind": self.bind,
            "port": self.ports[f"front-{acct.account_id}"],
            "account": acct.account_id,
            "region": acct.region,
            "registry_host": acct.registry_host,
            "upstream_port": self.ports[acct.account_id],
            "password": acct.password,
            "cert": str(d / "tls.crt"),
            "key": str(d / "tls.key"),
            "ca": str(self.ca_cert),
        }

    def _write_haproxy(self) -> None:
        routes = [  # registry host -> its ECR front, which passes requests on to the registry
            (f"reg_{a.account_id}", a.registry_host, self.ports[f"front-{a.account_id}"])
            for a in ACCOUNTS.values()
        ]
        routes += [("moto", h, self.ports["moto"]) for h in moto_hosts()]
        lines = HAPROXY_HEAD.format(bind=self.bind).splitlines()
        lines += [f"    use_backend {b} if {{ req_ssl_sni -i {h} }}" for b, h, _ in routes]
        for backend in dict.fromkeys(b for b, _, _ in routes):
            port = next(p for b, _, p in routes if b == backend)
            lines += [f"backend {backend}", f"    server s1 {self.bind}:{port}"]
        (self.state_dir / "ns" / "haproxy.cfg").write_text("\n".join(lines) + "\n")

    # ---------------------------------------------------------------- registries
    def _reg_dir(self, acct: Account) -> Path:
        return self.state_dir / "registries" / acct.account_id

    def _write_registry(self, ca: tuple[Path, Path], acct: Account) -> None:
        d = self._reg_dir(acct)
        cert, key = issue_cert(ca, d, "tls", [acct.registry_host, self.bind])
        registry.write_htpasswd(d / "htpasswd", "AWS", acct.password)
        registry.write_config(
            d / "config.yml",
            addr=f"{self.bind}:{self.ports[acct.account_id]}",
            storage=d / "data",
            cert=cert,
            key=key,
            htpasswd=d / "htpasswd",
            host=acct.registry_host,
            notify_url=f"http://{self.bind}:{self.ports['ecr-mirror']}/events/{acct.account_id}/{acct.region}",
        )
        auth = json.dumps({"auths": {acct.registry_host: {"auth": _b64(f"AWS:{acct.password}")}}})
        self.authfile(acct).write_text(auth)

    def _start_registry_proc(self, acct: Account) -> None:
        d = self._reg_dir(acct)
        proc, popen = procs.spawn(
            f"registry-{acct.account_id}",
            ["docker-registry", "serve", str(d / "config.yml")],
            d / "registry.log",
        )
        self.procs[proc.name], self._popen[proc.name] = proc, popen

    def _wait_registry(self, acct: Account) -> None:
        self._wait(
            f"registry {acct.account_id}",
            lambda: (
                procs.https_status(
                    self.bind, self.ports[acct.account_id], acct.registry_host, self.ca_cert, "/v2/"
                )
                == 401
            ),
        )

    def stop_registry(self, which: AccountRef) -> None:
        """Stop one account's registry (storage is kept): for fault tests."""
        name = f"registry-{account(which).account_id}"
        if name in self.procs:
            procs.stop(self.procs[name], self._popen.get(name))

    def start_registry(self, which: AccountRef) -> None:
        """Start one account's registry again on the same port with the same storage."""
        acct = account(which)
        name = f"registry-{acct.account_id}"
        if name in self.procs and self.procs[name].alive():
            return
        self._start_registry_proc(acct)
        self._wait_registry(acct)
        self.procs[name].argv = self.procs[name].cmdline() or self.procs[name].argv
        self._save()

    def create_repository(
        self,
        which: AccountRef,
        repo: str,
        *,
        immutable: bool = False,
        scan_on_push: bool = False,
        kms: bool = False,
    ) -> None:
        """Create ``repo`` in that account through the lab's ECR API (moto), as IaC would, with the
        lab's setup role; a repository that already exists is left as it is.

        Pushes reach a registry only for repositories created this way (tests/lab/ecr_front.py).
        """
        from botocore.exceptions import ClientError

        acct = account(which)
        if (acct.account_id, repo) in self._created:
            return
        settings: dict[str, Any] = {
            "imageTagMutability": "IMMUTABLE" if immutable else "MUTABLE",
            "imageScanningConfiguration": {"scanOnPush": scan_on_push},
        }
        if kms:
            settings["encryptionConfiguration"] = {"encryptionType": "KMS"}
        try:
            self.ecr_client(acct).create_repository(repositoryName=repo, **settings)
        except ClientError as error:
            if error.response["Error"]["Code"] != "RepositoryAlreadyExistsException":
                raise
        self._created.add((acct.account_id, repo))

    # ------------------------------------------------------------- throttling
    def set_throttle(
        self,
        api: str,
        rate: float,
        burst: float,
        which: AccountRef | None = None,
        *,
        start: float | None = None,
    ) -> None:
        """Throttle ``api`` like AWS (tests/lab/throttle.py): ``ecr:GetAuthorizationToken`` or any
        ECR/STS API call (``sts:AssumeRole``, ``ecr:DescribeImages``) answers AWS's throttling error,
        ``ecr:PutImage`` and ``ecr:CompleteLayerUpload`` get the registry's 429 TOOMANYREQUESTS, past
        ``rate`` a second with ``burst``; for one account (the caller's for the API, the registry's
        for the registry) or all; buckets start with ``start`` tokens (default: full).
        ``reset_throttles`` goes back to AWS's defaults."""
        rule: dict[str, Any] = {"api": api, "rate": rate, "burst": burst, "start": start}
        if which is not None:
            rule["account"] = account(which).account_id
        self._throttle_call("/throttle", rule)

    def reset_throttles(self) -> None:
        """AWS's default rates again, every bucket full, the counts at zero."""
        self._throttle_call("/throttle/reset", {})

    def throttled(self) -> dict[str, dict[str, int]]:
        """``{"refused": {api: n}, "allowed": {api: n}}``: the metered requests since the last reset."""
        return dict(json.loads(self._throttle_call("/throttle", None)))

    def _throttle_call(self, path: str, body: dict[str, Any] | None) -> bytes:
        import urllib.request

        url = f"http://{self.bind}:{self.ports['ecr-mirror']}{path}"
        data = None if body is None else json.dumps(body).encode()
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as answer:
            return bytes(answer.read())

    @property
    def iam_audit_file(self) -> Path:
        """JSON lines, one per IAM decision of moto (``via: api``) or a registry (``via: registry``)."""
        return self.state_dir / "logs" / "iam-audit.jsonl"

    def iam_decisions(self, identity_prefix: str = "") -> list[dict[str, Any]]:
        """The IAM decisions so far (identity, action, resource, allowed, via), of identities whose
        ARN starts with ``identity_prefix`` (e.g. ``arn:aws:sts::<account>:assumed-role/<role>/``)."""
        if not self.iam_audit_file.exists():
            return []
        lines = self.iam_audit_file.read_text().splitlines()
        return [d for d in map(json.loads, lines) if str(d["identity"]).startswith(identity_prefix)]

    def set_probe_policy(self, which: AccountRef, document: dict[str, Any] | None) -> None:
        """Give that account's probe role (``moto_iam.PROBE_ROLE_ARNS``) exactly ``document`` as its
        only policy (None, or no statement left: no policy), through the lab's IAM API as the
        account's setup role. It counts at once, for sessions and registry passwords already
        handed out too."""
        acct = account(which)
        iam = self._client("iam", acct, moto_iam.LAB_ADMIN_ROLE_ARNS[acct.account_id])
        name = moto_iam.PROBE_ROLE_ARNS[acct.account_id].rsplit("/", 1)[1]
        if document is None or not document["Statement"]:
            if name in iam.list_role_policies(RoleName=name)["PolicyNames"]:
                iam.delete_role_policy(RoleName=name, PolicyName=name)
            return
        iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=json.dumps(document))

    def ecr_client(self, which: AccountRef, role_arn: str | None = None) -> Any:
        """A boto3 ECR client of that account's region on the lab's ECR API, as ``role_arn``
        (default: the account's lab setup role, ``moto_iam.LAB_ADMIN_ROLE_ARNS``)."""
        acct = account(which)
        return self._client("ecr", acct, role_arn or moto_iam.LAB_ADMIN_ROLE_ARNS[acct.account_id])

    def _client(self, service: str, acct: Account, role: str) -> Any:
        """A boto3 client of ``service`` on the lab's moto, as the base identity having assumed ``role``."""
        import boto3

        base = boto3.Session(
            aws_access_key_id=moto_iam.BASE_ACCESS_KEY_ID,
            aws_secret_access_key=moto_iam.BASE_SECRET_ACCESS_KEY,
            region_name=acct.region,
        )
        sts = base.client("sts", endpoint_url=self.moto_endpoint, verify=str(self.ca_bundle))
        creds = sts.assume_role(RoleArn=role, RoleSessionName="ecr-promote-lab")["Credentials"]
        return boto3.client(
            service,
            region_name=acct.region,
            endpoint_url=self.moto_endpoint,
            verify=str(self.ca_bundle),
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )

    def registry_log(self, which: AccountRef) -> Path:
        """The registry's JSON log (appended across restarts)."""
        return self._reg_dir(account(which)) / "registry.log"

    def requests(self, which: AccountRef) -> list[registry.Request]:
        """Every request the account's registry answered so far."""
        return registry.read_requests(self.registry_log(which))

    def upload_requests(self, which: AccountRef) -> list[tuple[str, str]]:
        """(method, path) of blob-upload requests (POST/PATCH/PUT on /v2/<repo>/blobs/uploads...)."""
        return [(r.method, r.path) for r in self.requests(which) if r.is_blob_upload]

    def uploaded_bytes(self, which: AccountRef) -> int:
        """Bytes received by completed blob uploads (from the registry's upload state tokens)."""
        return sum(
            registry.upload_offset(r)
            for r in self.requests(which)
            if r.is_blob_upload and r.method == "PUT" and r.status == 201
        )

    def authfile(self, which: AccountRef) -> Path:
        """A Docker config.json holding that registry's credentials (for host-side skopeo)."""
        return self.state_dir / "auth" / f"{account(which).account_id}.json"

    def registry_host(self, which: AccountRef) -> str:
        """`<account>.dkr.ecr.<region>.amazonaws.com`."""
        return account(which).registry_host

    # --------------------------------------------------------------------- stop
    def stop(self) -> None:
        """Stop every recorded PID (exactly those), namespace holder last."""
        order = [n for n in self.procs if n != "ns"] + (["ns"] if "ns" in self.procs else [])
        errors = []
        for name in order:
            try:
                procs.stop(self.procs[name], self._popen.get(name))
            except OSError as exc:  # keep going: every PID must get its signal
                errors.append(f"{name}: {exc}")
        self.procs.clear()
        self._popen.clear()
        self._state_file.unlink(missing_ok=True)
        if errors:
            raise LabError("errors stopping the lab: " + "; ".join(errors))

    def _save(self) -> None:
        procs.save(
            self._state_file,
            list(self.procs.values()),
            {
                "bind": self.bind,
                "ports": self.ports,
                "cache_dir": str(self.cache_dir),
                "images": self.images.__dict__ if self.images else None,
            },
        )

    @classmethod
    def attach(cls, state_dir: Path | str | None = None) -> Lab:
        """A handle on a lab started elsewhere (`python -m tests.lab up`), from its state file."""
        lab = cls(state_dir)
        if not lab._state_file.exists():
            raise LabError(f"no lab state in {lab.state_dir}")
        plist, extra = procs.load(lab._state_file)
        lab.procs = {p.name: p for p in plist}
        lab.bind, lab.ports = str(extra["bind"]), {k: int(v) for k, v in dict(extra["ports"]).items()}  # type: ignore[call-overload]
        lab.cache_dir = Path(str(extra["cache_dir"]))
        lab.ca_cert = lab.cache_dir / "ca" / "lab-ca.crt"
        if extra.get("images"):
            lab.images = LabImages(**extra["images"])  # type: ignore[arg-type]
        return lab

    def status(self) -> dict[str, bool]:
        """Process name -> alive."""
        return {name: p.alive() for name, p in self.procs.items()}

    # ---------------------------------------------------------------- accessors
    @property
    def moto_endpoint(self) -> str:
        """moto's URL on the loopback address: for in-process boto3 (no hosts file needed)."""
        return f"https://{self.bind}:{self.ports['moto']}"

    @property
    def init_image(self) -> str:
        """aws-cli image (awscli, ca-certificates, coreutils), non-root, lab CA + base keys baked in."""
        return self._images().awscli

    @property
    def copier_image(self) -> str:
        """skopeo image, non-root, lab CA + base identity keys baked in."""
        return self._images().skopeo

    def copier_image_for(self, engine: str) -> str:
        """The lab's copier image for `engine` (kaniko, skopeo, crane), laid out like upstream's."""
        return self._images().copier(engine)

    def add_images(self, *names: str) -> None:
        """Build (or find) more images for a lab started with only some."""
        more = ensure_images(self.cache_dir, self.ca_cert, self.log, names)
        current = self.images or LabImages()
        self.images = replace(current, **{name: getattr(more, name) for name in names})

    def _images(self) -> LabImages:
        if self.images is None:
            raise LabError("lab images were not built (start(build_images=False)?)")
        return self.images

    def podman_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment naming the lab's podman configuration."""
        return podman_env(self.cache_dir, base)

    def aws_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Env for `/usr/bin/aws` (run via `run`) or boto3: lab CA bundle, the pod's base identity
        (`moto_iam.BASE_ACCESS_KEY_ID`, the same keys the lab images bake in), no user config."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("AWS_")}
        env.update(
            {
                "AWS_CA_BUNDLE": str(self.ca_bundle),
                "AWS_ACCESS_KEY_ID": moto_iam.BASE_ACCESS_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": moto_iam.BASE_SECRET_ACCESS_KEY,
                "AWS_CONFIG_FILE": "/dev/null",
                "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                "AWS_DEFAULT_REGION": "us-west-2",
                "AWS_PAGER": "",
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )
        return env

    # ---------------------------------------------------------------------- run
    def run(
        self,
        argv: list[str],
        env: dict[str, str] | None = None,
        timeout: float = 120.0,
        *,
        check: bool = False,
        input: str | bytes | None = None,
        text: bool = True,
        cwd: Path | str | None = None,
    ) -> subprocess.CompletedProcess[Any]:
        """Run `argv` inside the lab's mount namespace (lab /etc/hosts, tmpfs skopeo cache); capture output.

        nsenter would start the command in / (entering a mount namespace resets the
        working directory), so the caller's cwd (or `cwd`) is passed explicitly.
        """
        if "ns" not in self.procs:
            raise LabError("lab is not running")
        wd = str(cwd or os.getcwd())
        cmd = ["nsenter", f"--target={self.procs['ns'].pid}", "--mount", f"--wd={wd}", "--", *argv]
        res = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, input=input, text=text)
        if check and res.returncode != 0:
            raise LabError(f"{argv} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
        return res

    def aws(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`/usr/bin/aws ARGS` against the lab (convenience for tests)."""
        return self.run([AWS_CLI, *args], env=self.aws_env(), timeout=timeout)


def _b64(s: str) -> str:
    import base64

    return base64.b64encode(s.encode()).decode()
