"""The precheck's deciding, without AWS: which copies are in place, what the pod gets, and how
the return value lists every copy in order."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from airflow_ecr_promote.precheck import (
    Seen,
    in_place,
    platform_digests,
    signature_tags,
    signatures_in_place,
    split,
)
from airflow_ecr_promote.promotion import parse_promotion
from airflow_ecr_promote.result import entries_of, summarize, with_in_place
from tests.conftest import DEST_HOST, SOURCE_HOST

A, B, C = ("sha256:" + c * 64 for c in "abc")


def batch(*tags: str) -> object:
    return parse_promotion(
        source_image=f"{SOURCE_HOST}/team/app", dest_image=f"{DEST_HOST}/team/app", dest_tags=list(tags)
    )


def test_in_place_needs_the_destination_tag_to_hold_the_source_digest() -> None:
    copy = batch("1.0").copies[0]  # type: ignore[attr-defined]
    assert in_place(copy, Seen(A), Seen(A)) == A
    assert in_place(copy, Seen(A), Seen(B)) is None, "another digest: on_conflict decides, in the pod"
    assert in_place(copy, Seen(A), None) is None, "absent at the destination"
    assert in_place(copy, None, Seen(A)) is None, "the source cannot be read: the pod says why"


def test_a_source_pinned_by_digest_needs_no_source_lookup() -> None:
    promotion = parse_promotion(
        source_image=f"{SOURCE_HOST}/team/app@{A}", dest_image=f"{DEST_HOST}/team/app:1.0"
    )
    assert in_place(promotion.copies[0], None, Seen(A)) == A


def test_split_keeps_the_order_of_what_the_pod_gets() -> None:
    promotion = batch("1", "2", "3", "4")
    done, rest = split(promotion, [A, None, B, None])  # type: ignore[arg-type]
    assert done == {0: A, 2: B}
    assert rest is not None and [c.dest.tag for c in rest.copies] == ["2", "4"]
    assert rest.on_conflict == promotion.on_conflict  # type: ignore[attr-defined]
    assert split(promotion, [A, B, C, A])[1] is None, "nothing left: no pod"  # type: ignore[arg-type]
    assert split(promotion, [])[1] == promotion, "nothing known: the pod gets everything"  # type: ignore[arg-type]


def test_the_return_value_lists_every_copy_in_order_with_those_in_place_present() -> None:
    promotion = batch("1", "2", "3")
    done, rest = split(promotion, [A, None, C])  # type: ignore[arg-type]
    assert rest is not None
    pod_result = summarize(
        [{"source_image": "s", "dest_image": str(rest.copies[0].dest), "status": "copied", "digest": B,
          "source_digest": B, "digest_kept": True}],
        rest,
        "skopeo",
    )  # fmt: skip
    entries = with_in_place(promotion, done, entries_of(pod_result, rest))  # type: ignore[arg-type]
    assert [e["status"] for e in entries] == ["present", "copied", "present"]
    assert [e["digest"] for e in entries] == [A, B, C]
    assert [e["dest_image"] for e in entries] == [str(c.dest) for c in promotion.copies]  # type: ignore[attr-defined]
    assert all(e["digest_kept"] for e in entries)


def test_platform_digests_come_from_an_index_only() -> None:
    index = json.dumps(
        {"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [{"digest": B}, {"digest": C}]}
    )
    assert platform_digests(index) == [B, C]
    assert platform_digests(json.dumps({"layers": [{"digest": B}]})) == []
    assert platform_digests(None) == [] and platform_digests("not json") == []


def test_signature_tags_are_cosigns() -> None:
    assert signature_tags(A) == [f"sha256-{'a' * 64}.{s}" for s in ("sig", "att", "sbom")]


def test_signatures_are_in_place_when_every_source_tag_and_referrer_travelled() -> None:
    tags = signature_tags(A)
    sig, att = tags[0], tags[1]
    source = {sig: B, att: None}
    assert signatures_in_place(tags, source, {sig: B})
    assert not signatures_in_place(tags, source, {}), "the signature did not travel"
    assert not signatures_in_place(tags, source, {sig: C}), "another signature at the destination"
    assert signatures_in_place(tags, source, {sig: B}, {C}, {C, A})
    assert not signatures_in_place(tags, source, {sig: B}, {C}, set()), "a referrer did not travel"
    assert signatures_in_place(tags, source, {sig: B}, None, None), "referrers not listed by the API"


def test_index_ranges_round_trip_compactly() -> None:
    from airflow_ecr_promote.precheck import index_ranges, parse_index_ranges

    indexes = {0, 1, 2, 5, 7, 8, 999}
    assert index_ranges(indexes) == "0-2,5,7-8,999"
    assert parse_index_ranges(index_ranges(indexes)) == indexes
    assert index_ranges(range(1000)) == "0-999"
    assert index_ranges([]) == "" and parse_index_ranges("") == set()


class Referrers:
    """An ECR client's ListImageReferrers, paged, or failing with ``code``."""

    def __init__(self, pages: list[list[str]], code: str | None = None) -> None:
        self.pages, self.code = pages, code
        self.asked: list[dict[str, Any]] = []

    def list_image_referrers(self, **params: Any) -> dict[str, Any]:
        self.asked.append(params)
        if self.code:
            raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, "ListImageReferrers")
        page = int(params.get("nextToken", 0))
        more = {"nextToken": str(page + 1)} if page + 1 < len(self.pages) else {}
        return {"referrers": [{"digest": d} for d in self.pages[page]], **more}


def test_referrers_are_listed_page_by_page_or_not_at_all_where_the_api_lacks_them() -> None:
    from airflow_ecr_promote.precheck import referrers
    from airflow_ecr_promote.refs import parse_image_ref

    image = parse_image_ref("image", f"{SOURCE_HOST}/team/app:1.0")
    client = Referrers([[B], [C]])
    assert referrers(client, image, A) == {B, C}
    assert client.asked[0] == {
        "registryId": image.account,
        "repositoryName": "team/app",
        "subjectId": {"imageDigest": A},
    }
    assert referrers(object(), image, A) is None, "a botocore without ListImageReferrers"
    assert referrers(Referrers([], "UnknownOperationException"), image, A) is None
    assert referrers(Referrers([], "500"), image, A) is None, "moto_server: an HTML 500, no AWS error"
    with pytest.raises(ClientError):
        referrers(Referrers([], "AccessDeniedException"), image, A)
