"""Hostile input: every string input of the operator is refused before any pod exists, with a
message that names it and says what is expected, or it reaches the pod only as an env value,
an exec argument or an image name; and the real in-pod scripts, run with hostile values in
every variable they read, never run an injected command and never write outside their volumes.

Properties are checked with hypothesis (``tests/strategies.py``), derandomized for CI. These
tests found, and now guard, seven defects: patterns whose ``$`` matched before a final newline,
``\\d`` matching non-ASCII digits, unpullable image names accepted, messages that grew with the
value, a password left behind when login.sh refused a later line, copy.sh not naming what it
refused, and registry error text that could forge a result line. An input found slipping
through again can be listed in ``KNOWN_GAPS`` with its example (the test then xfails on it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from airflow_ecr_promote.engines import ENGINES, get_engine, script
from airflow_ecr_promote.operators import EcrPromoteOperator
from airflow_ecr_promote.pod import DEFAULT_INIT_IMAGE, INIT_CONTAINER_NAME
from airflow_ecr_promote.refs import PromotionInputError, parse_image_ref, parse_role_arn, parse_tag
from tests.airflow_context import make_context
from tests.conftest import DEST_HOST, SOURCE_HOST, aws_cli, require
from tests.strategies import CANARY_TEMPLATES, corrupted, hostile_text

SOURCE = f"{SOURCE_HOST}/team/app:1.0"
DEST = f"{DEST_HOST}/team/app:1.0"
PULL = "arn:aws:iam::123456789012:role/ecr-promote-pull"
PUSH = "arn:aws:iam::210987654321:role/ecr-promote-push"
ENGINE_NAMES = tuple(ENGINES)
BATCH_ENGINES = tuple(name for name, engine in ENGINES.items() if engine.can_batch)


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def _event(text: str) -> None:
    """A hypothesis statistics event (``--hypothesis-show-statistics``), if inside a test."""
    with contextlib.suppress(InvalidArgument):
        event(text)


# ---------------------------------------------------------------------------------------------
# The operator: refused with a clear message, or harmless in the pod
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    """One string input: where it sits in the operator's arguments and what a valid value is."""

    param: str  # the name a PromotionInputError gives it; "{i}" is the list index
    valid: tuple[str, ...]
    form: str = "single"  # single | tags | promotions
    engines: tuple[str, ...] = ENGINE_NAMES

    @property
    def key(self) -> str:
        return self.param.rsplit(".", 1)[-1] if self.form == "promotions" else self.param


INPUTS = (
    Input("source_image", (SOURCE, f"{SOURCE}@sha256:{'a' * 64}")),
    Input("dest_image", (DEST,)),
    Input("source_role_arn", (PULL,)),
    Input("dest_role_arn", (PUSH,)),
    Input("source_account", ("123456789012",)),
    Input("dest_account", ("210987654321",)),
    Input("source_region", ("us-west-2",)),
    Input("dest_region", ("us-east-1",)),
    Input("engine", ENGINE_NAMES),
    Input("copier_image", ("quay.io/skopeo/stable:v1.20.0", "registry.local:5000/crane@sha256:" + "b" * 64)),
    Input("init_image", (DEFAULT_INIT_IMAGE,)),
    Input("on_conflict", ("fail", "overwrite", "skip")),
    Input("tags[{i}]", ("1.0", "1.1"), form="tags", engines=BATCH_ENGINES),
    Input("promotions[{i}].source_image", (SOURCE,), form="promotions", engines=BATCH_ENGINES),
    Input("promotions[{i}].dest_image", (DEST,), form="promotions", engines=BATCH_ENGINES),
    Input("promotions[{i}].source_role_arn", (PULL,), form="promotions", engines=BATCH_ENGINES),
    Input("promotions[{i}].dest_role_arn", (PUSH,), form="promotions", engines=BATCH_ENGINES),
)


def operator_kwargs(
    spec: Input, engine: str, index: int, value: object, full: bool = True
) -> tuple[str, dict[str, Any]]:
    """Valid arguments with ``value`` in the input under test (the optional ones too when
    ``full``); returns the name the input goes by in errors."""
    param = spec.param.format(i=index)
    if spec.form == "tags":
        tags: list[object] = ["1.0", "1.1"]
        tags[index] = value
        return param, {
            "source_image": f"{SOURCE_HOST}/team/app",
            "dest_image": f"{DEST_HOST}/team/app",
            "engine": engine,
            "tags": tags,
        }
    if spec.form == "promotions":
        pairs: list[dict[str, object]] = [
            {"source_image": SOURCE, "dest_image": DEST},
            {"source_image": f"{SOURCE_HOST}/team/app:1.1", "dest_image": f"{DEST_HOST}/team/app:1.1"},
        ]
        if full:
            for pair in pairs:
                pair.update(source_role_arn=PULL, dest_role_arn=PUSH)
        pairs[index][spec.key] = value
        return param, {"engine": engine, "promotions": pairs}
    kwargs: dict[str, Any] = {"source_image": SOURCE, "dest_image": DEST, "engine": engine}
    if full or param not in kwargs:
        kwargs.update(
            source_role_arn=PULL,
            dest_role_arn=PUSH,
            source_account="123456789012",
            dest_account="210987654321",
            source_region="us-west-2",
            dest_region="us-east-1",
            copier_image=ENGINES[engine].default_image,
            init_image=DEFAULT_INIT_IMAGE,
            on_conflict=ENGINES[engine].default_on_conflict,
        )
    if param == "engine":
        kwargs.update(copier_image=None, on_conflict=None)
    kwargs[param] = value
    return param, kwargs


