"""Build the lab's container images once and keep them in the cache folder.

debootstrap (minbase bookworm) -> `podman import` -> `podman build` adding the
tools. Images are tagged with a hash of their recipe (Containerfile, lab CA,
base image), so a warm start only checks `podman image exists`.
The images bake in what a real cluster provides by other means (the lab CA in the
trust store, the base AWS keys standing in for IRSA: the IAM user `ecr-promote-pod`'s access
key `AKIALABECRPROMOTEPOD`, seeded in moto by tests/lab/moto_iam.py) so the operator's pod runs
unchanged, and they run as uid 65532 with a read-only root filesystem. The keys are part of
the recipe, so changing them changes the image tag and rebuilds the images.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import gotools
from .moto_iam import BASE_ACCESS_KEY_ID, BASE_SECRET_ACCESS_KEY
from .podman import podman_env

SUITE = "bookworm"
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
REPO_PREFIX = "localhost/ecr-promote-lab"
NONROOT_UID = 65532

_COMMON_TAIL = """\
COPY lab-ca.crt /usr/local/share/ca-certificates/ecr-promote-lab.crt
RUN update-ca-certificates \\
 && groupadd -g {uid} nonroot \\
 && useradd -u {uid} -g {uid} -d /home/nonroot -m -s /bin/sh nonroot
ENV AWS_ACCESS_KEY_ID={key_id} AWS_SECRET_ACCESS_KEY={secret} HOME=/home/nonroot
USER {uid}:{uid}
WORKDIR /home/nonroot
"""

_APT = """\
FROM {base}
RUN apt-get -o Acquire::Check-Valid-Until=false update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {packages} \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
"""

PACKAGES = {
    "awscli": "awscli ca-certificates coreutils",
    "skopeo": "skopeo ca-certificates",
}

# Debian's aws CLI v2 vendors botocore with its own cacert.pem and ignores the system
# store: point it at the system bundle so the baked-in lab CA is trusted without
# AWS_CA_BUNDLE in the pod (real ECR certificates chain to CAs in both stores).
EXTRA = {
    "awscli": "RUN ln -sf /etc/ssl/certs/ca-certificates.crt"
    " /usr/lib/python3/dist-packages/awscli/botocore/cacert.pem\n",
    "skopeo": "",
}


# Laid out like the official images (kaniko's deploy/Dockerfile; crane's :debug image, ko-built
# on distroless base:debug), with the lab CA in the bundle the image trusts, as a real cluster
# trusts ECR's public CA. kaniko: FROM scratch, /kaniko/executor as entrypoint, its CA bundle in
# /kaniko/ssl/certs, DOCKER_CONFIG=/kaniko/.docker, /workspace; root, as upstream.
_KANIKO = """\
FROM scratch
COPY executor /kaniko/executor
COPY ca-certificates.crt /kaniko/ssl/certs/ca-certificates.crt
COPY docker/ /kaniko/.docker/
COPY nsswitch.conf /etc/nsswitch.conf
ENV HOME=/root USER=root PATH=/usr/local/bin:/kaniko SSL_CERT_DIR=/kaniko/ssl/certs \\
    DOCKER_CONFIG=/kaniko/.docker/ \\
    DOCKER_CREDENTIAL_GCR_CONFIG=/kaniko/.config/gcloud/docker_credential_gcr_config.json
WORKDIR /workspace
RUN ["/kaniko/executor", "version"]
ENTRYPOINT ["/kaniko/executor"]
"""

# crane's :debug image: crane in /ko-app, busybox (static) in /busybox, distroless's passwd
# with root and nonroot (65532), the CA bundle at the Debian path distroless uses.
_CRANE = """\
FROM scratch
COPY busybox /busybox/busybox
RUN ["/busybox/busybox", "--install", "-s", "/busybox"]
COPY crane /ko-app/crane
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY passwd /etc/passwd
COPY group /etc/group
COPY tmp/ /tmp/
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/busybox:/ko-app \\
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
RUN ["/ko-app/crane", "version"]
ENTRYPOINT ["/ko-app/crane"]
"""
# regctl's -alpine image: regctl in /usr/local/bin, a busybox shell (static busybox here, for
# alpine's), its user appuser (1000), the CA bundle at the alpine path.
_REGCTL = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY regctl /usr/local/bin/regctl
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY passwd /etc/passwd
COPY group /etc/group
COPY tmp/ /tmp/
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN ["/usr/local/bin/regctl", "version"]
USER 1000
CMD ["regctl", "--help"]
"""

