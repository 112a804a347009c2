"""Build the catalogue's runtime images: offline from Debian root filesystems, or from Dockerfiles.

Offline (no registry needed, only a Debian mirror): the ``base`` image is debootstrap's
minbase; every other image is one layer of packages on its parent's, installed with apt in a
chroot on an overlay of the parents' root filesystems. Each layer is cached as a directory
(``<cache>/layers/<image>-<key>/root``, in overlayfs's format: an ``upperdir`` for the
daemonless backend to stack) and as a tar in the image format, and the image is handed to the
engine as a ``docker save`` archive of its chain of layers, so the engine stores a layer that
several images share once. The key covers the packages of the whole chain; a changed recipe
is a new key, hence a new layer.

Online (``--online``, or ``auto`` when a registry answers): the same chain from generated
Dockerfiles, ``base`` from ``debian:bookworm-slim``.

Every image runs as uid/gid 65534, works in the read-only ``/sandbox/code``, has no
setuid/setgid binaries, and carries the labels ``evalplatform.image`` and
``evalplatform.recipe`` (the key), by which a build knows an image is current.

All engine calls go through ``sandbox.docker``; building needs the engine itself, not the
socket proxy (which refuses ``/build`` and ``/images/load`` on purpose).

Command line: ``python -m executions.runtime_images --help``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import io
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from executions import catalogue
from executions.catalogue import DEBIAN_SUITE, IMAGES, Image, image_chain
from sandbox.docker import DockerBackend, DockerUnavailable, ImageBuildError

DEFAULT_TAG = IMAGES["python"].tag
RUNTIMES_DIR = Path(__file__).resolve().parent.parent / "runtimes"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Part of every layer's key: bump it when the way layers are made changes.
BUILDER_VERSION = "1"
SANDBOX_USER = "65534:65534"
IMAGE_LABEL = "evalplatform.image"
RECIPE_LABEL = "evalplatform.recipe"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What a layer must not carry into an image: apt's downloads and indexes, logs, this host's
# resolver configuration.
_LAYER_LITTER = (
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/log",
    "etc/resolv.conf",
    "tmp",
    "root",
    "var/cache/debconf/config.dat-old",
    "var/cache/debconf/templates.dat-old",
)


class RuntimeImageError(Exception):
    """The image could not be built by any allowed method; the message says why."""


@dataclass(frozen=True)
class BuildOutcome:
    """What a build did: ``action`` is "exists", "built" or "loaded"."""

    tag: str
    action: str
    method: str
    detail: str
    seconds: float = 0.0

    def __str__(self) -> str:
        how = f" via {self.method}" if self.method else ""
        took = f" ({self.seconds:.1f} s)" if self.seconds >= 0.1 else ""
        return f"{self.tag}: {self.action}{how}{took}. {self.detail}".strip()


def default_cache_dir() -> Path:
    """``$EVALPLATFORM_CACHE_DIR``, else ``$XDG_CACHE_HOME/evalplatform`` (~/.cache)."""
    explicit = os.environ.get("EVALPLATFORM_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "evalplatform"


def recipe_key(name: str) -> str:
    """A short digest of everything that goes into ``name``'s layers, base first."""
    digest = hashlib.sha256(f"{BUILDER_VERSION} {DEBIAN_SUITE} {_debian_arch()}".encode())
    for image in image_chain(name):
        digest.update(json.dumps([image.name, image.packages, image.env]).encode())
    return digest.hexdigest()[:16]


# --- the whole build -----------------------------------------------------------------------------


def ensure_images(
    names: Iterable[str],
    *,
    mode: str = "auto",
    force: bool = False,
    cache_dir: Path | None = None,
    backend: DockerBackend | None = None,
    jobs: int = 2,
    log: Callable[[str], None] = print,
) -> list[BuildOutcome]:
    """Make sure each image in ``names`` (and its parents) is current on the engine.

    Parents are built before their children; images that do not depend on each other are
    built ``jobs`` at a time. Raises ``RuntimeImageError`` naming every image that failed,
    after building all the others it could.
    """
    if mode not in ("auto", "online", "offline"):
        raise ValueError(f"mode must be auto, online or offline, not {mode!r}")
    wanted = list(dict.fromkeys(names))
    unknown = [name for name in wanted if name not in IMAGES]
    if unknown:
        raise RuntimeImageError(f"no catalogue image named {', '.join(unknown)}")
    builder = _Builder(
        backend or DockerBackend(), cache_dir or default_cache_dir(), mode, force, log
    )
    return builder.build(wanted, jobs=jobs)


