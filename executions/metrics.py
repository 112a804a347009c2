"""The platform's Prometheus metrics, computed from the database at each scrape.

A custom collector (``PlatformCollector``) runs a handful of aggregate queries per scrape
(``executions.operations``), so every web process gives the same figures, whichever one the
scraper reaches: nothing is counted in a process's memory, where each web and cluster worker
would hold its own share. docs/operations.md lists every metric.

Counters and gauges: the database keeps every execution (re-runs add rows, history is never
overwritten), so the number that *ended* with a given status, verdict and so on only grows, and
is a counter (``rate()`` of it is throughput); how many are queued or running goes up and down,
and is a gauge.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

from executions import operations
from executions.models import ACTIVE_STATUSES

PREFIX = "evalplatform"


class PlatformCollector:
    """Yields every metric of the platform, read now: six queries, whatever the data, and the
    backends' health probes, in parallel, for at most ``probe_timeout_s``."""

    def __init__(self, probe_timeout_s: float = operations.PROBE_TIMEOUT_S) -> None:
        self.probe_timeout_s = probe_timeout_s

    def collect(self) -> Iterator[Metric]:
        yield from self._executions()
        yield from self._durations()
        yield from self._backends()
        yield from self._automatic_actions()
        yield from self._webhooks()
        yield from self._schedules()
        yield from self._runtimes()

    def _executions(self) -> Iterator[Metric]:
        totals = operations.execution_totals()
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_depth", "Executions queued, waiting for a worker.", totals.queued
        )
        oldest = totals.oldest_queued_at
        age = max(0.0, (timezone.now() - oldest).total_seconds()) if oldest else 0.0
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_oldest_age_seconds",
            "How long the oldest queued execution has waited; 0 when none is queued.",
            age,
        )
        active = GaugeMetricFamily(
            f"{PREFIX}_executions_active",
            "Executions queued or running now.",
            labels=["status", "backend", "runtime"],
        )
        ended = CounterMetricFamily(
            f"{PREFIX}_executions_ended",
            "Executions that ended, by how: status, verdict, infrastructure error kind.",
            labels=["status", "verdict", "error_kind", "backend", "runtime"],
        )
        now_active: dict[tuple[str, str, str], int] = defaultdict(int)
        for row in totals.counts:
            if row.status in ACTIVE_STATUSES:
                now_active[(row.status, row.backend, row.runtime)] += row.count
            else:
                ended.add_metric(
                    [row.status, row.verdict, row.error_kind, row.backend, row.runtime], row.count
                )
        for (status, backend, runtime), count in sorted(now_active.items()):
            active.add_metric([status, backend, runtime], count)
        yield active
        yield ended

    def _durations(self) -> Iterator[Metric]:
        queue_wait = HistogramMetricFamily(
            f"{PREFIX}_execution_queue_wait_seconds",
            "Time from queued to started, of every execution that started and ended.",
            labels=["backend"],
        )
        run_time = HistogramMetricFamily(
            f"{PREFIX}_execution_run_seconds",
            "Time from started to finished (the sandbox session), of every execution that "
            "started and ended.",
            labels=["backend"],
        )
        for backend, histograms in sorted(operations.duration_histograms().items()):
            for family, histogram in (
                (queue_wait, histograms.queue_wait),
                (run_time, histograms.run_time),
            ):
                buckets = [
                    (floatToGoString(bound), count)
                    for bound, count in zip(histogram.bounds, histogram.cumulative, strict=True)
                ]
                buckets.append(("+Inf", histogram.count))
                family.add_metric([backend], buckets, histogram.sum_s)
        yield queue_wait
        yield run_time

    def _backends(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            f"{PREFIX}_backend_up",
            "1 when the backend's health check passes within the probe timeout, else 0.",
            labels=["backend", "active"],
        )
        capacity = GaugeMetricFamily(
            f"{PREFIX}_backend_capacity",
            "Sandboxes the backend can run at once, as it reports.",
            labels=["backend"],
        )
        in_use = GaugeMetricFamily(
            f"{PREFIX}_backend_in_use",
            "Sandboxes the backend runs now, as it reports.",
            labels=["backend"],
        )
        for row in operations.backends_health(self.probe_timeout_s):
            up.add_metric([row.name, "true" if row.active else "false"], 1 if row.ok else 0)
            if row.ok and row.health is not None:
                if row.health.capacity is not None:
                    capacity.add_metric([row.name], row.health.capacity)
                if row.health.in_use is not None:
                    in_use.add_metric([row.name], row.health.in_use)
        yield up
        yield capacity
        yield in_use

    def _automatic_actions(self) -> Iterator[Metric]:
        actions = CounterMetricFamily(
            f"{PREFIX}_automatic_actions",
            "Actions the platform took on a run by itself, from the audit trail: reap (the "
            "reaper closed an abandoned run), requeue (a task the broker lost was sent again), "
            "release (a run went back to the queue: its backend could not start it), retry "
            "(a run the infrastructure interrupted was re-run as a new attempt).",
            labels=["action"],
        )
        for action, count in sorted(operations.automatic_actions().items()):
            actions.add_metric([action], count)
        yield actions

    def _webhooks(self) -> Iterator[Metric]:
        outcomes = operations.webhook_outcomes()
        deliveries = CounterMetricFamily(
            f"{PREFIX}_webhook_deliveries",
            "Webhook delivery attempts that ended: succeeded, retried (failed, another "
            "attempt scheduled) or gave_up (failed, none after it).",
            labels=["outcome"],
        )
        deliveries.add_metric(["succeeded"], outcomes.succeeded)
        deliveries.add_metric(["retried"], outcomes.retried)
        deliveries.add_metric(["gave_up"], outcomes.gave_up)
        yield deliveries

    def _schedules(self) -> Iterator[Metric]:
        overdue = operations.schedule_overdue()
        yield GaugeMetricFamily(
            f"{PREFIX}_task_schedule_overdue_seconds",
            "How late the most overdue scheduled task (a webhook's next attempt) is: near 0 "
            "while a worker cluster runs, growing while none does.",
            overdue.total_seconds() if overdue is not None else 0.0,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_clusters_alive",
            "Worker clusters whose recovery lane beat within the last three ticks: 0 means "
            "nothing runs queued work and nothing recovers it.",
            len(operations.live_clusters()),
        )

    def _runtimes(self) -> Iterator[Metric]:
        runtimes = GaugeMetricFamily(
            f"{PREFIX}_runtimes",
            "Enabled runtimes by how their self-test last ended; a failed one is not offered.",
            labels=["self_test"],
        )
        for status, count in operations.runtime_self_tests().items():
            runtimes.add_metric([status], count)
        yield runtimes


def exposition(accept: str = "") -> tuple[bytes, str]:
    """The metrics in the format the ``Accept`` header asks for (Prometheus text by
    default, OpenMetrics when asked), and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformCollector())
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
