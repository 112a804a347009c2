"""Finding the execution backend: by name, by dotted path, or chosen automatically.

Like ``django.core.mail.get_connection``: a backend is a class loaded with ``import_string``,
so a backend's SDK is imported only when that backend is used.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from executions import environment
from executions.conf import execution_settings
from sandbox.contract import ExecutionBackend
from sandbox.options import OptionError

logger = logging.getLogger(__name__)

BACKENDS = {
    "disabled": "executions.backends.disabled.DisabledBackend",
    "docker": "sandbox.docker.DockerBackend",
    "fake": "executions.backends.fake.FakeBackend",
    "kubernetes": "executions.backends.kubernetes.KubernetesBackend",
    "remote": "executions.backends.remote.RemoteBackend",
}

# Tried in order when no backend is configured and the platform is not in a container.
AUTO_CANDIDATES: tuple[str, ...] = ("docker",)


@dataclass(frozen=True)
class Selection:
    """Which backend runs code, and why it was chosen. Shown in admin and on the security page."""

    name: str
    reason: str
    configured: bool


def backend_class(name: str) -> type[ExecutionBackend]:
    path = BACKENDS.get(name, name)
    if "." not in path:
        known = ", ".join(sorted(BACKENDS))
        raise ImproperlyConfigured(
            f"EXECUTION_BACKEND {name!r} is not a known backend ({known}) or a dotted path."
        )
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"EXECUTION_BACKEND {name!r} could not be imported from {path!r}: {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, ExecutionBackend)):
        raise ImproperlyConfigured(f"EXECUTION_BACKEND {path!r} is not an ExecutionBackend.")
    return cls


def select_backend() -> Selection:
    """Apply the selection rules of the design: configured, else disabled in a container,
    else the first real backend that works here, else disabled."""
    configured = execution_settings.BACKEND
    if configured:
        return Selection(configured, "Configured by EXECUTION_BACKEND.", configured=True)
    evidence = environment.container_evidence()
    if evidence:
        return Selection(
            "disabled",
            f"The platform runs inside a container ({evidence}).",
            configured=False,
        )
    for name in AUTO_CANDIDATES:
        try:
            health = get_backend(name).health()
        except ImproperlyConfigured as exc:
            logger.info("Backend %s is not usable here: %s", name, exc)
            continue
        if health.ok:
            return Selection(name, f"Auto-detected: {health.detail}", configured=False)
        logger.info("Backend %s is not usable here: %s", name, health.detail)
    return Selection(
        "disabled",
        "No execution backend is available on this machine (no Docker engine answered).",
        configured=False,
    )


@functools.cache
def _selection() -> Selection:
    return select_backend()


def active_selection() -> Selection:
    """The selection for this process, made once; ``reset`` clears it (tests, settings changes)."""
    return _selection()


def get_backend(name: str | None = None) -> ExecutionBackend:
    """An instance of the backend called ``name`` (default: the active one)."""
    selection = active_selection() if name is None or name == "disabled" else None
    name = name or selection.name  # type: ignore[union-attr]
    options = dict(execution_settings.BACKEND_OPTIONS.get(name, {}))
    if name == "disabled" and selection is not None and selection.name == "disabled":
        # The refusal repeats why execution is off here, so a refused run explains itself.
        options.setdefault("reason", selection.reason)
    return _instance(name, tuple(sorted(options.items())))


@functools.cache
def _instance(name: str, options: tuple[tuple[str, object], ...]) -> ExecutionBackend:
    """The backend ``name`` built from ``options``; a bad option is ``ImproperlyConfigured``
    naming the backend and the option's key in ``EXECUTIONS["BACKEND_OPTIONS"]``."""
    cls = backend_class(name)
    try:
        return cls(**dict(options))
    except OptionError as exc:
        raise ImproperlyConfigured(
            f"EXECUTIONS['BACKEND_OPTIONS'][{name!r}][{exc.option!r}]: {exc}"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"EXECUTIONS['BACKEND_OPTIONS'][{name!r}]: {exc}") from exc


def reset() -> None:
    _selection.cache_clear()
    _instance.cache_clear()


@receiver(setting_changed)
def _reset_on_settings_change(*, setting: str, **kwargs: object) -> None:
    if setting == "EXECUTIONS":
        reset()
