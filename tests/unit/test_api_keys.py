"""API keys and the decisions on them (models/api_keys.py), and the rate a key may ask at."""

from __future__ import annotations

import pytest

from models.api_keys import (
    SCOPES,
    TokenBucket,
    authenticate,
    check_scopes,
    digest,
    mint,
    missing_scope,
    outside_accounts,
    presented,
)


def test_a_minted_key_authenticates_and_nothing_close_to_it_does() -> None:
    key, text = mint("shop", frozenset({"payments:write"}), None)
    keys = {key.key_id: key}
    assert text.startswith("pk_") and key.secret_digest == digest(text.partition(".")[2])
    assert authenticate(keys, presented(f"Bearer {text}")) == key
    assert authenticate(keys, presented(f"bearer  {text} ")) == key
    assert authenticate(keys, presented(f"Bearer {text[:-1]}x")) is None  # one character off
    assert authenticate(keys, presented(f"Basic {text}")) is None
    assert authenticate(keys, presented(None)) is None
    assert authenticate({}, presented(f"Bearer {text}")) is None  # unknown (or revoked: not loaded)
    other, other_text = mint("other", frozenset(SCOPES), None)
    assert authenticate(keys, presented(f"Bearer {other_text}")) is None


def test_two_keys_never_share_an_id_or_a_secret() -> None:
    minted = [mint(f"k{n}", frozenset(SCOPES), None) for n in range(200)]
    assert len({key.key_id for key, _ in minted}) == 200
    assert len({text for _, text in minted}) == 200


def test_scopes_and_accounts() -> None:
    key, _ = mint("limited", frozenset({"payments:read"}), frozenset({"acc-1"}))
    assert missing_scope(key, "payments:read") is None
    assert "payments:write" in (missing_scope(key, "payments:write") or "")
    assert missing_scope(key, None) is None
    assert outside_accounts(key, "acc-1") is None
    assert outside_accounts(key, "acc-2", "acc-1") is None  # a payment involving one of them
    assert "acc-2" in (outside_accounts(key, "acc-2") or "")
    everyone, _ = mint("all", frozenset(SCOPES), None)
    assert outside_accounts(everyone, "anything") is None


def test_scopes_given_are_checked_and_none_means_all() -> None:
    assert check_scopes([]) == frozenset(SCOPES)
    assert check_scopes(["refunds:write"]) == {"refunds:write"}
    with pytest.raises(ValueError, match="payments:delete"):
        check_scopes(["payments:delete"])


def test_the_token_bucket_spends_saves_and_waits() -> None:
    bucket = TokenBucket.full(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # one token in half a second
    assert bucket.take(0.5) == 0.0
    assert bucket.take(100.0) == 0.0  # a long pause saves up to the burst, no more
    assert [bucket.take(100.0) for _ in range(3)][-1] > 0
