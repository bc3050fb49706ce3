"""Tag discovery: the pure core without AWS, then list_tags and the operator against a moto_server."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from airflow_ecr_promote.discovery import (
    EcrListTagsOperator,
    EcrRepositoryNotFoundError,
    RepositoryRef,
    TaggedImage,
    list_tags,
    parse_query,
    parse_repository,
    select_tags,
    semver_key,
    shape_output,
    sort_tags,
)
from airflow_ecr_promote.refs import PromotionInputError
from tests.airflow_context import make_context
from tests.conftest import DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST, SOURCE_REGION

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[assignment,no-redef]

CONN_ID = "ecr_lab"
SOURCE_REPO_URL = f"{SOURCE_HOST}/team/app"
DEST_REPO_URL = f"{DEST_HOST}/team/app"


# ---------------------------------------------------------------------------------------------
# Helpers shared with test_sensors.py: a real Airflow AWS connection to moto, and seeding.
# ---------------------------------------------------------------------------------------------


def connect_airflow_to(monkeypatch: pytest.MonkeyPatch, moto_url: str) -> None:
    """Define the Airflow connection ``ecr_lab`` (an env var) pointing the Amazon provider at moto."""
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": moto_url, "region_name": SOURCE_REGION},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)


def ecr_client(moto_url: str) -> Any:
    return boto3.client(
        "ecr",
        endpoint_url=moto_url,
        region_name=SOURCE_REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def manifest(seed: str) -> str:
    """A small valid image manifest; its layer (so moto's digest) depends on ``seed``."""

    def digest(text: str) -> str:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 1234,
                "digest": digest(f"config-{seed}"),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": 5678,
                    "digest": digest(f"layer-{seed}"),
                }
            ],
        }
    )


