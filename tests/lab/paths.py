"""Where the lab keeps its state and cache, and the two fake AWS accounts.

State (PIDs, logs, registry storage) is per lab run and lives outside the repo;
the cache (podman storage, rootfs tarball, lab CA) survives runs so a warm start
does not rebuild images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE_DIR = Path("/tmp/ecr-promote-lab")
DEFAULT_CACHE_DIR = Path("/var/tmp/ecr-promote-lab-cache")
AWS_CLI = "/usr/bin/aws"  # another `aws` may come first on PATH
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True)
class Account:
    """One fake AWS account: its id, its region and its ECR registry host."""

    account_id: str
    region: str

    @property
    def registry_host(self) -> str:
        """ECR's real host name: the credentials moto hands out name it."""
        return f"{self.account_id}.dkr.ecr.{self.region}.amazonaws.com"

    @property
    def password(self) -> str:
        """moto's deterministic ECR password for this account."""
        return f"{self.account_id}-auth-token"


SOURCE = Account("123456789012", "us-west-2")
DESTINATION = Account("210987654321", "us-east-1")
ACCOUNTS: dict[str, Account] = {a.account_id: a for a in (SOURCE, DESTINATION)}


def state_dir_default() -> Path:
    """The state folder: `$ECR_PROMOTE_LAB_DIR` or /tmp/ecr-promote-lab."""
    return Path(os.environ.get("ECR_PROMOTE_LAB_DIR") or DEFAULT_STATE_DIR)


def cache_dir_default() -> Path:
    """The cache folder: `$ECR_PROMOTE_LAB_CACHE` or /var/tmp/ecr-promote-lab-cache."""
    return Path(os.environ.get("ECR_PROMOTE_LAB_CACHE") or DEFAULT_CACHE_DIR)


def account(which: str | Account) -> Account:
    """Accept an `Account` or an account id string."""
    if isinstance(which, Account):
        return which
    try:
        return ACCOUNTS[which]
    except KeyError:
        raise KeyError(f"unknown lab account {which!r}; known: {sorted(ACCOUNTS)}") from None


def moto_hosts() -> list[str]:
    """Host names moto must answer for (STS global + regional, ECR API per region)."""
    names = ["sts.amazonaws.com"]
    for acct in ACCOUNTS.values():
        for name in (f"sts.{acct.region}.amazonaws.com", f"api.ecr.{acct.region}.amazonaws.com"):
            if name not in names:
                names.append(name)
    return names
