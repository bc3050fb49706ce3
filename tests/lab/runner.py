"""Run a Kubernetes Pod (as the operator builds it) with `podman kube play`.

podman is the kubelet here. The pod is played unchanged except for the one piece
of kubelet emulation podman lacks: termination messages. For every container a
hostPath `File` from the state folder is mounted at its terminationMessagePath
and read afterwards (init container logs vanish once they succeed, so the file
is the only trace they leave). The pod goes in as JSON: podman 4.3.1 mangles YAML
strings that begin with a newline, and JSON avoids PyYAML's folded styles.
"""

from __future__ import annotations

import copy
import json
import secrets
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .procs import LabError

if TYPE_CHECKING:
    from kubernetes.client import V1ContainerStatus, V1Pod

    from .lab import Lab

DEFAULT_TERMINATION_PATH = "/dev/termination-log"
MAX_MESSAGE_BYTES = 4096  # kubelet reads at most the last 4 KiB of the termination message file
MAX_POD_MESSAGE_BYTES = 12 * 1024  # ... and keeps the first 12 KiB / (containers + init containers)
FALLBACK_LOG_LINES = 80  # FallbackToLogsOnError: last 80 lines ...
FALLBACK_LOG_BYTES = 2048  # ... or 2 KiB of the log, whichever is smaller (Kubernetes API docs)


@dataclass
class ContainerOutcome:
    """What the kubelet would report for one container."""

    name: str
    image: str
    init: bool
    exit_code: int | None = None  # None: never ran (waiting)
    reason: str = "PodInitializing"  # Completed / Error / OOMKilled / DeadlineExceeded / PodInitializing
    message: str = ""
    logs: str = ""  # empty for init containers that succeeded (podman removes them)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # What podman actually applied (from `podman container inspect`): user, read-only root fs,
    # effective capabilities, no-new-privileges. Empty for containers podman already removed.
    applied: dict[str, Any] = field(default_factory=dict)

    @property
    def terminated(self) -> bool:
        """True when the container ran to an end."""
        return self.exit_code is not None


@dataclass
class PodOutcome:
    """Result of `play_pod`: phase plus per-container outcomes, in spec order."""

    name: str
    phase: str  # "Succeeded" | "Failed"
    init_containers: list[ContainerOutcome] = field(default_factory=list)
    containers: list[ContainerOutcome] = field(default_factory=list)
    play_output: str = ""
    # the pod's peak memory in bytes, from its cgroup (on the lab's cluster; None elsewhere)
    memory_peak: int | None = None

    def container(self, name: str) -> ContainerOutcome:
        """The outcome of the (init) container called `name`."""
        for c in (*self.init_containers, *self.containers):
            if c.name == name:
                return c
        raise KeyError(name)

    def as_v1pod(self, request: V1Pod) -> V1Pod:
        """A copy of `request` with `status` filled as a kubelet would (phase, container statuses)."""
        from kubernetes.client import V1PodStatus

        pod = copy.deepcopy(request)
        pod.status = V1PodStatus(
            phase=self.phase,
            init_container_statuses=[_status(c) for c in self.init_containers] or None,
            container_statuses=[_status(c) for c in self.containers],
        )
        return pod


def _status(c: ContainerOutcome) -> V1ContainerStatus:
    from kubernetes.client import (
        V1ContainerState,
        V1ContainerStateTerminated,
        V1ContainerStateWaiting,
        V1ContainerStatus,
    )

    if c.terminated:
        state = V1ContainerState(
            terminated=V1ContainerStateTerminated(
                exit_code=c.exit_code,
                reason=c.reason,
                message=c.message or None,
                started_at=c.started_at,
                finished_at=c.finished_at,
            )
        )
    else:
        state = V1ContainerState(waiting=V1ContainerStateWaiting(reason=c.reason))
    return V1ContainerStatus(
        name=c.name, image=c.image, image_id="", ready=False, restart_count=0, started=False, state=state
    )


