"""Write a deterministic two-platform OCI image layout, or a non-image OCI artifact (stdlib only).

The same (seed, extra_mb) always gives the same bytes and therefore the same
index digest, so tests can compare digests across registries. Layers are gzip
(mtime 0): an uncompressed layer would be compressed by skopeo on push and the
digest would change. The big layer is random (incompressible) and stored with
gzip level 0 so writing 200 MB stays fast.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
PLATFORMS = (("linux", "amd64"), ("linux", "arm64"))


@dataclass(frozen=True)
class Blob:
    """A blob written to the layout, with the uncompressed digest for layers."""

    digest: str
    size: int
    media_type: str
    diff_id: str = ""

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class _Writer:
    def __init__(self, root: Path) -> None:
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)

    def blob(self, data: bytes, media_type: str, diff_id: str = "") -> Blob:
        hexd = hashlib.sha256(data).hexdigest()
        path = self.blobs / hexd
        if not path.exists():
            path.write_bytes(data)
        return Blob(f"sha256:{hexd}", len(data), media_type, diff_id)

    def layer(self, files: dict[str, bytes], level: int = 6) -> Blob:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, content in sorted(files.items()):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(content), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(content))
        tar_bytes = raw.getvalue()
        gz = gzip.compress(tar_bytes, compresslevel=level, mtime=0)
        return self.blob(gz, OCI_LAYER_GZIP, "sha256:" + hashlib.sha256(tar_bytes).hexdigest())


def write_layout(
    path: Path, *, extra_mb: int = 0, seed: int = 0, ref: str = "latest", base_mb: int = 0
) -> str:
    """Write the OCI layout at `path` (reference `ref`) and return the index digest.

    Layers: a base layer shared by both platforms and all seeds (like a common
    base image; `base_mb` MiB of random bytes that are the same for every seed),
    a small per-platform layer depending on `seed`, and, when `extra_mb` > 0, one
    shared random layer of that many MiB seeded by `seed`.
    """
    w = _Writer(path)
    base_files = {"etc/lab-release": b"ecr-promote lab base\n"}
    if base_mb > 0:
        base_files["usr/lib/base.bin"] = random.Random("base").randbytes(base_mb * 1024 * 1024)
    base = w.layer(base_files, level=0 if base_mb else 6)
    shared = [base]
    if extra_mb > 0:
        payload = random.Random(f"extra-{seed}").randbytes(extra_mb * 1024 * 1024)
        shared.append(w.layer({"data/random.bin": payload}, level=0))
    manifests = []
    for os_name, arch in PLATFORMS:
        own = w.layer({"etc/lab-platform": f"{os_name}/{arch} seed={seed}\n".encode()})
        layers = [*shared, own]
        config = w.blob(
            _canonical(
                {
                    "architecture": arch,
                    "os": os_name,
                    "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
                    "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
                }
            ),
            OCI_CONFIG,
        )
        manifest = w.blob(
            _canonical(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": config.descriptor(),
                    "layers": [layer.descriptor() for layer in layers],
                }
            ),
            OCI_MANIFEST,
        )
        manifests.append({**manifest.descriptor(), "platform": {"architecture": arch, "os": os_name}})
    index = w.blob(
        _canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}), OCI_INDEX
    )
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    top = {**index.descriptor(), "annotations": {"org.opencontainers.image.ref.name": ref}}
    (path / "index.json").write_bytes(_canonical({"schemaVersion": 2, "manifests": [top]}))
    return index.digest


# Non-image OCI artifacts ECR stores next to images (issue 23): a WASM module (its own config
# type) and an SBOM-only artifact (an OCI 1.1 artifactType over the empty config).
WASM_CONFIG = "application/vnd.wasm.config.v0+json"
WASM_LAYER = "application/wasm"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
SPDX = "application/spdx+json"
# the smallest valid module: magic and version, no sections
WASM_MODULE = b"\x00asm\x01\x00\x00\x00"


@dataclass(frozen=True)
class Artifact:
    """A non-image artifact: its config's media type and bytes, its layers, its artifactType."""

    config_type: str
    config: bytes
    layers: tuple[tuple[str, bytes], ...]
    artifact_type: str | None = None


ARTIFACTS = {
    "wasm": Artifact(
        WASM_CONFIG,
        _canonical({"architecture": "wasm", "os": "wasip1", "layerDigests": [
            "sha256:" + hashlib.sha256(WASM_MODULE).hexdigest()]}),
        ((WASM_LAYER, WASM_MODULE),),
    ),
    "sbom": Artifact(
        EMPTY_CONFIG,
        b"{}",
        ((SPDX, _canonical({"spdxVersion": "SPDX-2.3", "name": "lab-sbom", "packages": []})),),
        SPDX,
    ),
}  # fmt: skip


def write_artifact_layout(path: Path, artifact: Artifact, *, ref: str = "latest") -> str:
    """Write ``artifact`` as an OCI layout at ``path`` (reference ``ref``); return its manifest digest."""
    w = _Writer(path)
    config = w.blob(artifact.config, artifact.config_type)
    layers = [w.blob(data, media_type) for media_type, data in artifact.layers]
    body: dict[str, object] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if artifact.artifact_type:
        body["artifactType"] = artifact.artifact_type
    body.update({"config": config.descriptor(), "layers": [layer.descriptor() for layer in layers]})
    manifest = w.blob(_canonical(body), OCI_MANIFEST)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    top = {**manifest.descriptor(), "annotations": {"org.opencontainers.image.ref.name": ref}}
    (path / "index.json").write_bytes(_canonical({"schemaVersion": 2, "manifests": [top]}))
    return manifest.digest


def main() -> None:
    """`python -m tests.lab.ocigen DIR [extra_mb] [seed]`: write a layout, print its digest."""
    import sys

    args = sys.argv[1:]
    print(
        write_layout(
            Path(args[0]),
            extra_mb=int(args[1]) if len(args) > 1 else 0,
            seed=int(args[2]) if len(args) > 2 else 0,
        )
    )


if __name__ == "__main__":
    main()
