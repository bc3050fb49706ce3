"""Build the lab cluster's programs from their Go modules and cache them by version.

kube-apiserver, kube-scheduler, kube-controller-manager, kubelet and kubectl come from
``k8s.io/kubernetes``, etcd from ``go.etcd.io/etcd/server/v3``, and the pause image from
Kubernetes' own ``build/pause/linux/pause.c`` (compiled static, written as an OCI archive that
``ctr images import`` reads). containerd, runc and the CNI plugins are Debian's.

Neither module builds as downloaded (../shared/K8S-LAB.md): ``k8s.io/kubernetes``'s go.mod
replaces every ``k8s.io/X`` with ``./staging/src/k8s.io/X``, which the module zip leaves out,
and etcd's server module replaces its siblings with ``../api`` and so on. So the downloaded
module is copied to the cache, each such replace is pointed at the published module of the
same release (``k8s.io/X v0.37.2``, ``go.etcd.io/etcd/api/v3 v3.7.4``), and the build runs
with ``-mod=mod``. Nothing of either module is kept in this repository.

Builds are niced and use ``-p`` of ``$ECR_PROMOTE_LAB_GO_P`` (default 2): the machines have two
cores shared with other work. A cold build of all six takes about 15 minutes there.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from .goenv import go_binary, go_env

KUBERNETES_MODULE = "k8s.io/kubernetes"
KUBERNETES_VERSION = "v1.37.2"
STAGING_VERSION = "v0.37.2"  # the published k8s.io/* modules of the same release
UNPUBLISHED_STAGING = ("sample-cli-plugin", "sample-controller")  # not on the proxy, not needed
KUBE_BINARIES = ("kube-apiserver", "kube-scheduler", "kube-controller-manager", "kubelet", "kubectl")
ETCD_MODULE = "go.etcd.io/etcd/server/v3"
ETCD_VERSION = "v3.7.4"
PAUSE_VERSION = "3.10.2"  # build/pause/Makefile's TAG in that release
PAUSE_IMAGE = f"registry.k8s.io/pause:{PAUSE_VERSION}"
BUILD_TIMEOUT = 3600  # seconds for one binary: the first (kube-apiserver) compiles most of the graph

Log = Callable[[str], None]


def kubernetes_go_mod(text: str, staging_version: str = STAGING_VERSION) -> str:
    """k8s.io/kubernetes's go.mod with its staging replaces pointed at the published modules."""
    unpublished = "|".join(UNPUBLISHED_STAGING)
    text = re.sub(rf"(?m)^\s*k8s\.io/({unpublished})\b.*\n", "", text)
    return re.sub(
        r"(?m)^(\s*)(k8s\.io/[\w.-]+) => \./staging/src/k8s\.io/[\w.-]+\s*$",
        rf"\1\2 => \2 {staging_version}",
        text,
    )


def etcd_go_mod(text: str, version: str = ETCD_VERSION) -> str:
    """etcd server's go.mod with its sibling replaces (``=> ../api``) pointed at the published modules."""
    return re.sub(
        r"(?m)^(\s*)(go\.etcd\.io/etcd/[\w./-]+) => \.\./[\w./-]+\s*$", rf"\1\2 => \2 {version}", text
    )


def _nice(argv: list[str]) -> list[str]:
    return ["nice", "-n", "10", *argv] if shutil.which("nice") else argv


def _parallelism() -> str:
    return os.environ.get("ECR_PROMOTE_LAB_GO_P", "2")


