"""Benchmark a compiled evaluation end to end: C++, 20 test cases, one compile.

The platform compiles once per execution and runs every case as a fresh process in the same
sandbox. A runner without sessions compiles in one container, then starts a container per
case. The target: the whole 20-case evaluation, submitted to done, takes less than compiling
plus *two* raw container runs, measured in the same run:

* compile: a hardened raw docker-py container (``bench/docker_bench.raw_config``) that runs
  the same ``g++`` command on the same source;
* a raw run: the same hardened container running ``true``, the floor of any container run.

    .venv/bin/python bench/compiled_bench.py [--runs 10]

This is a measurement, not a test: it asserts nothing. It needs a Docker engine and the
``gcc`` image of the runtime catalogue (``make runtimes``), and uses a throw-away database.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CASES = 20
ENTRY = "cpp17-gcc12"
SOURCE = (
    "#include <iostream>\n#include <vector>\n#include <algorithm>\n\n"
    "int main() {\n    long long n;\n    std::cin >> n;\n"
    "    std::vector<long long> v(n);\n    for (long long i = 0; i < n; ++i) v[i] = n - i;\n"
    '    std::sort(v.begin(), v.end());\n    std::cout << v.size() << "\\n";\n}\n'
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="alternating runs of each kind")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="evalbench-compiled-")
    from end_to_end_bench import configure

    environ = configure(workdir, workers=2)

    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from docker_bench import raw_config, raw_run, timed

    from executions import catalogue, services
    from executions.models import Execution
    from executions.runtime_images import ensure_images
    from executions.selectors import execution_wait
    from sandbox.docker import DockerBackend

    entry = catalogue.ENTRY_BY_NAME[ENTRY]
    image = catalogue.IMAGES[entry.image].tag
    ensure_images([entry.image], log=print)
    call_command("migrate", verbosity=0)
    user = User.objects.create_user("bench")
    (synced,) = services.runtimes_sync([entry])
    runtime = synced.runtime
    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=open(Path(workdir) / "cluster.log", "wb"),  # noqa: SIM115
    )
    cases = [{"stdin": f"{n}\n", "expected_output": f"{n}\n"} for n in range(1, CASES + 1)]

    def evaluation() -> None:
        submitted = services.evaluation_submit(
            user=user, runtime=runtime, source=SOURCE, test_cases=cases
        )
        execution_id = submitted.executions.get().pk
        if not execution_wait(execution_id, 120):
            raise SystemExit(f"execution {execution_id} did not finish; see {workdir}")
        execution = Execution.objects.get(pk=execution_id)
        if execution.verdict != "accepted":
            raise SystemExit(f"execution {execution_id}: {execution.verdict}; see {workdir}")

    floor = DockerBackend(lock_dir=tempfile.mkdtemp(prefix="evalbench-slots-"))
    run_config: dict[str, Any] = raw_config(image)
    run_config["Entrypoint"], run_config["Cmd"] = ["true"], []
    compile_config: dict[str, Any] = raw_config(image)
    compile_config["HostConfig"]["Memory"] = compile_config["HostConfig"]["MemorySwap"] = (
        entry.limits.compile_memory_mb * 1024 * 1024
    )
    compile_config["Env"] = [*compile_config["Env"], f"SOURCE={SOURCE}"]
    # Paths inside the raw container: its scratch tmpfs.
    scratch = "/tmp"  # noqa: S108
    command = " ".join(arg.replace("main", f"{scratch}/main") for arg in entry.compile_command)
    compile_config["Entrypoint"] = [
        "sh",
        "-c",
        f'printf %s "$SOURCE" >{scratch}/main.cpp && {command}',
    ]
    compile_config["Cmd"] = []

    try:
        print(f"C++ ({ENTRY}, {image}): {CASES}-case evaluation vs compile + 2 raw runs")
        for _ in range(2):
            raw_run(floor, compile_config)
            raw_run(floor, run_config)
            evaluation()
        compiles, runs, evaluations = [], [], []
        for _ in range(args.runs):
            compiles.append(timed(lambda: raw_run(floor, compile_config)))
            runs.append(timed(lambda: raw_run(floor, run_config)))
            evaluations.append(timed(evaluation))
        compile_median, run_median = statistics.median(compiles), statistics.median(runs)
        evaluation_median = statistics.median(evaluations)
        budget = compile_median + 2 * run_median
        print("\nmedians (seconds)")
        print(f"  raw compile container            {compile_median:7.3f}")
        print(f"  raw container run                {run_median:7.3f}")
        print(f"  compile + 2 raw runs             {budget:7.3f}")
        print(f"  {CASES}-case evaluation end to end  {evaluation_median:7.3f}")
        print(
            f"  ratio                            {evaluation_median / budget:7.2f}x  (target < 1)"
        )
    finally:
        cluster.terminate()
        cluster.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
