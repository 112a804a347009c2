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
    from executions.catalogue import IMAGES
    from executions.runtime_images import RuntimeImageError, ensure_images

    runtimes = Runtime.objects.filter(enabled=True)
    if images:
        runtimes = Runtime.objects.filter(image__in=images)
        unknown = set(images) - set(runtimes.values_list("image", flat=True))
        if unknown:
            raise RuntimeImageBuildFailed(
                f"No runtime uses the image(s) {', '.join(sorted(unknown))}."
            )
    by_tag = {image.tag: image.name for image in IMAGES.values()}
    tags = sorted(set(runtimes.values_list("image", flat=True)))
    foreign = [tag for tag in tags if tag not in by_tag]
    if foreign and images:
        raise RuntimeImageBuildFailed(
            f"{', '.join(foreign)}: not in the runtime catalogue; build it yourself."
        )
    for tag in foreign:
        log(f"{tag}: not in the runtime catalogue, so not built here.")
    try:
        return ensure_images(
            [by_tag[tag] for tag in tags if tag in by_tag], mode=mode, force=force, log=log
        )
    except RuntimeImageError as exc:
        raise RuntimeImageBuildFailed(str(exc)) from exc
