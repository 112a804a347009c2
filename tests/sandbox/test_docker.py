"""DockerBackend against a real engine: the conformance suite (directly and through the
shipped HAProxy socket proxy), the rendered hardening, failures, slots, janitor and proxy."""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sandbox.contract import ErrorKind, RunResult
from sandbox.docker import MANAGED_LABEL, DockerBackend, SlotPool

from .conformance import BackendConformance, make_request, run_checked
from .sessions import SessionConformance

pytestmark = pytest.mark.real_service


@pytest.fixture
def backend(runtime_image: str, require_docker: dict[str, Any], slot_dir: str) -> DockerBackend:
    return DockerBackend(**require_docker, lock_dir=slot_dir)


class TestDockerDirect(BackendConformance, SessionConformance):
    """The suite against the engine's socket (the module's ``backend`` fixture)."""

    measures_peak_memory = True


class TestDockerThroughProxy(BackendConformance, SessionConformance):
    """The suite through HAProxy with the shipped allow-list: nothing it needs is refused."""

    measures_peak_memory = True

    @pytest.fixture
    def backend(self, runtime_image: str, docker_proxy_url: str, slot_dir: str) -> DockerBackend:
        return DockerBackend(base_url=docker_proxy_url, lock_dir=slot_dir)


# --- against the engine ---------------------------------------------------------------------------


def test_engine_applies_the_hardening(
    backend: DockerBackend, runtime_image: str, docker_api: Any
) -> None:
    request = make_request(runtime_image, "import time; time.sleep(3)", wall_time_ms=10000)
    box: dict[str, RunResult] = {}
    worker = threading.Thread(target=lambda: box.setdefault("r", backend.run(request)))
    worker.start()
    try:
        info = _wait_for_container(docker_api, request.handle)
        host = info["HostConfig"]
        assert info["State"]["Running"]
        assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] and not host["Init"]
        assert host["CapDrop"] == ["ALL"] and not host["Privileged"]
        assert sorted(host["CapAdd"]) == ["CAP_KILL", "CAP_SETGID", "CAP_SETUID"] or sorted(
            host["CapAdd"]
        ) == ["KILL", "SETGID", "SETUID"]
        assert host["SecurityOpt"] == ["no-new-privileges:true"]
        assert host["Memory"] == host["MemorySwap"]
        assert host["LogConfig"]["Type"] == "none"
        assert not host.get("Binds") and not info["Mounts"]
        assert set(host["Tmpfs"]) == {"/tmp", "/sandbox/code", "/sandbox/bin"}
        # Root is the supervisor's alone; the program's uid is checked by the attack corpus.
        assert info["Config"]["User"] == "0:0"
    finally:
        worker.join(timeout=15)
    assert box["r"].exit_code == 0


def _wait_for_container(docker_api: Any, handle: str) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = docker_api.containers(filters={"name": f"^/{handle}$", "status": "running"})
        if found:
            return docker_api.inspect_container(found[0]["Id"])
        time.sleep(0.05)
    raise AssertionError(f"container {handle} never ran")


def test_code_is_unpacked_by_root_into_memory_and_read_only_to_the_program(
    backend: DockerBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
) -> None:
    request = make_request(
        runtime_image,
        "import os\nfor p in ('.', 'main.py', 'pkg', 'pkg/m.py'):\n"
        "    s = os.stat(p); print(p, s.st_uid, s.st_gid, oct(s.st_mode & 0o7777))\n"
        "print([l for l in open('/proc/mounts') if ' /sandbox/code ' in l][0])",
        files={"pkg/m.py": b""},
    )
    result = run_checked(backend, request, sandbox_gone)
    lines = result.stdout.decode().splitlines()
    # Root's, and the program is uid 65534: it reads its code and cannot change it.
    assert lines[:4] == [
        ". 0 0 0o755",
        "main.py 0 0 0o444",
        "pkg 0 0 0o755",
        "pkg/m.py 0 0 0o444",
    ]
    # Memory-backed, so the submitted code never lands on the host's disk. Not noexec: a
    # compile step's program runs from here (scratch, which the program can write, is).
    _device, mountpoint, kind, options = lines[4].split()[:4]
    assert (kind, mountpoint) == ("tmpfs", "/sandbox/code")
    assert {"nosuid", "nodev"} <= set(options.split(","))


