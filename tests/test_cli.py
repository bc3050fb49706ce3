"""``airflow-ecr-promote render``: the operator's own pod as a Job, clean stdout, exit code 2 on bad input.

Each expected pod is built here independently, as the operator builds it
(``EcrPromoteOperator(...).build_pod_request_obj(None, dry_run=True)``), and compared with what the
command prints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient

from airflow_ecr_promote import __version__, cli
from airflow_ecr_promote.compat import build_pod_offline
from airflow_ecr_promote.engines import ENGINES
from airflow_ecr_promote.operators import EcrPromoteOperator
from airflow_ecr_promote.pod import LABEL_PREFIX
from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST, require

PULL_ROLE = f"arn:aws:iam::{SOURCE_ACCOUNT}:role/ecr-promote-pull"
PUSH_ROLE = f"arn:aws:iam::{DEST_ACCOUNT}:role/ecr-promote-push"
SOURCE = f"{SOURCE_HOST}/team/app:1.4.2"
DEST = f"{DEST_HOST}/team/app:1.4.2"
BASE_ARGS = ["render", "--source-image", SOURCE, "--dest-image", DEST]
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what came before, e.g. KPO's log of a pod built by the test itself
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def operator_pod(namespace: str = "default", **inputs: Any) -> dict[str, Any]:
    """The operator's pod for these inputs, serialised as the command serialises it."""
    operator = EcrPromoteOperator(
        task_id=cli.TASK_ID, namespace=namespace, role_session_name=cli.ROLE_SESSION_NAME, **inputs
    )
    pod = build_pod_offline(operator)  # KPO's dry run (or its equivalent on cncf-kubernetes 10.1)
    serialised: dict[str, Any] = ApiClient().sanitize_for_serialization(pod)
    return serialised