def ensure_runtime_image(
    tag: str = DEFAULT_TAG,
    *,
    mode: str = "auto",
    force: bool = False,
    cache_dir: Path | None = None,
    backend: DockerBackend | None = None,
    log: Callable[[str], None] = print,
) -> BuildOutcome:
    """Make sure the catalogue image tagged ``tag`` is current on the engine."""
    names = [image.name for image in IMAGES.values() if image.tag == tag]
    if not names:
        raise RuntimeImageError(f"no catalogue image is tagged {tag!r}")
    outcomes = ensure_images(
        names, mode=mode, force=force, cache_dir=cache_dir, backend=backend, log=log
    )
    return outcomes[-1]


class _Builder:
    def __init__(
        self,
        backend: DockerBackend,
        cache_dir: Path,
        mode: str,
        force: bool,
        log: Callable[[str], None],
    ) -> None:
        self.backend = backend
        self.cache_dir = cache_dir
        # One method for the whole chain: layers from a Dockerfile cannot sit on cached
        # root filesystems, nor the other way round. Offline is preferred where it can run:
        # its root filesystems also serve the daemonless backend.
        offline_possible = os.geteuid() == 0 and shutil.which("debootstrap") is not None
        if mode == "auto":
            mode = "offline" if offline_possible else "online"
        self.method = "debootstrap" if mode == "offline" else "dockerfile"
        self.force = force
        self._log = log
        self._log_lock = threading.Lock()
        self.layers = _LayerCache(cache_dir / "layers", self.log)

    def log(self, line: str) -> None:
        with self._log_lock:
            self._log(line)

    def build(self, wanted: list[str], *, jobs: int) -> list[BuildOutcome]:
        order: list[str] = []
        for name in wanted:
            for image in image_chain(name):
                if image.name not in order:
                    order.append(image.name)
        results: dict[str, BuildOutcome] = {}
        failures: dict[str, str] = {}
        futures: dict[str, concurrent.futures.Future[BuildOutcome]] = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            pending = list(order)
            while pending or futures:
                for name in list(pending):
                    parent = IMAGES[name].parent
                    if parent in failures:
                        failures[name] = f"its parent {parent} failed"
                        pending.remove(name)
                    elif parent is None or parent in results:
                        futures[name] = pool.submit(self._one, IMAGES[name])
                        pending.remove(name)
                if not futures:
                    break
                done, _ = concurrent.futures.wait(
                    futures.values(), return_when=concurrent.futures.FIRST_COMPLETED
                )
                for name, future in list(futures.items()):
                    if future in done:
                        del futures[name]
                        try:
                            results[name] = future.result()
                        except (RuntimeImageError, ImageBuildError, DockerUnavailable) as exc:
                            failures[name] = str(exc)
                            self.log(f"{IMAGES[name].tag}: FAILED: {exc}")
        if failures:
            raise RuntimeImageError(
                "; ".join(f"{IMAGES[name].tag}: {why}" for name, why in failures.items())
            )
        return [results[name] for name in wanted]

    def _one(self, image: Image) -> BuildOutcome:
        key = recipe_key(image.name)
        try:
            labels = self.backend.image_labels(image.tag)
        except DockerUnavailable as exc:
            raise RuntimeImageError(str(exc)) from exc
        if labels is not None and labels.get(RECIPE_LABEL) == key and not self.force:
            return BuildOutcome(image.tag, "exists", "", f"Current (recipe {key}).")
        started = time.monotonic()
        if self.method == "dockerfile":
            try:
                return _timed(self._online(image, key), started)
            except ImageBuildError as exc:
                raise RuntimeImageError(_with_log(str(exc), exc.log)) from exc
        return _timed(self._offline(image, key), started)

    # -- offline: layers from debootstrap and apt in a chroot, loaded as one archive

    def _offline(self, image: Image, key: str) -> BuildOutcome:
        layers = [self.layers.ensure(link) for link in image_chain(image.name)]
        config = _image_config(image, key, [layer.diff_id for layer in layers])
        work = Path(tempfile.mkdtemp(prefix="image-", dir=self.cache_dir))
        try:
            archive = work / "image.tar"
            _write_archive(archive, image.tag, config, layers)
            self.log(f"{image.tag}: loading {len(layers)} layers into the engine ...")
            self.backend.load_image_archive(str(archive))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        size = sum(layer.size for layer in layers)
        return BuildOutcome(
            image.tag,
            "loaded",
            "debootstrap",
            f"{len(layers)} layers, {size / 1e6:.0f} MB, recipe {key}.",
        )

    # -- online: generated Dockerfiles, each FROM its parent's tag

    def _online(self, image: Image, key: str) -> BuildOutcome:
        with tempfile.TemporaryDirectory(prefix="image-context-") as context:
            Path(context, "Dockerfile").write_text(dockerfile(image, key), encoding="utf-8")
            self.log(f"{image.tag}: docker build ...")
            # Only the base comes from a registry; the others start from their parent here.
            lines = self.backend.build_image(context, image.tag, pull=image.parent is None)
        return BuildOutcome(image.tag, "built", "dockerfile", f"{len(lines)} build log lines.")


