"""Start, record, probe and stop the lab's server processes.

PIDs are written to the state folder so `python -m tests.lab down` (another
process) can stop exactly them. Each record keeps the command line, and a PID
is signalled only while /proc still shows that command line (no PID reuse
accidents). Readiness is probed, never slept for.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path


class LabError(RuntimeError):
    """The lab could not start or a lab operation failed."""


@dataclass
class Proc:
    """One recorded lab process."""

    name: str
    pid: int
    argv: list[str]
    log: str

    def cmdline(self) -> list[str] | None:
        """The live command line of `pid`, or None when it is gone / a zombie."""
        try:
            raw = Path(f"/proc/{self.pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return None
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return None
        return raw.decode(errors="replace").split("\0")[:-1]

    def alive(self) -> bool:
        """True while the PID still runs the command we started."""
        live = self.cmdline()
        return live is not None and live[: len(self.argv)] == self.argv[: len(live)] and bool(live)


def spawn(
    name: str, argv: list[str], log: Path, env: dict[str, str] | None = None
) -> tuple[Proc, subprocess.Popen[bytes]]:
    """Start `argv` in its own session with output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    return Proc(name, popen.pid, argv, str(log)), popen


def stop(proc: Proc, popen: subprocess.Popen[bytes] | None = None, timeout: float = 5.0) -> None:
    """SIGTERM exactly this PID, SIGKILL after `timeout`; reap it when it is our child."""
    if popen is not None and popen.poll() is not None:
        return
    if popen is None and not proc.alive():
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if popen is not None:
                if popen.poll() is not None:
                    return
            elif not proc.alive():
                return
            time.sleep(0.02)


def save(path: Path, procs: list[Proc], extra: dict[str, object]) -> None:
    """Record PIDs and lab facts (ports, image names) atomically."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"procs": [asdict(p) for p in procs], **extra}, indent=2))
    tmp.rename(path)


def load(path: Path) -> tuple[list[Proc], dict[str, object]]:
    """Read what `save` wrote."""
    data = json.loads(path.read_text())
    procs = [Proc(**p) for p in data.pop("procs")]
    return procs, data


def free_port(host: str) -> int:
    """A currently free TCP port on `host` (the kernel picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def https_status(
    host: str, port: int, server_name: str, ca: Path, path: str = "/", timeout: float = 2.0
) -> int:
    """HTTP status of GET https://server_name{path} sent to host:port, verified by `ca`."""
    ctx = ssl.create_default_context(cafile=str(ca))
    request = f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode()
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        tls.sendall(request)
        head = tls.recv(64).decode(errors="replace")
    return int(head.split()[1])


def wait_until(
    what: str,
    probe: Callable[[], bool],
    procs: list[tuple[Proc, subprocess.Popen[bytes]]],
    timeout: float = 20.0,
) -> None:
    """Poll `probe` until True; fail early (with log tails) if a process died."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        for proc, popen in procs:
            if popen.poll() is not None:
                raise LabError(
                    f"{proc.name} exited ({popen.returncode}) while waiting for {what}:\n{tail(proc.log)}"
                )
        try:
            if probe():
                return
        except (OSError, ValueError, IndexError) as exc:
            last = exc
        time.sleep(0.02)
    logs = "\n".join(f"--- {p.name}\n{tail(p.log)}" for p, _ in procs)
    raise LabError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})\n{logs}")


def tail(path: str | Path, lines: int = 20) -> str:
    """Last lines of a log file, for error messages."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
