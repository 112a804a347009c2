"""Benchmark a submission end to end against the raw Docker SDK floor, in the same run.

End to end is what a user waits for: ``services.evaluation_submit`` stores the evaluation and
enqueues it (ORM broker, SQLite: the embedded defaults), a real ``manage.py qcluster`` picks
it up, the Docker backend runs it as one session, the verdict is stored, and the submitter
sees a terminal status. The floor is the raw docker-py sequence of ``bench/docker_bench.py``
(one hardened container per run). Runs alternate so both see the same machine; every figure
is printed as a ratio to the floor, next to its target:

* a one-case evaluation: at most 1.2x one raw container;
* a 20-case evaluation: at most 0.2x twenty raw containers (each case a raw container is
  what a runner without sessions pays);
* throughput of one-case evaluations at the engine's concurrency: at least 0.9x raw.

    .venv/bin/python bench/end_to_end_bench.py [--runs 20] [--image evalplatform/python:3.11]

This is a measurement, not a test: it asserts nothing. It needs a Docker engine and the
runtime image (``make runtime-image``), and uses a throw-away database.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CASES = 20
ROUNDS = 3


def configure(workdir: str, workers: int) -> dict[str, str]:
    environ = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "evalplatform.settings",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "VAR_DIR": workdir,
        "EXECUTION_BACKEND": "docker",
        "EXECUTION_DOCKER_MAX_CONCURRENT": str(workers),
        "Q_WORKERS": str(workers),
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
    }
    for key in ("DATABASE_URL", "REDIS_URL"):
        environ.pop(key, None)
    os.environ.clear()
    os.environ.update(environ)
    return environ


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="sequential runs of each kind")
    parser.add_argument("--image", default="evalplatform/python:3.11")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="evalbench-e2e-")
    environ = configure(workdir, workers=4)

    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from docker_bench import raw_config, raw_run, throughput, timed

    from executions import services
    from executions.models import Execution, Runtime
    from executions.selectors import execution_wait
    from sandbox.docker import DockerBackend

    call_command("migrate", verbosity=0)
    user = User.objects.create_user("bench")
    runtime = Runtime.objects.create(
        name="python-bench",
        display_name="Python (bench)",
        image=args.image,
        command=["python3", "main.py"],
    )
    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=open(Path(workdir) / "cluster.log", "wb"),  # noqa: SIM115
    )

    echo = "import sys\nsys.stdout.write(sys.stdin.read())\n"
    twenty = [{"stdin": f"{n}\n", "expected_output": f"{n}\n"} for n in range(CASES)]

    def submit_and_wait(**fields: Any) -> None:
        fields.setdefault("source", "pass\n")
        evaluation = services.evaluation_submit(user=user, runtime=runtime, **fields)
        execution_id = evaluation.executions.get().pk
        # As a client of the API's ?wait= does: the platform's own wait.
        if not execution_wait(execution_id, 60):
            raise SystemExit(f"execution {execution_id} did not finish; see {workdir}")
        status = Execution.objects.filter(pk=execution_id).values_list("status", flat=True)[0]
        if status != "finished":
            raise SystemExit(f"execution {execution_id} ended {status}; see {workdir}")
        if fields.get("test_cases"):
            verdict = Execution.objects.get(pk=execution_id).verdict
            if verdict != "accepted":
                raise SystemExit(f"execution {execution_id}: {verdict}; see {workdir}")

    def many_cases() -> None:
        submit_and_wait(source=echo, test_cases=twenty)

    floor = DockerBackend(lock_dir=tempfile.mkdtemp(prefix="evalbench-slots-"))
    config = raw_config(args.image)
    raw: Callable[[], None] = lambda: raw_run(floor, config)  # noqa: E731

    try:
        print(f"end to end via qcluster (ORM broker, SQLite), image {args.image}, warming up ...")
        for _ in range(3):
            raw()
            submit_and_wait()
        raw_times, e2e_times = [], []
        for _ in range(args.runs):
            raw_times.append(timed(raw))
            e2e_times.append(timed(submit_and_wait))
        raw_median, e2e_median = statistics.median(raw_times), statistics.median(e2e_times)
        raw_p95 = statistics.quantiles(raw_times, n=20, method="inclusive")[18]
        e2e_p95 = statistics.quantiles(e2e_times, n=20, method="inclusive")[18]
        print("\nper run (seconds)             median      p95")
        print(f"  raw docker-py floor         {raw_median:7.3f}  {raw_p95:7.3f}")
        print(f"  submit -> qcluster -> done  {e2e_median:7.3f}  {e2e_p95:7.3f}")
        print(
            f"  ratio end-to-end/raw        {e2e_median / raw_median:7.2f}x "
            f"{e2e_p95 / raw_p95:7.2f}x   (target p50 <= 1.2x)"
        )

        many_times = [timed(many_cases) for _ in range(max(5, args.runs // 4))]
        many_median = statistics.median(many_times)
        print(f"\n{CASES}-case evaluation (seconds)  median")
        print(f"  {CASES} raw containers           {CASES * raw_median:7.3f}")
        print(f"  submit -> qcluster -> done  {many_median:7.3f}")
        print(
            f"  ratio end-to-end/raw        {many_median / (CASES * raw_median):7.2f}x"
            "            (target <= 0.2x)"
        )

        def one() -> None:
            try:
                submit_and_wait()
            finally:
                if threading.current_thread() is not threading.main_thread():
                    from django.db import connection

                    connection.close()

        print(
            f"\nthroughput (runs/s, median of {ROUNDS} alternating rounds)"
            "\n                      raw     end-to-end  ratio   (target >= 0.9x at 4)"
        )
        for concurrency in (1, 2, 4):
            runs = max(8, args.runs // 2) * concurrency
            raw_rates, e2e_rates = [], []
            for _ in range(ROUNDS):  # a 2-core machine drifts: alternate, keep the medians
                raw_rates.append(throughput(raw, concurrency, runs))
                e2e_rates.append(throughput(one, concurrency, runs))
            raw_rate, e2e_rate = statistics.median(raw_rates), statistics.median(e2e_rates)
            print(
                f"  concurrency {concurrency}     {raw_rate:6.2f}  {e2e_rate:9.2f}  "
                f"{e2e_rate / raw_rate:6.2f}x"
            )
    finally:
        cluster.terminate()
        cluster.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
