"""The audit store's v4 schema on an empty database (SQLite or PostgreSQL): the tables of
kbfix/store/tables.py, the append-only triggers, and v4's `schema_version` row.

Legacy SQLite stores (v1–v3, written by the hand-written migrations of kbfix/store/schema.py)
are brought to v4 by those migrations and then stamped with this revision, never run through it.

Revision ID: 0001_v4_baseline
Revises:
"""

from __future__ import annotations

from alembic import op

from kbfix.store.schema import LATEST
from kbfix.store.tables import append_only_ddl, metadata, schema_version
from playbooks.model import utc_now

revision = "0001_v4_baseline"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    metadata.create_all(bind)
    if dialect == "postgresql":
        # No rowid on PostgreSQL: the chain takes runs in this column's order (tables.ROWID_COLUMN).
        op.execute("ALTER TABLE runs ADD COLUMN rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE")
    for statement in append_only_ddl(dialect):
        op.execute(statement)
    op.execute(schema_version.insert().values(version=LATEST, applied=utc_now().isoformat()))


def downgrade() -> None:
    raise NotImplementedError("the audit store is append-only evidence: it is never downgraded")