# cosign's -dev image (ko-built on distroless static-debian12:debug-nonroot): cosign in /ko-app as
# entrypoint, busybox (static) in /busybox for the gate's script, nonroot 65532.
_COSIGN = """\
FROM scratch
COPY busybox /busybox/busybox
RUN ["/busybox/busybox", "--install", "-s", "/busybox"]
COPY cosign /ko-app/cosign
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY passwd /etc/passwd
COPY group /etc/group
COPY tmp/ /tmp/
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/busybox:/ko-app \\
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt HOME=/home/nonroot
RUN ["/ko-app/cosign", "version"]
USER 65532
ENTRYPOINT ["/ko-app/cosign"]
"""
_PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
_REGCTL_PASSWD = _PASSWD + "appuser:x:1000:1000:appuser:/home/appuser:/sbin/nologin\n"
_CONTAINERFILES = {"kaniko": _KANIKO, "crane": _CRANE, "regctl": _REGCTL, "cosign": _COSIGN}
_GROUP = "root:x:0:\nnonroot:x:65532:\n"
BUSYBOX_STATIC = Path("/bin/busybox")  # Debian's busybox-static


ALL_IMAGES = ("awscli", "skopeo", "kaniko", "crane", "regctl", "cosign")
DEMO_IMAGES = ("awscli", "skopeo", "kaniko")  # what `make demo` runs


@dataclass(frozen=True)
class LabImages:
    """Names of the built images (`localhost/ecr-promote-lab/<name>:<hash>`); "" when not built."""

    awscli: str = ""
    skopeo: str = ""
    kaniko: str = ""
    crane: str = ""
    regctl: str = ""
    cosign: str = ""  # the signature gate's image

    def copier(self, engine: str) -> str:
        """The lab's image for an engine's copier container."""
        ref = str(getattr(self, engine))
        if not ref:
            raise RuntimeError(f"the lab's {engine} image was not built (this lab built only some images)")
        return ref


