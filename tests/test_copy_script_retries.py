"""copy.sh's retries, under busybox with a crane stand-in that fails as a registry does: only
throttled (429, TOOMANYREQUESTS) and transient failures (5xx, a dropped connection, the
manifest-list race) are tried again, with a doubling wait of which a random half is waited
(equal jitter), as many times as RETRIES says, for reads and copies alike; each copy's line and the
summary say how many retries it took; and before each new attempt the destination is read again,
so that ON_CONFLICT still holds for a tag someone else wrote in between."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import DEST_HOST, SOURCE_HOST
from tests.test_copy_script_busybox import A, B, busybox_path, key, registry, run_copy

__all__ = ["busybox_path"]  # the fixture, used by name

# crane digest REF / crane copy SRC DST: the Nth call on REF (DST for a copy) fails with line N of
# $CRANE_STATE/fail.<op>.<key> (a "\n" in it starts a new line), if that line is not empty; after
# a failed copy, line N of $CRANE_STATE/meanwhile.<key> (a digest), if any, is what someone else
# writes to DST meanwhile.
CRANE = r"""#!/bin/sh
state="$CRANE_STATE"
key() { printf '%s' "$1" | tr '/:@' '___'; }
op=$1
ref=$2
[ "$op" = copy ] && ref=$3
k=$(key "$ref")
echo "$op $ref" >> "$state/calls"
echo x >> "$state/calls.$op.$k"
n=$(wc -l < "$state/calls.$op.$k")
error=$(sed -n "${n}p" "$state/fail.$op.$k" 2>/dev/null)
if [ -n "$error" ]; then
    printf '%b\n' "$error" >&2
    meanwhile=$(sed -n "${n}p" "$state/meanwhile.$k" 2>/dev/null)
    [ -z "$meanwhile" ] || printf '%s' "$meanwhile" > "$state/$k"
    exit 1
fi
case "$op" in
    digest)
        if [ -f "$state/$k" ]; then cat "$state/$k"; exit 0; fi
        echo "GET https://$2: MANIFEST_UNKNOWN: manifest unknown" >&2; exit 1 ;;
    copy)
        if [ ! -f "$state/$(key "$2")" ]; then echo "GET https://$2: MANIFEST_UNKNOWN" >&2; exit 1; fi
        echo "$2 $3" >> "$state/copies"
        cat "$state/$(key "$2")" > "$state/$k" ;;
esac
"""
# sleep N: recorded, not slept (a function: busybox's shell runs its own applets before PATH's)
SLEEP = 'sleep() { echo "$1" >> "$CRANE_STATE/sleeps"; }\n'
SOURCE, DEST = f"{SOURCE_HOST}/team/app:1", f"{DEST_HOST}/team/app:1"
SERVER_ERROR = f"PUT https://{DEST}: unexpected status code 503 Service Unavailable: Service Unavailable"
THROTTLED = f"PUT https://{DEST}: TOOMANYREQUESTS: Rate exceeded"
RESET = f"Get https://{DEST}: read tcp 10.0.0.1:443: read: connection reset by peer"
RACE = "MANIFEST_BLOB_UNKNOWN: blob unknown to registry"
# skopeo when the registry's /v2/ answers 502 (the lab's cluster test saw it: it was not retried)
PING_BAD_GATEWAY = (
    f'level=fatal msg="Error parsing image name \\"docker://{DEST}\\": pinging container registry '
    f'{DEST_HOST}: invalid status code from registry 502 (Bad Gateway)"'
)
DENIED = (
    f"PUT https://{DEST}: DENIED: User: arn:aws:sts::1:assumed-role/x is not authorized to perform: "
    "ecr:PutImage"
)
NO_REPOSITORY = (
    f"PUT https://{DEST}: NAME_UNKNOWN: The repository with name 'team/app' does not exist in the "
    "registry with id '210987654321'"
)


@pytest.fixture
def stand_ins(busybox_path: Path) -> Path:
    busybox = (busybox_path / "sh").resolve()
    crane = busybox_path / "crane"
    crane.write_text(CRANE.replace("#!/bin/sh", f"#!{busybox} sh"))
    return busybox_path


def script(state: Path, op: str, ref: str, *lines: str) -> None:
    (state / f"fail.{op}.{key(ref)}").write_text("".join(f"{line}\n" for line in lines))


def read(state: Path, name: str) -> list[str]:
    path = state / name
    return path.read_text().split("\n")[:-1] if path.exists() else []


def assert_backoff(sleeps: list[str], doubling: list[int]) -> None:
    """Each wait is the doubled delay's upper half, in milliseconds: [d/2, d]."""
    assert len(sleeps) == len(doubling), sleeps
    for slept, full in zip(sleeps, doubling, strict=True):
        assert full / 2 <= float(slept) <= full, (slept, full)


