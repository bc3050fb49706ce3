"""Property tests of `airflow-ecr-promote render` with hostile values in every flag: each is
refused (exit 2, nothing on stdout, a message naming the flag) or printed only as data (an
env value or a field), never inside the scripts the pod runs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_ecr_promote import cli
from airflow_ecr_promote.engines import script
from tests.conftest import DEST_HOST, SOURCE_HOST

VALID = {
    "--source-image": f"{SOURCE_HOST}/team/app:1.0",
    "--dest-image": f"{DEST_HOST}/team/app:1.0",
    "--source-role-arn": "arn:aws:iam::123456789012:role/pull",
    "--dest-role-arn": "arn:aws:iam::210987654321:role/push",
    "--engine": "skopeo",
}
FLAGS = [
    *VALID,
    "--source-account",
    "--dest-account",
    "--source-region",
    "--dest-region",
    "--copier-image",
    "--init-image",
    "--on-conflict",
    "--tag",
    "--namespace",
    "--service-account",
    "--name",
    "--create-repository",
]
HOSTILE = st.one_of(
    st.sampled_from(
        ["$(touch /tmp/pwned)", "`id`", "; rm -rf /", "a\nb", "x\x00y", "\uff41pp", "\u202eevil", " ", ""]
    ),
    st.text(alphabet=st.sampled_from(list(";|&$()`<>*?[]{}!#~'\"\\ \n\t:/@.-_aZ09\u200b")), max_size=40),
    st.text(max_size=30),
    st.builds(lambda n: "x" * n, st.integers(min_value=5000, max_value=20000)),
)


def render(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(flag=st.sampled_from(FLAGS), value=HOSTILE, where=st.integers(min_value=0, max_value=60))
def test_hostile_flag_values_are_refused_or_only_data(
    flag: str, value: str, where: int, capsys: pytest.CaptureFixture[str]
) -> None:
    if "\x00" in value:
        value = value.replace("\x00", "")  # argv cannot carry NUL; the property below covers the rest
    inputs: dict[str, str] = dict(VALID)
    base = inputs.get(flag, "")
    inputs[flag] = base[:where] + value + base[where:] if base else value
    argv = ["render", "--output", "json"]
    for name, text in inputs.items():
        argv.append(f"{name}={text}")
    code, out, err = render(argv, capsys)
    if code != 0:
        assert code == 2
        assert out == ""
        assert "airflow-ecr-promote: error:" in err
        assert len(err.split("airflow-ecr-promote: error:", 1)[1]) < 2000
        return
    manifest: dict[str, Any] = json.loads(out)
    spec = manifest["spec"]["template"]["spec"]
    logins = script("login.sh")
    assert spec["initContainers"][0]["command"] in (
        ["sh", "-c", logins],
        ["sh", "-c", logins + script("repository.sh")],  # a --create-repository that parsed
    )
    assert spec["containers"][0]["command"] == ["sh", "-c", script("copy.sh")]
    for container in [*spec["initContainers"], *spec["containers"]]:
        for env in container.get("env") or []:
            assert "\x00" not in env["value"]