def _timed(outcome: BuildOutcome, started: float) -> BuildOutcome:
    return BuildOutcome(
        outcome.tag, outcome.action, outcome.method, outcome.detail, time.monotonic() - started
    )


# --- layers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One cached layer: ``root`` (a whole root filesystem for base, else an overlay upper
    directory), ``tar`` (the same in the image format) and the tar's digest."""

    image: str
    root: Path
    tar: Path
    diff_id: str
    size: int


class _LayerCache:
    def __init__(self, directory: Path, log: Callable[[str], None]) -> None:
        self.directory = directory
        self.log = log
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def path(self, image: Image) -> Path:
        return self.directory / f"{image.name}-{recipe_key(image.name)}"

    def ensure(self, image: Image) -> Layer:
        with self._guard:
            lock = self._locks.setdefault(image.name, threading.Lock())
        with lock:
            return self._ensure(image)

    def _ensure(self, image: Image) -> Layer:
        final = self.path(image)
        done = final / "diff_id"
        if done.is_file():
            return self._layer(image, final)
        if os.geteuid() != 0:
            raise RuntimeImageError("building a layer needs root (debootstrap, chroot, mounts).")
        parents = [self.ensure(link) for link in image_chain(image.name)[:-1]]
        self.directory.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{image.name}-", dir=self.directory))
        started = time.monotonic()
        try:
            root = work / "root"
            if image.parent is None:
                self.log(f"{image.tag}: debootstrap {DEBIAN_SUITE} (minbase) ...")
                _debootstrap(root)
            else:
                self.log(f"{image.tag}: apt-get install {' '.join(image.packages)} ...")
                _install_layer(root, work, [parent.root for parent in reversed(parents)], image)
            _strip_setid(root)
            diff_id = _write_layer_tar(root, work / "layer.tar")
            (work / "diff_id").write_text(diff_id, encoding="ascii")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(work, final)  # atomic: a layer is whole or absent
        finally:
            _unmount_below(work)
            shutil.rmtree(work, ignore_errors=True)
        layer = self._layer(image, final)
        self.log(
            f"{image.tag}: layer of {layer.size / 1e6:.0f} MB in "
            f"{time.monotonic() - started:.0f} s."
        )
        return layer

    def _layer(self, image: Image, path: Path) -> Layer:
        tar = path / "layer.tar"
        diff_id = (path / "diff_id").read_text(encoding="ascii").strip()
        return Layer(image.name, path / "root", tar, diff_id, tar.stat().st_size)


