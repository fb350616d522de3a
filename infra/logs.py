"""Logging: JSON lines for machines, readable lines in a terminal.

Every record that concerns a payment carries `payment_id`, `idempotency_key` and
`correlation_id` (pass them with `extra=payment_context(...)`), so one payment's
story can be pulled out of any worker's log.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime

import orjson

CONTEXT_FIELDS = ("payment_id", "idempotency_key", "correlation_id", "account_id")


def payment_context(payment_id: str, idempotency_key: str | None = None) -> dict[str, str]:
    context = {"payment_id": payment_id, "correlation_id": payment_id}
    if idempotency_key:
        context["idempotency_key"] = idempotency_key
    return context


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({name: getattr(record, name) for name in CONTEXT_FIELDS if hasattr(record, name)})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(f"{n}={getattr(record, n)}" for n in CONTEXT_FIELDS if hasattr(record, n))
        return f"{text} [{context}]" if context else text


def configure(stream: object = None) -> None:
    """PAYMENTS_LOG_FORMAT=json|text (default: text in a terminal, JSON otherwise);
    PAYMENTS_LOG_LEVEL for the service's own loggers (default INFO); PAYMENTS_FAUST_LOG_LEVEL
    for everything else, Faust and aiokafka included (default WARNING)."""
    out = stream or sys.stderr
    wanted = os.environ.get("PAYMENTS_LOG_FORMAT") or ("text" if out.isatty() else "json")  # type: ignore[attr-defined]
    handler = logging.StreamHandler(out)  # type: ignore[arg-type]
    handler.setFormatter(JsonFormatter() if wanted == "json" else
                         TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("PAYMENTS_FAUST_LOG_LEVEL", "WARNING").upper())
    level = os.environ.get("PAYMENTS_LOG_LEVEL", "INFO").upper()
    for name in ("agents", "api", "ledger", "psp", "infra", "cli", "app", "payments.audit"):
        logging.getLogger(name).setLevel(level)
