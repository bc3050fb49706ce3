"""A copy refused for a missing IAM action reports ECR's refusal, naming the action, under busybox
with a crane stand-in that prints what crane printed in the lab (tests/lab/test_iam_policies_e2e.py):
its log lines first, then ECR's refusal. The message keeps 300 characters, which the log lines
used to fill, so the action was cut off."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_HOST
from tests.test_copy_script_busybox import A, busybox_path, key, registry, run_copy

__all__ = ["busybox_path"]  # the fixture, used by name

ROLE = f"arn:aws:sts::{DEST_ACCOUNT}:assumed-role/ecr-promote-push/promote"
REPOSITORY = f"arn:aws:ecr:us-east-1:{DEST_ACCOUNT}:repository/team/app"
DENIED = (
    f"DENIED: User: {ROLE} is not authorized to perform: ecr:PutImage on resource: {REPOSITORY} "
    "because no identity-based policy allows the ecr:PutImage action"
)
CRANE = rf"""#!/bin/sh
case "$1" in
    digest)
        case "$2" in
            *dkr.ecr.us-west-2*) echo {A} ;;
            *) echo "GET https://$2: MANIFEST_UNKNOWN" >&2; exit 1 ;;
        esac ;;
    copy)
        for blob in 1 2 3 4; do
            echo "2026/12/07 07:00:54 existing blob: sha256:{"9" * 63}$blob" >&2
        done
        echo "Error: PUT https://{DEST_HOST}/v2/team/app/manifests/sha256:12c8: {DENIED}" >&2
        exit 1 ;;
esac
"""


def test_a_refused_iam_action_is_reported_as_ecrs_refusal(busybox_path: Path, tmp_path: Path) -> None:
    crane = busybox_path / "crane"
    crane.write_text(CRANE.replace("#!/bin/sh", f"#!{(busybox_path / 'sh').resolve()} sh"))
    source, dest = f"{SOURCE_HOST}/team/app:1", f"{DEST_HOST}/team/app:1"
    registry(tmp_path / "state", **{key(source): A})
    done, report, _ = run_copy(busybox_path, tmp_path, [(source, dest)])
    assert done.returncode == 1
    # the fact: class denied, and ECR's own sentence, whole, in place of the tool's log lines
    assert report == f"1 failed - {A} copy denied {DENIED.removeprefix('DENIED: ')}\n", report
