"""The deployment files are right as far as a machine without a Docker engine can tell.

* docker-compose.yml, with its `${...}` filled from env.production.example, validates against the
  Compose Specification's JSON Schema and is wired as docs/PRODUCTION_DEPLOYMENT.md says: postgres with a
  pg_isready health check, a named volume and no published port; a one-shot `migrate` the other services
  wait for; `worker`, `queue-worker` and `api` after a healthy postgres and a completed migrate.
* Every environment name in the compose file and the env templates is a setting tg-parser reads, or one
  of the compose-only names the guide documents (POSTGRES_* for the postgres image, TG_PARSER_IMAGE).
* Every service's command is a real `tg-parser` command whose options parse.
* The Dockerfile builds in two stages, runs as a non-root user, stops with SIGTERM and checks /health;
  .dockerignore keeps secrets and local state out of the build context and lets in what the build needs.

tests/test_deploy_wheel.py runs what the image runs: the wheel built from that context, installed
outside the source tree.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import textwrap
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from tg_parser.cli.main import cli
from tg_parser.config import Settings, load_settings
from tg_parser.pipeline.run import parse_interval

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROD_ENV = ROOT / "env.production.example"
DEV_ENV = ROOT / ".env.example"
GUIDE = ROOT / "docs" / "PRODUCTION_DEPLOYMENT.md"
# CI runs from a clone with shared/ beside it.
COMPOSE_SCHEMA = ROOT.parent / "shared" / "vendor" / "compose-spec" / "compose-spec.json"

SETTINGS = {name.upper() for name in Settings.model_fields}
POSTGRES_IMAGE_VARS = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
# Names in .env that tg-parser does not read: the postgres image's, and compose's own.
COMPOSE_ONLY = POSTGRES_IMAGE_VARS | {"TG_PARSER_IMAGE"}
APP_SERVICES = ("migrate", "worker", "queue-worker", "api")
SERVICES = ("postgres", *APP_SERVICES)
# A value for the one required variable the template leaves empty.
TEST_PASSWORD = "s3cret-for-tests"


# --- env files -----------------------------------------------------------------------------------------

_ENV_LINE = re.compile(r"^(?P<commented>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


def env_lines(path: Path) -> list[tuple[int, str, str | None]]:
    """(line number, NAME, value) of `NAME=value` lines; value None for a commented `# NAME=...`."""
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = _ENV_LINE.match(line.strip())
        if match:
            found.append((number, match["name"], None if match["commented"] else match["value"]))
    return found


def dotenv_values(path: Path) -> dict[str, str]:
    """The active assignments, unquoted as compose and python-dotenv both read them."""
    values = {}
    for _, name, value in env_lines(path):
        if value is None:
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def production_env(**overrides: str) -> dict[str, str]:
    """What an operator's .env holds after copying env.production.example and setting the password."""
    values = dotenv_values(PROD_ENV)
    values["POSTGRES_PASSWORD"] = TEST_PASSWORD
    values.update(overrides)
    return values


# --- compose interpolation -----------------------------------------------------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    pass


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's substitution: $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error},
    ${VAR?error}, ${VAR:+alt}, ${VAR+alt}; `$$` is a literal `$`."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        present, value = name in env, env.get(name, "")
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if present else arg
        if (op == ":?" and not value) or (op == "?" and not present):
            raise InterpolationError(f"{name}: {arg}")
        if op == ":+":
            return arg if value else ""
        if op == "+":
            return arg if present else ""
        return value

    return _VARIABLE.sub(substitute, text)


def referenced_variables(text: str) -> set[str]:
    return {m["braced"] or m["bare"] for m in _VARIABLE.finditer(text) if not m["escaped"]}


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _map_strings(node: Any, change: Callable[[str], str]) -> Any:
    if isinstance(node, str):
        return change(node)
    if isinstance(node, dict):
        return {key: _map_strings(value, change) for key, value in node.items()}
    if isinstance(node, list):
        return [_map_strings(value, change) for value in node]
    return node


