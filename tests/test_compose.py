"""docker-compose.yml, checked without a Docker engine.

- The file is valid under the Compose Specification's JSON schema, both as written and
  with the example env file interpolated. ``tests/compose-spec.json`` is that schema as PyPI's
  ``docker-compose`` 1.29.2 ships it (``compose/config/compose_spec.json``, Apache-2.0),
  byte for byte; its sha256 is checked below.
- Every ``ZHIPING_*`` variable a service sets or the example env file lists is a field of
  ``Settings``. Every variable the file interpolates is in ``compose.env.example``, and the
  example lists nothing else. Secrets are never written into the file.
- Images are pinned. Every long-running service has a health check, the worker runs several
  replicas, and the ``depends_on`` conditions give a start order in which the migration and
  the Temporal setup finish before a worker or the API starts.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from graphlib import TopologicalSorter
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml
from temporalio.api.taskqueue.v1 import PollerInfo

from workflows._common import ACTIVITY_TIMEOUT
from workflows.visibility import SEARCH_ATTRIBUTES
from zhiping.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
EXAMPLE_ENV = ROOT / "compose.env.example"
SCHEMA_FILE = Path(__file__).resolve().parent / "compose-spec.json"
SCHEMA_SHA256 = "0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac"

ENV_PREFIX = str(Settings.model_config.get("env_prefix", ""))
SETTING_VARIABLES = {ENV_PREFIX + name.upper() for name in Settings.model_fields}

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_DOLLAR = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<bare>" + _NAME + "))")
_BRACED = re.compile(r"(?P<name>" + _NAME + r")(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.DOTALL)
_SECRET_NAME = re.compile(r"PASSWORD|PWD|SECRET|TOKEN")
_URL_CREDENTIALS = re.compile(r"://[^/@\s]+:[^/@\s]+@")
_REQUIRED = re.compile(r"\$\{(" + _NAME + r"):\?")


class MissingVariableError(Exception):
    """A ``${VAR:?message}`` whose variable is unset or empty: compose refuses to start."""


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation: ``$$``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``…"""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("bare"):
            raise AssertionError(f"write ${{{match.group('bare')}}} with braces in {value!r}")
        braced = _BRACED.fullmatch(match.group("braced"))
        assert braced, f"cannot read {match.group(0)!r}"
        name, op, arg = braced.group("name", "op", "arg")
        current = env.get(name)
        if op is None:
            return current or ""
        if op in (":-", "-"):
            unset = not current if op == ":-" else current is None
            return arg if unset else str(current)
        if op in (":?", "?"):
            unset = not current if op == ":?" else current is None
            if unset:
                raise MissingVariableError(f"{name}: {arg}")
            return str(current)
        present = bool(current) if op == ":+" else current is not None
        return arg if present else ""

    return _DOLLAR.sub(replace, value)


def variables(value: str) -> set[str]:
    """The names ``value`` interpolates (``$$`` is a literal dollar, not a variable)."""
    names = set()
    for match in _DOLLAR.finditer(value):
        if match.group("braced") is not None:
            braced = _BRACED.fullmatch(match.group("braced"))
            assert braced, f"cannot read {match.group(0)!r}"
            names.add(braced.group("name"))
        elif match.group("bare"):
            names.add(match.group("bare"))
    return names


def strings(node: Any) -> Iterator[str]:
    """Every string in a loaded YAML document, keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, item in node.items():
            yield from strings(key)
            yield from strings(item)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def transform(node: Any, function: Callable[[str], str]) -> Any:
    """``node`` with ``function`` applied to every string value (keys stay)."""
    if isinstance(node, str):
        return function(node)
    if isinstance(node, dict):
        return {key: transform(item, function) for key, item in node.items()}
    if isinstance(node, list):
        return [transform(item, function) for item in node]
    return node


def read_env_file(path: Path) -> dict[str, str]:
    """A dotenv file as compose reads it: ``NAME=value``, ``#`` comments, quotes stripped."""
    env: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and re.fullmatch(_NAME, name), f"{path.name}:{number}: not NAME=value"
        assert name not in env, f"{path.name}:{number}: {name} twice"
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[name] = value
    return env


