"""Does pip resolve this package under each supported Airflow release's constraint pins?

For every entry of requirements/constraints-pins.toml: a constraints file with ``apache-airflow==X``
and that release's pins, then ``pip install --dry-run --ignore-installed`` of this package's wheel
with it. pip resolves the whole dependency tree (nothing is installed; only package metadata comes
from the registry), as a user's ``pip install -c constraints-X.txt airflow-ecr-promote`` would.
The report pip writes is read back to confirm that the pinned versions are the ones chosen.

Run: ``python -m tests.resolve_check [AIRFLOW_VERSION ...]`` (``make resolve-check``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PINS_FILE = ROOT / "requirements" / "constraints-pins.toml"
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


@dataclass(frozen=True)
class Release:
    airflow: str
    source: str
    pins: Mapping[str, str]

    def constraints(self) -> str:
        """The text of a pip constraints file: apache-airflow and every recorded pin."""
        lines = [f"apache-airflow=={self.airflow}", *(f"{n}=={v}" for n, v in sorted(self.pins.items()))]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Outcome:
    release: Release
    ok: bool
    seconds: float
    detail: str


def load_releases(path: Path = PINS_FILE) -> list[Release]:
    data = tomllib.loads(path.read_text())
    return [Release(r["airflow"], r["source"], dict(r["pins"])) for r in data["release"]]


def mismatches(report: Mapping[str, object], release: Release) -> list[str]:
    """Pinned packages that pip's ``--report`` shows at another version (or not at all)."""
    chosen: dict[str, str] = {}
    for item in report.get("install", []):  # type: ignore[attr-defined]
        metadata = item["metadata"]
        chosen[canonicalize_name(metadata["name"])] = metadata["version"]
    expected = {"apache-airflow": release.airflow, **release.pins}
    return [
        f"{name}: pinned {version}, resolved {chosen.get(canonicalize_name(name), 'nothing')}"
        for name, version in expected.items()
        if chosen.get(canonicalize_name(name)) != version
    ]


def build_wheel(into: Path) -> Path:
    """This package's wheel, built from a copy of its sources (no build/ left in the tree)."""
    source = into / "source"
    source.mkdir()
    for path in [ROOT / "pyproject.toml", ROOT / "README.md", *ROOT.glob("LICENSE*"), *ROOT.glob("NOTICE*")]:
        shutil.copy2(path, source / path.name)
    shutil.copytree(ROOT / "airflow_ecr_promote", source / "airflow_ecr_promote", ignore=IGNORED)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(into), str(source)],
        check=True,
    )
    return next(into.glob("airflow_ecr_promote-*.whl"))


def resolve(wheel: Path, release: Release, workdir: Path) -> Outcome:
    constraints = workdir / f"constraints-{release.airflow}.txt"
    constraints.write_text(release.constraints())
    report = workdir / f"report-{release.airflow}.json"
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
            "--report", str(report), "--constraint", str(constraints), str(wheel),
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    seconds = time.monotonic() - started
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if "is ignored: it is neither" not in line]
        return Outcome(release, False, seconds, "\n".join(lines[-15:]))
    wrong = mismatches(json.loads(report.read_text()), release)
    return Outcome(release, not wrong, seconds, "; ".join(wrong) or "resolved at the pins")


def main(argv: Sequence[str] | None = None) -> int:
    wanted = list(sys.argv[1:] if argv is None else argv)
    releases = [r for r in load_releases() if not wanted or r.airflow in wanted]
    if not releases:
        print(f"no recorded release matches {wanted}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="resolve-check-") as tmp:
        workdir = Path(tmp)
        wheel = build_wheel(workdir)
        with ThreadPoolExecutor(max_workers=3) as pool:
            outcomes = list(pool.map(lambda r: resolve(wheel, r, workdir), releases))
    for outcome in outcomes:
        status = "ok    " if outcome.ok else "FAILED"
        airflow = f"apache-airflow=={outcome.release.airflow}"
        print(f"{status} {airflow:22} {outcome.seconds:5.1f} s  {outcome.detail}")
    failed = [o for o in outcomes if not o.ok]
    print(f"{len(outcomes) - len(failed)} resolved, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
