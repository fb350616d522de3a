"""The deployment files are what users run, and Docker does not run here: so this test
reads docker-compose.yml, the Dockerfile and deploy/ and checks that they agree with
each other and with the service's contract (environment, ports, metric names)."""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_CONFIG = ROOT / "deploy/prometheus/prometheus.yml"
GRAFANA_PROVISIONING = ROOT / "deploy/grafana/provisioning"
DASHBOARD = ROOT / "deploy/grafana/dashboards/payments.json"

# The service's metric contract: what dashboards may query. A later change replaces this
# list with the names a running worker actually exposes on /metrics.
EXPECTED_METRICS = [
    "payments_outcomes_total",
    "payments_commands_rejected_total",
    "payments_dead_letters_total",
    "payments_step_duration_seconds",
    "payments_end_to_end_duration_seconds",
    "payments_psp_requests_total",
    "payments_psp_request_duration_seconds",
    "payments_psp_retries_total",
    "payments_compensations_total",
    "payments_ledger_batch_size",
    "payments_ledger_commit_duration_seconds",
    "payments_ledger_postings_total",
    "payments_outbox_backlog_rows",
    "payments_outbox_oldest_age_seconds",
    "payments_consumer_lag_messages",
    "payments_reservations_in_flight",
    "payments_refunds_total",
    "payments_webhook_deliveries_total",
    "payments_webhook_attempt_seconds",
    "payments_webhook_backlog",
    "payments_webhook_oldest_due_seconds",
    "payments_webhook_endpoints_disabled_total",
]

STACK_SERVICES = {
    "kafka",
    "postgres",
    "migrate",
    "topics",
    "worker-1",
    "worker-2",
    "read-side",
    "prometheus",
    "grafana",
}
WORKER_DEPENDENCIES = {
    "kafka": "service_healthy",
    "postgres": "service_healthy",
    "migrate": "service_completed_successfully",
    "topics": "service_completed_successfully",
}
METRIC_NAME = re.compile(r"payments_[a-z_]+")
HISTOGRAM_SERIES_SUFFIX = re.compile(r"_(bucket|sum|count)$")


# -- reading the files ----------------------------------------------------------------


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


@pytest.fixture(scope="module")
def workers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {name: s for name, s in services.items() if command(s) == ["worker"]}
    assert set(found) >= {"worker-1", "worker-2"}, "worker services not recognised"
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    (source,) = (
        source
        for path in sorted((GRAFANA_PROVISIONING / "datasources").glob("*.y*ml"))
        for source in yaml.safe_load(path.read_text())["datasources"]
        if source["type"] == "prometheus"
    )
    return source


