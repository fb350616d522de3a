"""Seeded traffic the faults ride on, pure: PSP behaviours with the outcome each must
reach, poison messages that must be refused, and the interleaving of several streams."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from harness.workload import PlannedPayment
from infra.topics import ACCOUNT_COMMANDS, PAYMENT_COMMANDS

FIVE_MB = 5 * 1024 * 1024


def poison_messages(rng: random.Random, prefix: str, debtor: str, creditor: str
                    ) -> list[tuple[str, str, bytes]]:
    """(topic, key, value) of commands that must be refused (CommandRejected or dead letter)."""
    messages: list[tuple[str, str, bytes]] = []

    def good(key: str) -> dict[str, Any]:
        return {"type": "RequestPayment", "idempotency_key": key, "debtor_account_id": debtor,
                "creditor_account_id": creditor, "amount": 100, "currency": "USD"}

    def add(name: str, value: Callable[[str], bytes], topic: str = PAYMENT_COMMANDS) -> None:
        key = f"{prefix}-poison-{name}"
        messages.append((topic, key, value(key)))

    add("truncated", lambda k: (body := orjson.dumps(good(k)))[:rng.randint(1, len(body) - 1)])
    add("invalid-utf8",
        lambda k: orjson.dumps({**good(k), "description": "D"}).replace(b'"D"', b'"\xff\xfe"'))
    if rng.random() < 0.5:
        add("5mb-garbage", lambda k: rng.randbytes(FIVE_MB))
    else:
        add("5mb-description", lambda k: orjson.dumps({**good(k), "description": "x" * FIVE_MB}))
    for name, changes in [
        ("amount-string", {"amount": "100"}), ("debtor-number", {"debtor_account_id": 12345}),
        ("amount-true", {"amount": True}), ("amount-false", {"amount": False}),
        ("amount-float", {"amount": 1.5}), ("amount-integral-float", {"amount": 100.0}),
        ("amount-zero", {"amount": 0}), ("amount-minus-one", {"amount": -1}),
        ("amount-2-pow-63", {"amount": 2**63}), ("currency-unknown", {"currency": "XYZ"}),
        ("metadata-not-strings", {"metadata": {"n": rng.randint(0, 9)}}),
    ]:
        add(name, lambda k, c=changes: orjson.dumps({**good(k), **c}))
    for name, amount in [("fund-amount-true", True), ("fund-amount-float", 2.5)]:
        add(name, lambda k, a=amount: orjson.dumps({"type": "FundAccount", "idempotency_key": k,
                                                    "account_id": debtor, "amount": a, "currency": "USD"}),
            topic=ACCOUNT_COMMANDS)
    rng.shuffle(messages)
    return messages


def interleave(rng: random.Random, queues: Sequence[Sequence[Any]]) -> list[Any]:
    """A seeded interleaving of several sequences that keeps each one's own order."""
    heads = [list(queue) for queue in queues if queue]
    merged: list[Any] = []
    while heads:
        chosen = rng.choices(heads, weights=[len(h) for h in heads])[0]
        merged.append(chosen.pop(0))
        heads = [h for h in heads if h]
    return merged




def psp_payment(rng: random.Random, key: str, debtor: str, creditor: str) -> PlannedPayment:
    """A payment with a seeded PSP behaviour and the outcome it must reach."""
    amount = rng.randint(100, 2_000)
    roll = rng.random()
    if roll < 0.25:
        return PlannedPayment(key, debtor, creditor, amount, "captured")
    if roll < 0.40:
        return PlannedPayment(key, debtor, creditor, amount, "psp_declined", simulation="decline")
    if roll < 0.65:  # the retry budget is 6 attempts: up to 5 errors still capture
        failures = rng.randint(1, 5)
        return PlannedPayment(key, debtor, creditor, amount, "captured",
                              simulation=f"fail_then_approve:{failures}")
    if roll < 0.70:
        failures = rng.randint(6, 9)
        return PlannedPayment(key, debtor, creditor, amount, "psp_unavailable",
                              simulation=f"fail_then_approve:{failures}")
    if roll < 0.98:
        return PlannedPayment(key, debtor, creditor, amount, "captured",
                              simulation=f"latency_ms:{rng.randint(1, 400)}")
    # Every attempt answers after the 2 s attempt timeout: the answer always comes too late.
    return PlannedPayment(key, debtor, creditor, amount, "psp_unavailable", simulation="latency_ms:2500")