def new_repository(client: Any, prefix: str = "team/app") -> str:
    """A repository of its own for each test: the moto_server is shared by the whole session."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    client.create_repository(repositoryName=name)
    return name


def put(client: Any, repository: str, tag: str, seed: str | None = None) -> str:
    """Push a manifest under ``tag``; returns the digest moto reports for it."""
    response = client.put_image(repositoryName=repository, imageManifest=manifest(seed or tag), imageTag=tag)
    return str(response["image"]["imageId"]["imageDigest"])


# ---------------------------------------------------------------------------------------------
# Pure core
# ---------------------------------------------------------------------------------------------

T0 = datetime(2026, 11, 20, tzinfo=UTC)


def images(*tags: str) -> list[TaggedImage]:
    return [TaggedImage(tag, f"sha256:{i:064x}", T0 + timedelta(hours=i)) for i, tag in enumerate(tags)]


def tags_of(found: list[TaggedImage]) -> list[str]:
    return [image.tag for image in found]


def query(**kwargs: Any) -> Any:
    return parse_query(kwargs.pop("repository", SOURCE_REPO_URL), **kwargs)


def test_semver_sort_follows_semver_precedence_with_v_prefix_and_prereleases() -> None:
    shuffled = images(
        "1.10.0", "latest", "1.2.0", "1.2.0-rc.10", "v1.2.1", "1.2.0-rc.2", "1.2.0-alpha", "1.2.0-rc.1",
        "1.2.0-alpha.1", "1.2.0-alpha.beta", "1.2.0-beta", "1.2.0-beta.2", "1.2.0-beta.11", "0.9.0",
        "1.2", "main-abc123", "1.2.0-1", "2.0.0-0",
    )  # fmt: skip
    assert tags_of(sort_tags(shuffled, "semver")) == [
        "0.9.0",
        # semver.org's example order: numeric < alphanumeric, longer list wins on equal prefix
        "1.2.0-1",
        "1.2.0-alpha",
        "1.2.0-alpha.1",
        "1.2.0-alpha.beta",
        "1.2.0-beta",
        "1.2.0-beta.2",
        "1.2.0-beta.11",
        "1.2.0-rc.1",
        "1.2.0-rc.2",
        "1.2.0-rc.10",
        "1.2.0",
        "v1.2.1",
        "1.10.0",
        "2.0.0-0",
        # not semantic versions: last, by name
        "1.2",
        "latest",
        "main-abc123",
    ]


def test_semver_descending_keeps_non_versions_last_and_order_is_input_independent() -> None:
    tags = ["latest", "v2.0.0", "1.0.0", "2.0.0-rc.1", "abc", "1.0.0-rc.1"]
    forward = tags_of(sort_tags(images(*tags), "semver", descending=True))
    backward = tags_of(sort_tags(images(*reversed(tags)), "semver", descending=True))
    assert forward == backward == ["v2.0.0", "2.0.0-rc.1", "1.0.0", "1.0.0-rc.1", "abc", "latest"]


def test_semver_key_rejects_what_is_not_semver() -> None:
    assert semver_key("v1.2.3") == semver_key("1.2.3") == (1, 2, 3, 1, ())
    for tag in ("1.2", "01.2.3", "1.2.3-01", "1.2.3.4", "version1", "1.2.3-", "vv1.2.3"):
        assert semver_key(tag) is None, tag


def test_equal_precedence_is_ordered_by_name() -> None:
    assert tags_of(sort_tags(images("v1.0.0", "1.0.0"), "semver")) == ["1.0.0", "v1.0.0"]


def test_pushed_sort_and_unknown_push_times_last() -> None:
    found = [*images("b", "a", "c"), TaggedImage("z"), TaggedImage("y")]
    assert tags_of(sort_tags(found, "pushed")) == ["b", "a", "c", "y", "z"]
    assert tags_of(sort_tags(found, "pushed", descending=True)) == ["c", "a", "b", "y", "z"]
    assert tags_of(sort_tags(found, "name")) == ["a", "b", "c", "y", "z"]


def test_glob_is_a_full_match() -> None:
    found = images("1.0.0", "1.4.2", "11.0.0", "v1.0.0", "1.0.0-rc.1", "release-1.0")
    assert tags_of(select_tags(found, query(pattern="1.*"))) == ["1.0.0-rc.1", "1.0.0", "1.4.2"]
    assert tags_of(select_tags(found, query(pattern="1.?.?"))) == ["1.0.0", "1.4.2"]
    assert tags_of(select_tags(found, query(pattern="*1.0*"))) == [
        "1.0.0-rc.1",
        "1.0.0",
        "v1.0.0",
        "11.0.0",
        "release-1.0",
    ]


def test_regex_is_a_full_match() -> None:
    found = images("1.0.0", "1.4.2", "1.4.2-rc.1", "x1.4.2", "v1.5.0")
    assert tags_of(select_tags(found, query(pattern=r"v?1\.\d+\.\d+", regex=True))) == [
        "1.0.0",
        "1.4.2",
        "v1.5.0",
    ]
    assert tags_of(select_tags(found, query(pattern="1", regex=True))) == []


def test_pushed_since_limit_and_descending() -> None:
    found = images("1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0")  # pushed T0, T0+1h, ...
    since = (T0 + timedelta(hours=2)).isoformat()
    assert tags_of(select_tags(found, query(pushed_since=since))) == ["1.2.0", "1.3.0", "1.4.0"]
    assert tags_of(select_tags(found, query(pushed_since=since, descending=True, limit=2))) == [
        "1.4.0",
        "1.3.0",
    ]
    naive = datetime(2026, 11, 20, 3)  # taken as UTC
    assert tags_of(select_tags(found, query(pushed_since=naive))) == ["1.3.0", "1.4.0"]
    assert tags_of(select_tags(found, query(pushed_since="2026-11-21"))) == []
    assert tags_of(select_tags(found, query(limit="1"))) == ["1.0.0"]  # a rendered template


def test_outputs_are_json_and_ready_for_mapping() -> None:
    found = images("1.0.0", "1.1.0")
    assert shape_output(found, query()) == ["1.0.0", "1.1.0"]
    assert shape_output(found, query(output="images")) == [
        f"{SOURCE_HOST}/team/app:1.0.0",
        f"{SOURCE_HOST}/team/app:1.1.0",
    ]
    promotions = shape_output(found, query(output="promotions", dest_repository=f"{DEST_HOST}/prod/app"))
    assert promotions == [
        {"source_image": f"{SOURCE_HOST}/team/app:1.0.0", "dest_image": f"{DEST_HOST}/prod/app:1.0.0"},
        {"source_image": f"{SOURCE_HOST}/team/app:1.1.0", "dest_image": f"{DEST_HOST}/prod/app:1.1.0"},
    ]
    assert json.loads(json.dumps(promotions)) == promotions


def test_repository_forms() -> None:
    assert parse_repository("repository", SOURCE_REPO_URL) == RepositoryRef(
        "team/app", SOURCE_ACCOUNT, SOURCE_REGION, SOURCE_HOST
    )
    assert parse_repository("repository", "team/app") == RepositoryRef("team/app")
    ireland = parse_repository("repository", "team/app", registry_id=SOURCE_ACCOUNT, region="eu-west-1")
    assert ireland.host == "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    china = parse_repository("repository", "app", registry_id=SOURCE_ACCOUNT, region="cn-north-1")
    assert china.image("1") == "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/app:1"
    dotted = parse_repository("repository", "my.team/app")
    assert dotted == RepositoryRef("my.team/app")
    dual_stack = parse_repository("repository", f"{SOURCE_ACCOUNT}.dkr-ecr.{SOURCE_REGION}.on.aws/team/app")
    assert dual_stack.image("1.0") == f"{SOURCE_ACCOUNT}.dkr-ecr.{SOURCE_REGION}.on.aws/team/app:1.0"
    same = parse_repository("repository", SOURCE_REPO_URL, registry_id=SOURCE_ACCOUNT, region=SOURCE_REGION)
    assert same.account == SOURCE_ACCOUNT


@pytest.mark.parametrize(
    ("kwargs", "param", "problem"),
    [
        ({"repository": "Team/App"}, "repository", "not a valid ECR repository name"),
        ({"repository": f"{SOURCE_REPO_URL}:1.0"}, "repository", "names a tag or digest"),
        ({"repository": "registry.example.com:5000/app"}, "repository", "is not an ECR registry"),
        ({"repository": "1234.dkr.ecr.us-west-2.amazonaws.com/app"}, "repository", "is not an ECR registry"),
        ({"repository": ""}, "repository", "non-empty string"),
        ({"repository": 42}, "repository", "non-empty string"),
        ({"registry_id": "1234"}, "registry_id", "12-digit"),
        ({"registry_id": "210987654321"}, "registry_id", "does not agree"),
        ({"region": "eu-west-1"}, "region", "does not agree"),
        ({"region": "mars"}, "region", "not an AWS region"),
        ({"pattern": "1.[", "regex": True}, "pattern", "not a valid regular expression"),
        ({"pattern": 1}, "pattern", "must be a string"),
        ({"pushed_since": "last week"}, "pushed_since", "not an ISO 8601"),
        ({"pushed_since": 7}, "pushed_since", "must be a datetime or a string"),
        ({"sort": "newest"}, "sort", "not one of the choices"),
        ({"output": "digests"}, "output", "not one of the choices"),
        ({"limit": 0}, "limit", "at least 1"),
        ({"limit": "ten"}, "limit", "not an integer"),
        ({"limit": True}, "limit", "not an integer"),
        ({"descending": "yes"}, "descending", "True or False"),
        ({"output": "promotions"}, "dest_repository", "is needed"),
        ({"output": "promotions", "dest_repository": "prod/app"}, "dest_repository", "not an ECR registry"),
        (
            {"output": "promotions", "dest_repository": f"{DEST_REPO_URL}:1.0"},
            "dest_repository",
            "names a tag or digest",
        ),
        ({"dest_repository": DEST_REPO_URL}, "dest_repository", "only used with output='promotions'"),
    ],
)
def test_bad_inputs_name_the_parameter(kwargs: dict[str, Any], param: str, problem: str) -> None:
    with pytest.raises(PromotionInputError) as caught:
        query(**kwargs)
    assert caught.value.param == param
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"{param}=")


def test_operator_checks_literal_inputs_at_parse_time_and_defers_templates() -> None:
    with pytest.raises(PromotionInputError, match=r"^sort="):
        EcrListTagsOperator(task_id="discover", repository=SOURCE_REPO_URL, sort="newest")
    # A templated input is checked after rendering, not now.
    EcrListTagsOperator(task_id="discover", repository="{{ params.repository }}", sort="newest")


# ---------------------------------------------------------------------------------------------
# Against a moto_server, through a real Airflow connection
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def ecr(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    connect_airflow_to(monkeypatch, moto_server)
    return ecr_client(moto_server)


TAGS = ["1.0.0", "v1.1.0", "1.1.0-rc.1", "1.1.0-rc.2", "1.10.0", "1.2.0", "2.0.0", "latest", "1.x"]


@pytest.fixture
def seeded(ecr: Any) -> tuple[str, dict[str, str]]:
    repository = new_repository(ecr)
    digests = {tag: put(ecr, repository, tag) for tag in TAGS}
    # One image under two tags: each tag is listed.
    digests["stable"] = put(ecr, repository, "stable", seed="2.0.0")
    assert digests["stable"] == digests["2.0.0"]
    return repository, digests


@pytest.mark.moto
def test_list_tags_glob_semver_and_outputs(seeded: tuple[str, dict[str, str]]) -> None:
    repository, _ = seeded
    url = f"{SOURCE_HOST}/{repository}"
    assert list_tags(url, pattern="1.*", aws_conn_id=CONN_ID) == [
        "1.0.0",
        "1.1.0-rc.1",
        "1.1.0-rc.2",
        "1.2.0",
        "1.10.0",
        "1.x",
    ]
    assert list_tags(url, aws_conn_id=CONN_ID, descending=True, limit=4) == [
        "2.0.0",
        "1.10.0",
        "1.2.0",
        "v1.1.0",
    ]
    assert list_tags(url, aws_conn_id=CONN_ID, pattern=r"v?1\.1\.0.*", regex=True) == [
        "1.1.0-rc.1",
        "1.1.0-rc.2",
        "v1.1.0",
    ]
    assert list_tags(url, aws_conn_id=CONN_ID, sort="name", pattern="*2*") == ["1.1.0-rc.2", "1.2.0", "2.0.0"]
    assert set(list_tags(url, aws_conn_id=CONN_ID)) == {*TAGS, "stable"}
    assert list_tags(url, aws_conn_id=CONN_ID, pattern="2.*", output="images") == [f"{url}:2.0.0"]
    dest = f"{DEST_HOST}/{repository}"
    assert list_tags(
        url, aws_conn_id=CONN_ID, pattern="1.?.0", output="promotions", dest_repository=dest
    ) == [
        {"source_image": f"{url}:1.0.0", "dest_image": f"{dest}:1.0.0"},
        {"source_image": f"{url}:1.2.0", "dest_image": f"{dest}:1.2.0"},
    ]


@pytest.mark.moto
def test_list_tags_by_name_resolves_registry_and_region_from_aws(seeded: tuple[str, dict[str, str]]) -> None:
    repository, _ = seeded
    # No registry_id or region: the account comes from ECR's answer, the region from the connection.
    assert list_tags(repository, pattern="2.*", output="images", aws_conn_id=CONN_ID) == [
        f"{SOURCE_HOST}/{repository}:2.0.0"
    ]
    assert list_tags(
        repository, registry_id=SOURCE_ACCOUNT, region=SOURCE_REGION, pattern="2.*", aws_conn_id=CONN_ID
    ) == ["2.0.0"]


@pytest.mark.moto
def test_pushed_since_against_moto(ecr: Any) -> None:
    repository = new_repository(ecr)
    for tag in ("1.0.0", "1.1.0"):
        put(ecr, repository, tag)
    pushed = max(d["imagePushedAt"] for d in ecr.describe_images(repositoryName=repository)["imageDetails"])
    cutoff = pushed + timedelta(seconds=1)  # moto keeps whole seconds
    while datetime.now(UTC) < cutoff + timedelta(milliseconds=50):
        time.sleep(0.05)
    for tag in ("1.2.0", "1.3.0"):
        put(ecr, repository, tag)
    url = f"{SOURCE_HOST}/{repository}"
    assert list_tags(url, pushed_since=cutoff.isoformat(), aws_conn_id=CONN_ID) == ["1.2.0", "1.3.0"]
    assert list_tags(url, pushed_since=cutoff, sort="pushed", aws_conn_id=CONN_ID)[0] in ("1.2.0", "1.3.0")
    assert list_tags(url, pushed_since=cutoff + timedelta(hours=1), aws_conn_id=CONN_ID) == []


@pytest.mark.moto
def test_missing_repository_and_empty_repository(ecr: Any) -> None:
    absent = r"'team/absent' was not found in registry 123456789012"
    with pytest.raises(EcrRepositoryNotFoundError, match=absent):
        list_tags(f"{SOURCE_HOST}/team/absent", aws_conn_id=CONN_ID)
    assert list_tags(new_repository(ecr), output="images", aws_conn_id=CONN_ID) == []


@pytest.mark.moto
def test_operator_execute_with_rendered_templates(seeded: tuple[str, dict[str, str]]) -> None:
    repository, _ = seeded
    with DAG(
        dag_id="discover_test",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        params={"repository": repository, "limit": 2, "since": "2020-01-01T00:00:00Z"},
    ):
        op = EcrListTagsOperator(
            task_id="discover",
            repository=f"{SOURCE_HOST}/{{{{ params.repository }}}}",
            pattern="1.*",
            pushed_since="{{ params.since }}",
            limit="{{ params.limit }}",
            descending=True,
            output="{{ 'promotions' }}",
            dest_repository=f"{DEST_HOST}/{{{{ params.repository }}}}",
            aws_conn_id=CONN_ID,
        )
    task = op.prepare_for_execution()
    context = make_context(task)
    task.render_template_fields(context)
    rendered = context["task"]
    assert rendered.output_kind == "promotions"
    assert rendered.limit == "2"
    result = rendered.execute(context)
    source, dest = f"{SOURCE_HOST}/{repository}", f"{DEST_HOST}/{repository}"
    assert result == [
        {"source_image": f"{source}:1.10.0", "dest_image": f"{dest}:1.10.0"},
        {"source_image": f"{source}:1.2.0", "dest_image": f"{dest}:1.2.0"},
    ]
    assert json.loads(json.dumps(result)) == result


@pytest.mark.moto
def test_operator_bad_rendered_input_names_the_parameter(seeded: tuple[str, dict[str, str]]) -> None:
    op = EcrListTagsOperator(
        task_id="discover", repository=SOURCE_REPO_URL, pushed_since="{{ 'yesterday' }}", aws_conn_id=CONN_ID
    )
    context = make_context(op)
    op.render_template_fields(context)
    with pytest.raises(PromotionInputError, match=r"^pushed_since='yesterday'"):
        op.execute(context)
