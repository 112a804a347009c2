"""django-q2 entry points. They take ids and call services; nothing else happens here."""

from __future__ import annotations

from executions import services


def run_execution(execution_id: int) -> None:
    services.execution_run(execution_id)


def reap_executions() -> str:
    report = services.recovery_pass()
    return (
        f"closed {report.closed}, re-queued {report.requeued}, "
        f"removed {report.orphans_removed} orphaned sandboxes"
    )


def deliver_webhook(execution_id: int, attempt: int) -> None:
    from executions import webhooks

    webhooks.deliver(execution_id, attempt)
