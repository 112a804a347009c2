from typing import Any

from django.core.management.base import BaseCommand, CommandError

from executions import services


class Command(BaseCommand):
    help = (
        "Build the Docker image of every enabled runtime (or of --image) on the local engine, "
        "from the runtime catalogue: offline from Debian root filesystems (debootstrap), or "
        "from Dockerfiles without debootstrap. Current images are kept unless --force."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--image", action="append", help="Build only this image (repeatable).")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--online", dest="mode", action="store_const", const="online")
        mode.add_argument("--offline", dest="mode", action="store_const", const="offline")
        parser.add_argument("--force", action="store_true", help="Rebuild images that exist.")

    def handle(
        self, *args: Any, image: list[str] | None, mode: str | None, force: bool, **options: Any
    ) -> None:
        try:
            outcomes = services.runtime_images_build(
                images=image, mode=mode or "auto", force=force, log=self.stdout.write
            )
        except services.RuntimeImageBuildFailed as exc:
            raise CommandError(str(exc)) from exc
        for outcome in outcomes:
            self.stdout.write(self.style.SUCCESS(str(outcome)))
