"""The shape of the package, checked on its source: one door to the database.

Only `tg_parser/db/` touches a driver, a pool, a pinned session or a raw connection; the rest of the
package reaches data through `Database` methods and, for named queries, through the stores.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tg_parser

PACKAGE = Path(tg_parser.__file__).parent
DRIVERS = ("sqlite3", "psycopg", "psycopg_pool")
# Attributes that are the database's plumbing: reaching for them outside db/ goes around the executor.
PLUMBING = {
    "pool",
    "pinned_session",
    "raw_connection",
    "connection",
    "_connection",
    "_session",
    "_transaction",
    "_stream_session",
    "_tx",
    "_use",
}
QUERY_CALLS = {
    "execute",
    "execute_many",
    "fetch_all",
    "fetch_one",
    "fetch_scalar",
    "stream",
    "stream_batches",
    "keyset_batches",
}
# Outside db/ and stores/, these may run named queries themselves, each for a reason.
QUERY_CALLERS_ALLOWED = {
    "health.py",  # the health report probes each store with its `health_<store>` query
    "transfer",  # runs its own generated SQL through db/bulk_*.py wrappers, not named queries
}


def _modules(outside: tuple[str, ...] = ("db",)) -> list[Path]:
    return [
        path for path in sorted(PACKAGE.rglob("*.py")) if path.relative_to(PACKAGE).parts[0] not in outside
    ]


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(PACKAGE)}:{getattr(node, 'lineno', '?')}"


def test_the_package_has_modules_to_check():
    assert len(_modules()) > 50


def test_only_db_imports_a_driver():
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{_where(path, node)} imports {n}" for n in names if n.split(".")[0] in DRIVERS]
    assert not offenders, offenders


def test_nothing_outside_db_reaches_for_a_pool_session_or_connection():
    offenders = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in PLUMBING:
                offenders.append(f"{_where(path, node)} .{node.attr}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in PLUMBING
            ):
                offenders.append(f"{_where(path, node)} {node.func.id}(…, {node.args[1].value!r})")
    assert not offenders, offenders


def test_named_queries_are_run_by_stores():
    """Domain code, the pipeline steps and the CLI call store methods, never `db.fetch_all("name")`."""
    offenders = []
    for path in _modules(outside=("db", "stores")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in QUERY_CALLERS_ALLOWED or str(relative) in QUERY_CALLERS_ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in QUERY_CALLS
                and node.args
                and isinstance(node.args[0], ast.Constant | ast.JoinedStr)
            ):
                offenders.append(f"{_where(path, node)} .{node.func.attr}({ast.unparse(node.args[0])})")
    assert not offenders, offenders


def test_stores_read_long_results_in_keyset_batches():
    """A store never holds a cursor across its caller's work: `stream`/`stream_batches` keep a transaction
    open on PostgreSQL for the whole iteration (an LLM call or a slow writer in between would leave it
    idle in transaction); stores use `keyset_batches`, each batch its own short statement."""
    offenders = []
    for path in sorted((PACKAGE / "stores").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("stream", "stream_batches")
            ):
                offenders.append(f"{_where(path, node)} .{node.func.attr}(...)")
    assert not offenders, offenders


# Packages of domain code that ask the Database for a capability instead of naming the dialect (the CLI,
# the API and health reports name it to describe the install, which is not a branch in behaviour).
CAPABILITY_PACKAGES = ("stores", "processing", "ingestion")


def test_domain_code_does_not_branch_on_the_dialect():
    """Dialect differences live in db/ and sql/<store>/<dialect>/ (DESIGN.md 4.1): stores, processing and
    ingestion ask the database for a capability (`json_timestamps_cast`, `reads_ahead`,
    `inserts_json_batches`, `atomic_across_stores`, `text_holds_nul`), never `db.dialect`."""
    offenders = []
    for package in CAPABILITY_PACKAGES:
        for path in sorted((PACKAGE / package).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute) and node.attr == "dialect":
                    offenders.append(f"{_where(path, node)} .dialect")
    assert not offenders, offenders


@pytest.mark.parametrize(
    "rule", [test_only_db_imports_a_driver, test_nothing_outside_db_reaches_for_a_pool_session_or_connection]
)
def test_the_rules_catch_an_offender(rule, monkeypatch, tmp_path):
    """Each rule fails on a module that breaks it (so a rule that can no longer fail is noticed)."""
    bad = tmp_path / "tg_parser_fake"
    (bad / "ingestion").mkdir(parents=True)
    (bad / "__init__.py").write_text("")
    (bad / "ingestion" / "bad.py").write_text(
        "import psycopg\n\ndef f(db):\n    return getattr(db, 'pool'), db.pinned_session()\n"
    )
    monkeypatch.setattr(f"{__name__}.PACKAGE", bad)
    monkeypatch.setattr(f"{__name__}._modules", lambda outside=("db",): [bad / "ingestion" / "bad.py"])
    with pytest.raises(AssertionError):
        rule()


@pytest.mark.parametrize("package", CAPABILITY_PACKAGES)
def test_the_dialect_rule_catches_domain_code_that_branches(monkeypatch, tmp_path, package):
    bad = tmp_path / "tg_parser_fake"
    for name in CAPABILITY_PACKAGES:
        (bad / name).mkdir(parents=True)
    (bad / package / "bad.py").write_text("def f(db):\n    return db.dialect == 'sqlite'\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", bad)
    with pytest.raises(AssertionError, match=rf"{package}/bad\.py:2 \.dialect"):
        test_domain_code_does_not_branch_on_the_dialect()
