"""Settings from the PAYMENTS_* environment: defaults, malformed values, what `worker` requires."""

from __future__ import annotations

from pathlib import Path

import pytest

from settings import Settings, SettingsError, load_settings

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
    ],
)
def test_malformed_value_raises_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


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
