"""Assets, the ECR console link, cluster-wide defaults and provider metadata, on this venv's Airflow."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

import pytest

from airflow_ecr_promote import assets
from airflow_ecr_promote.engines import ENGINES
from airflow_ecr_promote.links import EcrImageLink, link_target
from airflow_ecr_promote.operators import EcrPromoteOperator
from airflow_ecr_promote.pod import DEFAULT_INIT_IMAGE
from airflow_ecr_promote.refs import PromotionInputError, parse_image_ref
from tests.airflow_context import containers, render_pod, temporary_environ
from tests.conftest import DEST_HOST, REPO, SOURCE_HOST

SOURCE = f"{SOURCE_HOST}/team/app:1.0"
DEST = f"{DEST_HOST}/team/app:1.0"
DIGEST = "sha256:" + "a" * 64


# ------------------------------------------------------------------------------------------ assets


@pytest.mark.parametrize(
    ("image", "uri"),
    [
        (DEST, f"ecr://{DEST_HOST}/team/app"),
        (f"{DEST_HOST}/team/app@{DIGEST}", f"ecr://{DEST_HOST}/team/app"),
        ("210987654321.dkr.ecr-fips.us-gov-west-1.amazonaws.com/app:1", "ecr://210987654321.dkr.ecr.us-gov-west-1.amazonaws.com/app"),
        ("210987654321.dkr-ecr.eu-west-1.on.aws/a/b:1", "ecr://210987654321.dkr.ecr.eu-west-1.amazonaws.com/a/b"),
        ("210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn/app:1", "ecr://210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn/app"),
    ],
)  # fmt: skip
def test_an_asset_is_the_destination_repository_on_its_standard_host(image: str, uri: str) -> None:
    assert assets.asset_uri(parse_image_ref("dest_image", image)) == uri


def _asset_class() -> Any:
    from airflow_ecr_promote.compat import Asset

    return Asset


def test_airflow_normalises_ecr_uris_through_the_provider() -> None:
    asset = _asset_class()
    assert asset(f"ECR://{DEST_HOST.upper()}/team/app/").uri == f"ecr://{DEST_HOST}/team/app"
    fips = asset("ecr://210987654321.dkr.ecr-fips.us-east-1.amazonaws.com/team/app")
    assert fips.uri == f"ecr://{DEST_HOST}/team/app"


BAD_URIS = [
    f"ecr://{DEST_HOST}/team/app:1.0",
    f"ecr://{DEST_HOST}/team/app@{DIGEST}",
    f"ecr://{DEST_HOST}",
    f"ecr://{DEST_HOST}/Team/App",
    f"ecr://{DEST_HOST}:443/team/app",
    f"ecr://{DEST_HOST}/team/app?tag=1",
    "ecr://123.dkr.ecr.us-east-1.amazonaws.com/team/app",
    "ecr://registry.example.com/team/app",
    "ecr://user:secret@210987654321.dkr.ecr.us-east-1.amazonaws.com/team/app",
]


@pytest.mark.parametrize("uri", BAD_URIS)
def test_the_normaliser_refuses_malformed_uris(uri: str) -> None:
    with pytest.raises(ValueError, match=r"Expected ecr://<12-digit account>") as caught:
        assets.sanitize_uri(urlsplit(uri))
    assert "uri=" in str(caught.value)


def test_airflow_refuses_a_malformed_ecr_asset() -> None:
    """Airflow 3 raises; Airflow 2.11 raises when strict_dataset_uri_validation is on (else it warns)."""
    from airflow import __version__

    AIRFLOW_V_3_0_PLUS = int(__version__.split(".")[0]) >= 3

    if AIRFLOW_V_3_0_PLUS:
        with pytest.raises(ValueError, match="an asset is a repository"):
            _asset_class()(f"ecr://{DEST_HOST}/team/app:1.0")
        return
    from airflow.configuration import conf

    with conf_vars({("core", "strict_dataset_uri_validation"): "True"}):
        with pytest.raises(ValueError, match="an asset is a repository"):
            _asset_class()(f"ecr://{DEST_HOST}/team/app:1.0")
    assert conf.get("core", "strict_dataset_uri_validation") != "True"


def entry(status: str, digest: str | None = DIGEST) -> dict[str, Any]:
    return {"source_image": SOURCE, "dest_image": DEST, "status": status, "digest": digest,
            "source_digest": digest, "digest_kept": True}  # fmt: skip


@pytest.mark.parametrize(
    ("status", "try_number", "emits"),
    [
        ("copied", 1, True),
        ("copied", 2, True),
        ("present", 1, False),  # a nightly run with nothing new: no deploy
        ("present", 2, True),  # the try before may have copied it and failed: its event was lost
        ("skipped", 2, False),
        ("failed", 2, False),
    ],
)
def test_which_results_emit_an_asset_event(status: str, try_number: int, emits: bool) -> None:
    assert bool(assets.to_emit([entry(status)], try_number)) is emits


def test_an_event_extra_names_the_image_by_digest() -> None:
    assert assets.event_extra(entry("copied")) == {
        "source_image": SOURCE,
        "dest_image": DEST,
        "digest": DIGEST,
        "source_digest": DIGEST,
        "status": "copied",
        "image": f"{DEST_HOST}/team/app@{DIGEST}",
    }


def test_every_promotion_task_declares_its_alias_mapped_or_not() -> None:
    from airflow_ecr_promote.compat import AssetAlias
    from tests.airflow_context import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "examples"))
    for dag_id, task_id in [("ecr_promote_on_demand", "promote"), ("ecr_promote_backfill", "promote")]:
        task = bag.dags[dag_id].get_task(task_id)
        aliases = [o.name for o in task.outlets if isinstance(o, AssetAlias)]
        assert aliases == [f"ecr-promote:{dag_id}.{task_id}"]


# ------------------------------------------------------------------------------------------- links


@pytest.mark.parametrize(
    ("image", "console"),
    [
        (DEST, "https://console.aws.amazon.com/ecr/repositories/private/210987654321/team/app/_/image/"
               f"{DIGEST}/details?region=us-east-1"),
        ("210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn/team/app:1", "https://console.amazonaws.cn/ecr/"
         f"repositories/private/210987654321/team/app/_/image/{DIGEST}/details?region=cn-north-1"),
        ("210987654321.dkr.ecr.us-gov-west-1.amazonaws.com/team/app:1", "https://console.amazonaws-us-gov.com/"
         f"ecr/repositories/private/210987654321/team/app/_/image/{DIGEST}/details?region=us-gov-west-1"),
    ],
)  # fmt: skip
def test_the_console_link_follows_the_partition(image: str, console: str) -> None:
    op = EcrPromoteOperator(task_id="promote", source_image=SOURCE, dest_image=image, engine="skopeo")
    pushed: dict[str, Any] = {}

    class Ti:
        def xcom_push(self, key: str, value: Any, **_: Any) -> None:
            pushed[key] = value

    EcrImageLink.persist_image({"ti": Ti()}, op, parse_image_ref("dest_image", image), DIGEST)  # type: ignore[arg-type]
    assert EcrImageLink().format_link(**pushed[EcrImageLink.key]) == console


def test_no_link_without_a_result_and_a_repository_link_for_a_batch() -> None:
    assert link_target(None) is None
    batch = {"engine": "skopeo", "promotions": [entry("copied"), entry("failed", None)]}
    assert link_target(batch) == (DEST, None)
    assert EcrImageLink().format_link() == ""


def test_the_operator_declares_the_link() -> None:
    op = EcrPromoteOperator(task_id="promote", source_image=SOURCE, dest_image=DEST)
    assert [link.name for link in op.operator_extra_links] == ["ECR image"]


# ---------------------------------------------------------------------------------------- defaults


def conf_vars(values: dict[tuple[str, str], str]) -> Any:
    """Set options through the environment, as a deployment does (AIRFLOW__SECTION__KEY)."""
    return temporary_environ({f"AIRFLOW__{s.upper()}__{k.upper()}": v for (s, k), v in values.items()})


def pod_images(**kwargs: Any) -> tuple[str, str, str]:
    op = EcrPromoteOperator(task_id="promote", source_image=SOURCE, dest_image=DEST, **kwargs)
    rendered, pod = render_pod(op)
    parts = containers(pod)
    return rendered.engine or "", parts["ecr-promote-login"].image, parts["base"].image


def test_without_configuration_the_pins_apply() -> None:
    kaniko = ENGINES["kaniko"]
    assert pod_images() == ("", DEFAULT_INIT_IMAGE, kaniko.default_image)


def test_cluster_wide_defaults_come_from_the_configuration() -> None:
    with conf_vars(
        {
            ("ecr_promote", "default_engine"): "skopeo",
            ("ecr_promote", "init_image"): "mirror.example.com/aws-cli:2",
            ("ecr_promote", "skopeo_image"): "mirror.example.com/skopeo:1",
        }
    ):
        _, init, copier = pod_images()
        assert (init, copier) == ("mirror.example.com/aws-cli:2", "mirror.example.com/skopeo:1")
        op = EcrPromoteOperator(task_id="p", source_image=SOURCE, dest_image=DEST)
        _, pod = render_pod(op)
        assert containers(pod)["base"].command[0] == "sh", "the skopeo copy script, not kaniko"


def test_a_task_argument_wins_over_the_configuration() -> None:
    with conf_vars({("ecr_promote", "crane_image"): "mirror.example.com/crane:1",
                    ("ecr_promote", "init_image"): "mirror.example.com/aws-cli:2"}):  # fmt: skip
        _, init, copier = pod_images(
            engine="crane", copier_image="own.example.com/crane:9", init_image="own/cli:1"
        )
        assert (init, copier) == ("own/cli:1", "own.example.com/crane:9")
        _, _, copier = pod_images(engine="crane")
        assert copier == "mirror.example.com/crane:1"


@pytest.mark.parametrize(
    ("key", "value"), [("default_engine", "docker"), ("skopeo_image", "bad image; rm -rf /")]
)
def test_a_bad_configured_value_is_refused_naming_the_option(key: str, value: str) -> None:
    engine = None if key == "default_engine" else "skopeo"
    with conf_vars({("ecr_promote", key): value}):
        with pytest.raises(PromotionInputError) as caught:
            EcrPromoteOperator(task_id="p", source_image=SOURCE, dest_image=DEST, engine=engine)
    option = f"[ecr_promote] {key} (AIRFLOW__ECR_PROMOTE__{key.upper()})"
    assert str(caught.value).startswith(f"{option}={value!r}: ")
    assert "Expected" in str(caught.value)


# ---------------------------------------------------------------------------------------- metadata


def test_provider_info_declares_what_airflow_reads() -> None:
    from airflow.providers_manager import ProvidersManager

    from airflow_ecr_promote.get_provider_info import get_provider_info

    info = get_provider_info()
    assert info["extra-links"] == ["airflow_ecr_promote.links.EcrImageLink"]
    assert info["integrations"][0]["integration-name"] == "Amazon ECR promotion"
    options = info["config"]["ecr_promote"]["options"]
    assert set(options) == {"default_engine", "init_image", *(f"{name}_image" for name in ENGINES)}
    manager = ProvidersManager()
    assert "airflow_ecr_promote.links.EcrImageLink" in manager.extra_links_class_names
    try:  # the registry Airflow 3's Asset() consults
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

        handlers = ProvidersManagerTaskRuntime().asset_uri_handlers
    except ImportError:  # Airflow 2.11
        handlers = manager.dataset_uri_handlers
    assert handlers["ecr"] is assets.sanitize_uri


def test_airflow_config_lists_the_section(tmp_path: Any) -> None:
    from airflow import __version__

    AIRFLOW_V_3_0_PLUS = int(__version__.split(".")[0]) >= 3

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__ECR_PROMOTE__DEFAULT_ENGINE": "crane"})
    command = [sys.executable, "-m", "airflow", "config", "list", "--section", "ecr_promote"]
    if AIRFLOW_V_3_0_PLUS:
        command.append("--show-values")  # Airflow 3 hides values unless asked
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout[done.stdout.index("[ecr_promote]") :].splitlines()
    assert "default_engine = crane" in lines
    assert {f"{name}_image = " for name in ENGINES} <= set(lines)


def test_the_package_exports_its_operators_lazily() -> None:
    code = (
        "import sys, airflow_ecr_promote as p\n"
        "from airflow_ecr_promote.get_provider_info import get_provider_info\n"
        "get_provider_info()\n"
        "assert 'airflow_ecr_promote.operators' not in sys.modules, 'get_provider_info imported operators'\n"
        "assert 'airflow' not in sys.modules, 'get_provider_info imported Airflow'\n"
        "from airflow_ecr_promote import EcrPromoteOperator, EcrListTagsOperator\n"
        "from airflow_ecr_promote.operators import EcrListTagsOperator as listed\n"
        "from airflow_ecr_promote.discovery import EcrListTagsOperator as origin\n"
        "assert EcrListTagsOperator is listed is origin\n"
        "assert EcrPromoteOperator.__module__ == 'airflow_ecr_promote.operators'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_license_file_matches_the_declared_license() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License")
    assert "Version 2.0, January 2004" in text
    assert "Documentation" in project["urls"]
