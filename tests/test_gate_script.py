"""The signature gate's script and the copier together, under busybox, with stand-ins for cosign
and crane that keep a registry's state (tag -> digest) in files.

What is checked is the scripts' own logic: every source is resolved to a digest once, cosign
verifies those digests (with --experimental-oci11), and the copier copies the digests the gate
verified even when a tag moves between the gate and the copy. The lab proves the same with real
cosign, regctl and registries (tests/lab/test_signatures_e2e.py).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from airflow_ecr_promote.engines import script
from tests.conftest import DEST_HOST, SOURCE_HOST
from tests.test_copy_script_busybox import A, B, busybox_path, key, registry

__all__ = ["busybox_path"]  # the fixture, shared with the copy script's tests

# cosign triangulate --type digest REF: "<repository>@<digest>" from the state folder;
# cosign verify ... REF...: REF passes when the state holds "signed_<key(REF)>", and every call's
# arguments are recorded.
COSIGN = r"""#!/bin/sh
state="$CRANE_STATE"
key() { printf '%s' "$1" | tr '/:@' '___'; }
case "$1" in
    triangulate)
        ref=$4
        if [ -f "$state/$(key "$ref")" ]; then
            repo=${ref%@*}
            case "${repo#*/}" in *:*) repo=${repo%:*} ;; esac
            echo "$repo@$(cat "$state/$(key "$ref")")"
            exit 0
        fi
        echo "Error: GET https://$ref: MANIFEST_UNKNOWN: manifest unknown" >&2; exit 1 ;;
    verify)
        echo "$*" >> "$state/verify-calls"
        shift 5
        echo "WARNING: Skipping tlog verification is an insecure practice" >&2
        for ref in "$@"; do
            if [ -f "$state/signed_$(key "$ref")" ]; then
                echo "Verification for $ref --" >&2
                echo '[{"critical":{}}]'
            else
                echo "Error: no signatures found" >&2
                echo "error during command execution: no signatures found" >&2
                exit 1
            fi
        done ;;
esac
"""


def _run(bin_dir: Path, tmp_path: Path, name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    busybox = os.path.realpath(bin_dir / "sh")
    cosign = bin_dir / "cosign"
    if not cosign.exists():
        cosign.write_text(COSIGN.replace("#!/bin/sh", f"#!{busybox} sh"))
        cosign.chmod(0o755)
    base = {"PATH": str(bin_dir), "CRANE_STATE": str(tmp_path / "state")}
    return subprocess.run(
        [busybox, "sh", "-c", script(name)],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def gate(bin_dir: Path, tmp_path: Path, images: list[str]) -> tuple[subprocess.CompletedProcess[str], Path]:
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir(exist_ok=True)
    term = tmp_path / "gate-termination-log"
    env = {
        "VERIFY_IMAGES": "\n".join(images),
        "GATE_DIR": str(gate_dir),
        "HOME": str(gate_dir / "home"),
        "TERMINATION_LOG": str(term),
        "COSIGN_PUBLIC_KEY": "unused by the stand-in",
    }
    return _run(bin_dir, tmp_path, "gate.sh", env), term


def copier(bin_dir: Path, tmp_path: Path, copies: list[tuple[str, str]]) -> subprocess.CompletedProcess[str]:
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    env = {
        "COPY_TOOL": "crane",
        "COPIES": "\n".join(f"{s} {d}" for s, d in copies),
        "ON_CONFLICT": "fail",
        "PARALLEL": "2",
        "TMPDIR": str(scratch),
        "TERMINATION_LOG": str(tmp_path / "copier-termination-log"),
        "PINNED_SOURCES": str(tmp_path / "gate" / "pinned"),
    }
    return _run(bin_dir, tmp_path, "copy.sh", env)


REPO = f"{SOURCE_HOST}/team/app"
SIGNED, OTHER = f"{REPO}:1.0", f"{REPO}:1.1"


def test_the_gate_verifies_digests_and_the_copier_copies_them_though_the_tag_moved(
    busybox_path: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    # the tag names A (signed); A and B exist by digest
    registry(state, **{key(SIGNED): A, key(f"{REPO}@{A}"): A, key(f"{REPO}@{B}"): B})
    (state / f"signed_{key(f'{REPO}@{A}')}").touch()

    done, _ = gate(busybox_path, tmp_path, [SIGNED])

    assert done.returncode == 0, done.stderr
    calls = (state / "verify-calls").read_text().split("\n")[:-1]
    assert calls == [
        f"verify --key env://COSIGN_PUBLIC_KEY --insecure-ignore-tlog=true --experimental-oci11 {REPO}@{A}"
    ], "one cosign verify, of the digest, reading OCI 1.1 referrers too"
    assert (tmp_path / "gate" / "pinned").read_text() == f"{SIGNED} {REPO}@{A}\n"
    assert (tmp_path / "gate" / "Dockerfile").read_text() == f"FROM {REPO}@{A}\n"

    (state / key(SIGNED)).write_text(B)  # someone moves the tag to an unsigned image
    dest = f"{DEST_HOST}/team/app:1.0"
    copied = copier(busybox_path, tmp_path, [(SIGNED, dest)])

    assert copied.returncode == 0, copied.stderr
    assert (state / "copies").read_text() == f"{REPO}@{A} {dest}\n", "the verified digest, not the tag"
    assert (state / key(dest)).read_text() == A


def test_a_batch_stops_at_the_unsigned_source_and_says_how_many_passed(
    busybox_path: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    registry(state, **{key(SIGNED): A, key(OTHER): B})
    (state / f"signed_{key(f'{REPO}@{A}')}").touch()

    done, term = gate(busybox_path, tmp_path, [SIGNED, OTHER])

    assert done.returncode == 1
    assert term.read_text() == (
        "ecr-promote gate: verified 1 of 2 source images; cosign verify failed: no signatures found\n"
    )
    assert not (tmp_path / "gate" / "pinned").exists(), "nothing handed to the copier"


def test_a_source_that_cannot_be_resolved_stops_the_gate_before_any_verification(
    busybox_path: Path, tmp_path: Path
) -> None:
    registry(tmp_path / "state", **{key(SIGNED): A})
    done, term = gate(busybox_path, tmp_path, [SIGNED, OTHER])
    assert done.returncode == 1
    assert term.read_text() == (
        f"ecr-promote gate: could not resolve source image {OTHER} to a digest: "
        f"GET https://{OTHER}: MANIFEST_UNKNOWN: manifest unknown\n"
    )
    assert not (tmp_path / "state" / "verify-calls").exists()


@pytest.mark.parametrize("pinned", ["", f"{OTHER} {REPO}@{B}\n"])
def test_the_copier_copies_nothing_the_gate_did_not_pin(
    busybox_path: Path, tmp_path: Path, pinned: str
) -> None:
    registry(tmp_path / "state", **{key(SIGNED): A, key(f"{REPO}@{A}"): A})
    (tmp_path / "gate").mkdir()
    if pinned:
        (tmp_path / "gate" / "pinned").write_text(pinned)
    done = copier(busybox_path, tmp_path, [(SIGNED, f"{DEST_HOST}/team/app:1.0")])
    assert done.returncode == 1
    assert "refusing to copy: the signature gate's list" in done.stderr
    assert not (tmp_path / "state" / "copies").exists()
