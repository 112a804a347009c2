"""``python -m faults`` (``make faults``): strike every fault at a platform of its own and
print what came of each; exit 1 if a promise broke, 2 if the suite could not run here."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from faults.parts import PartUnavailable
from faults.scenarios import CI_FAULTS, FAULTS, run_fault
from faults.suite import details, rig, summary, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faults", description=__doc__)
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated fault names (default: all); --list shows them",
    )
    parser.add_argument("--ci", action="store_true", help="only the faults CI runs")
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="N", help="strike each fault N times over"
    )
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    parser.add_argument(
        "--keep", action="store_true", help="keep the logs directory even when all is well"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat: give a whole number of at least 1")
    if args.list:
        for fault in FAULTS:
            print(f"{fault.name:22} {fault.title}")
        return 0
    names = [name for name in args.only.split(",") if name] or (
        list(CI_FAULTS) if args.ci else [fault.name for fault in FAULTS]
    )
    known = {fault.name: fault for fault in FAULTS}
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"--only: unknown fault {', '.join(unknown)} (known: {', '.join(known)})")
    chosen = [fault for fault in FAULTS if fault.name in names]

    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="evalplatform-faults-"))
    print(f"logs in {directory}", flush=True)
    try:
        with rig(directory) as platform:
            print(f"platform up in {time.monotonic() - started:.0f} s", flush=True)
            outcomes = []
            for turn in range(1, args.repeat + 1):
                for fault in chosen:
                    print(f"striking {fault.name} ...", flush=True)
                    outcomes.append(run_fault(platform, fault, turn))
    except PartUnavailable as exc:
        print(f"cannot run here: {exc}", file=sys.stderr)
        return 2
    wall_s = time.monotonic() - started
    print()
    print(table(outcomes))
    print()
    for line in details(outcomes):
        print(line)
    print(summary(outcomes, wall_s))
    kept = all(outcome.kept for outcome in outcomes)
    if kept and not args.keep:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        print(f"logs kept in {directory}")
    return 0 if kept else 1


if __name__ == "__main__":
    raise SystemExit(main())
