"""``python -m execution_service``: serve the execution API over the local Docker engine.

Caps come from arguments or ``EXECUTION_SERVICE_MAX_*`` environment variables; the shared
secret from ``EXECUTION_SERVICE_SECRET`` or ``EXECUTION_SERVICE_SECRET_FILE``. Serve plain
HTTP on a private network or loopback and put a TLS-terminating reverse proxy in front.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from execution_service.server import ExecutionService, ServiceConfig
from sandbox import budget
from sandbox.contract import ExecutionBackend
from sandbox.policy import Limits
from sandbox.signing import load_secret

CAPS: tuple[tuple[str, type, float], ...] = (
    ("wall_time_ms", int, 30_000),
    ("memory_mb", int, 512),
    ("output_bytes", int, 1024 * 1024),
    ("cpus", float, 2.0),
    ("pids", int, 128),
    ("scratch_mb", int, 64),
    ("open_files", int, 256),
    ("file_size_mb", int, 64),
    ("cpu_time_ms", int, 60_000),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments, each defaulting to its environment variable; argparse converts a string
    default as it converts the argument, so a bad variable is a usage error naming its flag."""
    parser = argparse.ArgumentParser(prog="python -m execution_service", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("EXECUTION_SERVICE_HOST", "127.0.0.1"))
    parser.add_argument(
        "--port", type=int, default=os.environ.get("EXECUTION_SERVICE_PORT", "8700")
    )
    parser.add_argument("--backend", choices=["docker"], default="docker")
    parser.add_argument(
        "--max-concurrent",
        dest="max_concurrent_per_service",
        type=int,
        default=os.environ.get("EXECUTION_SERVICE_MAX_CONCURRENT", "4"),
        help="runs at once on this service, and Docker slots on its node "
        "(env EXECUTION_SERVICE_MAX_CONCURRENT, default 4)",
    )
    parser.add_argument("--docker-url", default=None, help="engine URL (default $DOCKER_HOST)")
    parser.add_argument("--runtime", default="", help="OCI runtime for sandboxes, e.g. runsc")
    parser.add_argument("--lock-dir", default=None, help="slot lock directory of DockerBackend")
    parser.add_argument("--retention-s", type=float, default=600.0)
    parser.add_argument("--retention-count", type=int, default=1000)
    parser.add_argument(
        "--orphan-age-s",
        type=float,
        default=None,
        help="the janitor at start removes managed sandboxes older than this (default: "
        "longer than any live session, from the wall-time and case caps and the slot wait)",
    )
    parser.add_argument(
        "--max-cases",
        type=int,
        default=os.environ.get("EXECUTION_SERVICE_MAX_CASES", "100"),
        help="cap on the cases of one session (env EXECUTION_SERVICE_MAX_CASES, default 100)",
    )
    parser.add_argument(
        "--max-stdin-bytes",
        type=int,
        default=os.environ.get("EXECUTION_SERVICE_MAX_STDIN_BYTES", str(8 * 1024 * 1024)),
        help="cap on the stdin of all the cases of one session together "
        "(env EXECUTION_SERVICE_MAX_STDIN_BYTES, default 8 MiB)",
    )
    for name, kind, default in CAPS:
        env_name = f"EXECUTION_SERVICE_MAX_{name.upper()}"
        parser.add_argument(
            f"--max-{name.replace('_', '-')}",
            dest=f"max_{name}",
            type=kind,
            default=os.environ.get(env_name, str(default)),
            help=f"cap on {name} (env {env_name}, default {default})",
        )
    return parser.parse_args(argv)


def orphan_age_s(args: argparse.Namespace, backend: ExecutionBackend) -> float:
    """How old a sandbox the janitor removes: ``--orphan-age-s``, else older than the longest
    session this service may run, its compile step and every case at the wall-time cap."""
    if args.orphan_age_s is not None:
        return float(args.orphan_age_s)
    return budget.orphan_age_s(
        args.max_wall_time_ms / 1000,
        start_allowance_s=backend.start_allowance_s,
        slot_wait_s=backend.slot_wait_s,
        grace_s=budget.SERVICE_ORPHAN_GRACE_S,
        steps=1 + args.max_cases,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = parse_args(argv)
    try:
        secret = load_secret()
    except (ValueError, OSError) as exc:
        print(f"execution_service: {exc}", file=sys.stderr)
        return 2
    from sandbox.docker import DockerBackend

    backend = DockerBackend(
        base_url=args.docker_url,
        runtime=args.runtime,
        max_concurrent_per_node=args.max_concurrent_per_service,
        lock_dir=args.lock_dir,
    )
    caps = Limits(**{name: getattr(args, f"max_{name}") for name, _, _ in CAPS})
    config = ServiceConfig(
        secret=secret,
        caps=caps,
        max_cases=args.max_cases,
        max_stdin_bytes=args.max_stdin_bytes,
        max_concurrent_per_service=args.max_concurrent_per_service,
        retention_s=args.retention_s,
        retention_count=args.retention_count,
    )
    service = ExecutionService(backend, config)
    log = logging.getLogger("execution_service")
    try:
        removed = backend.remove_orphans(orphan_age_s(args, backend))
        log.info("janitor removed %d orphaned sandboxes", removed)
    except Exception as exc:
        log.warning("janitor could not run: %s", exc)
    server = service.make_server(args.host, args.port)
    log.info(
        "serving on http://%s:%d/v1/ with backend %s, %d slots, caps %s, "
        "at most %d cases and %d bytes of stdin a session",
        args.host,
        server.server_port,
        backend.name,
        args.max_concurrent_per_service,
        caps,
        args.max_cases,
        args.max_stdin_bytes,
    )
    print(f"listening on {args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
