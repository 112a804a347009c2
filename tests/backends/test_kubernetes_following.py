"""KubernetesBackend following a run (kubernetes/following.py): streams, exits, time-outs, pods.

The test plays the Job controller and the kubelet against the API emulator (kmock).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from executions.backends.kubernetes import (
    COMPONENT_LABEL,
    EXECUTION_LABEL,
    HANDLE_LABEL,
    MANAGED_BY_LABEL,
    KubernetesBackend,
)
from sandbox.contract import ErrorKind

from .kube_emulator import CONFIGMAPS, JOBS, PLAYER_AGENT, Emulator, KubeletPlayer, configmap_files
from .kube_helpers import (
    NS,
    assert_cleaned_up,
    finish,
    log_reads,
    make_backend,
    make_request,
    play,
    wait_for_log_reads,
)

# --- a run, start to end ---------------------------------------------------------------------


def test_success_returns_both_streams_and_cleans_up(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    logs.update({"program": b"hello\n\x00\xff", "stderr": b"warning\n"})
    seen: dict[str, Any] = {}
    request = make_request()

    def scenario(player: KubeletPlayer) -> None:
        seen["configmap"] = emulator.wait_for(CONFIGMAPS, NS, request.handle)
        seen["job"] = player.job
        finish(0)(player)

    result = play(emulator, api_client, backend, request, scenario)
    assert result.error_kind is None, result.error_message
    assert (result.exit_code, result.signal) == (0, None)
    assert (result.stdout, result.stderr) == (b"hello\n\x00\xff", b"warning\n")
    assert not (result.stdout_truncated or result.stderr_truncated)
    assert not (result.timed_out or result.oom_killed)
    assert result.handle == request.handle and result.wall_time_ms is not None
    assert_cleaned_up(emulator, request.handle)

    # The code and stdin arrived byte for byte, where the program looks for them.
    job = seen["job"]
    mounted = configmap_files(seen["configmap"], job)
    assert mounted == {
        "/sandbox/code/main.py": b"print('hello')\n",
        "/sandbox/code/pkg/util.py": b"\x00\x01binary",
        "/sandbox/stdin/stdin": b"input\x00\xff",
    }
    # Labels the NetworkPolicy and remove_orphans rely on, on every object.
    for obj in (job, job["spec"]["template"], seen["configmap"]):
        labels = obj["metadata"]["labels"]
        assert labels[MANAGED_BY_LABEL] == "evalplatform"
        assert labels[COMPONENT_LABEL] == "sandbox"
        assert labels[EXECUTION_LABEL] == "41"
        assert labels[HANDLE_LABEL] == request.handle


def test_logs_are_read_with_a_byte_cap_per_container(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    logs.update({"program": b"ok\n"})
    result = play(emulator, api_client, backend, make_request(output_bytes=1000), finish(0))
    assert result.stdout == b"ok\n" and result.stderr == b""
    asked = [
        (req.params.get("container"), req.params.get("limitBytes"), req.params.get("follow"))
        for req in log_reads(emulator)
    ]
    assert sorted(asked) == [("program", "1001", "true"), ("stderr", "1001", "true")]


def test_output_over_the_cap_is_truncated_and_the_sandbox_killed(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    logs.update({"program": b"y" * 5000, "stderr": b"e" * 3})
    request = make_request(output_bytes=100)

    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.running()  # never terminates by itself

    result = play(emulator, api_client, backend, request, scenario)
    assert result.error_kind is None, result.error_message
    assert result.stdout == b"y" * 100
    assert result.stdout_truncated and result.output_limit_exceeded
    assert (result.exit_code, result.signal, result.timed_out) == (None, None, False)
    assert_cleaned_up(emulator, request.handle)


def test_output_exactly_at_the_cap_is_not_truncated(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    logs.update({"program": b"z" * 100, "stderr": b"e" * 100})
    result = play(emulator, api_client, backend, make_request(output_bytes=100), finish(0))
    assert result.stdout == b"z" * 100 and not result.stdout_truncated
    assert result.stderr == b"e" * 100 and not result.stderr_truncated
    assert result.exit_code == 0


def test_stderr_over_the_cap_is_truncated_on_its_own(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    logs.update({"stderr": b"e" * 101})
    result = play(emulator, api_client, backend, make_request(output_bytes=100), finish(0))
    assert result.stderr == b"e" * 100
    assert result.stderr_truncated and not result.stdout_truncated


def test_nonzero_exit(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    logs.update({"stderr": b"Traceback ...\nSystemExit: 3\n"})
    request = make_request()
    result = play(emulator, api_client, backend, request, finish(3))
    assert result.error_kind is None, result.error_message
    assert (result.exit_code, result.signal, result.oom_killed) == (3, None, False)
    assert result.stderr.endswith(b"SystemExit: 3\n")
    assert_cleaned_up(emulator, request.handle)


def test_death_by_signal(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    result = play(emulator, api_client, backend, make_request(), finish(137))
    assert (result.exit_code, result.signal, result.oom_killed) == (137, 9, False)


def test_oom_killed(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    result = play(emulator, api_client, backend, make_request(), finish(137, "OOMKilled"))
    assert result.error_kind is None
    assert result.oom_killed and result.exit_code == 137 and not result.timed_out


def test_job_deadline_exceeded_is_a_time_out(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    logs.update({"program": b"start\n"})
    request = make_request(wall_time_ms=30_000)

    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.running()
        wait_for_log_reads(emulator)  # the program printed while it ran
        player.job_failed("DeadlineExceeded", "Job was active longer than specified deadline")
        player.delete_pod()  # the Job controller deletes the active pod

    result = play(emulator, api_client, backend, request, scenario)
    assert result.error_kind is None, result.error_message
    assert result.timed_out and result.exit_code is None
    assert result.stdout == b"start\n"
    assert_cleaned_up(emulator, request.handle)


def test_pod_deleted_for_the_jobs_deadline_is_a_time_out(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    """The Job controller may delete the pod before the backend sees the Job fail."""
    request = make_request(wall_time_ms=30_000)

    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.running()
        wait_for_log_reads(emulator)
        job = emulator.get(JOBS, NS, request.handle)
        assert job is not None
        job["status"] = {
            "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded"}
            ]
        }
        emulator.put(JOBS, NS, job)  # stored without a watch event
        player.delete_pod()

    result = play(emulator, api_client, backend, request, scenario)
    assert result.error_kind is None, result.error_message
    assert result.timed_out


def test_pod_removed_by_someone_else_is_a_cancel(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    request = make_request(wall_time_ms=30_000)

    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.running()
        player.delete_pod()

    result = play(emulator, api_client, backend, request, scenario)
    assert result.error_kind == ErrorKind.CANCELLED
    assert "pod was removed" in result.error_message
    assert_cleaned_up(emulator, request.handle)


def test_wall_time_is_enforced_by_the_runner(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    request = make_request(wall_time_ms=300)

    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.running()  # and never ends

    result = play(emulator, api_client, backend, request, scenario)
    assert result.error_kind is None, result.error_message
    assert result.timed_out and result.exit_code is None
    assert result.wall_time_ms is not None and result.wall_time_ms >= 300
    assert_cleaned_up(emulator, request.handle)


@pytest.mark.slow
def test_watches_resume_after_they_expire(
    emulator: Emulator, api_client: Any, logs: dict[str, bytes]
) -> None:
    # kmock ignores timeout_seconds; the client's read timeout (watch timeout + 5 s) ends
    # each watch instead, and the backend must start a new one without losing the run.
    backend = make_backend(api_client, watch_timeout_s=1)
    request = make_request(wall_time_ms=30_000)
    watches_before = len(
        [r for r in emulator.on_loop(lambda: list(emulator.kmock)) if "watch" in r.params]
    )

    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.running()
        deadline = time.monotonic() + 30
        while True:  # until both watches were opened a second time
            watches = [
                r
                for r in emulator.on_loop(lambda: list(emulator.kmock))
                if "watch" in r.params and r.headers.get("User-Agent") != PLAYER_AGENT
            ]
            if len(watches) - watches_before >= 4:
                break
            assert time.monotonic() < deadline, "the watches were never resumed"
            time.sleep(0.2)
        player.terminated(0)

    result = play(emulator, api_client, backend, request, scenario)
    assert result.error_kind is None, result.error_message
    assert result.exit_code == 0


# --- pods that never run -------------------------------------------------------------------------


def test_unschedulable_pod_fails_after_the_pending_timeout(
    emulator: Emulator, api_client: Any, logs: dict[str, bytes]
) -> None:
    backend = make_backend(api_client, pending_timeout_s=1)
    request = make_request()

    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.unschedulable("0/3 nodes are available: 3 Insufficient memory.")

    result = play(emulator, api_client, backend, request, scenario)
    assert result.error_kind == ErrorKind.BACKEND_ERROR
    assert "did not start within 1 s" in result.error_message
    assert "Unschedulable: 0/3 nodes are available: 3 Insufficient memory." in result.error_message
    assert_cleaned_up(emulator, request.handle)


def test_job_without_a_pod_says_where_to_look(emulator: Emulator, api_client: Any) -> None:
    backend = make_backend(api_client, pending_timeout_s=1)
    request = make_request()
    result = play(emulator, api_client, backend, request, lambda player: None)
    assert result.error_kind == ErrorKind.BACKEND_ERROR
    assert "created no pod within 1 s" in result.error_message
    assert f"describe job {request.handle}" in result.error_message
    assert_cleaned_up(emulator, request.handle)


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"])
def test_image_errors_fail_at_once(emulator: Emulator, api_client: Any, reason: str) -> None:
    backend = make_backend(api_client, pending_timeout_s=300)
    request = make_request()
    message = 'rpc error: code = NotFound desc = failed to pull "evalplatform/python:3.11"'

    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.image_error(reason, message)

    started = time.monotonic()
    result = play(emulator, api_client, backend, request, scenario)
    assert time.monotonic() - started < 60  # not the 300 s pending timeout
    assert result.error_kind == ErrorKind.BACKEND_ERROR
    assert f"{reason}: {message}" in result.error_message
    assert "evalplatform/python:3.11" in result.error_message
    assert_cleaned_up(emulator, request.handle)


def test_failed_preparation_names_what_the_image_lacks(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend
) -> None:
    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.patch_pod(
            {
                "phase": "Failed",
                "initContainerStatuses": [player._terminated("prepare", 127, "Error")],
            }
        )

    result = play(emulator, api_client, backend, make_request(), scenario)
    assert result.error_kind == ErrorKind.BACKEND_ERROR
    assert "mkfifo" in result.error_message and "127" in result.error_message
