"""Building the Docker images of the runtimes in the catalogue, for the management commands.

``executions.runtime_images`` does the building and needs no Django settings (it runs as
``python -m executions.runtime_images``); this module picks the images from the ``Runtime``
rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from executions.models import Runtime

logger = logging.getLogger(__name__)


class RuntimeImageBuildFailed(Exception):
    """A runtime image could not be built; the message names it and says why."""


def runtime_images_build(
    *,
    images: Sequence[str] | None = None,
    mode: str = "auto",
    force: bool = False,
    log: Callable[[str], None] = logger.info,
) -> list[Any]:
    """Make sure the Docker image of each enabled runtime (or each of ``images``) exists.

    Returns what was done per image; raises ``RuntimeImageBuildFailed``.
    """
    from executions.runtime_images import RuntimeImageError, ensure_runtime_image

    runtimes = Runtime.objects.filter(enabled=True)
    if images:
        runtimes = Runtime.objects.filter(image__in=images)
        unknown = set(images) - set(runtimes.values_list("image", flat=True))
        if unknown:
            raise RuntimeImageBuildFailed(
                f"No runtime uses the image(s) {', '.join(sorted(unknown))}."
            )
    outcomes = []
    seen: set[str] = set()
    for runtime in runtimes.order_by("image"):
        if runtime.image in seen:
            continue
        seen.add(runtime.image)
        try:
            outcomes.append(
                ensure_runtime_image(
                    runtime.image, runtime=runtime.language, mode=mode, force=force, log=log
                )
            )
        except RuntimeImageError as exc:
            raise RuntimeImageBuildFailed(
                f"{runtime.image} (runtime {runtime.name}): {exc}"
            ) from exc
    return outcomes
