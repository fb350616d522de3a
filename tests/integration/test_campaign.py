"""The chaos campaign end to end: one short seed of the cheap scenarios keeps the harness
working in `make test`; the recorded regression seeds are replayed by `make chaos`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cli.chaos import REGRESSIONS_PATH, load_regressions, run_chaos
from harness.campaign import Sizes
from settings import Settings, load_settings


def campaign_settings(postgres_server_url: str, tmp_path: Path) -> Settings:
    """The suite's PostgreSQL server (a database of its own), a broker of the campaign's own."""
    settings = load_settings()
    return dataclasses.replace(settings, database_url=settings.database_url or postgres_server_url,
                               data_dir=tmp_path)


def test_one_short_seed_of_the_cheap_scenarios_passes(postgres_server_url: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    regressions, report = tmp_path / "regressions.json", tmp_path / "chaos.json"
    status = run_chaos(campaign_settings(postgres_server_url, tmp_path),
                       scenarios=["psp_faults", "storms_and_poison"], seeds=1, first_seed=7,
                       sizes=Sizes(payments=20, accounts=4, timeouts=1, recovery_timeout_seconds=60),
                       json_path=report, regressions=regressions)
    output = capsys.readouterr().out
    seeds = json.loads(report.read_text())["seeds"]
    failing = [seed for seed in seeds if not seed["passed"]]
    assert status == 0 and not failing, output
    assert not regressions.exists()
    assert [(s["scenario"], s["seed"]) for s in seeds] == [("psp_faults", 7), ("storms_and_poison", 7)]
    for seed in seeds:
        assert seed["attempted"] == seed["ok"] > 20, seed
        assert seed["faults_injected"] == seed["faults_planned"] == 1
    psp, storms = seeds
    assert psp["failed"] > 0 and psp["captured"] > 0
    assert storms["failed"] >= 15  # the poison messages, each rejected or dead-lettered
    assert "storms_and_poison" in output and "result: PASS" in output


@pytest.mark.chaos
def test_every_recorded_regression_seed_now_passes(postgres_server_url: str, tmp_path: Path) -> None:
    if not load_regressions(REGRESSIONS_PATH):
        pytest.skip(f"no regression seeds in {REGRESSIONS_PATH}")
    assert run_chaos(campaign_settings(postgres_server_url, tmp_path), replay=True) == 0
