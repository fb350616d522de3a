"""The payment owner: one outcome per payment, idempotent repeats, and refunds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from models import payment
from models.commands import RefundPayment, RequestPayment
from models.events import (
    CommandRejected,
    FailureReason,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentFailed,
    PaymentInitiated,
    PaymentRefunded,
    RefundFailed,
    RefundFailureReason,
    RejectionReason,
    event_id_for,
)
from models.outputs import Dispatch, Publish
from models.payment import (
    PaymentRecord,
    fail,
    payment_id_for,
    posted,
    refund_id_for,
    refund_posted,
    refund_step_failed,
    step_failed,
    submit,
    submit_refund,
)
from models.psp_flow import approved, not_captured
from models.steps import (
    AuthorizePayment,
    CheckCreditor,
    Origin,
    PaymentAuthorizedStep,
    PaymentPosted,
    PaymentStepFailed,
    PostCapture,
    RefundPosted,
    RefundStepFailed,
    RefundSubmitted,
    ReleaseFunds,
    ReserveFunds,
)

ORIGIN = Origin(topic="payment-steps", partition=1, offset=7)
RISK_MAX = 1_000_000
PAYMENT_ID = payment_id_for("key-1")


def request(amount: int = 1000, **changes: Any) -> RequestPayment:
    body: dict[str, Any] = {"idempotency_key": "key-1", "debtor_account_id": "alice",
                            "creditor_account_id": "bob", "amount": amount, "currency": "USD"}
    return RequestPayment.model_validate({**body, **changes})


def submitted(command: RequestPayment | None = None) -> tuple[PaymentRecord, list[Any]]:
    command = command or request()
    record, outputs = submit(None, payment_id_for(command.idempotency_key), command.fingerprint(),
                             command, ORIGIN, RISK_MAX)
    assert record is not None
    return record, outputs


def captured_event(record: PaymentRecord) -> PaymentCaptured:
    return PaymentCaptured(
        event_id=event_id_for(record.payment_id, "PaymentCaptured"),
        **payment.payment_facts(record.payment_id, record.request), psp_reference="psp-1",
        transaction_id=uuid4(),
    )


def captured(amount: int = 1000) -> PaymentRecord:
    record, _ = submitted(request(amount))
    return posted(record, PaymentPosted(origin=ORIGIN, payment_id=record.payment_id,
                                        event=captured_event(record)))


def failed_step(reason: FailureReason = FailureReason.PSP_DECLINED) -> PaymentStepFailed:
    return PaymentStepFailed(origin=ORIGIN, payment_id=PAYMENT_ID, reason=reason, detail="declined")


def refund_step(key: str = "r-1", amount: int | None = None, payment_id: str = PAYMENT_ID
                ) -> RefundSubmitted:
    command = RefundPayment(idempotency_key=key, payment_id=payment_id, amount=amount)
    return RefundSubmitted(origin=ORIGIN, payment_id=payment_id, fingerprint=command.fingerprint(),
                           command=command)


def refunded_event(key: str, amount: int) -> PaymentRefunded:
    return PaymentRefunded(event_id=event_id_for(refund_id_for(PAYMENT_ID, key), "PaymentRefunded"),
                           payment_id=PAYMENT_ID, idempotency_key=key, amount=amount, currency="USD",
                           transaction_id=uuid4())


def refund(record: PaymentRecord, key: str = "r-1", amount: int | None = None) -> PaymentRecord:
    updated, outputs = submit_refund(record, refund_step(key, amount), ORIGIN)
    assert updated is not None and len(outputs) == 1 and isinstance(outputs[0], Dispatch), outputs
    return updated


def settle_refund(record: PaymentRecord, key: str) -> PaymentRecord:
    amount = record.refunds[key].amount
    return refund_posted(record, RefundPosted(origin=ORIGIN, payment_id=PAYMENT_ID,
                                              event=refunded_event(key, amount)))


def published(outputs: list[Any]) -> list[Any]:
    return [output.event for output in outputs if isinstance(output, Publish)]


def only_event(outputs: list[Any], kind: type) -> Any:
    events = published(outputs)
    assert len(events) == 1 and len(outputs) == 1, outputs
    assert isinstance(events[0], kind)
    return events[0]


# --- identity --------------------------------------------------------------------------------


def test_payment_id_is_deterministic_per_key() -> None:
    assert payment_id_for("key-1") == payment_id_for("key-1")
    assert payment_id_for("key-1") != payment_id_for("key-2")
    UUID(payment_id_for("key-1"))


def test_refund_id_differs_from_the_payment_id_of_the_same_key() -> None:
    assert refund_id_for(PAYMENT_ID, "key-1") != payment_id_for("key-1")


# --- submit ----------------------------------------------------------------------------------


def test_new_payment_publishes_initiated_and_checks_the_creditor() -> None:
    record, outputs = submitted()
    initiated, check = outputs
    assert isinstance(initiated, Publish) and isinstance(initiated.event, PaymentInitiated)
    assert initiated.event.event_id == event_id_for(PAYMENT_ID, "PaymentInitiated")
    assert (initiated.event.payment_id, initiated.event.amount) == (PAYMENT_ID, 1000)
    assert isinstance(check, Dispatch) and (check.route, check.key) == ("account", "bob")
    assert isinstance(check.step, CheckCreditor) and check.step.origin == ORIGIN
    assert (record.status, record.outcome) == ("pending", None)
    assert [entry.step for entry in record.history] == ["initiated"]


def test_same_account_fails_immediately() -> None:
    record, outputs = submitted(request(debtor_account_id="bob"))
    failed = only_event(outputs, PaymentFailed)
    assert failed.reason == FailureReason.SAME_ACCOUNT
    assert (record.status, record.reason, record.outcome) == ("failed", FailureReason.SAME_ACCOUNT, failed)


def test_amount_above_the_risk_maximum_fails_immediately() -> None:
    record, outputs = submitted(request(RISK_MAX + 1))
    assert only_event(outputs, PaymentFailed).reason == FailureReason.RISK_REJECTED
    assert record.status == "failed"


def test_amount_at_the_risk_maximum_is_accepted() -> None:
    record, _ = submitted(request(RISK_MAX))
    assert record.status == "pending"


def test_repeat_while_pending_says_nothing() -> None:
    record, _ = submitted()
    again, outputs = submit(record, PAYMENT_ID, request().fingerprint(), request(), ORIGIN, RISK_MAX)
    assert (again, outputs) == (record, [])


def test_repeat_after_the_outcome_republishes_it_with_the_same_event_id() -> None:
    record, first = submitted(request(debtor_account_id="bob"))
    command = request(debtor_account_id="bob")
    again, outputs = submit(record, PAYMENT_ID, command.fingerprint(), command, ORIGIN, RISK_MAX)
    assert again == record
    assert only_event(outputs, PaymentFailed).event_id == only_event(first, PaymentFailed).event_id


def test_repeat_of_a_captured_payment_republishes_the_capture() -> None:
    record = captured()
    _, outputs = submit(record, PAYMENT_ID, request().fingerprint(), request(), ORIGIN, RISK_MAX)
    assert only_event(outputs, PaymentCaptured) == record.outcome


def test_same_key_with_another_payload_is_an_idempotency_conflict() -> None:
    record, _ = submitted()
    other = request(2000)
    after, outputs = submit(record, PAYMENT_ID, other.fingerprint(), other, ORIGIN, RISK_MAX)
    rejected = only_event(outputs, CommandRejected)
    assert (rejected.reason, rejected.command_type, rejected.idempotency_key) == (
        RejectionReason.IDEMPOTENCY_CONFLICT, "RequestPayment", "key-1")
    assert after == record


def test_redelivered_conflict_keeps_its_event_id(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=s) for s in range(1_000))
    monkeypatch.setattr(payment, "now", lambda: next(clock), raising=False)  # a redelivery, later
    record, _ = submitted()
    other = request(2000)
    _, first = submit(record, PAYMENT_ID, other.fingerprint(), other, ORIGIN, RISK_MAX)
    _, again = submit(record, PAYMENT_ID, other.fingerprint(), other, ORIGIN, RISK_MAX)
    assert only_event(again, CommandRejected).event_id == only_event(first, CommandRejected).event_id


# --- one outcome -----------------------------------------------------------------------------


def test_step_failure_publishes_payment_failed_once() -> None:
    record, _ = submitted()
    failed, outputs = step_failed(record, failed_step())
    event = only_event(outputs, PaymentFailed)
    assert event.event_id == event_id_for(PAYMENT_ID, "PaymentFailed")
    assert (failed.status, failed.reason, failed.outcome) == ("failed", FailureReason.PSP_DECLINED, event)


def test_fail_after_an_outcome_changes_nothing() -> None:
    record, _ = submitted()
    failed, _ = fail(record, FailureReason.INSUFFICIENT_FUNDS, "short")
    again, outputs = fail(failed, FailureReason.PSP_DECLINED, "declined")
    assert (again, outputs) == (failed, [])


def test_fail_after_capture_changes_nothing() -> None:
    record = captured()
    assert fail(record, FailureReason.PSP_UNAVAILABLE, "late") == (record, [])


def test_posted_after_a_failure_changes_nothing() -> None:
    record, _ = submitted()
    failed, _ = fail(record, FailureReason.PSP_DECLINED, "declined")
    step = PaymentPosted(origin=ORIGIN, payment_id=PAYMENT_ID, event=captured_event(record))
    assert posted(failed, step) == failed


def test_posted_records_the_capture() -> None:
    record = captured()
    assert (record.status, record.psp_reference) == ("captured", "psp-1")
    assert isinstance(record.outcome, PaymentCaptured)


def test_a_posting_with_its_approval_time_notes_the_authorization_then_the_capture() -> None:
    record, _ = submitted()
    approved_at = record.history[-1].at + timedelta(milliseconds=5)
    step = PaymentPosted(origin=ORIGIN, payment_id=PAYMENT_ID, event=captured_event(record),
                         authorized_at=approved_at)
    done = posted(record, step)
    assert [(h.step, h.at) for h in done.history][-2:] == [
        ("authorized", approved_at), ("captured", done.history[-1].at)]
    assert (done.status, done.psp_reference) == ("captured", "psp-1")


def test_a_posting_after_a_separate_authorization_step_notes_it_once() -> None:
    record, _ = submitted()
    record = payment.authorized(record, PaymentAuthorizedStep(origin=ORIGIN, payment_id=PAYMENT_ID,
                                                              psp_reference="psp-1"))
    step = PaymentPosted(origin=ORIGIN, payment_id=PAYMENT_ID, event=captured_event(record),
                         authorized_at=record.history[-1].at)
    assert [h.step for h in posted(record, step).history] == ["initiated", "authorized", "captured"]


def test_posted_twice_keeps_the_first_capture() -> None:
    record = captured()
    later = record.outcome.model_copy(update={"psp_reference": "other"})  # type: ignore[union-attr]
    assert posted(record, PaymentPosted(origin=ORIGIN, payment_id=PAYMENT_ID, event=later)) == record


def test_authorized_notes_the_psp_reference_only_while_pending() -> None:
    record, _ = submitted()
    step = PaymentAuthorizedStep(origin=ORIGIN, payment_id=PAYMENT_ID, psp_reference="psp-1")
    assert payment.authorized(record, step).psp_reference == "psp-1"
    failed, _ = fail(record, FailureReason.PSP_DECLINED, "declined")
    assert payment.authorized(failed, step) == failed


# --- psp_flow --------------------------------------------------------------------------------


def authorize_step() -> AuthorizePayment:
    return AuthorizePayment(origin=ORIGIN, payment_id=PAYMENT_ID, reservation_id=PAYMENT_ID,
                            payment=request())


def test_psp_approval_publishes_authorized_and_posts_the_capture() -> None:
    authorized, to_ledger = approved(authorize_step(), "psp-1", ORIGIN)
    assert isinstance(authorized, Publish) and isinstance(authorized.event, PaymentAuthorized)
    assert isinstance(to_ledger, Dispatch) and (to_ledger.route, to_ledger.key) == ("ledger", PAYMENT_ID)
    assert isinstance(to_ledger.step, PostCapture)
    assert (to_ledger.step.reservation_id, to_ledger.step.psp_reference) == (PAYMENT_ID, "psp-1")
    assert to_ledger.step.authorized_at == authorized.event.occurred_at  # goes on with the posting


def test_psp_refusal_releases_the_debtors_hold() -> None:
    (release,) = not_captured(authorize_step(), FailureReason.PSP_UNAVAILABLE, "gave up", ORIGIN)
    assert isinstance(release, Dispatch) and (release.route, release.key) == ("account", "alice")
    assert isinstance(release.step, ReleaseFunds)
    assert (release.step.reservation_id, release.step.reason) == (PAYMENT_ID, FailureReason.PSP_UNAVAILABLE)


# --- refunds ---------------------------------------------------------------------------------


def refund_refused(record: PaymentRecord | None, step: RefundSubmitted) -> RefundFailed:
    _, outputs = submit_refund(record, step, ORIGIN)
    return only_event(outputs, RefundFailed)


def test_refund_of_an_unknown_payment_fails() -> None:
    after, outputs = submit_refund(None, refund_step(), ORIGIN)
    assert after is None
    assert only_event(outputs, RefundFailed).reason == RefundFailureReason.UNKNOWN_PAYMENT


def test_refund_of_a_pending_payment_fails_as_not_captured() -> None:
    record, _ = submitted()
    assert refund_refused(record, refund_step()).reason == RefundFailureReason.PAYMENT_NOT_CAPTURED


def test_refund_of_a_failed_payment_fails_as_not_captured() -> None:
    record, _ = submitted(request(debtor_account_id="bob"))
    step = refund_step(payment_id=record.payment_id)
    assert refund_refused(record, step).reason == RefundFailureReason.PAYMENT_NOT_CAPTURED


def test_refund_above_the_captured_amount_fails() -> None:
    failed = refund_refused(captured(1000), refund_step(amount=1001))
    assert (failed.reason, failed.amount) == (RefundFailureReason.AMOUNT_EXCEEDS_REFUNDABLE, 1001)


def test_refund_counts_what_is_refunded_and_in_progress() -> None:
    record = settle_refund(refund(captured(1000), "r-1", 300), "r-1")
    record = refund(record, "r-2", 200)
    assert record.refundable == 500
    step = refund_step("r-3", 501)
    assert refund_refused(record, step).reason == RefundFailureReason.AMOUNT_EXCEEDS_REFUNDABLE
    assert refund(record, "r-3", 500).refundable == 0


def test_refund_reserves_on_the_creditor() -> None:
    _, outputs = submit_refund(captured(1000), refund_step(amount=400), ORIGIN)
    (dispatch,) = outputs
    assert (dispatch.route, dispatch.key) == ("account", "bob")
    hold = dispatch.step
    assert isinstance(hold, ReserveFunds)
    assert (hold.account_id, hold.amount, hold.refund_key, hold.reservation_id) == (
        "bob", 400, "r-1", refund_id_for(PAYMENT_ID, "r-1"))


def test_partial_refund_then_the_rest() -> None:
    record = settle_refund(refund(captured(1000), "r-1", 300), "r-1")
    assert (record.status, record.refunded_total, record.refund_pending) == ("partially_refunded", 300, 0)
    record = settle_refund(refund(record, "r-2", 700), "r-2")
    assert (record.status, record.refunded_total, record.refundable) == ("refunded", 1000, 0)


def test_default_refund_takes_the_remaining_refundable() -> None:
    record = settle_refund(refund(captured(1000), "r-1", 250), "r-1")
    record = refund(record, "r-2")
    assert record.refunds["r-2"].amount == 750
    assert record.refund_pending == 750
    assert settle_refund(record, "r-2").status == "refunded"


def test_default_refund_of_a_fully_refunded_payment_fails() -> None:
    record = settle_refund(refund(captured(1000), "r-1"), "r-1")
    assert refund_refused(record, refund_step("r-2")).reason == RefundFailureReason.AMOUNT_EXCEEDS_REFUNDABLE


def test_refund_step_failed_returns_the_pending_amount() -> None:
    record = refund(captured(1000), "r-1", 400)
    step = RefundStepFailed(origin=ORIGIN, payment_id=PAYMENT_ID, refund_key="r-1",
                            reason=RefundFailureReason.INSUFFICIENT_FUNDS, detail="short")
    after, outputs = refund_step_failed(record, step)
    failed = only_event(outputs, RefundFailed)
    assert (failed.reason, failed.amount) == (RefundFailureReason.INSUFFICIENT_FUNDS, 400)
    assert (after.refund_pending, after.refundable, after.refunds["r-1"].status) == (0, 1000, "failed")
    assert after.status == "captured"


def test_refund_step_failed_twice_returns_the_amount_once() -> None:
    record = refund(captured(1000), "r-1", 400)
    step = RefundStepFailed(origin=ORIGIN, payment_id=PAYMENT_ID, refund_key="r-1",
                            reason=RefundFailureReason.INSUFFICIENT_FUNDS, detail="short")
    once, _ = refund_step_failed(record, step)
    assert refund_step_failed(once, step) == (once, [])


def test_refund_posted_twice_counts_once() -> None:
    record = settle_refund(refund(captured(1000), "r-1", 300), "r-1")
    assert settle_refund(record, "r-1") == record


def test_repeated_refund_republishes_its_outcome() -> None:
    record = settle_refund(refund(captured(1000), "r-1", 300), "r-1")
    after, outputs = submit_refund(record, refund_step("r-1", 300), ORIGIN)
    assert after == record
    expected = event_id_for(refund_id_for(PAYMENT_ID, "r-1"), "PaymentRefunded")
    assert only_event(outputs, PaymentRefunded).event_id == expected


def test_repeated_refund_while_pending_says_nothing() -> None:
    record = refund(captured(1000), "r-1", 300)
    assert submit_refund(record, refund_step("r-1", 300), ORIGIN) == (record, [])


def test_repeated_refused_refund_republishes_the_same_failure() -> None:
    record = captured(1000)
    after, first = submit_refund(record, refund_step("r-1", 5000), ORIGIN)
    assert after is not None
    _, again = submit_refund(after, refund_step("r-1", 5000), ORIGIN)
    assert only_event(again, RefundFailed).event_id == only_event(first, RefundFailed).event_id


def test_refund_key_with_another_payload_is_an_idempotency_conflict() -> None:
    record = refund(captured(1000), "r-1", 300)
    after, outputs = submit_refund(record, refund_step("r-1", 200), ORIGIN)
    rejected = only_event(outputs, CommandRejected)
    assert (rejected.reason, rejected.command_type) == (RejectionReason.IDEMPOTENCY_CONFLICT, "RefundPayment")
    assert after == record
