"""docker/docker-compose.yml parses and serves every broker and database on the ports the
tests and examples dial. (No Docker engine runs here: this checks the file, not the images.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.servers import brokers, databases

COMPOSE = Path(__file__).parents[1] / "docker" / "docker-compose.yml"

# service -> host ports it must publish
EXPECTED = {
    "mosquitto": {brokers.MOSQUITTO_PORT},
    "nats": {brokers.NATS_PORT},
    "rabbitmq": {brokers.RABBITMQ_PORT},
    "kafka": {brokers.KAFKA_PORT},
    "postgres": {databases.POSTGRES_PORT},
    "mariadb": {databases.MARIADB_PORT},
    "clickhouse": {databases.CLICKHOUSE_PORT, databases.CLICKHOUSE_HTTP_PORT},
    "socks5": {1080},
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def published(service: dict) -> dict[int, int]:
    """host port -> container port, from short ("127.0.0.1:9092:9092") or long syntax."""
    ports = {}
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports[int(entry["published"])] = int(entry["target"])
            continue
        parts = str(entry).split(":")
        ports[int(parts[-2])] = int(parts[-1].split("/")[0])
    return ports


def test_every_service_is_there_at_the_test_ports(compose: dict) -> None:
    services = compose["services"]
    assert set(EXPECTED) <= set(services)
    for name, ports in EXPECTED.items():
        mapping = published(services[name])
        assert ports <= set(mapping), f"{name} publishes {sorted(mapping)}, tests use {ports}"
        for port in ports:
            assert mapping[port] == port, f"{name}: {port} maps to {mapping[port]}"


def test_ports_are_bound_to_loopback_only(compose: dict) -> None:
    for name, service in compose["services"].items():
        for entry in service.get("ports", []):
            assert str(entry).startswith("127.0.0.1:"), f"{name} publishes {entry} publicly"


def test_every_service_names_a_pinned_image(compose: dict) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        assert ":" in image, f"{name}: {image} has no tag"


def test_kafka_runs_in_kraft_mode(compose: dict) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"]
    assert "ZOOKEEPER" not in " ".join(env)
    assert "localhost:9092" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_clickhouse_is_a_current_release(compose: dict) -> None:
    image = compose["services"]["clickhouse"]["image"]
    major = int(image.rsplit(":", 1)[1].split(".")[0])
    assert major >= 24


def test_credentials_match_what_the_tests_use(compose: dict) -> None:
    services = compose["services"]
    assert services["postgres"]["environment"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "test"
    assert services["mariadb"]["environment"]["MARIADB_ALLOW_EMPTY_ROOT_PASSWORD"] == "1"
    assert services["mariadb"]["environment"]["MARIADB_DATABASE"] == "test"
    assert "no-auth" in services["mosquitto"]["command"]
    volume = services["rabbitmq"]["volumes"][0].split(":")[0]
    config = (COMPOSE.parent / volume).read_text()
    assert "loopback_users.guest = false" in config


def test_makefile_services_uses_this_file() -> None:
    makefile = (COMPOSE.parents[1] / "Makefile").read_text()
    assert "docker compose -f docker/docker-compose.yml up -d" in makefile
    assert "docker info" in makefile
    assert "tests.servers.start_all" in makefile


def test_local_fallback_covers_the_same_services() -> None:
    from tests.servers import start_all

    planned = {port for _, port, starter in start_all.plan() if starter is not None}
    needed = set().union(*EXPECTED.values()) - {databases.CLICKHOUSE_HTTP_PORT}  # with 9000
    assert needed <= planned, sorted(needed - planned)
