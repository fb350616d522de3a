"""Log lines: JSON with the payment's ids for machines, readable text for a terminal."""

from __future__ import annotations

import io
import logging

import orjson

from infra.logs import JsonFormatter, TextFormatter, payment_context


def record(**extra: str) -> logging.LogRecord:
    entry = logging.LogRecord("agents.payments", logging.INFO, __file__, 1, "payment %s", ("failed",), None)
    entry.__dict__.update(extra)
    return entry


def test_json_lines_carry_the_payment_context() -> None:
    line = orjson.loads(JsonFormatter().format(record(**payment_context("pay-1", "key-1"))))
    assert line["message"] == "payment failed" and line["level"] == "info"
    assert (line["payment_id"], line["idempotency_key"], line["correlation_id"]) == (
        "pay-1",
        "key-1",
        "pay-1",
    )
    assert line["time"].endswith("Z")


def test_lines_without_a_payment_have_no_payment_fields() -> None:
    line = orjson.loads(JsonFormatter().format(record()))
    assert "payment_id" not in line


def test_text_lines_append_the_context_readably() -> None:
    text = TextFormatter("%(levelname)s %(message)s").format(record(**payment_context("pay-1")))
    assert text == "INFO payment failed [payment_id=pay-1 correlation_id=pay-1]"


def test_configure_picks_json_when_not_a_terminal(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from infra import logs

    monkeypatch.delenv("PAYMENTS_LOG_FORMAT", raising=False)
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure(stream)
        logging.getLogger("agents.test").info("hello", extra=payment_context("p"))
        assert orjson.loads(stream.getvalue())["payment_id"] == "p"
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
