"""The monitoring profile: the Grafana dashboard queries only metrics that /metrics
exports, Prometheus scrapes every api and worker replica where they serve /metrics,
and Grafana's provisioning wires the two together."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml


REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "pulse-dashboard.json"
PROMETHEUS = REPO / "deploy" / "prometheus" / "prometheus.yml"
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
METRIC = re.compile(r"\b(pulse_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]")
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "sum", "rate", "increase",
                "histogram_quantile", "clamp_min", "max", "min", "avg", "count", "label_values"}


def compose_services() -> dict:
    return yaml.safe_load((REPO / "compose.yml").read_text())["services"]


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    queries += [v["definition"] for v in dashboard["templating"]["list"]]
    return queries


def exported_names(text: str) -> set[str]:
    """Every series name a scrape of this text can have (histograms and counters expand)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            name = name.removesuffix("_total")  # the TYPE line names a counter with or without it
            names |= {"counter": {name + "_total", name + "_created"},
                      "histogram": {name + s for s in ("_bucket", "_sum", "_count", "_created")},
                      }.get(kind, {name})
        elif line and not line.startswith("#"):
            names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return names


@pytest.mark.asyncio(loop_scope="session")
async def test_every_metric_the_dashboard_queries_is_exported(api):
    async with api.session.get(api.base_url + "/metrics") as resp:
        assert resp.status == 200
        exported = exported_names(await resp.text())
    queried = {name for query in dashboard_queries() for name in METRIC.findall(query)}
    assert len(queried) >= 12, queried
    assert queried <= exported, sorted(queried - exported)
    # Only Pulse's own series are selected (a typo in a PromQL word would show here).
    for query in dashboard_queries():
        for word in SELECTOR.findall(query):
            assert word.startswith("pulse_") or word in PROMQL_WORDS, (word, query)


def test_the_dashboard_covers_what_operations_watch():
    text = "\n".join(dashboard_queries())
    for needed in ("pulse_http_responses_total", "pulse_http_request_duration_seconds_bucket",
                   'status=~"5..', "pulse_socketio_connections", "pulse_socketio_deliveries_total",
                   "pulse_pg_pool_in_use", "pulse_mongo_command_duration_seconds_bucket", "pulse_outbox_lag_seconds",
                   'outcome="retry"', 'outcome="dead_letter"'):
        assert needed in text, needed
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == panel["datasource"]["uid"] == datasource()["uid"]


def datasource() -> dict:
    [source] = yaml.safe_load((PROVISIONING / "datasource.yml").read_text())["datasources"]
    return source


def test_prometheus_scrapes_every_api_and_worker_replica():
    services = compose_services()
    jobs = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]}
    api_port = int(services["api"]["command"][services["api"]["command"].index("--port") + 1])
    worker_port = int(services["worker"]["environment"]["PULSE_WORKER_METRICS_PORT"])
    for job, service, port in (("pulse-api", "api", api_port), ("pulse-worker", "worker", worker_port)):
        [sd] = jobs[job]["dns_sd_configs"]
        assert sd["names"] == [service] and sd["type"] == "A" and sd["port"] == port, job
        assert jobs[job]["metrics_path"] == "/metrics"
        assert str(port) in [str(p) for p in services[service]["expose"]], service
    assert services["worker"]["environment"]["PULSE_HOST"] == "0.0.0.0"


def test_grafana_is_provisioned_with_the_dashboard_and_prometheus():
    services = compose_services()
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name  # optional: not started by default
    assert datasource()["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((PROVISIONING / "dashboards.yml").read_text())["providers"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in services["grafana"]["volumes"] if v.startswith("./"))
    assert mounts["./deploy/grafana/pulse-dashboard.json"].startswith(provider["options"]["path"] + "/")
    assert mounts["./deploy/grafana/provisioning/datasource.yml"].startswith("/etc/grafana/provisioning/datasources/")
    assert mounts["./deploy/grafana/provisioning/dashboards.yml"].startswith("/etc/grafana/provisioning/dashboards/")
    prometheus_mounts = [v for v in services["prometheus"]["volumes"] if v.startswith("./")]
    assert prometheus_mounts == ["./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"]
