"""The README's HTTP quickstart, pasted into bash as a newcomer would, against a real worker."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from tests.conftest import Service

ROOT = Path(__file__).resolve().parents[2]


def quickstart() -> str:
    found = re.search(r"```bash quickstart\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert found, "README.md has no ```bash quickstart block"
    return found.group(1)


def test_the_readme_quickstart_runs_as_written(service: Service) -> None:
    env = {**os.environ, "API": service.workers[0].url, "PAYMENTS_DATABASE_URL": service.database_url,
           "PAYMENTS_KAFKA_BOOTSTRAP": service.bootstrap}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", quickstart()], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # The output is the answers, one JSON value after another: read them all.
    decoder, text, values = json.JSONDecoder(), result.stdout, []
    position = 0
    while position < len(text.rstrip()):
        while text[position].isspace():
            position += 1
        value, position = decoder.raw_decode(text, position)
        values.append(value)
    opened = [v for v in values if isinstance(v, dict) and v.get("currency") == "EUR" and "posted" in v]
    assert {v["account_id"] for v in opened} == {"alice", "bob"}
    funded = next(v for v in values if isinstance(v, dict) and v.get("idempotency_key") == "fund-alice-1")
    assert funded["status"] == "funded"
    view = next(v for v in values if isinstance(v, dict) and "refunds" in v)
    assert view["status"] == "partially_refunded" and view["refunded"] == 500
    assert view["refunds"][0]["status"] == "refunded" and view["debtor_account_id"] == "alice"
    statement = [v for v in values if isinstance(v, dict) and set(v) == {"amount", "balance_after"}]
    assert [(e["amount"], e["balance_after"]) for e in statement][:3] == [(10_000, 10_000), (-2_500, 7_500),
                                                                          (500, 8_000)]
    listed = [v for v in values if isinstance(v, dict) and set(v) == {"payment_id", "status", "refunded"}]
    assert listed and listed[0]["refunded"] == 500, listed