def duration(text: str) -> timedelta:
    """A compose duration such as ``45s`` or ``1m30s``."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return timedelta(seconds=sum(float(n) * units[u] for n, u in parts))


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment``, as a mapping whichever form it is written in."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


@pytest.fixture(scope="module")
def example() -> dict[str, str]:
    return read_env_file(EXAMPLE_ENV)


@pytest.fixture(scope="module")
def filled(example: dict[str, str]) -> dict[str, str]:
    """The example with its empty (required) values filled in, as an operator would."""
    return {name: value or f"filled-{name.lower()}" for name, value in example.items()}


def one_shot(service: Mapping[str, Any]) -> bool:
    """A job that runs to completion (``restart: "no"``), as against a long-running service."""
    return service.get("restart") == "no"


# --- the Compose Specification ------------------------------------------------------------


def test_schema_is_the_vendored_file() -> None:
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256


def _validator() -> jsonschema.Draft201909Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema["title"] == "Compose Specification"
    return jsonschema.Draft201909Validator(schema)


def test_valid_as_written(compose: dict[str, Any]) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _validator().iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_valid_once_interpolated(compose: dict[str, Any], filled: dict[str, str]) -> None:
    resolved = transform(compose, lambda text: interpolate(text, filled))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _validator().iter_errors(resolved)]
    assert not errors, "\n".join(errors)


def test_schema_rejects_a_broken_file(compose: dict[str, Any]) -> None:
    """The validator is not vacuous: an unknown key and a bad condition are refused."""
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["replicass"] = 3
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_done"
    assert len(list(_validator().iter_errors(broken))) == 2


# --- every setting from the environment ---------------------------------------------------


def test_every_zhiping_variable_is_a_setting(
    services: dict[str, dict[str, Any]], compose: dict[str, Any], example: dict[str, str]
) -> None:
    set_by_services = {name for s in services.values() for name in environment(s)}
    interpolated = {name for text in strings(compose) for name in variables(text)}
    for source, names in [
        ("a service's environment", set_by_services),
        ("an interpolation", interpolated),
        (EXAMPLE_ENV.name, set(example)),
    ]:
        unknown = {n for n in names if n.startswith(ENV_PREFIX)} - SETTING_VARIABLES
        assert not unknown, f"{source} sets {sorted(unknown)}, which Settings does not know"


def test_the_app_services_share_one_environment(services: dict[str, dict[str, Any]]) -> None:
    """migrate, worker and api run the same settings, including the API's bind inside Docker."""
    envs = [environment(services[name]) for name in ("migrate", "worker", "api")]
    assert envs[0] == envs[1] == envs[2]
    assert envs[0]["ZHIPING_API_HOST"] == "0.0.0.0"
    assert envs[0]["ZHIPING_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert {"ZHIPING_METRICS_ENABLED", "ZHIPING_METRICS_PORT"} <= set(envs[0])


def test_settings_accept_the_stack_environment(
    services: dict[str, dict[str, Any]],
    filled: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The example's values, once interpolated, are values ``Settings`` parses."""
    env = filled | {
        "ZHIPING_API_TOKENS": '{"t-ops": "ops"}',
        "ZHIPING_EVENT_SECRETS": '{"payment": "s-pay"}',
    }
    for name, value in environment(services["worker"]).items():
        monkeypatch.setenv(name, interpolate(value, env))
    settings = Settings(_env_file=None)
    assert settings.temporal_address == "temporal:7233"
    assert settings.api_tokens == {"t-ops": "ops"}
    assert settings.metrics_enabled is True
    assert settings.metrics_port == 9464
    assert settings.api_port == 8000


def test_interpolations_are_exactly_the_example(
    compose: dict[str, Any], example: dict[str, str]
) -> None:
    interpolated = {name for text in strings(compose) for name in variables(text)}
    assert interpolated - set(example) == set(), "interpolated but not in the example"
    assert set(example) - interpolated == set(), "in the example but never used"


def test_secrets_are_required_and_never_written(
    services: dict[str, dict[str, Any]], compose: dict[str, Any], example: dict[str, str]
) -> None:
    secret_values = [
        (f"{name}.{key}", value)
        for name, service in services.items()
        for key, value in environment(service).items()
        if _SECRET_NAME.search(key) or _URL_CREDENTIALS.search(value)
    ]
    assert secret_values
    for where, value in secret_values:
        assert _REQUIRED.search(value), f"{where} must come from a required ${{VAR:?…}}"
    # The required variables are exactly the example's empty ones: a fresh copy refuses to
    # start until each is filled in, and no secret has a default.
    required = {name for text in strings(compose) for name in _REQUIRED.findall(text)}
    assert required == {name for name, value in example.items() if not value}
    with pytest.raises(MissingVariableError):
        transform(compose, lambda text: interpolate(text, example))


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d}", env) == "x d  d"
    assert interpolate("$${SET} ${SET:+y} ${EMPTY:+y}", env) == "${SET} y "
    with pytest.raises(MissingVariableError):
        interpolate("${EMPTY:?no}", env)
    assert variables("$${A} ${B:-${} ${C:?m}") == {"B", "C"}


# --- images, health, replicas, start order ------------------------------------------------


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    project_version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"
    ]["version"]
    tags = {}
    for name, service in services.items():
        image = service.get("image", "")
        repository, _, tag = image.rpartition(":")
        assert repository and tag, f"{name}: image {image!r} has no tag"
        assert "/" not in tag and tag != "latest" and "$" not in image, f"{name}: {image!r}"
        assert re.fullmatch(r"\d+(\.\d+){1,2}", tag), f"{name}: pin a version, not {tag!r}"
        if "build" in service:
            assert tag == project_version, f"{name}: tag the built image {project_version}"
        tags[repository] = tag
    assert tags["temporalio/admin-tools"] == tags["temporalio/server"]


