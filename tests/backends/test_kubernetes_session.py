"""KubernetesBackend running a session (kubernetes/session.py, backend.py): one Job per
execution, its compile step, the observer told step by step, and the Jobs a session needs
beyond one.

The test plays the Job controller, the kubelet and the supervisor against the API emulator
(kmock): it reads the supervisor's stream from the ConfigMap and writes its records into the
container's log.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import replace
from typing import Any

from executions.backends.kubernetes import (
    COMPONENT_LABEL,
    EXECUTION_LABEL,
    HANDLE_LABEL,
    JOB_LABEL,
    MANAGED_BY_LABEL,
    KubernetesBackend,
)
from sandbox import supervisor
from sandbox.contract import ErrorKind

from .kube_emulator import CONFIGMAPS, JOBS, Emulator, Logs, configmap_files, now
from .kube_helpers import (
    HANDLE,
    NS,
    Cluster,
    Observer,
    assert_cleaned_up,
    every_case_echoes,
    job_creations,
    make_backend,
    make_request,
    make_session,
    play_session,
    record,
    wait_until,
)

# --- one Job per session ---------------------------------------------------------------------


def test_a_session_is_one_job_and_each_case_a_record_in_order(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    session = make_session()
    seen: dict[str, Any] = {}

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        seen["pod"] = pod
        every_case_echoes(cluster)

    observer = play_session(emulator, api_client, logs, backend, session, scenario)
    assert observer.events == [
        ("case_starting", 0),
        ("case_ended", 0),
        ("case_starting", 1),
        ("case_ended", 1),
        ("case_starting", 2),
        ("case_ended", 2),
    ]
    assert observer.handles == {HANDLE}, "one handle cancels the whole session"
    for index, stdin in enumerate(session.stdins):
        result = observer.results[index]
        assert result.error_kind is None, result.error_message
        assert (result.exit_code, result.signal, result.stdout) == (0, None, stdin)
        assert (result.wall_time_ms, result.cpu_time_ms) == (12, 8)
        assert result.peak_memory_bytes == 9 * 1024 * 1024
        assert result.handle == HANDLE
    assert job_creations(emulator) == [HANDLE], "one Job for the whole session"
    assert_cleaned_up(emulator)

    pod = seen["pod"]
    # The stream: no archive (the code is mounted), then one step per case with its stdin.
    assert pod.stream.archive == b""
    assert [(s.kind, s.index, s.argv, s.stdin) for s in pod.stream.steps] == [
        ("C", index, [b"python3", b"main.py"], stdin) for index, stdin in enumerate(session.stdins)
    ]
    assert pod.stream.steps[0].limits[:4] == (5000, 5000, 128 * 1024 * 1024, 1000)
    assert pod.compile_stream is None
    # What the container sees, byte for byte, where the supervisor looks for it.
    mounted = configmap_files(pod.configmap, pod.job)
    assert set(mounted) == {"session"}
    assert mounted["session"]["/sandbox/bin/supervisor"] == supervisor.binary()
    assert mounted["session"]["/sandbox/code/main.py"] == b"print(input())\n"
    assert mounted["session"]["/sandbox/code/pkg/util.py"] == b"\x00\x01binary"
    assert set(mounted["session"]) == {
        "/sandbox/bin/supervisor",
        "/sandbox/code/main.py",
        "/sandbox/code/pkg/util.py",
        "/sandbox/input/stream",
    }
    # Labels the NetworkPolicy, cancel and remove_orphans rely on, on every object.
    for obj in (pod.job, pod.job["spec"]["template"], pod.configmap):
        labels = obj["metadata"]["labels"]
        assert labels[MANAGED_BY_LABEL] == "evalplatform"
        assert labels[COMPONENT_LABEL] == "sandbox"
        assert labels[EXECUTION_LABEL] == "41"
        assert labels[HANDLE_LABEL] == HANDLE
        assert labels[JOB_LABEL] == HANDLE


def test_each_result_reaches_the_observer_while_the_session_runs(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    observer = Observer()

    def reported(count: int) -> bool:
        return len(observer.results) >= count

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.start()
        for index in range(3):
            pod.report(index, stdout=b"%d" % index)
            wait_until(functools.partial(reported, index + 1))
            assert len(observer.results) == index + 1, "a result came before its case ended"
        pod.end(0)

    play_session(emulator, api_client, logs, backend, make_session(), scenario, observer)
    assert [observer.results[i].stdout for i in range(3)] == [b"0", b"1", b"2"]


def test_run_is_a_session_of_one_case(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    request = make_request(wall_time_ms=1000)
    box: dict[str, Any] = {}

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        box["steps"] = pod.stream.steps
        pod.start()
        # Ended by itself, but slower than its wall time: a time-out all the same.
        pod.report(0, stdout=b"late", wall_ms=1500)
        pod.end(0)

    worker = threading.Thread(target=lambda: box.setdefault("r", backend.run(request)))
    worker.start()
    scenario(Cluster(emulator, api_client, logs, make_session(handle=request.handle)))
    worker.join(30)
    result = box["r"]
    assert [step.stdin for step in box["steps"]] == [request.stdin]
    assert (result.stdout, result.exit_code, result.timed_out) == (b"late", 0, True)
    assert_cleaned_up(emulator)


# --- the compile step ----------------------------------------------------------------------------


def test_the_compile_step_runs_first_in_an_init_container(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    session = make_session((b"1\n", b"2\n"), compile_command=("python3", "-m", "compileall", "."))
    seen: dict[str, Any] = {}

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        seen["pod"] = pod
        pod.compile(0, stdout=b"Listing '.'...\n")
        pod.start()
        pod.echo_every_case()
        pod.end(0)

    observer = play_session(emulator, api_client, logs, backend, session, scenario)
    assert observer.events == [
        ("case_starting", 0),
        ("compile_ended", 0),
        ("case_ended", 0),
        ("case_starting", 1),
        ("case_ended", 1),
    ]
    assert observer.compile_result is not None
    assert observer.compile_result.stdout == b"Listing '.'...\n"
    assert [observer.results[i].stdout for i in range(2)] == [b"1\n", b"2\n"]
    assert job_creations(emulator) == [HANDLE]
    assert_cleaned_up(emulator)

    pod = seen["pod"]
    assert pod.compile_stream is not None
    (compile_step,) = pod.compile_stream.steps
    assert (compile_step.kind, compile_step.argv, compile_step.stdin) == (
        "K",
        [b"python3", b"-m", b"compileall", b"."],
        b"",
    )
    assert pod.compile_stream.nonce != pod.stream.nonce, "each container has its own nonce"
    assert [step.kind for step in pod.stream.steps] == ["C", "C"]
    mounted = configmap_files(pod.configmap, pod.job)
    # The compile step sees its own stream and the source; the cases see only theirs.
    assert (
        mounted["compile"]["/sandbox/input/stream"] != mounted["session"]["/sandbox/input/stream"]
    )
    assert "/sandbox/code/main.py" in mounted["compile"]
    assert "/sandbox/code/main.py" not in mounted["session"], "the cases' code is the build"


def test_case_records_read_before_the_compile_record_wait_for_it(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    """Each container's log is read on its own: the cases' records may come first."""
    session = make_session((b"1\n", b"2\n"), compile_command=("make",))

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        assert pod.compile_stream is not None
        pod.create()
        pod.player.compiling()
        pod.player.compile_ended(0)
        pod.start()
        pod.echo_every_case()
        pod.end(0)
        time.sleep(0.3)
        pod.compile_log.write(record(pod.compile_stream.nonce, 0))
        pod.compile_log.close()

    observer = play_session(emulator, api_client, logs, backend, session, scenario)
    assert observer.events == [
        ("case_starting", 0),
        ("compile_ended", 0),
        ("case_ended", 0),
        ("case_starting", 1),
        ("case_ended", 1),
    ]
    assert [observer.results[i].stdout for i in range(2)] == [b"1\n", b"2\n"]


def test_a_failed_compile_step_ends_the_session_before_any_case(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    session = make_session(compile_command=("gcc", "main.c"))

    def scenario(cluster: Cluster) -> None:
        # The supervisor ends with status 1: the init container fails, the cases never start.
        cluster.pod().compile(1, stderr=b"main.c:1: error: expected ';'\n")

    observer = play_session(emulator, api_client, logs, backend, session, scenario)
    assert observer.events == [("case_starting", 0), ("compile_ended", 0)]
    result = observer.compile_result
    assert result is not None and result.error_kind is None, result
    assert result.exit_code == 1 and result.stderr == b"main.c:1: error: expected ';'\n"
    assert observer.results == {}
    assert_cleaned_up(emulator)


def test_a_compile_step_killed_for_memory_is_its_result(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    session = make_session(compile_command=("gcc", "main.c"))

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.create()
        pod.player.compiling()
        pod.compile_log.close()  # the kernel killed the supervisor before it could report
        pod.player.compile_ended(137, "OOMKilled")

    observer = play_session(emulator, api_client, logs, backend, session, scenario)
    result = observer.compile_result
    assert result is not None and result.error_kind is None, result
    assert result.oom_killed and (result.exit_code, result.signal) == (137, 9)
    assert observer.results == {}
    assert_cleaned_up(emulator)


# --- the observer ----------------------------------------------------------------------------


def test_an_observer_that_stops_after_a_case_has_the_job_deleted_at_once(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    observer = Observer(stop_after=("case_ended", 0))

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.start()
        pod.report(0, exit_code=1)
        # The container would go on with case 1; the backend does not wait for it.
        assert emulator.wait_gone(JOBS, NS, HANDLE), "the Job was not deleted"

    play_session(emulator, api_client, logs, backend, make_session(), scenario, observer)
    assert observer.events == [("case_starting", 0), ("case_ended", 0)]
    assert_cleaned_up(emulator)


def test_an_observer_that_refuses_the_next_case_stops_the_session(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    observer = Observer(stop_after=("case_starting", 1))

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.start()
        pod.report(0)
        assert emulator.wait_gone(JOBS, NS, HANDLE), "the Job was not deleted"

    play_session(emulator, api_client, logs, backend, make_session(), scenario, observer)
    assert observer.events == [("case_starting", 0), ("case_ended", 0), ("case_starting", 1)]
    assert set(observer.results) == {0}


def test_an_observer_that_refuses_the_first_case_creates_nothing(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    observer = Observer(stop_after=("case_starting", 0))
    backend.run_session(make_session(), observer)
    assert observer.events == [("case_starting", 0)]
    assert job_creations(emulator) == [] and emulator.names(JOBS, NS) == []


# --- cancel ----------------------------------------------------------------------------------


def test_a_cancel_mid_session_is_the_result_of_the_case_it_was_on(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    session = make_session(wall_time_ms=30_000)
    other = make_backend(api_client)  # as another worker process would have
    observer = Observer()

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.start()
        pod.report(0, stdout=b"first\n")
        wait_until(lambda: 0 in observer.results)
        started = time.monotonic()
        other.cancel(HANDLE)
        assert time.monotonic() - started < 1, "a cancel takes a few API calls"
        assert emulator.get(JOBS, NS, HANDLE) is None

    started = time.monotonic()
    play_session(emulator, api_client, logs, backend, session, scenario, observer)
    assert time.monotonic() - started < 20  # long before the 30 s wall time
    assert observer.results[0].stdout == b"first\n" and observer.results[0].error_kind is None
    assert observer.results[1].error_kind == ErrorKind.CANCELLED
    assert 2 not in observer.results
    assert_cleaned_up(emulator)


def test_a_cancel_before_the_pod_exists(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    def scenario(cluster: Cluster) -> None:
        cluster.pod()  # the Job exists
        backend.cancel(HANDLE)

    observer = play_session(emulator, api_client, logs, backend, make_session(), scenario)
    assert observer.only_failure() is observer.results[0]
    assert observer.results[0].error_kind == ErrorKind.CANCELLED
    assert_cleaned_up(emulator)


def test_a_cancel_between_the_configmap_and_the_job(
    emulator: Emulator, logs: Logs, backend: KubernetesBackend
) -> None:
    """The cancel found no Job yet and deleted the ConfigMap: the Job must not run on."""

    def create_job_after_the_cancel(request: Any) -> dict[str, Any]:
        del emulator.kmock.objects[CONFIGMAPS, NS, HANDLE]
        meta = {**request.data["metadata"], "uid": "job-uid-2", "creationTimestamp": now()}
        return {**request.data, "metadata": meta}

    route = f"post /apis/batch/v1/namespaces/{NS}/jobs"
    emulator.on_loop(lambda: (emulator.kmock[route] ** 10) << create_job_after_the_cancel)
    started = time.monotonic()
    observer = Observer()
    backend.run_session(make_session(), observer)
    assert time.monotonic() - started < 3, "not the pending timeout"
    assert observer.only_failure() is observer.results[0]
    assert observer.results[0].error_kind == ErrorKind.CANCELLED
    assert_cleaned_up(emulator)


# --- sessions beyond one Job -------------------------------------------------------------------


def test_a_case_killed_with_its_container_for_memory_and_the_rest_in_a_new_job(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    """On cgroup v2 the kubelet has the kernel kill the whole container when its memory runs
    out, the supervisor with the program: that is the case's result, and the cases after it
    run in a new Job."""
    seen: dict[str, Any] = {}

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.start()
        pod.report(0, stdout=b"small\n")
        pod.end(137, "OOMKilled")  # during case 1, before its record
        rest = cluster.pod(first=2)
        seen["rest"] = rest
        rest.start()
        rest.echo_every_case()
        rest.end(0)

    observer = play_session(emulator, api_client, logs, backend, make_session(), scenario)
    assert observer.events == [
        ("case_starting", 0),
        ("case_ended", 0),
        ("case_starting", 1),
        ("case_ended", 1),
        ("case_starting", 2),
        ("case_ended", 2),
    ]
    oom = observer.results[1]
    assert oom.error_kind is None and oom.oom_killed, oom
    assert (oom.exit_code, oom.signal) == (137, 9)
    assert observer.results[2].stdout == b""
    assert [step.index for step in seen["rest"].stream.steps] == [2]
    assert job_creations(emulator) == [HANDLE, f"{HANDLE}-2"]
    assert_cleaned_up(emulator)
    assert_cleaned_up(emulator, f"{HANDLE}-2")


def test_a_later_job_compiles_again_and_reports_only_its_cases(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    session = make_session((b"1", b"2"), compile_command=("make",))

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.compile(0)
        pod.start()
        pod.end(137, "OOMKilled")  # case 0
        rest = cluster.pod(first=1)
        rest.compile(0)
        rest.start()
        rest.echo_every_case()
        rest.end(0)

    observer = play_session(emulator, api_client, logs, backend, session, scenario)
    assert [event for event in observer.events if event[0] == "compile_ended"] == [
        ("compile_ended", 0)
    ], "the compile step's result is reported once"
    assert observer.results[0].oom_killed and observer.results[1].stdout == b"2"


def test_cases_whose_input_does_not_fit_one_configmap_run_in_several_jobs(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    stdins = [bytes([65 + index]) * 300_000 for index in range(3)]
    session = make_session(stdins)
    parts: list[Any] = []

    def scenario(cluster: Cluster) -> None:
        for first in (0, 2):
            pod = cluster.pod(first)
            parts.append(pod)
            pod.start()
            for step in pod.stream.steps:
                pod.report(step.index, stdout=step.stdin[:1])
            pod.end(0)

    observer = play_session(emulator, api_client, logs, backend, session, scenario)
    assert [[step.index for step in pod.stream.steps] for pod in parts] == [[0, 1], [2]]
    assert [observer.results[i].stdout for i in range(3)] == [b"A", b"B", b"C"]
    assert [step.stdin for pod in parts for step in pod.stream.steps] == stdins
    assert job_creations(emulator) == [HANDLE, f"{HANDLE}-2"]


def test_a_case_whose_input_alone_does_not_fit_fails_before_anything_is_created(
    emulator: Emulator, logs: Logs, backend: KubernetesBackend
) -> None:
    observer = Observer()
    backend.run_session(make_session([b"x" * (2 * 1024 * 1024)]), observer)
    failure = observer.only_failure()
    assert failure is observer.results[0]
    assert failure.error_kind == ErrorKind.BACKEND_ERROR and "ConfigMap" in failure.error_message
    assert "case 0" in failure.error_message
    assert job_creations(emulator) == []


def test_a_session_the_supervisor_cannot_run_is_refused(backend: KubernetesBackend) -> None:
    session = make_session()
    session = replace(session, policy=replace(session.policy, code_dir="/code"))
    observer = Observer()
    backend.run_session(session, observer)
    assert "/sandbox/code" in observer.only_failure().error_message
