"""A `payments worker` child process: started with its environment, awaited, stopped or killed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from harness.processes import ComponentFailed, free_port, start_process, stop_process

HARNESS_SESSION_TIMEOUT_SECONDS = 6.0


@dataclass
class WorkerProcess:
    bootstrap: str
    database_url: str
    data_dir: Path
    partitions: int = 8
    web_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    role: str = "all"  # PAYMENTS_WORKER_ROLE
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.data_dir / f"worker-{self.web_port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def environment(self) -> dict[str, str]:
        import os

        return {
            # The embedded broker makes every join wait half the session timeout: 3 s, not 5
            # (unless the environment says otherwise).
            "PAYMENTS_KAFKA_SESSION_TIMEOUT_SECONDS": str(HARNESS_SESSION_TIMEOUT_SECONDS),
            **os.environ,
            "PAYMENTS_KAFKA_BOOTSTRAP": self.bootstrap,
            "PAYMENTS_DATABASE_URL": self.database_url,
            "PAYMENTS_WEB_PORT": str(self.web_port),
            "PAYMENTS_DATA_DIR": str(self.data_dir / f"worker-{self.web_port}"),
            "PAYMENTS_PARTITIONS": str(self.partitions),
            "PAYMENTS_WORKER_ROLE": self.role,
            **self.extra_env,
        }

    def start(self, *, wait: bool = True, timeout_seconds: float = 120.0) -> WorkerProcess:
        self.process = start_process([sys.executable, "-m", "cli.main", "worker"], self.log,
                                     env=self.environment())
        if wait:
            self.wait_ready(timeout_seconds)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_seconds: float) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                code = self.process.returncode
                raise ComponentFailed(f"payments worker exited with {code}; see {self.log}")
            if self.healthy():
                return
            time.sleep(0.25)
        raise ComponentFailed(f"payments worker not ready within {timeout_seconds:.0f}s; see {self.log}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, sig=signal.SIGTERM, grace_seconds=30)
            self.process = None

    def kill(self) -> None:
        """kill -9: no shutdown, no final commit."""
        if self.process is not None:
            stop_process(self.process, sig=signal.SIGKILL)
            self.process = None
