"""Build the runtime images sandboxes run in: online from a Dockerfile, offline from debootstrap.

Online, ``docker build`` turns ``runtimes/<runtime>/Dockerfile`` (based on an official image
pulled from a registry) into the tag. Offline, when no registry is reachable or ``mode`` is
``"offline"``, ``debootstrap --variant=minbase`` makes a Debian root filesystem with the
runtime's packages, which is tarred (and cached, so a rebuild takes seconds) and loaded with
``docker import``. Both images run as uid/gid 65534, work in ``/sandbox/code``, have no
setuid/setgid binaries and start ``python3`` by default.

All engine calls go through ``sandbox.docker``. Building needs the engine itself,
not the socket proxy (which refuses ``/build`` and ``/images/create`` on purpose).

Command line: ``python -m executions.runtime_images --help``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox.docker import DockerBackend, DockerUnavailable, ImageBuildError

DEFAULT_TAG = "evalplatform/python:3.11"
RUNTIMES_DIR = Path(__file__).resolve().parent.parent / "runtimes"
DEBIAN_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class OfflineRecipe:
    """What debootstrap installs for a runtime, and how the imported image starts."""

    packages: tuple[str, ...]
    changes: tuple[str, ...]


OFFLINE_RECIPES: dict[str, OfflineRecipe] = {
    "python": OfflineRecipe(
        # python3-minimal alone lacks much of the standard library (ctypes, decimal, email,
        # ...) that submissions expect; libpython3.11-stdlib completes it without pip or
        # compilers.
        packages=("python3-minimal", "libpython3.11-stdlib"),
        changes=(
            'CMD ["python3"]',
            "USER 65534:65534",
            "WORKDIR /sandbox/code",
            "ENV LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1",
        ),
    ),
    # Not a sandbox runtime: the base the project's own Dockerfile builds on when no registry
    # serves python:3.11-slim (scripts/build-images.sh passes it as PYTHON_IMAGE). The build
    # stages need root, venv and pip, so it keeps root as its user.
    "python-base": OfflineRecipe(
        packages=("python3", "python3-venv", "python-is-python3", "ca-certificates"),
        changes=('CMD ["python3"]', "ENV LANG=C.UTF-8"),
    ),
}


class RuntimeImageError(Exception):
    """The image could not be built by any allowed method; the message says why."""


@dataclass(frozen=True)
class BuildOutcome:
    """What ``ensure_runtime_image`` did: ``action`` is "exists", "built" or "imported"."""

    tag: str
    action: str
    method: str
    detail: str

    def __str__(self) -> str:
        how = f" via {self.method}" if self.method else ""
        return f"{self.tag}: {self.action}{how}. {self.detail}".strip()


def default_cache_dir() -> Path:
    """``$EVALPLATFORM_CACHE_DIR``, else ``$XDG_CACHE_HOME/evalplatform`` (~/.cache)."""
    explicit = os.environ.get("EVALPLATFORM_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "evalplatform"


def ensure_runtime_image(
    tag: str = DEFAULT_TAG,
    *,
    runtime: str = "python",
    mode: str = "auto",
    force: bool = False,
    refresh_rootfs: bool = False,
    cache_dir: Path | None = None,
    backend: DockerBackend | None = None,
    log: Callable[[str], None] = print,
) -> BuildOutcome:
    """Make sure ``tag`` exists on the engine, building it if needed, and say what was done.

    ``mode`` is "auto" (Dockerfile first, debootstrap if that fails, e.g. no registry),
    "online" or "offline". An existing image is kept unless ``force``. ``refresh_rootfs``
    ignores a cached debootstrap tarball. Raises ``RuntimeImageError`` on failure.
    """
    if mode not in ("auto", "online", "offline"):
        raise ValueError(f"mode must be auto, online or offline, not {mode!r}")
    backend = backend or DockerBackend()
    try:
        if not force and backend.image_exists(tag):
            return BuildOutcome(tag, "exists", "", "Nothing to do (use force to rebuild).")
    except DockerUnavailable as exc:
        raise RuntimeImageError(str(exc)) from exc

    online_error = ""
    if mode in ("auto", "online"):
        try:
            return _build_online(backend, tag, runtime, log)
        except ImageBuildError as exc:
            if mode == "online":
                raise RuntimeImageError(_with_log(str(exc), exc.log)) from exc
            online_error = str(exc)
            log(f"Online build failed ({online_error}); falling back to debootstrap.")
    outcome = _build_offline(
        backend, tag, runtime, cache_dir or default_cache_dir(), refresh_rootfs, log
    )
    if online_error:
        outcome = BuildOutcome(
            outcome.tag,
            outcome.action,
            outcome.method,
            f"{outcome.detail} Online build failed first: {online_error}",
        )
    return outcome


def _build_online(
    backend: DockerBackend, tag: str, runtime: str, log: Callable[[str], None]
) -> BuildOutcome:
    context = RUNTIMES_DIR / runtime
    if not (context / "Dockerfile").is_file():
        raise ImageBuildError(f"no Dockerfile for runtime {runtime!r} in {context}")
    log(f"Building {tag} from {context / 'Dockerfile'} ...")
    lines = backend.build_image(str(context), tag, pull=True)
    return BuildOutcome(tag, "built", "dockerfile", f"{len(lines)} build log lines.")


def _build_offline(
    backend: DockerBackend,
    tag: str,
    runtime: str,
    cache_dir: Path,
    refresh: bool,
    log: Callable[[str], None],
) -> BuildOutcome:
    recipe = OFFLINE_RECIPES.get(runtime)
    if recipe is None:
        raise RuntimeImageError(f"no offline recipe for runtime {runtime!r}")
    tarball = rootfs_tarball(recipe, cache_dir=cache_dir, refresh=refresh, log=log)
    log(f"Importing {tarball} as {tag} ...")
    try:
        image_id = backend.import_rootfs(str(tarball), tag, recipe.changes)
    except (ImageBuildError, DockerUnavailable) as exc:
        raise RuntimeImageError(str(exc)) from exc
    return BuildOutcome(tag, "imported", "debootstrap", f"Image {image_id} from {tarball}.")


def rootfs_tarball(
    recipe: OfflineRecipe,
    *,
    cache_dir: Path,
    refresh: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Return a cached tar of a debootstrap root filesystem for ``recipe``, making it if needed.

    Needs root and the ``debootstrap`` command. The mirror is ``$DEBOOTSTRAP_MIRROR`` or
    deb.debian.org. Raises ``RuntimeImageError``.
    """
    arch = _debian_arch()
    name = f"rootfs-{DEBIAN_SUITE}-{arch}-{'+'.join(recipe.packages)}.tar"
    tarball = cache_dir / name
    if tarball.is_file() and not refresh:
        log(f"Using cached root filesystem {tarball}.")
        return tarball
    if shutil.which("debootstrap") is None:
        raise RuntimeImageError("debootstrap is not installed (apt-get install debootstrap).")
    if os.geteuid() != 0:
        raise RuntimeImageError("debootstrap needs root to make a root filesystem.")
    cache_dir.mkdir(parents=True, exist_ok=True)
    mirror = os.environ.get("DEBOOTSTRAP_MIRROR", DEFAULT_MIRROR)
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache_dir))
    rootfs = work / "rootfs"
    try:
        log(f"debootstrap {DEBIAN_SUITE} with {', '.join(recipe.packages)} from {mirror} ...")
        _check_call(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(recipe.packages)}",
                f"--arch={arch}",
                DEBIAN_SUITE,
                str(rootfs),
                mirror,
            ]
        )
        _harden_rootfs(rootfs)
        partial = work / name
        _check_call(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."])
        os.replace(partial, tarball)  # atomic: a concurrent reader never sees half a tar
    finally:
        _unmount_below(work)
        shutil.rmtree(work, ignore_errors=True)
    log(f"Cached root filesystem in {tarball}.")
    return tarball


def _harden_rootfs(rootfs: Path) -> None:
    """Strip setuid/setgid bits, drop package caches and make the read-only code directory."""
    for directory, _dirs, files in os.walk(rootfs):
        for filename in files:
            path = os.path.join(directory, filename)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / cache).glob("*"):
            if entry.is_file() and not entry.is_symlink():
                entry.unlink()
    code = rootfs / "sandbox" / "code"
    code.mkdir(parents=True, exist_ok=True)
    # Readable by the sandbox user, writable by nobody but root.
    os.chmod(rootfs / "sandbox", 0o555)  # noqa: S103
    os.chmod(code, 0o555)  # noqa: S103


