"""The recorded constraint pins against the lower bounds of pyproject.toml (no network).

`make resolve-check` asks pip to resolve the package under each release's pins; this test is the
quick part of it: every pin of a package this provider requires must satisfy that requirement,
and the oldest-combination requirements file must sit exactly on the lower bounds.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.resolve_check import PINS_FILE, Release, load_releases, mismatches

ROOT = Path(__file__).resolve().parent.parent
SUPPORTED_MINORS = ("2.11", "3.0", "3.1", "3.2", "3.3")


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    parsed = (Requirement(line) for line in project["dependencies"])
    return {canonicalize_name(r.name): r for r in parsed}


def pinned_file(name: str) -> dict[str, str]:
    """The exact pins (``==``) of a requirements file; ranges of other packages are left out."""
    lines = (ROOT / "requirements" / name).read_text().splitlines()
    parsed = (Requirement(line) for line in lines if line and not line.startswith("#"))
    return {
        canonicalize_name(r.name): spec.version
        for r in parsed
        for spec in r.specifier
        if spec.operator == "==" and len(r.specifier) == 1
    }


def floor(requirement: Requirement) -> str:
    [lower] = [s.version for s in requirement.specifier if s.operator == ">="]
    return lower


RELEASES = load_releases()


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: r.airflow)
def test_every_pin_satisfies_the_package_requirements(release: Release) -> None:
    wanted = requirements()
    assert Version(release.airflow) in wanted["apache-airflow"].specifier
    assert release.source
    for name, version in release.pins.items():
        requirement = wanted.get(canonicalize_name(name))
        if requirement is not None:
            assert Version(version) in requirement.specifier, (release.airflow, name, version)


def test_every_supported_minor_is_recorded_at_its_last_patch_and_the_oldest_claimed() -> None:
    recorded = [Version(r.airflow) for r in RELEASES]
    for minor in SUPPORTED_MINORS:
        assert any(f"{v.major}.{v.minor}" == minor for v in recorded), minor
    assert min(recorded) == Version(floor(requirements()["apache-airflow"]))
    for release in RELEASES:
        for required in ("cncf-kubernetes", "amazon", "common-compat"):
            assert f"apache-airflow-providers-{required}" in release.pins, (release.airflow, required)


def test_oldest_combination_is_the_lower_bounds_and_newest_is_at_least_every_pin() -> None:
    oldest, newest = pinned_file("airflow2.txt"), pinned_file("airflow3.txt")
    bounds = {name: floor(r) for name, r in requirements().items() if name != "pyyaml"}
    assert oldest == bounds
    assert set(newest) == set(bounds)
    for release in RELEASES:
        for name, version in {"apache-airflow": release.airflow, **release.pins}.items():
            if canonicalize_name(name) in newest:
                assert Version(newest[canonicalize_name(name)]) >= Version(version), (release.airflow, name)


def test_report_reading_flags_a_version_other_than_the_pin() -> None:
    release = Release("3.3.1", "test", {"apache-airflow-providers-amazon": "9.34.0"})
    report = {
        "install": [
            {"metadata": {"name": "apache-airflow", "version": "3.3.1"}},
            {"metadata": {"name": "apache_airflow_providers_amazon", "version": "9.35.0"}},
        ]
    }
    assert mismatches(report, release) == ["apache-airflow-providers-amazon: pinned 9.34.0, resolved 9.35.0"]
    assert mismatches({"install": []}, release)[0].endswith("resolved nothing")
    assert "constraints-pins.toml" in str(PINS_FILE)
    assert release.constraints() == "apache-airflow==3.3.1\napache-airflow-providers-amazon==9.34.0\n"
