"""The `payments` console script as an operator meets it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.migrate import available_migrations


def payments(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PAYMENTS_")}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_worker_without_a_broker_names_the_missing_variable() -> None:
    result = payments("worker")
    assert result.returncode == 2
    assert "PAYMENTS_KAFKA_BOOTSTRAP is not set" in result.stderr


def test_worker_without_a_database_names_the_missing_variable() -> None:
    result = payments("worker", env={"PAYMENTS_KAFKA_BOOTSTRAP": "127.0.0.1:9"})
    assert result.returncode == 2
    assert "PAYMENTS_DATABASE_URL is not set" in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [("PAYMENTS_WEB_PORT", "http"), ("PAYMENTS_PARTITIONS", "0"), ("PAYMENTS_KAFKA_BOOTSTRAP", "no-port")],
)
def test_a_malformed_setting_is_named(name: str, value: str) -> None:
    result = payments("migrate", env={name: value})
    assert result.returncode == 2
    assert name in result.stderr


async def test_migrate_is_safe_to_run_twice(database_url: str) -> None:
    first = payments("migrate", env={"PAYMENTS_DATABASE_URL": database_url})
    second = payments("migrate", env={"PAYMENTS_DATABASE_URL": database_url})
    applied = f"applied {len(available_migrations())} migration(s)"
    assert first.returncode == 0 and applied in first.stdout, first.stderr
    assert second.returncode == 0 and "schema is current" in second.stdout


def processes_under(folder: Path) -> list[str]:
    """Processes whose command line or working directory is inside `folder`."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline", "cwd", "name"]):
        cwd, cmdline = process.info["cwd"] or "", " ".join(process.info["cmdline"] or ())
        if cwd.startswith(str(folder)) or str(folder) in cmdline:
            found.append(f"{process.info['name']} {cmdline[:80]}")
    return found


def test_demo_runs_on_the_embedded_default_and_checks_itself(tmp_path: Path) -> None:
    result = payments(
        "demo", "--payments", "150", "--accounts", "10", env={"PAYMENTS_DATA_DIR": str(tmp_path)}, timeout=240
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "outcomes as planned: 152/152" in result.stdout
    assert "ledger balanced (PostgreSQL): yes" in result.stdout
    assert "worker balances match the ledger: yes" in result.stdout
    assert processes_under(tmp_path) == [], "embedded processes were left running"


async def test_rebuild_read_models_recomputes_daily_balances(database_url: str) -> None:
    from ledger.migrate import migrate
    from ledger.store import LedgerStore
    from ledger.testing import funding_entry, open_accounts

    await migrate(database_url)
    store = await LedgerStore.connect(database_url)
    try:
        await open_accounts(store, "rm-alice")
        from ledger.store import Origin

        await store.write_batch([(funding_entry("rm-alice", 700, key="rm-1"), Origin("t", 0, 1))])
        result = payments("rebuild-read-models", env={"PAYMENTS_DATABASE_URL": database_url})
        assert result.returncode == 0, result.stderr
        assert "2 rows" in result.stdout  # the customer and the settlement account, one day each
        [day] = await store.daily_balances("rm-alice")
        assert day.closing_balance == 700
    finally:
        await store.close()


@pytest.mark.parametrize("counts", ["2,1", "0", "1,x", "1,1"])
def test_bench_worker_counts_must_be_increasing_positive_numbers(counts: str) -> None:
    result = payments("bench", "--workers", counts)
    assert result.returncode == 2
    assert "worker counts" in result.stderr and counts in result.stderr
