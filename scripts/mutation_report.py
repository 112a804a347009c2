"""Report a ``mutmut run`` over the security-critical code, scope by scope.

mutmut mutates whole modules; the scopes below name the functions each protection lives in.
For every scope this prints how many mutants the tests killed, how many survived, and how
many no selected test reached; then every survivor with the explanation recorded for it in
``docs/mutation-survivors.toml`` (why it is equivalent, or why it is accepted). It exits 1
when a survivor in a strict scope has no explanation.

Run by ``make mutate`` after ``mutmut run``; ``--markdown`` prints the table for the docs.
"""

from __future__ import annotations

import argparse
import fnmatch
import subprocess
import sys
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = str(Path(sys.executable).with_name("mutmut"))
EXPLANATIONS = ROOT / "docs" / "mutation-survivors.toml"

# scope -> globs over mutmut's mutant names (``module.x_function__mutmut_N``, and
# ``module.xǁClassǁmethod__mutmut_N`` for methods). ``--globs`` prints them all for
# ``mutmut run``, so only these functions are mutated.
SCOPES: dict[str, list[str]] = {
    "request signing (execution service)": ["sandbox.signing.*"],
    "webhooks: SSRF guard, transport, signing": ["executions.webhooks.*"],
    "file names and input cleaning": [
        "executions.services.cleaning.x__clean_*",
        "executions.services.cleaning.xǁ_Errorsǁ*",
        "sandbox.files.*",
        "sandbox.supervisor.x_code_archive__*",
        "executions.backends.kubernetes.manifests.x_configmap_for__*",
    ],
    "redaction of hidden test cases": [
        "executions.api.serializers.xǁ*ǁ_redact__*",
        "executions.api.serializers.xǁ*ǁto_representation__*",
    ],
    "judging": ["executions.judging.*"],
    "session records: what the host believes of the sandbox": [
        "sandbox.supervisor.xǁRecordReaderǁ*",
        "sandbox.supervisor.x__record__*",
        "sandbox.supervisor.x_step__*",
        "sandbox.supervisor.x_cpu_limit_ms__*",
    ],
    "the reaper's decisions": [
        "executions.services.reaping.x_executions_reap__*",
        "executions.services.reaping.x__reap__*",
    ],
    "sandbox policy rendering": [
        "executions.services.running.x_sandbox_policy__*",
        "sandbox.docker.config.x_container_config_for__*",
        "executions.backends.kubernetes.manifests.x_job_for__*",
        "executions.backends.kubernetes.manifests.x__container_security__*",
        "executions.backends.kubernetes.manifests.x_labels_for__*",
    ],
}
# Done means: no unexplained survivor here.
STRICT = {
    "request signing (execution service)",
    "webhooks: SSRF guard, transport, signing",
    "file names and input cleaning",
    "redaction of hidden test cases",
    "session records: what the host believes of the sandbox",
}
KILLED = {"killed", "timeout", "segfault"}


@dataclass(frozen=True)
class Mutant:
    name: str
    module: str
    function: str
    status: str


def parse_name(name: str) -> tuple[str, str]:
    """``executions.services.x__clean_files__mutmut_3`` -> (``executions.services``,
    ``_clean_files``); methods come as ``xǁClassǁmethod``."""
    head, _, mangled = name.rpartition(".")
    mangled = mangled.rsplit("__mutmut_", 1)[0]
    if mangled.startswith("xǁ"):
        return head, ".".join(mangled.removeprefix("xǁ").split("ǁ"))
    return head, mangled.removeprefix("x_")


def results() -> list[Mutant]:
    listed = subprocess.run(
        [MUTMUT, "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    mutants = []
    for line in listed.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            module, function = parse_name(name)
            mutants.append(Mutant(name, module, function, status.strip()))
    return mutants


def scope_of(mutant: Mutant) -> str | None:
    for scope, globs in SCOPES.items():
        if any(fnmatch.fnmatchcase(mutant.name, glob) for glob in globs):
            return scope
    return None


def mutation_of(mutant: Mutant) -> str:
    """The mutated line(s) as mutmut shows them, stripped."""
    shown = subprocess.run(
        [MUTMUT, "show", mutant.name], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    added = [
        line[1:].strip()
        for line in shown.splitlines()
        if line.startswith("+") and not line.startswith("+++")
    ]
    return " / ".join(added)


def explanations() -> dict[tuple[str, str], str]:
    data = tomllib.loads(EXPLANATIONS.read_text()) if EXPLANATIONS.exists() else {}
    return {
        (entry["function"], entry["mutation"]): entry["why"] for entry in data.get("survivor", [])
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the docs' table")
    parser.add_argument("--globs", action="store_true", help="print the scopes' mutant globs")
    parser.add_argument(
        "--verbose", action="store_true", help="show the survivors of every scope, not just strict"
    )
    options = parser.parse_args()
    if options.globs:
        print(" ".join(glob for globs in SCOPES.values() for glob in globs))
        return 0
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: dict[str, list[Mutant]] = defaultdict(list)
    for mutant in results():
        scope = scope_of(mutant)
        if scope is None:
            continue
        kind = "killed" if mutant.status in KILLED else mutant.status
        counts[scope][kind] += 1
        if mutant.status == "survived":
            survivors[scope].append(mutant)
    known = explanations()
    unexplained = 0
    rows = []
    for scope in SCOPES:
        tally = counts[scope]
        explained = 0
        for mutant in survivors[scope]:
            if scope not in STRICT and not options.verbose:
                continue
            mutation = mutation_of(mutant)
            why = known.get((f"{mutant.module}.{mutant.function}", mutation))
            if why:
                explained += 1
            elif scope in STRICT:
                unexplained += 1
            mark = "explained" if why else ("UNEXPLAINED" if scope in STRICT else "accepted")
            print(f"  [{mark}] {scope}: {mutant.name}\n      {mutation}\n      {why or ''}")
        rows.append(
            (
                scope,
                tally["killed"],
                tally["survived"],
                explained,
                tally["no tests"],
                sum(tally.values()),
            )
        )
    print()
    if options.markdown:
        print("| scope | mutants | killed | survived (explained) | not reached |")
        print("| --- | --- | --- | --- | --- |")
        for scope, killed, survived, explained, untested, total in rows:
            print(f"| {scope} | {total} | {killed} | {survived} ({explained}) | {untested} |")
    else:
        for scope, killed, survived, explained, untested, total in rows:
            strict = " (strict)" if scope in STRICT else ""
            print(
                f"{scope}{strict}: {total} mutants, {killed} killed, {survived} survived "
                f"({explained} explained), {untested} not reached by the selected tests"
            )
    if unexplained:
        print(
            f"\n{unexplained} survivor(s) in strict scopes have no explanation in "
            f"{EXPLANATIONS.relative_to(ROOT)}."
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
