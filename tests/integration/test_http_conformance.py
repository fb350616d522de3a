"""The HTTP API against its own OpenAPI document, by schemathesis: generated requests with
a valid key find no server error and no answer the document does not describe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import Service
from tests.integration.outside import fund, open_accounts

# Enough generated cases per operation to reach every branch of the views without
# making the suite slow (the whole run takes well under a minute here).
EXAMPLES_PER_OPERATION = 25


async def test_schemathesis_finds_nothing_the_document_does_not_say(service: Service, tmp_path: Path) -> None:
    await open_accounts(service, "st-a", "st-b")
    await fund(service, "st-fund-a", "st-a", 1_000_000)
    base = service.workers[0].url
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{base}/openapi.json",
            "--header",
            f"Authorization: Bearer {service.api_key}",
            "--checks",
            "all",
            "--exclude-checks",
            "ignored_auth,positive_data_acceptance",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--seed",
            "7",
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
