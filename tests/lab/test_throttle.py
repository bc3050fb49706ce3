"""The lab's token buckets (tests/lab/throttle.py), on a clock the test moves (no lab)."""

from __future__ import annotations

import pytest

from .throttle import DEFAULTS, Throttles


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_get_authorization_token_defaults_to_aws_documented_20_per_second_with_a_200_burst() -> None:
    clock = Clock()
    throttles = Throttles(clock)
    assert DEFAULTS["ecr:GetAuthorizationToken"] == (20.0, 200.0)
    admitted = sum(throttles.admit("ecr:GetAuthorizationToken", "1", "us-east-1") for _ in range(250))
    assert admitted == 200, "the burst, at once"
    clock.now += 1.0
    admitted = sum(throttles.admit("ecr:GetAuthorizationToken", "1", "us-east-1") for _ in range(50))
    assert admitted == 20, "then 20 a second"
    assert throttles.counts() == {
        "allowed": {"ecr:GetAuthorizationToken": 220},
        "refused": {"ecr:GetAuthorizationToken": 80},
    }


def test_buckets_are_per_account_and_region() -> None:
    throttles = Throttles(Clock())
    throttles.set("ecr:PutImage", rate=1, burst=1)
    assert throttles.admit("ecr:PutImage", "1", "us-east-1")
    assert not throttles.admit("ecr:PutImage", "1", "us-east-1")
    assert throttles.admit("ecr:PutImage", "1", "us-west-2"), "another region: its own bucket"
    assert throttles.admit("ecr:PutImage", "2", "us-east-1"), "another account: its own bucket"


def test_a_rule_for_one_account_wins_over_the_rule_for_all_and_reset_restores_the_defaults() -> None:
    clock = Clock()
    throttles = Throttles(clock)
    throttles.set("sts:AssumeRole", rate=0, burst=0)  # never lifts
    throttles.set("sts:AssumeRole", rate=5, burst=2, account="2")
    assert not throttles.admit("sts:AssumeRole", "1", "us-east-1")
    assert [throttles.admit("sts:AssumeRole", "2", "us-east-1") for _ in range(3)] == [True, True, False]
    clock.now += 0.2
    assert throttles.admit("sts:AssumeRole", "2", "us-east-1"), "refilled at 5 a second"
    throttles.reset()
    assert throttles.admit("sts:AssumeRole", "1", "us-east-1"), "no default rule for AssumeRole"
    assert throttles.counts() == {"allowed": {}, "refused": {}}, "unmetered calls are not counted"


def test_a_bucket_may_start_empty() -> None:
    clock = Clock()
    throttles = Throttles(clock)
    throttles.set("ecr:GetAuthorizationToken", rate=0.5, burst=1, start=0)
    assert not throttles.admit("ecr:GetAuthorizationToken", "1", "us-east-1")
    clock.now += 2.0
    assert throttles.admit("ecr:GetAuthorizationToken", "1", "us-east-1"), "the first token, 2 s later"
    with pytest.raises(ValueError, match="start=2"):
        throttles.set("ecr:PutImage", rate=1, burst=1, start=2)


def test_unmetered_apis_always_pass_and_bad_rates_are_refused() -> None:
    throttles = Throttles(Clock())
    assert all(throttles.admit("ecr:BatchGetImage", "1", "us-east-1") for _ in range(10_000))
    assert all(throttles.admit("ecr:PutImage", "1", "us-east-1") for _ in range(10_000)), (
        "until a test sets it"
    )
    with pytest.raises(ValueError, match="rate=-1"):
        throttles.set("ecr:PutImage", rate=-1, burst=1)


@pytest.mark.parametrize(
    ("method", "path", "api"),
    [
        ("PUT", "/v2/team/app/manifests/1.0", "ecr:PutImage"),
        ("PUT", "/v2/team/app/blobs/uploads/abc?digest=sha256:00", "ecr:CompleteLayerUpload"),
        ("PATCH", "/v2/team/app/blobs/uploads/abc", None),
        ("GET", "/v2/team/app/manifests/1.0", None),
        ("HEAD", "/v2/team/app/blobs/sha256:00", None),
    ],
)
def test_registry_requests_are_metered_as_ecr_names_them(method: str, path: str, api: str | None) -> None:
    assert Throttles.registry_api(method, path) == api
