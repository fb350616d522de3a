"""Settings from the PAYMENTS_* environment, validated once at start-up."""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

NumberT = TypeVar("NumberT", int, float)
_BOOTSTRAP = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}(,[A-Za-z0-9.\-\[\]:]+:\d{1,5})*$")

KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_KAFKA_TLS = ("SSL", "SASL_SSL")
_KAFKA_SASL = ("SASL_PLAINTEXT", "SASL_SSL")
_KAFKA_SASL_VARIABLES = ("PAYMENTS_KAFKA_SASL_MECHANISM", "PAYMENTS_KAFKA_SASL_USERNAME",
                         "PAYMENTS_KAFKA_SASL_PASSWORD")
_KAFKA_TLS_VARIABLES = {"kafka_ssl_cafile": "PAYMENTS_KAFKA_SSL_CAFILE",
                        "kafka_ssl_certfile": "PAYMENTS_KAFKA_SSL_CERTFILE",
                        "kafka_ssl_keyfile": "PAYMENTS_KAFKA_SSL_KEYFILE"}
DATABASE_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# The modes in which asyncpg (like libpq) checks the server's certificate against sslrootcert.
_DATABASE_VERIFYING_SSLMODES = ("require", "verify-ca", "verify-full")
_DATABASE_TLS_VARIABLES = {"sslmode": "PAYMENTS_DATABASE_SSLMODE",
                           "sslrootcert": "PAYMENTS_DATABASE_SSLROOTCERT"}


# Seconds to wait after each failed webhook attempt (the contract's default).
WEBHOOK_RETRY_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
WORKER_ROLES = ("all", "payments", "read-side")


class SettingsError(ValueError):
    """A missing or malformed setting; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str | None = None
    database_url: str | None = field(default=None, repr=False)  # it may hold a password
    web_port: int = 6066
    data_dir: Path = field(default_factory=lambda: Path(".data"))
    partitions: int = 8
    psp_url: str | None = None
    risk_max_amount: int = 100_000_000  # per payment, minor units: above it -> risk_rejected
    # Where the tables' partitions live (tables/store.py): "disk" (RocksDB under data_dir,
    # restarts read only the changelog written since) or "memory" (rebuilt at every start).
    table_store: str = "disk"
    # What a `payments worker` runs: "all" (every agent: the payment flow, the HTTP API and
    # the read side), "payments" (all but the read side), or "read-side" (only the read
    # side: the payments' read model and the webhooks, in a consumer group of its own, so
    # its work is never on a payment's path; /healthz and /metrics its only pages). Run
    # "payments" workers with at least one "read-side" one, or the views and webhooks stop.
    worker_role: str = "all"
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
    # How long the group waits for a silent worker before it gives its partitions to the
    # others (a worker sends a heartbeat every second). Shorter moves a dead worker's
    # partitions sooner and, on the embedded broker, makes every join quicker (it waits
    # half of this for more members); longer forgives a worker stalled that long (a long
    # pause of its process), which would otherwise cost a rebalance. Apache Kafka refuses
    # less than its group.min.session.timeout.ms, 6 s by default; Faust refuses more than its
    # broker request timeout (90 s), so at most 60 s here.
    kafka_session_timeout_seconds: float = 10.0
    # Requests per second an API key may make of one worker, and the burst it may save up
    # (a token bucket per key and worker, api/gate.py): past it, 429 with Retry-After.
    api_rate_per_second: float = 100.0
    api_rate_burst: int = 200
    # Webhooks (agents/notify.py): seconds to wait after each failed attempt (then the
    # delivery has failed); whether URLs may reach loopback/private addresses and plain
    # http (local development and tests only); how long one attempt may take; how many
    # attempts to one endpoint a worker makes at once; how long an endpoint may fail
    # without a success before it is disabled.
    webhook_retry_schedule: tuple[float, ...] = WEBHOOK_RETRY_SCHEDULE
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = 15.0
    webhook_concurrency: int = 4
    webhook_disable_after_seconds: float = 432_000.0
    # How long a settled (delivered or failed) delivery and its attempts are kept; 0: for
    # ever. Past it, `payments webhooks redeliver` can no longer send it again.
    webhook_retention_hours: float = 720.0
    # How every Kafka client of a worker connects, Faust's and our own alike (see
    # kafka_credentials): TLS for SSL and SASL_SSL, a SASL login for SASL_*. The TLS
    # settings of PostgreSQL are not here: load_settings merges them into database_url.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None

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

    def kafka_credentials(self) -> CredentialsT | None:
        """Faust's `broker_credentials`: None for PLAINTEXT, SSLCredentials for SSL, and
        SASLCredentials for SASL_* (with a TLS context for SASL_SSL, which is how Faust
        tells SASL_SSL from SASL_PLAINTEXT)."""
        from faust.auth import SASLCredentials, SSLCredentials  # faust takes ~0.5 s to import

        context = self._kafka_ssl_context()
        if self.kafka_security_protocol in _KAFKA_SASL:
            return SASLCredentials(username=self.kafka_sasl_username, password=self.kafka_sasl_password,
                                   mechanism=self.kafka_sasl_mechanism, ssl_context=context)
        return SSLCredentials(context) if context is not None else None

    def kafka_client_options(self) -> dict[str, Any]:
        """The keyword arguments for an aiokafka client the service opens itself (admin,
        reader, probe): Faust's own translation of kafka_credentials(), so that such a
        client connects exactly as Faust's consumers and producers do."""
        from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

        return dict(credentials_to_aiokafka_auth(self.kafka_credentials()))

    def _kafka_ssl_context(self) -> ssl.SSLContext | None:
        if self.kafka_security_protocol not in _KAFKA_TLS:
            return None
        return kafka_ssl_context(self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)