def _debootstrap(root: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise RuntimeImageError("debootstrap is not installed (apt-get install debootstrap).")
    mirror = os.environ.get("DEBOOTSTRAP_MIRROR", DEFAULT_MIRROR)
    _check_call(
        [
            "debootstrap",
            "--variant=minbase",
            f"--arch={_debian_arch()}",
            DEBIAN_SUITE,
            str(root),
            mirror,
        ]
    )
    # The layers above install from the point release, its updates and security fixes.
    (root / "etc/apt/sources.list").write_text(
        f"deb {mirror} {DEBIAN_SUITE} main\n"
        f"deb {mirror} {DEBIAN_SUITE}-updates main\n"
        f"deb {mirror.rsplit('/', 1)[0]}/debian-security {DEBIAN_SUITE}-security main\n",
        encoding="utf-8",
    )
    # No documentation or manual pages in any layer: nothing in a sandbox reads them.
    (root / "etc/dpkg/dpkg.cfg.d/01-evalplatform-nodoc").write_text(
        "path-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\n"
        "path-exclude=/usr/share/man/*\npath-exclude=/usr/share/info/*\n",
        encoding="utf-8",
    )
    _remove_litter(root)
    code = root / "sandbox" / "code"
    code.mkdir(parents=True, exist_ok=True)
    # Readable by the sandbox user, writable by nobody but root.
    os.chmod(root / "sandbox", 0o555)  # noqa: S103
    os.chmod(code, 0o555)  # noqa: S103


def _install_layer(upper: Path, work: Path, lowers: Sequence[Path], image: Image) -> None:
    """apt-get install ``image.packages`` on an overlay of ``lowers`` (nearest first)."""
    merged, scratch = work / "merged", work / "overlay-work"
    for directory in (upper, merged, scratch):
        directory.mkdir()
    lower = ":".join(str(path) for path in lowers)
    _check_call(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={lower},upperdir={upper},workdir={scratch}",
            str(merged),
        ]
    )
    try:
        _check_call(["mount", "-t", "proc", "proc", str(merged / "proc")])
        _check_call(["mount", "--bind", "/dev", str(merged / "dev")])
        shutil.copyfile("/etc/resolv.conf", merged / "etc/resolv.conf")
        environment = {
            "PATH": BASE_PATH,
            "DEBIAN_FRONTEND": "noninteractive",
            "LANG": "C.UTF-8",
            "HOME": "/root",
        }
        apt = ["chroot", str(merged), "apt-get", "-o", "Dpkg::Use-Pty=0", "-q"]
        _check_call([*apt, "update"], env=environment)
        _check_call(
            [*apt, "install", "-y", "--no-install-recommends", *image.packages], env=environment
        )
    finally:
        _unmount_below(work)
    _remove_litter(upper)


def _remove_litter(root: Path) -> None:
    for relative in _LAYER_LITTER:
        path = root / relative
        if path.is_dir() and not path.is_symlink():
            for entry in path.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        elif path.is_file() or path.is_symlink():
            path.unlink()


def _strip_setid(root: Path) -> None:
    """Setuid/setgid binaries cannot help a sandbox (no-new-privileges) and only widen what a
    kernel bug could reach."""
    for directory, _dirs, files in os.walk(root):
        for filename in files:
            path = os.path.join(directory, filename)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))


