"""Benchmark DockerBackend against the raw Docker SDK floor, in the same run.

The floor is what any hardened docker-py runner must do: create (the backend's own rendered
hardening around one plain process as uid 65534, with a capped json-file log instead of
attach), start, wait, logs, remove. The backend adds the code and supervisor tmpfs, the
supervisor and the code streamed over the attach connection, and node-wide slots. Both run a trivial
Python program; every figure is also printed as a ratio to the floor measured alongside it
(runs alternate so both see the same machine).

    .venv/bin/python bench/docker_bench.py [--runs 30] [--image evalplatform/python:3.11]

This is a measurement, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox.contract import ExecutionBackend, RunRequest, Session
from sandbox.docker import DockerBackend, container_config_for
from sandbox.policy import Limits, SandboxPolicy

POLICY = SandboxPolicy(limits=Limits(wall_time_ms=10_000, memory_mb=128, output_bytes=65536))


def request(image: str) -> RunRequest:
    return RunRequest(
        execution_id=0,
        handle=f"evalbench-{uuid.uuid4().hex[:12]}",
        image=image,
        command=("python3", "main.py"),
        files={"main.py": b"pass\n"},
        stdin=b"",
        policy=POLICY,
    )


def raw_config(image: str) -> dict[str, Any]:
    """The backend's hardening around one plain process: what a hand-rolled hardened
    ``docker run`` does (no supervisor, no code tmpfs, no attach; a capped json-file log)."""
    policy = POLICY
    config = container_config_for(Session.of_request(request(image)), supervisor_size=0)
    config["Entrypoint"], config["Cmd"] = ["python3"], ["-c", "pass"]
    config["WorkingDir"] = "/"
    config["User"] = "{}:{}".format(*policy.user)
    for key in ("AttachStdin", "OpenStdin", "StdinOnce"):
        config[key] = False
    host = config["HostConfig"]
    host["Tmpfs"] = {policy.scratch_dir: host["Tmpfs"][policy.scratch_dir]}
    host["CapAdd"] = []
    host["Init"] = True
    host["Memory"] = host["MemorySwap"] = policy.limits.memory_bytes
    host["LogConfig"] = {"Type": "json-file", "Config": {"max-size": "1m"}}
    return config


def raw_run(backend: DockerBackend, config: dict[str, Any]) -> None:
    api = backend.api()
    container = api.create_container_from_config(config, name=f"evalbench-{uuid.uuid4().hex[:12]}")
    try:
        api.start(container["Id"])
        api.wait(container["Id"], timeout=30)
        api.logs(container["Id"], stdout=True, stderr=True)
    finally:
        api.remove_container(container["Id"], v=True, force=True)


def backend_run(backend: ExecutionBackend, image: str) -> None:
    result = backend.run(request(image))
    if result.error_kind or result.exit_code != 0:
        raise SystemExit(f"backend run failed: {result}")


def timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[18]


def throughput(action: Callable[[], None], concurrency: int, runs: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(action) for _ in range(runs)]:
            future.result()
    return runs / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="sequential runs of each kind")
    parser.add_argument("--image", default="evalplatform/python:3.11")
    parser.add_argument(
        "--base-url",
        default=None,
        help="engine URL for the backend, e.g. the socket proxy (default $DOCKER_HOST)",
    )
    args = parser.parse_args()

    slots = tempfile.TemporaryDirectory(prefix="evalbench-slots-")
    options: dict[str, Any] = {"lock_dir": slots.name}
    floor = DockerBackend(**options)  # the raw floor always talks to the engine directly
    if args.base_url:
        options["base_url"] = args.base_url
    backend = DockerBackend(**options, max_concurrent_per_node=4)
    config = raw_config(args.image)
    raw: Callable[[], None] = lambda: raw_run(floor, config)  # noqa: E731
    ours: Callable[[], None] = lambda: backend_run(backend, args.image)  # noqa: E731

    print(
        f"floor via {floor.base_url}, backend via {backend.base_url}, image {args.image}, "
        f"{args.runs} runs each, warming up ..."
    )
    for _ in range(3):
        raw()
        ours()

    raw_times, our_times = [], []
    for _ in range(args.runs):  # alternate so drift hits both alike
        raw_times.append(timed(raw))
        our_times.append(timed(ours))
    raw_median, our_median = statistics.median(raw_times), statistics.median(our_times)
    print("\nper run (seconds)          median      p95")
    print(f"  raw docker-py floor      {raw_median:7.3f}  {p95(raw_times):7.3f}")
    print(f"  DockerBackend.run        {our_median:7.3f}  {p95(our_times):7.3f}")
    print(
        f"  ratio backend/raw        {our_median / raw_median:7.2f}x "
        f"{p95(our_times) / p95(raw_times):7.2f}x   (target <= 1.15x)"
    )

    print("\nthroughput (runs/s)   raw     backend  ratio")
    for concurrency in (1, 2, 4):
        runs = max(8, args.runs // 2) * concurrency
        raw_rate = throughput(raw, concurrency, runs)
        our_rate = throughput(ours, concurrency, runs)
        print(
            f"  concurrency {concurrency}     {raw_rate:6.2f}  {our_rate:6.2f}  "
            f"{our_rate / raw_rate:5.2f}x"
        )
    slots.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
