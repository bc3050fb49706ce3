"""A batch reads its destination repository once, not once per tag: copy.sh lists the tags of a
repository that several copies of the pod go to, and copies a tag the listing lacks without
reading the destination first; only the tags the listing holds are read (present or conflict).
A listing older than LISTING_MAX_AGE seconds is taken again, so a tag someone else writes in the
meantime is read and on_conflict applies to it.

Under busybox with the crane stand-in of test_copy_script_busybox (it records every call)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.conftest import DEST_HOST, SOURCE_HOST
from tests.test_copy_script_busybox import A, B, busybox_path, key, registry, run_copy

__all__ = ["busybox_path"]  # the fixture, used by name

SRC, DST = f"{SOURCE_HOST}/team/app", f"{DEST_HOST}/team/app"


def calls(tmp_path: Path) -> list[list[str]]:
    return [line.split(" ") for line in (tmp_path / "state" / "calls").read_text().splitlines()]


def test_new_tags_are_copied_without_a_read_of_the_destination(busybox_path: Path, tmp_path: Path) -> None:
    new = [f"n{i}" for i in range(3)]  # a report that fits in the termination message
    registry(
        tmp_path / "state",
        **{key(f"{SRC}:{t}"): A for t in [*new, "p1", "p2"]},
        **{key(f"{DST}:{t}"): A for t in ["p1", "p2", "old"]},
    )
    copies = [(f"{SRC}:{t}", f"{DST}:{t}") for t in ["p1", *new, "p2"]]
    done, report, copied = run_copy(busybox_path, tmp_path, copies, extra_env={"PARALLEL": "4"})
    assert done.returncode == 0, done.stderr
    lines = report.split("\n")[:-1]
    assert lines[0] == f"1 present {A} {A}" and lines[-1] == f"{len(copies)} present {A} {A}"
    assert all(line.split(" ")[1] == "copied" for line in lines[1:-1]), report
    assert sorted(copied) == sorted(f"{SRC}:{t} {DST}:{t}" for t in new)
    recorded = calls(tmp_path)
    assert [c for c in recorded if c[0] == "ls"] == [["ls", DST]], "one listing for the whole batch"
    reads = Counter(c[1] for c in recorded if c[0] == "digest")
    for t in new:  # the digest the copy reports, read once after the copy: no read before it
        assert reads[f"{DST}:{t}"] == 1, (t, recorded)
        assert reads[f"{SRC}:{t}"] == 0, "the copy reads the source itself"
    for t in ["p1", "p2"]:  # in the listing: read, found present, not copied
        assert reads[f"{DST}:{t}"] == 1 and reads[f"{SRC}:{t}"] == 1


def test_a_single_copy_reads_its_destination_without_a_listing(busybox_path: Path, tmp_path: Path) -> None:
    registry(tmp_path / "state", **{key(f"{SRC}:1"): A, key(f"{DST}:old"): B})
    done, report, _ = run_copy(busybox_path, tmp_path, [(f"{SRC}:1", f"{DST}:1")])
    assert done.returncode == 0, done.stderr
    assert report == f"1 copied {A} {A}\n"
    assert [c[0] for c in calls(tmp_path)] == ["digest", "copy", "digest"]


def test_a_repository_that_cannot_be_listed_is_read_tag_by_tag(busybox_path: Path, tmp_path: Path) -> None:
    """No such repository yet: the listing fails, and each copy reads and reports as before."""
    registry(tmp_path / "state", **{key(f"{SRC}:{t}"): A for t in ("1", "2")})
    copies = [(f"{SRC}:{t}", f"{DST}:{t}") for t in ("1", "2")]
    done, report, _ = run_copy(busybox_path, tmp_path, copies)
    assert done.returncode == 0, done.stderr
    assert report == f"1 copied {A} {A}\n2 copied {A} {A}\n"
    reads = Counter(c[1] for c in calls(tmp_path) if c[0] == "digest")
    assert reads[f"{DST}:1"] == 2 and reads[f"{DST}:2"] == 2, "read before and after each copy"


def test_a_tag_written_after_the_listing_is_read_when_the_listing_is_too_old(
    busybox_path: Path, tmp_path: Path
) -> None:
    """Someone pushes team/app:2 (another digest) right after the first listing. With
    LISTING_MAX_AGE=0 every copy lists again, sees the tag, reads it, and on_conflict=fail
    refuses to overwrite it."""
    state = tmp_path / "state"
    registry(state, **{key(f"{SRC}:1"): A, key(f"{SRC}:2"): A, key(f"{DST}:old"): B})
    (state / "after-ls").write_text(f"{key(f'{DST}:2')} {B}\n")
    copies = [(f"{SRC}:{t}", f"{DST}:{t}") for t in ("1", "2")]
    done, report, copied = run_copy(busybox_path, tmp_path, copies, extra_env={"LISTING_MAX_AGE": "0"})
    assert done.returncode == 1
    assert report == f"1 copied {A} {A}\n2 failed {B} {A} conflict\n"
    assert copied == [f"{SRC}:1 {DST}:1"]
    assert (state / key(f"{DST}:2")).read_text().strip() == B, "the other writer's tag is left alone"
    assert [c for c in calls(tmp_path) if c[0] == "ls"] == [["ls", DST], ["ls", DST]]


def test_a_listing_is_taken_again_once_it_is_older_than_its_maximum_age(
    busybox_path: Path, tmp_path: Path
) -> None:
    """LISTING_MAX_AGE=1 and a first copy that takes 2 s: the second copy finds its listing a
    generation old, lists again, sees the tag someone pushed after the first listing, reads it,
    and on_conflict=fail refuses to overwrite it. (With the default 60 s, the same batch would
    use the first listing: the age bounds how stale a listing gets.)"""
    state = tmp_path / "state"
    registry(state, **{key(f"{SRC}:1"): A, key(f"{SRC}:2"): A, key(f"{DST}:old"): B})
    (state / "after-ls").write_text(f"{key(f'{DST}:2')} {B}\n")
    (state / "copy-delay").write_text("2\n")
    copies = [(f"{SRC}:{t}", f"{DST}:{t}") for t in ("1", "2")]
    done, report, copied = run_copy(busybox_path, tmp_path, copies, extra_env={"LISTING_MAX_AGE": "1"})
    assert done.returncode == 1
    assert report == f"1 copied {A} {A}\n2 failed {B} {A} conflict\n"
    assert copied == [f"{SRC}:1 {DST}:1"]
    assert [c for c in calls(tmp_path) if c[0] == "ls"] == [["ls", DST], ["ls", DST]]
