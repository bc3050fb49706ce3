"""What is in the lab registries: push the generated test image, read digests and platforms.

Host-side skopeo runs through `Lab.run` (inside the lab namespace, so the real ECR host
names resolve and the lab CA is trusted) with the registry's htpasswd credentials.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from .ocigen import write_layout
from .paths import Account, account
from .procs import LabError

AccountRef = str | Account


class RegistryContent(ABC):
    """Base of `Lab`: needs `cache_dir`, `state_dir`, `run` and `authfile`."""

    cache_dir: Path
    state_dir: Path

    @abstractmethod
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
    ) -> subprocess.CompletedProcess[Any]: ...

    @abstractmethod
    def authfile(self, which: AccountRef) -> Path: ...

    @abstractmethod
    def create_repository(self, which: AccountRef, repo: str, *, immutable: bool = False) -> None: ...

    def push_image(
        self, which: AccountRef, repo: str, tag: str, *, extra_mb: int = 0, seed: int = 0, base_mb: int = 0
    ) -> str:
        """Copy the generated two-platform image to that registry (`skopeo copy --all`); return its digest.

        `base_mb` makes the base layer (the same for every seed) that large, as images built on
        one base image share it. The repository is created first when missing (test setup, as a
        build pipeline's repository exists before it pushes).
        """
        acct = account(which)
        self.create_repository(acct, repo)
        layout = self.cache_dir / "oci" / f"seed{seed}-mb{extra_mb}-base{base_mb}"
        digest_file = layout / "DIGEST"
        if not digest_file.exists():
            tmp = layout.with_name(layout.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            digest = write_layout(tmp, extra_mb=extra_mb, seed=seed, base_mb=base_mb)
            (tmp / "DIGEST").write_text(digest)
            shutil.rmtree(layout, ignore_errors=True)
            tmp.rename(layout)
        digest = digest_file.read_text().strip()
        out = self.state_dir / "pods" / f"push-{os.getpid()}-{time.monotonic_ns()}.digest"
        self.run(
            [
                "skopeo",
                "copy",
                "--all",
                "--preserve-digests",
                "--quiet",
                "--dest-authfile",
                str(self.authfile(acct)),
                "--digestfile",
                str(out),
                f"oci:{layout}:latest",
                f"docker://{acct.registry_host}/{repo}:{tag}",
            ],
            check=True,
            timeout=600,
        )
        pushed = out.read_text().strip()
        out.unlink()
        if pushed != digest:
            raise LabError(f"pushed digest {pushed} != generated {digest}")
        return digest

    def _inspect(self, which: AccountRef, repo: str, ref: str, flag: str) -> subprocess.CompletedProcess[Any]:
        """`skopeo inspect <flag>` of repo:ref (or repo@sha256:...) with that registry's credentials."""
        acct = account(which)
        sep = "@" if ref.startswith("sha256:") else ":"
        image = f"docker://{acct.registry_host}/{repo}{sep}{ref}"
        argv = ["skopeo", "inspect", flag, "--authfile", str(self.authfile(acct)), image]
        return self.run(argv, text=False, timeout=60)

    def inspect_raw(self, which: AccountRef, repo: str, ref: str) -> bytes | None:
        """Manifest bytes of repo:ref (or repo@sha256:...) in that registry; None when absent."""
        res = self._inspect(which, repo, ref, "--raw")
        if res.returncode == 0:
            return bytes(res.stdout)
        err = res.stderr.decode(errors="replace")
        if any(s in err.lower() for s in ("manifest unknown", "name unknown", "not found")):
            return None
        raise LabError(f"skopeo inspect {repo} {ref} at {account(which).account_id} failed: {err}")

    def digest(self, which: AccountRef, repo: str, ref: str) -> str | None:
        """sha256 of the manifest bytes (= the digest registries and ECR report), None when absent."""
        raw = self.inspect_raw(which, repo, ref)
        return None if raw is None else "sha256:" + hashlib.sha256(raw).hexdigest()

    def platforms(self, which: AccountRef, repo: str, ref: str) -> list[str]:
        """["linux/amd64", ...] of an index, or the single platform of a manifest; [] when absent."""
        raw = self.inspect_raw(which, repo, ref)
        if raw is None:
            return []
        doc = json.loads(raw)
        if "manifests" in doc:
            return [
                "/".join(
                    filter(
                        None,
                        (m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant")),
                    )
                )
                for m in doc["manifests"]
                if "platform" in m
            ]
        res = self._inspect(which, repo, ref, "--config")
        if res.returncode != 0:
            raise LabError(
                f"skopeo inspect --config {repo} {ref} failed: {res.stderr.decode(errors='replace')}"
            )
        cfg = json.loads(res.stdout)
        return ["/".join(filter(None, (cfg.get("os"), cfg.get("architecture"), cfg.get("variant"))))]