def kafka_ssl_context(cafile: Path | None, certfile: Path | None, keyfile: Path | None) -> ssl.SSLContext:
    """A client context that verifies the broker's certificate and host name (against
    `cafile`, else the system's CAs), presenting `certfile` when the broker asks for one."""
    from aiokafka.helpers import create_ssl_context

    try:
        return create_ssl_context(cafile=cafile, certfile=certfile, keyfile=keyfile)
    except (ssl.SSLError, OSError) as error:  # read at start-up: say which variables to look at
        names = "PAYMENTS_KAFKA_SSL_CAFILE, _CERTFILE, _KEYFILE"
        raise SettingsError(f"{names}: cannot be loaded ({error})") from None


def database_dsn(url: str, sslmode: str | None = None, sslrootcert: Path | None = None) -> str:
    """`url` with the TLS settings in its query string, where asyncpg (like libpq) reads
    them, so that every connection and pool opened with the URL uses them. The URL may
    carry them itself; a value contradicting the variable is refused, not overridden."""
    wanted = {"sslmode": sslmode, "sslrootcert": str(sslrootcert) if sslrootcert else None}
    wanted = {key: value for key, value in wanted.items() if value is not None}
    if not wanted:
        return url
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    _check_database_tls(dict(query), wanted)
    merged = [(key, value) for key, value in query if key not in wanted] + list(wanted.items())
    return urlunsplit(parts._replace(query=urlencode(merged, safe="/")))


def _check_database_tls(present: dict[str, str], wanted: dict[str, str]) -> None:
    for key, value in wanted.items():
        if present.get(key, value) != value:
            raise SettingsError(f"{_DATABASE_TLS_VARIABLES[key]}={value!r} contradicts "
                                f"{key}={present[key]!r} in PAYMENTS_DATABASE_URL")
    # Below `require` asyncpg does not read the root certificate: it would be ignored.
    if "sslrootcert" in wanted and {**present, **wanted}.get("sslmode") not in _DATABASE_VERIFYING_SSLMODES:
        modes = ", ".join(_DATABASE_VERIFYING_SSLMODES)
        raise SettingsError(f"PAYMENTS_DATABASE_SSLROOTCERT is used only with sslmode {modes} "
                            "(PAYMENTS_DATABASE_SSLMODE, or sslmode in PAYMENTS_DATABASE_URL)")


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


def _existing_file(env: dict[str, str], name: str) -> Path | None:
    raw = env.get(name)
    if not raw:
        return None
    if not Path(raw).is_file():
        raise SettingsError(f"{name}={raw!r} is not an existing file")
    return Path(raw)


def _refuse_unused(env: dict[str, str], names: tuple[str, ...], protocol: str) -> None:
    """A setting the protocol ignores is a mistake (a login meant for SASL, sent in the clear)."""
    unused = [name for name in names if env.get(name)]
    if unused:
        raise SettingsError(f"{', '.join(unused)}: set, but not used with "
                            f"PAYMENTS_KAFKA_SECURITY_PROTOCOL={protocol}")


def _kafka_sasl(env: dict[str, str], protocol: str) -> dict[str, str]:
    if protocol not in _KAFKA_SASL:
        _refuse_unused(env, _KAFKA_SASL_VARIABLES, protocol)
        return {}
    missing = [name for name in _KAFKA_SASL_VARIABLES if not env.get(name)]
    if missing:
        raise SettingsError(f"{', '.join(missing)}: needed with PAYMENTS_KAFKA_SECURITY_PROTOCOL={protocol}")
    mechanism, username, password = _KAFKA_SASL_VARIABLES
    return {"kafka_sasl_mechanism": _choice(env, mechanism, "PLAIN", KAFKA_SASL_MECHANISMS),
            "kafka_sasl_username": env[username], "kafka_sasl_password": env[password]}


