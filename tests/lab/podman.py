"""One fixed podman configuration for the lab (LAB.md: podman 4.3.1 needs it).

Every podman call of the lab (image builds and `kube play`) uses the same
containers.conf / storage.conf, so the graphroot is never touched by a second,
different configuration (mixing them made every container exit hang 20 s).
"""

from __future__ import annotations

import os
from pathlib import Path


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.rename(path)


def podman_env(cache_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Write the lab's podman config under `cache_dir` and return env naming it."""
    root = cache_dir / "podman"
    for sub in ("graphroot", "runroot", "tmp", "conf"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    containers_conf = root / "conf" / "containers.conf"
    storage_conf = root / "conf" / "storage.conf"
    _write_if_changed(
        containers_conf,
        "[containers]\n"
        'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        'netns = "host"\n'
        "\n[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f'events_logfile_path = "{root}/events.log"\n'
        f'tmp_dir = "{root}/tmp"\n',
    )
    _write_if_changed(
        storage_conf,
        f'[storage]\ndriver = "overlay"\ngraphroot = "{root}/graphroot"\nrunroot = "{root}/runroot"\n',
    )
    env = dict(os.environ if base is None else base)
    env["CONTAINERS_CONF"] = str(containers_conf)
    env["CONTAINERS_STORAGE_CONF"] = str(storage_conf)
    return env
