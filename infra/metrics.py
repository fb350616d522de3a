"""The service's Prometheus metrics: one small object, created with an injected registry.

Base units (seconds), `_total` counters, low-cardinality labels only: never a payment
or account id as a label.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.outcomes = Counter(
            "payments_outcomes",
            "Payments that reached their outcome.",
            ["outcome", "reason"],
            registry=registry,
        )
        self.commands_rejected = Counter(
            "payments_commands_rejected",
            "Commands not accepted.",
            ["command_type", "reason"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "payments_dead_letters",
            "Messages sent to the dead-letter topic.",
            ["topic", "reason"],
            registry=registry,
        )
        self.step_duration = Histogram(
            "payments_step_duration_seconds",
            "Time to handle one step.",
            ["step"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_phase = Histogram(
            "payments_batch_phase_duration_seconds",
            "Time an agent batch spends in each phase of its protocol.",
            ["agent", "phase"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "payments_batch_size",
            "Items (commands or steps) per agent batch.",
            ["agent"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.loop_lag = Histogram(
            "payments_event_loop_lag_seconds",
            "How late the worker's event loop ran a timer: time it spent on other work.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.end_to_end = Histogram(
            "payments_end_to_end_duration_seconds",
            "From command accepted to outcome recorded.",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.psp_requests = Counter(
            "payments_psp_requests", "PSP capture results.", ["result"], registry=registry
        )
        self.psp_duration = Histogram(
            "payments_psp_request_duration_seconds",
            "PSP capture including retries.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.psp_retries = Counter("payments_psp_retries", "PSP retries.", ["kind"], registry=registry)
        self.compensations = Counter(
            "payments_compensations", "Reservations released by compensation.", ["reason"], registry=registry
        )
        self.ledger_batch_size = Histogram(
            "payments_ledger_batch_size",
            "Journal entries per batch.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.ledger_commit = Histogram(
            "payments_ledger_commit_duration_seconds",
            "One ledger batch transaction.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.ledger_postings = Counter(
            "payments_ledger_postings", "Posting legs committed.", registry=registry
        )
        self.outbox_backlog_rows = Gauge(
            "payments_outbox_backlog_rows", "Unpublished outbox rows.", registry=registry
        )
        self.outbox_oldest_age = Gauge(
            "payments_outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox row.",
            registry=registry,
        )
        self.outbox_pruned = Counter(
            "payments_outbox_pruned_rows",
            "Published outbox rows deleted past the retention (PAYMENTS_OUTBOX_RETENTION_HOURS).",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "payments_consumer_lag_messages",
            "Messages not yet consumed.",
            ["topic", "partition"],
            registry=registry,
        )
        self.reservations_in_flight = Gauge(
            "payments_reservations_in_flight", "Holds on this worker's accounts.", registry=registry
        )
        self.refunds = Counter("payments_refunds", "Refund outcomes.", ["outcome"], registry=registry)
        self.view_events_skipped = Counter(
            "payments_view_events_skipped",
            "Messages of the public event topics the read side could not read (logged).",
            ["topic"],
            registry=registry,
        )
        self.webhook_deliveries = Counter(
            "payments_webhook_deliveries",
            "Webhook attempts by result: delivered, retry (to be tried again), failed (its schedule spent).",
            ["result"],
            registry=registry,
        )
        self.webhook_attempt = Histogram(
            "payments_webhook_attempt_seconds", "Duration of one webhook attempt, answered or not.",
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.webhook_backlog = Gauge(
            "payments_webhook_backlog", "Webhook deliveries pending (due now or later), all workers.",
            registry=registry,
        )
        self.webhook_oldest_due = Gauge(
            "payments_webhook_oldest_due_seconds",
            "How long the oldest pending webhook delivery has been due (0: none is).", registry=registry,
        )
        self.webhook_deliveries_pruned = Counter(
            "payments_webhook_deliveries_pruned",
            "Settled webhook deliveries deleted past the retention (PAYMENTS_WEBHOOK_RETENTION_HOURS).",
            registry=registry,
        )
        self.webhook_endpoints_disabled = Counter(
            "payments_webhook_endpoints_disabled", "Webhook endpoints disabled for failing too long.",
            registry=registry,
        )

    def dead_letter(self, topic: str, reason: str) -> None:
        self.dead_letters.labels(topic, reason).inc()

    def rejected(self, command_type: str, reason: str) -> None:
        self.commands_rejected.labels(command_type, str(reason)).inc()