def test_the_memory_report_is_the_loaders_not_the_programs(
    backend: DockerBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
) -> None:
    # The program sees only its own stdin, and a report it forges stays its own stderr.
    forged = b"evalplatform-peak-" + b"0" * 32 + b"=1\n"
    request = make_request(
        runtime_image,
        f"import sys\nprint(repr(sys.stdin.read()))\nsys.stderr.buffer.write({forged!r})",
        stdin=b"only this\n",
    )
    result = run_checked(backend, request, sandbox_gone)
    assert result.stdout == b"'only this\\n'\n"
    assert result.stderr == forged
    assert result.peak_memory_bytes is not None and result.peak_memory_bytes > 1


def test_the_loaders_notices_do_not_reach_the_programs_stderr(
    backend: DockerBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
) -> None:
    # A shell announces a child's death by signal ("Segmentation fault") on its own stderr.
    request = make_request(runtime_image, "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)")
    result = run_checked(backend, request, sandbox_gone)
    assert (result.signal, result.stderr) == (11, b"")
    assert result.peak_memory_bytes is not None


def test_the_supervisor_unpacks_the_code_read_only_with_its_directories(
    backend: DockerBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
) -> None:
    source = """
import os, stat
for path in ("main.py", "pkg", "pkg/deep/data.txt"):
    info = os.stat(path)
    print(path, oct(stat.S_IMODE(info.st_mode)), info.st_uid)
print(open("pkg/deep/data.txt", "rb").read())
"""
    files = {"pkg/deep/data.txt": b"\x00line\n"}
    request = make_request(runtime_image, source, files=files)
    result = run_checked(backend, request, sandbox_gone)
    assert result.stdout.decode().splitlines() == [
        "main.py 0o444 0",
        "pkg 0o755 0",
        "pkg/deep/data.txt 0o444 0",
        "b'\\x00line\\n'",
    ], result.stderr


@pytest.mark.parametrize(
    ("archive", "says"),
    [
        (b"\x01" * 64, "bad file name length"),
        (b"7 1\n../x.pyX", "cannot unpack the file ../x.py: unsafe name"),
        (b"9 1\n/etc/x.pyX", "unsafe name"),
        (b"5 1\na//b.X", "unsafe name"),
        (b"3 1\na\x00bX", "unsafe name"),
        (b"3 1\nabcX3 1\nabcY", "cannot unpack the file abc: File exists"),
        (b"3 99\nabcX", "runs past the end"),
    ],
    ids=["garbage", "parent", "absolute", "empty part", "NUL", "twice", "past the end"],
)
def test_a_code_archive_the_supervisor_refuses_is_a_backend_error(
    backend: DockerBackend,
    runtime_image: str,
    sandbox_gone: Callable[[str], bool],
    archive: bytes,
    says: str,
) -> None:
    # What the host never sends: the supervisor checks every name again, as root.
    request = make_request(runtime_image, "print(1)")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sandbox.supervisor.code_archive", lambda files: archive)
        result = run_checked(backend, request, sandbox_gone, expect_error=ErrorKind.BACKEND_ERROR)
    assert says in result.error_message


def test_missing_image_is_a_backend_error(
    backend: DockerBackend, sandbox_gone: Callable[[str], bool]
) -> None:
    request = make_request("evalplatform/does-not-exist:0", "pass")
    result = run_checked(backend, request, sandbox_gone, expect_error=ErrorKind.BACKEND_ERROR)
    assert "evalplatform/does-not-exist:0" in result.error_message


def test_unsafe_file_name_is_refused_before_anything_is_created(
    backend: DockerBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
) -> None:
    request = make_request(runtime_image, "pass", files={"../escape.py": b""})
    result = run_checked(backend, request, sandbox_gone, expect_error=ErrorKind.BACKEND_ERROR)
    assert "unsafe file name" in result.error_message


def test_handle_clash_does_not_touch_the_other_container(
    backend: DockerBackend, runtime_image: str, docker_api: Any
) -> None:
    other = docker_api.create_container(
        runtime_image, command=["true"], name=f"evaltest-clash-{uuid.uuid4().hex[:8]}"
    )
    try:
        name = docker_api.inspect_container(other["Id"])["Name"].lstrip("/")
        request = dataclasses.replace(make_request(runtime_image, "pass"), handle=name)
        result = backend.run(request)
        assert result.error_kind == ErrorKind.BACKEND_ERROR
        assert "already exists" in result.error_message
        assert docker_api.inspect_container(other["Id"])  # still there
    finally:
        docker_api.remove_container(other["Id"], force=True, v=True)


