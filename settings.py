"""Settings from the PAYMENTS_* environment, validated once at start-up."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

NumberT = TypeVar("NumberT", int, float)
_BOOTSTRAP = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}(,[A-Za-z0-9.\-\[\]:]+:\d{1,5})*$")


class SettingsError(ValueError):
    """A missing or malformed setting; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str | None = None
    database_url: str | None = None
    web_port: int = 6066
    data_dir: Path = field(default_factory=lambda: Path(".data"))
    partitions: int = 8
    psp_url: str | None = None
    risk_max_amount: int = 100_000_000  # per payment, minor units: above it -> risk_rejected
    # Where the tables' partitions live (tables/store.py): "disk" (RocksDB under data_dir,
    # restarts read only the changelog written since) or "memory" (rebuilt at every start).
    table_store: str = "disk"
    # The worker's name in the consumer group, the same across its restarts (static
    # membership): a worker killed and started again under it takes its partitions back
    # at once instead of waiting for the group to give up on its old self. Unique per
    # worker. None: a dynamic member. Opt-in, because a static member that never comes
    # back is given up on only by a broker that evicts it after its session timeout, as
    # Apache Kafka does; the embedded broker (tansu 0.6.0) keeps it in the group, with
    # its partitions, for as long as every other member is static too.
    instance_id: str | None = None
    # How long a published outbox row is kept (agents/relay.py); 0: for ever. The ledger's
    # entries are kept for ever whatever this says, and so are the tables' records.
    outbox_retention_hours: float = 168.0
    # Copies of each table partition another worker keeps up to date from the changelog,
    # so that a partition moving there (a worker stopped, killed, added) is processing
    # again after reading only what it missed, not the whole partition.
    standby_replicas: int = 1

    def with_infrastructure(self, kafka_bootstrap: str, database_url: str) -> Settings:
        return replace(self, kafka_bootstrap=kafka_bootstrap, database_url=database_url)

    def require_broker(self) -> str:
        if not self.kafka_bootstrap:
            raise SettingsError("PAYMENTS_KAFKA_BOOTSTRAP is not set (host:port[,host:port])")
        return self.kafka_bootstrap

    def require_database(self) -> str:
        if not self.database_url:
            raise SettingsError("PAYMENTS_DATABASE_URL is not set (postgresql://...)")
        return self.database_url

    def require_infrastructure(self) -> tuple[str, str]:
        """What `worker` needs: embedded defaults exist only for `demo`."""
        return self.require_broker(), self.require_database()


def _valid_bootstrap(bootstrap: str) -> bool:
    if not _BOOTSTRAP.match(bootstrap):
        return False
    return all(1 <= int(server.rpartition(":")[2]) <= 65535 for server in bootstrap.split(","))


def _bounded(env: dict[str, str], name: str, default: NumberT, low: NumberT, high: NumberT,
             parse: Callable[[str], NumberT]) -> NumberT:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        kind = "an integer" if parse is int else "a number"
        raise SettingsError(f"{name}={raw!r} is not {kind}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is outside {low}..{high}")
    return value


def _integer(env: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    return _bounded(env, name, default, low, high, int)


def _number(env: dict[str, str], name: str, default: float, low: float, high: float) -> float:
    return _bounded(env, name, default, low, high, float)


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    bootstrap = env.get("PAYMENTS_KAFKA_BOOTSTRAP") or None
    if bootstrap is not None and not _valid_bootstrap(bootstrap):
        raise SettingsError(f"PAYMENTS_KAFKA_BOOTSTRAP={bootstrap!r} is not host:port[,host:port]")
    database_url = env.get("PAYMENTS_DATABASE_URL") or None
    if database_url is not None and not database_url.startswith(("postgresql://", "postgres://")):
        raise SettingsError(f"PAYMENTS_DATABASE_URL={database_url!r} is not a postgresql:// URL")
    return Settings(
        kafka_bootstrap=bootstrap,
        database_url=database_url,
        web_port=_integer(env, "PAYMENTS_WEB_PORT", 6066, 1, 65535),
        data_dir=Path(env.get("PAYMENTS_DATA_DIR") or ".data"),
        partitions=_integer(env, "PAYMENTS_PARTITIONS", 8, 1, 1024),
        psp_url=env.get("PAYMENTS_PSP_URL") or None,
        risk_max_amount=_integer(env, "PAYMENTS_RISK_MAX_AMOUNT", 100_000_000, 1, 2**63 - 1),
        table_store=_choice(env, "PAYMENTS_TABLE_STORE", "disk", ("disk", "memory")),
        instance_id=env.get("PAYMENTS_INSTANCE_ID") or None,
        standby_replicas=_integer(env, "PAYMENTS_STANDBY_REPLICAS", 1, 0, 8),
        outbox_retention_hours=_number(env, "PAYMENTS_OUTBOX_RETENTION_HOURS", 168.0, 0.0, 24.0 * 3650),
    )


def _choice(env: dict[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = env.get(name) or default
    if raw not in allowed:
        raise SettingsError(f"{name}={raw!r} is not one of {', '.join(allowed)}")
    return raw
