"""How safe this deployment is: first-run advice, posture checks and the backend comparison."""

from __future__ import annotations

import enum
import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from executions import environment

if TYPE_CHECKING:
    from executions.backends import Selection

# The safest way to turn execution on, for this machine ------------------------------------


@dataclass(frozen=True)
class MachineFacts:
    """What this machine offers for running code, as far as the platform can see."""

    in_kubernetes: bool
    remote_configured: bool
    docker_socket: str  # a local Docker engine socket that accepts connections, or ""
    dockerd_installed: bool


def machine_facts() -> MachineFacts:
    from executions.conf import execution_settings

    socket_path = environment.docker_socket_path()
    remote = execution_settings.BACKEND_OPTIONS.get("remote", {})
    return MachineFacts(
        in_kubernetes=bool(os.environ.get("KUBERNETES_SERVICE_HOST")),
        remote_configured=bool(remote.get("urls")),
        docker_socket=socket_path if environment.socket_reachable(socket_path) else "",
        dockerd_installed=shutil.which("dockerd") is not None,
    )


@dataclass(frozen=True)
class NextStep:
    """The one safest way to turn code execution on here: what to do, what it costs, and the
    exact command. The console, the banner and the security page all show this one."""

    summary: str
    trade_off: str
    command: str


# Said of every path that hands the platform a Docker socket; the security page's posture
# checks judge the same setup the same way.
_SOCKET_TRADE_OFF = (
    "The platform then holds the Docker socket: whoever takes over the platform controls that "
    "engine, which is root on its host if the socket is the host's. Fine for a development "
    "machine; in production keep the socket on an execution node (remote service)."
)


def next_step(facts: MachineFacts | None = None) -> NextStep:
    """The safest opt-in this machine offers, most isolated first."""
    facts = machine_facts() if facts is None else facts
    if facts.in_kubernetes:
        return NextStep(
            "This platform runs in a Kubernetes pod: run each program as a Job in the sandbox "
            "namespace (deploy/kubernetes).",
            "The platform's account can create Jobs in that namespace only, and restricted Pod "
            "Security refuses privileged pods; you trust the cluster's nodes and network policy.",
            "kubectl apply -k deploy/kubernetes  # then set EXECUTION_BACKEND=kubernetes",
        )
    if facts.remote_configured:
        return NextStep(
            "EXECUTION_REMOTE_URLS names execution services: send runs to them.",
            "The platform holds only the signing secret, no Docker socket; a sandbox escape "
            "reaches the execution node, not the platform.",
            "EXECUTION_BACKEND=remote make run",
        )
    if facts.docker_socket:
        return NextStep(
            f"A Docker engine answers at {facts.docker_socket}: run each program in a hardened "
            "container on it.",
            _SOCKET_TRADE_OFF,
            "EXECUTION_BACKEND=docker make run",
        )
    if facts.dockerd_installed:
        return NextStep(
            "Docker is installed but its engine is not running: start it, then run each program "
            "in a hardened container on it.",
            _SOCKET_TRADE_OFF,
            "scripts/start-dockerd.sh && EXECUTION_BACKEND=docker make run",
        )
    return NextStep(
        "Nothing on this machine can isolate a program: send runs to the remote execution "
        "service on a machine with a Docker engine (python -m execution_service there).",
        "The platform holds only the signing secret, no Docker socket; a sandbox escape reaches "
        "the execution node, not the platform.",
        "EXECUTION_BACKEND=remote EXECUTION_REMOTE_URLS=http://NODE:8700 "
        "EXECUTION_SERVICE_SECRET_FILE=PATH make run",
    )


def backend_announcement(selection: Selection) -> str:
    """What the console says once at start-up: the backend, why, and the next step if off."""
    lines = [f"Execution backend: {selection.name}. {selection.reason}"]
    if selection.name == "disabled" and not selection.configured:
        step = next_step()
        lines += [f"Next step: {step.summary}", f"Trade-off: {step.trade_off}", f"  {step.command}"]
    return "\n".join(lines)