@pytest.mark.parametrize("url", ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:1"])
def test_unreachable_engine(url: str, slot_dir: str) -> None:
    backend = DockerBackend(base_url=url, lock_dir=slot_dir)
    result = backend.run(make_request("img", "pass"))
    assert result.error_kind == ErrorKind.UNAVAILABLE
    assert url in result.error_message
    health = backend.health()
    assert not health.ok and url in health.detail


def test_health_reports_version_capacity_and_images(
    backend: DockerBackend, runtime_image: str
) -> None:
    health = backend.health(images=[runtime_image, "evalplatform/missing:0"])
    assert not health.ok
    assert "evalplatform/missing:0" in health.detail
    assert health.version and health.capacity == 4 and health.in_use is not None
    assert health.extra["images"] == {runtime_image: True, "evalplatform/missing:0": False}
    assert backend.health(images=[runtime_image]).ok


def test_describe_states_the_live_configuration() -> None:
    backend = DockerBackend(
        base_url="tcp://127.0.0.1:2375", runtime="runsc", max_concurrent_per_node=3
    )
    assert backend.describe().facts == {
        "Docker engine": "tcp://127.0.0.1:2375",
        "OCI runtime": "runsc",
        "sandboxes at once on this node": "3",
    }
    default = DockerBackend(base_url="unix:///var/run/docker.sock").describe().facts
    assert default["OCI runtime"] == "runc (the engine's default)"


def test_slots_cap_concurrency_then_fail_clearly(
    runtime_image: str,
    require_docker: dict[str, Any],
    tmp_path: Any,
    sandbox_gone: Callable[[str], bool],
) -> None:
    backend = DockerBackend(
        **require_docker, lock_dir=str(tmp_path), max_concurrent_per_node=1, slot_wait_s=0.5
    )
    with SlotPool(str(tmp_path), 1).acquire(0):  # another worker holds the only slot
        started = time.monotonic()
        busy = backend.run(make_request(runtime_image, "pass"))
        assert busy.error_kind == ErrorKind.UNAVAILABLE
        assert "slot" in busy.error_message
        assert time.monotonic() - started >= 0.5, "it waited slot_wait_s for the slot"
    # Released on every path: both a failed and a normal run leave the slot free.
    assert (
        backend.run(make_request("evalplatform/does-not-exist:0", "pass")).error_kind
        == ErrorKind.BACKEND_ERROR
    )
    assert (
        run_checked(backend, make_request(runtime_image, "print(1)"), sandbox_gone).stdout == b"1\n"
    )


def test_remove_orphans_takes_a_managed_container_that_exited_at_once(
    backend: DockerBackend, runtime_image: str, docker_api: Any
) -> None:
    # As an engine restart leaves one: its session over, nobody left to remove it.
    exited = docker_api.create_container(
        runtime_image, command=["true"], labels={MANAGED_LABEL: "1"}
    )
    try:
        docker_api.start(exited["Id"])
        docker_api.wait(exited["Id"], timeout=30)
        assert backend.remove_orphans(older_than_s=3600) >= 1
        assert not docker_api.containers(all=True, filters={"id": exited["Id"]})
    finally:
        with contextlib.suppress(Exception):
            docker_api.remove_container(exited["Id"], force=True, v=True)


def test_remove_orphans_only_takes_old_managed_containers(
    backend: DockerBackend, runtime_image: str, docker_api: Any
) -> None:
    managed = docker_api.create_container(
        runtime_image, command=["sleep", "600"], labels={MANAGED_LABEL: "1"}
    )
    unmanaged = docker_api.create_container(runtime_image, command=["sleep", "600"])
    try:
        docker_api.start(managed["Id"])
        assert backend.remove_orphans(older_than_s=3600) == 0
        time.sleep(1.1)
        assert backend.remove_orphans(older_than_s=1) >= 1
        assert not docker_api.containers(all=True, filters={"id": managed["Id"]})
        assert docker_api.containers(all=True, filters={"id": unmanaged["Id"]})
    finally:
        for container in (managed, unmanaged):
            with contextlib.suppress(Exception):  # already removed by the janitor
                docker_api.remove_container(container["Id"], force=True, v=True)


def test_cancel_refuses_unmanaged_containers(
    backend: DockerBackend, runtime_image: str, docker_api: Any
) -> None:
    name = f"evaltest-unmanaged-{uuid.uuid4().hex[:8]}"
    docker_api.create_container(runtime_image, command=["true"], name=name)
    try:
        backend.cancel(name)
        assert docker_api.containers(all=True, filters={"name": f"^/{name}$"})
    finally:
        docker_api.remove_container(name, force=True, v=True)


# --- the socket proxy -----------------------------------------------------------------------------


@pytest.fixture
def proxy(docker_proxy_url: str) -> Iterator[Callable[[str, str], int]]:
    host, port = docker_proxy_url.removeprefix("tcp://").split(":")

    def status(method: str, path: str) -> int:
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            body = b"{}" if method in ("POST", "PUT") else None
            headers = {"Content-Type": "application/json"} if body else {}
            connection.request(method, path, body=body, headers=headers)
            return connection.getresponse().status
        finally:
            connection.close()

    yield status


FORBIDDEN = [
    ("GET", "/info"),
    ("GET", "/v1.41/info"),
    ("POST", "/images/create?fromImage=alpine&tag=latest"),
    ("POST", "/v1.41/images/create?fromImage=alpine"),
    ("POST", "/build"),
    ("POST", "/v1.41/build?t=x"),
    ("POST", "/containers/x/exec"),
    ("POST", "/v1.41/containers/x/exec"),
    ("POST", "/exec/abc/start"),
    ("GET", "/volumes"),
    ("POST", "/v1.41/volumes/create"),
    ("GET", "/networks"),
    ("POST", "/networks/create"),
    ("POST", "/swarm/init"),
    ("GET", "/plugins"),
    ("GET", "/system/df"),
    ("GET", "/events"),
    ("GET", "/v1.41/containers/x/archive?path=/"),
    ("PUT", "/v1.41/containers/x/archive?path=/"),
    ("POST", "/v1.41/containers/x/commit"),
    ("POST", "/commit?container=x"),
    ("POST", "/v1.41/containers/prune"),
    ("DELETE", "/v1.41/images/evalplatform/python:3.11"),
    ("GET", "/v1.41/containers/../info"),
    ("GET", "/v1.41/containers/%2e%2e/info"),
    ("GET", "/v1.41/secrets"),
    ("POST", "/session"),
    ("GET", "/v1.41/containers/x/export"),
    ("GET", "/v1.41/images/get"),
    ("POST", "/v1.41/images/load"),
]


@pytest.mark.parametrize(("method", "path"), FORBIDDEN)
def test_proxy_refuses_calls_the_backend_does_not_make(
    proxy: Callable[[str, str], int], method: str, path: str
) -> None:
    assert proxy(method, path) == 403


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_ping"),
        ("GET", "/version"),
        ("GET", "/v1.41/containers/json"),
        ("GET", "/v1.41/images/evalplatform/python:3.11/json"),
    ],
)
def test_proxy_admits_what_the_backend_needs(
    proxy: Callable[[str, str], int], runtime_image: str, method: str, path: str
) -> None:
    assert proxy(method, path) == 200


def test_health_and_janitor_work_through_the_proxy(
    docker_proxy_url: str, runtime_image: str, require_docker: dict[str, Any]
) -> None:
    backend = DockerBackend(base_url=docker_proxy_url, images=[runtime_image])
    health = backend.health()
    assert health.ok, health.detail
    # An orphan: a managed container that no worker will ever wait for.
    engine = DockerBackend(**require_docker).api()
    name = f"evaltest-orphan-{uuid.uuid4().hex[:8]}"
    engine.create_container(runtime_image, command=["true"], labels={MANAGED_LABEL: "1"}, name=name)

    def exists() -> bool:
        return bool(engine.containers(all=True, filters={"name": f"^/{name}$"}))

    try:
        backend.remove_orphans(older_than_s=24 * 3600)
        assert exists(), "a container younger than the cut-off is left alone"
        # Every managed container at least as old as this one goes: the suite runs one test
        # at a time, so no live run is among them.
        assert backend.remove_orphans(older_than_s=-1) >= 1
        assert not exists()
    finally:
        with contextlib.suppress(Exception):
            engine.remove_container(name, force=True)
