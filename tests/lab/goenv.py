"""Where the Go toolchain is and the environment every lab build runs it with.

Standard library only: ``make test`` starts the cluster's build (tests/lab/kubebuild.py) with the
machine's python3 before the project's virtualenvs exist.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

GO_CANDIDATES = ("/usr/local/go/bin/go", "go")


def go_binary() -> str | None:
    """The Go toolchain (1.22+ is needed by both modules): /usr/local/go first, then PATH."""
    for candidate in GO_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def go_env(cache_dir: Path) -> dict[str, str]:
    root = cache_dir / "go"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(
        {
            "GOMODCACHE": str(root / "mod"),
            "GOCACHE": str(root / "cache"),
            "GOPATH": str(root / "path"),
            "CGO_ENABLED": "0",
            "GOFLAGS": "-trimpath",
            "GOTOOLCHAIN": "local",
        }
    )
    return env