# The security page: posture checks and the trade-offs of every backend ---------------------


class Level(enum.StrEnum):
    PASS = "pass"  # noqa: S105  (a check result, not a password)
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class PostureCheck:
    """One live fact about this deployment, judged, with a one-line fix when it is not a pass."""

    name: str
    level: Level
    detail: str
    fix: str = ""


def posture_checks(*, deployment_only: bool = False) -> list[PostureCheck]:
    """Every check shown on the security page, in order of importance.

    ``deployment_only`` keeps the checks about code execution that ``check --deploy`` adds to
    Django's own (which already judge DEBUG and SECRET_KEY).
    """
    from executions.backends import active_selection

    selection = active_selection()
    evidence = environment.container_evidence()
    socket_path = environment.docker_socket_path()
    socket_open = environment.socket_reachable(socket_path)
    checks = [
        _container_check(selection.name, evidence, socket_open),
        None
        if deployment_only
        else _socket_check(selection.name, evidence, socket_path, socket_open),
        _proxy_check(selection.name),
        _network_check(),
    ]
    if not deployment_only:
        checks += [_root_check(), _debug_check(), _secret_key_check()]
    return [check for check in checks if check is not None]


def _container_check(backend: str, evidence: str, socket_open: bool) -> PostureCheck:
    name = "Where the platform runs"
    if not evidence:
        return PostureCheck(name, Level.PASS, "Not in a container: the platform runs on the host.")
    if backend == "docker" and socket_open:
        return PostureCheck(
            name,
            Level.FAIL,
            f"In a container ({evidence}) with the host's Docker socket mounted: whoever "
            "compromises the platform is root on the host.",
            "Remove the socket mount; use the remote execution service or Kubernetes Jobs.",
        )
    return PostureCheck(
        name,
        Level.PASS,
        f"In a container ({evidence}); execution is {backend}, without the host's Docker socket.",
    )


def _socket_check(backend: str, evidence: str, socket_path: str, socket_open: bool) -> PostureCheck:
    name = "Docker socket reachable from the platform"
    if not socket_open:
        return PostureCheck(name, Level.PASS, "No Docker socket is reachable from this process.")
    if evidence:
        return PostureCheck(
            name,
            Level.FAIL,
            f"{socket_path} answers inside the platform's container: that is root on the host.",
            "Do not mount docker.sock into the platform; run sandboxes elsewhere.",
        )
    if backend == "docker":
        return PostureCheck(
            name,
            Level.WARN,
            f"The platform talks to {socket_path} directly; a compromised platform is root on "
            "this host.",
            "Put the socket proxy in front (deploy/haproxy) and set DOCKER_HOST to it.",
        )
    return PostureCheck(
        name,
        Level.WARN,
        f"{socket_path} is reachable although the {backend} backend does not need it.",
        "Run the platform as a user outside the docker group.",
    )


def _proxy_check(backend: str) -> PostureCheck | None:
    host = os.environ.get("DOCKER_HOST", "")
    if backend != "docker" or not host.startswith("tcp://"):
        return None
    from executions.backends import get_backend

    name = "Socket proxy admits only the allow-list"
    admitted = get_backend("docker").admits_forbidden_call()  # type: ignore[attr-defined]
    if admitted is False:
        return PostureCheck(name, Level.PASS, f"{host} refused GET /info with 403, as it should.")
    if admitted is True:
        return PostureCheck(
            name,
            Level.FAIL,
            f"{host} answered GET /info, a call the backend never makes: it is not an allow-list.",
            "Use deploy/haproxy/docker-socket-proxy.cfg in front of the engine.",
        )
    return PostureCheck(
        name, Level.WARN, f"{host} did not answer the probe.", "Check that the proxy is running."
    )


