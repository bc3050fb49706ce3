"""Lab certificate authority and server certificates, made with openssl.

The CA lives in the cache folder because it is baked into the lab images: a new
CA would force an image rebuild. Server certificates are cheap (EC P-256) and are
made per lab run in the state folder.
"""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

from .paths import SYSTEM_CA_BUNDLE


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, text=True)


def ensure_ca(cache_dir: Path) -> tuple[Path, Path]:
    """Return (cert, key) of the lab CA, creating it once under the cache folder."""
    ca_dir = cache_dir / "ca"
    ca_dir.mkdir(parents=True, exist_ok=True)
    cert, key = ca_dir / "lab-ca.crt", ca_dir / "lab-ca.key"
    with open(ca_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cert.exists() and key.exists()):
            tmp_key = key.with_suffix(".tmp")
            _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(tmp_key))
            _openssl(
                "req",
                "-x509",
                "-new",
                "-key",
                str(tmp_key),
                "-sha256",
                "-days",
                "3650",
                "-subj",
                "/CN=ecr-promote lab CA",
                "-out",
                str(cert),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            )
            tmp_key.rename(key)
    return cert, key


def issue_cert(ca: tuple[Path, Path], out_dir: Path, name: str, hosts: list[str]) -> tuple[Path, Path]:
    """Issue a server certificate for `hosts` (DNS names or IPs); return (cert, key)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cert, key, csr = out_dir / f"{name}.crt", out_dir / f"{name}.key", out_dir / f"{name}.csr"
    ext = out_dir / f"{name}.ext"
    sans = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts)
    ext.write_text(
        f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
    _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={hosts[0]}", "-out", str(csr))
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca[0]),
        "-CAkey",
        str(ca[1]),
        "-CAcreateserial",
        "-CAserial",
        str(out_dir / "ca.srl"),
        "-days",
        "30",
        "-sha256",
        "-extfile",
        str(ext),
        "-out",
        str(cert),
    )
    key.chmod(0o644)  # registries run as root, but keep it readable for debugging tools
    return cert, key


def write_bundle(ca_cert: Path, out: Path) -> Path:
    """System trust store + lab CA, for AWS_CA_BUNDLE and host-side clients."""
    system = SYSTEM_CA_BUNDLE.read_text() if SYSTEM_CA_BUNDLE.exists() else ""
    out.write_text(system.rstrip("\n") + "\n" + ca_cert.read_text())
    return out
