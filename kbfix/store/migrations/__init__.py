"""Alembic migrations of the audit store (run programmatically by kbfix.store.engine; no alembic.ini)."""
