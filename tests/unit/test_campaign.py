"""The chaos campaign's pure parts: the accounting, the summaries and their table, the
regression file, and the seeded traffic (poison that must be refused, PSP behaviours)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from cli.chaos import COLUMNS, format_table, load_regressions, progress_line, record_failures, replay_batches
from harness.campaign import (
    Answer,
    Answers,
    Leg,
    Operation,
    SeedResult,
    Sizes,
    Tally,
    plan_runs,
    summarise,
    tally,
    unanswered,
)
from harness.campaign.traffic import FIVE_MB, interleave, poison_messages, psp_payment
from infra.topics import PAYMENT_COMMANDS
from models.codec import Invalid, Unreadable, read_command
from models.commands import ACCOUNT_COMMANDS as ACCOUNT_COMMAND_TYPES
from models.commands import PAYMENT_COMMANDS as PAYMENT_COMMAND_TYPES
from models.payment import payment_id_for

_event_ids = iter(range(1_000_000))


def answer(kind: str, at: float = 1.0, reason: str | None = None, amount: int | None = None) -> Answer:
    return Answer(kind, f"event-{next(_event_ids)}", at, reason, amount)


def captured(answers: Answers, key: str, amount: int, at: float = 1.0) -> None:
    answers.by_payment[payment_id_for(key)].append(answer("PaymentCaptured", at, amount=amount))


def failed(answers: Answers, key: str, reason: str, amount: int = 100) -> None:
    answers.by_payment[payment_id_for(key)].append(answer("PaymentFailed", reason=reason, amount=amount))


def capture_legs(key: str, amount: int, transaction: str = "t1") -> dict[str, list[Leg]]:
    return {payment_id_for(key): [Leg("capture", transaction, "payer", -amount),
                                  Leg("capture", transaction, "payee", amount)]}


# --- tally ------------------------------------------------------------------------------------


def test_every_command_answered_as_planned_is_ok() -> None:
    operations = [Operation("open", "a1", "opened"), Operation("fund", "fund-a1", "funded"),
                  Operation("payment", "p1", "captured", 500), Operation("payment", "p2", "same_account", 7),
                  Operation("poison", "bad", "refused")]
    answers = Answers()
    answers.by_key["a1"].append(answer("AccountOpened"))
    answers.by_key["fund-a1"].append(answer("AccountFunded", amount=1000))
    captured(answers, "p1", 500, at=7.5)
    failed(answers, "p2", "same_account", amount=7)
    answers.by_key["bad"].append(answer("DeadLetter", at=3.0))

    result = tally(operations, answers, capture_legs("p1", 500))

    assert (result.attempted, result.ok, result.captured, result.failed) == (5, 5, 1, 2)
    assert (result.unexpected, result.unknown, result.lost, result.duplicated) == (0, 0, 0, 0)
    assert result.violations == [] and result.details == []
    assert result.last_answer_at == 7.5
    assert unanswered(operations, answers) == 0


def test_no_answer_is_lost_and_money_moved_without_an_outcome_is_unknown() -> None:
    operations = [Operation("payment", "p1", "captured", 500), Operation("payment", "p2", "captured", 300),
                  Operation("poison", "bad", "refused"), Operation("fund", "fund-x", "funded")]
    result = tally(operations, Answers(), capture_legs("p2", 300))
    assert (result.lost, result.unknown, result.ok) == (3, 1, 0)
    assert result.last_answer_at is None
    assert any("p2" in d and d.startswith("unknown") for d in result.details)
    assert unanswered(operations, Answers()) == 4


def test_a_different_outcome_than_planned_is_unexpected() -> None:
    answers = Answers()
    failed(answers, "p1", "insufficient_funds", amount=500)
    result = tally([Operation("payment", "p1", "captured", 500)], answers, {})
    assert (result.unexpected, result.failed, result.ok) == (1, 1, 0)
    assert "insufficient_funds" in result.details[0]


def test_two_kinds_of_outcome_for_one_payment_is_a_violation() -> None:
    answers = Answers()
    captured(answers, "p1", 500)
    failed(answers, "p1", "psp_unavailable", amount=500)
    result = tally([Operation("payment", "p1", "captured", 500)], answers, capture_legs("p1", 500))
    assert result.violations == ["payment p1 has 2 outcomes: PaymentCaptured, PaymentFailed"]


def test_second_capture_or_second_publication_is_a_duplicated_effect() -> None:
    answers = Answers()
    captured(answers, "p1", 500)
    legs = capture_legs("p1", 500)
    legs[payment_id_for("p1")] += capture_legs("p1", 500, transaction="t2")[payment_id_for("p1")]
    assert tally([Operation("payment", "p1", "captured", 500)], answers, legs).duplicated == 1

    captured(answers, "p1", 500)  # another event id: published twice, not redelivered
    twice = tally([Operation("payment", "p1", "captured", 500)], answers, capture_legs("p1", 500))
    assert twice.duplicated == 1


def test_outcome_must_agree_with_the_ledger() -> None:
    answers = Answers()
    captured(answers, "p1", 500)
    failed(answers, "p2", "psp_declined")
    legs = {**capture_legs("p1", 400), **capture_legs("p2", 100)}
    result = tally([Operation("payment", "p1", "captured", 500),
                    Operation("payment", "p2", "psp_declined", 100)], answers, legs)
    assert result.violations == ["payment p1 captured 500, the ledger moved 400",
                                 "payment p2 failed (psp_declined) but the ledger moved 100"]
    no_postings = tally([Operation("payment", "p1", "captured", 500)], answers, {})
    assert no_postings.violations == ["payment p1 captured 500, the ledger moved 0"]


def test_conflicting_payloads_need_one_payment_and_a_conflict_each() -> None:
    operation = Operation("payment", "k", "captured", 700, conflicts=2)
    answers = Answers()
    captured(answers, "k", 700)
    answers.by_key["k"].append(answer("CommandRejected", reason="idempotency_conflict"))
    assert unanswered([operation], answers) == 1
    waiting = tally([operation], answers, capture_legs("k", 700))
    assert (waiting.ok, waiting.lost) == (0, 1)

    answers.by_key["k"].append(answer("CommandRejected", reason="idempotency_conflict"))
    assert unanswered([operation], answers) == 0
    done = tally([operation], answers, capture_legs("k", 700))
    assert (done.ok, done.lost, done.unexpected) == (1, 0, 0)


def test_the_winner_must_be_the_first_payload_and_a_storm_gets_no_rejection() -> None:
    answers = Answers()
    captured(answers, "k", 900)
    answers.by_key["k"].append(answer("CommandRejected", reason="idempotency_conflict"))
    result = tally([Operation("payment", "k", "captured", 700, conflicts=1)], answers, capture_legs("k", 900))
    assert result.unexpected == 1

    storm = Answers()
    captured(storm, "s", 100)
    storm.by_key["s"].append(answer("CommandRejected", reason="idempotency_conflict"))
    assert tally([Operation("payment", "s", "captured", 100)], storm, capture_legs("s", 100)).unexpected == 1


def test_poison_must_be_refused_and_never_become_a_payment() -> None:
    operation = Operation("poison", "bad", "refused")
    answers = Answers()
    answers.by_key["bad"].append(answer("CommandRejected", reason="invalid_request"))
    assert tally([operation], answers, {}).ok == 1

    answers.by_payment[payment_id_for("bad")].append(answer("PaymentInitiated"))
    result = tally([operation], answers, {})
    assert result.unexpected == 1 and result.ok == 0
    assert result.violations and "became a payment" in result.violations[0]


def test_account_command_refused_is_unexpected() -> None:
    answers = Answers()
    answers.by_key["fund-a"].append(answer("CommandRejected", reason="invalid_request"))
    result = tally([Operation("fund", "fund-a", "funded")], answers, {})
    assert result.unexpected == 1 and "invalid_request" in result.details[0]


# --- results, table, regression file ------------------------------------------------------------


def seed_result(scenario: str, seed: int, recovery: float | None = 2.0, **counts: int) -> SeedResult:
    values = {"attempted": 10, "ok": 10, "captured": 8, "failed": 2, **counts}
    return SeedResult(scenario, seed, 100, Tally(**values), faults_planned=1, faults_injected=1,
                      recovery_seconds=recovery, elapsed_seconds=30.0)


def test_summaries_add_up_per_scenario_in_order() -> None:
    results = [seed_result("kill9", 1, recovery=4.0), seed_result("kill9", 2, recovery=10.0, lost=2, ok=8),
               seed_result("psp_faults", 1, recovery=None)]
    kill9, psp = summarise(results)
    assert (kill9.scenario, kill9.seeds, kill9.attempted, kill9.ok, kill9.lost) == ("kill9", 2, 20, 18, 2)
    assert kill9.failing_seeds == [2] and kill9.recovery_seconds == [4.0, 10.0]
    assert (psp.seeds, psp.failing_seeds, psp.recovery_seconds) == (1, [], [])


def test_table_has_a_header_a_rule_and_one_aligned_row_per_scenario() -> None:
    results = [seed_result("kill9", 1, recovery=4.0), seed_result("kill9", 2, recovery=10.0, lost=2, ok=8),
               seed_result("storms_and_poison", 1, recovery=None)]
    lines = format_table(summarise(results)).splitlines()
    assert len(lines) == 4
    assert lines[0].split()[:4] == ["scenario", "seeds", "attempted", "ok"]
    assert set(lines[1]) == {"-", " "}
    assert len({len(line) for line in lines}) == 1  # every line as wide as the others
    kill9 = lines[2].split()
    assert kill9[:11] == ["kill9", "2", "20", "18", "16", "4", "0", "0", "2", "0", "0"]
    assert kill9[11:] == ["2/2", "7.0/10.0", "30"]  # faults, recovery p50/max, seconds per seed
    assert lines[3].split()[-2] == "-"  # no fault, no recovery time
    assert len(COLUMNS) == 14


def test_progress_line_names_what_failed() -> None:
    result = seed_result("kill9", 3, lost=1, ok=9)
    result.tally.details.append("lost: payment kill9-3-pay-000001: no outcome")
    result.notes.append("fault: kill -9 of worker 4242")
    text = progress_line(result)
    assert text.startswith("FAIL kill9 seed 3") and "1 lost" in text
    assert "no outcome" in text and "kill -9" in text
    assert progress_line(seed_result("kill9", 4)).startswith("ok   kill9 seed 4")
    assert "\n" not in progress_line(seed_result("kill9", 4))


def test_failing_seeds_are_added_once_to_the_regression_file(tmp_path: Path) -> None:
    path = tmp_path / "regressions.json"
    assert load_regressions(path) == []
    failing = seed_result("kill9", 3, lost=1, ok=9)
    assert record_failures(path, [seed_result("kill9", 2), failing]) == [("kill9", 3)]
    assert record_failures(path, [failing]) == []
    [entry] = load_regressions(path)
    assert (entry["scenario"], entry["seed"], entry["payments"]) == ("kill9", 3, 100)
    assert "1 lost" in entry["why"]
    assert json.loads(path.read_text())["regressions"] == [entry]


def test_replay_keeps_each_seeds_payments() -> None:
    entries = [{"scenario": "kill9", "seed": 3, "payments": 40}, {"scenario": "rebalance", "seed": 1},
               {"scenario": "kill9", "seed": 9, "payments": 40}]
    batches = replay_batches(entries, None, Sizes(payments=100))
    assert [(sizes.payments, runs) for sizes, runs in batches] == [
        (40, [("kill9", 3), ("kill9", 9)]), (100, [("rebalance", 1)])]
    assert [runs for _, runs in replay_batches(entries, ["rebalance"], Sizes())] == [[("rebalance", 1)]]


def test_plan_runs_refuses_an_unknown_scenario() -> None:
    assert plan_runs(["kill9", "psp_faults"], 2, 5) == [("kill9", 5), ("kill9", 6), ("psp_faults", 5),
                                                        ("psp_faults", 6)]
    with pytest.raises(ValueError, match="nope"):
        plan_runs(["nope"], 1, 1)


# --- seeded traffic -----------------------------------------------------------------------------


def test_poison_is_seeded_and_every_message_is_refused_by_the_codec() -> None:
    first = poison_messages(random.Random(4), "p-4", "payer", "payee")
    assert first == poison_messages(random.Random(4), "p-4", "payer", "payee")
    keys = [key for _, key, _ in first]
    assert len(set(keys)) == len(keys) >= 15
    assert any(len(value) >= FIVE_MB for _, _, value in first)
    for topic, key, value in first:
        registry, key_field = ((PAYMENT_COMMAND_TYPES, "idempotency_key") if topic == PAYMENT_COMMANDS
                               else (ACCOUNT_COMMAND_TYPES, "account_id"))
        assert isinstance(read_command(value, registry, key_field), Invalid | Unreadable), key
    names = {key.removeprefix("p-4-poison-") for key in keys}
    assert {"truncated", "invalid-utf8", "amount-true", "amount-float", "amount-zero", "amount-minus-one",
            "amount-2-pow-63", "currency-unknown", "amount-string"} <= names


def test_psp_behaviours_carry_the_outcome_they_must_reach() -> None:
    rng = random.Random(1)
    payments = [psp_payment(rng, f"k{n}", "a", "b") for n in range(400)]
    for payment in payments:
        mode, _, count = (payment.simulation or "approve").partition(":")
        if mode == "fail_then_approve":
            assert payment.expected == ("captured" if int(count) <= 5 else "psp_unavailable")
        elif mode == "latency_ms":
            assert payment.expected == ("captured" if int(count) < 2000 else "psp_unavailable")
        else:
            assert payment.expected == {"approve": "captured", "decline": "psp_declined"}[mode]
    assert {p.expected for p in payments} == {"captured", "psp_declined", "psp_unavailable"}


def test_interleave_keeps_each_streams_order() -> None:
    merged = interleave(random.Random(2), [["a1", "a2", "a3"], ["b1", "b2"], [], ["c1"]])
    assert sorted(merged) == ["a1", "a2", "a3", "b1", "b2", "c1"]
    assert [m for m in merged if m[0] == "a"] == ["a1", "a2", "a3"]
    assert [m for m in merged if m[0] == "b"] == ["b1", "b2"]
