"""A running worker's metrics, health and the dashboard that reads them."""

from __future__ import annotations

import asyncio
import json
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from models.payment import payment_id_for
from tests.conftest import Service
from tests.unit.test_deployment import DASHBOARD, dashboard_metrics


def fetch(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


def exposed_names(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


async def test_metrics_parse_and_count_outcomes_by_reason(service: Service) -> None:
    driver = service.driver
    await driver.open_account("obs-a")
    await driver.open_account("obs-b")
    await driver.wait_for(
        lambda: {"obs-a", "obs-b"} <= {e["account_id"] for e in driver.of("AccountOpened")}, what="accounts"
    )
    await driver.pay("obs-pay", "obs-a", "obs-b", 5)  # no funds
    await driver.wait_for(lambda: payment_id_for("obs-pay") in driver.outcomes(), what="outcome")
    status, content_type, text = await asyncio.to_thread(fetch, f"{service.workers[0].url}/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    key = ("payments_outcomes_total", (("outcome", "failed"), ("reason", "insufficient_funds")))
    assert samples[key] >= 1
    assert any(name == "payments_step_duration_seconds_bucket" for name, _ in samples)


async def test_every_metric_the_dashboard_queries_is_exposed(service: Service) -> None:
    _, _, text = await asyncio.to_thread(fetch, f"{service.workers[0].url}/metrics")
    dashboard = json.loads(DASHBOARD.read_text())
    assert sorted(dashboard_metrics(dashboard) - exposed_names(text)) == []


async def test_healthz_is_ready_once_partitions_are_assigned(service: Service) -> None:
    status, _, body = await asyncio.to_thread(fetch, f"{service.workers[0].url}/healthz")
    assert status == 200 and json.loads(body)["ready"] is True
