"""What ECR's and STS's throttling means for a promotion, and what to change when retries did not help.

AWS meters each API per account and region with a token bucket ("Rate of PutImage requests",
"Rate of GetAuthorizationToken requests", ...; GetAuthorizationToken allows 20 a second sustained,
a burst of 200, per ECR's troubleshooting page). Past it, the registry answers 429
``TOOMANYREQUESTS`` "Rate exceeded", the ECR API ``ThrottlingException`` / ``ThrottleException``
and STS ``Throttling``. The pod's scripts retry all of them with backoff and jitter (copy.sh for
registry calls, login.sh for the AWS CLI, on top of the CLI's own ``AWS_RETRY_MODE=standard``);
when that is not enough, the rate is too high for the account's quota, and the message says
which API and what to change.
"""

from __future__ import annotations

import re

# the ECR action a throttled registry request was metered as, from the request the tool names
_METERED = (
    (re.compile(r"manifest", re.IGNORECASE), "PutImage"),
    (re.compile(r"PUT [^ ]*/blobs/uploads/|blobs/uploads/[^ ]*\?digest=|complet|commit", re.IGNORECASE),
     "CompleteLayerUpload"),
    (re.compile(r"POST [^ ]*/blobs/uploads/|initiat", re.IGNORECASE), "InitiateLayerUpload"),
    (re.compile(r"PATCH |blobs/uploads/", re.IGNORECASE), "UploadLayerPart"),
)  # fmt: skip
# the AWS CLI's last words on a throttled call (botocore's ClientError text)
_CLI_THROTTLED = re.compile(
    r"\((Throttling|ThrottlingException|ThrottleException|TooManyRequestsException|RequestLimitExceeded)\) "
    r"when calling the (\w+) operation( \(reached max retries: (\d+)\))?"
)


def throttled_api(message: str) -> str:
    """The ECR action a TOOMANYREQUESTS answer was for, as far as the tool's words tell."""
    for pattern, action in _METERED:
        if pattern.search(message):
            return action
    return "a registry action (PutImage, CompleteLayerUpload, InitiateLayerUpload, ...)"


def throttled_advice(api: str, account: str, region: str) -> str:
    """What to change when ECR still throttles ``api`` after the retries."""
    return (
        f"Fix: make fewer {api} requests at once in account {account} ({region}): a lower parallel= "
        "for a batch, a smaller Airflow pool (or max_active_tis_per_dag) for these tasks, fewer "
        f"promotions at the same time; or ask for a higher 'Rate of {api} requests' quota (Service "
        'Quotas, Amazon ECR). README "Running at scale" gives settings that stay within the defaults'
    )


def login_throttled(reason: str) -> str | None:
    """What to change when the login container failed because AWS throttled it, else None."""
    found = _CLI_THROTTLED.search(reason)
    if found is None:
        return None
    api = found[2]
    if api == "AssumeRole":
        service, quota = "STS", "an STS request quota increase (AWS Support)"
    else:
        service, quota = "ECR", f"a higher 'Rate of {api} requests' quota (Service Quotas, Amazon ECR)"
    return (
        f"{service} throttled {api} ({found[1]}), still after the AWS CLI's retries "
        "(AWS_RETRY_MODE=standard, AWS_MAX_ATTEMPTS) and the login script's own. "
        f"Every promotion pod calls {api} once per registry it logs in to: start fewer pods at once "
        "(a smaller Airflow pool or max_active_tis_per_dag for these tasks, or one batch task with "
        f"tags=[...] and parallel= instead of many mapped tasks), or ask for {quota}"
    )
