"""Build the Go tools the lab runs (kaniko, crane, regctl, cosign, helm, aws-iam-authenticator)
from their Go modules.

The versions are those of the operator's pinned default images (``ENGINES[...].default_image``,
and the signature gate's cosign image), so the lab runs exactly what a cluster pulls by default;
helm, which only the lab runs (to push and pull charts as a user would), and aws-iam-authenticator
(the lab cluster's token webhook, as EKS authenticates its tokens) are pinned here.
The lab's own Go programs (the referrers registry, under tests/lab/go/) build from their folder.
Builds are static (CGO off) and the Go module and build caches live under the lab's cache folder:
a second run finds the binary and builds nothing.

``go install module/cmd/x@version`` is the usual way, but it also asks the module proxy for the
module's version list (to report deprecations), and the proxy these machines reach refuses that
list for kaniko (HTTP 403) while serving the version itself. So the module is fetched with
``go mod download module@version`` and its command built from the downloaded module, with the
module's own go.mod and go.sum: the same source and dependencies ``go install`` would use.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from airflow_ecr_promote.engines import ENGINES
from airflow_ecr_promote.signatures import COSIGN_IMAGE

from .goenv import go_binary, go_env

LOCAL_MODULES = Path(__file__).parent / "go"
BUILD_TIMEOUT = 1800  # seconds for one download or build: cosign, the largest, takes ~4 min cold


@dataclass(frozen=True)
class GoTool:
    """A command of a Go module, built at the version of an engine's pinned default image (or of
    ``image``, another pinned image); a module under tests/lab/go/ is built from that folder."""

    name: str
    module: str
    package: str  # relative to the module root
    engine: str = ""
    ldflags: str = ""  # "{version}" is replaced
    image: str = ""  # the pinned image whose tag is the version, when no engine has it
    local: bool = False  # the module is the folder tests/lab/go/<name>
    tag_suffix: str = ""  # of the image tag, after the version (regctl's "-alpine")
    pinned: str = ""  # the version, for a tool no pinned image names

    @property
    def version(self) -> str:
        if self.local:
            return "lab"
        if self.pinned:
            return self.pinned
        tag = (self.image or ENGINES[self.engine].default_image).rsplit(":", 1)[1]
        return tag.removesuffix(self.tag_suffix) if self.tag_suffix else tag

    @property
    def binary(self) -> str:
        return self.name if self.local else Path(self.package).name


KANIKO = GoTool(
    name="kaniko",
    module="github.com/GoogleContainerTools/kaniko",
    package="cmd/executor",
    engine="kaniko",
    ldflags="-X github.com/GoogleContainerTools/kaniko/pkg/version.version={version}",
)
CRANE = GoTool(
    name="crane",
    module="github.com/google/go-containerregistry",
    package="cmd/crane",
    engine="crane",
    ldflags="-X github.com/google/go-containerregistry/cmd/crane/cmd.Version={version}",
)
REGCTL = GoTool(
    name="regctl",
    module="github.com/regclient/regclient",
    package="cmd/regctl",
    engine="regctl",
    tag_suffix="-alpine",
    ldflags="-X github.com/regclient/regclient/internal/version.vcsTag={version}",
)
COSIGN = GoTool(
    name="cosign",
    module="github.com/sigstore/cosign/v2",
    package="cmd/cosign",
    image=COSIGN_IMAGE,
    ldflags="-X sigs.k8s.io/release-utils/version.gitVersion={version}",
    tag_suffix="-dev",  # the -dev image: the same release on a base with busybox
)
# The newest helm v3 the module proxy serves and approves (v3.22.0 is served, not approved). The
# lab pushes charts with it and pulls them back from the destination (tests/lab/charts.py).
HELM = GoTool(
    name="helm",
    module="helm.sh/helm/v3",
    package="cmd/helm",
    pinned="v3.21.4",
    ldflags="-X helm.sh/helm/v3/internal/version.version={version}",
)
# EKS's token authenticator, the lab cluster's token webhook (tests/lab/iam_authenticator.py): the
# newest version the module proxy serves (`go list -m -versions sigs.k8s.io/aws-iam-authenticator`).
AWS_IAM_AUTHENTICATOR = GoTool(
    name="aws-iam-authenticator",
    module="sigs.k8s.io/aws-iam-authenticator",
    package="cmd/aws-iam-authenticator",
    pinned="v0.6.13",
    ldflags="-X sigs.k8s.io/aws-iam-authenticator/pkg.Version={version}",
)
REFERRERS_REGISTRY = GoTool(
    name="referrers-registry",
    module=str(LOCAL_MODULES / "referrers-registry"),
    package=".",
    local=True,
)
TOOLS = {
    tool.name: tool
    for tool in (KANIKO, CRANE, REGCTL, COSIGN, HELM, AWS_IAM_AUTHENTICATOR, REFERRERS_REGISTRY)
}


def build(tool: GoTool, cache_dir: Path, log: Callable[[str], None] = print) -> Path:
    """The tool's static binary, built once per version under ``cache_dir/go/bin``."""
    version = tool.version
    if tool.local:  # rebuilt whenever the lab's own source changes
        version = _source_hash(Path(tool.module))
    out_dir = cache_dir / "go" / "bin" / f"{tool.name}-{version}"
    out = out_dir / tool.binary
    if out.is_file():
        return out
    go = go_binary()
    if go is None:
        raise RuntimeError(f"no Go toolchain to build {tool.name}: install Go 1.22+ (/usr/local/go/bin/go)")
    out_dir.mkdir(parents=True, exist_ok=True)
    env = go_env(cache_dir)
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.is_file():
            return out
        t0 = time.monotonic()
        ref = f"{tool.module}@{tool.version}"
        log(f"lab: building {tool.name} {tool.version} from its Go module (minutes on a cold cache) ...")
        if tool.local:
            info = {"Dir": tool.module}
        else:
            fetched = subprocess.run(
                [go, "mod", "download", "-json", ref],
                env=env,
                capture_output=True,
                text=True,
                check=False,
                timeout=BUILD_TIMEOUT,
            )
            info = json.loads(fetched.stdout or "{}")
            if fetched.returncode != 0 or "Dir" not in info:
                raise RuntimeError(
                    f"go mod download {ref} failed: {info.get('Error') or fetched.stderr[-2000:]}"
                )
        tmp = out.with_suffix(".tmp")
        built = subprocess.run(
            [
                go,
                "build",
                "-ldflags",
                f"-s -w {tool.ldflags.format(version=tool.version)}".strip(),
                "-o",
                str(tmp),
                f"./{tool.package}",
            ],
            cwd=info["Dir"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=BUILD_TIMEOUT,
        )
        if built.returncode != 0:
            raise RuntimeError(f"go build {ref} ./{tool.package} failed:\n{built.stderr[-3000:]}")
        tmp.rename(out)
        log(f"lab: built {tool.name} {tool.version} from {tool.module} in {time.monotonic() - t0:.1f}s")
    return out


def _source_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*")):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]
