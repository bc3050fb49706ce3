"""Helm charts and other OCI artifacts in the lab's registries, written and read with real tools.

helm is built from its Go module (``helm.sh/helm/v3``, tests/lab/gotools.py) and run on the host
inside the lab's mount namespace (``Lab.run``), where the lab's /etc/hosts resolves the ECR host
names and the lab CA is in the system bundle that Go's TLS reads. It logs in as a user does: an
ECR password from ``GetAuthorizationToken`` (as ``aws ecr get-login-password`` gets it) piped to
``helm registry login --username AWS --password-stdin``; the ECR front then checks every request
against the IAM policies of whoever got that password. Its configuration, cache and registry
logins live in a folder of its own.

The non-image artifacts (a WASM module, an SBOM-only artifact) are written by tests/lab/ocigen.py
as OCI layouts and pushed with regctl (``regctl image copy ocidir://...``), byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import gotools
from .lab import Lab
from .ocigen import ARTIFACTS, write_artifact_layout
from .paths import ACCOUNTS, Account, account

TIMEOUT = 120.0
_DIGEST = re.compile(r"Digest: (sha256:[0-9a-f]{64})")


@dataclass(frozen=True)
class Pushed:
    """What is in a registry: ``<host>/<repository>:<tag>`` and its manifest digest."""

    host: str
    repository: str
    tag: str
    digest: str

    @property
    def ref(self) -> str:
        return f"{self.host}/{self.repository}:{self.tag}"


class Helm:
    """helm for one test session, with its own HOME, configuration, cache and registry logins."""

    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.lab, self.workdir = lab, workdir
        self.binary = gotools.build(gotools.HELM, lab.cache_dir, lab.log)
        for folder in ("home", "config", "cache", "data", "charts", "pulled"):
            (workdir / folder).mkdir(parents=True, exist_ok=True)

    def run(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.workdir / "home"),
            "HELM_CONFIG_HOME": str(self.workdir / "config"),
            "HELM_CACHE_HOME": str(self.workdir / "cache"),
            "HELM_DATA_HOME": str(self.workdir / "data"),
            "HELM_REGISTRY_CONFIG": str(self.workdir / "config" / "registry.json"),
        }
        done = self.lab.run(
            [str(self.binary), *args], env=env, cwd=self.workdir, timeout=TIMEOUT, input=input
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def version(self) -> str:
        return self.run("version", "--short").stdout.strip()

    def login(self, which: str | Account) -> None:
        """``helm registry login`` to that account's registry with an ECR password, as a user does
        (``aws ecr get-login-password | helm registry login ...``); the password is the lab's
        setup role's, which may pull and push in that account."""
        acct = account(which)
        token = self.lab.ecr_client(acct).get_authorization_token()["authorizationData"][0]
        user, _, password = base64.b64decode(token["authorizationToken"]).decode().partition(":")
        self.run(
            "registry", "login", acct.registry_host, "--username", user, "--password-stdin", input=password
        )

    def package(self, name: str, version: str) -> Path:
        """``helm package`` of a small chart (a ConfigMap template): the .tgz."""
        source = self.workdir / "charts" / name
        (source / "templates").mkdir(parents=True, exist_ok=True)
        (source / "Chart.yaml").write_text(
            f"apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: '1.0'\n"
            "description: a chart the ecr-promote lab promotes\ntype: application\n"
        )
        (source / "values.yaml").write_text("greeting: hello from the lab\n")
        (source / "templates" / "configmap.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
            "data:\n  greeting: {{ .Values.greeting | quote }}\n"
        )
        out = self.workdir / "charts" / "packaged"
        self.run("package", str(source), "--destination", str(out))
        return out / f"{name}-{version}.tgz"

    def push(self, chart: Path, which: str | Account, namespace: str) -> str:
        """``helm push chart oci://<host>/<namespace>``: the chart goes to ``<namespace>/<name>``,
        tagged with its version; returns the digest helm reports."""
        done = self.run("push", str(chart), f"oci://{account(which).registry_host}/{namespace}")
        found = _DIGEST.search(done.stdout + done.stderr)
        if found is None:
            raise AssertionError(f"helm push printed no digest:\n{done.stdout}\n{done.stderr}")
        return found[1]

    def pull(self, which: str | Account, repository: str, version: str) -> Path:
        """``helm pull oci://<host>/<repository> --version V``: the .tgz it wrote."""
        out = self.workdir / "pulled" / f"{account(which).account_id}-{repository.replace('/', '-')}"
        out.mkdir(parents=True, exist_ok=True)
        self.run(
            "pull", f"oci://{account(which).registry_host}/{repository}", "--version", version, "-d", str(out)
        )
        (pulled,) = out.glob("*.tgz")
        return pulled

    def show_chart(self, which: str | Account, repository: str, version: str) -> str:
        """``helm show chart oci://...``: the chart's Chart.yaml as helm reads it from the registry."""
        return self.run(
            "show", "chart", f"oci://{account(which).registry_host}/{repository}", "--version", version
        ).stdout


def push_chart(lab: Lab, helm: Helm, which: str | Account, namespace: str, name: str, version: str) -> Pushed:
    """A chart packaged and pushed by helm to ``<namespace>/<name>:<version>`` (its repository
    created first, as IaC would)."""
    acct = account(which)
    lab.create_repository(acct, f"{namespace}/{name}")
    helm.login(acct)
    digest = helm.push(helm.package(name, version), acct, namespace)
    return Pushed(acct.registry_host, f"{namespace}/{name}", version, digest)


def push_artifact(
    lab: Lab, workdir: Path, kind: str, which: str | Account, repository: str, tag: str
) -> Pushed:
    """The artifact ``kind`` of tests/lab/ocigen.ARTIFACTS written as an OCI layout and copied to
    ``repository:tag`` with regctl (``ocidir://``), its repository created first."""
    acct = account(which)
    lab.create_repository(acct, repository)
    layout = workdir / "layouts" / kind
    digest = write_artifact_layout(layout, ARTIFACTS[kind], ref=tag)
    regctl = gotools.build(gotools.REGCTL, lab.cache_dir, lab.log)
    docker = workdir / "docker"
    docker.mkdir(parents=True, exist_ok=True)
    auths: dict[str, object] = {}
    for each in ACCOUNTS.values():
        auths.update(json.loads(lab.authfile(each).read_text())["auths"])
    (docker / "config.json").write_text(json.dumps({"auths": auths}))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "DOCKER_CONFIG": str(docker)}
    target = f"{acct.registry_host}/{repository}:{tag}"
    done = lab.run(
        [str(regctl), "image", "copy", f"ocidir://layouts/{kind}:{tag}", target],
        env=env,
        cwd=workdir,
        timeout=TIMEOUT,
    )
    if done.returncode != 0:
        raise AssertionError(f"regctl image copy to {target} failed:\n{done.stdout}\n{done.stderr}")
    return Pushed(acct.registry_host, repository, tag, digest)


def sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