def refuses_alone(param: str, value: object, engine: str) -> bool:
    """Whether the value is invalid on its own (then the error must name exactly this input).

    A value that is valid on its own (e.g. a tag with a character inserted) may still be
    refused because of another input (a region that now disagrees, a repeated tag): then any
    parameter may be named, with the same rules for the message.
    """
    key = param.rsplit(".", 1)[-1]
    try:
        if key.endswith("_image") and key not in ("copier_image", "init_image"):
            parse_image_ref(param, value, need_tag=key == "dest_image")
        elif key.endswith("_role_arn"):
            parse_role_arn(param, value)
        elif key.startswith("tags["):
            parse_tag(param, value)
        elif key == "engine":
            get_engine(value)
        elif key in ("source_account", "dest_account", "source_region", "dest_region"):
            return value not in ("", None, *(spec.valid[0] for spec in INPUTS if spec.param == key))
        elif key == "on_conflict":
            return value not in ("", None, *ENGINES[engine].on_conflict_choices)
    except PromotionInputError:
        return True
    return False


def assert_clear_refusal(error: PromotionInputError, param: str, value: object, engine: str) -> None:
    message = str(error)
    if refuses_alone(param, value, engine):
        assert error.param == param, f"the error names {error.param!r}, not {param!r}: {message[:300]}"
    assert message.startswith(f"{error.param}="), message[:300]
    assert len(message) < 600, f"{len(message)}-character message for a {len(str(value))}-character value"
    assert "Expected" in message or "Fix:" in message, message


_API = ApiClient()
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_REF = r"[0-9]{12}\.[a-z0-9.-]+/[a-z0-9._/-]+(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
# The lines login.sh and copy.sh read, in the strictest form the parsers can produce.
LOGIN_LINE = re.compile(
    r"[0-9]{12}\.[a-z0-9.-]+ [a-z]{2}(?:-[a-z]+){1,2}-[0-9]{1,2} "
    r"(?:-|arn:aws(?:-cn|-us-gov)?:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]+) (?:source|dest|source,dest)"
)
COPY_LINE = re.compile(rf"{_REF} {_REF}")
CHECK_LINE = re.compile(
    r"[0-9]+ [0-9]{12} [a-z]{2}(?:-[a-z]+){1,2}-[0-9]{1,2} [a-z0-9._/-]+ "
    r"image(?:Tag=[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|Digest=sha256:[a-f0-9]{64})"
)
MULTI_LINE_ENV = {"LOGINS": LOGIN_LINE, "COPIES": COPY_LINE, "CHECK_SOURCES": CHECK_LINE}


