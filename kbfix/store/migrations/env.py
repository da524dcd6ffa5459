"""Alembic environment of the audit store: always run by kbfix on the store's own connection
(`config.attributes["connection"]`), inside the write transaction kbfix holds (BEGIN IMMEDIATE on
SQLite, an advisory lock on PostgreSQL), so Alembic starts no transaction of its own."""

from __future__ import annotations

from alembic import context

from kbfix.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - `alembic` on the command line is not supported
    raise RuntimeError("the audit store's migrations run through kbfix (kbfix.store.engine.prepare)")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
