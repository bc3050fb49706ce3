"""The IAM policies the README shows are the package's policy files, and the files are sound.

One copy of each policy (airflow_ecr_promote/policies/*.json): the lab's roles load the files
(tests/lab/moto_iam.py), so a README block that drifted from its file would document a policy
nothing tests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from airflow_ecr_promote import policies

README = Path(__file__).resolve().parents[1] / "README.md"
# a marker, then the fenced JSON block that follows it (possibly indented, in a list item)
BLOCK = re.compile(r"<!-- policy: (?P<name>[a-z0-9-]+) -->\n *```json\n(?P<body>.*?)\n *```", re.S)
SOURCE_REPOS = "arn:aws:ecr:us-west-2:123456789012:repository/team/*"
DEST_REPOS = "arn:aws:ecr:us-east-1:210987654321:repository/team/*"


def readme_blocks() -> dict[str, list[object]]:
    found: dict[str, list[object]] = {}
    for match in BLOCK.finditer(README.read_text()):
        found.setdefault(match["name"], []).append(json.loads(match["body"]))
    return found


def test_files_and_names_agree() -> None:
    on_disk = sorted(p.stem for p in Path(policies.__file__).parent.glob("*.json"))
    assert on_disk == sorted(policies.NAMES)


@pytest.mark.parametrize("name", policies.NAMES)
def test_readme_shows_each_policy_once_as_its_file(name: str) -> None:
    blocks = readme_blocks()
    if name in ("push-crane", "push-regctl", "push-kaniko"):  # the README says they equal push-skopeo
        assert name not in blocks
        assert f"`{name}.json`" in README.read_text()
        assert policies.load(name) == policies.load("push-skopeo")
        return
    assert blocks.get(name) == [policies.load(name)]


def test_readme_marks_no_unknown_policy() -> None:
    assert set(readme_blocks()) <= set(policies.NAMES)


@pytest.mark.parametrize("name", policies.NAMES)
def test_policy_is_scoped(name: str) -> None:
    """`*` only for ecr:GetAuthorizationToken (AWS cannot scope it); ECR actions on the example
    repositories of their own side: the pull role's on the source account, the push role's on
    the destination's."""
    document = policies.load(name)
    assert document["Version"] == "2012-10-17"
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        listed = statement["Resource"]
        resources = listed if isinstance(listed, list) else [listed]
        if statement["Action"] == "ecr:GetAuthorizationToken":
            assert resources == ["*"]
            continue
        assert "*" not in resources
        assert "ecr:GetAuthorizationToken" not in policies.actions({"Statement": [statement]})
        if name.endswith("-pull") or name in ("pull", "list-tags", "scan-gate"):
            assert resources == [SOURCE_REPOS]
        elif name.startswith("push-") or name.endswith("-push") or name == "sensor":
            assert resources == [DEST_REPOS]
        elif name == "compare-digests":
            assert resources == [SOURCE_REPOS, DEST_REPOS]
        else:
            assert name == "eks-describe-cluster"
            assert resources == ["arn:aws:eks:us-west-2:111122223333:cluster/platform-prod"]


def test_load_refuses_an_unknown_name() -> None:
    with pytest.raises(KeyError, match="unknown policy 'push'"):
        policies.load("push")


def test_actions_lists_each_once() -> None:
    assert policies.actions(policies.load("pull")) == [
        "ecr:GetAuthorizationToken",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
    ]
