"""The copy script under busybox with a crane stand-in that answers as crane does against ECR (the
texts crane printed in the lab, whose registries answer with ECR's errors): a missing destination
repository and an immutable tag are reported with a fixed reason prefix, and not retried."""

from __future__ import annotations

from pathlib import Path

from airflow_ecr_promote.repository import IMMUTABLE, MISSING
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_HOST
from tests.test_copy_script_busybox import A, B, busybox_path, key, registry, run_copy

__all__ = ["busybox_path"]  # the fixture, used by name

# crane digest: the tag's digest, MANIFEST_UNKNOWN, or NAME_UNKNOWN for a repository listed in
# $CRANE_STATE/missing; crane copy onto a tag listed in $CRANE_STATE/immutable: TAG_INVALID.
CRANE = r"""#!/bin/sh
state="$CRANE_STATE"
key() { printf '%s' "$1" | tr '/:@' '___'; }
repo() { r=${1#*/}; printf '%s' "${r%:*}"; }
case "$1" in
    digest)
        if grep -qx "$(repo "$2")" "$state/missing" 2>/dev/null; then
            text="The repository with name '$(repo "$2")' does not exist"
            echo "Error: GET https://$2: NAME_UNKNOWN: $text in the registry with id '__ACCOUNT__'" >&2
            exit 1
        fi
        if [ -f "$state/$(key "$2")" ]; then cat "$state/$(key "$2")"; exit 0; fi
        echo "GET https://$2: MANIFEST_UNKNOWN: manifest unknown" >&2; exit 1 ;;
    copy)
        echo "$2 $3" >> "$state/attempts"
        if grep -qx "$3" "$state/immutable" 2>/dev/null; then
            text="The image tag '${3##*:}' already exists in the '$(repo "$3")' repository"
            text="$text and cannot be overwritten because the repository is immutable."
            echo "Error: PUT https://$3: TAG_INVALID: $text" >&2
            exit 1
        fi
        cat "$state/$(key "$2")" > "$state/$(key "$3")" ;;
esac
"""


def stand_in(bin_dir: Path) -> None:
    crane = bin_dir / "crane"
    busybox = (bin_dir / "sh").resolve()
    crane.write_text(CRANE.replace("#!/bin/sh", f"#!{busybox} sh").replace("__ACCOUNT__", DEST_ACCOUNT))


def test_missing_destination_repository_is_reported_before_copying(
    busybox_path: Path, tmp_path: Path
) -> None:
    stand_in(busybox_path)
    source, dest = f"{SOURCE_HOST}/team/app:1", f"{DEST_HOST}/prod/app:1"
    registry(tmp_path / "state", **{key(source): A})
    (tmp_path / "state" / "missing").write_text("prod/app\n")
    done, message, _ = run_copy(busybox_path, tmp_path, [(source, dest)])
    assert done.returncode == 1
    assert message == (
        f"1 failed - - {MISSING} The repository with name 'prod/app' does not exist in the registry "
        f"with id '{DEST_ACCOUNT}'\n"
    )
    assert not (tmp_path / "state" / "attempts").exists(), "nothing is copied"


def test_immutable_tag_is_reported_and_not_retried(busybox_path: Path, tmp_path: Path) -> None:
    stand_in(busybox_path)
    source, dest = f"{SOURCE_HOST}/team/app:5", f"{DEST_HOST}/prod/app:5"
    registry(tmp_path / "state", **{key(source): A, key(dest): B})
    (tmp_path / "state" / "immutable").write_text(f"{dest}\n")
    done, message, _ = run_copy(busybox_path, tmp_path, [(source, dest)], on_conflict="overwrite")
    assert done.returncode == 1
    assert message == (
        f"1 failed {B} {A} {IMMUTABLE} The image tag '5' already exists in the 'prod/app' repository "
        "and cannot be overwritten because the repository is immutable.\n"
    )
    assert (tmp_path / "state" / "attempts").read_text() == f"{source} {dest}\n", "one attempt, no retry"
