"""KubernetesBackend following a Job (kubernetes/following.py): the supervisor's records in the
logs, what a hostile or broken log gets, time, and pods that end, vanish or never run.

The test plays the Job controller, the kubelet and the supervisor against the API emulator
(kmock).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from executions.backends.kubernetes import KubernetesBackend
from sandbox import supervisor
from sandbox.contract import ErrorKind

from .kube_emulator import JOBS, PLAYER_AGENT, Emulator, Logs
from .kube_helpers import (
    HANDLE,
    NS,
    Cluster,
    Observer,
    SandboxPod,
    assert_cleaned_up,
    make_backend,
    make_session,
    play_session,
    record,
    wait_until,
)


def log_reads(emulator: Emulator) -> list[Any]:
    return [
        req
        for req in emulator.on_loop(lambda: list(emulator.kmock))
        if str(req.url.path).endswith("/log")
    ]


# --- what a record says --------------------------------------------------------------------------


def test_every_field_of_a_record_reaches_the_result(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    flags = (
        supervisor.TIMED_OUT
        | supervisor.OUT_OF_MEMORY
        | supervisor.STDOUT_TRUNCATED
        | supervisor.STDERR_TRUNCATED
    )

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.start()
        pod.report(0, exit_code=-1, signal=9, wall_ms=5000, cpu_ms=4990, flags=flags,
                   peak_bytes=0, stdout=b"o" * 1000, stderr=b"e" * 1000)  # fmt: skip
        pod.report(1, exit_code=3, stderr=b"Traceback ...\nSystemExit: 3\n")
        pod.report(2, exit_code=-1, signal=11)
        pod.end(0)

    observer = play_session(emulator, api_client, logs, backend, make_session(), scenario)
    killed, failed, crashed = (observer.results[i] for i in range(3))
    assert (killed.exit_code, killed.signal) == (137, 9)
    assert killed.timed_out and killed.oom_killed
    assert killed.stdout_truncated and killed.stderr_truncated
    assert (killed.stdout, killed.stderr) == (b"o" * 1000, b"e" * 1000)
    assert (killed.wall_time_ms, killed.cpu_time_ms, killed.peak_memory_bytes) == (5000, 4990, None)
    assert (failed.exit_code, failed.signal) == (3, None)
    assert failed.stderr.endswith(b"SystemExit: 3\n") and not failed.timed_out
    assert (crashed.exit_code, crashed.signal) == (139, 11)


def test_logs_are_read_with_a_byte_cap_per_container(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    session = make_session(compile_command=("make",), output_bytes=1000)

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.compile(0)
        pod.start()
        pod.echo_every_case()
        pod.end(0)

    play_session(emulator, api_client, logs, backend, session, scenario)
    asked = sorted(
        (req.params.get("container"), req.params.get("limitBytes"), req.params.get("follow"))
        for req in log_reads(emulator)
    )
    # Every record of the container's steps: a header line, two capped outputs, a newline.
    assert asked == [("compile", "2513", "true"), ("session", str(3 * 2513), "true")]


# --- logs that cannot be trusted -----------------------------------------------------------------

HOSTILE: dict[str, Callable[[SandboxPod], bytes]] = {
    "another nonce": lambda pod: record("0123456789abcdef", 1),
    "a garbled header": lambda pod: b"hello from the program\n",
    "a header that never ends": lambda pod: b"x" * 600,
    "another step": lambda pod: record(pod.stream.nonce, 2),
    "a step again": lambda pod: record(pod.stream.nonce, 0),
    "a payload over the cap": lambda pod: record(pod.stream.nonce, 1, stdout=b"y" * 1001),
    "a negative length": lambda pod: f"{pod.stream.nonce} R 1 0 0 1 1 1 0 -5 0\n".encode(),
    "a record that does not end its line": lambda pod: record(pod.stream.nonce, 1)[:-1] + b"x",
}


@pytest.mark.parametrize("hostile", sorted(HOSTILE))
def test_a_log_that_breaks_the_protocol_fails_the_step_it_happened_in(
    hostile: str, emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.start()
        pod.report(0, stdout=b"fine\n")
        pod.log.write(HOSTILE[hostile](pod))
        pod.end(0)

    observer = play_session(emulator, api_client, logs, backend, make_session(), scenario)
    assert observer.results[0].stdout == b"fine\n" and observer.results[0].error_kind is None
    failure = observer.only_failure()
    assert failure is observer.results[1], "the failure belongs to the step it happened in"
    assert failure.error_kind == ErrorKind.BACKEND_ERROR
    assert "not trusted" in failure.error_message, failure.error_message
    assert 2 not in observer.results
    assert_cleaned_up(emulator)


def test_a_log_that_ends_inside_a_record_fails_the_step(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.start()
        pod.log.write(record(pod.stream.nonce, 0, stdout=b"0123456789")[:-4])
        pod.end(0)

    observer = play_session(emulator, api_client, logs, backend, make_session(), scenario)
    failure = observer.only_failure()
    assert failure is observer.results[0]
    assert "ended inside a record" in failure.error_message


def test_a_supervisor_that_gives_up_fails_the_step(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.start()
        pod.report(0)
        pod.report(1, kind="X", stdout=b"could not empty scratch")
        pod.end(2, "Error")

    observer = play_session(emulator, api_client, logs, backend, make_session(), scenario)
    failure = observer.only_failure()
    assert failure is observer.results[1]
    assert failure.error_message == "The session supervisor gave up: could not empty scratch"


def test_a_container_that_ends_without_its_record_fails_the_step(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.start()
        pod.report(0)
        pod.end(128, "StartError")

    observer = play_session(emulator, api_client, logs, backend, make_session(), scenario)
    failure = observer.only_failure()
    assert failure is observer.results[1]
    assert failure.error_message == (
        "The sandbox's session container ended before case 1 reported (exit code 128, StartError)."
    )


# --- time --------------------------------------------------------------------------------------


def test_a_step_that_does_not_report_in_time_fails_and_the_job_is_deleted(
    emulator: Emulator, api_client: Any, logs: Logs
) -> None:
    backend = make_backend(api_client, grace_s=0.2)
    session = make_session(wall_time_ms=300)
    observer = Observer()

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.start()
        pod.report(0)
        # Case 1 never reports.
        assert emulator.wait_gone(JOBS, NS, HANDLE), "the Job was not deleted"

    started = time.monotonic()
    play_session(emulator, api_client, logs, backend, session, scenario, observer)
    assert time.monotonic() - started < 10
    failure = observer.only_failure()
    assert failure is observer.results[1]
    assert failure.error_kind == ErrorKind.BACKEND_ERROR
    assert "did not report case 1 within 0.5 s" in failure.error_message
    assert_cleaned_up(emulator)


def test_each_step_has_its_own_deadline(emulator: Emulator, api_client: Any, logs: Logs) -> None:
    """Three steps of 0.6 s each may take 1.8 s in all: the clock restarts with each record."""
    backend = make_backend(api_client, grace_s=0.2)
    session = make_session(wall_time_ms=600)

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.start()
        for index in range(3):
            time.sleep(0.5)
            pod.report(index)
        pod.end(0)

    observer = play_session(emulator, api_client, logs, backend, session, scenario)
    assert all(observer.results[i].error_kind is None for i in range(3)), observer.results


def test_job_deadline_exceeded_fails_the_step(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    session = make_session(wall_time_ms=30_000)
    observer = Observer()

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.start()
        pod.report(0)
        wait_until(lambda: 0 in observer.results)
        pod.player.job_failed("DeadlineExceeded", "Job was active longer than specified deadline")
        pod.player.delete_pod()  # the Job controller deletes the active pod

    play_session(emulator, api_client, logs, backend, session, scenario, observer)
    failure = observer.only_failure()
    assert failure is observer.results[1]
    assert failure.error_kind == ErrorKind.BACKEND_ERROR
    assert f"The sandbox Job {HANDLE} reached its deadline before case 1" in failure.error_message
    assert_cleaned_up(emulator)


def test_pod_deleted_for_the_jobs_deadline_fails_the_step(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    """The Job controller may delete the pod before the backend sees the Job fail."""

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.start()
        wait_until(lambda: len(log_reads(emulator)) == 1)
        job = emulator.get(JOBS, NS, HANDLE)
        assert job is not None
        job["status"] = {
            "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded"}
            ]
        }
        emulator.put(JOBS, NS, job)  # stored without a watch event
        pod.player.delete_pod()

    observer = play_session(emulator, api_client, logs, backend, make_session(), scenario)
    failure = observer.only_failure()
    assert failure is observer.results[0]
    assert "reached its deadline" in failure.error_message


def test_pod_removed_by_someone_else_is_a_cancel(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    observer = Observer()

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.start()
        pod.report(0)
        wait_until(lambda: 0 in observer.results)
        pod.player.delete_pod()

    play_session(emulator, api_client, logs, backend, make_session(), scenario, observer)
    failure = observer.only_failure()
    assert failure is observer.results[1]
    assert failure.error_kind == ErrorKind.CANCELLED
    assert "pod was removed" in failure.error_message
    assert_cleaned_up(emulator)


@pytest.mark.slow
def test_watches_resume_after_they_expire(emulator: Emulator, api_client: Any, logs: Logs) -> None:
    # kmock ignores timeout_seconds; the client's read timeout (watch timeout + 5 s) ends
    # each watch instead, and the backend must start a new one without losing the run.
    backend = make_backend(api_client, watch_timeout_s=1)
    session = make_session(wall_time_ms=30_000)

    def watches() -> list[Any]:
        return [
            r
            for r in emulator.on_loop(lambda: list(emulator.kmock))
            if "watch" in r.params and r.headers.get("User-Agent") != PLAYER_AGENT
        ]

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.start()
        # Until both watches were opened a second time.
        wait_until(lambda: len(watches()) >= 4, timeout=30)
        pod.echo_every_case()
        pod.end(0)

    observer = play_session(emulator, api_client, logs, backend, session, scenario)
    assert [observer.results[i].stdout for i in range(3)] == list(session.stdins)


# --- pods that never run -------------------------------------------------------------------------


def test_unschedulable_pod_fails_after_the_pending_timeout(
    emulator: Emulator, api_client: Any, logs: Logs
) -> None:
    backend = make_backend(api_client, pending_timeout_s=1)

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.player.create_pod()
        pod.player.unschedulable("0/3 nodes are available: 3 Insufficient memory.")

    observer = play_session(emulator, api_client, logs, backend, make_session(), scenario)
    failure = observer.only_failure()
    assert failure is observer.results[0]
    assert failure.error_kind == ErrorKind.BACKEND_ERROR
    assert "did not start within 1 s" in failure.error_message
    assert "Unschedulable: 0/3 nodes are available: 3 Insufficient memory." in (
        failure.error_message
    )
    assert_cleaned_up(emulator)


def test_job_without_a_pod_says_where_to_look(
    emulator: Emulator, api_client: Any, logs: Logs
) -> None:
    backend = make_backend(api_client, pending_timeout_s=1)
    observer = play_session(
        emulator, api_client, logs, backend, make_session(), lambda cluster: None
    )
    failure = observer.only_failure()
    assert "created no pod within 1 s" in failure.error_message
    assert f"describe job {HANDLE}" in failure.error_message
    assert_cleaned_up(emulator)


@pytest.mark.parametrize("compiles", [False, True], ids=["cases", "compile step"])
@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"])
def test_image_errors_fail_the_first_step_at_once(
    emulator: Emulator, api_client: Any, logs: Logs, reason: str, compiles: bool
) -> None:
    backend = make_backend(api_client, pending_timeout_s=300)
    session = make_session(compile_command=("make",) if compiles else ())
    message = 'rpc error: code = NotFound desc = failed to pull "evalplatform/python:3.11"'

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.player.create_pod()
        pod.player.image_error(reason, message)

    started = time.monotonic()
    observer = play_session(emulator, api_client, logs, backend, session, scenario)
    assert time.monotonic() - started < 60  # not the 300 s pending timeout
    failure = observer.only_failure()
    assert failure is (observer.compile_result if compiles else observer.results[0])
    assert failure.error_kind == ErrorKind.BACKEND_ERROR
    container = "compile" if compiles else "session"
    assert f"could not start container {container!r}: {reason}: {message}" in (
        failure.error_message
    )
    assert_cleaned_up(emulator)


def test_a_session_ending_normally_reads_no_more_than_its_records(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    """The backend needs nothing after the last record: no waiting for the pod's end."""
    observer = Observer()

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.start()
        pod.echo_every_case()
        assert emulator.wait_gone(JOBS, NS, HANDLE), "the Job outlived its last record"
        pod.log.close()

    play_session(emulator, api_client, logs, backend, make_session(), scenario, observer)
    assert len(observer.results) == 3
