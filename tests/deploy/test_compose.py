"""deploy/: the compose file, Prometheus and Grafana config agree with abode's own CLI.

Every abode service's command and ABODE_* environment must be accepted by the
``abode`` parser (no variable that names no flag: it would be silently ignored);
Prometheus must scrape every process on the port it serves metrics on; the
dashboard must query only metric families abode exports.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # noqa: E402  (the dev extra installs PyYAML)

from abode.cluster.cli.__main__ import apply_environment, build_parser
from tests.harness import ROOT

DEPLOY = ROOT / "deploy"
NODES = ["node-1", "node-2", "node-3"]
ROUTERS = ["router-1", "router-2"]
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def _interpolate(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` with an empty environment: the defaults."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    return value


def _load(path: Path) -> Any:
    return _interpolate(yaml.safe_load(path.read_text()))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = _load(DEPLOY / "docker-compose.yml")
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def _subparser(command: str) -> argparse.ArgumentParser:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    raise AssertionError("abode has no subcommands")


def _parse(service: dict[str, Any]) -> argparse.Namespace:
    return apply_environment(build_parser(), _command(service), _environment(service))


def test_the_compose_file_has_the_designed_services(services: dict[str, Any]) -> None:
    assert set(services) == {"etcd", *NODES, *ROUTERS, "prometheus", "grafana"}
    assert "quay.io/coreos/etcd:v3.5." in services["etcd"]["image"]


@pytest.mark.parametrize("name", NODES + ROUTERS)
def test_every_abode_variable_names_a_flag_of_its_command(
    services: dict[str, Any], name: str
) -> None:
    service = services[name]
    command = _command(service)
    assert command[0] in ("node", "router")
    # apply_environment reads ABODE_* for the subcommand's flags (not for the
    # top-level --log-level): anything else would be silently ignored.
    flags = {
        "ABODE_" + a.dest.upper()
        for a in _subparser(command[0])._actions if a.option_strings and a.dest != "help"
    }
    env = _environment(service)
    assert env, f"{name} has no environment"
    for key in env:
        assert key.startswith("ABODE_"), f"{name}: {key} is not an abode variable"
        assert key in flags, f"{name}: {key} names no flag of `abode {command[0]}`"


@pytest.mark.parametrize("name", NODES)
def test_node_services_parse_to_the_intended_config(services: dict[str, Any], name: str) -> None:
    service = services[name]
    args = _parse(service)
    assert args.command == "node"
    assert args.id == name
    assert args.app and args.app == args.app.strip()
    host, _, port = args.listen.rpartition(":")
    assert host == "0.0.0.0" and port.isdigit()
    # Peers reach the node at its service name (or hostname), on the port it listens on.
    assert args.advertise == f"{service.get('hostname', name)}:{port}"
    assert isinstance(args.metrics_port, int)
    volumes = [v if isinstance(v, str) else f"{v['source']}:{v['target']}"
               for v in service["volumes"]]
    assert f"{name}-data:{args.data}" in volumes, "the data dir must be a named volume"
    _assert_etcd_url(services, args.etcd)


@pytest.mark.parametrize("name", ROUTERS)
def test_router_services_parse_to_the_intended_config(
    services: dict[str, Any], name: str
) -> None:
    service = services[name]
    args = _parse(service)
    assert args.command == "router"
    assert args.host == "0.0.0.0"
    assert isinstance(args.metrics_port, int)
    published = [str(p) for p in service["ports"]]
    assert any(p.endswith(f":{args.port}") for p in published)
    _assert_etcd_url(services, args.etcd)


def test_node_ids_and_addresses_are_unique(services: dict[str, Any]) -> None:
    parsed = [_parse(services[n]) for n in NODES]
    assert len({a.id for a in parsed}) == len(NODES)
    assert len({a.advertise for a in parsed}) == len(NODES)


def _etcd_client_port(services: dict[str, Any]) -> int:
    for arg in _command(services["etcd"]):
        if arg.startswith("--listen-client-urls="):
            return urlsplit(arg.split("=", 1)[1].split(",")[0]).port or 0
    raise AssertionError("etcd has no --listen-client-urls")


def _assert_etcd_url(services: dict[str, Any], url: str) -> None:
    for part in url.split(","):
        parsed = urlsplit(part)
        assert parsed.scheme == "http" and parsed.hostname in services
        assert parsed.hostname == "etcd" and parsed.port == _etcd_client_port(services)


def test_abode_services_wait_for_a_healthy_etcd(services: dict[str, Any]) -> None:
    assert services["etcd"]["healthcheck"]["test"]
    for name in NODES + ROUTERS:
        assert services[name]["depends_on"]["etcd"]["condition"] == "service_healthy"


def test_prometheus_scrapes_every_process_on_its_metrics_port(services: dict[str, Any]) -> None:
    config = _load(DEPLOY / "prometheus.yml")
    mounted = " ".join(str(v) for v in services["prometheus"]["volumes"])
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml" in mounted
    scraped: dict[str, str] = {}
    for job in config["scrape_configs"]:
        path = job.get("metrics_path", "/metrics")
        assert path == "/metrics"
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                assert host not in scraped, f"{host} is scraped twice"
                scraped[host] = port
    expected = {name: str(_parse(services[name]).metrics_port) for name in NODES + ROUTERS}
    expected["etcd"] = str(_etcd_client_port(services))
    assert scraped == expected


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(
    services: dict[str, Any],
) -> None:
    grafana = services["grafana"]
    mounts = {str(v).split(":")[0]: str(v).split(":")[1] for v in grafana["volumes"]}
    provisioning = DEPLOY / "grafana" / "provisioning"
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    datasource = _load(provisioning / "datasources" / "prometheus.yml")["datasources"][0]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and url.port == 9090
    assert datasource["uid"] == "prometheus"
    provider = _load(provisioning / "dashboards" / "abode.yml")["providers"][0]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert (DEPLOY / "grafana" / "dashboards" / "abode.json").exists()


def _dashboard_builder() -> Any:
    spec = importlib.util.spec_from_file_location(
        "abode_build_dashboard", DEPLOY / "grafana" / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dashboard_json_is_fresh() -> None:
    committed = (DEPLOY / "grafana" / "dashboards" / "abode.json").read_text()
    assert committed == _dashboard_builder().render(), (
        "run python deploy/grafana/build_dashboard.py")


def _exported_families() -> set[str]:
    """Every ``abode_*`` family name the code defines, with the text format's suffixes."""
    names: set[str] = set()
    for package in ("abode", "cluster", "node", "router"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            for kind, name in re.findall(r'\b(counter|gauge|histogram)\(\s*"(abode_[a-z0-9_]+)"',
                                         text):
                if kind == "counter":
                    names.add(name + "_total")
                elif kind == "histogram":
                    names.update(name + s for s in ("_bucket", "_sum", "_count"))
                else:
                    names.add(name)
    return names


def test_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "abode.json").read_text())
    exported = _exported_families()
    assert "abode_node_events_total" in exported  # the scan itself works
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs.append(dashboard["templating"]["list"][0]["query"]["query"])
    used = {name for expr in exprs for name in re.findall(r"\babode_[a-z0-9_]+", expr)}
    assert used, "the dashboard queries nothing"
    # Names the dashboard assumes ahead of the code are listed in the builder, and
    # only while no process exports them (then they must be dropped from the list).
    assumed = _dashboard_builder().ASSUMED_METRICS
    missing = sorted(used - exported - assumed)
    assert not missing, f"the dashboard queries metrics no process exports: {missing}"
    assert not assumed & exported, f"exported now, drop from ASSUMED_METRICS: {assumed & exported}"


def test_dockerfile_installs_the_repo_and_runs_unprivileged() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK\b", text, re.M)
    assert re.search(r"^RUN pip install /src\b", text, re.M)
    sources = [line.split()[1:-1] for line in text.splitlines() if line.startswith("COPY ")]
    copied = {s.rstrip("/") for group in sources for s in group}
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
    # Every package pyproject installs is in the image.
    assert {"cluster", "node", "router", "pyproject.toml", "README.md"} <= copied
