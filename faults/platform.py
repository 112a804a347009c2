"""A production-shaped platform on this machine: gunicorn (the web) and ``manage.py qcluster``
(the workers and, in its main process, the recovery lane), on the database, Redis and backend
given, each in a process group of its own so that it can be killed as a crash would.

Set up as an operator would: ``migrate``, ``bootstrap`` (the admin, the default runtime, the
session supervisor) and ``api_token``. Nothing of the platform is imported here: it is driven
from outside, over HTTP and the command line.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import requests

from faults.parts import free_port

ROOT = Path(__file__).resolve().parent.parent

# The environment of the calling shell that must not leak into the platform's: its settings
# are the ones given here, and the defaults.
FOREIGN = (
    "DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "VAR_DIR",
    "DJANGO_SETTINGS_MODULE", "EXECUTION_", "LOG_", "Q_", "DOCKER_", "API_THROTTLE_",
    "METRICS_TOKEN", "ADMIN_",
)  # fmt: skip

USERNAME = "fault-suite"


class Platform:
    """The web and the cluster of one platform, with ``workers`` cluster workers and
    ``web_workers`` gunicorn processes; ``environ`` adds to (or overrides) its settings."""

    def __init__(
        self,
        directory: Path,
        *,
        database_url: str,
        redis_url: str,
        backend: str,
        workers: int = 2,
        web_workers: int = 2,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.workers = workers
        self.web_workers = web_workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.web_log = directory / "web.log"
        self.cluster_log = directory / "cluster.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
        self.environ = {
            **base,
            "DJANGO_SETTINGS_MODULE": "evalplatform.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "0",
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "0",
            "VAR_DIR": str(directory),
            "EXECUTION_BACKEND": backend,
            "Q_WORKERS": str(workers),
            "Q_CLUSTER_NAME": f"platform-{secrets.token_hex(4)}",
            "ADMIN_PASSWORD": secrets.token_urlsafe(16),
            **(environ or {}),
        }
        self.token = ""
        self.web: subprocess.Popen[bytes] | None = None
        self.cluster: subprocess.Popen[bytes] | None = None
        # Cluster processes started and not yet reaped: a killed one is waited for too.
        self._spent: list[subprocess.Popen[bytes]] = []

    # -- setting up

    def manage(self, *arguments: str, timeout: float = 300) -> str:
        """``manage.py ...`` with the platform's settings; its standard output."""
        result = subprocess.run(
            [sys.executable, "manage.py", *arguments], cwd=ROOT, env=self.environ,
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if result.returncode:
            raise RuntimeError(
                f"manage.py {' '.join(arguments)} failed: {result.stdout}{result.stderr}"
            )
        return result.stdout

    def prepare(self) -> None:
        """Migrate, bootstrap (the admin, the default runtime, the backend's needs) and make
        the API token of the suite's user."""
        self.manage("migrate", "--noinput")
        self.manage("bootstrap")
        self.token = self.manage("api_token", "create", USERNAME, "--create-user").split()[-1]

    # -- processes

    def _spawn(self, command: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as sink:
            # A session of its own: the whole process group can be killed as a crash would.
            return subprocess.Popen(
                command, cwd=ROOT, env=self.environ, stdout=sink, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def start_web(self, wait_s: float = 60) -> None:
        self.web = self._spawn(
            [sys.executable, "-m", "gunicorn", "evalplatform.wsgi",
             "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.web_workers),
             "--threads", "4",
             "--no-control-socket"],  # its default path is one per user, shared by every run
            self.web_log,
        )  # fmt: skip
        deadline = time.monotonic() + wait_s
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/healthz", timeout=5).status_code == 200:
                    return
            if self.web.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start: {self.web_log.read_text()[-3000:]}")
            time.sleep(0.2)

    def start_cluster(self) -> None:
        """Start ``manage.py qcluster`` (it need not be ready when this returns)."""
        self.cluster = self._spawn([sys.executable, "manage.py", "qcluster"], self.cluster_log)
        self._spent.append(self.cluster)

    def cluster_started(self) -> int:
        """How many times the cluster log says a cluster is running."""
        return self.cluster_log.read_text(errors="replace").count("running.")

    def wait_cluster(self, starts: int = 1, wait_s: float = 60) -> None:
        """Wait until the cluster log says ``starts`` clusters have been running."""
        deadline = time.monotonic() + wait_s
        while self.cluster_started() < starts:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the cluster did not start: {self.cluster_log.read_text()[-3000:]}"
                )
            time.sleep(0.1)

    def kill_cluster(self) -> None:
        """SIGKILL the cluster's whole process group: its main process (and recovery lane),
        sentinel, pusher, monitor and workers, with whatever they held."""
        assert self.cluster is not None
        os.killpg(self.cluster.pid, signal.SIGKILL)
        self.cluster.wait(timeout=30)
        self._spent.remove(self.cluster)
        self.cluster = None

    def kill_cluster_process(self, pid: int) -> None:
        """SIGKILL one process of the running cluster (a worker), after checking it is one."""
        if self.cluster is None or os.getpgid(pid) != self.cluster.pid:
            raise RuntimeError(f"process {pid} is not one of this platform's cluster")
        os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop the web and the cluster (in order, then whatever is left is killed)."""
        for process in [self.web, *self._spent]:
            if process is None:
                continue
            if process.poll() is None:
                # The leader stops its own workers; whatever is left after a while is killed.
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=15)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        self.web = self.cluster = None
        self._spent = []

    # -- the API

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}


@contextlib.contextmanager
def running_platform(platform: Platform) -> Iterator[Platform]:
    """``platform`` prepared, with its web and cluster started; stopped on the way out."""
    try:
        platform.prepare()
        platform.start_web()
        platform.start_cluster()
        platform.wait_cluster()
        yield platform
    finally:
        platform.stop()
