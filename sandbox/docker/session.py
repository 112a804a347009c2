"""One session in one container: start it, feed the supervisor each step, read its records.

The host never trusts the sandbox for more than the supervisor's records (``sandbox.supervisor``
holds the protocol): each must carry the session's nonce, name the step the host sent last,
and arrive before that step's deadline (its wall time plus the backend's ``grace_s``; the
first also allows for the container's start). A step is sent only once the observer has
accepted the one before, so a cancelled or failed execution runs nothing more.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests

from sandbox import supervisor
from sandbox.budget import RUN_OVERHEAD_S
from sandbox.contract import (
    ErrorKind,
    RunResult,
    Session,
    SessionObserver,
    compiled,
)
from sandbox.docker.config import case_memory_bytes, container_config_for
from sandbox.docker.streams import STDERR, Pump, _close_quietly, _raw_socket
from sandbox.policy import Limits

logger = logging.getLogger(__name__)

# How long to wait for the supervisor to exit after END before the container is killed.
EXIT_WAIT_S = 1.0
# The tail of the supervisor's stderr kept to explain a failure.
_DIAGNOSTIC_BYTES = 4096


@dataclass(frozen=True)
class _Step:
    kind: str  # "K": the compile step, "C": a case
    index: int
    command: tuple[str, ...]
    limits: Limits
    stdin: bytes

    def encode(self) -> bytes:
        return supervisor.step(self.kind, self.index, self.command, self.limits, self.stdin)


class DockerSession:
    """The host's side of one session; ``fail`` reports the current step's failure once."""

    def __init__(self, session: Session, observer: SessionObserver) -> None:
        self.session = session
        self.observer = observer
        steps = [
            _Step("C", index, tuple(session.command), session.limits, stdin)
            for index, stdin in enumerate(session.stdins)
        ]
        if session.compile is not None:
            compile_step = session.compile
            steps.insert(0, _Step("K", 0, tuple(compile_step.command), compile_step.limits, b""))
        self.steps = steps
        self.position = 0
        self.over = False
        self.diagnostics = bytearray()
        self.grace_s = 0.0
        self.ending = False  # END sent: the supervisor is on its way out
        self.api: Any = None
        self.container_id = ""
        self.memory = 0  # the container's memory limit, in bytes
        self.started = False  # the engine started the container: something of the session ran

    # -- reporting

    def fail(self, kind: ErrorKind, message: str) -> None:
        """The current step failed in the infrastructure: say so, once, and end."""
        if self.over:
            return
        self.over = True
        result = RunResult.failure(kind, message, handle=self.session.handle)
        step = self.steps[self.position]
        if step.kind == "K":
            self.observer.compile_ended(result)
        else:
            self.observer.case_ended(step.index, result)

    def _accept(self, record: supervisor.Record, pump: Pump) -> None:
        step = self.steps[self.position]
        if record.failed:
            self.fail(ErrorKind.BACKEND_ERROR, f"The session supervisor gave up: {record.message}")
            return
        if record.index != step.index:
            raise supervisor.ProtocolError(f"a record for step {record.index}, not {step.index}")
        result = record.result
        result.handle = self.session.handle
        if step.kind == "K":
            go_on = self.observer.compile_ended(result) and compiled(result)
        else:
            go_on = self.observer.case_ended(step.index, result)
        self.position += 1
        if not go_on or self.position == len(self.steps):
            # The supervisor exits at END, and an exited container is removed in a few
            # milliseconds where killing a running one takes tens.
            self.over = self.ending = True
            pump.send(supervisor.END)
            pump.finish()
            return
        following = self.steps[self.position]
        if step.kind == "K" and not self._narrow_memory():
            self.over = self.ending = True
            pump.send(supervisor.END)
            pump.finish()
            return
        # Case 0 was announced before the sandbox existed.
        if following.index > 0 and not self.observer.case_starting(
            following.index, self.session.handle
        ):
            self.over = self.ending = True
            pump.send(supervisor.END)
            pump.finish()
            return
        pump.send(following.encode())

    def _narrow_memory(self) -> bool:
        """After the compile step, hold the sandbox to the cases' memory: the compiler may
        need more than a case may use, and the memory limit is the container's. False (and
        the case's failure reported) when the engine would not."""
        memory = case_memory_bytes(self.session)
        if memory >= self.memory:
            return True
        try:
            self.api.update_container(self.container_id, mem_limit=memory, memswap_limit=memory)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            self.fail(
                ErrorKind.BACKEND_ERROR,
                f"Could not hold the sandbox to the cases' memory limit after the compile "
                f"step: {exc}",
            )
            return False
        self.memory = memory
        return True

    # -- the container

    def run(self, api: Any, runtime: str, *, grace_s: float) -> None:
        """Run every step in one container and remove it, on every path."""
        self.grace_s = grace_s
        try:
            binary = supervisor.binary()
        except supervisor.SupervisorUnavailable as exc:
            self.fail(ErrorKind.BACKEND_ERROR, str(exc))
            return
        nonce = secrets.token_hex(16)
        archive = supervisor.code_archive(self.session.files)
        container_id = ""
        attach: Any = None
        try:
            try:
                config = container_config_for(
                    self.session, supervisor_size=len(binary), runtime=runtime
                )
                container_id = api.create_container_from_config(config, name=self.session.handle)[
                    "Id"
                ]
                self.api, self.container_id = api, container_id
                self.memory = int(config["HostConfig"]["Memory"])
            except docker.errors.ImageNotFound:
                self.fail(
                    ErrorKind.BACKEND_ERROR,
                    f"Runtime image {self.session.image!r} is not on the Docker engine; build it "
                    "with executions.runtime_images (manage.py build_runtime_image).",
                )
                return
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    self.fail(
                        ErrorKind.BACKEND_ERROR,
                        f"A sandbox named {self.session.handle!r} already exists on the engine.",
                    )
                    return
                raise
            # Attach before start: nothing the supervisor writes can be missed.
            attach = api.attach_socket(
                container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            api.start(container_id)
            self.started = True
            pump = Pump(_raw_socket(attach))
            pump.send(binary + supervisor.session_start(nonce, archive) + self.steps[0].encode())
            self._follow(api, container_id, pump, nonce)
            if self.ending:
                _until_exit(pump, time.monotonic() + EXIT_WAIT_S)
        except docker.errors.NotFound:
            if not container_id:
                raise
            self._cancelled()
        except supervisor.ProtocolError as exc:
            self.fail(
                ErrorKind.BACKEND_ERROR,
                f"The session supervisor's stream broke the protocol ({exc}); its results are "
                "not trusted.",
            )
        finally:
            if attach is not None:
                _close_quietly(attach)
            if container_id:
                remove_container(api, container_id)

    def _follow(self, api: Any, container_id: str, pump: Pump, nonce: str) -> None:
        largest_output = max(step.limits.output_bytes for step in self.steps)
        reader = supervisor.RecordReader(nonce, max_payload=largest_output)
        deadline = self._deadline(first=True)
        while not self.over:
            frames = pump.receive(deadline)
            if frames is None:
                self._stream_ended(api, container_id)
                return
            if not frames and time.monotonic() >= deadline:
                step = self.steps[self.position]
                self.fail(
                    ErrorKind.BACKEND_ERROR,
                    f"The session supervisor did not report step {step.index} within "
                    f"{step.limits.wall_time_s + self.grace_s:g} s; the sandbox was removed.",
                )
                return
            for stream, chunk in frames:
                if stream == STDERR:
                    self.diagnostics += chunk
                    del self.diagnostics[:-_DIAGNOSTIC_BYTES]
                    continue
                position = self.position
                for record in reader.feed(chunk):
                    self._accept(record, pump)
                    if self.over:
                        return
                if self.position != position:
                    deadline = self._deadline(first=False)

    def _deadline(self, *, first: bool) -> float:
        step = self.steps[self.position]
        allowance = RUN_OVERHEAD_S if first else 0.0
        return time.monotonic() + step.limits.wall_time_s + self.grace_s + allowance

    def _stream_ended(self, api: Any, container_id: str) -> None:
        """The stream ended with steps left: a cancel, a broken image or a dead supervisor."""
        try:
            state = api.inspect_container(container_id)["State"]
            if state.get("Running"):
                api.wait(container_id, timeout=self.grace_s)
                state = api.inspect_container(container_id)["State"]
        except docker.errors.NotFound:
            self._cancelled()
            return
        except requests.exceptions.ReadTimeout:
            state = {}
        if state.get("Status") in ("removing", "dead"):
            self._cancelled()
            return
        said = bytes(self.diagnostics).decode(errors="replace").strip()
        code = state.get("ExitCode")
        if code == supervisor.LOADER_EXIT and supervisor.LOADER_MESSAGE in said:
            self.fail(
                ErrorKind.BACKEND_ERROR,
                f"The runtime image {self.session.image!r} could not start the session: it "
                f"needs /bin/sh, GNU head and chmod. {said[-500:]}",
            )
            return
        oom = " (out of memory)" if state.get("OOMKilled") else ""
        self.fail(
            ErrorKind.BACKEND_ERROR,
            f"The session sandbox ended before its step reported, exit status {code}{oom}. "
            + said[-500:],
        )

    def _cancelled(self) -> None:
        # Only a cancel, the janitor or an operator removes a container we created.
        self.fail(ErrorKind.CANCELLED, "The sandbox was stopped and removed before it finished.")


def _until_exit(pump: Pump, deadline: float) -> None:
    """Read the stream to its end (the supervisor exited), or until ``deadline``."""
    while time.monotonic() < deadline:
        if pump.receive(deadline) is None:
            return


def remove_container(api: Any, container_id: str) -> None:
    """Kill and delete the container and its anonymous volume; never raise."""
    try:
        api.remove_container(container_id, v=True, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        # 409: a cancel is already removing it.
        if exc.status_code != 409:
            logger.warning("could not remove container %s: %s", container_id, exc)
    except Exception as exc:
        # Left for remove_orphans; the session's results stand.
        logger.warning("could not remove container %s: %s", container_id, exc)