def raw_compose() -> dict[str, Any]:
    """docker-compose.yml as YAML (anchors and merge keys resolved), before interpolation."""
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as `docker compose config` sees it with this .env (default: the template)."""
    env = production_env() if env is None else env
    return _map_strings(raw_compose(), lambda text: interpolate(text, env))


def container_environment(service: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A service's environment: its env_file (.env) overlaid by its `environment:` block."""
    env = production_env() if env is None else env
    spec = load_compose(env)["services"][service]
    result: dict[str, str] = {}
    if spec.get("env_file"):
        assert spec["env_file"] == ".env", f"{service}: env_file is {spec['env_file']!r}"
        result.update(env)
    environment = spec.get("environment") or {}
    assert isinstance(environment, dict), f"{service}: write environment as a mapping"
    result.update({name: str(value) for name, value in environment.items()})
    return result


def command_args(service: str) -> list[str]:
    """The words after `tg-parser` in a service's command."""
    command = load_compose()["services"][service]["command"]
    assert isinstance(command, list), f"{service}: write the command in exec form (a list)"
    assert command[0] == "tg-parser", f"{service}: the command must be a tg-parser command: {command}"
    return command[1:]


# --- the compose file ----------------------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification() -> None:
    if not COMPOSE_SCHEMA.is_file():
        pytest.skip(f"the Compose Specification schema is not at {COMPOSE_SCHEMA} (shared/ beside the repo)")
    import jsonschema

    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(load_compose()), key=lambda e: list(e.path))
    assert [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors] == []
    # A wrong key is caught (the schema forbids what it does not know).
    broken = load_compose()
    broken["services"]["api"]["healthcheck"]["intervall"] = "5s"
    assert list(validator.iter_errors(broken))


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${MISSING:-d} ${EMPTY-d} $SET $$HOME", env) == "x d d  x $HOME"
    assert interpolate("${SET:+alt}${EMPTY:+alt}", env) == "alt"
    with pytest.raises(InterpolationError, match="set it"):
        interpolate("${EMPTY:?set it}", env)


def test_the_stack_does_not_start_without_a_postgres_password() -> None:
    with pytest.raises(InterpolationError, match=r"POSTGRES_PASSWORD: set POSTGRES_PASSWORD in \.env"):
        load_compose(production_env(POSTGRES_PASSWORD=""))


def test_services_and_their_order() -> None:
    services = load_compose()["services"]
    assert sorted(services) == sorted(SERVICES)
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("worker", "queue-worker", "api"):
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
    for name, spec in services.items():
        for dependency, rule in (spec.get("depends_on") or {}).items():
            if rule["condition"] == "service_healthy":
                assert "test" in services[dependency].get("healthcheck", {}), f"{name} waits on {dependency}"
    assert services["migrate"]["restart"] == "no", "a one-shot service must not be restarted"
    assert services["migrate"]["healthcheck"] == {"disable": True}
    for name in ("postgres", "worker", "queue-worker", "api"):
        assert services[name]["restart"] == "unless-stopped", name


