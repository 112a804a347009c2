import statistics
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from executions import catalogue, services
from executions.catalogue import Entry
from executions.models import Runtime


class Command(BaseCommand):
    help = (
        "Seed the runtime catalogue's entries as runtimes (idempotent), and optionally build "
        "their images first (--build) and self-test them after (--self-test). Pick entries "
        "by name, by --tier N (tier N and below) or --all; with none, tier 1. With "
        "--self-test the command fails when a runtime failed."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("names", nargs="*", help="Catalogue entry names.")
        parser.add_argument("--tier", type=int, help="Every entry of this tier and below.")
        parser.add_argument("--all", action="store_true", help="Every entry.")
        parser.add_argument("--build", action="store_true", help="Build the images first.")
        parser.add_argument("--self-test", action="store_true", help="Self-test each runtime.")
        parser.add_argument(
            "--hello",
            type=int,
            default=0,
            metavar="N",
            help="Also run each hello-world N times and report the median seconds.",
        )
        parser.add_argument("--jobs", type=int, default=2, help="Images built at once.")
        parser.add_argument("--force", action="store_true", help="Rebuild current images too.")
        parser.add_argument(
            "--markdown",
            action="store_true",
            help="End with a Markdown table of every entry: build, size, self-test, hello.",
        )
        parser.add_argument("--list", action="store_true", help="List the catalogue and stop.")

    def handle(self, *args: Any, **options: Any) -> None:
        entries = self._entries(options["names"], options["tier"], options["all"])
        self.builds: dict[str, Any] = {}
        self.results: dict[str, tuple[str, str, str]] = {}
        if options["list"]:
            for entry in entries:
                self.stdout.write(
                    f"{entry.name:24} tier {entry.tier}  {entry.display_name:40} "
                    f"{catalogue.IMAGES[entry.image].tag}"
                )
            return
        if options["build"]:
            self._build(entries, options["jobs"], options["force"])
        for outcome in services.runtimes_sync(entries):
            if outcome.action != "unchanged":
                self.stdout.write(f"{outcome.runtime.name}: {outcome.action}")
        try:
            if options["self_test"] or options["hello"]:
                self._self_test(entries, options["hello"])
        finally:
            if options["markdown"]:
                self._markdown(entries)

    def _entries(self, names: list[str], tier: int | None, every: bool) -> list[Entry]:
        if names:
            unknown = [name for name in names if name not in catalogue.ENTRY_BY_NAME]
            if unknown:
                raise CommandError(f"Not in the catalogue: {', '.join(unknown)}.")
            return [catalogue.ENTRY_BY_NAME[name] for name in names]
        tier = None if every else (tier or 1)
        return [entry for entry in catalogue.ENTRIES if tier is None or entry.tier <= tier]

    def _build(self, entries: list[Entry], jobs: int, force: bool) -> None:
        from executions.runtime_images import RuntimeImageError, ensure_images

        try:
            outcomes = ensure_images(
                [entry.image for entry in entries], jobs=jobs, force=force, log=self.stdout.write
            )
        except RuntimeImageError as exc:
            # The images that did build are kept; their runtimes are still seeded and
            # tested, and the others fail their self-test with the engine's reason.
            self.stderr.write(self.style.ERROR(f"Some images did not build: {exc}"))
            return
        for outcome in outcomes:
            self.stdout.write(str(outcome))
            self.builds[outcome.tag] = outcome

    def _self_test(self, entries: list[Entry], hello_runs: int) -> None:
        failed = []
        header = f"{'runtime':24} {'result':7} {'compile':>8} {'run':>7} {'total':>7}"
        if hello_runs:
            header += f" {'hello':>7}"
        self.stdout.write(header)
        for entry in entries:
            runtime = Runtime.objects.get(name=entry.name)
            outcome = services.runtime_self_test(runtime, entry)
            result = "passed" if outcome.passed else "FAILED" if outcome.concluded else "no run"
            line = (
                f"{entry.name:24} {result:7} "
                f"{_ms(outcome.compile_ms):>8} {_ms(outcome.run_ms):>7} "
                f"{outcome.seconds:>6.2f}s"
            )
            hello = "-"
            if hello_runs and outcome.passed:
                seconds = [services.runtime_hello(runtime, entry) for _ in range(hello_runs)]
                greeted = all(passed for passed, _, _ in seconds)
                median = statistics.median(took for _, took, _ in seconds)
                hello = f"{median:.2f} s" if greeted else "FAILED"
                line += f" {hello:>7}"
            compile_ms = _ms(outcome.compile_ms) if entry.compile_command else "-"
            self.results[entry.name] = (result, compile_ms, hello)
            self.stdout.write(line)
            if not outcome.passed:
                # A self-test that could not run here fails the command too: it proved nothing.
                failed.append(entry.name)
                self.stdout.write(f"    {outcome.detail[:600]}")
        if failed:
            self.stdout.flush()
            raise CommandError(f"{len(failed)} runtime(s) failed the self-test: {' '.join(failed)}")
        sys.stdout.flush()

    def _markdown(self, entries: list[Entry]) -> None:
        from sandbox.docker import DockerBackend

        backend = DockerBackend()
        self.stdout.write(
            "\n| runtime | image | build (own layer + load) | image size | self-test "
            "| compile | hello-world end to end |\n|---|---|---|---|---|---|---|"
        )
        for entry in entries:
            tag = catalogue.IMAGES[entry.image].tag
            build = self.builds.get(tag)
            took = "-" if build is None else f"{build.seconds:.0f} s" if build.seconds else "cached"
            size = backend.image_size(tag)
            result, compile_ms, hello = self.results.get(entry.name, ("-", "-", "-"))
            self.stdout.write(
                f"| {entry.display_name} | `{tag}` | {took} | "
                f"{'-' if size is None else f'{size / 1e6:.0f} MB'} | {result} | {compile_ms} "
                f"| {hello} |"
            )


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value} ms"