def _kafka_tls_files(env: dict[str, str], protocol: str) -> dict[str, Path | None]:
    if protocol not in _KAFKA_TLS:
        _refuse_unused(env, tuple(_KAFKA_TLS_VARIABLES.values()), protocol)
        return {}
    files = {key: _existing_file(env, name) for key, name in _KAFKA_TLS_VARIABLES.items()}
    if (files["kafka_ssl_certfile"] is None) != (files["kafka_ssl_keyfile"] is None):
        raise SettingsError("PAYMENTS_KAFKA_SSL_CERTFILE and PAYMENTS_KAFKA_SSL_KEYFILE: set both or neither")
    return files


def _kafka_security(env: dict[str, str]) -> dict[str, Any]:
    protocol = _choice(env, "PAYMENTS_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", KAFKA_SECURITY_PROTOCOLS)
    return {"kafka_security_protocol": protocol,
            **_kafka_sasl(env, protocol), **_kafka_tls_files(env, protocol)}


def _database_url(env: dict[str, str]) -> str | None:
    url = env.get("PAYMENTS_DATABASE_URL") or None
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        # Not echoed: it may hold a password.
        raise SettingsError("PAYMENTS_DATABASE_URL is not a postgresql:// URL")
    sslmode_name, rootcert_name = _DATABASE_TLS_VARIABLES.values()
    sslmode = _choice(env, sslmode_name, "", DATABASE_SSLMODES) if env.get(sslmode_name) else None
    rootcert = _existing_file(env, rootcert_name)
    if url is None:
        if sslmode or rootcert:  # the embedded server of `demo` has no TLS to configure
            raise SettingsError(f"{sslmode_name} and {rootcert_name} need PAYMENTS_DATABASE_URL")
        return None
    return database_dsn(url, sslmode, rootcert)


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    bootstrap = env.get("PAYMENTS_KAFKA_BOOTSTRAP") or None
    if bootstrap is not None and not _valid_bootstrap(bootstrap):
        raise SettingsError(f"PAYMENTS_KAFKA_BOOTSTRAP={bootstrap!r} is not host:port[,host:port]")
    return Settings(
        kafka_bootstrap=bootstrap,
        database_url=_database_url(env),
        web_port=_integer(env, "PAYMENTS_WEB_PORT", 6066, 1, 65535),
        data_dir=Path(env.get("PAYMENTS_DATA_DIR") or ".data"),
        partitions=_integer(env, "PAYMENTS_PARTITIONS", 8, 1, 1024),
        psp_url=env.get("PAYMENTS_PSP_URL") or None,
        risk_max_amount=_integer(env, "PAYMENTS_RISK_MAX_AMOUNT", 100_000_000, 1, 2**63 - 1),
        table_store=_choice(env, "PAYMENTS_TABLE_STORE", "disk", ("disk", "memory")),
        worker_role=_choice(env, "PAYMENTS_WORKER_ROLE", "all", WORKER_ROLES),
        instance_id=env.get("PAYMENTS_INSTANCE_ID") or None,
        standby_replicas=_integer(env, "PAYMENTS_STANDBY_REPLICAS", 1, 0, 8),
        kafka_session_timeout_seconds=_number(env, "PAYMENTS_KAFKA_SESSION_TIMEOUT_SECONDS", 10.0, 3.0,
                                              60.0),
        api_rate_per_second=_number(env, "PAYMENTS_API_RATE_PER_SECOND", 100.0, 0.001, 1e6),
        api_rate_burst=_integer(env, "PAYMENTS_API_RATE_BURST", 200, 1, 1_000_000),
        webhook_retry_schedule=_schedule(env, "PAYMENTS_WEBHOOK_RETRY_SCHEDULE"),
        webhook_allow_private=_choice(env, "PAYMENTS_WEBHOOK_ALLOW_PRIVATE", "0", ("0", "1")) == "1",
        webhook_timeout_seconds=_number(env, "PAYMENTS_WEBHOOK_TIMEOUT_SECONDS", 15.0, 0.1, 15.0),
        webhook_concurrency=_integer(env, "PAYMENTS_WEBHOOK_CONCURRENCY", 4, 1, 64),
        webhook_disable_after_seconds=_number(env, "PAYMENTS_WEBHOOK_DISABLE_AFTER_SECONDS", 432_000.0, 0.0,
                                              365 * 86_400.0),
        outbox_retention_hours=_number(env, "PAYMENTS_OUTBOX_RETENTION_HOURS", 168.0, 0.0, 24.0 * 3650),
        webhook_retention_hours=_number(env, "PAYMENTS_WEBHOOK_RETENTION_HOURS", 720.0, 0.0, 24.0 * 3650),
        **_kafka_security(env),
    )


def _schedule(env: dict[str, str], name: str) -> tuple[float, ...]:
    from models.webhooks import parse_schedule

    raw = env.get(name)
    if not raw:
        return WEBHOOK_RETRY_SCHEDULE
    try:
        return parse_schedule(raw)
    except ValueError as error:
        raise SettingsError(f"{name}: {error}") from None


def _choice(env: dict[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = env.get(name) or default
    if raw not in allowed:
        raise SettingsError(f"{name}={raw!r} is not one of {', '.join(allowed)}")
    return raw
