"""Sign, attest and verify lab images with the real cosign, and read registries with real regctl.

Both are built from their Go modules (tests/lab/gotools.py) at the versions of the pinned images
(the gate's cosign, the regctl engine), and run on the host inside the lab's mount namespace
(``Lab.run``): the lab's /etc/hosts resolves the ECR host names and the lab CA is in the system
bundle there. cosign reads a registry's credentials from ``$REGISTRY_AUTH_FILE`` (the lab's
per-account auth file; go-containerregistry's keychain reads it when no Docker config exists),
regctl from ``$DOCKER_CONFIG/config.json``. Keys are made with ``cosign generate-key-pair``;
signatures are made with ``--tlog-upload=false`` and checked with ``--insecure-ignore-tlog``
(no Rekor on an offline machine).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import gotools
from .lab import Lab
from .paths import ACCOUNTS, Account, account

KEY_PASSWORD = "lab-cosign-password"
NO_TLOG_SIGN = "--tlog-upload=false"
NO_TLOG_VERIFY = "--insecure-ignore-tlog=true"


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path

    @property
    def public_pem(self) -> str:
        return self.public.read_text()


class Tools:
    """cosign and regctl for one test session, in a folder of their own (keys, HOME, configs)."""

    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.lab = lab
        self.workdir = workdir
        self.cosign_binary = gotools.build(gotools.COSIGN, lab.cache_dir, lab.log)
        self.regctl_binary = gotools.build(gotools.REGCTL, lab.cache_dir, lab.log)
        (workdir / "home").mkdir(parents=True, exist_ok=True)
        docker = workdir / "docker"
        docker.mkdir(exist_ok=True)
        auths: dict[str, Any] = {}
        for acct in ACCOUNTS.values():
            auths.update(json.loads(lab.authfile(acct).read_text())["auths"])
        (docker / "config.json").write_text(json.dumps({"auths": auths}))

    def _env(self, which: str | Account | None = None) -> dict[str, str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.workdir / "home"),
            "COSIGN_PASSWORD": KEY_PASSWORD,
            "COSIGN_YES": "true",
        }
        if which is not None:
            env["REGISTRY_AUTH_FILE"] = str(self.lab.authfile(account(which)))
        return env

    def cosign(self, *args: str, which: str | Account | None = None) -> subprocess.CompletedProcess[str]:
        """``cosign ARGS`` with that account's registry credentials (None: anonymous)."""
        env = {**self._env(which), "COSIGN_EXPERIMENTAL": "1"}
        return self.lab.run([str(self.cosign_binary), *args], env=env, cwd=self.workdir, timeout=120)

    def regctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``regctl ARGS`` with both lab registries' credentials."""
        env = {**self._env(), "DOCKER_CONFIG": str(self.workdir / "docker")}
        return self.lab.run([str(self.regctl_binary), *args], env=env, cwd=self.workdir, timeout=120)

    def key_pair(self, name: str) -> KeyPair:
        pair = KeyPair(self.workdir / f"{name}.key", self.workdir / f"{name}.pub")
        if not pair.public.exists():
            _check(self.cosign("generate-key-pair", "--output-key-prefix", name))
        return pair

    def sign(self, image: str, key: KeyPair, which: str | Account | None, *, referrers: bool = False) -> None:
        """Sign the image and, with ``--recursive``, each platform manifest of its index."""
        mode = ["--registry-referrers-mode=oci-1-1"] if referrers else ["--recursive"]
        _check(self.cosign("sign", "--key", str(key.private), NO_TLOG_SIGN, *mode, image, which=which))

    def attest(self, image: str, key: KeyPair, which: str | Account, predicate: dict[str, Any]) -> None:
        path = self.workdir / "predicate.json"
        path.write_text(json.dumps(predicate))
        args = ["--key", str(key.private), NO_TLOG_SIGN, "--type", "custom", "--predicate", str(path)]
        _check(self.cosign("attest", *args, image, which=which))

    def attach_sbom(self, image: str, which: str | Account) -> None:
        path = self.workdir / "sbom.spdx.json"
        path.write_text(json.dumps(SBOM))
        _check(self.cosign("attach", "sbom", "--sbom", str(path), "--type", "spdx", image, which=which))

    def put_sbom_referrer(self, image: str) -> None:
        """An SPDX SBOM pushed as an OCI 1.1 referrer of ``image`` (``regctl artifact put --subject``)."""
        path = self.workdir / "sbom.spdx.json"
        path.write_text(json.dumps(SBOM))
        args = ["--subject", image, "--artifact-type", "application/spdx+json", "--file", str(path)]
        _check(self.regctl("artifact", "put", *args, "--file-media-type", "application/spdx+json"))

    def verify(
        self, image: str, key: KeyPair, which: str | Account | None, *, oci11: bool = False
    ) -> subprocess.CompletedProcess[str]:
        extra = ["--experimental-oci11"] if oci11 else []
        return self.cosign("verify", "--key", str(key.public), NO_TLOG_VERIFY, *extra, image, which=which)

    def verify_attestation(
        self, image: str, key: KeyPair, which: str | Account
    ) -> subprocess.CompletedProcess[str]:
        args = ["--key", str(key.public), NO_TLOG_VERIFY, "--type", "custom"]
        return self.cosign("verify-attestation", *args, image, which=which)

    def tags(self, repository: str) -> list[str]:
        """Every tag of ``host/repo``."""
        return _check(self.regctl("tag", "ls", repository)).stdout.split()

    def referrers(self, image: str) -> list[str]:
        """Digests of the OCI referrers of ``image`` (through the referrers API when served)."""
        listed = self.regctl(
            "artifact", "list", image, "--format", "{{range .Descriptors}}{{println .Digest}}{{end}}"
        )
        return _check(listed).stdout.split()

    def copy(self, source: str, dest: str) -> None:
        _check(self.regctl("image", "copy", source, dest))


SBOM = {
    "spdxVersion": "SPDX-2.3",
    "SPDXID": "SPDXRef-DOCUMENT",
    "name": "lab-image",
    "dataLicense": "CC0-1.0",
    "documentNamespace": "https://airflow-ecr-promote.github.io/lab/sbom",
    "creationInfo": {"created": "2026-01-01T00:00:00Z", "creators": ["Tool: airflow-ecr-promote-lab"]},
    "packages": [],
}


def _check(res: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    if res.returncode != 0:
        raise AssertionError(
            f"{res.args[-8:]} exited {res.returncode}:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
        )
    return res
