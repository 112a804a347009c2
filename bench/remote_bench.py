"""Benchmark the remote hop: RemoteBackend vs DockerBackend vs the raw Docker SDK floor.

Starts ``python -m execution_service`` on a loopback port over the same engine, then runs a
trivial program alternately through the raw docker-py floor (see ``docker_bench``), a local
``DockerBackend`` and a ``RemoteBackend`` talking to that service, and prints each figure as
a ratio to the floor measured in the same run. The difference between the remote and the
local backend is the cost of the hop: signing, JSON and base64, HTTP, and the long poll.

    .venv/bin/python bench/remote_bench.py [--runs 30] [--image evalplatform/python:3.11]

This is a measurement, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from docker_bench import backend_run, p95, raw_config, raw_run, throughput, timed  # noqa: E402

from executions.backends.remote import RemoteBackend  # noqa: E402
from sandbox.docker import DockerBackend  # noqa: E402


def start_service(secret: str, lock_dir: str, log_path: str) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["EXECUTION_SERVICE_SECRET"] = secret
    log = open(log_path, "wb")  # noqa: SIM115  (kept open for the child's lifetime)
    process = subprocess.Popen(
        [sys.executable, "-m", "execution_service", "--port", "0", "--lock-dir", lock_dir],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in Path(log_path).read_text().splitlines():
            if line.startswith("listening on "):
                return process, "http://" + line.removeprefix("listening on ").strip()
        time.sleep(0.05)
    process.kill()
    raise SystemExit(f"the execution service did not start: {Path(log_path).read_text()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="sequential runs of each kind")
    parser.add_argument("--image", default="evalplatform/python:3.11")
    args = parser.parse_args()

    work = tempfile.TemporaryDirectory(prefix="evalbench-remote-")
    secret = secrets.token_urlsafe(40)
    process, url = start_service(secret, f"{work.name}/service-slots", f"{work.name}/log")
    try:
        floor = DockerBackend(lock_dir=f"{work.name}/floor-slots")
        local = DockerBackend(lock_dir=f"{work.name}/local-slots", max_concurrent_per_node=4)
        remote = RemoteBackend(urls=[url], secret=secret)
        config = raw_config(args.image)
        kinds: dict[str, Callable[[], None]] = {
            "raw docker-py floor": lambda: raw_run(floor, config),
            "DockerBackend.run": lambda: backend_run(local, args.image),
            "RemoteBackend.run": lambda: backend_run(remote, args.image),
        }
        print(f"service at {url}, image {args.image}, {args.runs} runs each, warming up ...")
        for _ in range(3):
            for action in kinds.values():
                action()
        times: dict[str, list[float]] = {name: [] for name in kinds}
        for _ in range(args.runs):  # interleave so drift hits every path alike
            for name, action in kinds.items():
                times[name].append(timed(action))
        floor_median = statistics.median(times["raw docker-py floor"])
        local_median = statistics.median(times["DockerBackend.run"])
        print("\nper run (seconds)          median      p95   ratio to floor")
        for name, samples in times.items():
            median = statistics.median(samples)
            print(
                f"  {name:<24} {median:7.3f}  {p95(samples):7.3f}   {median / floor_median:5.2f}x"
            )
        remote_median = statistics.median(times["RemoteBackend.run"])
        print(
            f"  remote hop: +{(remote_median - local_median) * 1000:.0f} ms median, "
            f"{remote_median / local_median:.2f}x the local backend"
        )
        print("\nthroughput (runs/s)   raw     local   remote  remote/raw")
        for concurrency in (1, 2, 4):
            runs = max(8, args.runs // 2) * concurrency
            rates = [throughput(action, concurrency, runs) for action in kinds.values()]
            print(
                f"  concurrency {concurrency}     {rates[0]:6.2f}  {rates[1]:6.2f}  {rates[2]:6.2f}"
                f"  {rates[2] / rates[0]:5.2f}x"
            )
    finally:
        process.terminate()
        process.wait(timeout=10)
        work.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
