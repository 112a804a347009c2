"""The outside parts a platform of the fault suite runs on, each of its own so that it can be
stopped: a ``redis-server`` and a PostgreSQL cluster on free ports of loopback, and a Docker
engine with its own data root and socket. The shared ones (6379, 5432,
``/var/run/docker.sock``) are never stopped; the engine is only read from, to copy the
runtime image.

A part that cannot run here raises ``PartUnavailable`` naming it and saying why.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from glob import glob
from pathlib import Path
from typing import TypeVar


class PartUnavailable(Exception):
    """``part`` cannot run on this machine, for ``reason``."""

    def __init__(self, part: str, reason: str) -> None:
        super().__init__(f"{part} is not available: {reason}")
        self.part = part
        self.reason = reason


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """``redis-server`` on a free port of loopback, keeping nothing on disk: a restart
    empties it, as a Redis without persistence does."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise PartUnavailable("redis-server", "the binary is not installed")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.directory / f"redis-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        import redis

        # from_url: a client built from parts retries a refused connection with back-off.
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on {self.port} did not start") from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None


R = TypeVar("R", bound=RedisServer)


@contextlib.contextmanager
def redis_server(directory: Path, kind: type[R]) -> Iterator[R]:
    """A started ``kind`` (``RedisServer`` or a subclass), stopped afterwards."""
    server = kind(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _postgres_bin() -> Path:
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    initdb = found[-1] if found else shutil.which("initdb")
    if not initdb:
        raise PartUnavailable("PostgreSQL's initdb", "no /usr/lib/postgresql/*/bin/initdb")
    return Path(initdb).parent


class PostgresCluster:
    """A PostgreSQL cluster of its own (``initdb``, ``pg_ctl``) on a free port of loopback,
    with trust authentication for ``postgres``. As root, its programs run as the ``postgres``
    user, since PostgreSQL refuses to run as root."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.port = free_port()
        self.as_user: list[str] = []
        owner = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PartUnavailable(
                    "PostgreSQL", "running as root needs a postgres user"
                ) from None
            self.as_user = ["runuser", "-u", "postgres", "--"]
        # Not under a test's own temporary directory, whose parents the postgres user may
        # not be allowed to enter.
        self.directory = Path(tempfile.mkdtemp(prefix="evalplatform-pg-"))
        if owner is not None:
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        self.data = self.directory / "data"
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        self.log = self.directory / "server.log"

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            [*self.as_user, *command], capture_output=True, text=True, timeout=120
        )
        if result.returncode:
            raise RuntimeError(f"{command[0]} failed: {result.stdout}{result.stderr}")

    def create(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--encoding=UTF8", "--no-sync",
        )  # fmt: skip

    def _options(self) -> str:
        return (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )

    def start(self) -> None:
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", self._options(),
            "-l", str(self.log), "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is cut, then it answers again."""
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", self._options(),
            "-l", str(self.log), "-m", "fast", "-w", "-t", "60", "restart",
        )  # fmt: skip

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._run(
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
            )
        shutil.rmtree(self.directory, ignore_errors=True)


P = TypeVar("P", bound=PostgresCluster)


@contextlib.contextmanager
def postgres_cluster(kind: type[P]) -> Iterator[P]:
    """A created and started ``kind`` (``PostgresCluster`` or a subclass), removed afterwards."""
    cluster = kind()
    try:
        cluster.create()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


# The main engine, where the runtime image is copied from: the environment's, else the
# local socket.
MAIN_ENGINE = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


