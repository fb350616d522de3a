"""The notify step's decisions (models/webhooks.py): matching, schedules, the address guard."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from datetime import UTC, datetime

import orjson
import pytest

from models.codec import Unreadable
from models.webhooks import (
    JITTER,
    address_refusal,
    new_secret,
    notice_of,
    parse_schedule,
    retry_delay,
    url_refusal,
)
from settings import WEBHOOK_RETRY_SCHEDULE

AT = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
EVENT_ID = "5c1d3b8e-0a47-4e59-9f3e-3b7a2d1c9e10"


def event(event_type: str, **fields: object) -> bytes:
    return orjson.dumps(
        {"event_id": EVENT_ID, "event_type": event_type, "occurred_at": AT.isoformat(), **fields}
    )


def test_a_notice_names_the_accounts_its_event_involves() -> None:
    captured = notice_of(
        "fintech.events.PaymentCaptured",
        event("PaymentCaptured", debtor_account_id="a", creditor_account_id="b"),
    )
    assert not isinstance(captured, Unreadable)
    assert captured.accounts == ("a", "b") and captured.event_type == "PaymentCaptured"
    assert captured.occurred_at == AT and orjson.loads(captured.payload)["event_id"] == EVENT_ID
    funded = notice_of("fintech.events.AccountFunded", event("AccountFunded", account_id="c"))
    assert not isinstance(funded, Unreadable) and funded.accounts == ("c",)
    unknown_payment = notice_of("fintech.events.RefundFailed", event("RefundFailed", debtor_account_id=None))
    assert not isinstance(unknown_payment, Unreadable) and unknown_payment.accounts == ()


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"not json",
        b"[1]",
        event("PaymentFailed"),
        orjson.dumps({"event_type": "PaymentCaptured"}),
        event("PaymentCaptured", occurred_at="yesterday"),
    ],
)
def test_what_is_not_an_event_of_its_topic_is_unreadable(raw: bytes | None) -> None:
    assert isinstance(notice_of("fintech.events.PaymentCaptured", raw), Unreadable)


def test_a_notice_names_its_type_and_the_accounts_it_is_about() -> None:
    """What an endpoint's filters are matched against (ledger/webhooks.py, ENQUEUE: the one
    place they are applied, tested against PostgreSQL in tests/integration/test_webhooks.py)."""
    notice = notice_of(
        "fintech.events.PaymentFailed", event("PaymentFailed", debtor_account_id="a", creditor_account_id="b")
    )
    assert not isinstance(notice, Unreadable)
    assert (notice.event_type, sorted(notice.accounts)) == ("PaymentFailed", ["a", "b"])


def test_the_schedule_gives_each_retry_its_delay_with_jitter_then_ends() -> None:
    chance = random.Random(3)
    delays = [retry_delay((5, 300), attempts, chance) for attempts in (1, 2, 3)]
    assert delays[0] == pytest.approx(5, rel=JITTER) and delays[1] == pytest.approx(300, rel=JITTER)
    assert delays[2] is None
    spread = {round(retry_delay((100,), 1, chance) or 0, 3) for _ in range(20)}
    assert len(spread) > 10 and all(90 <= d <= 110 for d in spread)


def test_schedules_are_parsed_and_checked() -> None:
    assert parse_schedule("0.2,5, 300") == (0.2, 5, 300)
    assert WEBHOOK_RETRY_SCHEDULE == (5, 300, 1800, 7200, 18000, 36000, 36000)
    for bad in ("", "5,,6", "-1", "soon"):
        with pytest.raises(ValueError):
            parse_schedule(bad)


def test_urls_and_addresses_a_webhook_may_not_reach() -> None:
    assert url_refusal("https://merchant.example/hooks", allow_private=False) is None
    assert "not https" in (url_refusal("http://merchant.example/hooks", allow_private=False) or "")
    assert url_refusal("http://127.0.0.1:9000/hooks", allow_private=True) is None
    assert url_refusal("ftp://merchant.example/x", allow_private=True)
    assert url_refusal("https://user:pw@merchant.example/x", allow_private=False)
    for address in (
        "127.0.0.1",
        "10.0.0.5",
        "172.16.3.4",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fc00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "100.64.0.1",
        "0.0.0.0",
    ):
        assert address_refusal(address, allow_private=False), address
        assert address_refusal(address, allow_private=True) is None
    for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"):
        assert address_refusal(address, allow_private=False) is None


def test_every_secret_made_is_one_the_standard_verifier_reads_the_same_way() -> None:
    from standardwebhooks.webhooks import Webhook

    for _ in range(500):
        secret = new_secret()
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        assert len(key) == 32
        signature = Webhook(secret).sign("msg_1", AT, "{}")
        expected = hmac.new(key, f"msg_1.{int(AT.timestamp())}.{{}}".encode(), hashlib.sha256).digest()
        assert signature == "v1," + base64.b64encode(expected).decode()


def test_ipv6_forms_that_embed_a_private_ipv4_address_are_refused() -> None:
    for address in ("64:ff9b::a00:5", "2002:7f00:1::", "::127.0.0.1", "::ffff:10.0.0.1",
                    "2001:0:4136:e378:8000:63bf:f5ff:fffe"):  # Teredo, client 10.0.0.1
        assert address_refusal(address, allow_private=False), address
    assert address_refusal("64:ff9b::5db8:d822", allow_private=False) is None  # NAT64 of 93.184.216.34