def test_dockerfile_is_pinned_and_unprivileged() -> None:
    lines = (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
    (base,) = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")


def test_long_running_services_have_health_checks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if one_shot(service):
            assert "healthcheck" not in service, name
            continue
        assert service.get("restart") == "unless-stopped", name
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    graph: dict[str, set[str]] = {}
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: give each dependency a condition"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            wanted = (
                "service_completed_successfully"
                if one_shot(services[target])
                else "service_healthy"
            )
            assert spec["condition"] == wanted, f"{name} -> {target}: {spec['condition']}"
        graph[name] = set(depends)
    order = list(TopologicalSorter(graph).static_order())  # raises on a cycle

    def before(name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(graph[name])
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(graph[current])
        return seen

    for app in ("worker", "api"):
        assert {"migrate", "temporal-setup", "app-db", "temporal"} <= before(app), app
    assert {"temporal-schema", "temporal-db"} <= before("temporal")
    assert before("migrate") == {"app-db"}
    assert order.index("migrate") < order.index("worker")


def test_worker_replicas_drain(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert worker["deploy"]["replicas"] > 1
    assert "container_name" not in worker  # a fixed name would allow one replica only
    assert duration(worker["stop_grace_period"]) > ACTIVITY_TIMEOUT
    assert worker["command"] == ["python", "-m", "worker"]


def test_commands(services: dict[str, dict[str, Any]]) -> None:
    assert services["migrate"]["command"] == ["zhiping", "db", "upgrade"]
    assert services["api"]["command"] == ["python", "-m", "zhiping.api"]


def test_search_attributes_match_visibility(services: dict[str, dict[str, Any]]) -> None:
    listed = environment(services["temporal-setup"])["SEARCH_ATTRIBUTES"].split()
    registered = dict(pair.split("=") for pair in listed)
    assert registered == {name: kind for name, (kind, _) in SEARCH_ATTRIBUTES.items()}


def test_mounted_files_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), f"{name} mounts missing {source}"


# --- the worker's health check ------------------------------------------------------------


def _worker_healthcheck() -> ModuleType:
    path = ROOT / "deploy" / "worker_healthcheck.py"
    spec = importlib.util.spec_from_file_location("worker_healthcheck", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_worker_health_is_a_recent_poll_from_this_container() -> None:
    polling = _worker_healthcheck().polling
    now = datetime(2024, 9, 1, 12, 0, tzinfo=UTC)

    def poller(identity: str, seconds_ago: int) -> PollerInfo:
        info = PollerInfo(identity=identity)
        info.last_access_time.FromDatetime(now - timedelta(seconds=seconds_ago))
        return info

    assert polling([poller("7@other", 1), poller("1@abc123", 30)], "abc123", now)
    assert not polling([poller("1@abc123", 600)], "abc123", now)  # stopped polling
    assert not polling([poller("1@xabc123", 1)], "abc123", now)
    assert not polling([], "abc123", now)