class DockerEngine:
    """A second ``dockerd`` of its own: its own data root, exec root (and so its own
    containerd), pid file, socket and default bridge, with no iptables rules, so that it
    touches nothing of the main engine and can be stopped and started at will. (Not
    ``--bridge=none``: a dockerd started so deletes the host's ``docker0``, which the main
    engine's containers need.)"""

    def __init__(self, directory: Path) -> None:
        dockerd, docker = shutil.which("dockerd"), shutil.which("docker")
        if dockerd is None or docker is None:
            raise PartUnavailable("A Docker engine", "dockerd and docker are not installed")
        if os.geteuid() != 0:
            raise PartUnavailable("A Docker engine of its own", "dockerd needs root")
        self.dockerd, self.docker = dockerd, docker
        # A unix socket's path has at most 107 bytes: a short directory of its own.
        self.directory = Path(tempfile.mkdtemp(prefix="evalplatform-dockerd-"))
        self.socket = self.directory / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.log = directory / "dockerd.log"
        self.process: subprocess.Popen[bytes] | None = None
        # An interface name has at most 15 bytes; the address is one no engine picks.
        self.bridge = f"evalflt{os.getpid() % 100000}"
        self.bridge_address = f"10.213.{os.getpid() % 250}.1/24"

    def _make_bridge(self) -> None:
        if Path(f"/sys/class/net/{self.bridge}").exists():
            return
        for command in (
            ["ip", "link", "add", "name", self.bridge, "type", "bridge"],
            ["ip", "addr", "add", self.bridge_address, "dev", self.bridge],
            ["ip", "link", "set", self.bridge, "up"],
        ):
            made = subprocess.run(command, capture_output=True, text=True, check=False)
            if made.returncode:
                raise PartUnavailable("A bridge for a Docker engine of its own", made.stderr)

    def start(self, wait_s: float = 60) -> None:
        self._make_bridge()
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [self.dockerd, "--data-root", str(self.directory / "data"),
                 "--exec-root", str(self.directory / "exec"),
                 "--pidfile", str(self.directory / "docker.pid"), "-H", self.url,
                 f"--bridge={self.bridge}", "--iptables=false", "--ip6tables=false"],
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + wait_s
        while not self.answers():
            if self.process.poll() is not None:
                raise PartUnavailable("A Docker engine of its own", self._log_tail())
            if time.monotonic() > deadline:
                self.stop()
                raise PartUnavailable("A Docker engine of its own", "it did not answer")
            time.sleep(0.1)

    def answers(self) -> bool:
        return self.cli("version", "--format", "{{.Server.Version}}").returncode == 0

    def stop(self) -> None:
        """Stop the engine as an operator does (SIGTERM): it stops its containers and its
        containerd, then exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self.process = None
        self._stop_own_containerd()

    def load_image(self, image: str) -> None:
        """Copy ``image`` from the main engine (``docker save | docker load``)."""
        save = subprocess.Popen(
            [self.docker, "-H", MAIN_ENGINE, "save", image],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        load = subprocess.run(
            [self.docker, "-H", self.url, "load"], stdin=save.stdout, capture_output=True,
            timeout=600,
        )  # fmt: skip
        assert save.stdout is not None
        save.stdout.close()
        saved = save.wait(timeout=60)
        if saved or load.returncode:
            detail = (save.stderr.read() if save.stderr else b"") + load.stderr
            raise PartUnavailable(
                f"The runtime image {image} on the main engine ({MAIN_ENGINE})",
                f"{detail.decode(errors='replace').strip()} (make runtime-image builds it)",
            )

    def cli(self, *arguments: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """``docker -H <this engine> ...``."""
        return subprocess.run(
            [self.docker, "-H", self.url, *arguments],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def remove(self) -> None:
        self.stop()
        # Whatever the engine left mounted under its own directory, then the directory.
        root = str(self.directory) + "/"
        with open("/proc/mounts") as mounts:
            mounted = [line.split()[1] for line in mounts if line.split()[1].startswith(root)]
        for point in sorted(mounted, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        shutil.rmtree(self.directory, ignore_errors=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)

    def _stop_own_containerd(self) -> None:
        # dockerd stops the containerd it started; one left by a dockerd that was killed is
        # found by the pid file in this engine's own exec root.
        # A pid is only trusted while its command line names this exec root: pids are reused.
        pid_file = self.directory / "exec" / "containerd" / "containerd.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            if str(self.directory / "exec") in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGTERM)

    def _log_tail(self) -> str:
        return " ".join(self.log.read_text(errors="replace").splitlines()[-5:])


@contextlib.contextmanager
def docker_engine(directory: Path, image: str) -> Iterator[DockerEngine]:
    """A Docker engine of its own, holding ``image``."""
    engine = DockerEngine(directory)
    try:
        engine.start()
        engine.load_image(image)
        yield engine
    finally:
        engine.remove()
