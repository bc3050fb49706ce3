"""A real Airflow deployment in a home of its own, for the load bench (issue 22, item 3).

``airflow standalone`` runs Airflow's own API server, scheduler (LocalExecutor: one process per
running task, as a worker runs them), DAG processor and triggerer on a copy of a migrated SQLite
metadata DB (tests/dag_run.py's ``migrated_db``). A pool of ``slots`` bounds how many of a run's
tasks run at once, as a release team's pool does. :meth:`Deployment.run` triggers a DAG run and
waits for it; what each task instance returned, its state and its start and end come from the
metadata DB. Everything in the tasks is the product's and KPO's own code, in Airflow's own worker
processes; the deployment's environment names the lab's cluster in ``kubernetes_default``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.dag_run import _child_env, _new_home


@dataclass
class TaskInstanceRow:
    """One task instance of a run, as the metadata DB holds it after the run."""

    map_index: int
    state: str | None
    try_number: int
    start: datetime | None
    end: datetime | None
    returned: Any = None


@dataclass
class DeploymentRun:
    """A DAG run's outcome: its state, its task instances (by map index), the most that ran at
    once (from their start and end), and the deployment's processes' peak memory together (PSS)."""

    state: str
    tasks: list[TaskInstanceRow]
    seconds: float
    most_at_once: int
    peak_pss: int
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)


class Deployment:
    """``with Deployment(...) as airflow: airflow.run(dag_id)``; stopped, whole, at the end."""

    def __init__(
        self,
        python: str,
        db: Path,
        workdir: Path,
        dag_files: list[Path],
        env: dict[str, str],
        *,
        pool: str,
        slots: int,
    ) -> None:
        self.python, self.pool, self.slots = python, pool, slots
        self.home = _new_home(db, workdir, "deployment", dag_files)
        port = free_port()
        base = _child_env(self.home, env)
        self.env = {
            **base,
            # standalone starts its components as `airflow ...` from PATH: this interpreter's
            "PATH": f"{Path(python).parent}{os.pathsep}{base.get('PATH', '')}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(max(32, 2 * slots)),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(max(64, 4 * slots)),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        }
        self.port = port
        self.log = self.home / "standalone.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._peak_pss = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_memory, daemon=True)

    def _airflow(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            [self.python, "-m", "airflow", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done.stdout

    def __enter__(self) -> Deployment:
        self._airflow("pools", "set", self.pool, str(self.slots), "the load bench's pool")
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [self.python, "-m", "airflow", "standalone"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._sampler.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self._sampler.join(timeout=10)

    def _query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.home / "airflow.db", timeout=30)) as db:
            return list(db.execute(sql, params).fetchall())

    def _alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"airflow standalone ended (exit {self.process.returncode}):\n{tail}")

    def _wait(self, what: str, probe: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not probe():
            self._alive()
            if time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-4000:]
                raise TimeoutError(f"not within {timeout:.0f} s: {what}\n{tail}")
            time.sleep(1)

    def run(self, dag_id: str, *, timeout: float = 1800) -> DeploymentRun:
        """Trigger ``dag_id`` once the DAG processor has stored it, and wait for the run's end."""
        self._wait(
            f"the DAG processor stores {dag_id}",
            lambda: self._query("SELECT 1 FROM serialized_dag WHERE dag_id = ?", dag_id),
            300,
        )
        run_id = f"load__{int(time.time())}"
        started = time.monotonic()
        self._airflow("dags", "trigger", dag_id, "--run-id", run_id)

        def ended() -> bool:
            rows = self._query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", dag_id, run_id)
            return bool(rows) and rows[0][0] in ("success", "failed")

        self._wait(f"the run {run_id} of {dag_id} ends", ended, timeout)
        seconds = time.monotonic() - started
        (state,) = self._query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", dag_id, run_id)[0]
        tasks = self._tasks(dag_id, run_id)
        return DeploymentRun(state, tasks, seconds, _most_at_once(tasks), self._peak_pss, self.log)

    def _tasks(self, dag_id: str, run_id: str) -> list[TaskInstanceRow]:
        returned = {
            index: _decoded(value)
            for index, value in self._query(
                "SELECT map_index, value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = 'return_value'",
                dag_id,
                run_id,
            )
        }
        rows = self._query(
            "SELECT map_index, state, try_number, start_date, end_date FROM task_instance "
            "WHERE dag_id = ? AND run_id = ? ORDER BY map_index",
            dag_id,
            run_id,
        )
        return [
            TaskInstanceRow(index, state, tries, _time(start), _time(end), returned.get(index))
            for index, state, tries, start, end in rows
        ]

    def _sample_memory(self) -> None:
        """The deployment's processes' memory together (its session), every half second."""
        while not self._stop.is_set():
            if self.process is not None:
                self._peak_pss = max(self._peak_pss, _session_pss(self.process.pid))
            self._stop.wait(0.5)


def _session_pss(sid: int) -> int:
    """The proportional set size of every process in session ``sid``, summed: memory shared
    between forked processes (LocalExecutor's workers, the API server's) counted once in all."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[3]) != sid:  # the session id, after state, ppid and pgrp
                continue
            rollup = Path(f"/proc/{entry}/smaps_rollup").read_text().splitlines()
        except (OSError, IndexError, ValueError):
            continue
        total += next((int(line.split()[1]) * 1024 for line in rollup if line.startswith("Pss:")), 0)
    return total


def _decoded(value: Any) -> Any:
    """An XCom value as Airflow 3 stores it (JSON text), decoded."""
    while isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except ValueError:
            break
    return value


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _most_at_once(tasks: list[TaskInstanceRow]) -> int:
    """The most task instances running at one moment, from their starts and ends."""
    moments = sorted(
        [(t.start, 1) for t in tasks if t.start and t.end]
        + [(t.end, -1) for t in tasks if t.start and t.end],
        key=lambda m: (m[0], m[1]),
    )
    most = running = 0
    for _, step in moments:
        running += step
        most = max(most, running)
    return most
