"""The copy script under busybox with stand-ins that answer as crane and regctl do against ECR
(the texts they printed in the lab, whose registries answer with ECR's errors), and the operator's
reading of the facts it reports (result.parse_copy_lines): a missing repository is attributed to
the side ECR's text names, by repository name and registry id; a refused tag is named as the tag
ECR refused; neither is retried."""

from __future__ import annotations

from pathlib import Path

from airflow_ecr_promote.promotion import parse_promotion
from airflow_ecr_promote.result import parse_copy_lines
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST
from tests.test_copy_script_busybox import A, B, busybox_path, key, registry, run_copy

__all__ = ["busybox_path"]  # the fixture, used by name

# <tool> digest REF: the tag's digest, MANIFEST_UNKNOWN, or NAME_UNKNOWN (naming the registry's
# account, the first label of its host) for a "<host>/<repository>" listed in $CRANE_STATE/missing;
# <tool> copy SRC DST: reads SRC first (NAME_UNKNOWN as above), then the same for DST; onto a tag
# listed in $CRANE_STATE/immutable: TAG_INVALID for that tag, or for the tag named in
# $CRANE_STATE/refused-tag (cosign's, which regctl --digest-tags copies along).
CRANE = r"""#!/bin/sh
state="$CRANE_STATE"
key() { printf '%s' "$1" | tr '/:@' '___'; }
repo() { r=${1#*/}; printf '%s' "${r%:*}"; }
missing() {
    if grep -qx "${1%%/*}/$(repo "$1")" "$state/missing" 2>/dev/null; then
        text="The repository with name '$(repo "$1")' does not exist"
        echo "Error: $2 https://$1: NAME_UNKNOWN: $text in the registry with id '${1%%.*}'" >&2
        exit 1
    fi
}
[ "$1" = image ] && shift  # regctl image digest / regctl image copy
op=$1 args=""
shift
for a in "$@"; do case "$a" in --*) ;; *) args="$args $a" ;; esac; done
set -- "$op" $args  # flags (regctl's --referrers --digest-tags) left out
case "$1" in
    digest)
        missing "$2" GET
        if [ -f "$state/$(key "$2")" ]; then cat "$state/$(key "$2")"; exit 0; fi
        echo "GET https://$2: MANIFEST_UNKNOWN: manifest unknown" >&2; exit 1 ;;
    copy)
        echo "$2 $3" >> "$state/attempts"
        missing "$2" GET
        missing "$3" PUT
        if grep -qx "$3" "$state/immutable" 2>/dev/null; then
            tag=${3##*:}
            [ -f "$state/refused-tag" ] && tag=$(cat "$state/refused-tag")
            text="The image tag '$tag' already exists in the '$(repo "$3")' repository"
            text="$text and cannot be overwritten because the repository is immutable."
            echo "Error: PUT https://$3: TAG_INVALID: $text" >&2
            exit 1
        fi
        cat "$state/$(key "$2")" > "$state/$(key "$3")" ;;
esac
"""


def stand_in(bin_dir: Path) -> None:
    busybox = (bin_dir / "sh").resolve()
    for tool in ("crane", "regctl"):
        (bin_dir / tool).write_text(CRANE.replace("#!/bin/sh", f"#!{busybox} sh"))
        (bin_dir / tool).chmod(0o755)


def reasons(message: str, source: str, dest: str) -> list[str]:
    promotion = parse_promotion(source_image=source, dest_image=dest)
    return [e.get("reason", "") for e in parse_copy_lines(message, promotion)]


