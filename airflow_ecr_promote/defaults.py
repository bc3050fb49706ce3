"""Cluster-wide defaults from Airflow's configuration, section ``[ecr_promote]``.

Set once for a whole installation (``airflow.cfg`` or ``AIRFLOW__ECR_PROMOTE__<KEY>``), e.g. on a
cluster that admits only images from approved registries:

- ``default_engine``: the engine of tasks that pass none;
- ``init_image``: the login init container's image;
- ``<engine>_image`` (``kaniko_image``, ``skopeo_image``, ``crane_image``, ``regctl_image``): each
  copier's image;
- ``cosign_image``: the signature gate's image.

A task's own argument always wins; an unset option falls back to the pins in
:data:`airflow_ecr_promote.engines.ENGINES` and :data:`airflow_ecr_promote.pod.DEFAULT_INIT_IMAGE`.
A bad value is refused like a bad argument, naming the option.
"""

from __future__ import annotations

from airflow_ecr_promote.engines import DEFAULT_ENGINE, ENGINES, Engine, get_engine
from airflow_ecr_promote.pod import DEFAULT_INIT_IMAGE
from airflow_ecr_promote.refs import IMAGE_NAME, PromotionInputError

SECTION = "ecr_promote"


def _option(key: str) -> str | None:
    from airflow_ecr_promote.compat import conf

    value = conf.get(SECTION, key, fallback=None)
    return value.strip() if isinstance(value, str) and value.strip() else None


def option_name(key: str) -> str:
    return f"[{SECTION}] {key} (AIRFLOW__{SECTION.upper()}__{key.upper()})"


def engine(name: object) -> Engine:
    """The task's engine, or the configured default engine, or the built-in default."""
    if name is not None:
        return get_engine(name)
    configured = _option("default_engine")
    if configured is None:
        return ENGINES[DEFAULT_ENGINE]
    if configured not in ENGINES:
        raise PromotionInputError(
            option_name("default_engine"),
            configured,
            "is not a known engine",
            f"Expected one of {', '.join(map(repr, ENGINES))}, or unset for {DEFAULT_ENGINE!r}",
        )
    return ENGINES[configured]


def _image(key: str, builtin: str) -> str:
    configured = _option(key)
    if configured is None:
        return builtin
    if not IMAGE_NAME.fullmatch(configured):
        raise PromotionInputError(
            option_name(key),
            configured,
            "is not a container image reference (letters, digits and . _ : / @ - only)",
            f"Expected e.g. 'registry.example.com/mirror/{builtin.rsplit('/', 1)[-1]}', "
            f"or unset for {builtin!r}",
        )
    return configured


def copier_image(engine: Engine, given: str | None) -> str:
    """The task's copier image, or ``[ecr_promote] <engine>_image``, or the engine's pin."""
    return given if given is not None else _image(f"{engine.name}_image", engine.default_image)


def cosign_image(given: str | None) -> str:
    """The signature gate's image: the task's, or ``[ecr_promote] cosign_image``, or the pinned cosign."""
    from airflow_ecr_promote.signatures import COSIGN_IMAGE

    return given if given is not None else _image("cosign_image", COSIGN_IMAGE)


def init_image(given: str | None) -> str:
    """The task's init image, or ``[ecr_promote] init_image``, or the pinned AWS CLI image."""
    return given if given is not None else _image("init_image", DEFAULT_INIT_IMAGE)
