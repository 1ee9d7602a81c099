"""locks: each environment's lock, and the resolutions (release day, today) that locked to it

Revision ID: 0004_locks
Revises: 0003_reclassify
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_locks"
down_revision: str | None = "0003_reclassify"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.add_column(sa.Column("lock_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("resolutions", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("exclude_newer", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.drop_column("exclude_newer")
        batch.drop_column("resolutions")
        batch.drop_column("lock_id")