def _network_check() -> PostureCheck:
    from executions.models import Runtime

    name = "Sandbox network"
    open_runtimes = list(
        Runtime.objects.filter(enabled=True, network_enabled=True).values_list("name", flat=True)
    )
    if open_runtimes:
        return PostureCheck(
            name,
            Level.WARN,
            f"Sandboxes of {', '.join(open_runtimes)} can reach the network.",
            "Turn network access off on those runtimes unless programs truly need it.",
        )
    return PostureCheck(name, Level.PASS, "Every runtime's sandboxes run without a network.")


def _root_check() -> PostureCheck:
    name = "Platform user"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return PostureCheck(
            name,
            Level.WARN,
            "The platform process runs as root.",
            "Run it as an unprivileged user (the Dockerfile does: uid 10001).",
        )
    return PostureCheck(name, Level.PASS, "The platform process does not run as root.")


def _debug_check() -> PostureCheck:
    from django.conf import settings

    if settings.DEBUG:
        return PostureCheck(
            "DEBUG",
            Level.WARN,
            "DEBUG is on: error pages show settings and code to anyone.",
            "Set DEBUG=0 anywhere but a development machine.",
        )
    return PostureCheck("DEBUG", Level.PASS, "DEBUG is off.")


def _secret_key_check() -> PostureCheck:
    from django.conf import settings

    from evalplatform.settings import INSECURE_SECRET_KEY

    name = "SECRET_KEY"
    if settings.SECRET_KEY == INSECURE_SECRET_KEY or len(settings.SECRET_KEY) < 32:
        return PostureCheck(
            name,
            Level.FAIL,
            "SECRET_KEY is the development default or too short: sessions can be forged.",
            "Set SECRET_KEY (or SECRET_KEY_FILE) to 50 random characters.",
        )
    return PostureCheck(name, Level.PASS, "SECRET_KEY is set and long.")


@dataclass(frozen=True)
class BackendProfile:
    """One column of the security page's comparison of execution backends."""

    key: str
    title: str
    available: bool
    trusts: str
    sandbox_escape: str
    platform_compromise: str
    isolation: tuple[str, ...]
    choose_when: str
    # What keeps one test case of an execution from another (they share one sandbox).
    between_cases: str


