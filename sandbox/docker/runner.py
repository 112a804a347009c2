"""``DockerBackend``: run one request in a fresh container, plus cancel, health, janitor and
image building; the only module that calls the Docker engine."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests

from sandbox import supervisor
from sandbox.contract import (
    ErrorKind,
    ExecutionBackend,
    Health,
    Isolation,
    RunRequest,
    RunResult,
    Session,
    SessionObserver,
)
from sandbox.docker.config import MANAGED_FILTER, MANAGED_LABEL
from sandbox.docker.session import DockerSession
from sandbox.docker.slots import DEFAULT_LOCK_DIR, SlotPool, SlotsBusy
from sandbox.options import at_least

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "unix:///var/run/docker.sock"


class DockerUnavailable(Exception):
    """The engine could not be reached or answered in a way that means it is not usable."""


class ImageBuildError(Exception):
    """Building or importing a runtime image failed; ``log`` holds the build output so far."""

    def __init__(self, message: str, log: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.log = list(log)


@dataclass(frozen=True)
class DockerOptions:
    """The Docker backend's options and their defaults."""

    # The engine's URL: a unix socket, or tcp://host:port of a socket proxy. Empty means the
    # Docker SDK's own environment (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH), else
    # the local socket.
    base_url: str = ""
    # An OCI runtime for the sandboxes, e.g. runsc (gVisor); empty is the engine's default.
    runtime: str = ""
    # Runs at once on this node, across every process sharing lock_dir.
    max_concurrent_per_node: int = 4
    # Seconds a step may take beyond its wall time (the supervisor's kill, reaping and emptying
    # scratch) before the host stops waiting for its result and removes the sandbox.
    grace_s: float = 10.0
    lock_dir: str = DEFAULT_LOCK_DIR
    # Seconds a run waits for a free slot before it fails as UNAVAILABLE.
    slot_wait_s: float = 30.0
    api_timeout_s: float = 60.0
    # The runtime images health() checks.
    images: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        at_least("max_concurrent_per_node", self.max_concurrent_per_node, 1)


