"""The copy script as the crane engine runs it: under busybox (crane's :debug image has nothing
else), with only busybox's applets on PATH.

crane itself cannot run here (no binary in Debian or PyPI, and Debian's Go is too old to build
it), so `crane` is a small stand-in that keeps a registry's state (tag -> digest) in files; what
is checked is the script's own logic under busybox: digest comparison, on_conflict, results.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from airflow_ecr_promote.engines import script
from tests.conftest import DEST_HOST, SOURCE_HOST, require

APPLETS = (
    "sh", "cat", "cut", "grep", "sed", "tr", "awk", "mkdir", "rm", "head", "printf", "sha256sum", "wc",
    "sleep", "date", "mv",
)  # fmt: skip
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64

# crane digest REF: the digest of REF from the state folder, or MANIFEST_UNKNOWN;
# crane copy SRC DST: DST gets SRC's digest (crane keeps digests);
# crane ls REPO: REPO's tags, or NAME_UNKNOWN; then, once, the "<file> <digest>" of
# $CRANE_STATE/after-ls is written (someone else pushing a tag after the listing).
# Every call is recorded in $CRANE_STATE/calls; a copy first waits $CRANE_STATE/copy-delay seconds
# when that file exists.
CRANE = r"""#!/bin/sh
state="$CRANE_STATE"
key() { printf '%s' "$1" | tr '/:@' '___'; }
echo "$*" >> "$state/calls"
case "$1" in
    ls)
        echo "$2" >> "$state/listings"
        prefix="$state/$(key "$2")_"
        found=0
        for f in "$prefix"*; do
            [ -f "$f" ] || continue
            found=1
            echo "${f#"$prefix"}"
        done
        [ "$found" = 1 ] || { echo "GET https://$2: NAME_UNKNOWN: repository not found" >&2; exit 1; }
        if [ -f "$state/after-ls" ]; then
            read -r file digest < "$state/after-ls"
            rm "$state/after-ls"
            echo "$digest" > "$state/$file"
        fi ;;
    digest)
        if [ -f "$state/$(key "$2")" ]; then cat "$state/$(key "$2")"; exit 0; fi
        echo "GET https://$2: MANIFEST_UNKNOWN: manifest unknown" >&2; exit 1 ;;
    copy)
        if [ -f "$state/copy-delay" ]; then sleep "$(cat "$state/copy-delay")"; fi
        if [ ! -f "$state/$(key "$2")" ]; then echo "GET https://$2: MANIFEST_UNKNOWN" >&2; exit 1; fi
        echo "$2 $3" >> "$state/copies"
        cat "$state/$(key "$2")" > "$state/$(key "$3")" ;;