def _leaves(node: object, path: tuple[object, ...] = ()) -> Iterator[tuple[tuple[object, ...], str]]:
    if isinstance(node, dict):
        for key, child in node.items():
            yield (*path, "<key>"), str(key)
            yield from _leaves(child, (*path, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _leaves(child, (*path, index))
    elif isinstance(node, str):
        yield path, node


@cache
def _baseline(form: str, engine: str) -> str:
    """The serialized pod of valid inputs: text a hostile value may share without being placed."""
    spec = next(spec for spec in INPUTS if spec.form == form)
    _, kwargs = operator_kwargs(spec, engine, 0, spec.valid[0])
    return json.dumps(_API.sanitize_for_serialization(_pod(kwargs)))


def _pod(kwargs: dict[str, Any]) -> k8s.V1Pod:
    return EcrPromoteOperator(task_id="promote", **kwargs).build_pod_request_obj()


def assert_harmless_pod(pod: k8s.V1Pod, engine: str, form: str, value: str) -> None:
    """The scripts are the package's own, env values hold only strict lines, and the hostile
    value, if it is in the pod at all, is an env value, an exec argument or an image name."""
    init = next(c for c in pod.spec.init_containers if c.name == INIT_CONTAINER_NAME)
    copier = pod.spec.containers[0]
    assert init.command == ["sh", "-c", script("login.sh")]
    assert not init.args
    if engine == "kaniko":
        assert not copier.command
        assert all(_PRINTABLE.fullmatch(arg) and " " not in arg for arg in copier.args), copier.args
    else:
        shell = "/busybox/sh" if engine == "crane" else "sh"
        assert copier.command == [shell, "-c", script("copy.sh")]
        assert not copier.args
    for container in (init, copier):
        for env in container.env:
            assert "\x00" not in env.value, env.name
            pattern = MULTI_LINE_ENV.get(env.name)
            if pattern is None:
                assert _PRINTABLE.fullmatch(env.value), f"{env.name}={env.value[:200]!r}"
                continue
            for line in env.value.split("\n"):
                assert pattern.fullmatch(line), f"{env.name} line {line[:200]!r} is not strict"
    serialized = _API.sanitize_for_serialization(pod)
    distinctive = len(value) >= 6 and value not in _baseline(form, engine)
    for path, text in _leaves(serialized):
        if path[-1] == "image" or "command" in path or "env" in path:
            continue  # images: see the image tests; commands and env: checked above
        assert _PRINTABLE.fullmatch(text), f"{path}: {text[:200]!r}"
        if distinctive and value in text:
            placed = "args" in path or path[:2] == ("metadata", "annotations")
            assert placed, f"the hostile value reached {path}"


def check_literal(spec: Input, engine: str, index: int, value: str, full: bool) -> None:
    param, kwargs = operator_kwargs(spec, engine, index, value, full)
    try:
        pod = _pod(kwargs)  # construction checks literal values; building checks everything
    except PromotionInputError as error:
        _event(f"refused, naming {error.param.split('.')[-1]}")
        assert_clear_refusal(error, param, value, engine)
        return
    _event("accepted")
    assert_harmless_pod(pod, engine, spec.form, value)


# Inputs that slip through the parsers today: param -> (exact example, reason). The properties
# skip values of that kind (accepted alone, yet not printable ASCII) and then try the example:
# the test is an xfail while it slips through, and fails once it no longer does (remove it here).
KNOWN_GAPS: dict[str, tuple[str, str]] = {}


def in_known_gap(spec: Input, engine: str, index: int, value: str) -> bool:
    if spec.param not in KNOWN_GAPS or _PRINTABLE.fullmatch(value):
        return False
    if refuses_alone(spec.param.format(i=index), value, engine):
        return False
    _event("skipped: a known gap")
    return True


def expect_known_gap(spec: Input, check: Callable[[str, str], None]) -> None:
    """xfail with the gap's example while it still slips through; fail once it no longer does."""
    if spec.param not in KNOWN_GAPS:
        return
    value, reason = KNOWN_GAPS[spec.param]
    try:
        check(spec.engines[-1], value)
    except AssertionError as error:
        pytest.xfail(f"{spec.param}={value!r} slips through: {reason} ({str(error)[:200]})")
    pytest.fail(f"{spec.param}={value!r} no longer slips through: remove it from KNOWN_GAPS")


def _ids(spec: Input) -> str:
    return spec.param.replace("{i}", "i")


def run_property(spec: Input, examples: int, check: Callable[[Input, str, int, str, bool], None]) -> None:
    """``check`` over hostile variants of the input's valid values, then its known gap if any."""

    @_settings(examples)
    @given(
        engine=st.sampled_from(spec.engines),
        index=st.integers(0, 1),
        value=corrupted(st.sampled_from(spec.valid)),
        full=st.booleans(),
    )
    def run(engine: str, index: int, value: str, full: bool) -> None:
        if not in_known_gap(spec, engine, index, value):
            check(spec, engine, index, value, full)

    run()
    expect_known_gap(spec, lambda engine, value: check(spec, engine, 0, value, True))


@pytest.mark.parametrize("spec", INPUTS, ids=_ids)
def test_literal_hostile_input_is_refused_clearly_or_harmless(spec: Input) -> None:
    run_property(spec, 50, check_literal)


def _dag(params: dict[str, Any]) -> Any:
    try:
        from airflow.sdk import DAG
    except ImportError:  # Airflow 2.11
        from airflow import DAG  # type: ignore[assignment,no-redef]
    return DAG("hostile_inputs", schedule=None, params=params)


def _templated(kwargs: dict[str, Any], spec: Input, index: int) -> dict[str, Any]:
    """The same arguments, with the input under test replaced by ``{{ params.hostile }}``."""
    template = "{{ params.hostile }}"
    templated = {**kwargs}
    if spec.form == "tags":
        templated["tags"] = [template if i == index else tag for i, tag in enumerate(kwargs["tags"])]
    elif spec.form == "promotions":
        templated["promotions"] = [
            {**pair, spec.key: template} if i == index else pair
            for i, pair in enumerate(kwargs["promotions"])
        ]
    else:
        templated[spec.param] = template
    return templated


def _rendered(op: EcrPromoteOperator, spec: Input, index: int) -> object:
    if spec.form == "tags":
        return op.tags[index]  # type: ignore[index]
    if spec.form == "promotions":
        return op.promotions[index][spec.key]  # type: ignore[index]
    return getattr(op, spec.param)


def check_templated(spec: Input, engine: str, index: int, value: str, full: bool) -> None:
    """The value arrives through ``params`` and a template: refused after rendering, before
    KubernetesPodOperator asks for a pod (``get_or_create_pod`` is patched to record it)."""
    param, kwargs = operator_kwargs(spec, engine, index, spec.valid[0], full)
    with _dag({"hostile": value}):
        op = EcrPromoteOperator(task_id="promote", **_templated(kwargs, spec, index))
    context = make_context(op)
    op.render_template_fields(context)
    assert _rendered(op, spec, index) == value, "rendering must deliver the value unchanged"
    try:
        pod = op.build_pod_request_obj(context)
    except PromotionInputError as error:
        assert_clear_refusal(error, param, value, engine)
        with pytest.raises(PromotionInputError):
            op.execute(context)
        assert _CREATED == [], "a pod was requested for a refused input"
        return
    assert_harmless_pod(pod, engine, spec.form, value)


_CREATED: list[object] = []


@pytest.mark.parametrize("spec", INPUTS, ids=_ids)
def test_templated_hostile_input_is_refused_before_any_pod_or_harmless(
    spec: Input, monkeypatch: pytest.MonkeyPatch
) -> None:
    _CREATED.clear()
    monkeypatch.setattr(KubernetesPodOperator, "get_or_create_pod", lambda self, *a, **k: _CREATED.append(a))

    run_property(spec, 20, check_templated)


# ---------------------------------------------------------------------------------------------
# Image names: passed through only as the container's image; refused when they cannot be one
# ---------------------------------------------------------------------------------------------

_IMAGE_CHARS = re.compile(r"[A-Za-z0-9._:/@-]+")


@pytest.mark.parametrize("param", ["copier_image", "init_image"])
def test_accepted_image_names_reach_only_the_image_field(param: str) -> None:
    @_settings(40)
    @given(value=corrupted(st.sampled_from(("quay.io/skopeo/stable:v1.20.0", DEFAULT_INIT_IMAGE))))
    def run(value: str) -> None:
        _, kwargs = operator_kwargs(INPUTS[0], "skopeo", 0, SOURCE)
        try:
            pod = _pod({**kwargs, param: value})
        except PromotionInputError as error:
            assert_clear_refusal(error, param, value, "skopeo")
            return
        container = pod.spec.init_containers[-1] if param == "init_image" else pod.spec.containers[0]
        assert container.image == value
        others = [c.image for c in (*pod.spec.init_containers, *pod.spec.containers) if c is not container]
        assert value not in others or value in (DEFAULT_INIT_IMAGE, ENGINES["skopeo"].default_image)
        assert_harmless_pod(pod, "skopeo", "single", value)

    run()


@pytest.mark.parametrize("param", ["copier_image", "init_image"])
def test_image_names_that_cannot_be_pulled_are_refused(param: str) -> None:
    @_settings(25)
    @given(value=corrupted(st.sampled_from(("quay.io/skopeo/stable:v1.20.0", DEFAULT_INIT_IMAGE))))
    @example(value="quay.io/skopeo/stable:v1.20.0\n;touch /tmp/x")
    def run(value: str) -> None:
        if _IMAGE_CHARS.fullmatch(value):
            return  # may be a valid name: the registry decides
        _, kwargs = operator_kwargs(INPUTS[0], "skopeo", 0, SOURCE)
        with pytest.raises(PromotionInputError) as caught:
            _pod({**kwargs, param: value})
        assert_clear_refusal(caught.value, param, value, "skopeo")
        assert caught.value.param == param

    run()


# Refusals whose message grows with the value: param of the error, operator arguments.
_HUGE_ROLE = "arn:aws:iam::123456789012:role/" + "a/" * 50_000 + "pull"
_LONG_MESSAGES = [
    pytest.param(
        {
            "engine": "skopeo",
            "promotions": [{"source_image": SOURCE, "dest_image": DEST, "x" * 100_000: "y"}],
        },
        "promotions[0]",
        id="unknown-100k-key",
    ),
    pytest.param(
        {
            "engine": "kaniko",
            "source_image": SOURCE,
            "dest_image": f"{SOURCE_HOST}/prod/app:1.0",
            "source_role_arn": _HUGE_ROLE,
            "dest_role_arn": "arn:aws:iam::123456789012:role/push",
        },
        "source_role_arn",
        id="100k-role-in-engine-refusal",
    ),
    pytest.param(
        {
            "engine": "skopeo",
            "source_image": f"{SOURCE_HOST}/team/app",
            "dest_image": f"{DEST_HOST}/team/app",
            "tags": ["1.0", "x" * 100_000],
        },
        "tags[1]",
        id="100k-tag",
    ),
    pytest.param(
        {"engine": "skopeo", "promotions": [{"source_image": SOURCE, "dest_image": "x" * 100_000}]},
        "promotions[0].dest_image",
        id="100k-pair-image",
    ),
]


@pytest.mark.parametrize(("kwargs", "param"), _LONG_MESSAGES)
def test_refusals_of_huge_values_stay_short(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(PromotionInputError) as caught:
        EcrPromoteOperator(task_id="promote", **kwargs)
    assert caught.value.param == param
    assert len(str(caught.value)) < 600


# ---------------------------------------------------------------------------------------------
# The in-pod scripts, run for real with hostile values in every variable they read
# ---------------------------------------------------------------------------------------------

SANDBOX = Path(tempfile.gettempdir()) / f"ecr-promote-hostile-{os.getpid()}"
CANARIES = (str(SANDBOX / "CANARY"), "CANARY")  # an absolute path, and one relative to the cwd
_ENV_BYTES = 100_000  # one env string may hold at most 128 KiB (MAX_ARG_STRLEN)


def _fit(value: str) -> str:
    """Hostile text as the pod's environment can carry it: no NUL, at most ~100 kB."""
    value = value.replace("\x00", "")
    while len(value.encode("utf-8", "surrogateescape")) > _ENV_BYTES:
        value = value[: len(value) * 3 // 4]
    return value


def _hostile(valid: str | st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        corrupted(valid, CANARIES, nul=False, newlines=False),
        hostile_text(CANARIES, nul=False, newlines=False),
        st.builds(
            lambda template, canary: template.format(canary=canary),
            st.sampled_from(CANARY_TEMPLATES),
            st.sampled_from(CANARIES),
        ),
    ).map(_fit)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


@dataclass
class Sandbox:
    """A fresh directory tree for one run: the volumes the script may write, an empty cwd, and
    recorders for the programs it calls."""

    root: Path = SANDBOX
    files_before: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        for name in ("auth", "scratch", "cwd", "bin", "calls"):
            (self.root / name).mkdir(parents=True)

    auth = property(lambda self: self.root / "auth")
    scratch = property(lambda self: self.root / "scratch")  # HOME and TMPDIR, like the pod's /tmp
    cwd = property(lambda self: self.root / "cwd")
    bin = property(lambda self: self.root / "bin")
    calls = property(lambda self: self.root / "calls")
    term = property(lambda self: self.root / "termination-log")

    def outside_volumes(self) -> set[str]:
        found = set()
        for path in self.root.rglob("*"):
            relative = path.relative_to(self.root)
            if relative.parts[0] in ("auth", "scratch", "calls") and len(relative.parts) > 1:
                continue
            if relative.parts != ("termination-log",):
                found.add(str(relative))
        return found

    def stub(self, name: str, body: str) -> None:
        """A program that records its argv (one file per call, NUL-separated) and runs ``body``."""
        path = self.bin / name
        path.write_text(
            f"#!/bin/sh\nf=$(mktemp '{self.calls}/{name}.XXXXXX') && printf '%s\\0' \"$@\" > \"$f\"\n" + body
        )
        path.chmod(0o755)

    def recorded(self, name: str) -> list[list[str]]:
        return [_text(path.read_bytes()).split("\0")[:-1] for path in sorted(self.calls.glob(f"{name}.*"))]

    def run(self, script_name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        self.files_before = self.outside_volumes()
        full_env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(self.scratch),
            "TMPDIR": str(self.scratch),
            "TERMINATION_LOG": str(self.term),
            **env,
        }
        done = subprocess.run(
            ["sh", "-c", script(script_name)],
            env=full_env,
            cwd=self.cwd,
            capture_output=True,
            timeout=120,
        )
        self.assert_contained()
        # Decoded by hand: text=True would turn a hostile "\r" into "\n".
        return subprocess.CompletedProcess(done.args, done.returncode, _text(done.stdout), _text(done.stderr))

    def assert_contained(self) -> None:
        assert not [p for p in self.root.rglob("*") if "CANARY" in p.name], "an injected command ran"
        assert list(self.cwd.iterdir()) == [], "the script wrote to its working directory"
        assert self.outside_volumes() == self.files_before, "the script wrote outside its volumes"


@pytest.fixture(scope="module", autouse=True)
def _remove_sandbox() -> Iterator[None]:
    yield
    shutil.rmtree(SANDBOX, ignore_errors=True)


def sh_read(line: str, count: int) -> list[str]:
    """POSIX ``read -r a b ...`` with the default IFS: split on spaces and tabs, rest to the last."""
    rest = line.strip(" \t")
    fields = []
    for _ in range(count - 1):
        word = re.match(r"[^ \t]*", rest).group()  # type: ignore[union-attr]
        fields.append(word)
        rest = rest[len(word) :].lstrip(" \t")
    return [*fields, rest]


# login.sh ------------------------------------------------------------------------------------

_LOGIN_OK = re.compile(r"[A-Za-z0-9:/_+=,.@-]+")
_LOGIN_LINES = (
    f"{SOURCE_HOST} us-west-2 - source",
    f"{DEST_HOST} us-east-1 - dest",
    f"{SOURCE_HOST} us-west-2 {PULL} source",
    f"{DEST_HOST} us-east-1 - source,dest",
)
LOGIN_VARS = ("LOGINS", "ROLE_SESSION_NAME", "SOURCE_IMAGE", "WRITE_CONFIG")


@st.composite
def _some_of(draw: st.DrawFn, names: tuple[str, ...], often: str) -> set[str]:
    """Which variables get hostile values: ``often`` in 3 of 4 examples, each other in 1 of 4
    (every one of them at once now and then), at least one."""
    chosen = {name for name in names if draw(st.integers(0, 3)) < (3 if name == often else 1)}
    return chosen or {often}


@st.composite
def login_envs(draw: st.DrawFn) -> dict[str, str]:
    lines = draw(
        st.lists(
            st.sampled_from(_LOGIN_LINES[:2]) | st.sampled_from(_LOGIN_LINES),
            min_size=1,
            max_size=2,
            unique=True,
        )
    )
    hostile = draw(_some_of(LOGIN_VARS, often="LOGINS"))
    env = {
        "LOGINS": "\n".join(lines),
        "ROLE_SESSION_NAME": "ecr-promote-dag-promote",
        "WRITE_CONFIG": draw(st.sampled_from(("0", "1"))),
    }
    if draw(st.booleans()):
        env["SOURCE_IMAGE"] = SOURCE
    if "LOGINS" in hostile:
        how = draw(st.sampled_from(("corrupt", "extra line", "field")))
        if how == "corrupt":
            env["LOGINS"] = draw(_hostile(env["LOGINS"]))
        elif how == "extra line":
            position = draw(st.integers(0, len(lines)))
            extra = draw(_hostile(st.sampled_from(_LOGIN_LINES)))
            env["LOGINS"] = "\n".join([*lines[:position], extra, *lines[position:]])
        else:
            words = lines[0].split(" ")
            spot = draw(st.integers(0, 3))
            words[spot] = draw(_hostile(words[spot]))
            env["LOGINS"] = "\n".join([" ".join(words), *lines[1:]])
    for name in ("ROLE_SESSION_NAME", "WRITE_CONFIG", "SOURCE_IMAGE"):
        if name in hostile:
            env[name] = draw(_hostile(env.get(name, SOURCE)))
    return env


def _expected_login(env: dict[str, str]) -> tuple[tuple[str, str] | None, list[list[str]]]:
    """What login.sh must refuse first (variable, value) and the login lines it accepts before."""
    accepted: list[list[str]] = []
    if not _LOGIN_OK.fullmatch(env["ROLE_SESSION_NAME"]):
        return ("ROLE_SESSION_NAME", env["ROLE_SESSION_NAME"]), accepted
    for line in env["LOGINS"].split("\n"):
        fields = sh_read(line, 4)
        if not fields[0]:
            continue
        for name, value in zip(("host", "region", "role", "sides"), fields, strict=True):
            if not _LOGIN_OK.fullmatch(value):
                return (name, value), accepted
        accepted.append(fields)
    return None, accepted


_ALL_AT_ONCE = [
    {
        "LOGINS": f"{SOURCE_HOST} us-west-2 - source\n{template.format(canary=canary)}",
        "ROLE_SESSION_NAME": template.format(canary=canary),
        "SOURCE_IMAGE": template.format(canary=canary),
        "WRITE_CONFIG": template.format(canary=canary),
    }
    for template in CANARY_TEMPLATES[:6]
    for canary in CANARIES[:1]
] + [
    {
        "LOGINS": " ".join(
            word + template.format(canary=CANARIES[1]) if i == spot else word
            for i, word in enumerate(f"{SOURCE_HOST} us-west-2 - source".split(" "))
        ),
        "ROLE_SESSION_NAME": "ecr-promote-dag-promote",
        "WRITE_CONFIG": "1",
    }
    for template in CANARY_TEMPLATES[:8]
    for spot in (0, 3)
]


@pytest.mark.moto
def test_login_script_never_runs_or_spreads_hostile_values(moto_server: str) -> None:
    cli = aws_cli()
    require(cli, "no aws CLI that honours AWS_ENDPOINT_URL: run 'make venv' (.venv-awscli)")

    @_settings(30)
    @given(env=login_envs())
    def run(env: dict[str, str]) -> None:
        box = Sandbox()
        box.stub("aws", f"exec '{cli}' \"$@\"\n")  # the real CLI, with its argv recorded
        done = box.run(
            "login.sh",
            {
                "AWS_ENDPOINT_URL": moto_server,
                "AWS_ACCESS_KEY_ID": "pod-identity-key",
                "AWS_SECRET_ACCESS_KEY": "pod-identity-secret",
                "AWS_PAGER": "",
                "AUTH_DIR": str(box.auth),
                **env,
            },
        )
        refused, accepted = _expected_login(env)
        _event(f"login.sh: refused {refused[0]}" if refused else f"login.sh: exit {done.returncode}")
        regions = {fields[1] for fields in accepted}
        roles = {fields[2] for fields in accepted}
        for argv in box.recorded("aws"):
            if argv[:2] == ["ecr", "get-login-password"]:
                assert argv[2:] == ["--region", argv[3]] and argv[3] in regions, argv
            else:
                assert argv[:2] == ["sts", "assume-role"], argv
                assert argv[2] == "--region" and argv[3] in regions, argv
                assert argv[4] == "--role-arn" and argv[5] in roles, argv
                assert argv[6:8] == ["--role-session-name", env["ROLE_SESSION_NAME"]], argv
        if refused is not None:
            name, value = refused
            message = f"ecr-promote login: refusing {name} value '{value}': unexpected characters\n"
            assert done.returncode == 1, done.stderr[-2000:]
            assert message in done.stderr
            assert _text(box.term.read_bytes()) == message
            return
        assert "refusing" not in done.stderr or "SOURCE_IMAGE" in done.stderr, done.stderr[-2000:]
        source_image = env.get("SOURCE_IMAGE", "")
        if done.returncode == 0:
            assert not source_image or _LOGIN_OK.fullmatch(source_image), "SOURCE_IMAGE was not checked"
            if source_image:
                assert (box.auth / "Dockerfile").read_text() == f"FROM {source_image}\n"
            assert {".pw", ".err", ".host"}.isdisjoint(p.name.split("-")[0] for p in box.auth.iterdir())
        else:
            assert "ecr-promote login: " in done.stderr
            refused_image = f"refusing SOURCE_IMAGE value '{source_image}'" in done.stderr
            assert refused_image or "cannot " in done.stderr, done.stderr[-2000:]

    for env in _ALL_AT_ONCE:
        run = example(env=env)(run)
    run()


@pytest.mark.moto
def test_login_refusal_leaves_no_password_behind(moto_server: str) -> None:
    cli = aws_cli()
    require(cli, "no aws CLI that honours AWS_ENDPOINT_URL: run 'make venv' (.venv-awscli)")
    box = Sandbox()
    box.stub("aws", f"exec '{cli}' \"$@\"\n")
    done = box.run(
        "login.sh",
        {
            "AWS_ENDPOINT_URL": moto_server,
            "AWS_ACCESS_KEY_ID": "pod-identity-key",
            "AWS_SECRET_ACCESS_KEY": "pod-identity-secret",
            "AUTH_DIR": str(box.auth),
            "ROLE_SESSION_NAME": "ecr-promote-dag-promote",
            "LOGINS": f"{SOURCE_HOST} us-west-2 {PULL} source\n{DEST_HOST};touch us-east-1 - dest",
        },
    )
    assert done.returncode == 1
    assert "refusing host value" in done.stderr
    assert sorted(path.name for path in box.auth.iterdir()) == []


# copy.sh -------------------------------------------------------------------------------------

_REF_OK = re.compile(r"[A-Za-z0-9:/_.@-]+")
_SOURCE_DIGEST = "sha256:" + "a" * 64
_OTHER_DIGEST = "sha256:" + "b" * 64
_COPY_LINES = (
    f"{SOURCE} {DEST}",
    f"{SOURCE_HOST}/team/app:1.1 {DEST_HOST}/team/app:1.1",  # the destination holds another digest
    f"{SOURCE_HOST}/team/app@sha256:{'c' * 64} {DEST_HOST}/prod/app:2",
    "1.2",  # a tag of the batch: $SOURCE_REPO:1.2 -> $DEST_REPO:1.2
)
COPY_VARS = (
    "COPIES", "ON_CONFLICT", "PARALLEL", "RETRIES", "COPY_TOOL", "SRC_AUTH", "DEST_AUTH",
    "COPY_CHUNKS", "SOURCE_REPO", "DEST_REPO",
)  # fmt: skip


def _copier_stubs(box: Sandbox) -> None:
    """skopeo and crane that answer like a registry holding the sources (and :1.1 at the
    destination with another digest) and record every call."""
    box.stub(
        "skopeo",
        'for last; do :; done\ncase "$1" in\n'
        "inspect)\n"
        '    case "$last" in\n'
        f"        docker://{SOURCE_HOST}/*) printf '{{\"source\":1}}' ;;\n"
        f"        docker://{DEST_HOST}/*:1.1) printf '{{\"other\":1}}' ;;\n"
        "        *) echo 'manifest unknown' >&2; exit 1 ;;\n"
        "    esac ;;\n"
        "copy)\n"
        "    while [ $# -gt 0 ]; do\n"
        f'        [ "$1" != --digestfile ] || printf %s {_SOURCE_DIGEST} > "$2"\n'
        "        shift\n"
        "    done ;;\n"
        "esac\n",
    )
    box.stub(
        "crane",
        'case "$1" in\n'
        "digest)\n"
        '    case "$2" in\n'
        f"        {SOURCE_HOST}/*) echo {_SOURCE_DIGEST} ;;\n"
        f"        {DEST_HOST}/*:1.1) echo {_OTHER_DIGEST} ;;\n"
        f"        *) if grep -qxF -- \"$2\" '{box.calls}/copied' 2>/dev/null; then echo {_SOURCE_DIGEST};\n"
        "           else echo 'MANIFEST_UNKNOWN: manifest unknown' >&2; exit 1; fi ;;\n"
        "    esac ;;\n"
        f"copy) printf '%s\\n' \"$3\" >> '{box.calls}/copied' ;;\n"
        "esac\n",
    )


@st.composite
def copy_envs(draw: st.DrawFn) -> dict[str, str]:
    lines = draw(st.lists(st.sampled_from(_COPY_LINES), min_size=1, max_size=3, unique=True))
    env = {
        "COPY_TOOL": draw(st.sampled_from(("skopeo", "crane"))),
        "COPIES": "\n".join(lines),
        "ON_CONFLICT": draw(st.sampled_from(("fail", "overwrite", "skip"))),
        "PARALLEL": draw(st.sampled_from(("1", "4"))),
        "RETRIES": "3",
        "SRC_AUTH": "/ecr-promote/auth/auth-source.json",
        "DEST_AUTH": "/ecr-promote/auth/auth-dest.json",
        "COPY_CHUNKS": "1",
        "SOURCE_REPO": f"{SOURCE_HOST}/team/app",
        "DEST_REPO": f"{DEST_HOST}/team/app",
    }
    for name in draw(_some_of(COPY_VARS, often="COPIES")):
        if name == "COPIES" and draw(st.booleans()):
            position = draw(st.integers(0, len(lines)))
            extra = draw(_hostile(st.sampled_from(_COPY_LINES)))
            env["COPIES"] = "\n".join([*lines[:position], extra, *lines[position:]])
        else:
            env[name] = draw(_hostile(env[name]))
    return env


def _ref_ok(ref: str) -> bool:
    return bool(_REF_OK.fullmatch(ref)) and not ref.startswith("-")


def _copy_lines(env: dict[str, str]) -> list[tuple[str, str, bool]]:
    """The copies copy.sh reads (``read -r src dst``; a tag alone names a copy between
    SOURCE_REPO and DEST_REPO when both are well formed) and whether it may pass them on."""
    repos = (env.get("SOURCE_REPO", ""), env.get("DEST_REPO", ""))
    found = []
    for line in env["COPIES"].split("\n"):
        src, dst = sh_read(line, 2)
        if src and not dst and all(_ref_ok(repo) for repo in repos):
            src, dst = f"{repos[0]}:{src}", f"{repos[1]}:{src}"
        if src:
            ok = all(_REF_OK.fullmatch(ref) and not ref.startswith("-") for ref in (src, dst))
            found.append((src, dst, ok))
    return found


_COPY_ALL_AT_ONCE = [
    {name: template.format(canary=CANARIES[0]) for name in COPY_VARS}
    | {"COPY_TOOL": tool, "COPIES": f"{_COPY_LINES[0]}\n{template.format(canary=CANARIES[1])} {DEST}"}
    | {"COPY_CHUNKS": "1"}
    for template in CANARY_TEMPLATES[:6]
    for tool in ("skopeo", "crane")
]


@_settings(100)
@given(env=copy_envs())
@example(  # found by CI: "00" workers started none, so copies after the first had no result
    env={
        "COPY_TOOL": "skopeo",
        "COPIES": f"0\n{_COPY_LINES[0]}",
        "ON_CONFLICT": "0",
        "PARALLEL": "00",
        "RETRIES": "3",
        "SRC_AUTH": "0",
        "DEST_AUTH": "/ecr-promote/auth/auth-dest.json",
        "COPY_CHUNKS": "1",
        "SOURCE_REPO": f"{SOURCE_HOST}/team/app",
        "DEST_REPO": f"{DEST_HOST}/team/app",
    }
)
def test_copy_script_passes_each_reference_whole_or_refuses_it(env: dict[str, str]) -> None:
    box = Sandbox()
    _copier_stubs(box)
    done = box.run("copy.sh", {"DOCKER_CONFIG": str(box.auth), **env})
    assert list(box.scratch.iterdir()) == [], "the script's work directory is left behind"
    chunks = env["COPY_CHUNKS"]
    if not (chunks.isascii() and chunks.isdigit() and len(chunks) <= 4 and chunks != "0"):
        assert done.returncode == 1
        assert "refusing COPY_CHUNKS" in done.stderr
        assert (done.stdout, box.recorded("skopeo"), box.recorded("crane")) == ("", [], [])
        return
    copies = _copy_lines(env)
    passed = [(src, dst) for src, dst, ok in copies if ok]
    tool = env["COPY_TOOL"]
    _event(f"copy.sh: {len(passed)} of {len(copies)} copies passed on, tool {tool[:10]!r}")
    calls = {name: box.recorded(name) for name in ("skopeo", "crane")}
    if tool not in ("skopeo", "crane"):
        assert calls == {"skopeo": [], "crane": []}
        if passed:
            assert f"unknown COPY_TOOL '{tool}'" in done.stderr
    else:
        assert calls["crane" if tool == "skopeo" else "skopeo"] == []
        sources, dests = {src for src, _ in passed}, {dst for _, dst in passed}
        # RETRIES is copy.sh's own loop (for every tool), never a tool's flag
        src_auth, dest_auth = env["SRC_AUTH"], env["DEST_AUTH"]
        repos = {dst.rsplit(":", 1)[0] for dst in dests}
        for argv in calls[tool]:
            if tool == "crane" and argv[0] == "ls":
                assert len(argv) == 2 and argv[1] in repos, argv
            elif argv[0] == "list-tags":
                assert argv[1:3] == ["--authfile", dest_auth] and len(argv) == 4, argv
                assert argv[3].removeprefix("docker://") in repos, argv
            elif tool == "crane" and argv[0] == "digest":
                assert len(argv) == 2 and argv[1] in sources | dests, argv
            elif tool == "crane":
                assert len(argv) == 3 and argv[0] == "copy" and (argv[1], argv[2]) in passed, argv
            elif argv[0] == "inspect":
                assert argv[:2] == ["inspect", "--raw"], argv
                assert argv[2] == "--authfile" and len(argv) == 5, argv
                assert argv[4].startswith("docker://"), argv
                ref = argv[4].removeprefix("docker://")
                read_as_source = argv[3] == src_auth and ref in sources
                assert read_as_source or (argv[3] == dest_auth and ref in dests), argv
            else:
                assert argv[:8] == [
                    "copy", "--debug", "--all", "--preserve-digests",
                    "--src-authfile", src_auth, "--dest-authfile", dest_auth,
                ], argv  # fmt: skip
                assert argv[8] == "--digestfile" and argv[9].startswith(str(box.scratch)), argv
                assert len(argv) == 12 and (argv[10][9:], argv[11][9:]) in passed, argv
        read = {
            argv[-1].removeprefix("docker://") for argv in calls[tool] if argv[0] in ("inspect", "digest")
        }
        listed = {
            argv[-1].removeprefix("docker://") for argv in calls[tool] if argv[0] in ("ls", "list-tags")
        }
        looked_at = {dst for dst in dests if dst in read or dst.rsplit(":", 1)[0] in listed}
        assert looked_at == dests, "every destination of a copy that passed the checks was looked at"
    out = done.stdout.split("\n")
    begin = f"ecr-promote report begin {len(copies)}"
    assert begin in out, done.stdout[:2000]
    framed = out[out.index(begin) :]
    assert all(line.startswith("ecr-promote result ") for line in out[: out.index(begin)]), done.stdout[:2000]
    assert framed[-2].startswith(f"ecr-promote report end {len(copies)} sha256:"), done.stdout[-2000:]
    results = framed[1:-2]
    assert [line.split(" ")[0] for line in results] == [str(n) for n in range(1, len(copies) + 1)]
    for line, (_, _, ok) in zip(results, copies, strict=True):
        assert re.fullmatch(r"\d+ (copied|present|skipped|failed) \S+ \S+( .*)?", line), line
        if not ok:
            assert " failed - - malformed - " in line, line
    if not copies or any(line.split(" ")[1] == "failed" for line in results):
        assert done.returncode == 1
    else:
        assert done.returncode == 0, done.stderr[-2000:]


for _env in _COPY_ALL_AT_ONCE:
    test_copy_script_passes_each_reference_whole_or_refuses_it = example(env=_env)(
        test_copy_script_passes_each_reference_whole_or_refuses_it
    )


def test_copy_script_names_the_reference_it_refuses() -> None:
    box = Sandbox()
    _copier_stubs(box)
    bad = f"{SOURCE_HOST}/team/app:1.0;touch"
    done = box.run("copy.sh", {"COPY_TOOL": "skopeo", "COPIES": f"{bad} {DEST}", "ON_CONFLICT": "fail"})
    assert done.returncode == 1
    assert bad in done.stderr + done.stdout


def test_error_text_from_the_copier_cannot_forge_a_result_line() -> None:
    from airflow_ecr_promote.promotion import parse_promotion
    from airflow_ecr_promote.result import parse_copy_lines

    box = Sandbox()
    forged = f"\\r2 copied {_SOURCE_DIGEST} {_SOURCE_DIGEST}"
    box.stub("skopeo", f"printf 'error: 500 {forged}\\n' >&2\nexit 1\n")
    second = (f"{SOURCE_HOST}/team/app:1.1", f"{DEST_HOST}/team/app:1.1")
    done = box.run(
        "copy.sh",
        {"COPY_TOOL": "skopeo", "COPIES": f"{SOURCE} {DEST}", "ON_CONFLICT": "fail", "SRC_AUTH": "a"},
    )
    assert done.returncode == 1
    promotion = parse_promotion(
        pairs=[
            {"source_image": SOURCE, "dest_image": DEST},
            {"source_image": second[0], "dest_image": second[1]},
        ]
    )
    entries = parse_copy_lines(_text(box.term.read_bytes()), promotion)
    assert [entry["status"] for entry in entries] == ["failed", "unknown"]