def promotion_labels(pod: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = pod["metadata"]["labels"]
    return {k: v for k, v in labels.items() if k not in cli.AIRFLOW_RUN_LABELS}


MODULE = [sys.executable, "-m", "airflow_ecr_promote.cli"]


def installed_script() -> str | None:
    return shutil.which("airflow-ecr-promote", path=str(Path(sys.executable).parent))


def command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m``."""
    script = installed_script()
    return [script] if script else MODULE


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_job_template_is_the_operators_pod(capsys: pytest.CaptureFixture[str], engine: str) -> None:
    inputs = {
        "source_image": SOURCE,
        "dest_image": DEST,
        "source_role_arn": PULL_ROLE,
        "dest_role_arn": PUSH_ROLE,
        "engine": engine,
    }
    code, out, err = run(
        capsys,
        *BASE_ARGS,
        "--source-role-arn",
        PULL_ROLE,
        "--dest-role-arn",
        PUSH_ROLE,
        "--engine",
        engine,
        "--namespace",
        "ci",
    )
    assert code == 0, err
    job = yaml.safe_load(out)
    expected = operator_pod(namespace="ci", **inputs)

    assert job["apiVersion"] == "batch/v1"
    assert job["kind"] == "Job"
    assert job["metadata"]["name"] == "ecr-promote-team-app-1-4-2"
    assert job["metadata"]["namespace"] == "ci"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == 600
    template = job["spec"]["template"]
    assert template["spec"] == expected["spec"]
    assert template["spec"]["restartPolicy"] == "Never"
    assert [c["image"] for c in template["spec"]["containers"]] == [ENGINES[engine].default_image]

    labels = promotion_labels(expected)
    assert labels[f"{LABEL_PREFIX}/engine"] == engine
    assert template["metadata"]["labels"] == labels == job["metadata"]["labels"]
    assert "airflow_version" in expected["metadata"]["labels"], "KPO's label is there to be dropped"
    assert not set(template["metadata"]["labels"]) & cli.AIRFLOW_RUN_LABELS
    assert template["metadata"]["annotations"] == expected["metadata"]["annotations"]
    # The manifest holds only the spec, metadata and Job fields: nothing else of KPO's pod.
    assert set(template) == {"metadata", "spec"}


def test_batch_of_tags_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    repo_args = ["--source-image", f"{SOURCE_HOST}/team/app", "--dest-image", f"{DEST_HOST}/team/app"]
    code, out, err = run(
        capsys,
        "render",
        *repo_args,
        "--engine",
        "crane",
        "--tag",
        "1.4.2",
        "--tag",
        "1.4.3",
        "--parallel",
        "2",
        "--on-conflict",
        "skip",
        "--service-account",
        "ecr-promote",
        "--ttl-seconds-after-finished",
        "60",
    )
    assert code == 0, err
    job = yaml.safe_load(out)
    expected = operator_pod(
        source_image=f"{SOURCE_HOST}/team/app",
        dest_image=f"{DEST_HOST}/team/app",
        engine="crane",
        tags=["1.4.2", "1.4.3"],
        parallel=2,
        on_conflict="skip",
        service_account_name="ecr-promote",
    )
    spec = job["spec"]["template"]["spec"]
    assert spec == expected["spec"]
    assert spec["serviceAccountName"] == "ecr-promote"
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert (env["SOURCE_REPO"], env["DEST_REPO"]) == (f"{SOURCE_HOST}/team/app", f"{DEST_HOST}/team/app")
    assert env["COPIES"].splitlines() == ["1.4.2", "1.4.3"]
    assert (env["PARALLEL"], env["ON_CONFLICT"]) == ("2", "skip")
    assert job["metadata"]["name"] == "ecr-promote-team-app-1-4-2-and-1-more"
    assert job["spec"]["ttlSecondsAfterFinished"] == 60


@pytest.mark.parametrize("how", ["script", "module"])
def test_installed_command_prints_only_the_manifest(how: str) -> None:
    if how == "script":
        require(installed_script(), "the airflow-ecr-promote script is not installed next to python")
    proc = subprocess.run(
        [*(command() if how == "script" else MODULE), *BASE_ARGS, "--engine", "skopeo"],
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("apiVersion: batch/v1\n"), proc.stdout[:300]
    job = yaml.safe_load(proc.stdout)
    assert job["kind"] == "Job"
    assert (
        job["spec"]["template"]["spec"]
        == operator_pod(source_image=SOURCE, dest_image=DEST, engine="skopeo")["spec"]
    )
    assert "Building pod" not in proc.stdout
    assert "apiVersion" not in proc.stderr and "kind: Job" not in proc.stderr


def test_installed_command_bad_input_exit_2() -> None:
    proc = subprocess.run(
        [*command(), "render", "--source-image", SOURCE, "--dest-image", f"{DEST_HOST}/team/app"],
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "airflow-ecr-promote: error: argument --dest-image: dest_image=" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_yaml_round_trips_and_equals_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out_yaml, _ = run(capsys, *BASE_ARGS, "--engine", "skopeo")
    assert code == 0
    code, out_json, _ = run(capsys, *BASE_ARGS, "--engine", "skopeo", "--output", "json")
    assert code == 0
    manifest = cli.build_manifest({"source_image": SOURCE, "dest_image": DEST, "engine": "skopeo"})
    assert yaml.safe_load(out_yaml) == manifest == json.loads(out_json)
    # The in-pod scripts are multi-line strings: readable literal blocks, still the same text.
    assert "command:\n        - sh\n        - -c\n        - |\n" in out_yaml
    assert out_json.startswith('{\n  "apiVersion": "batch/v1"')


def test_kind_pod(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *BASE_ARGS, "--kind", "pod", "--name", "promote-app", "--output", "json")
    assert code == 0, err
    pod = json.loads(out)
    expected = operator_pod(source_image=SOURCE, dest_image=DEST)
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    assert pod["metadata"]["name"] == "promote-app"
    assert pod["metadata"]["namespace"] == "default"
    assert pod["metadata"]["labels"] == promotion_labels(expected)
    assert pod["spec"] == expected["spec"]
    assert pod["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_values_file_and_flags_win(capsys: pytest.CaptureFixture[str], tmp_path: Path, suffix: str) -> None:
    values = {
        "source_image": f"{SOURCE_HOST}/team/app",
        "dest_image": f"{DEST_HOST}/team/app",
        "source_role_arn": PULL_ROLE,
        "engine": "skopeo",
        "tags": ["1.0.0", "1.0.1"],
        "namespace": "from-file",
        "parallel": 3,
    }
    path = tmp_path / f"values{suffix}"
    path.write_text(json.dumps(values) if suffix == ".json" else yaml.safe_dump(values))

    code, out, err = run(capsys, "render", "--values", str(path))
    assert code == 0, err
    job = yaml.safe_load(out)
    inputs = {k: v for k, v in values.items() if k != "namespace"}
    assert job["spec"]["template"]["spec"] == operator_pod(namespace="from-file", **inputs)["spec"]
    assert job["metadata"]["namespace"] == "from-file"

    code, out, err = run(
        capsys, "render", "--values", str(path), "--engine", "crane", "--tag", "2.0.0", "--namespace", "cli"
    )
    assert code == 0, err
    job = yaml.safe_load(out)
    overridden = {**inputs, "engine": "crane", "tags": ["2.0.0"]}
    assert job["spec"]["template"]["spec"] == operator_pod(namespace="cli", **overridden)["spec"]
    assert job["metadata"]["namespace"] == "cli"
    assert job["metadata"]["name"] == "ecr-promote-team-app-2-0-0"


def test_values_file_unquoted_account_and_single_tag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "values.yml"
    path.write_text(
        f"source_image: {SOURCE_HOST}/team/app\n"
        f"dest_image: {DEST_HOST}/team/app\n"
        f"source_account: {SOURCE_ACCOUNT}\n"  # YAML reads this as a number
        "tag: '1.10'\n"
        "engine: crane\n"
    )
    code, out, err = run(capsys, "render", "--values", str(path))
    assert code == 0, err
    spec = yaml.safe_load(out)["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert env["COPIES"] == f"{SOURCE_HOST}/team/app:1.10 {DEST_HOST}/team/app:1.10"


BAD_INPUTS = [
    pytest.param(
        ["--source-image", "docker.io/library/app:1", "--dest-image", DEST],
        ["--source-image", "source_image", "docker.io/library/app:1"],
        id="malformed-source-image",
    ),
    pytest.param(
        ["--source-image", SOURCE, "--dest-image", f"{DEST_HOST}/team/app"],
        ["--dest-image", "dest_image", f"{DEST_HOST}/team/app", "needs a tag"],
        id="dest-without-tag",
    ),
    pytest.param(
        [*BASE_ARGS[1:], "--source-account", "111122223333"],
        ["--source-account", "source_account", "111122223333", SOURCE_ACCOUNT],
        id="account-disagrees-with-host",
    ),
    pytest.param(
        [*BASE_ARGS[1:], "--engine", "docker"],
        ["--engine", "engine", "docker", "'skopeo'"],
        id="unknown-engine",
    ),
    pytest.param(
        [
            "--source-image",
            SOURCE,
            "--dest-image",
            f"{SOURCE_HOST}/team/app-prod:1.4.2",
            "--source-role-arn",
            PULL_ROLE,
            "--dest-role-arn",
            f"arn:aws:iam::{SOURCE_ACCOUNT}:role/ecr-promote-push",
            "--engine",
            "kaniko",
        ],
        ["--engine", "engine", "kaniko", SOURCE_HOST],
        id="same-registry-two-roles-kaniko",
    ),
    pytest.param(
        [*BASE_ARGS[1:], "--dest-role-arn", "role/ecr-promote-push"],
        ["--dest-role-arn", "dest_role_arn", "role/ecr-promote-push"],
        id="role-not-an-arn",
    ),
    pytest.param(
        [
            "--source-image",
            f"{SOURCE_HOST}/team/app",
            "--dest-image",
            f"{DEST_HOST}/team/app",
            "--engine",
            "skopeo",
            "--tag",
            "1.0",
            "--tag",
            "v1!",
        ],
        ["--tag", "tags[1]", "v1!"],
        id="bad-tag-in-batch",
    ),
    pytest.param(
        [*BASE_ARGS[1:], "--engine", "kaniko", "--on-conflict", "skip"],
        ["--on-conflict", "on_conflict", "skip"],
        id="kaniko-cannot-skip",
    ),
    pytest.param(
        [*BASE_ARGS[1:], "--name", "Promote_App"],
        ["--name", "Promote_App", "DNS-1123"],
        id="bad-name",
    ),
    pytest.param(
        [*BASE_ARGS[1:], "--namespace", "CI"],
        ["--namespace", "CI"],
        id="bad-namespace",
    ),
    pytest.param(
        [*BASE_ARGS[1:], "--parallel", "0", "--engine", "crane"],
        ["--parallel", "parallel", "0"],
        id="parallel-out-of-range",
    ),
    pytest.param(["--dest-image", DEST], ["--source-image", "required"], id="missing-source-image"),
]


@pytest.mark.parametrize(("args", "expected"), BAD_INPUTS)
def test_bad_input_exit_2_nothing_on_stdout(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: list[str]
) -> None:
    code, out, err = run(capsys, "render", *args)
    assert code == 2
    assert out == ""
    assert err.startswith("airflow-ecr-promote: error: "), err
    for text in expected:
        assert text in err, (text, err)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "source_image: x\nsource-image: y\nbogus: 1\n",
            ["unknown keys", "'bogus'", "did you mean 'source_image'"],
        ),
        ("source_image: [\n", ["not valid YAML", "line 2"]),
        ("- a\n- b\n", ["expected a mapping", "list"]),
        (f"source_image: {SOURCE}\ndest_image: {DEST}\ntag: a\ntags: [b]\n", ["either 'tag' or 'tags'"]),
        (f"source_image: {SOURCE}\ndest_image: {DEST}\nkind: cronjob\n", ["kind in", "'cronjob'"]),
        (f"source_image: {SOURCE}\ndest_image: {DEST}\nttl_seconds_after_finished: soon\n", ["'soon'"]),
        (
            f"source_image: {SOURCE}\ndest_image: {DEST_HOST}/team/app\n",
            ["dest_image in", "values.yaml", f"{DEST_HOST}/team/app"],
        ),
    ],
    ids=["unknown-keys", "bad-yaml", "not-a-mapping", "tag-and-tags", "bad-kind", "bad-ttl", "bad-image"],
)
def test_bad_values_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, expected: list[str]
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(content)
    code, out, err = run(capsys, "render", "--values", str(path))
    assert (code, out) == (2, "")
    assert err.startswith("airflow-ecr-promote: error: "), err
    for text in expected:
        assert text in err, (text, err)


def test_bad_json_and_unreadable_values_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "values.json"
    path.write_text('{"source_image": }')
    code, out, err = run(capsys, "render", "--values", str(path))
    assert (code, out) == (2, "")
    assert "not valid JSON: line 1" in err

    missing = tmp_path / "missing.yaml"
    code, out, err = run(capsys, "render", "--values", str(missing))
    assert (code, out) == (2, "")
    assert str(missing) in err and "cannot read" in err


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *BASE_ARGS, "--parallel", "many")
    assert (code, out) == (2, "")
    assert "--parallel" in err and "'many'" in err
    code, out, err = run(capsys, *BASE_ARGS, "--output", "xml")
    assert (code, out) == (2, "")
    assert "--output" in err and "'xml'" in err
    code, out, err = run(capsys)
    assert (code, out) == (2, "")
    assert "render" in err


def test_default_name_is_a_short_dns_label(capsys: pytest.CaptureFixture[str]) -> None:
    repository = "/".join(["platform-team"] * 6) + "/service_api"
    code, out, err = run(
        capsys,
        "render",
        "--source-image",
        f"{SOURCE_HOST}/{repository}:Release_2024.11.29-RC1",
        "--dest-image",
        f"{DEST_HOST}/{repository}:Release_2024.11.29-RC1",
    )
    assert code == 0, err
    name = yaml.safe_load(out)["metadata"]["name"]
    assert len(name) <= 63 and DNS_LABEL.match(name), name
    assert name.startswith("ecr-promote-platform-team-")


def test_help_mentions_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "render", "--help")
    assert code == 0
    flags = [
        "--source-image",
        "--dest-image",
        "--source-role-arn",
        "--dest-role-arn",
        "--source-account",
        "--dest-account",
        "--source-region",
        "--dest-region",
        "--engine",
        "--copier-image",
        "--init-image",
        "--on-conflict",
        "--tag",
        "--parallel",
        "--values",
        "--kind",
        "--output",
        "--namespace",
        "--service-account",
        "--name",
        "--ttl-seconds-after-finished",
    ]
    for flag in flags:
        assert flag in out, flag
    assert "example:" in out and "kubectl apply -f -" in out
    for engine in ENGINES:
        assert engine in out
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "render" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.strip() == f"airflow-ecr-promote {__version__}"


@pytest.mark.parametrize(
    ("flag", "inputs"),
    [
        ("true", {"create_repository": True}),
        (
            '{"imageTagMutability": "IMMUTABLE", "scanOnPush": true}',
            {"create_repository": {"imageTagMutability": "IMMUTABLE", "scanOnPush": True}},
        ),
        ("false", {}),
    ],
    ids=["from-source", "given-settings", "false"],
)
def test_create_repository_flag_is_the_operators_parameter(
    capsys: pytest.CaptureFixture[str], flag: str, inputs: dict[str, Any]
) -> None:
    code, out, err = run(
        capsys, *BASE_ARGS, "--engine", "skopeo", "--output", "json", "--create-repository", flag
    )
    assert code == 0, err
    spec = json.loads(out)["spec"]["template"]["spec"]
    expected = operator_pod(source_image=SOURCE, dest_image=DEST, engine="skopeo", **inputs)["spec"]
    assert spec["initContainers"] == expected["initContainers"]
    env = {e["name"]: e.get("value") for c in spec["initContainers"] for e in c["env"]}
    assert ("CREATE_REPOSITORIES" in env) == (flag != "false")
    names = [c["name"] for c in spec["initContainers"]]
    assert names == ["ecr-promote-login", *(["ecr-promote-repository"] if flag != "false" else [])]


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("yes", ["argument --create-repository", "'yes'", "not true, false or a JSON object"]),
        ("[1]", ["argument --create-repository", "not true, false or a JSON object"]),
        ('{"imageTagMutability": "SOMETIMES"}', ["argument --create-repository", "SOMETIMES", "MUTABLE"]),
        ('{"retention": 3}', ["argument --create-repository", "unknown keys", "retention"]),
    ],
    ids=["word", "json-list", "bad-mutability", "unknown-key"],
)
def test_bad_create_repository_flag_exit_2_naming_it(
    capsys: pytest.CaptureFixture[str], flag: str, expected: list[str]
) -> None:
    code, out, err = run(capsys, *BASE_ARGS, "--create-repository", flag)
    assert (code, out) == (2, ""), err
    for text in expected:
        assert text in err, (text, err)