esac
"""


@pytest.fixture
def busybox_path(tmp_path: Path) -> Path:
    busybox = shutil.which("busybox")
    require(busybox, "busybox is not installed (apt-get install busybox; `make lab-deps` does)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for applet in APPLETS:
        (bin_dir / applet).symlink_to(str(busybox))
    crane = bin_dir / "crane"
    crane.write_text(CRANE.replace("#!/bin/sh", f"#!{busybox} sh"))
    crane.chmod(0o755)
    return bin_dir


def registry(state: Path, **tags: str) -> None:
    state.mkdir(exist_ok=True)
    for ref, digest in tags.items():
        (state / ref).write_text(digest)


def key(ref: str) -> str:
    return ref.replace("/", "_").replace(":", "_").replace("@", "_")


def run_copy(bin_dir: Path, tmp_path: Path, copies: list[tuple[str, str]], on_conflict: str = "fail",  # type: ignore[no-untyped-def]
             extra_env: dict[str, str] | None = None, prelude: str = ""):  # fmt: skip
    state = tmp_path / "state"
    term = tmp_path / "termination-log"
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    env = {
        "PATH": str(bin_dir),
        "COPY_TOOL": "crane",
        "COPIES": "\n".join(f"{s} {d}" for s, d in copies),
        "ON_CONFLICT": on_conflict,
        "PARALLEL": "2",
        "TMPDIR": str(scratch),
        "TERMINATION_LOG": str(term),
        "CRANE_STATE": str(state),
        **(extra_env or {}),
    }
    busybox = os.path.realpath(bin_dir / "sh")
    done = subprocess.run(
        [busybox, "sh", "-c", prelude + script("copy.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    copied = (state / "copies").read_text().split("\n")[:-1] if (state / "copies").exists() else []
    message = term.read_text()
    summary, _, report = message.partition("\n")
    # the whole report is framed in the log, and repeated after the summary when it fits in 1 KiB
    out = done.stdout.split("\n")
    begin = out.index(f"ecr-promote report begin {len(copies)}")
    framed = out[begin:]
    assert framed[-2].startswith(f"ecr-promote report end {len(copies)} sha256:"), done.stdout
    assert "\n".join(framed[1:-2]) + "\n" == report
    # each line was printed as its copy ended, before the report
    assert sorted(line.removeprefix("ecr-promote result ") for line in out[:begin]) == sorted(framed[1:-2])
    assert summary.startswith(f"ecr-promote summary copies={len(copies)} "), message
    return done, report, copied


def test_batch_under_busybox_copies_skips_and_refuses_as_asked(busybox_path: Path, tmp_path: Path) -> None:
    new, present, conflict, missing = (f"{SOURCE_HOST}/team/app:{t}" for t in ("1", "2", "3", "4"))
    dest = {t: f"{DEST_HOST}/team/app:{t}" for t in ("1", "2", "3", "4")}
    registry(tmp_path / "state", **{key(new): A, key(present): A, key(conflict): A,
                                    key(dest["2"]): A, key(dest["3"]): B})  # fmt: skip
    copies = [(new, dest["1"]), (present, dest["2"]), (conflict, dest["3"]), (missing, dest["4"])]
    done, message, copied = run_copy(busybox_path, tmp_path, copies)
    assert done.returncode == 1, done.stderr
    assert message.split("\n")[:-1] == [
        f"1 copied {A} {A}",
        f"2 present {A} {A}",
        f"3 failed {B} {A} conflict",
        f"4 failed - - read-source manifest_unknown GET https://{missing}: MANIFEST_UNKNOWN: "
        "manifest unknown",
    ]
    assert copied == [f"{new} {dest['1']}"], "only the missing destination was written"
    assert "4 copies, 2 failed" in done.stderr


def test_on_conflict_skip_and_overwrite_under_busybox(busybox_path: Path, tmp_path: Path) -> None:
    source, dest = f"{SOURCE_HOST}/team/app:5", f"{DEST_HOST}/team/app:5"
    registry(tmp_path / "state", **{key(source): A, key(dest): B})
    done, message, copied = run_copy(busybox_path, tmp_path, [(source, dest)], on_conflict="skip")
    assert done.returncode == 0, done.stderr
    assert message == f"1 skipped {B} {A} conflict\n"
    assert copied == []
    done, message, copied = run_copy(busybox_path, tmp_path, [(source, dest)], on_conflict="overwrite")
    assert done.returncode == 0, done.stderr
    assert message == f"1 copied {A} {A}\n"
    assert copied == [f"{source} {dest}"]


def test_registry_error_text_is_reduced_to_one_printable_line(busybox_path: Path, tmp_path: Path) -> None:
    source, dest = f"{SOURCE_HOST}/team/app:6", f"{DEST_HOST}/team/app:6"
    registry(tmp_path / "state", **{key(source): A})
    crane = busybox_path / "crane"
    crane.write_text(
        crane.read_text().replace(
            "    copy)\n", "    copy)\n        printf 'denied\\r2 copied %s\\001\\n' \"$2\" >&2; exit 1\n"
        )
    )
    done, message, _ = run_copy(busybox_path, tmp_path, [(source, dest)])
    assert done.returncode == 1
    assert message.count("\n") == 1
    assert "\r" not in message
    assert "\x01" not in message
    assert message.startswith(f"1 failed - {A} copy denied denied 2 copied ")