class KubeBuild:
    """Builds into ``cache_dir/go``; every result is reused once present."""

    def __init__(self, cache_dir: Path, log: Log = print) -> None:
        self.cache_dir = cache_dir
        self.log = log
        self.env = go_env(cache_dir)
        self.timings: dict[str, float] = {}  # name -> seconds, for what was built by this object

    # ------------------------------------------------------------------ source
    def _go(self) -> str:
        go = go_binary()
        if go is None:
            raise RuntimeError(
                "no Go toolchain to build the lab cluster: install Go 1.26 (/usr/local/go/bin/go)"
            )
        return go

    def _download(self, ref: str) -> Path:
        fetched = subprocess.run(
            [self._go(), "mod", "download", "-json", ref],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=BUILD_TIMEOUT,
        )
        info = json.loads(fetched.stdout or "{}")
        if fetched.returncode != 0 or "Dir" not in info:
            raise RuntimeError(f"go mod download {ref} failed: {info.get('Error') or fetched.stderr[-2000:]}")
        return Path(info["Dir"])

    def source(self, module: str, version: str, rewrite: Callable[[str], str]) -> Path:
        """A writable copy of the module with its go.mod rewritten (made once per version)."""
        name = module.split("/")[-1] if module != ETCD_MODULE else "etcd-server"
        out = self.cache_dir / "go" / "src" / f"{name}-{version}"
        ready = out / ".prepared"
        if ready.is_file():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.parent / f".{name}-{version}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if ready.is_file():
                return out
            downloaded = self._download(f"{module}@{version}")
            shutil.rmtree(out, ignore_errors=True)
            tmp = out.with_name(out.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(downloaded, tmp, ignore=shutil.ignore_patterns("vendor"))
            for path in [tmp, *tmp.rglob("*")]:  # the module cache is read-only
                path.chmod(path.stat().st_mode | 0o200)
            for work in ("go.work", "go.work.sum"):
                (tmp / work).unlink(missing_ok=True)
            go_mod = tmp / "go.mod"
            go_mod.write_text(rewrite(go_mod.read_text()))
            tmp.rename(out)
            ready.write_text(f"{module}@{version}\n")
        return out

    # ------------------------------------------------------------------ binaries
    def _go_build(self, what: str, src: Path, package: str, out: Path, ldflags: str) -> Path:
        if out.is_file():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.parent / f".{out.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if out.is_file():
                return out
            self.log(f"lab: building {what} from its Go module (minutes on a cold cache) ...")
            t0 = time.monotonic()
            tmp = out.with_name(out.name + ".tmp")
            argv = [
                self._go(),
                "build",
                "-mod=mod",
                f"-p={_parallelism()}",
                "-ldflags",
                ldflags,
                "-o",
                str(tmp),
            ]
            built = subprocess.run(
                _nice([*argv, package]),
                cwd=src,
                env=self.env,
                capture_output=True,
                text=True,
                check=False,
                timeout=BUILD_TIMEOUT,
            )
            if built.returncode != 0:
                raise RuntimeError(f"go build {what} failed:\n{built.stderr[-3000:]}")
            tmp.rename(out)
            self.timings[out.name] = time.monotonic() - t0
            self.log(f"lab: built {what} in {self.timings[out.name]:.0f}s")
        return out

    def kube(self, name: str) -> Path:
        """One of KUBE_BINARIES, built from k8s.io/kubernetes at KUBERNETES_VERSION."""
        if name not in KUBE_BINARIES:
            raise ValueError(f"{name} is not one of {KUBE_BINARIES}")
        out = self.cache_dir / "go" / "bin" / f"kubernetes-{KUBERNETES_VERSION}" / name
        if out.is_file():
            return out
        src = self.source(KUBERNETES_MODULE, KUBERNETES_VERSION, kubernetes_go_mod)
        major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
        version_vars = {"gitVersion": KUBERNETES_VERSION, "gitMajor": major, "gitMinor": minor}
        version_vars["gitTreeState"] = "clean"
        ldflags = " ".join(
            f"-X {pkg}.{var}={value}"
            for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
            for var, value in version_vars.items()
        )
        return self._go_build(f"{name} {KUBERNETES_VERSION}", src, f"./cmd/{name}", out, f"-s -w {ldflags}")

    def etcd(self) -> Path:
        """etcd, built from go.etcd.io/etcd/server/v3 at ETCD_VERSION."""
        out = self.cache_dir / "go" / "bin" / f"etcd-{ETCD_VERSION}" / "etcd"
        if out.is_file():
            return out
        src = self.source(ETCD_MODULE, ETCD_VERSION, etcd_go_mod)
        return self._go_build(f"etcd {ETCD_VERSION}", src, ".", out, "-s -w")

    def pause_archive(self) -> Path:
        """The pause image as an OCI archive named PAUSE_IMAGE, from Kubernetes' pause.c."""
        out = self.cache_dir / "kube" / f"pause-{PAUSE_VERSION}.oci.tar"
        if out.is_file():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        src = self.source(KUBERNETES_MODULE, KUBERNETES_VERSION, kubernetes_go_mod)
        binary = out.parent / f"pause-{PAUSE_VERSION}"
        cc = shutil.which("gcc") or shutil.which("cc")
        if cc is None:
            raise RuntimeError("no C compiler (gcc) for the pause image")
        pause_c = src / "build" / "pause" / "linux" / "pause.c"
        flags = ["-Os", "-Wall", "-static", f"-DVERSION=v{PAUSE_VERSION}-lab"]  # build/pause/Makefile's
        subprocess.run(
            [cc, *flags, "-o", str(binary), str(pause_c)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        subprocess.run(["strip", str(binary)], check=False, capture_output=True, timeout=60)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(oci_archive(PAUSE_IMAGE, {"pause": binary.read_bytes()}, entrypoint=["/pause"]))
        tmp.rename(out)
        return out

    def all(self) -> dict[str, Path]:
        """Everything the cluster runs, built or found: name -> path."""
        built = {name: self.kube(name) for name in KUBE_BINARIES}
        built["etcd"] = self.etcd()
        built["pause"] = self.pause_archive()
        return built


def oci_archive(name: str, files: dict[str, bytes], *, entrypoint: list[str]) -> bytes:
    """A one-layer linux/amd64 image as an OCI image-layout tar, named ``name`` for containerd."""
    layer_io = io.BytesIO()
    with tarfile.open(fileobj=layer_io, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o755, 0
            tar.addfile(info, io.BytesIO(data))
    layer = layer_io.getvalue()
    blobs: dict[str, bytes] = {}

    def blob(data: bytes, media_type: str) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    layer_desc = blob(layer, "application/vnd.oci.image.layer.v1.tar")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
    }
    config_desc = blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "config": config_desc, "layers": [layer_desc]}
    manifest_desc = blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    tag = name.rsplit(":", 1)[1]
    annotations = {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag}
    index = {"schemaVersion": 2, "manifests": [{**manifest_desc, "annotations": annotations}]}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": json.dumps(index).encode()}
        entries.update({f"blobs/sha256/{d.split(':')[1]}": data for d, data in blobs.items()})
        for path, data in entries.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def main() -> int:
    """`python -m tests.lab.kubebuild`: build (or find) everything and print per-part times."""
    from .paths import cache_dir_default

    builder = KubeBuild(cache_dir_default())
    t0 = time.monotonic()
    paths = builder.all()
    print(
        json.dumps(
            {"paths": {k: str(v) for k, v in paths.items()}, "built_seconds": builder.timings}, indent=2
        )
    )
    print(f"lab cluster programs ready in {time.monotonic() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
