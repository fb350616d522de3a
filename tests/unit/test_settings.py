"""Settings from the PAYMENTS_* environment: defaults, malformed values, what `worker` requires,
and the transport security every Kafka and PostgreSQL connection is opened with."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import faust
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from asyncpg import connect_utils
from faust.types.auth import AuthProtocol, SASLMechanism

from settings import Settings, SettingsError, database_dsn, load_settings

DATABASE_URL = "postgresql://payments@db:5432/payments"


def test_defaults_with_an_empty_environment() -> None:
    settings = load_settings({})
    assert (settings.kafka_bootstrap, settings.database_url) == (None, None)
    assert (settings.web_port, settings.partitions, settings.data_dir) == (6066, 8, Path(".data"))
    assert settings.risk_max_amount == 100_000_000


def test_empty_values_mean_the_default() -> None:
    env = {"PAYMENTS_WEB_PORT": "", "PAYMENTS_PARTITIONS": "", "PAYMENTS_KAFKA_BOOTSTRAP": "",
           "PAYMENTS_DATABASE_URL": ""}
    assert load_settings(env) == load_settings({})


def test_values_are_read_from_the_environment() -> None:
    settings = load_settings({
        "PAYMENTS_KAFKA_BOOTSTRAP": "kafka-1:9092,kafka-2:9093", "PAYMENTS_DATABASE_URL": DATABASE_URL,
        "PAYMENTS_WEB_PORT": "8080", "PAYMENTS_PARTITIONS": "16", "PAYMENTS_DATA_DIR": "/var/lib/payments",
    })
    assert settings.kafka_bootstrap == "kafka-1:9092,kafka-2:9093"
    assert settings.database_url == DATABASE_URL
    assert (settings.web_port, settings.partitions) == (8080, 16)
    assert settings.data_dir == Path("/var/lib/payments")


def test_unprefixed_variables_are_ignored() -> None:
    assert load_settings({"WEB_PORT": "1", "KAFKA_BOOTSTRAP": "nonsense"}) == load_settings({})


def test_os_environ_is_read_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENTS_WEB_PORT", "7070")
    assert load_settings().web_port == 7070


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PAYMENTS_WEB_PORT", "abc"), ("PAYMENTS_WEB_PORT", "0"), ("PAYMENTS_WEB_PORT", "65536"),
        ("PAYMENTS_WEB_PORT", "80.5"), ("PAYMENTS_WEB_PORT", "-1"),
        ("PAYMENTS_PARTITIONS", "many"), ("PAYMENTS_PARTITIONS", "0"), ("PAYMENTS_PARTITIONS", "1025"),
        ("PAYMENTS_KAFKA_BOOTSTRAP", "localhost"), ("PAYMENTS_KAFKA_BOOTSTRAP", "localhost:"),
        ("PAYMENTS_KAFKA_BOOTSTRAP", "host:port"), ("PAYMENTS_KAFKA_BOOTSTRAP", "a:9092,"),
        ("PAYMENTS_KAFKA_BOOTSTRAP", "a:9092; b:9092"), ("PAYMENTS_KAFKA_BOOTSTRAP", "kafka://a:9092"),
        ("PAYMENTS_DATABASE_URL", "mysql://db/payments"), ("PAYMENTS_DATABASE_URL", "db:5432"),
        ("PAYMENTS_RISK_MAX_AMOUNT", "0"), ("PAYMENTS_RISK_MAX_AMOUNT", "soon"),
        ("PAYMENTS_KAFKA_SESSION_TIMEOUT_SECONDS", "2"), ("PAYMENTS_KAFKA_SESSION_TIMEOUT_SECONDS", "ten"),
        ("PAYMENTS_KAFKA_SESSION_TIMEOUT_SECONDS", "91"),
        ("PAYMENTS_WEBHOOK_RETENTION_HOURS", "-1"), ("PAYMENTS_WEBHOOK_RETENTION_HOURS", "a month"),
        ("PAYMENTS_WORKER_ROLE", "everything"), ("PAYMENTS_WORKER_ROLE", "read_side"),
    ],
)
def test_malformed_value_raises_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


def test_a_worker_runs_every_agent_unless_its_role_says_otherwise() -> None:
    assert load_settings({}).worker_role == "all"
    for role in ("payments", "read-side"):
        assert load_settings({"PAYMENTS_WORKER_ROLE": role}).worker_role == role


def test_webhook_retention_defaults_to_30_days_and_0_keeps_all() -> None:
    assert load_settings({}).webhook_retention_hours == 720.0
    assert load_settings({"PAYMENTS_WEBHOOK_RETENTION_HOURS": "0"}).webhook_retention_hours == 0.0


def test_the_session_timeout_is_read_and_defaults_to_ten_seconds() -> None:
    assert load_settings({}).kafka_session_timeout_seconds == 10.0
    assert load_settings({"PAYMENTS_KAFKA_SESSION_TIMEOUT_SECONDS": "6"}).kafka_session_timeout_seconds == 6.0


@pytest.mark.parametrize("value", ["1", "65535"])
def test_web_port_bounds_are_accepted(value: str) -> None:
    assert load_settings({"PAYMENTS_WEB_PORT": value}).web_port == int(value)


@pytest.mark.parametrize("value", ["localhost:9092", "10.0.0.1:9092", "[::1]:9092", "a.b-c:1,d:65535"])
def test_well_formed_bootstrap_is_accepted(value: str) -> None:
    assert load_settings({"PAYMENTS_KAFKA_BOOTSTRAP": value}).kafka_bootstrap == value


@pytest.mark.parametrize("value", ["postgresql://u:p@h:5432/d", "postgres://h/d"])
def test_postgres_urls_are_accepted(value: str) -> None:
    assert load_settings({"PAYMENTS_DATABASE_URL": value}).database_url == value


@pytest.mark.parametrize("value", ["localhost:99999", "localhost:0"])
def test_bootstrap_port_out_of_range_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="PAYMENTS_KAFKA_BOOTSTRAP"):
        load_settings({"PAYMENTS_KAFKA_BOOTSTRAP": value})


def test_require_infrastructure_names_the_missing_broker() -> None:
    with pytest.raises(SettingsError, match="PAYMENTS_KAFKA_BOOTSTRAP"):
        load_settings({"PAYMENTS_DATABASE_URL": DATABASE_URL}).require_infrastructure()


def test_require_infrastructure_names_the_missing_database() -> None:
    with pytest.raises(SettingsError, match="PAYMENTS_DATABASE_URL"):
        load_settings({"PAYMENTS_KAFKA_BOOTSTRAP": "k:9092"}).require_infrastructure()


def test_require_infrastructure_returns_both_when_set() -> None:
    settings = load_settings({"PAYMENTS_KAFKA_BOOTSTRAP": "k:9092", "PAYMENTS_DATABASE_URL": DATABASE_URL})
    assert settings.require_infrastructure() == ("k:9092", DATABASE_URL)


def test_with_infrastructure_fills_in_embedded_servers_and_keeps_the_rest() -> None:
    settings = Settings(web_port=7000).with_infrastructure("127.0.0.1:1234", DATABASE_URL)
    assert settings.require_infrastructure() == ("127.0.0.1:1234", DATABASE_URL)
    assert settings.web_port == 7000


# -- transport security: Kafka TLS and SASL, PostgreSQL TLS ----------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed CA certificate and its key, and a key that does not match it."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    folder = tmp_path_factory.mktemp("certificates")
    files = {"ca": folder / "ca.pem", "key": folder / "key.pem", "other_key": folder / "other.pem"}
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", files["key"], "-out", files["ca"], "-days", "2",
                    "-subj", "/CN=payments-test-ca"], check=True, capture_output=True)
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                    "-out", files["other_key"]], check=True, capture_output=True)
    return files


def ca_names(context: ssl.SSLContext) -> list[str]:
    return [value for certificate in context.get_ca_certs() for ((key, value),) in certificate["subject"]
            if key == "commonName"]


def sasl_env(protocol: str = "SASL_SSL", **extra: str) -> dict[str, str]:
    return {"PAYMENTS_KAFKA_SECURITY_PROTOCOL": protocol, "PAYMENTS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "PAYMENTS_KAFKA_SASL_USERNAME": "payments", "PAYMENTS_KAFKA_SASL_PASSWORD": "s3cret", **extra}


def test_plaintext_is_the_default_and_needs_no_credentials() -> None:
    settings = load_settings({})
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.kafka_credentials() is None
    assert settings.kafka_client_options() == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_gives_faust_sasl_credentials_over_a_verifying_tls_context(
    certificates: dict[str, Path],
) -> None:
    settings = load_settings(sasl_env(PAYMENTS_KAFKA_SSL_CAFILE=str(certificates["ca"])))
    credentials = settings.kafka_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol == AuthProtocol.SASL_SSL
    assert credentials.mechanism == SASLMechanism.SCRAM_SHA_512
    assert (credentials.username, credentials.password) == ("payments", "s3cret")
    context = credentials.ssl_context
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert ca_names(context) == ["payments-test-ca"]


def test_sasl_ssl_client_options_are_what_aiokafka_takes(certificates: dict[str, Path]) -> None:
    settings = load_settings(sasl_env(PAYMENTS_KAFKA_SSL_CAFILE=str(certificates["ca"])))
    options = settings.kafka_client_options()
    assert {key: value for key, value in options.items() if key != "ssl_context"} == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "payments", "sasl_plain_password": "s3cret"}
    assert ca_names(options["ssl_context"]) == ["payments-test-ca"]


async def test_aiokafka_clients_accept_the_options_of_every_protocol(certificates: dict[str, Path]) -> None:
    """aiokafka refuses inconsistent security arguments when a client is built (no connection yet)."""
    environments = [{}, {"PAYMENTS_KAFKA_SECURITY_PROTOCOL": "SSL"}, sasl_env("SASL_PLAINTEXT"),
                    sasl_env(PAYMENTS_KAFKA_SSL_CAFILE=str(certificates["ca"]))]
    for env in environments:
        options = load_settings(env).kafka_client_options()
        AIOKafkaAdminClient(bootstrap_servers="127.0.0.1:9", **options)
        AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9", **options)


async def test_the_worker_app_gives_faust_and_its_own_probe_the_same_credentials(
    certificates: dict[str, Path], tmp_path: Path,
) -> None:
    from app import create_app

    settings = load_settings(sasl_env(
        PAYMENTS_KAFKA_SSL_CAFILE=str(certificates["ca"]), PAYMENTS_KAFKA_BOOTSTRAP="kafka:9092",
        PAYMENTS_DATABASE_URL=DATABASE_URL, PAYMENTS_TABLE_STORE="memory", PAYMENTS_DATA_DIR=str(tmp_path)))
    app = create_app(settings)
    assert isinstance(app.conf.broker_credentials, faust.SASLCredentials)
    producer, probe = dict(app.producer._settings_auth()), dict(app.consumer._auth_options())
    assert producer == probe
    assert (probe["security_protocol"], probe["sasl_plain_username"]) == ("SASL_SSL", "payments")
    assert ca_names(probe["ssl_context"]) == ["payments-test-ca"]


def test_each_role_builds_the_app_it_names(tmp_path: Path) -> None:
    """What a worker runs, by PAYMENTS_WORKER_ROLE: its consumer group, the topics its
    agents read, its tables (built, not started: nothing connects)."""
    from app import create_app

    def built(role: str) -> tuple[str, set[str], set[str]]:
        app = create_app(load_settings({
            "PAYMENTS_KAFKA_BOOTSTRAP": "kafka:9092", "PAYMENTS_DATABASE_URL": DATABASE_URL,
            "PAYMENTS_TABLE_STORE": "memory", "PAYMENTS_DATA_DIR": str(tmp_path / role),
            "PAYMENTS_WORKER_ROLE": role}))
        topics = {topic for agent in app.agents.values() for topic in agent.channel.topics}
        return app.conf.id, topics, set(app.tables)

    payment_flow = {"payments.steps", "fintech.payments.commands"}
    read_side = {"fintech.events.PaymentCaptured"}
    group, topics, tables = built("all")
    assert group == "payments" and payment_flow | read_side <= topics
    assert tables == {"owners", "idempotency_keys"}
    group, topics, tables = built("payments")
    assert group == "payments" and payment_flow <= topics and not read_side & topics and tables
    group, topics, tables = built("read-side")
    assert group == "payments-read-side" and read_side <= topics and not payment_flow & topics and not tables


def test_sasl_plaintext_has_no_tls_context() -> None:
    credentials = load_settings(sasl_env("SASL_PLAINTEXT")).kafka_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.protocol, credentials.ssl_context) == (AuthProtocol.SASL_PLAINTEXT, None)


def test_ssl_with_a_client_certificate_gives_ssl_credentials(certificates: dict[str, Path]) -> None:
    settings = load_settings({
        "PAYMENTS_KAFKA_SECURITY_PROTOCOL": "SSL", "PAYMENTS_KAFKA_SSL_CAFILE": str(certificates["ca"]),
        "PAYMENTS_KAFKA_SSL_CERTFILE": str(certificates["ca"]),
        "PAYMENTS_KAFKA_SSL_KEYFILE": str(certificates["key"]),
    })
    credentials = settings.kafka_credentials()
    assert isinstance(credentials, faust.SSLCredentials) and credentials.protocol == AuthProtocol.SSL
    assert ca_names(credentials.context) == ["payments-test-ca"]
    assert settings.kafka_client_options()["security_protocol"] == "SSL"


def test_a_key_that_does_not_match_the_certificate_is_a_settings_error(certificates: dict[str, Path]) -> None:
    settings = load_settings({
        "PAYMENTS_KAFKA_SECURITY_PROTOCOL": "SSL", "PAYMENTS_KAFKA_SSL_CERTFILE": str(certificates["ca"]),
        "PAYMENTS_KAFKA_SSL_KEYFILE": str(certificates["other_key"]),
    })
    with pytest.raises(SettingsError, match="PAYMENTS_KAFKA_SSL_CAFILE, _CERTFILE, _KEYFILE"):
        settings.kafka_credentials()


def test_the_sasl_password_stays_out_of_reprs() -> None:
    settings = load_settings(sasl_env("SASL_PLAINTEXT"))
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in repr(settings.kafka_credentials())


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PAYMENTS_KAFKA_SECURITY_PROTOCOL": "TLS"}, "PAYMENTS_KAFKA_SECURITY_PROTOCOL"),
        ({"PAYMENTS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "PAYMENTS_KAFKA_SASL_MECHANISM"),
        ({**sasl_env(), "PAYMENTS_KAFKA_SASL_MECHANISM": "GSSAPI"}, "PAYMENTS_KAFKA_SASL_MECHANISM"),
        ({**sasl_env(), "PAYMENTS_KAFKA_SASL_USERNAME": ""}, "PAYMENTS_KAFKA_SASL_USERNAME"),
        ({**sasl_env("SASL_PLAINTEXT"), "PAYMENTS_KAFKA_SASL_PASSWORD": ""}, "PAYMENTS_KAFKA_SASL_PASSWORD"),
        ({"PAYMENTS_KAFKA_SASL_USERNAME": "payments"}, "PAYMENTS_KAFKA_SASL_USERNAME"),
        ({"PAYMENTS_KAFKA_SECURITY_PROTOCOL": "SSL", "PAYMENTS_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
         "PAYMENTS_KAFKA_SSL_CAFILE"),
        (sasl_env("SASL_PLAINTEXT", PAYMENTS_KAFKA_SSL_CAFILE=__file__), "PAYMENTS_KAFKA_SSL_CAFILE"),
        ({"PAYMENTS_KAFKA_SECURITY_PROTOCOL": "SSL", "PAYMENTS_KAFKA_SSL_CERTFILE": __file__},
         "PAYMENTS_KAFKA_SSL_KEYFILE"),
        ({"PAYMENTS_DATABASE_URL": DATABASE_URL, "PAYMENTS_DATABASE_SSLMODE": "on"},
         "PAYMENTS_DATABASE_SSLMODE"),
        ({"PAYMENTS_DATABASE_SSLMODE": "require"}, "PAYMENTS_DATABASE_URL"),
        ({"PAYMENTS_DATABASE_URL": DATABASE_URL, "PAYMENTS_DATABASE_SSLMODE": "verify-ca",
          "PAYMENTS_DATABASE_SSLROOTCERT": "/nonexistent/root.crt"}, "PAYMENTS_DATABASE_SSLROOTCERT"),
        ({"PAYMENTS_DATABASE_URL": DATABASE_URL, "PAYMENTS_DATABASE_SSLMODE": "prefer",
          "PAYMENTS_DATABASE_SSLROOTCERT": __file__}, "PAYMENTS_DATABASE_SSLROOTCERT"),
        ({"PAYMENTS_DATABASE_URL": DATABASE_URL, "PAYMENTS_DATABASE_SSLROOTCERT": __file__},
         "PAYMENTS_DATABASE_SSLROOTCERT"),
        ({"PAYMENTS_DATABASE_URL": f"{DATABASE_URL}?sslmode=disable", "PAYMENTS_DATABASE_SSLMODE": "require"},
         "PAYMENTS_DATABASE_SSLMODE"),
    ],
)
def test_inconsistent_transport_security_raises_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named) as raised:
        load_settings(env)
    assert "s3cret" not in str(raised.value)


def asyncpg_tls(dsn: str) -> tuple[str, ssl.SSLContext | bool]:
    """How asyncpg itself reads a DSN's TLS parameters (its private parser: no connection)."""
    _, params = connect_utils._parse_connect_dsn_and_args(
        dsn=dsn, host=None, port=None, user=None, password=None, passfile=None, database=None, ssl=None,
        service=None, servicefile=None, direct_tls=None, server_settings=None, target_session_attrs=None,
        krbsrvname=None, gsslib=None)
    return params.sslmode.name, params.ssl