def _sha(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def debian_mirror() -> str:
    """The Debian mirror apt on this machine uses (the only reachable one)."""
    for src in (*Path("/etc/apt/sources.list.d").glob("*.sources"), Path("/etc/apt/sources.list")):
        if src.is_file():
            m = re.search(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+/debian)/?\s*$", src.read_text(), re.M)
            if m:
                return m.group(1)
    return DEFAULT_MIRROR


class ImageBuilder:
    """Builds (or finds) the lab images in the podman storage under `cache_dir`."""

    def __init__(self, cache_dir: Path, ca_cert: Path, log: Callable[[str], None] = print) -> None:
        self.cache_dir = cache_dir
        self.ca_cert = ca_cert
        self.env = podman_env(cache_dir)
        self.log = log
        self.mirror = debian_mirror()

    def _podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", *args], env=self.env, check=check, capture_output=True, text=True)

    def exists(self, ref: str) -> bool:
        """True when `ref` is in the lab's podman storage."""
        return self._podman("image", "exists", ref, check=False).returncode == 0

    def base_image(self) -> str:
        """The debootstrapped base, imported once; the rootfs tarball is cached too."""
        tag = _sha("debootstrap", SUITE, "minbase", self.mirror, "v1")
        ref = f"{REPO_PREFIX}/base:{tag}"
        if self.exists(ref):
            return ref
        tarball = self.cache_dir / "rootfs" / f"{SUITE}-minbase-{tag}.tar"
        if not tarball.exists():
            self.log(f"lab: building the Debian {SUITE} base (debootstrap minbase) ...")
            self._debootstrap(tarball)
        t0 = time.monotonic()
        self._podman("import", "--change", 'CMD ["/bin/bash"]', str(tarball), ref)
        self.log(f"lab: imported {ref} in {time.monotonic() - t0:.1f}s")
        return ref

    def _debootstrap(self, tarball: Path) -> None:
        tarball.parent.mkdir(parents=True, exist_ok=True)
        work = tarball.with_suffix(".d")
        shutil.rmtree(work, ignore_errors=True)
        t0 = time.monotonic()
        try:
            subprocess.run(
                ["debootstrap", "--variant=minbase", SUITE, str(work), self.mirror],
                check=True,
                capture_output=True,
                text=True,
            )
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for f in (work / junk).glob("*"):
                    if f.is_file():
                        f.unlink()
            tmp = tarball.with_suffix(".tmp")
            subprocess.run(["tar", "-C", str(work), "--numeric-owner", "-cf", str(tmp), "."], check=True)
            tmp.rename(tarball)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"debootstrap failed: {exc.stderr[-3000:] if exc.stderr else exc}") from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.log(f"lab: debootstrap {SUITE} minbase in {time.monotonic() - t0:.1f}s")

    def recipe(self, name: str, base: str) -> str:
        """The Containerfile of one tool image."""
        return (
            _APT.format(base=base, packages=PACKAGES[name])
            + EXTRA[name]
            + _COMMON_TAIL.format(uid=NONROOT_UID, key_id=BASE_ACCESS_KEY_ID, secret=BASE_SECRET_ACCESS_KEY)
        )

    def tool_image(self, name: str, base: str) -> str:
        """Build `name` on `base` unless an image with the same recipe hash exists."""
        containerfile = self.recipe(name, base)
        ref = f"{REPO_PREFIX}/{name}:{_sha(containerfile, self.ca_cert.read_bytes())}"
        if self.exists(ref):
            return ref
        self.log(f"lab: building the {name} image (apt-get in the Debian base) ...")
        ctx = self._context(name, containerfile)
        shutil.copy(self.ca_cert, ctx / "lab-ca.crt")
        return self._build(name, ref, ctx)

    def go_image(self, name: str) -> str:
        """kaniko, crane, regctl or cosign: the binary built from its Go module, in an image laid out
        like upstream's."""
        tool = gotools.TOOLS[name]
        containerfile = _CONTAINERFILES[name]
        bundle = SYSTEM_CA_BUNDLE.read_bytes() + self.ca_cert.read_bytes()
        ref = f"{REPO_PREFIX}/{name}:{_sha(containerfile, bundle, tool.module, tool.version)}"
        if self.exists(ref):
            return ref
        binary = gotools.build(tool, self.cache_dir, self.log)
        ctx = self._context(name, containerfile)
        shutil.copy(binary, ctx / tool.binary)
        (ctx / "ca-certificates.crt").write_bytes(bundle)
        if name == "kaniko":
            (ctx / "docker").mkdir()
            (ctx / "docker" / ".keep").touch()
            (ctx / "nsswitch.conf").write_text("hosts: files dns\n")
        else:
            shutil.copy(BUSYBOX_STATIC, ctx / "busybox")
            (ctx / "passwd").write_text(_REGCTL_PASSWD if name == "regctl" else _PASSWD)
            (ctx / "group").write_text(_GROUP + ("appuser:x:1000:\n" if name == "regctl" else ""))
            (ctx / "tmp").mkdir()
            (ctx / "tmp").chmod(0o1777)
            (ctx / "tmp" / ".keep").touch()
        return self._build(name, ref, ctx)

    def _context(self, name: str, containerfile: str) -> Path:
        ctx = self.cache_dir / "build" / name
        shutil.rmtree(ctx, ignore_errors=True)
        ctx.mkdir(parents=True)
        (ctx / "Containerfile").write_text(containerfile)
        return ctx

    def _build(self, name: str, ref: str, ctx: Path) -> str:
        t0 = time.monotonic()
        res = self._podman(
            "build", "--pull=never", "-t", ref, "-f", str(ctx / "Containerfile"), str(ctx), check=False
        )
        if res.returncode != 0:
            raise RuntimeError(f"podman build {name} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        self.log(f"lab: built {ref} in {time.monotonic() - t0:.1f}s")
        return ref

    def ensure(self, names: tuple[str, ...] = ALL_IMAGES) -> LabImages:
        """Return the lab images `names`, building what is missing (serialised by a file lock)."""
        unknown = sorted(set(names) - set(ALL_IMAGES))
        if unknown:
            raise ValueError(f"unknown lab images {unknown}; known: {list(ALL_IMAGES)}")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / ".build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            built: dict[str, str] = {}
            base = self.base_image() if {"awscli", "skopeo"} & set(names) else ""
            for name in names:
                built[name] = self.tool_image(name, base) if name in PACKAGES else self.go_image(name)
            return LabImages(**built)


def ensure_images(
    cache_dir: Path, ca_cert: Path, log: Callable[[str], None] = print, names: tuple[str, ...] = ALL_IMAGES
) -> LabImages:
    """Build or find the lab images `names` (all of them by default); see `ImageBuilder`."""
    return ImageBuilder(cache_dir, ca_cert, log).ensure(names)