def promote(stand_ins: Path, tmp_path: Path, on_conflict: str = "fail", retries: str = "4"):  # type: ignore[no-untyped-def]
    env = {"RETRIES": retries, "RETRY_DELAY": "1", "PARALLEL": "1"}
    return run_copy(stand_ins, tmp_path, [(SOURCE, DEST)], on_conflict, env, prelude=SLEEP)


def test_transient_copy_failures_are_tried_again_retries_times_with_a_doubling_wait(
    stand_ins: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    registry(state, **{key(SOURCE): A})
    script(state, "copy", DEST, SERVER_ERROR, THROTTLED, RESET, RACE)  # the 5th attempt succeeds
    done, message, copied = promote(stand_ins, tmp_path)
    assert done.returncode == 0, done.stderr
    assert message == f"1 copied {A} {A} retries=4\n"
    assert [c for c in read(state, "calls") if c.startswith("copy ")] == [f"copy {DEST}"] * 5
    assert_backoff(read(state, "sleeps"), [1, 2, 4, 8])
    assert copied == [f"{SOURCE} {DEST}"]


def test_retries_reach_every_tool_and_stop_at_the_count(stand_ins: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    registry(state, **{key(SOURCE): A})
    script(state, "copy", DEST, *[SERVER_ERROR] * 3)
    done, message, _ = promote(stand_ins, tmp_path, retries="2")
    assert done.returncode == 1
    assert message == f"1 failed - {A} retries=2 copy transient {SERVER_ERROR}\n"
    assert len([c for c in read(state, "calls") if c.startswith("copy ")]) == 3, "one try and RETRIES=2 more"
    assert_backoff(read(state, "sleeps"), [1, 2])


IMMUTABLE = (
    "The image tag '1' already exists in the 'team/app' repository and cannot be overwritten because the "
    "repository is immutable."
)


@pytest.mark.parametrize(
    ("error", "error_class"),
    [
        (DENIED, "denied"),
        (NO_REPOSITORY, "name_unknown"),
        (f"PUT https://{DEST}: TAG_INVALID: {IMMUTABLE}", "tag_invalid"),
        # skopeo names the registry's codes in words
        ("writing manifest: denied: User is not authorized to perform: ecr:PutImage", "denied"),
        (
            f"reading manifest 1 in {DEST}: name unknown: {NO_REPOSITORY.split('NAME_UNKNOWN: ')[1]}",
            "name_unknown",
        ),
        (f'level=debug msg="Error uploading manifest: tag invalid: {IMMUTABLE}"', "tag_invalid"),
    ],
)
def test_refusals_are_not_retried(stand_ins: Path, tmp_path: Path, error: str, error_class: str) -> None:
    state = tmp_path / "state"
    registry(state, **{key(SOURCE): A})
    script(state, "copy", DEST, error, error, error)
    done, message, copied = promote(stand_ins, tmp_path)
    assert done.returncode == 1
    assert message.startswith(f"1 failed - {A} copy {error_class} ")
    assert [c for c in read(state, "calls") if c.startswith("copy ")] == [f"copy {DEST}"], "one attempt"
    assert read(state, "sleeps") == []
    assert copied == []


@pytest.mark.parametrize(
    ("on_conflict", "line", "copies"),
    [
        ("fail", f"1 failed {B} {A} retries=1 conflict\n", 1),
        ("skip", f"1 skipped {B} {A} retries=1 conflict\n", 1),
        ("overwrite", f"1 copied {A} {A} retries=1\n", 2),
    ],
)
def test_a_tag_written_between_two_attempts_is_read_before_the_retry_and_on_conflict_holds(
    stand_ins: Path, tmp_path: Path, on_conflict: str, line: str, copies: int
) -> None:
    state = tmp_path / "state"
    registry(state, **{key(SOURCE): A})
    script(state, "copy", DEST, SERVER_ERROR)
    (state / f"meanwhile.{key(DEST)}").write_text(f"{B}\n")  # someone writes B during attempt 1
    done, message, _ = promote(stand_ins, tmp_path, on_conflict)
    assert message == line
    assert len([c for c in read(state, "calls") if c.startswith("copy ")]) == copies
    held = (state / key(DEST)).read_text()
    assert held == (A if on_conflict == "overwrite" else B), "never overwritten unless asked"
    assert done.returncode == (1 if on_conflict == "fail" else 0)


# skopeo (containers/image) on a registry that answers 502 to its ping, as the lab's front does
# while the registry behind it restarts
PING_502 = (
    'time="t" level=fatal msg="copying image 1/2 from manifest list: pinging container registry '
    f'{DEST_HOST}: invalid status code from registry 502 (Bad Gateway)"'
)


def test_a_registry_answering_502_to_skopeos_ping_is_tried_again(stand_ins: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    registry(state, **{key(SOURCE): A})
    script(state, "copy", DEST, PING_502, PING_502)
    done, message, copied = promote(stand_ins, tmp_path)
    assert done.returncode == 0, done.stderr
    assert message == f"1 copied {A} {A} retries=2\n"
    assert copied == [f"{SOURCE} {DEST}"]


def test_transient_read_failures_are_retried_too(stand_ins: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    registry(state, **{key(SOURCE): A, key(DEST): A})
    script(state, "digest", DEST, SERVER_ERROR, RESET, PING_BAD_GATEWAY)
    script(state, "digest", SOURCE, THROTTLED)
    done, message, copied = promote(stand_ins, tmp_path)
    assert done.returncode == 0, done.stderr
    assert message == f"1 present {A} {A} retries=4\n"
    assert_backoff(read(state, "sleeps"), [1, 2, 4, 1])
    assert copied == []


def test_a_read_refused_is_reported_at_once(stand_ins: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    registry(state, **{key(SOURCE): A})
    script(state, "digest", DEST, DENIED)
    done, message, _ = promote(stand_ins, tmp_path)
    assert done.returncode == 1
    # the fact's message is ECR's refusal from "User:" on (scripts/copy.sh message_of)
    assert message == f"1 failed - - read-dest denied {DENIED.partition('DENIED: ')[2]}\n"
    assert read(state, "sleeps") == []


def test_a_throttled_copy_is_classed_throttled_and_the_summary_totals_the_retries(
    stand_ins: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    registry(state, **{key(SOURCE): A})
    script(state, "copy", DEST, THROTTLED, THROTTLED, THROTTLED)
    env = {"RETRIES": "2", "RETRY_DELAY": "1", "PARALLEL": "1"}
    done, message, copied = run_copy(stand_ins, tmp_path, [(SOURCE, DEST)], "fail", env, prelude=SLEEP)
    assert done.returncode == 1
    assert message == f"1 failed - {A} retries=2 copy throttled {THROTTLED}\n"
    summary = (tmp_path / "termination-log").read_text().split("\n")[0]
    assert " failed=1 retries=2 login_retries=0 report=sha256:" in summary, summary
    assert copied == []


def test_the_login_containers_retries_reach_the_summary(stand_ins: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    registry(state, **{key(SOURCE): A})
    (tmp_path / "login-retries").write_text("3\n")
    env = {"RETRIES": "2", "PARALLEL": "1", "LOGIN_RETRIES_FILE": str(tmp_path / "login-retries")}
    done, message, _ = run_copy(stand_ins, tmp_path, [(SOURCE, DEST)], "fail", env, prelude=SLEEP)
    assert done.returncode == 0, done.stderr
    assert message == f"1 copied {A} {A}\n", "no retries: no field"
    summary = (tmp_path / "termination-log").read_text().split("\n")[0]
    assert " failed=0 retries=0 login_retries=3 report=sha256:" in summary, summary


def test_the_wait_is_random_within_the_doubled_delay(stand_ins: Path, tmp_path: Path) -> None:
    """Equal jitter: copies throttled together do not all come back at the same moment."""
    state = tmp_path / "state"
    registry(state, **{key(SOURCE): A})
    script(state, "copy", DEST, *[THROTTLED] * 6)
    env = {"RETRIES": "6", "RETRY_DELAY": "4", "PARALLEL": "1"}
    done, message, _ = run_copy(stand_ins, tmp_path, [(SOURCE, DEST)], "fail", env, prelude=SLEEP)
    assert done.returncode == 0, done.stderr
    assert message == f"1 copied {A} {A} retries=6\n"
    sleeps = read(state, "sleeps")
    assert_backoff(sleeps, [4, 8, 16, 32, 60, 60])  # doubled, at most 60 s
    assert len(set(sleeps)) > 1, "random waits"


# skopeo says a manifest upload was throttled at debug level only, then fails converting the list
SKOPEO_THROTTLED = (
    'time="t" level=debug msg="Error uploading manifest list: toomanyrequests: Rate exceeded"\\n'
    'time="t" level=fatal msg="Manifest list must be converted to type \\"application/vnd.docker.'
    'distribution.manifest.list.v2+json\\" to be written to destination, but we cannot modify it"'
)


def test_a_throttle_skopeo_reports_only_at_debug_level_is_classed_throttled(
    stand_ins: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    registry(state, **{key(SOURCE): A})
    script(state, "copy", DEST, SKOPEO_THROTTLED, SKOPEO_THROTTLED)
    done, message, _ = promote(stand_ins, tmp_path, retries="1")
    assert done.returncode == 1
    assert message.startswith(f"1 failed - {A} retries=1 copy throttled "), message
    assert "level=debug" not in message, "the fact quotes the tool's words, without its debug lines"


def test_a_long_failure_keeps_the_tools_last_words_with_the_cause(stand_ins: Path, tmp_path: Path) -> None:
    """skopeo's fatal line names every step before the cause ("copying image 1/2 from manifest
    list: writing manifest: ...: <cause>"); the first 300 characters of it left the cause out."""
    state = tmp_path / "state"
    registry(state, **{key(SOURCE): A})
    context = "copying image 1/2 from manifest list: " + "writing manifest step: " * 20
    error = f'time="t" level=fatal msg="{context}the registry closed the stream for this reason"'
    script(state, "copy", DEST, error)
    done, message, copied = promote(stand_ins, tmp_path)
    assert done.returncode == 1
    prefix = f"1 failed - {A} copy other "
    assert message.startswith(prefix), message
    words = message[len(prefix) :].rstrip("\n")
    assert words.startswith("...") and len(words) == 300, words
    assert words.endswith('the registry closed the stream for this reason"'), words
    assert copied == []


# skopeo when the registry (or a proxy before it) closes the connection before answering: Go's
# net/http says only "EOF"; seen in the lab with 16 promotion pods at once (bench/load.py)
CLOSED = (
    'time="t" level=fatal msg="copying image 2/2 from manifest list: writing blob: Head '
    f'\\"https://{DEST_HOST}/v2/team/app/blobs/sha256:{"1" * 64}\\": EOF"'
)


def test_a_connection_closed_before_the_answer_is_tried_again(stand_ins: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    registry(state, **{key(SOURCE): A})
    script(state, "copy", DEST, CLOSED)
    done, message, copied = promote(stand_ins, tmp_path)
    assert done.returncode == 0, done.stderr
    assert message == f"1 copied {A} {A} retries=1\n"
    assert copied == [f"{SOURCE} {DEST}"]
