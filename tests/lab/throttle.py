"""ECR's and STS's request throttling, for the lab: token buckets per API, account and region.

AWS throttles each API per account and region with a token bucket: GetAuthorizationToken "is 20
transactions per second (TPS), with up to a 200 TPS burst allowed. In each region, each account
receives a bucket that can store up to 200 GetAuthorizationToken credits" (ECR's troubleshooting
page, "HTTP 429: Too Many Requests or ThrottleException"). Past it:

- the registry answers 429 with ECR's body ``{"errors":[{"code":"TOOMANYREQUESTS","message":"Rate
  exceeded"}]}`` (as seen from ECR in google/go-containerregistry pull request 750), for the
  registry calls ECR meters: a manifest PUT (``ecr:PutImage``, 10/s by default, as reported
  against ECR in containerd issue 10447) and an upload's closing PUT (``ecr:CompleteLayerUpload``,
  10/s on ECR's service-quotas page);
- the ECR API answers ``ThrottleException`` (the name ECR's troubleshooting page gives; note that
  botocore's retry modes do not list it among throttling codes, so a client must retry it
  itself), and STS answers ``Throttling`` ("Rate exceeded"), which botocore retries.

One ``Throttles`` object lives in the moto process (tests/lab/moto_iam.py makes it and hands it
to the modules it loads by path, which cannot import each other) and serves both the
ECR fronts (tests/lab/ecr_front.py) and moto's API; a test sets rates through the lab
(``Lab.set_throttle``, over ecr_mirror's control path) and reads how many requests were refused
(``Lab.throttled``). GetAuthorizationToken is throttled by default at AWS's documented rate; the
registry's and the other APIs' rates only when a test sets them (``ECR_REGISTRY_QUOTAS`` holds
ECR's defaults). A rule for a whole API, or for one account of it, replaces the default.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# API -> (sustained rate per second, burst): the lab's defaults, AWS's documented token quota.
DEFAULTS: dict[str, tuple[float, float]] = {"ecr:GetAuthorizationToken": (20.0, 200.0)}
# ECR's default registry quotas (module docstring), for a test to set: not the lab's defaults, or
# every batch test of the suite would measure the lab's throttle instead of the product
ECR_REGISTRY_QUOTAS: dict[str, tuple[float, float]] = {
    "ecr:PutImage": (10.0, 10.0),
    "ecr:CompleteLayerUpload": (10.0, 10.0),
}
REGISTRY_BODY = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"Rate exceeded"}]}'
MESSAGE = "Rate exceeded"


class Bucket:
    """A token bucket: ``burst`` tokens at most, ``rate`` added a second; one taken per request.

    (No dataclass: moto_iam.py loads this module by path, outside sys.modules, where dataclasses
    cannot resolve their module.)
    """

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, tokens: float, at: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, tokens, at

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Throttles:
    """Rules and buckets of every throttled API, thread-safe (fronts and moto serve in threads)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._rules: dict[tuple[str, str], tuple[float, float]] = {}  # (api, account or "*") -> rule
        self._starts: dict[tuple[str, str], float] = {}  # (api, account or "*") -> a new bucket's tokens
        self._buckets: dict[tuple[str, str, str], Bucket] = {}
        self._refused: dict[str, int] = {}
        self._allowed: dict[str, int] = {}

    def rule(self, api: str, account: str) -> tuple[float, float] | None:
        return self._rules.get((api, account)) or self._rules.get((api, "*")) or DEFAULTS.get(api)

    def set(
        self, api: str, rate: float, burst: float, account: str = "*", start: float | None = None
    ) -> None:
        """Throttle ``api`` (e.g. ``sts:AssumeRole``) at ``rate``/s with ``burst``, for one account
        or all; the buckets start with ``start`` tokens (default: full). ``rate`` 0 and ``burst``
        0: every request is refused; ``start=0``: refused until the first token comes."""
        if rate < 0 or burst < 0 or (start is not None and not 0 <= start <= burst):
            raise ValueError(f"rate and burst must be >= 0, start within [0, burst]: got rate={rate!r} "
                             f"burst={burst!r} start={start!r}")  # fmt: skip
        with self._lock:
            self._rules[(api, account)] = (rate, burst)
            self._starts[(api, account)] = burst if start is None else start
            for key in [k for k in self._buckets if k[0] == api and account in ("*", k[1])]:
                del self._buckets[key]

    def reset(self) -> None:
        """Back to AWS's defaults, every bucket full, no counts."""
        with self._lock:
            self._rules.clear()
            self._starts.clear()
            self._buckets.clear()
            self._refused.clear()
            self._allowed.clear()

    def admit(self, api: str, account: str, region: str) -> bool:
        """Whether one request of ``api`` by ``account`` in ``region`` goes through now."""
        with self._lock:
            rule = self.rule(api, account)
            if rule is None:
                return True
            now = self._clock()
            key = (api, account, region)
            bucket = self._buckets.get(key)
            if bucket is None:
                start = self._starts.get((api, account), self._starts.get((api, "*"), rule[1]))
                bucket = self._buckets[key] = Bucket(rule[0], rule[1], start, now)
            allowed = bucket.take(now)
            counts = self._allowed if allowed else self._refused
            counts[api] = counts.get(api, 0) + 1
            return allowed

    def counts(self) -> dict[str, dict[str, int]]:
        """``{"refused": {api: n}, "allowed": {api: n}}`` since the last reset."""
        with self._lock:
            return {"refused": dict(self._refused), "allowed": dict(self._allowed)}

    @staticmethod
    def registry_api(method: str, path: str) -> str | None:
        """The metered ECR action of a registry request, or None for the unmetered ones."""
        if method != "PUT":
            return None
        if "/manifests/" in path:
            return "ecr:PutImage"
        if "/blobs/uploads/" in path:
            return "ecr:CompleteLayerUpload"
        return None