def play_pod(lab: Lab, pod: dict[str, Any], timeout: float = 300.0) -> PodOutcome:
    """Play `pod` (a sanitized V1Pod dict) in the lab, wait for it to finish, always take it down."""
    pod = json.loads(json.dumps(pod))  # a private copy without shared sub-lists (deepcopy keeps sharing)
    meta = pod.setdefault("metadata", {})
    if not meta.get("name"):  # the API server would fill it from generateName
        meta["name"] = (meta.get("generateName") or "lab-pod-") + secrets.token_hex(3)
    name = meta["name"]
    _fit_annotations_for_podman(meta)
    run_dir = lab.state_dir / "pods" / f"{name}-{secrets.token_hex(3)}"
    run_dir.mkdir(parents=True)
    spec = pod["spec"]
    inits, mains = spec.get("initContainers") or [], spec.get("containers") or []
    term_files = _mount_termination_files(spec, [*inits, *mains], run_dir)
    private_volumes = _private_empty_dirs(spec, [*inits, *mains], run_dir.name)
    pod_file = run_dir / "pod.json"
    pod_file.write_text(json.dumps(pod, indent=1))
    env = lab.podman_env()
    events = _events_log(env)
    events_from = events.stat().st_size if events.exists() else 0
    try:
        play = lab.run(
            ["podman", "kube", "play", "--network", "host", str(pod_file)], env=env, timeout=timeout
        )
        output = play.stdout + play.stderr
        runtime = _Runtime(lab, env, name, pod)
        outcome = PodOutcome(name, "Failed", play_output=output)
        if play.returncode == 0:
            outcome.init_containers = [_outcome(c, True, exit_code=0, reason="Completed") for c in inits]
            outcome.containers = runtime.finish(mains, timeout)
            _init_times(outcome.init_containers, name, _container_events(events, events_from))
        else:
            outcome.init_containers, outcome.containers = runtime.after_failed_play(inits, mains, output)
        budget = MAX_POD_MESSAGE_BYTES // max(1, len(inits) + len(mains))
        for c in (*inits, *mains):
            _read_message(outcome.container(c["name"]), c, term_files[c["name"]], budget)
        if outcome.containers and all(c.exit_code == 0 for c in outcome.containers):
            outcome.phase = "Succeeded"
        return outcome
    finally:
        # the infra container ignores SIGTERM for podman's stop timeout after a failed play: kill first
        lab.run(["podman", "pod", "stop", "--time", "0", name], env=env, timeout=60)
        lab.run(["podman", "kube", "down", str(pod_file)], env=env, timeout=120)
        if private_volumes:
            lab.run(["podman", "volume", "rm", "--force", *private_volumes], env=env, timeout=60)


PODMAN_ANNOTATION_MAX = 63


def _fit_annotations_for_podman(meta: dict[str, Any]) -> None:
    """podman 4.3 refuses annotation values over 63 characters ("value length exceeds
    Kubernetetes max 63"), a limit Kubernetes has for label values only (annotations may hold
    256 KiB). Annotations change nothing a container does, so a long value is split into
    63-character chunks under numbered keys."""
    annotations = meta.get("annotations") or {}
    for key, value in list(annotations.items()):
        if isinstance(value, str) and len(value) > PODMAN_ANNOTATION_MAX:
            del annotations[key]
            size = PODMAN_ANNOTATION_MAX
            for index in range(0, len(value), size):
                annotations[f"{key}.{index // size}"] = value[index : index + size]


def _private_empty_dirs(spec: dict[str, Any], containers: list[dict[str, Any]], suffix: str) -> list[str]:
    """podman 4.3's ``kube play`` makes each emptyDir a named volume called as in the pod, and
    the lab's podman storage is shared by every lab on the machine: two pods running at once
    (two engineers' tests) would share, and overwrite, each other's "emptyDir" (an ECR password
    of the wrong account, files gone). A kubelet gives every pod its own; so does this: each
    emptyDir gets a name unique to this run, removed afterwards. Returns the names."""
    renamed: dict[str, str] = {}
    for volume in spec.get("volumes") or []:
        if "emptyDir" in volume:
            private = f"{volume['name']}-{suffix}"[:63].rstrip("-")
            renamed[volume["name"]] = private
            volume["name"] = private
    for container in containers:
        for mount in container.get("volumeMounts") or []:
            mount["name"] = renamed.get(mount["name"], mount["name"])
    return list(renamed.values())


