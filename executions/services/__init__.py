"""Every change of state: submit, claim and run, finish, cancel, re-run, reap.

Views, the API, admin actions and tasks call these functions and nothing else writes. Each
terminal transition is a conditional update from an active status, so an execution ends
exactly once whoever races to end it (worker, canceller, reaper).

One module per concept: ``cleaning`` (input), ``quotas`` (quotas and back-pressure),
``submission`` (submit, batch, re-run, cancel), ``dispatch`` (sending tasks, and again when
the broker lost them), ``running`` (the run loop, heartbeat, automatic re-runs) and
``reaping`` (the reaper), ``runtimes`` (seeding the catalogue's runtimes, self-tests).
Callers import from here. The time budget of a run is ``executions.budget``; webhook
secrets and runtime image builds live in ``executions.webhooks`` and
``executions.image_builds`` and are offered here too, since pages, the API and admin
actions reach every write through the services.
"""

from executions.image_builds import RuntimeImageBuildFailed, runtime_images_build
from executions.services.cleaning import TestCaseInput
from executions.services.dispatch import (
    DispatchReport,
    execution_dispatch,
    executions_redispatch,
)
from executions.services.quotas import (
    CONCURRENT_RETRY_AFTER_S,
    QUOTA_WINDOW,
    QueueFull,
    QuotaExceeded,
    queue_depth_check,
)
from executions.services.reaping import (
    ReapReport,
    cluster_beat,
    cluster_beats_prune,
    cluster_gone,
    executions_reap,
    recovery_pass,
    sandboxes_janitor,
)
from executions.services.running import (
    execution_claim,
    execution_run,
    sandbox_policy,
    worker_identity,
)
from executions.services.runtimes import (
    SelfTestOutcome,
    SyncOutcome,
    runtime_hello,
    runtime_self_test,
    runtimes_sync,
)
from executions.services.submission import (
    BatchInvalid,
    evaluation_submit,
    evaluations_submit_batch,
    execution_cancel,
    execution_rerun,
)
from executions.webhooks import webhook_secret_for, webhook_secret_rotate

__all__ = [
    "CONCURRENT_RETRY_AFTER_S",
    "QUOTA_WINDOW",
    "BatchInvalid",
    "DispatchReport",
    "QueueFull",
    "QuotaExceeded",
    "ReapReport",
    "RuntimeImageBuildFailed",
    "SelfTestOutcome",
    "SyncOutcome",
    "TestCaseInput",
    "cluster_beat",
    "cluster_beats_prune",
    "cluster_gone",
    "evaluation_submit",
    "evaluations_submit_batch",
    "execution_cancel",
    "execution_claim",
    "execution_dispatch",
    "execution_rerun",
    "execution_run",
    "executions_reap",
    "executions_redispatch",
    "queue_depth_check",
    "recovery_pass",
    "runtime_hello",
    "runtime_images_build",
    "runtime_self_test",
    "runtimes_sync",
    "sandbox_policy",
    "sandboxes_janitor",
    "webhook_secret_for",
    "webhook_secret_rotate",
    "worker_identity",
]