def test_missing_destination_repository_is_reported_before_copying(
    busybox_path: Path, tmp_path: Path
) -> None:
    stand_in(busybox_path)
    source, dest = f"{SOURCE_HOST}/team/app:1", f"{DEST_HOST}/prod/app:1"
    registry(tmp_path / "state", **{key(source): A})
    (tmp_path / "state" / "missing").write_text(f"{DEST_HOST}/prod/app\n")
    done, message, _ = run_copy(busybox_path, tmp_path, [(source, dest)])
    assert done.returncode == 1
    ecr = f"The repository with name 'prod/app' does not exist in the registry with id '{DEST_ACCOUNT}'"
    assert message == f"1 failed - - read-dest name_unknown NAME_UNKNOWN: {ecr}\n"
    assert not (tmp_path / "state" / "attempts").exists(), "nothing is copied"
    [reason] = reasons(message, source, dest)
    assert (
        f"the destination repository 'prod/app' in account {DEST_ACCOUNT} (us-east-1) does not exist"
        in reason
    )


def test_a_missing_source_repository_named_like_the_destination_is_reported_as_the_source(
    busybox_path: Path, tmp_path: Path
) -> None:
    """dev-to-prod naming: team/app in both accounts. The destination's exists, the source's does
    not: ECR's NAME_UNKNOWN on the copy names the source's registry id, so it is the source."""
    stand_in(busybox_path)
    source, dest = f"{SOURCE_HOST}/team/app:1", f"{DEST_HOST}/team/app:1"
    registry(tmp_path / "state")
    (tmp_path / "state" / "missing").write_text(f"{SOURCE_HOST}/team/app\n")
    done, message, _ = run_copy(busybox_path, tmp_path, [(source, dest)])
    assert done.returncode == 1
    assert f"registry with id '{SOURCE_ACCOUNT}'" in message
    [reason] = reasons(message, source, dest)
    assert reason.startswith(f"source {source} not found"), reason
    assert "destination" not in reason and "create_repository" not in reason
    assert (tmp_path / "state" / "attempts").read_text() == f"{source} {dest}\n", "one attempt, no retry"


def test_immutable_tag_is_reported_and_not_retried(busybox_path: Path, tmp_path: Path) -> None:
    stand_in(busybox_path)
    source, dest = f"{SOURCE_HOST}/team/app:5", f"{DEST_HOST}/prod/app:5"
    registry(tmp_path / "state", **{key(source): A, key(dest): B})
    (tmp_path / "state" / "immutable").write_text(f"{dest}\n")
    done, message, _ = run_copy(busybox_path, tmp_path, [(source, dest)], on_conflict="overwrite")
    assert done.returncode == 1
    assert message == (
        f"1 failed {B} {A} copy tag_invalid TAG_INVALID: The image tag '5' already exists in the 'prod/app' "
        "repository and cannot be overwritten because the repository is immutable.\n"
    )
    assert (tmp_path / "state" / "attempts").read_text() == f"{source} {dest}\n", "one attempt, no retry"
    [reason] = reasons(message, source, dest)
    assert "ECR refused to overwrite tag '5' of the destination repository 'prod/app'" in reason
    assert f"(it holds {B})" in reason


def test_a_cosign_tag_refused_while_copying_a_new_tag_is_named_as_the_signatures(
    busybox_path: Path, tmp_path: Path
) -> None:
    """regctl --digest-tags copies cosign's sha256-<hex>.sig along with a new tag; ECR refuses to
    move that tag in an immutable repository: the signature's tag is named, not the image's."""
    stand_in(busybox_path)
    source, dest = f"{SOURCE_HOST}/team/app:7", f"{DEST_HOST}/prod/app:7"
    sig = "sha256-" + "a" * 64 + ".sig"
    registry(tmp_path / "state", **{key(source): A})
    (tmp_path / "state" / "immutable").write_text(f"{dest}\n")
    (tmp_path / "state" / "refused-tag").write_text(sig)
    env = {"COPY_TOOL": "regctl", "WITH_SIGNATURES": "1"}
    done, message, _ = run_copy(busybox_path, tmp_path, [(source, dest)], extra_env=env)
    assert done.returncode == 1
    [reason] = reasons(message, source, dest)
    assert f"ECR refused to move cosign's tag '{sig}'" in reason, reason
    assert "the image's own tag '7' was not the one refused" in reason
    assert "refused to overwrite tag '7'" not in reason and "on_conflict" not in reason
