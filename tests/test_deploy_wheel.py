"""The package as the Docker image installs it, run from outside the source tree.

The Dockerfile's build stage copies a few paths of the build context (what .dockerignore lets in) and
runs `python -m pip wheel . -w /dist --no-deps`; the runtime gets that wheel installed into a virtual
environment. Here the same: the context's files are copied into an empty folder, the wheel is built
there with the same command, and installed (with its dependencies) into a fresh virtual environment in a
temporary folder, with no source tree on the path. Then, from an empty working directory:

* SQLite: `init`, `health`, an import, `run`, `api-keys create`, and `serve` answering /health (also
  the image's HEALTHCHECK command), /ready and an authenticated route;
* PostgreSQL: every compose service's command, with the environment compose gives it: `migrate`, then
  `api` (and its health check), a run requested through the API and executed by `queue-worker`, the
  scheduled `worker` through one cycle, both stopped with SIGTERM, the metrics the guide's alert rules
  use, and the guide's backup and restore drill.

A file missing from the package (SQL, migrations, prompts, schemas) fails here. .ci/run builds the
wheel once (`python tests/test_deploy_wheel.py --build DIR`) and hands it over in TG_PARSER_WHEEL;
without it the tests build their own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from test_deploy_compose import (
    APP_SERVICES,
    GUIDE,
    ROOT,
    WHEEL_COMMAND,
    build_stage_copies,
    command_args,
    container_environment,
    context_files,
    dockerfile_healthcheck,
    guide_blocks,
    load_compose,
)

# The module's venv fixture installs the wheel with pip (its own subprocess timeouts bound it); on a
# loaded machine that alone can pass the suite's 120 s per-test timeout, which would count against the
# first test that uses it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

WHEEL_ENV = "TG_PARSER_WHEEL"
EXAMPLE_EXPORT = ROOT / "examples" / "channel_export" / "result.json"
PG_HOST = os.environ.get("TG_PARSER_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TG_PARSER_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TG_PARSER_TEST_PG_USER", "postgres")
REQUIRE_PG = os.environ.get("TG_PARSER_REQUIRE_POSTGRES") == "1"


# --- the build stage, the install ------------------------------------------------------------------------


def build_wheel(dest: Path) -> Path:
    """Build the wheel as the Dockerfile's build stage does; returns its path."""
    source = dest / "context"
    copied = build_stage_copies()
    for relative in context_files():
        if any(relative == c or relative.startswith(c.rstrip("/") + "/") for c in copied):
            target = source / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / relative, target)
    dist = dest / "dist"
    words = WHEEL_COMMAND.split()
    assert words[0] == "python" and words[-3:] == ["-w", "/dist", "--no-deps"], WHEEL_COMMAND
    command = [sys.executable, *words[1:-2], str(dist), "--no-deps"]
    done = subprocess.run(command, cwd=source, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    (wheel,) = dist.glob("tg_parser-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get(WHEEL_ENV)
    if given:
        path = Path(given)
        assert path.is_file(), f"{WHEEL_ENV}={given} is not a file"
        return path
    return build_wheel(tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel and its dependencies (as the image's /opt/venv)."""
    root = tmp_path_factory.mktemp("install") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(
        [str(root / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, f"installing the wheel failed:\n{done.stdout}\n{done.stderr}"
    return root


def app_env(venv: Path, home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment: the venv first on PATH, nothing of the developer's (no PYTHONPATH, no DB_*)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": str(home),
    }
    env.update(extra or {})
    return env


def tgp(
    venv: Path, args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "tg-parser"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, (
        f"{' '.join(map(str, done.args))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    return done


# --- HTTP and long-running processes -----------------------------------------------------------------------

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(
    url: str, *, key: str | None = None, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with _NO_PROXY.open(request, timeout=15) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """A long-running tg-parser process with its output in files."""

    def __init__(self, venv: Path, args: list[str], cwd: Path, env: dict[str, str], name: str) -> None:
        self.out = cwd / f"{name}.stdout"
        self.err = cwd / f"{name}.stderr"
        self.args = args
        with self.out.open("wb") as stdout, self.err.open("wb") as stderr:
            self.process = subprocess.Popen(
                [str(venv / "bin" / "tg-parser"), *args], cwd=cwd, env=env, stdout=stdout, stderr=stderr
            )

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def wait_for(self, check: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            assert self.process.poll() is None, f"tg-parser {' '.join(self.args)} exited:\n{self.output()}"
            time.sleep(0.2)
        raise AssertionError(
            f"tg-parser {' '.join(self.args)}: no {what} after {timeout} s:\n{self.output()}"
        )

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, as `docker stop` sends it (the image's STOPSIGNAL); the exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"tg-parser {' '.join(self.args)} ignored SIGTERM:\n{self.output()}"
            ) from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextmanager
def running(venv: Path, args: list[str], cwd: Path, env: dict[str, str], name: str) -> Iterator[Service]:
    service = Service(venv, args, cwd, env, name)
    try:
        yield service
    finally:
        service.kill()


def wait_http_ok(service: Service, url: str) -> None:
    def answers() -> bool:
        try:
            return http(url)[0] == 200
        except OSError:
            return False

    service.wait_for(answers, f"answer from {url}")


def assert_graceful_stop(serve: Service) -> None:
    """uvicorn shuts down gracefully on SIGTERM, then re-raises it (exit status 143 in a container)."""
    assert serve.terminate() in (0, -signal.SIGTERM), serve.output()
    assert "Application shutdown complete." in serve.output()


def run_probe(command: list[str], port: int, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A health check command as the container runs it, pointed at this test's port."""
    command = [word.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for word in command]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


# --- the wheel -----------------------------------------------------------------------------------------------


def _tracked(folder: str) -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--", folder], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert listed, f"git tracks nothing in {folder}"
    return listed


def _have_compiler() -> bool:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(compiler) is not None


def test_wheel_carries_code_sql_migrations_prompts_schemas_and_extensions(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [p for p in _tracked("tg_parser") if p not in names]
    missing += [p for f in ("sql", "migrations") for p in _tracked(f) if f"tg_parser/_data/{p}" not in names]
    assert missing == [], "files missing from the wheel"
    for folder in ("tg_parser/llm/prompts/", "tg_parser/export/schemas/", "tg_parser/_data/sql/"):
        assert any(n.startswith(folder) for n in names), folder
    assert not any(n.startswith(("tests/", "docs/", "examples/")) or "__pycache__" in n for n in names)
    if _have_compiler():
        for extension in ("_jsonb",):
            assert any(re.fullmatch(rf"tg_parser/transfer/{extension}\..+\.so", n) for n in names), extension


def test_installed_package_is_complete_outside_the_source_tree(venv: Path, tmp_path: Path) -> None:
    prompts = sorted({p.name.split(".")[0] for p in (ROOT / "tg_parser" / "llm" / "prompts").glob("*.md")})
    schemas = sorted(
        p.name.removesuffix(".schema.json")
        for p in (ROOT / "tg_parser" / "export" / "schemas").glob("*.json")
    )
    script = f"""
import json, tg_parser
from tg_parser.db.resources import sql_root, migrations_root
from tg_parser.llm.prompting import load_prompt
from tg_parser.export.validation import load_schema
for name in {prompts!r}:
    assert load_prompt(name).system, name
for name in {schemas!r}:
    assert load_schema(name), name
extensions = []
for name in ("_jsonb",):
    try:
        __import__("tg_parser.transfer." + name)
        extensions.append(name)
    except ImportError:
        pass
print(json.dumps({{"package": tg_parser.__file__, "sql": str(sql_root()), "migrations": str(migrations_root()),
                  "sql_files": len(list(sql_root().rglob("*.sql"))), "extensions": extensions}}))
"""
    done = ok(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", script],
            cwd=tmp_path,
            env=app_env(venv, tmp_path / "home"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    )
    found = json.loads(done.stdout)
    for key in ("package", "sql", "migrations"):
        assert Path(found[key]).is_relative_to(venv), f"{key} comes from {found[key]}, not the install"
    assert found["sql"].endswith("tg_parser/_data/sql")
    assert found["sql_files"] == len([p for p in _tracked("sql") if p.endswith(".sql")])
    if _have_compiler():
        assert found["extensions"] == ["_jsonb"]


def test_installed_app_initialises_and_serves_on_sqlite(venv: Path, tmp_path: Path) -> None:
    work = tmp_path / "app"
    work.mkdir()
    env = app_env(venv, tmp_path / "home")
    assert ok(tgp(venv, ["version"], work, env)).stdout.startswith("tg-parser ")
    assert "Ready: SQLite" in ok(tgp(venv, ["init"], work, env)).stdout
    assert "healthy" in ok(tgp(venv, ["health"], work, env)).stdout
    ok(tgp(venv, ["ingest", "--from-export", str(EXAMPLE_EXPORT)], work, env))
    ok(tgp(venv, ["run", "--out", "out"], work, env))
    entries = (work / "out" / "kb_entries.ndjson").read_bytes().splitlines()
    assert entries and all(json.loads(line)["id"] for line in entries)
    assert (work / "out" / "topics.json").is_file()
    key = ok(tgp(venv, ["api-keys", "create", "smoke", "--scope", "read"], work, env)).stdout.strip()
    assert key.startswith("tgp_")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(venv, ["serve", "--port", str(port)], work, env, "serve") as serve:
        wait_http_ok(serve, f"{base}/health")
        probe = run_probe(dockerfile_healthcheck(), port, env)
        assert probe.returncode == 0, f"the image's HEALTHCHECK fails: {probe.stderr}"
        status, _, body = http(f"{base}/ready")
        assert status == 200 and json.loads(body)["ready"] is True, body
        assert http(f"{base}/api/v1/sources")[0] == 401, "keys are required by default"
        status, _, body = http(f"{base}/api/v1/sources", key=key)
        assert status == 200 and [s["source_id"] for s in json.loads(body)["items"]] == ["export-1500000001"]
        assert_graceful_stop(serve)


# --- the compose services on PostgreSQL --------------------------------------------------------------------


@pytest.fixture
def pg_database() -> Iterator[str]:
    import psycopg

    try:
        admin = psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)
    except psycopg.Error as exc:
        message = f"PostgreSQL at {PG_HOST}:{PG_PORT} is not reachable: {str(exc).strip().splitlines()[0]}"
        if REQUIRE_PG:
            pytest.fail(message + " (TG_PARSER_REQUIRE_POSTGRES=1 forbids skipping)")
        pytest.skip(message)
    name = f"tgp_deploy_{os.getpid()}"
    with admin:
        for db in (name, f"{name}_restore"):
            admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield name
        finally:
            for db in (name, f"{name}_restore"):
                admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def service_env(venv: Path, home: Path, service: str, dbname: str) -> dict[str, str]:
    """The environment compose gives `service`, pointed at this test's PostgreSQL instead of `postgres`."""
    environment = container_environment(service)
    assert environment["DB_HOST"] == "postgres"
    environment.update(DB_HOST=PG_HOST, DB_PORT=str(PG_PORT), DB_USER=PG_USER, DB_NAME=dbname, DB_PASSWORD="")
    return app_env(venv, home, environment)


def local_args(args: list[str], out: Path, port: int) -> list[str]:
    """A service's command with the container's paths and port replaced by this test's."""
    return [
        str(out) + arg.removeprefix("/app/out")
        if arg.startswith("/app/out")
        else str(port)
        if arg == "8000"
        else arg
        for arg in args
    ]


def guide_metric_names() -> set[str]:
    rules = [block for block in guide_blocks("yaml") if block.lstrip().startswith("groups:")]
    assert rules, "the guide shows alert rules"
    return set(re.findall(r"\btg_parser_[a-z_]+", "".join(rules)))


def test_compose_services_run_from_the_wheel_on_postgres(
    venv: Path, tmp_path: Path, pg_database: str
) -> None:
    work, out, home = tmp_path / "app", tmp_path / "out", tmp_path / "home"
    work.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    envs = {name: service_env(venv, home, name, pg_database) for name in APP_SERVICES}
    compose = load_compose()

    # Every command the compose file runs is a command of the installed tool.
    for name in APP_SERVICES:
        ok(tgp(venv, [*command_args(name), "--help"], work, envs[name]))

    # migrate: the schema, then nothing to do.
    assert "applied" in ok(tgp(venv, command_args("migrate"), work, envs["migrate"])).stdout
    assert "up to date" in ok(tgp(venv, command_args("migrate"), work, envs["migrate"])).stdout
    for name in ("worker", "queue-worker"):
        assert compose["services"][name]["healthcheck"]["test"] == ["CMD", "tg-parser", "health"]
        assert "healthy" in ok(tgp(venv, ["health"], work, envs[name])).stdout
    ok(tgp(venv, ["ingest", "--from-export", str(EXAMPLE_EXPORT)], work, envs["worker"]))
    key = ok(tgp(venv, ["api-keys", "create", "ops", "--scope", "write"], work, envs["api"])).stdout.strip()

    with running(venv, local_args(command_args("api"), out, port), work, envs["api"], "api") as api:
        wait_http_ok(api, f"{base}/health")
        probe = run_probe(compose["services"]["api"]["healthcheck"]["test"][1:], port, envs["api"])
        assert probe.returncode == 0, f"the api service's health check fails: {probe.stderr}"
        status, _, body = http(f"{base}/ready")
        ready = json.loads(body)
        assert status == 200 and ready["ready"] and ready["database"] == "postgres", body
        assert ready["pool"]["pool_max"] == 10

        status, _, body = http(
            f"{base}/api/v1/runs",
            key=key,
            body={"steps": ["process", "topicize", "export"], "options": {"processor": "extractive"}},
        )
        assert status == 202, body
        run_id = json.loads(body)["run"]["run_id"]

        # queue-worker executes it, and stops on SIGTERM.
        queue_args = local_args(command_args("queue-worker"), out, port)
        with running(venv, queue_args, work, envs["queue-worker"], "queue-worker") as queue:

            def finished() -> bool:
                return json.loads(http(f"{base}/api/v1/runs/{run_id}", key=key)[2])["run"]["status"] in (
                    "succeeded",
                    "failed",
                )

            queue.wait_for(finished, f"end of run {run_id}", timeout=120)
            run = json.loads(http(f"{base}/api/v1/runs/{run_id}", key=key)[2])["run"]
            assert run["status"] == "succeeded", run
            assert (out / "api-runs" / "kb_entries.ndjson").stat().st_size > 0
            assert queue.terminate() == 0, queue.output()
            assert "Stopped." in queue.output()

        # worker: one scheduled cycle, then the pause, which SIGTERM ends at once.
        worker_args = local_args(command_args("worker"), out, port)
        with running(venv, worker_args, work, envs["worker"], "worker") as worker:
            worker.wait_for(
                lambda: "Next cycle in 15m." in worker.output(), "pause after the cycle", timeout=120
            )
            assert worker.terminate() == 0, worker.output()
            assert "Stopped." in worker.output()
        assert (out / "kb_entries.ndjson").stat().st_size > 0

        # The metrics the guide's alert rules use exist.
        status, _, body = http(f"{base}/metrics")
        assert status == 200
        text = body.decode()
        exposed = set(re.findall(r"^# TYPE (tg_parser_\w+)", text, re.M))  # also families without samples
        exposed |= set(re.findall(r"^(tg_parser_\w+)[{ ]", text, re.M))
        assert sorted(guide_metric_names() - exposed) == [], "the guide alerts on metrics that do not exist"

        assert_graceful_stop(api)

    # The guide's restore drill: dump, restore into a scratch database, health and checksums equal.
    if not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        if REQUIRE_PG:
            pytest.fail("pg_dump/pg_restore are not installed")
        pytest.skip("pg_dump/pg_restore are not installed")
    assert 'pg_dump -U "$POSTGRES_USER" -d "$POSTGRES_DB" -Fc' in GUIDE.read_text(encoding="utf-8")
    dump = tmp_path / "drill.dump"
    connection = ["-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER]
    with dump.open("wb") as handle:
        subprocess.run(
            ["pg_dump", *connection, "-d", pg_database, "-Fc"], stdout=handle, check=True, timeout=120
        )
    restored = f"{pg_database}_restore"
    subprocess.run(["createdb", *connection, restored], check=True, timeout=60)
    with dump.open("rb") as handle:
        subprocess.run(
            ["pg_restore", *connection, "-d", restored, "--no-owner", "--exit-on-error"],
            stdin=handle,
            check=True,
            timeout=120,
        )
    restored_env = {**envs["worker"], "DB_NAME": restored}
    ok(tgp(venv, ["health"], work, restored_env))
    live = ok(tgp(venv, ["db", "checksum", "--silent"], work, envs["worker"])).stdout.splitlines()[1:]
    copy = ok(tgp(venv, ["db", "checksum", "--silent"], work, restored_env)).stdout.splitlines()[1:]
    assert live == copy and any(" 17 " in line for line in live), "the restored database differs"


if __name__ == "__main__":
    # .ci/run: python tests/test_deploy_wheel.py --build DIR  → prints the wheel's path
    if len(sys.argv) != 3 or sys.argv[1] != "--build":
        sys.exit("usage: python tests/test_deploy_wheel.py --build DIR")
    destination = Path(sys.argv[2])
    destination.mkdir(parents=True, exist_ok=True)
    print(build_wheel(destination))