def _mount_termination_files(
    spec: dict[str, Any], containers: list[dict[str, Any]], run_dir: Path
) -> dict[str, Path]:
    """Kubelet emulation: a world-writable file per container at its terminationMessagePath."""
    files: dict[str, Path] = {}
    volumes = spec.setdefault("volumes", [])
    for i, c in enumerate(containers):
        path = run_dir / f"termination-{i}"
        path.touch()
        path.chmod(0o666)  # the container user is not root
        files[c["name"]] = path
        vol = f"lab-termination-{i}"
        volumes.append({"name": vol, "hostPath": {"path": str(path), "type": "File"}})
        mount = {"name": vol, "mountPath": c.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH}
        c["volumeMounts"] = [*(c.get("volumeMounts") or []), mount]
    return files


def _outcome(c: dict[str, Any], init: bool, **kw: Any) -> ContainerOutcome:
    return ContainerOutcome(name=c["name"], image=c.get("image", ""), init=init, **kw)


def _read_message(out: ContainerOutcome, spec: dict[str, Any], path: Path, budget: int) -> None:
    """terminationMessagePolicy semantics: the file, or the log tail on error when the file is empty;
    then the kubelet's cuts (its status manager keeps the first ``budget`` bytes of each)."""
    if not out.terminated:
        return
    message = path.read_bytes()[-MAX_MESSAGE_BYTES:].decode(errors="replace")
    if not message and out.exit_code != 0 and spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
        tail = "\n".join(out.logs.splitlines()[-FALLBACK_LOG_LINES:])
        message = tail.encode()[-FALLBACK_LOG_BYTES:].decode(errors="ignore")
    out.message = message.encode()[:budget].decode(errors="ignore")


