"""With signatures (regctl), copy.sh reports what travelled with each image from one listing of
the destination's tags (and one of the source's) per pod, not one listing per copy: a
repository's tag list is as long as its history, so a batch used to cost copies x tags.

Under busybox with a regctl stand-in that keeps a registry in files and counts its calls."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import DEST_HOST, SOURCE_HOST
from tests.test_copy_script_busybox import A, B, busybox_path, key, registry, run_copy

__all__ = ["busybox_path"]  # the fixture, used by name

# regctl image digest REF | image copy [flags] SRC DST (DST gets SRC's digest, and --digest-tags
# brings the source's sha256-<hex>.* tags) | manifest get REF (a single-platform image: nothing)
# | tag ls REPO (from $CRANE_STATE/tags.<key>) | artifact list REF (no referrers).
REGCTL = r"""#!/bin/sh
state="$CRANE_STATE"
key() { printf '%s' "$1" | tr '/:@' '___'; }
echo "$*" >> "$state/calls"
cmd="$1 $2"
shift 2
args=""
for a in "$@"; do
    case "$a" in
        --format) skip=1 ;;
        --*) ;;
        *) [ -n "${skip:-}" ] && skip= || args="$args $a" ;;
    esac
done
set -- $args
case "$cmd" in
    "image digest")
        if [ -f "$state/$(key "$1")" ]; then cat "$state/$(key "$1")"; exit 0; fi
        echo "GET https://$1: MANIFEST_UNKNOWN: manifest unknown" >&2; exit 1 ;;
    "image copy")
        cat "$state/$(key "$1")" > "$state/$(key "$2")"
        src=${1%:*} dst=${2%:*}
        list="$state/tags.$(key "$dst")"
        for t in $(grep '^sha256-' "$state/tags.$(key "$src")") "${2##*:}"; do
            grep -qx "$t" "$list" 2>/dev/null || echo "$t" >> "$list"
        done ;;
    "tag ls") cat "$state/tags.$(key "$1")" 2>/dev/null ;;
    "manifest get" | "artifact list") ;;
esac
"""


def test_tags_are_listed_once_per_repository_per_pod(busybox_path: Path, tmp_path: Path) -> None:
    busybox = (busybox_path / "sh").resolve()
    (busybox_path / "regctl").write_text(REGCTL.replace("#!/bin/sh", f"#!{busybox} sh"))
    (busybox_path / "regctl").chmod(0o755)
    state = tmp_path / "state"
    src_repo, dest_repo = f"{SOURCE_HOST}/team/app", f"{DEST_HOST}/team/app"
    tags = ["1", "2", "3"]  # a report that fits in the termination message
    registry(state, **{key(f"{src_repo}:{t}"): A for t in tags[:2]}, **{key(f"{src_repo}:3"): B})
    sig_a, sig_b, old = ("sha256-" + c * 64 + ".sig" for c in "abc")
    (state / f"tags.{key(src_repo)}").write_text(f"1\n2\n3\n{sig_a}\n{sig_b}\n")
    (state / f"tags.{key(dest_repo)}").write_text(f"0\n{old}\n")  # the destination's history
    copies = [(f"{src_repo}:{t}", f"{dest_repo}:{t}") for t in tags]
    env = {"COPY_TOOL": "regctl", "WITH_SIGNATURES": "1", "PARALLEL": "3"}
    done, message, _ = run_copy(busybox_path, tmp_path, copies, extra_env=env)
    assert done.returncode == 0, done.stderr
    listings = [c for c in (state / "calls").read_text().split("\n") if c.startswith("tag ls ")]
    assert sorted(listings) == sorted([f"tag ls {dest_repo}", f"tag ls {src_repo}"]), "once per repository"
    lines = message.split("\n")[:-1]
    assert sorted(lines) == sorted(
        [f"{n} copied {A} {A} travelled tags={sig_a} referrers=" for n in (1, 2)]
        + [f"3 copied {B} {B} travelled tags={sig_b} referrers="]
    )