def _write_layer_tar(root: Path, target: Path) -> str:
    """Tar ``root`` as an image layer, overlayfs whiteouts turned into the image format's
    ``.wh.`` entries; return the tar's ``sha256:`` digest (the layer's diff id)."""
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        for directory, dirs, files in os.walk(root):
            dirs.sort()
            relative = os.path.relpath(directory, root)
            prefix = "" if relative == "." else relative + "/"
            if prefix and _is_opaque(directory):
                tar.addfile(_empty(prefix + ".wh..wh..opq"))
            for name in sorted(files) + [
                d for d in dirs if os.path.islink(os.path.join(directory, d))
            ]:
                path = os.path.join(directory, name)
                status = os.lstat(path)
                if stat.S_ISCHR(status.st_mode) and status.st_rdev == 0:
                    tar.addfile(_empty(prefix + ".wh." + name))  # a deletion
                    continue
                info = tar.gettarinfo(path, prefix + name)
                _numeric(info)
                if info.isreg():
                    with open(path, "rb") as data:
                        tar.addfile(info, data)
                else:
                    tar.addfile(info)
            for name in dirs:
                path = os.path.join(directory, name)
                if not os.path.islink(path):
                    info = tar.gettarinfo(path, prefix + name)
                    _numeric(info)
                    tar.addfile(info)
    digest = hashlib.sha256()
    with open(target, "rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def _is_opaque(directory: str) -> bool:
    try:
        return os.getxattr(directory, "trusted.overlay.opaque") == b"y"
    except OSError:
        return False


def _empty(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info


def _numeric(info: tarfile.TarInfo) -> None:
    # Owners by number only: the image's /etc/passwd, not this host's, names them.
    info.uname = info.gname = ""


# --- the image archive ----------------------------------------------------------------------------


def _image_config(image: Image, key: str, diff_ids: Sequence[str]) -> dict[str, object]:
    env = {"PATH": BASE_PATH, "LANG": "C.UTF-8"}
    for link in image_chain(image.name):
        env.update(dict(link.env))
    return {
        # Debian's and the image format's names agree for amd64 and arm64.
        "architecture": _debian_arch(),
        "os": "linux",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {
            "Env": [f"{name}={value}" for name, value in env.items()],
            "Cmd": ["/bin/sh"],
            "User": SANDBOX_USER,
            "WorkingDir": "/sandbox/code",
            "Labels": {
                IMAGE_LABEL: image.name,
                RECIPE_LABEL: key,
                "evalplatform.packages": " ".join(
                    package for link in image_chain(image.name) for package in link.packages
                ),
            },
        },
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [
            {"created_by": f"evalplatform layer {link.name}: {' '.join(link.packages)}"}
            for link in image_chain(image.name)
        ],
    }


def _write_archive(
    archive: Path, tag: str, config: dict[str, object], layers: Sequence[Layer]
) -> None:
    """A ``docker save`` archive of one image: its config, its layers and a manifest."""
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_names = [f"{layer.diff_id.removeprefix('sha256:')}/layer.tar" for layer in layers]
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": layer_names}]
    with tarfile.open(archive, "w") as tar:
        for layer, name in zip(layers, layer_names, strict=True):
            tar.add(layer.tar, arcname=name)
        for name, data in (
            (config_name, config_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def dockerfile(image: Image, key: str) -> str:
    """The Dockerfile that builds ``image`` online, on its parent's tag."""
    lines = [
        f"FROM {IMAGES[image.parent].tag if image.parent else 'debian:' + DEBIAN_SUITE + '-slim'}"
    ]
    lines.append("USER 0:0")
    steps = []
    if image.packages:
        steps += [
            "apt-get update",
            "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
            + " ".join(image.packages),
        ]
    steps += [
        "rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /root/.cache",
        "find / -xdev -type f -perm /6000 -exec chmod a-s {} +",
        "getent passwd 65534 >/dev/null",
        "mkdir -p /sandbox/code",
        "chmod 0555 /sandbox /sandbox/code",
    ]
    lines.append("RUN set -eux; " + "; ".join(steps))
    env = dict((("LANG", "C.UTF-8"), *image.env))
    lines.append("ENV " + " ".join(f"{name}={json.dumps(value)}" for name, value in env.items()))
    labels = {IMAGE_LABEL: image.name, RECIPE_LABEL: key}
    lines.append(
        "LABEL " + " ".join(f"{name}={json.dumps(value)}" for name, value in labels.items())
    )
    lines += ["WORKDIR /sandbox/code", f"USER {SANDBOX_USER}", 'CMD ["/bin/sh"]']
    return "\n".join(lines) + "\n"


# --- the platform's own base image ------------------------------------------------------------


@dataclass(frozen=True)
class OfflineRecipe:
    """What debootstrap installs for an image that is not a sandbox runtime."""

    packages: tuple[str, ...]
    changes: tuple[str, ...]


# The base the project's own Dockerfile builds on when no registry serves python:3.11-slim
# (scripts/build-images.sh passes it as PYTHON_IMAGE). Its build stages need root, venv and
# pip, so it keeps root as its user.
PLATFORM_BASE = OfflineRecipe(
    packages=("python3", "python3-venv", "python-is-python3", "ca-certificates"),
    changes=('CMD ["python3"]', "ENV LANG=C.UTF-8"),
)


def ensure_platform_base(
    tag: str,
    *,
    mode: str = "auto",
    force: bool = False,
    cache_dir: Path | None = None,
    backend: DockerBackend | None = None,
    log: Callable[[str], None] = print,
) -> BuildOutcome:
    """Make sure ``tag`` holds the platform's base: ``runtimes/python-base/Dockerfile`` when
    a registry answers, else a debootstrap root filesystem imported as one layer."""
    backend = backend or DockerBackend()
    try:
        if not force and backend.image_exists(tag):
            return BuildOutcome(tag, "exists", "", "Nothing to do (use force to rebuild).")
    except DockerUnavailable as exc:
        raise RuntimeImageError(str(exc)) from exc
    if mode in ("auto", "online"):
        context = RUNTIMES_DIR / "python-base"
        try:
            lines = backend.build_image(str(context), tag, pull=True)
            return BuildOutcome(tag, "built", "dockerfile", f"{len(lines)} build log lines.")
        except ImageBuildError as exc:
            if mode == "online":
                raise RuntimeImageError(_with_log(str(exc), exc.log)) from exc
            log(f"Online build failed ({exc}); falling back to debootstrap.")
    cache = cache_dir or default_cache_dir()
    name = f"rootfs-{DEBIAN_SUITE}-{_debian_arch()}-{'+'.join(PLATFORM_BASE.packages)}.tar"
    tarball = cache / name
    if force or not tarball.is_file():
        if os.geteuid() != 0 or shutil.which("debootstrap") is None:
            raise RuntimeImageError("debootstrap (and root) is needed to build offline.")
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache))
        try:
            log(f"debootstrap {DEBIAN_SUITE} with {', '.join(PLATFORM_BASE.packages)} ...")
            mirror = os.environ.get("DEBOOTSTRAP_MIRROR", DEFAULT_MIRROR)
            _check_call(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(PLATFORM_BASE.packages)}",
                    f"--arch={_debian_arch()}",
                    DEBIAN_SUITE,
                    str(work / "rootfs"),
                    mirror,
                ]
            )
            _remove_litter(work / "rootfs")
            _check_call(
                ["tar", "--numeric-owner", "-C", str(work / "rootfs"), "-cf", str(work / name), "."]
            )
            os.replace(work / name, tarball)
        finally:
            _unmount_below(work)
            shutil.rmtree(work, ignore_errors=True)
    try:
        image_id = backend.import_rootfs(str(tarball), tag, PLATFORM_BASE.changes)
    except (ImageBuildError, DockerUnavailable) as exc:
        raise RuntimeImageError(str(exc)) from exc
    return BuildOutcome(tag, "imported", "debootstrap", f"Image {image_id} from {tarball}.")