class _Runtime:
    """podman queries about one played pod (container names are `<pod>-<container>`)."""

    def __init__(self, lab: Lab, env: dict[str, str], pod: str, pod_spec: Any = None) -> None:
        self.lab, self.env, self.pod, self.pod_spec = lab, env, pod, pod_spec

    def _podman(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return self.lab.run(["podman", *args], env=self.env, timeout=timeout)

    def logs(self, ctr: str) -> str:
        res = self.lab.run(["sh", "-c", 'exec podman logs "$1" 2>&1', "sh", ctr], env=self.env, timeout=60)
        return res.stdout if res.returncode == 0 else ""

    def inspect(self, ctr: str) -> dict[str, Any] | None:
        res = self._podman("container", "inspect", ctr)
        return json.loads(res.stdout)[0] if res.returncode == 0 else None

    def terminated(self, c: dict[str, Any], init: bool) -> ContainerOutcome | None:
        info = self.inspect(f"{self.pod}-{c['name']}")
        if info is None or info["State"]["Status"] not in ("exited", "stopped"):
            return None
        state = info["State"]
        code = int(state["ExitCode"])
        reason = "OOMKilled" if state.get("OOMKilled") else ("Completed" if code == 0 else "Error")
        started, finished = _time(state.get("StartedAt")), _time(state.get("FinishedAt"))
        if started and finished and finished < started:  # podman stamps FinishedAt a hair before StartedAt
            finished = started
        host = info.get("HostConfig") or {}
        return _outcome(
            c,
            init,
            exit_code=code,
            reason=reason,
            logs=self.logs(f"{self.pod}-{c['name']}"),
            started_at=started,
            finished_at=finished,
            applied={
                "user": (info.get("Config") or {}).get("User", ""),
                "read_only_root": bool(host.get("ReadonlyRootfs")),
                "effective_caps": sorted(info.get("EffectiveCaps") or []),
                "no_new_privileges": any("no-new-privileges" in o for o in host.get("SecurityOpt") or []),
                "seccomp": _seccomp(info),
                "read_only_mounts": {
                    m.get("Destination"): not m.get("RW", True) for m in info.get("Mounts") or []
                },
            },
        )

    def finish(self, mains: list[dict[str, Any]], timeout: float) -> list[ContainerOutcome]:
        """Wait for the main containers; stop the pod at the deadline (reason DeadlineExceeded)."""
        names = [f"{self.pod}-{c['name']}" for c in mains]
        deadline_hit = False
        try:
            self._podman("wait", *names, timeout=timeout)
        except subprocess.TimeoutExpired:
            deadline_hit = True
            self._podman("pod", "stop", "-t", "0", self.pod)
        out = []
        for c in mains:
            got = self.terminated(c, False) or _outcome(c, False, reason="ContainerCreating")
            if deadline_hit and got.terminated:
                got.reason = "DeadlineExceeded"
            out.append(got)
        return out

    def after_failed_play(
        self, inits: list[dict[str, Any]], mains: list[dict[str, Any]], output: str
    ) -> tuple[list[ContainerOutcome], list[ContainerOutcome]]:
        """kube play exits 125 when an init container fails: that one is kept, earlier ones are gone."""
        init_out: list[ContainerOutcome] = []
        failed = False
        for c in inits:
            if failed:
                init_out.append(_outcome(c, True))  # never ran: waiting PodInitializing
                continue
            got = self.terminated(c, True)
            if got is not None and got.exit_code != 0:
                failed = True
                init_out.append(got)
            else:
                init_out.append(_outcome(c, True, exit_code=0, reason="Completed"))
        if failed:
            return init_out, [_outcome(c, False) for c in mains]
        main_out = [self.terminated(c, False) for c in mains]
        if any(m is not None for m in main_out):
            return init_out, [
                m or _outcome(c, False, reason="ContainerCreating")
                for m, c in zip(main_out, mains, strict=True)
            ]
        hint = ""
        if "did not find expected" in output and _leading_newline(self.pod_spec):
            hint = "\n(podman 4.3.1 rejects string values that begin with a newline; Kubernetes accepts them)"
        raise LabError(f"podman kube play failed before any container ran:\n{output}{hint}")


def _seccomp(info: dict[str, Any]) -> str:
    """The seccomp profile podman applied: "unconfined", a profile path, or "default"."""
    for option in (info.get("HostConfig") or {}).get("SecurityOpt") or []:
        if option.startswith("seccomp="):
            return str(option.split("=", 1)[1])
    return str(info.get("SeccompProfilePath") or "default")


def _leading_newline(obj: Any) -> bool:
    """True when any string in the pod begins with a newline (podman 4.3.1 YAML bug)."""
    if isinstance(obj, str):
        return obj.startswith("\n")
    if isinstance(obj, dict):
        return any(_leading_newline(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_leading_newline(v) for v in obj)
    return False


def _events_log(env: dict[str, str]) -> Path:
    """podman's event log (tests/lab/podman.py writes it beside the lab's containers.conf)."""
    return Path(env["CONTAINERS_CONF"]).parent.parent / "events.log"


def _container_events(path: Path, offset: int) -> list[dict[str, Any]]:
    """The container events podman logged after ``offset`` (the log is shared by every lab run)."""
    if not path.exists():
        return []
    with path.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    found = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line another run was still writing
        if isinstance(event, dict) and event.get("Type") == "container":
            found.append(event)
    return found


def _init_times(inits: list[ContainerOutcome], pod: str, events: list[dict[str, Any]]) -> None:
    """Start and end of each init container from podman's events: podman removes an init container
    that succeeded, so `inspect` cannot give them, while a kubelet keeps them in the pod's status."""
    for c in inits:
        stamps = {e["Status"]: _time(e.get("Time")) for e in events if e.get("Name") == f"{pod}-{c.name}"}
        c.started_at, c.finished_at = stamps.get("start"), stamps.get("died")


def _time(value: str | None) -> datetime | None:
    """podman's timestamps (RFC 3339 with nanoseconds) as aware datetimes."""
    if not value or value.startswith("0001-"):
        return None
    head, _, rest = value.partition(".")
    frac = "".join(ch for ch in rest if ch.isdigit())[:6]
    zone = rest[len("".join(ch for ch in rest if ch.isdigit())) :] or "Z"
    try:
        return datetime.fromisoformat(f"{head}.{frac or '0'}{'+00:00' if zone == 'Z' else zone}")
    except ValueError:
        return None


def run_v1pod(lab: Lab, pod: V1Pod, timeout: float = 300.0) -> V1Pod:
    """Kubelet stand-in for a V1Pod: play it, return a copy with the status a kubelet would report."""
    from kubernetes.client import ApiClient

    return play_pod(lab, ApiClient().sanitize_for_serialization(pod), timeout).as_v1pod(pod)
