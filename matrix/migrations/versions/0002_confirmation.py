"""confirmation of reds by their bare reproduction: results.confirmed, .confirmation,
.confirmed_at

Revision ID: 0002_confirmation
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_confirmation"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONValue = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("confirmed", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("confirmation", JSONValue, nullable=True))
        batch.add_column(sa.Column("confirmed_at", sa.DateTime(), nullable=True))
    op.create_index("ix_results_confirmed_at", "results", ["confirmed_at"])


def downgrade() -> None:
    op.drop_index("ix_results_confirmed_at", table_name="results")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("confirmed_at")
        batch.drop_column("confirmation")
        batch.drop_column("confirmed")