BACKEND_PROFILES: tuple[BackendProfile, ...] = (
    BackendProfile(
        key="disabled",
        title="Disabled",
        available=True,
        trusts="Nothing: no code runs.",
        sandbox_escape="Nothing to escape.",
        platform_compromise="The platform's own data and secrets; no way to run code on hosts.",
        isolation=("no code execution",),
        choose_when="The platform runs in a container and no isolated backend is set up yet.",
        between_cases="No case runs.",
    ),
    BackendProfile(
        key="docker",
        title="Docker on the local socket",
        available=True,
        trusts="The host kernel and the Docker engine; the platform holds the engine's socket.",
        sandbox_escape="A kernel or runtime escape gives the host and every container on it.",
        platform_compromise="Root on the host: the socket can start a privileged container.",
        isolation=(
            "no network",
            "read-only root, tmpfs scratch",
            "uid 65534, no capabilities, no-new-privileges",
            "default seccomp",
            "memory, CPU, PID, file-size limits",
            "optional gVisor (runsc)",
        ),
        choose_when="A development machine or a single host that runs nothing else.",
        between_cases=(
            "One container per execution; each case is a fresh process as uid 65534. The "
            "supervisor (PID 1, root with only SETUID, SETGID and KILL) kills every other "
            "process and empties /tmp, /dev/shm, message queues and SysV IPC before the next "
            "case. Code and compiled files are root's, read-only to the program. Results "
            "travel in records the program can neither reach nor forge."
        ),
    ),
    BackendProfile(
        key="docker-proxy",
        title="Docker behind the socket proxy",
        available=True,
        trusts="The host kernel, the Docker engine and the proxy's allow-list.",
        sandbox_escape="The same as Docker on the socket: the host.",
        platform_compromise=(
            "Still root on the host: the proxy filters paths and methods but cannot read "
            "request bodies, so an allowed container create may ask for a privileged "
            "container. It blocks exec, image pulls and builds, volumes, networks and /info."
        ),
        isolation=("everything Docker on the socket has", "API calls limited to an allow-list"),
        choose_when="The platform must run in a container on the host it executes code on.",
        between_cases="The same as Docker on the socket.",
    ),
    BackendProfile(
        key="remote",
        title="Remote execution service",
        available=True,
        trusts="The execution nodes (kernel, Docker engine) and the shared signing secret.",
        sandbox_escape="The execution node, not the platform's host, its database or secrets.",
        platform_compromise=(
            "Submitting signed runs within the service's own caps; no Docker access, so no "
            "privileged container. Whoever holds the secret can do the same."
        ),
        isolation=(
            "Docker hardening on the nodes",
            "HMAC-signed requests, expired and replayed ones refused",
            "the service refuses limits above its own caps",
        ),
        choose_when="Production: the platform runs in a container and holds no Docker socket.",
        between_cases="The same as Docker on the socket, on the execution node.",
    ),
    BackendProfile(
        key="kubernetes",
        title="Kubernetes Jobs",
        available=True,
        trusts="The cluster: its nodes, API server, RBAC, Pod Security admission and CNI.",
        sandbox_escape=(
            "The node that ran the pod, not the platform's host; the deny-all NetworkPolicy "
            "keeps sandboxes off the network."
        ),
        platform_compromise=(
            "Creating Jobs and ConfigMaps and reading pods and their logs, in the sandbox "
            "namespace only; Pod Security admission (restricted) refuses privileged pods."
        ),
        isolation=(
            "Pod Security Standard restricted",
            "one Job per execution, each case a fresh process under the session supervisor",
            "uid 65534, no capabilities, RuntimeDefault seccomp, read-only root",
            "no ServiceAccount token, no service links",
            "deny-all NetworkPolicy",
            "requests = limits, activeDeadlineSeconds",
            "optional gVisor runtime class",
        ),
        choose_when="Production at scale, across many nodes.",
        between_cases=(
            "One Job per execution. Restricted allows no root, so the supervisor and the "
            "program share uid 65534: the supervisor stays out of reach (PID 1, not "
            "dumpable: no signal, ptrace or /proc/1/fd) and frames results from pipes the "
            "program writes into; before the next case it kills every other process and "
            "empties /tmp, /dev/shm, message queues, SysV IPC and the termination log. Code "
            "and compiled files are read-only mounts. A case can read every case's input "
            "(never an expected output), and lower the supervisor's resource limits or "
            "priority or starve it of CPU, which spoils only its own execution."
        ),
    ),
)


def profiles_table() -> str:
    """The comparison as a Markdown table: docs/security.md carries it verbatim (a test holds
    it there), so the prose is written once, here."""
    rows = [
        "| backend | it trusts | a sandbox escape gets | a compromised platform gets "
        "| between test cases | choose it when |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    rows += [
        f"| {p.title} | {p.trusts} | {p.sandbox_escape} | "
        f"{p.platform_compromise} | {p.between_cases} | {p.choose_when} |"
        for p in BACKEND_PROFILES
    ]
    return "\n".join(rows) + "\n"


def active_profile_key() -> str:
    """Which column of the comparison describes this deployment."""
    from executions.backends import active_selection

    name = active_selection().name
    if name == "docker" and os.environ.get("DOCKER_HOST", "").startswith("tcp://"):
        return "docker-proxy"
    return name


def active_isolation() -> Any:
    """The active backend's own account of its isolation (``Isolation``), or None."""
    from django.core.exceptions import ImproperlyConfigured

    from executions.backends import get_backend

    try:
        return get_backend().describe()
    except (ImproperlyConfigured, NotImplementedError):
        return None