def test_postgres_service() -> None:
    compose = load_compose()
    postgres = compose["services"]["postgres"]
    assert postgres["image"] == "postgres:16-alpine"
    assert "ports" not in postgres, "PostgreSQL must not be published unless asked (see the guide)"
    test = postgres["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and test[1].startswith("pg_isready ")
    # $$ reaches the container as $, where the image's environment has the values.
    assert '"${POSTGRES_USER}"' in test[1] and '"${POSTGRES_DB}"' in test[1]
    volume, _, target = postgres["volumes"][0].partition(":")
    assert target == "/var/lib/postgresql/data" and volume in compose["volumes"], "a named volume"
    assert set(postgres["environment"]) == POSTGRES_IMAGE_VARS
    assert postgres["environment"]["POSTGRES_PASSWORD"] == TEST_PASSWORD
    assert "env_file" not in postgres, "the database container gets no application secrets"


def test_app_services_share_image_configuration_and_hardening() -> None:
    services = load_compose()["services"]
    for name in APP_SERVICES:
        spec = services[name]
        assert spec["image"] == "tg-parser:latest", name
        assert spec["build"] == {"context": "."}, name
        assert (ROOT / spec["build"]["context"] / "Dockerfile").is_file()
        assert spec["env_file"] == ".env", name
        assert spec["stop_signal"] == "SIGTERM", name
        assert spec["init"] is True, name
        assert spec["cap_drop"] == ["ALL"] and spec["security_opt"] == ["no-new-privileges:true"], name
    assert load_compose(production_env(TG_PARSER_IMAGE="tg-parser:0.2.0"))["services"]["api"]["image"] == (
        "tg-parser:0.2.0"
    )


def test_volumes_for_the_session_and_the_exports() -> None:
    compose = load_compose()
    services = compose["services"]
    declared = set(compose["volumes"])
    assert declared == {"postgres-data", "telegram-session", "exports"}
    for name, spec in services.items():
        for entry in spec.get("volumes", []):
            source = entry.split(":")[0]
            assert source in declared, f"{name} mounts {source!r}, which is not a declared volume"
    for name in ("worker", "queue-worker"):
        assert "exports:/app/out" in services[name]["volumes"], name
    for name in ("worker", "queue-worker", "api"):
        assert "telegram-session:/app/session" in services[name]["volumes"], name
    # The two writers of exports never share a folder (an export replaces files by name).
    worker_out = command_args("worker")[command_args("worker").index("--out") + 1]
    queue_out = command_args("queue-worker")[command_args("queue-worker").index("--out") + 1]
    assert worker_out == "/app/out" and queue_out.startswith("/app/out/") and queue_out != worker_out
    # The template's session file lives in the session volume.
    session_file = next(v for _, n, v in _commented_values(PROD_ENV) if n == "TELEGRAM_SESSION_FILE")
    assert session_file.startswith("/app/session/")


def _commented_values(path: Path) -> list[tuple[int, str, str]]:
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = re.match(r"^#\s*(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>\S*)$", line.strip())
        if match:
            found.append((number, match["name"], match["value"]))
    return found


def test_every_service_rotates_its_logs() -> None:
    for name, spec in load_compose()["services"].items():
        logging = spec["logging"]
        assert logging["driver"] == "json-file", name
        assert logging["options"]["max-size"] and int(logging["options"]["max-file"]) >= 2, name


def test_api_service_publishes_on_loopback_and_checks_health() -> None:
    api = load_compose()["services"]["api"]
    assert api["ports"] == ["127.0.0.1:8000:8000"], "the API is published on the host's loopback only"
    args = command_args("api")
    assert args[args.index("--host") + 1] == "0.0.0.0", "inside the container serve must listen on all"
    assert args[args.index("--port") + 1] == "8000"
    test = api["healthcheck"]["test"]
    assert test[0] == "CMD" and "http://127.0.0.1:8000/health" in " ".join(test)
    assert test[1:] == dockerfile_healthcheck(), "compose and the image check the API the same way"


# --- environment names ---------------------------------------------------------------------------------


def test_compose_environment_names_are_read_by_the_app_or_the_postgres_image() -> None:
    services = raw_compose()["services"]
    for name in APP_SERVICES:
        unknown = sorted(set(services[name].get("environment") or {}) - SETTINGS)
        assert unknown == [], f"{name} sets variables tg-parser does not read"
    assert set(services["postgres"]["environment"]) <= POSTGRES_IMAGE_VARS


def test_compose_variables_are_settings_or_documented_and_in_the_template() -> None:
    used = set().union(*(referenced_variables(text) for text in _strings(raw_compose())))
    # `$${POSTGRES_USER}` in the health check is the container's variable, not compose's.
    assert used, "docker-compose.yml uses no ${...}?"
    assert sorted(used - SETTINGS - COMPOSE_ONLY) == []
    template = {name for _, name, _ in env_lines(PROD_ENV)}
    assert sorted(used - template) == [], "every ${...} of docker-compose.yml is in env.production.example"


@pytest.mark.parametrize("path", [PROD_ENV, DEV_ENV], ids=lambda p: p.name)
def test_env_template_names_are_read_by_the_app(path: Path) -> None:
    names = [name for _, name, _ in env_lines(path)]
    assert sorted(set(names) - SETTINGS - COMPOSE_ONLY) == [], f"{path.name} lists names nothing reads"
    assert len(names) == len(set(names)), f"{path.name} lists a name twice"


def test_compose_only_names_are_documented_in_the_guide() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    rows = set(re.findall(r"^\s*\|\s*`([A-Z][A-Z0-9_]*)`\s*\|", guide, re.M))
    assert sorted(COMPOSE_ONLY - rows) == [], "docs/PRODUCTION_DEPLOYMENT.md must have a row for each"
    assert sorted((rows - SETTINGS) - COMPOSE_ONLY) == [], "the guide documents names nothing reads"


def test_production_template_lines_read_the_same_in_compose_and_in_python() -> None:
    """No trailing comments (compose and python-dotenv disagree on some), no unbalanced quotes."""
    for number, name, value in env_lines(PROD_ENV):
        if value is None:
            continue
        assert " #" not in value and not value.startswith("#"), f"line {number}: {name} has a comment"
        assert value.count('"') in (0, 2) and value.count("'") in (0, 2), f"line {number}: quotes"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_each_service_environment_is_valid_postgres_settings(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in container_environment(service).items():
        monkeypatch.setenv(name, value)
    settings = load_settings(_env_file=None)
    assert settings.db_type == "postgres"
    assert (settings.db_host, settings.db_port) == ("postgres", 5432)
    assert (settings.db_name, settings.db_user) == ("tg_parser", "tg_parser")
    assert settings.db_password is not None and settings.db_password.get_secret_value() == TEST_PASSWORD
    assert settings.database_url is None, "the template must not set a URL that would win over DB_*"
    assert settings.log_format == "json"
    assert settings.api_require_keys and settings.api_probes_open == "loopback"
    # Empty template values mean "unset", not "".
    assert settings.telegram_api_id is None and settings.telegram_session is None
    assert settings.openai_api_key is None


def test_dev_template_works_as_the_compose_env_file_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator who copied .env.example instead still gets PostgreSQL in the containers."""
    env = {**dotenv_values(DEV_ENV), "POSTGRES_PASSWORD": TEST_PASSWORD}
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in container_environment("worker", env).items():
        monkeypatch.setenv(name, value)
    settings = load_settings(_env_file=None)
    assert (settings.db_type, settings.db_host) == ("postgres", "postgres")


# --- commands --------------------------------------------------------------------------------------------


def resolve_command(args: list[str]) -> tuple[click.Command, list[str], list[str]]:
    """(leaf command, its path of names, its own arguments) for `tg-parser <args>`."""
    command: click.Command = cli
    path: list[str] = []
    rest = list(args)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(click.Context(command), rest[0])
        assert sub is not None, f"tg-parser {' '.join(path)} has no command {rest[0]!r}"
        command, path = sub, [*path, rest.pop(0)]
    assert not isinstance(command, click.Group), f"tg-parser {' '.join(path)} needs a sub-command"
    return command, path, rest


def service_commands() -> dict[str, list[str]]:
    """Every tg-parser command the compose file runs: services and their health checks."""
    compose = load_compose()
    commands = {name: command_args(name) for name in APP_SERVICES}
    for name in APP_SERVICES:
        test = compose["services"][name].get("healthcheck", {}).get("test")
        if test and test[1] == "tg-parser":
            commands[f"{name} healthcheck"] = test[2:]
    return commands


@pytest.mark.parametrize("name", sorted(service_commands()))
def test_service_commands_are_real_commands_whose_options_parse(name: str) -> None:
    args = service_commands()[name]
    command, path, own = resolve_command(args)
    ctx = command.make_context(" ".join(["tg-parser", *path]), list(own))  # converts every option
    if ctx.params.get("every"):
        assert parse_interval(ctx.params["every"]) == 15 * 60
    result = CliRunner().invoke(cli, [*args, "--help"], prog_name="tg-parser")
    assert result.exit_code == 0, result.output
    assert "Usage: tg-parser " + " ".join(path) in result.output


def test_the_services_run_what_the_guide_says() -> None:
    assert command_args("migrate") == ["db", "upgrade"]
    assert command_args("worker")[:4] == ["run", "--all", "--every", "15m"]
    assert command_args("queue-worker")[0] == "worker"
    assert command_args("api")[0] == "serve"
    assert service_commands()["worker healthcheck"] == ["health"]


# --- Dockerfile ------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, rest = text.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def dockerfile_stages() -> list[tuple[str, list[tuple[str, str]]]]:
    """(FROM arguments, the stage's instructions)."""
    stages: list[tuple[str, list[tuple[str, str]]]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            stages.append((rest, []))
        elif stages:
            stages[-1][1].append((keyword, rest))
    return stages


def _exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def dockerfile_healthcheck() -> list[str]:
    """The HEALTHCHECK's command (after CMD)."""
    final = dockerfile_stages()[-1][1]
    (rest,) = [rest for keyword, rest in final if keyword == "HEALTHCHECK"]
    cmd = rest[rest.index("CMD ") + 4 :]
    return _exec_form(cmd)


def build_stage_copies() -> list[str]:
    """The context paths the build stage copies (COPY without --from)."""
    build = dockerfile_stages()[0][1]
    sources: list[str] = []
    for keyword, rest in build:
        if keyword == "COPY" and "--from" not in rest:
            words = shlex.split(rest)
            sources.extend(words[:-1])
    return sources


def build_stage_runs() -> list[str]:
    return [rest for keyword, rest in dockerfile_stages()[0][1] if keyword == "RUN"]


WHEEL_COMMAND = "python -m pip wheel . -w /dist --no-deps"


def test_dockerfile_has_a_build_and_a_slim_runtime_stage() -> None:
    stages = dockerfile_stages()
    assert len(stages) == 2
    (build_from, build), (runtime_from, runtime) = stages
    assert build_from.endswith(" AS build") and runtime_from.endswith(" AS runtime")
    for image in (build_from, runtime_from):
        assert re.match(r"python:\$\{PYTHON_VERSION\}-slim", image), image
    arg = next(rest for keyword, rest in dockerfile_instructions() if keyword == "ARG")
    assert re.fullmatch(r"PYTHON_VERSION=3\.1[1-9]", arg), "a Python the package supports (>= 3.11)"
    build_text = " ".join(rest for _, rest in build)
    assert "gcc" in build_text, "the build stage installs the C compiler for the extensions"
    runtime_text = " ".join(rest for _, rest in runtime)
    assert "gcc" not in runtime_text and "apt-get install" not in runtime_text, "no compiler at run time"
    assert WHEEL_COMMAND in build_stage_runs(), "tests/test_deploy_wheel.py runs this same command"
    assert any("import tg_parser.transfer._jsonb" in r for r in build_stage_runs())
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv"], "only the built environment reaches the runtime"


def test_dockerfile_runs_as_a_non_root_user_that_owns_its_folders() -> None:
    runtime = dockerfile_stages()[-1][1]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users == ["10001:10001"]
    text = " ".join(rest for _, rest in runtime)
    assert "--uid 10001" in text and "--gid 10001" in text
    assert "chown -R tgparser:tgparser /app" in text
    workdir = [rest for keyword, rest in runtime if keyword == "WORKDIR"]
    assert workdir == ["/app"]
    # The compose volumes' mount points exist in the image, owned by the user (a new named volume
    # takes the ownership of the folder it is mounted on).
    for folder in ("/app/out", "/app/session", "/app/data"):
        assert folder in text


def test_dockerfile_stops_with_sigterm_and_checks_health() -> None:
    runtime = dict(dockerfile_stages()[-1][1])
    assert runtime["STOPSIGNAL"] == "SIGTERM"
    healthcheck = runtime["HEALTHCHECK"]
    assert re.search(r"--interval=\d+s --timeout=\d+s --start-period=\d+s --retries=\d+ ", healthcheck)
    probe = dockerfile_healthcheck()
    assert probe[:2] == ["python", "-c"] and "http://127.0.0.1:8000/health" in probe[2]
    assert runtime["EXPOSE"] == "8000"
    cmd = _exec_form(runtime["CMD"])
    assert cmd == ["tg-parser", "serve", "--host", "0.0.0.0", "--port", "8000"]
    command, path, own = resolve_command(cmd[1:])
    command.make_context("tg-parser " + " ".join(path), own)
    assert "ENTRYPOINT" not in runtime, "compose commands start with tg-parser"


def test_dockerfile_copies_everything_the_wheel_is_built_from() -> None:
    """The package's build configuration names its inputs; each is copied and in the context."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {"pyproject.toml", project["project"]["readme"], wheel["hooks"]["custom"]["path"]}
    needed |= set(wheel["packages"]) | set(wheel["force-include"])
    copied = set(build_stage_copies())
    assert sorted(needed - copied) == [], "the build stage does not copy these"
    for path in copied:
        assert (ROOT / path).exists(), f"COPY {path}: no such file in the repository"
        assert not docker_excluded(path, dockerignore_patterns()), f"{path} is excluded by .dockerignore"


# --- .dockerignore ---------------------------------------------------------------------------------------


def dockerignore_patterns() -> list[str]:
    patterns = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append(line)
    return patterns


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's matcher (Go's filepath.Match plus `**`) on slash-separated paths from the context root."""
    out = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]"
            i = end
        elif char == "\\" and i + 1 < len(pattern):
            out += re.escape(pattern[i + 1])
            i += 1
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out + r"\Z")


def docker_excluded(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves `path` out: the last pattern matching the path or one of its
    parent folders decides; `!pattern` lets it back in."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = re.sub(r"/+", "/", pattern.strip().lstrip("/")).rstrip("/")
        regex = _pattern_regex(pattern)
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def context_files() -> list[str]:
    """The repository's files (tracked and untracked, not ignored by git) that enter the build context."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    patterns = dockerignore_patterns()
    return sorted(p for p in listed if (ROOT / p).is_file() and not docker_excluded(p, patterns))


def test_the_dockerignore_matcher_follows_docker_rules() -> None:
    patterns = ["*", "!tg_parser", "**/__pycache__", "!tg_parser/keep/__pycache__"]
    assert docker_excluded("README.md", patterns)
    assert docker_excluded("docs/USER_GUIDE.md", patterns)
    assert not docker_excluded("tg_parser/cli/main.py", patterns)
    assert docker_excluded("tg_parser/cli/__pycache__/main.cpython-311.pyc", patterns)
    assert not docker_excluded("tg_parser/keep/__pycache__/x.pyc", patterns)
    assert docker_excluded("a/b.so", ["*.so"]) is False, "* does not cross folders"
    assert docker_excluded("a/b.so", ["**/*.so"]) and docker_excluded("b.so", ["**/*.so"])
    assert docker_excluded("data/x", ["/data/"])


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    patterns = dockerignore_patterns()
    for path in (
        ".env",
        ".env.production",
        "env.production.example",
        ".git/config",
        ".venv/bin/python",
        "data/raw_storage.sqlite",
        "out/kb_entries.ndjson",
        "telegram.session",
        "tg_parser/anon.session",
        "tg_parser/transfer/_jsonb.cpython-311-x86_64-linux-gnu.so",
        "tg_parser/cli/__pycache__/main.cpython-311.pyc",
        "tests/test_docs.py",
        "dist/tg_parser-0.1.0-py3-none-any.whl",
    ):
        assert docker_excluded(path, patterns), f"{path} would be sent to the Docker daemon"


def test_dockerignore_lets_in_every_file_the_build_copies() -> None:
    inside = set(context_files())
    for source in build_stage_copies():
        tracked = subprocess.run(
            ["git", "ls-files", "--", source], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert tracked, f"COPY {source}: git tracks nothing there"
        missing = sorted(set(tracked) - inside)
        assert missing == [], f"the build context lacks files of {source}"
    assert not any(p.startswith(("tests/", "docs/", ".ci/")) for p in inside)


# --- the guide ----------------------------------------------------------------------------------------


def guide_text() -> str:
    return GUIDE.read_text(encoding="utf-8")


def guide_blocks(language: str) -> list[str]:
    """The fenced blocks of a language, also those indented inside list items (dedented)."""
    found = re.findall(rf"^( *)```{language}\n(.*?)^\1```", guide_text(), re.M | re.S)
    return [textwrap.dedent(block) for _, block in found]


# `docker compose` options that take a value (the value is not a service name).
_VALUE_OPTIONS = {
    "-e",
    "--env",
    "-v",
    "--volume",
    "-u",
    "--user",
    "-w",
    "--workdir",
    "--name",
    "--tail",
    "--scale",
}
_SHELL = re.compile(r"&&|\|\||[|;<>]|\s#")


def compose_invocations(text: str) -> list[tuple[str, list[str]]]:
    """(verb, the services it names) for every `docker compose VERB ...` in the text."""
    found = []
    for line in text.splitlines():
        for piece in _SHELL.split(line):
            for match in re.finditer(r"docker compose ([a-z]+)([^`]*)", piece):
                verb, words = match[1], match[2].split()
                services: list[str] = []
                skip = False
                for word in words:
                    if skip:
                        skip = False
                        continue
                    if word.startswith("-"):
                        skip = word in _VALUE_OPTIONS
                        continue
                    services.append(word.split(":")[0] if verb == "cp" else word)
                    if verb in ("run", "exec"):
                        break  # then the command
                if verb == "cp":
                    services = services[:1]
                found.append((verb, services))
    return found


def test_guide_names_only_services_and_volumes_that_exist() -> None:
    compose = load_compose()
    services, volumes = set(compose["services"]), set(compose["volumes"])
    text = guide_text()
    extra = {"caddy"}  # the reverse proxy the guide adds in an override file
    invocations = compose_invocations(text)
    assert ("run", ["worker"]) in invocations and ("exec", ["postgres"]) in invocations
    for verb, named in invocations:
        assert verb in {
            "build",
            "up",
            "ps",
            "logs",
            "run",
            "exec",
            "stop",
            "start",
            "restart",
            "cp",
            "version",
        }, verb
        for name in named:
            assert name in services | extra, f"the guide runs `docker compose {verb}` on {name!r}"
    for match in re.finditer(r"--scale ([a-z-]+)=", text):
        assert match[1] in services
    for match in re.finditer(r"`([a-z][a-z0-9-]*)` (?:volume|service)", text):
        assert match[1] in services | volumes | extra, f"the guide names {match[1]!r}"
    table = re.findall(r"^\| `([a-z][a-z0-9-]*)` \|", text, re.M)
    assert sorted(table) == sorted(services), "the guide's service table lists every service"
    for volume in volumes:
        assert f"`{volume}`" in text, f"the guide does not describe the {volume} volume"


def test_the_guide_scanner_reads_compose_commands() -> None:
    sample = (
        "`docker compose run --rm --no-deps -T -e DB_NAME=x worker tg-parser health`\n"
        "docker compose run --rm --no-deps -v /srv/a:/app/sqlite worker tg-parser db status\n"
        "docker compose stop worker queue-worker api\n"
        "docker compose exec -T postgres sh -c 'pg_dump' > backups/x.dump\n"
        "docker compose cp worker:/app/out ./kb\n"
        "docker compose up -d --scale queue-worker=3\n"
        "docker compose logs migrate && docker compose ps\n"
    )
    assert compose_invocations(sample) == [
        ("run", ["worker"]),
        ("run", ["worker"]),
        ("stop", ["worker", "queue-worker", "api"]),
        ("exec", ["postgres"]),
        ("cp", ["worker"]),
        ("up", []),
        ("logs", ["migrate"]),
        ("ps", []),
    ]


def test_guide_yaml_overrides_are_valid_compose() -> None:
    """Every compose snippet of the guide, merged over docker-compose.yml, is still valid."""
    blocks = [yaml.safe_load(block) for block in guide_blocks("yaml")]
    overrides = [b for b in blocks if isinstance(b, dict) and "services" in b]
    assert len(overrides) >= 6, "the guide shows compose override files"
    if not COMPOSE_SCHEMA.is_file():
        pytest.skip(f"the Compose Specification schema is not at {COMPOSE_SCHEMA}")
    import jsonschema

    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    for override in overrides:
        merged = _merge(load_compose(), _map_strings(override, lambda t: interpolate(t, production_env())))
        jsonschema.Draft7Validator(schema).validate(merged)
        for name, spec in override["services"].items():
            assert name in load_compose()["services"] or "image" in spec, (
                f"override adds {name} without image"
            )
            if "command" in spec:  # a changed command is still a real one
                assert spec["command"][0] == "tg-parser", spec["command"]
                command, path, own = resolve_command(spec["command"][1:])
                command.make_context("tg-parser " + " ".join(path), own)


def _merge(base: Any, extra: Any) -> Any:
    if isinstance(base, dict) and isinstance(extra, dict):
        merged = copy.deepcopy(base)
        for key, value in extra.items():
            merged[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(extra)


def test_guide_mentions_only_files_that_exist() -> None:
    """Repository files named in the guide exist (not the ones the operator creates or the tool writes)."""
    created = {"docker-compose.override.yml", "Caddyfile", ".env"}
    pattern = r"`((?:[\w.-]+/)*[\w.-]+\.(?:md|yml|example)|Dockerfile|\.dockerignore|(?:sql|migrations|tg_parser|docs|examples|scripts)/[\w./-]*)`"
    names = set(re.findall(pattern, guide_text()))
    assert {"docker-compose.yml", "env.production.example", "Dockerfile"} <= names
    for name in sorted(names - created):
        assert (ROOT / name).exists() or (GUIDE.parent / name).exists(), f"the guide mentions {name}"


def test_guide_is_linked_from_readme_user_guide_and_configuration() -> None:
    for doc, target in (
        (ROOT / "README.md", "docs/PRODUCTION_DEPLOYMENT.md"),
        (ROOT / "docs" / "USER_GUIDE.md", "PRODUCTION_DEPLOYMENT.md"),
        (ROOT / "docs" / "CONFIGURATION.md", "PRODUCTION_DEPLOYMENT.md"),
    ):
        assert f"]({target}" in doc.read_text(encoding="utf-8"), f"{doc.name} does not link the guide"


def test_ci_builds_the_wheel_once_and_hands_it_to_the_smoke_test() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    build = script.index('TG_PARSER_WHEEL="$(python tests/test_deploy_wheel.py --build ')
    assert script.index("export TG_PARSER_WHEEL") > build
    assert script.index("python -m pytest -q") > build, "the test run uses the wheel built before it"