class DockerBackend(ExecutionBackend):
    """Runs each request in a fresh, hardened container on a Docker engine.

    Options: ``DockerOptions``. See the ``sandbox.docker`` package docstring for the semantics
    of a run.
    """

    name = "docker"
    options_class = DockerOptions
    options: DockerOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.slot_wait_s = self.options.slot_wait_s
        self._client_kwargs: dict[str, Any] = {"base_url": self.options.base_url}
        self._environment_error: docker.errors.DockerException | None = None
        if not self.options.base_url:
            try:
                self._client_kwargs = docker.utils.kwargs_from_env()
            except docker.errors.DockerException as exc:
                self._client_kwargs, self._environment_error = {}, exc
            self._client_kwargs.setdefault("base_url", DEFAULT_BASE_URL)
        self.base_url: str = self._client_kwargs["base_url"]
        self.slots = SlotPool(self.options.lock_dir, self.options.max_concurrent_per_node)
        # requests sessions are not documented as thread-safe: one client per thread.
        self._local = threading.local()

    # -- engine access

    def api(self) -> Any:
        """Return this thread's low-level ``docker.APIClient``; raise ``DockerUnavailable``."""
        client = getattr(self._local, "client", None)
        if client is None:
            error = self._environment_error
            if error is None:
                try:
                    client = docker.APIClient(
                        version="auto", timeout=self.options.api_timeout_s, **self._client_kwargs
                    )
                    # The engine's address is explicit: proxy variables and .netrc do not
                    # apply, and looking them up costs milliseconds on every call.
                    client.trust_env = False
                except docker.errors.DockerException as exc:
                    error = exc
            if error is not None:
                raise DockerUnavailable(
                    f"Docker engine at {self.base_url} is unreachable: {error}"
                ) from error
            self._local.client = client
        return client

    # -- the contract

    def _run(self, request: RunRequest) -> RunResult:
        return self.run_one_case(request)

    def run_session(self, session: Session, observer: SessionObserver) -> None:
        """Run ``session`` in one container (``sandbox.docker.session``), after taking a slot;
        report a failure of the engine as the result of the step it happened in."""
        if not observer.case_starting(0, session.handle):
            return
        run = DockerSession(session, observer)
        problem = supervisor.session_problem(session)
        if problem:
            run.fail(ErrorKind.BACKEND_ERROR, problem)
            return
        try:
            api = self.api()
            with self.slots.acquire(self.options.slot_wait_s):
                run.run(api, self.options.runtime, grace_s=self.options.grace_s)
        except DockerUnavailable as exc:
            run.fail(ErrorKind.UNAVAILABLE, str(exc))
        except SlotsBusy:
            run.fail(
                ErrorKind.UNAVAILABLE,
                f"All {self.options.max_concurrent_per_node} sandbox slots on this node stayed "
                f"busy for {self.options.slot_wait_s:g} s; retry later or raise "
                "max_concurrent_per_node.",
            )
        except docker.errors.APIError as exc:
            failure = _api_failure(exc, session.handle)
            run.fail(failure.error_kind or ErrorKind.BACKEND_ERROR, failure.error_message)
        except requests.exceptions.RequestException as exc:
            if run.started:
                run.fail(
                    ErrorKind.BACKEND_ERROR,
                    f"Lost the Docker engine at {self.base_url} during the run: {exc}",
                )
            else:  # it went away (a restart, say) before anything of the session ran
                run.fail(
                    ErrorKind.UNAVAILABLE,
                    f"The Docker engine at {self.base_url} went away before the sandbox "
                    f"started: {exc}",
                )
        except Exception as exc:  # run_session must not raise for infrastructure failures
            logger.exception("docker backend failed on execution %s", session.execution_id)
            run.fail(ErrorKind.BACKEND_ERROR, f"Docker backend error: {type(exc).__name__}: {exc}")

    def cancel(self, handle: str) -> None:
        """Kill and remove the managed container named ``handle``; unknown handles are ignored.

        Raises ``DockerUnavailable`` when the engine cannot be reached, so the caller knows
        the cancel did not happen.
        """
        api = self.api()
        try:
            info = api.inspect_container(handle)
            if info.get("Config", {}).get("Labels", {}).get(MANAGED_LABEL) != "1":
                logger.warning("refusing to cancel unmanaged container %r", handle)
                return
            api.remove_container(info["Id"], v=True, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: already being removed
                raise
        except requests.exceptions.RequestException as exc:
            raise DockerUnavailable(f"Docker engine at {self.base_url}: {exc}") from exc

    def health(self, images: Sequence[str] | None = None) -> Health:
        """Ping the engine and report its version, the given images and running sandboxes.

        ``images`` defaults to the ``images`` option. ``ok`` is False when the engine is
        unreachable or an image is missing.
        """
        wanted = list(self.options.images if images is None else images)
        capacity = self.options.max_concurrent_per_node
        try:
            api = self.api()
            # Over a fresh connection: an engine shutting down no longer accepts any (and a
            # sandbox needs several) yet still answers on those it accepted before.
            api.close()
            api.ping()
            version = api.version()
            present = {image: _image_exists(api, image) for image in wanted}
            running = api.containers(filters={"label": MANAGED_FILTER, "status": "running"})
        except DockerUnavailable as exc:
            return Health(ok=False, detail=str(exc), capacity=capacity)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            return Health(
                ok=False,
                detail=f"Docker engine at {self.base_url} did not answer: {exc}",
                capacity=capacity,
            )
        missing = [image for image, ok in present.items() if not ok]
        detail = (
            f"Docker {version.get('Version', '?')} (API {version.get('ApiVersion', '?')}) "
            f"at {self.base_url}; {len(running)} of {capacity} sandboxes running."
        )
        if missing:
            detail += " Missing runtime images: " + ", ".join(missing) + "."
        return Health(
            ok=not missing,
            detail=detail,
            version=str(version.get("Version", "")),
            capacity=capacity,
            in_use=len(running),
            extra={
                "base_url": self.base_url,
                "api_version": str(version.get("ApiVersion", "")),
                "runtime": self.options.runtime or "default (runc)",
                "images": present,
            },
        )

    def admits_forbidden_call(self) -> bool | None:
        """Does the engine endpoint answer ``GET /info``, a call the backend never makes?

        Through the socket proxy the answer must be False (403). True means a raw socket or a
        proxy that is not an allow-list; None means the endpoint did not answer.
        """
        try:
            self.api().info()
        except docker.errors.APIError as exc:
            if exc.status_code == 403:
                return False
            return None
        except (DockerUnavailable, docker.errors.DockerException, requests.RequestException):
            return None
        return True

    def describe(self) -> Isolation:
        return Isolation(
            facts={
                "Docker engine": self.base_url,
                "OCI runtime": self.options.runtime or "runc (the engine's default)",
                "sandboxes at once on this node": str(self.options.max_concurrent_per_node),
            }
        )

    def remove_orphans(self, older_than_s: float = 900.0) -> int:
        """Remove managed containers (and their volumes) created over ``older_than_s`` ago,
        and those that exited, whatever their age.

        For a worker that crashed mid-run, or an engine that restarted under it: a session's
        container exits only once its session is over (its supervisor is PID 1), so an exited
        one is left behind. ``older_than_s`` must exceed the longest run (wall-time cap plus
        grace plus slot wait) or live runs are cut short. Returns how many containers were
        removed; raises ``DockerUnavailable`` if the engine is down.
        """
        api = self.api()
        try:
            containers = api.containers(all=True, filters={"label": MANAGED_FILTER})
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise DockerUnavailable(f"Docker engine at {self.base_url}: {exc}") from exc
        cutoff = time.time() - older_than_s
        removed = 0
        for container in containers:
            if container.get("State") in ("exited", "dead") or container.get("Created", 0) < cutoff:
                try:
                    api.remove_container(container["Id"], v=True, force=True)
                    removed += 1
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as exc:
                    logger.warning("could not remove orphan %s: %s", container["Id"], exc)
        return removed

    # -- used by executions.runtime_images; image building never goes through the proxy

    def image_exists(self, image: str) -> bool:
        return _image_exists(self.api(), image)

    def image_labels(self, image: str) -> dict[str, str] | None:
        """The labels of ``image``'s config, or None when the engine has no such image."""
        try:
            config = self.api().inspect_image(image).get("Config") or {}
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise DockerUnavailable(f"Docker engine at {self.base_url}: {exc}") from exc
        return dict(config.get("Labels") or {})

    def image_size(self, image: str) -> int | None:
        """The bytes ``image`` takes with its parents' layers, or None without the image."""
        try:
            return int(self.api().inspect_image(image).get("Size") or 0)
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise DockerUnavailable(f"Docker engine at {self.base_url}: {exc}") from exc

    def load_image_archive(self, archive: str) -> None:
        """``docker load`` an image archive (the format ``docker save`` writes).

        Layers the engine already holds are not stored again. Raises ``ImageBuildError`` or
        ``DockerUnavailable``.
        """
        try:
            with open(archive, "rb") as data:
                # The engine answers with a JSON stream; an error may come after a 200.
                for chunk in self.api().load_image(data):
                    if "error" in chunk:
                        raise ImageBuildError(f"docker load failed: {chunk['error']}")
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise ImageBuildError(f"docker load failed: {exc}") from exc

    def build_image(self, context_dir: str, tag: str, *, pull: bool = True) -> list[str]:
        """``docker build`` ``context_dir`` as ``tag``; return the build log lines.

        Raises ``ImageBuildError`` (with the log so far) or ``DockerUnavailable``.
        """
        log: list[str] = []
        try:
            for chunk in self.api().build(
                path=context_dir, tag=tag, pull=pull, rm=True, forcerm=True, decode=True
            ):
                if "error" in chunk:
                    raise ImageBuildError(str(chunk["error"]).strip(), log)
                if chunk.get("stream"):
                    log.append(chunk["stream"].rstrip("\n"))
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise ImageBuildError(f"docker build of {tag} failed: {exc}", log) from exc
        return log

    def import_rootfs(self, tarball: str, tag: str, changes: Sequence[str]) -> str:
        """``docker import`` a root filesystem tarball as ``tag``; return the new image id.

        ``changes`` are Dockerfile instructions (CMD, USER, WORKDIR, ENV) applied on import.
        Raises ``ImageBuildError`` or ``DockerUnavailable``.
        """
        repository, _, version = tag.rpartition(":")
        if not repository or "/" in version:
            repository, version = tag, "latest"
        try:
            self.api().import_image(
                src=tarball, repository=repository, tag=version, changes=list(changes)
            )
            return str(self.api().inspect_image(tag)["Id"])
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise ImageBuildError(f"docker import of {tag} failed: {exc}") from exc


def _image_exists(api: Any, image: str) -> bool:
    try:
        api.inspect_image(image)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.NotFound:
        return False
    return True


def _api_failure(exc: Any, handle: str) -> RunResult:
    status = getattr(exc, "status_code", None)
    explanation = getattr(exc, "explanation", None) or str(exc)
    if status == 403:
        message = f"The Docker socket proxy refused a call the backend needs: {explanation}"
    else:
        message = f"Docker API error ({status}): {explanation}"
    return RunResult.failure(ErrorKind.BACKEND_ERROR, message, handle=handle)