# --- helpers ----------------------------------------------------------------------------------


def _unmount_below(path: Path) -> None:
    """Unmount anything a build left mounted under ``path`` (overlay, proc, dev)."""
    prefix = str(path.resolve()) + "/"
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            targets = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    except OSError:
        return
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


def _check_call(command: Sequence[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise RuntimeImageError(
            f"{' '.join(command[:4])} failed with status {done.returncode}:\n" + "\n".join(tail)
        )


def _debian_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _with_log(message: str, lines: Sequence[str]) -> str:
    return message + ("\n" + "\n".join(lines[-15:]) if lines else "")


def tier_images(tier: int | None) -> list[str]:
    """The images the entries of ``tier`` (every tier when None) run in, in catalogue order."""
    names = [entry.image for entry in catalogue.ENTRIES if tier is None or entry.tier <= tier]
    return list(dict.fromkeys(names))


def prune_layers(cache_dir: Path | None = None) -> list[Path]:
    """Delete the cached layers no current recipe names, and unfinished ones (so not while a
    build runs); return what was deleted."""
    directory = (cache_dir or default_cache_dir()) / "layers"
    current = {f"{name}-{recipe_key(name)}" for name in IMAGES}
    pruned = []
    for path in sorted(directory.glob("*")) if directory.is_dir() else []:
        if path.is_dir() and path.name not in current:
            _unmount_below(path)
            shutil.rmtree(path, ignore_errors=True)
            pruned.append(path)
    return pruned


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m executions.runtime_images",
        description="Build the catalogue's runtime images on the local Docker engine.",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("images", nargs="*", default=[], help="catalogue image names")
    which.add_argument("--tier", type=int, help="every image the entries of this tier use")
    which.add_argument("--all", action="store_true", help="every image in the catalogue")
    which.add_argument(
        "--platform-base", metavar="TAG", help="build the platform's own base image as TAG"
    )
    which.add_argument(
        "--prune", action="store_true", help="delete cached layers no current recipe uses"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--online", dest="mode", action="store_const", const="online")
    group.add_argument("--offline", dest="mode", action="store_const", const="offline")
    parser.add_argument("--force", action="store_true", help="rebuild even if current")
    parser.add_argument("--jobs", type=int, default=2, help="images built at once")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument(
        "--docker-host", default=None, help="engine URL (default $DOCKER_HOST or local socket)"
    )
    args = parser.parse_args(argv)
    backend = DockerBackend(base_url=args.docker_host) if args.docker_host else None
    mode = args.mode or "auto"
    if args.prune:
        for path in prune_layers(args.cache_dir):
            print(f"removed {path}")
        return 0
    try:
        if args.platform_base:
            print(
                ensure_platform_base(
                    args.platform_base,
                    mode=mode,
                    force=args.force,
                    cache_dir=args.cache_dir,
                    backend=backend,
                )
            )
            return 0
        names = args.images or (
            list(IMAGES) if args.all else tier_images(args.tier) if args.tier else ["python"]
        )
        for outcome in ensure_images(
            names,
            mode=mode,
            force=args.force,
            cache_dir=args.cache_dir,
            backend=backend,
            jobs=args.jobs,
        ):
            print(outcome)
    except RuntimeImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
