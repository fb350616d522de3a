"""Steps and records on the wire: batches of steps, one bad step among good ones, the
owners' table values read back exactly as written."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from agents.outlet import step_messages
from infra.producer import partition_for
from models.account import Account
from models.outputs import Dispatch
from models.owner import Tracking
from models.payment import HistoryEntry, Payment, RefundRecord
from models.steps import (
    STEPS_PER_MESSAGE_MAX,
    ApplyCredit,
    BadStep,
    Origin,
    PaymentRequest,
    PspAnswered,
    decode_message,
    encode_batch,
    encode_step,
)
from tables import owners

AT = Origin("payments.steps", 2, 40, 3)


def credit(n: int) -> ApplyCredit:
    return ApplyCredit(
        origin=Origin("payments.steps", 1, n), account_id=f"acct-{n}", transaction_id=f"t{n}", amount=n + 1
    )


def test_a_batch_gives_back_each_step_in_order() -> None:
    steps = [
        credit(1),
        PspAnswered(origin=AT, payment_id="p", home="h", result="declined", detail="no"),
        credit(2),
    ]
    assert decode_message(encode_batch(steps)) == steps


def test_a_message_of_one_step_is_read_as_that_step() -> None:
    assert decode_message(encode_step(credit(7))) == [credit(7)]


def test_a_bad_step_comes_back_in_its_place_with_its_bytes_and_the_rest_is_read() -> None:
    good = encode_step(credit(1)).decode()
    raw = f'{{"kind":"StepBatch","steps":[{good},{{"kind":"ApplyCredit","amount":"x"}},{good}]}}'.encode()
    first, bad, last = decode_message(raw)
    assert first == last == credit(1)
    assert isinstance(bad, BadStep) and b'"amount":"x"' in bad.raw and "amount" in bad.error


def test_bytes_that_are_not_json_come_back_whole() -> None:
    [bad] = decode_message(b"\xff not json")
    assert isinstance(bad, BadStep) and bad.raw == b"\xff not json"
    [empty] = decode_message(None)
    assert isinstance(empty, BadStep)


def test_dispatches_go_one_message_per_partition_in_order_split_past_the_maximum() -> None:
    dispatches = [Dispatch(f"acct-{n % 2}", credit(n)) for n in range(2 * STEPS_PER_MESSAGE_MAX + 20)]
    messages = step_messages(dispatches, 8)
    by_partition: dict[int, list[object]] = {}
    for message in messages:
        by_partition.setdefault(message.partition, []).extend(decode_message(message.value))  # type: ignore[arg-type]
    for partition, steps in by_partition.items():
        expected = [d.step for d in dispatches if partition_for(d.key.encode(), 8) == partition]
        assert steps == expected
    assert len(messages) > len(by_partition)  # the biggest partition took two messages


def test_every_value_of_the_owners_table_reads_back_as_written() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    request = PaymentRequest("k", "alice", "bob", 5, "USD", "a description", {"psp_simulation": "decline"})
    payment = Payment(
        payment_id="p1",
        fingerprint="f",
        request=request,
        status="partially_refunded",
        reason=None,
        psp="approved",
        psp_reference="ref",
        requested_at=AT,
        outcome=msgspec.Raw(b'{"event_type":"PaymentCaptured","amount":5}'),
        history=(HistoryEntry("initiated", now), HistoryEntry("captured", now, "d")),
        refunds={
            "r": RefundRecord(
                refund_id="rid",
                fingerprint="rf",
                amount=2,
                status="refunded",
                outcome=msgspec.Raw(b'{"x":1}'),
            )
        },
        refunded_total=2,
    )
    values = {
        owners.account_key("alice"): Account(
            account_id="alice",
            owner_id="o",
            currency="USD",
            overdraft_limit=3,
            kyc_status="verified",
            posted=-2,
            holds={"p1": 5},
        ),
        owners.payment_key("p1"): payment,
        owners.home_key("p1"): "alice",
        owners.tracking_key(2): Tracking({"payments.steps#1": (40, 3)}),
    }
    for key, value in values.items():
        back = owners.decode(key, owners.encode(value))
        assert msgspec.json.encode(back) == msgspec.json.encode(value), key
    assert bytes(owners.decode(owners.payment_key("p1"), owners.encode(payment)).outcome) == bytes(
        payment.outcome
    )  # type: ignore[union-attr]


def test_a_payment_in_flight_carries_the_mark_the_recovery_scan_looks_for() -> None:
    from models.payment import IN_FLIGHT_MARK

    request = PaymentRequest("k", "alice", "bob", 5, "USD")
    stored = owners.encode(Payment(payment_id="p", fingerprint="f", request=request, psp="in_flight"))
    assert IN_FLIGHT_MARK in stored
    assert IN_FLIGHT_MARK not in owners.encode(
        Payment(payment_id="p", fingerprint="f", request=request, psp="approved")
    )