def command(service: dict[str, Any]) -> list[str]:
    value = service.get("command", [])
    return shlex.split(value) if isinstance(value, str) else list(value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    value = service.get("environment") or {}
    if isinstance(value, list):
        value = dict(item.split("=", 1) for item in value)
    return {key: str(item) for key, item in value.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    value = service.get("depends_on") or {}
    if isinstance(value, list):
        return {name: "service_started" for name in value}
    return {name: spec.get("condition", "service_started") for name, spec in value.items()}


def published_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) for every published port."""
    pairs = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            if "published" in port:
                pairs.append((int(port["published"]), int(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        if len(parts) >= 2:
            pairs.append((int(parts[-2]), int(parts[-1])))
    return pairs


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every volume or bind mount."""
    pairs = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            pairs.append((volume["source"], volume["target"]))
        else:
            source, target = volume.split(":")[:2]
            pairs.append((source, target))
    return pairs


def is_repo_path(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def healthcheck_text(service: dict[str, Any]) -> str:
    check = service.get("healthcheck") or {}
    assert not check.get("disable"), "healthcheck is disabled"
    test = check.get("test", [])
    return test if isinstance(test, str) else " ".join(test)


def web_port(service: dict[str, Any]) -> int:
    return int(environment(service).get("PAYMENTS_WEB_PORT", "6066"))


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined and comments dropped."""
    lines = [
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), " ".join(arguments.split())))
    return instructions


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query", "")
        queries.append(query.get("query", "") if isinstance(query, dict) else str(query))
    return queries


def dashboard_metrics(dashboard: dict[str, Any]) -> set[str]:
    return {
        HISTOGRAM_SERIES_SUFFIX.sub("", name)
        for query in dashboard_queries(dashboard)
        for name in METRIC_NAME.findall(query)
    }


def datasource_references(node: Any) -> list[dict[str, Any]]:
    """Every `datasource` object anywhere in the dashboard JSON."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                found.append(value)
            found.extend(datasource_references(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(datasource_references(item))
    return found


# -- compose: services and Kafka ------------------------------------------------------


def test_every_service_of_the_stack_is_defined(services: dict[str, dict[str, Any]]) -> None:
    assert STACK_SERVICES <= set(services)


def test_kafka_runs_in_kraft_mode_without_zookeeper(services: dict[str, dict[str, Any]]) -> None:
    assert not [
        name
        for name, service in services.items()
        if "zookeeper" in name or "zookeeper" in service.get("image", "")
    ]
    kafka = services["kafka"]
    env = environment(kafka)
    assert not any("ZOOKEEPER" in key for key in env)
    assert env["KAFKA_PROCESS_ROLES"].replace(" ", "").split(",") == ["broker", "controller"]
    assert env["KAFKA_NODE_ID"].isdigit()
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    listeners = {
        name: int(address.rsplit(":", 1)[1])
        for name, address in (item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    }
    assert listeners["PLAINTEXT"] == 9092
    assert listeners["EXTERNAL"] == 29092
    assert controller in listeners
    voter = f"{env['KAFKA_NODE_ID']}@kafka:{listeners[controller]}"
    assert voter in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert (29092, 29092) in published_ports(kafka)
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in healthcheck_text(kafka)


def test_kafka_image_is_apache_kafka_3_8_or_later(services: dict[str, dict[str, Any]]) -> None:
    image, _, tag = services["kafka"]["image"].partition(":")
    assert image == "apache/kafka"
    assert tuple(int(part) for part in tag.split(".")[:2]) >= (3, 8)


# -- compose: workers and one-shot jobs -----------------------------------------------


def test_every_worker_reaches_kafka_and_postgres_by_service_name(
    services: dict[str, dict[str, Any]], workers: dict[str, dict[str, Any]]
) -> None:
    kafka_env = environment(services["kafka"])
    advertised = {
        item.split("://")[1] for item in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    postgres_env = environment(services["postgres"])
    for name, worker in workers.items():
        env = environment(worker)
        for address in env["PAYMENTS_KAFKA_BOOTSTRAP"].split(","):
            assert address.split(":")[0] in services, (name, address)
            assert address in advertised, (name, address)
        url = urlsplit(env["PAYMENTS_DATABASE_URL"])
        assert url.scheme in ("postgresql", "postgres"), name
        assert url.hostname == "postgres" and (url.port or 5432) == 5432, name
        assert url.username == postgres_env["POSTGRES_USER"], name
        assert url.password == postgres_env["POSTGRES_PASSWORD"], name
        assert url.path.lstrip("/") == postgres_env["POSTGRES_DB"], name
        assert int(env["PAYMENTS_PARTITIONS"]) >= 1, name
        assert env["PAYMENTS_DATA_DIR"] in [target for _, target in mounts(worker)], name


def test_payments_services_speak_the_security_protocol_of_the_listener_they_reach(
    services: dict[str, dict[str, Any]], workers: dict[str, dict[str, Any]]
) -> None:
    """The settings load (a worker would start), and SASL or TLS is where the broker has it."""
    kafka_env = environment(services["kafka"])
    advertised = kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    listener_of = {address: name for name, address in (item.split("://") for item in advertised)}
    protocol_map = kafka_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    protocol_of = dict(item.split(":") for item in protocol_map)
    for name in [*workers, "migrate", "topics"]:
        env = environment(services[name])
        settings = load_settings(env)
        for address in env["PAYMENTS_KAFKA_BOOTSTRAP"].split(","):
            assert settings.kafka_security_protocol == protocol_of[listener_of[address]], (name, address)


def test_every_worker_has_a_group_name_and_a_data_volume_of_its_own(
    workers: dict[str, dict[str, Any]],
) -> None:
    """Static membership (PAYMENTS_INSTANCE_ID) and the tables' RocksDB files: two workers
    sharing either would fence each other out of the group, or fail to open the store."""
    names = [environment(worker).get("PAYMENTS_INSTANCE_ID") for worker in workers.values()]
    assert all(names) and len(set(names)) == len(names), names
    volumes = [source for worker in workers.values() for source, target in mounts(worker)
               if target == environment(worker)["PAYMENTS_DATA_DIR"]]
    assert len(set(volumes)) == len(workers), volumes


def test_the_read_side_runs_in_a_worker_of_its_own_and_the_others_leave_it(
    workers: dict[str, dict[str, Any]],
) -> None:
    roles = {name: environment(worker).get("PAYMENTS_WORKER_ROLE", "all") for name, worker in workers.items()}
    assert set(roles.values()) == {"payments", "read-side"}, roles  # none runs it twice, none misses it
    assert roles["read-side"] == "read-side"


def test_every_worker_has_a_healthcheck_on_healthz(
    workers: dict[str, dict[str, Any]],
) -> None:
    for name, worker in workers.items():
        check = healthcheck_text(worker)
        assert f"http://127.0.0.1:{web_port(worker)}/healthz" in check, name


def test_every_worker_waits_for_its_dependencies(
    services: dict[str, dict[str, Any]], workers: dict[str, dict[str, Any]]
) -> None:
    for name, worker in workers.items():
        assert depends_on(worker) == WORKER_DEPENDENCIES, name
    for dependency, condition in WORKER_DEPENDENCIES.items():
        if condition == "service_healthy":
            assert healthcheck_text(services[dependency]), dependency


def test_each_worker_publishes_its_web_port(workers: dict[str, dict[str, Any]]) -> None:
    for name, worker in workers.items():
        assert [target for _, target in published_ports(worker)] == [web_port(worker)], name


@pytest.mark.parametrize(
    ("job", "dependency", "needed"),
    [
        ("migrate", "postgres", ["PAYMENTS_DATABASE_URL"]),
        ("topics", "kafka", ["PAYMENTS_KAFKA_BOOTSTRAP", "PAYMENTS_PARTITIONS"]),
    ],
)
def test_one_shot_jobs_run_once_after_their_dependency(
    services: dict[str, dict[str, Any]], job: str, dependency: str, needed: list[str]
) -> None:
    service = services[job]
    assert command(service) == [job]
    assert str(service.get("restart")) == "no"
    assert depends_on(service) == {dependency: "service_healthy"}
    assert set(needed) <= set(environment(service))


def test_payments_services_are_built_from_the_dockerfile(
    services: dict[str, dict[str, Any]], workers: dict[str, dict[str, Any]]
) -> None:
    images = set()
    for name in [*workers, "migrate", "topics"]:
        build = services[name]["build"]
        if isinstance(build, str):
            build = {"context": build}
        dockerfile = ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
        assert dockerfile.resolve() == DOCKERFILE, name
        images.add(services[name].get("image"))
    assert len(images) == 1, f"one image for every payments service, got {images}"


# -- compose: ports and mounts --------------------------------------------------------


def test_published_host_ports_do_not_collide(services: dict[str, dict[str, Any]]) -> None:
    host_ports = Counter(
        host for service in services.values() for host, _ in published_ports(service)
    )
    assert [port for port, uses in host_ports.items() if uses > 1] == []


def test_mounted_repo_paths_exist_and_named_volumes_are_declared(
    services: dict[str, dict[str, Any]],
) -> None:
    declared = set(yaml.safe_load(COMPOSE_FILE.read_text()).get("volumes") or {})
    for name, service in services.items():
        for source, _ in mounts(service):
            if is_repo_path(source):
                assert (ROOT / source).exists(), (name, source)
            else:
                assert source in declared, (name, source)


# -- Prometheus and Grafana -----------------------------------------------------------


def test_prometheus_config_is_the_mounted_one(services: dict[str, dict[str, Any]]) -> None:
    assert ("./deploy/prometheus/prometheus.yml", "/etc/prometheus/prometheus.yml") in mounts(
        services["prometheus"]
    )
    assert (9090, 9090) in published_ports(services["prometheus"])


def test_prometheus_scrapes_every_worker_at_its_web_port(
    workers: dict[str, dict[str, Any]],
) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    default_interval = config.get("global", {}).get("scrape_interval", "1m")
    scraped = {}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                scraped[target] = job
    for name, worker in workers.items():
        job = scraped.get(f"{name}:{web_port(worker)}")
        assert job is not None, f"{name}:{web_port(worker)} is not scraped"
        assert job.get("metrics_path", "/metrics") == "/metrics", name
        assert job.get("scrape_interval", default_interval) == "5s", name


def test_grafana_datasource_is_the_compose_prometheus(
    services: dict[str, dict[str, Any]], datasource: dict[str, Any]
) -> None:
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and url.hostname in services
    assert url.port in [target for _, target in published_ports(services["prometheus"])]


def test_grafana_loads_the_dashboard_from_the_provider_path(
    services: dict[str, dict[str, Any]],
) -> None:
    grafana = services["grafana"]
    targets = dict(mounts(grafana))
    assert targets["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboard_target = PurePosixPath(targets["./deploy/grafana/dashboards/payments.json"])
    providers = [
        provider
        for path in sorted((GRAFANA_PROVISIONING / "dashboards").glob("*.y*ml"))
        for provider in yaml.safe_load(path.read_text())["providers"]
    ]
    assert [p["options"]["path"] for p in providers] == [str(dashboard_target.parent)]
    env = environment(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home in (None, str(dashboard_target))


# -- the dashboard --------------------------------------------------------------------


def test_dashboard_is_a_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] == 39
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


def test_dashboard_uses_the_provisioned_datasource(
    dashboard: dict[str, Any], datasource: dict[str, Any]
) -> None:
    references = datasource_references(dashboard["panels"]) + datasource_references(
        dashboard.get("templating", {})
    )
    assert references
    for reference in references:
        assert reference == {"type": "prometheus", "uid": datasource["uid"]}


def test_dashboard_queries_only_contract_metrics(dashboard: dict[str, Any]) -> None:
    assert sorted(dashboard_metrics(dashboard) - set(EXPECTED_METRICS)) == []


def test_dashboard_shows_every_contract_metric(dashboard: dict[str, Any]) -> None:
    assert sorted(set(EXPECTED_METRICS) - dashboard_metrics(dashboard)) == []


# -- the image ------------------------------------------------------------------------


def test_dockerfile_builds_a_non_root_payments_image() -> None:
    instructions = dockerfile_instructions()
    runtime_stage = max(
        index for index, (keyword, _) in enumerate(instructions) if keyword == "FROM"
    )
    final = instructions[runtime_stage:]
    assert final[0][1].split()[0] == "python:3.11-slim"
    assert any(k == "RUN" and "pip install ." in args for k, args in instructions)
    users = [args for keyword, args in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    last = {keyword: args for keyword, args in final}
    assert json.loads(last["ENTRYPOINT"]) == ["payments"]
    assert json.loads(last["CMD"]) == ["worker"]
    assert "6066" in last["EXPOSE"].split()
    assert "urllib" in last["HEALTHCHECK"]
    assert "http://127.0.0.1:6066/healthz" in last["HEALTHCHECK"]


def test_build_context_leaves_out_local_state() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv"} <= set(ignored)
