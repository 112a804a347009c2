"""The environment variables that set the ``EXECUTIONS`` namespace, as one table.

Each variable sets one key of ``EXECUTIONS``, or one option of a backend in
``EXECUTIONS["BACKEND_OPTIONS"]``, and only when it is set: the defaults are written once,
in ``executions.conf.DEFAULTS`` and in the backends. ``evalplatform.settings`` reads the table
with ``executions_from_environment()``; ``python -m evalplatform.config_reference`` renders it
into docs/configuration.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evalplatform.env import env, parse_int, parse_list


@dataclass(frozen=True)
class Variable:
    """``name`` sets ``key`` of ``EXECUTIONS``, or option ``key`` of ``backend``.

    ``kind`` is ``str``, ``int`` (at least ``minimum``), ``list`` or ``tuple`` (both
    comma-separated; backend options are tuples, so they stay hashable). Defaults are not
    written here: an ``EXECUTIONS`` key's is ``executions.conf.DEFAULTS``'s, a backend option's
    is its options dataclass's. ``empty`` says, for the reference, what an empty default means.
    """

    name: str
    key: str
    kind: type
    meaning: str
    minimum: int | None = None
    backend: str = ""
    empty: str = ""


# In the reference's order. The Kubernetes backend's have a table of their own there.
VARIABLES: tuple[Variable, ...] = (
    Variable(
        "EXECUTION_BACKEND",
        "BACKEND",
        str,
        "`disabled`, `docker`, `remote`, `kubernetes`, `fake` (tests only), or a dotted path; "
        "empty: chosen automatically ([how](security.md#backends-and-what-each-trusts))",
    ),
    # Docker reads DOCKER_HOST (and DOCKER_TLS_VERIFY, DOCKER_CERT_PATH) itself.
    Variable(
        "EXECUTION_DOCKER_RUNTIME",
        "runtime",
        str,
        "e.g. `runsc` to run sandboxes under gVisor",
        backend="docker",
        empty="the engine's default (runc)",
    ),
    Variable(
        "EXECUTION_DOCKER_MAX_CONCURRENT",
        "max_concurrent_per_node",
        int,
        "sandboxes at once per worker node; more wait for a slot",
        minimum=1,
        backend="docker",
    ),
    Variable(
        "EXECUTION_REMOTE_URLS",
        "urls",
        tuple,
        "with `EXECUTION_BACKEND=remote`: the execution services, comma-separated "
        "(`https://exec1.internal,https://exec2.internal`)",
        backend="remote",
    ),
    Variable(
        "EXECUTION_SERVICE_SECRET",
        "secret",
        str,
        "the shared HMAC signing secret, at least 32 characters "
        "(or `EXECUTION_SERVICE_SECRET_FILE`)",
        backend="remote",
        empty="none: required by `remote` and by the service",
    ),
    Variable(
        "EXECUTION_MAX_SOURCE_BYTES",
        "MAX_SOURCE_BYTES",
        int,
        "all source files together",
        minimum=1,
    ),
    Variable("EXECUTION_MAX_FILES", "MAX_FILES", int, "source files per evaluation", minimum=1),
    Variable(
        "EXECUTION_MAX_STDIN_BYTES",
        "MAX_STDIN_BYTES",
        int,
        "stdin, and each test case's input",
        minimum=0,
    ),
    Variable(
        "EXECUTION_MAX_TEST_CASES", "MAX_TEST_CASES", int, "test cases per evaluation", minimum=1
    ),
    Variable(
        "EXECUTION_MAX_EXPECTED_OUTPUT_BYTES",
        "MAX_EXPECTED_OUTPUT_BYTES",
        int,
        "each test case's expected output",
    ),
    Variable(
        "EXECUTION_HARD_MAX_WALL_TIME_MS",
        "HARD_MAX_WALL_TIME_MS",
        int,
        "no runtime may allow more",
        minimum=100,
    ),
    Variable(
        "EXECUTION_HARD_MAX_MEMORY_MB",
        "HARD_MAX_MEMORY_MB",
        int,
        "no runtime may allow more",
        minimum=16,
    ),
    Variable(
        "EXECUTION_HARD_MAX_OUTPUT_KB",
        "HARD_MAX_OUTPUT_KB",
        int,
        "no runtime may allow more",
        minimum=1,
    ),
    Variable(
        "EXECUTION_HEARTBEAT_INTERVAL_S",
        "HEARTBEAT_INTERVAL_S",
        int,
        "how often a worker marks a running execution alive, for the reaper",
        minimum=1,
    ),
    Variable(
        "EXECUTION_HEARTBEAT_TIMEOUT_S",
        "HEARTBEAT_TIMEOUT_S",
        int,
        "a running execution with no heartbeat this long is closed by the reaper",
        minimum=2,
    ),
    Variable(
        "EXECUTION_REAPER_GRACE_S",
        "REAPER_GRACE_S",
        int,
        "time past a run's deadline before it is closed",
        minimum=0,
    ),
    Variable(
        "EXECUTION_QUEUED_STALL_S",
        "QUEUED_STALL_S",
        int,
        "a queued run whose task went out this long ago, while the broker holds no task, "
        "has its task sent again (it was lost)",
        minimum=1,
    ),
    Variable(
        "EXECUTION_AUTO_RERUNS",
        "AUTO_RERUNS",
        int,
        "how many times in a row a run the infrastructure interrupted (worker lost, backend "
        "failure) is re-run automatically as a new attempt (0: never)",
        minimum=0,
    ),
    Variable(
        "EXECUTION_RECOVERY_INTERVAL_S",
        "RECOVERY_INTERVAL_S",
        int,
        "how often the recovery lane beside each cluster closes abandoned runs and sends lost "
        "tasks",
        minimum=1,
    ),
    Variable(
        "EXECUTION_WRITE_RETRY_S",
        "WRITE_RETRY_S",
        int,
        "how long a worker keeps a finished result and retries writing it while the database "
        "does not answer",
        minimum=1,
    ),
    Variable(
        "EXECUTION_QUOTA_MAX_CONCURRENT",
        "QUOTA_MAX_CONCURRENT",
        int,
        "executions per user queued or running at once (0 blocks); "
        "a user quota in admin overrides it",
        minimum=0,
    ),
    Variable(
        "EXECUTION_QUOTA_MAX_PER_DAY",
        "QUOTA_MAX_PER_DAY",
        int,
        "executions per user requested in any 24 hours (0 blocks); "
        "a user quota in admin overrides it",
        minimum=0,
    ),
    Variable(
        "EXECUTION_MAX_QUEUE_DEPTH",
        "MAX_QUEUE_DEPTH",
        int,
        "queued executions past which every submission is refused (API: 503)",
        minimum=0,
    ),
    Variable(
        "EXECUTION_API_MAX_WAIT_S",
        "API_MAX_WAIT_S",
        int,
        "the longest `?wait=` the API honours",
        minimum=0,
    ),
    Variable("EXECUTION_API_MAX_BATCH", "API_MAX_BATCH", int, "submissions per batch", minimum=1),
    Variable(
        "EXECUTION_API_MAX_PAGE_SIZE",
        "API_MAX_PAGE_SIZE",
        int,
        "the largest `page_size` of API lists",
        minimum=1,
    ),
    Variable(
        "EXECUTION_API_MAX_BODY_BYTES",
        "API_MAX_BODY_BYTES",
        int,
        "the largest API request body; a larger one gets `413` unread",
        minimum=1024,
    ),
    # Webhooks never reach private, loopback, link-local or metadata addresses unless a host
    # name or CIDR is listed here.
    Variable(
        "EXECUTION_WEBHOOK_ALLOWLIST",
        "WEBHOOK_ALLOWLIST",
        list,
        "host names or CIDRs webhooks may reach although private or loopback",
    ),
    Variable(
        "EXECUTION_WEBHOOK_MAX_ATTEMPTS",
        "WEBHOOK_MAX_ATTEMPTS",
        int,
        "delivery attempts per webhook",
        minimum=1,
    ),
    Variable(
        "EXECUTION_WEBHOOK_BACKOFF_S",
        "WEBHOOK_BACKOFF_S",
        int,
        "delay before the first retry; doubles each time",
        minimum=1,
    ),
    Variable(
        "EXECUTION_WEBHOOK_TIMEOUT_S",
        "WEBHOOK_TIMEOUT_S",
        int,
        "seconds to connect, and for the whole answer of one delivery",
        minimum=1,
    ),
    Variable(
        "EXECUTION_FAKE_RUN_LOG",
        "FAKE_RUN_LOG",
        str,
        "tests only: a file the `fake` backend appends each run's handle to",
    ),
    # Kubernetes Jobs in the sandbox namespace (deploy/kubernetes).
    Variable(
        "EXECUTION_KUBERNETES_NAMESPACE",
        "namespace",
        str,
        "where sandbox Jobs and their ConfigMaps are created",
        backend="kubernetes",
    ),
    Variable(
        "EXECUTION_KUBERNETES_SERVICE_ACCOUNT",
        "service_account",
        str,
        "the sandbox pods' ServiceAccount (its token is never mounted)",
        backend="kubernetes",
    ),
    Variable(
        "EXECUTION_KUBERNETES_RUNTIME_CLASS",
        "runtime_class",
        str,
        "e.g. `gvisor`: the pods' `runtimeClassName`",
        backend="kubernetes",
        empty="none",
    ),
    # Checked by the backend, which names the variable when a value is malformed.
    Variable(
        "EXECUTION_KUBERNETES_NODE_SELECTOR",
        "node_selector",
        str,
        "`key=value,key2=value2`: where sandboxes may be scheduled",
        backend="kubernetes",
        empty="none",
    ),
    Variable(
        "EXECUTION_KUBERNETES_TOLERATIONS",
        "tolerations",
        str,
        "a JSON list of tolerations for tainted sandbox nodes",
        backend="kubernetes",
        empty="none",
    ),
    Variable(
        "EXECUTION_KUBERNETES_IMAGE_PULL_SECRETS",
        "image_pull_secrets",
        tuple,
        "comma-separated Secret names in the sandbox namespace, for a private registry",
        backend="kubernetes",
        empty="none",
    ),
    Variable(
        "EXECUTION_KUBERNETES_PENDING_TIMEOUT_S",
        "pending_timeout_s",
        int,
        "how long a sandbox may wait to be scheduled and its image pulled before the run "
        "fails as an infrastructure error",
        minimum=1,
        backend="kubernetes",
    ),
    Variable(
        "EXECUTION_KUBERNETES_TTL_S",
        "ttl_seconds_after_finished",
        int,
        "the Jobs' `ttlSecondsAfterFinished`, in case the platform cannot delete them itself",
        minimum=0,
        backend="kubernetes",
    ),
    Variable(
        "EXECUTION_KUBERNETES_MAX_CONCURRENT",
        "max_concurrent_per_worker",
        int,
        "sandboxes at once per worker process",
        minimum=1,
        backend="kubernetes",
    ),
)


def read(variable: Variable) -> Any:
    """The variable's value as its ``kind``, or ``None`` when it is unset or empty.

    Raises ``ImproperlyConfigured`` naming the variable when the value is malformed.
    """
    value = env(variable.name)
    if value is None or value == "":
        return None
    if variable.kind is int:
        if not value.strip():
            return None
        return parse_int(variable.name, value, minimum=variable.minimum)
    if variable.kind in (list, tuple):
        return variable.kind(parse_list(value))
    return value


def executions_from_environment() -> dict[str, Any]:
    """The ``EXECUTIONS`` keys and backend options whose variables are set, and nothing else."""
    executions: dict[str, Any] = {}
    for variable in VARIABLES:
        value = read(variable)
        if value is None:
            continue
        if variable.backend:
            options = executions.setdefault("BACKEND_OPTIONS", {})
            options.setdefault(variable.backend, {})[variable.key] = value
        else:
            executions[variable.key] = value
    return executions
