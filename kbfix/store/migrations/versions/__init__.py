"""Alembic revisions of the audit store, oldest first (0001: the v4 baseline)."""