def test_database_tls_variables_are_merged_into_the_url_asyncpg_connects_with(
    certificates: dict[str, Path],
) -> None:
    settings = load_settings({
        "PAYMENTS_DATABASE_URL": f"{DATABASE_URL}?application_name=worker",
        "PAYMENTS_DATABASE_SSLMODE": "verify-full", "PAYMENTS_DATABASE_SSLROOTCERT": str(certificates["ca"]),
    })
    assert settings.database_url == (f"{DATABASE_URL}?application_name=worker&sslmode=verify-full"
                                     f"&sslrootcert={certificates['ca']}")
    mode, context = asyncpg_tls(settings.require_database())
    assert mode == "verify_full"
    assert isinstance(context, ssl.SSLContext) and context.check_hostname
    assert ca_names(context) == ["payments-test-ca"]


def test_sslmode_in_the_url_alone_is_what_asyncpg_reads() -> None:
    url = f"{DATABASE_URL}?sslmode=require"
    assert load_settings({"PAYMENTS_DATABASE_URL": url}).database_url == url
    assert asyncpg_tls(url)[0] == "require"


def test_a_rootcert_variable_completes_an_sslmode_given_in_the_url(certificates: dict[str, Path]) -> None:
    url = f"{DATABASE_URL}?sslmode=verify-ca"
    settings = load_settings({"PAYMENTS_DATABASE_URL": url, "PAYMENTS_DATABASE_SSLMODE": "verify-ca",
                              "PAYMENTS_DATABASE_SSLROOTCERT": str(certificates["ca"])})
    assert settings.database_url == f"{url}&sslrootcert={certificates['ca']}"


def test_without_database_tls_variables_the_url_is_kept_as_written() -> None:
    url = "postgresql://u:p%40ss@h1:5432,h2:5433/d?target_session_attrs=read-write"
    assert load_settings({"PAYMENTS_DATABASE_URL": url}).database_url == url
    assert database_dsn(url, "disable") == f"{url}&sslmode=disable"