def _unmount_below(path: Path) -> None:
    """Unmount anything a failed debootstrap left mounted under ``path`` (proc, sys)."""
    prefix = str(path.resolve()) + "/"
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            targets = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    except OSError:
        return
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


def _check_call(command: Sequence[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise RuntimeImageError(
            f"{command[0]} failed with status {done.returncode}:\n" + "\n".join(tail)
        )


def _debian_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _with_log(message: str, lines: Sequence[str]) -> str:
    return message + ("\n" + "\n".join(lines[-15:]) if lines else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m executions.runtime_images",
        description="Build a runtime image on the local Docker engine (online or offline).",
    )
    parser.add_argument("--tag", default=DEFAULT_TAG)
    parser.add_argument("--runtime", default="python", choices=sorted(OFFLINE_RECIPES))
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--online", dest="mode", action="store_const", const="online")
    group.add_argument("--offline", dest="mode", action="store_const", const="offline")
    parser.add_argument("--force", action="store_true", help="rebuild even if the tag exists")
    parser.add_argument(
        "--refresh-rootfs", action="store_true", help="ignore the cached debootstrap tarball"
    )
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument(
        "--docker-host", default=None, help="engine URL (default $DOCKER_HOST or local socket)"
    )
    args = parser.parse_args(argv)
    backend = DockerBackend(base_url=args.docker_host) if args.docker_host else None
    try:
        outcome = ensure_runtime_image(
            args.tag,
            runtime=args.runtime,
            mode=args.mode or "auto",
            force=args.force,
            refresh_rootfs=args.refresh_rootfs,
            cache_dir=args.cache_dir,
            backend=backend,
        )
    except RuntimeImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
