"""Both audit-store engines for the store tests: `store_location("sqlite" | "postgresql", tmp_path)`
gives a state directory, or the URL of a fresh PostgreSQL database (`CREATE DATABASE
kbfix_<random>` on the server below, dropped after the test).

The server: PostgreSQL at 127.0.0.1:5432, user postgres, trust auth (what .ci/run starts);
`KBFIX_TEST_PG_URL` names another (an admin URL: any database of it). When it cannot be reached
the PostgreSQL tests FAIL, naming the server: CI must not pass them by skipping. On a machine
without PostgreSQL, `KBFIX_TEST_PG=skip` skips them instead (a local choice, said in the skip).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from kbfix.store import STORE_FILE
from kbfix.store.engine import is_store_url, pg_url

ADMIN_URL = os.environ.get("KBFIX_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
ENGINES = ["sqlite", "postgresql"]


def _admin() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(sa.make_url(ADMIN_URL).set(drivername="postgresql").render_as_string(False),
                               autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if os.environ.get("KBFIX_TEST_PG") == "skip":
            pytest.skip(f"PostgreSQL not reachable at {ADMIN_URL} and KBFIX_TEST_PG=skip: {exc}")
        pytest.fail(f"PostgreSQL is not reachable at {ADMIN_URL} ({exc}). Start it (.ci/run installs and starts "
                    "it: trust auth, user postgres), point KBFIX_TEST_PG_URL at one, or set KBFIX_TEST_PG=skip "
                    "to skip the PostgreSQL store tests on this machine.", pytrace=False)


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database on the test server; dropped (connections and all) after."""
    name = f"kbfix_{secrets.token_hex(6)}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(ADMIN_URL).set(database=name).render_as_string(False)
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def store_location(engine: str, tmp_path: Path) -> Iterator[str]:
    """`--state` for `engine`: the directory `tmp_path/state` (SQLite) or a fresh database's URL."""
    if engine == "sqlite":
        yield str(tmp_path / "state")
    else:
        with fresh_database() as url:
            yield url


@contextmanager
def raw(location: str) -> Iterator[sa.Connection]:
    """An autocommit connection past kbfix to the store at `location` (what someone editing the
    evidence by hand would use): the SQLite file, or the database."""
    if is_store_url(location):
        engine = sa.create_engine(pg_url(location), isolation_level="AUTOCOMMIT")
    else:
        path = Path(location) / STORE_FILE
        engine = sa.create_engine("sqlite://", creator=lambda: sqlite3.connect(path, isolation_level=None),
                                  isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def drop_append_only(conn: sa.Connection, table: str, verb: str) -> None:
    """Lift one audit table's append-only trigger for `verb` (UPDATE or DELETE), as a tamperer must first."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"DROP TRIGGER {table}_no_{verb.lower()}")
    else:
        conn.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER {table}_no_change")
