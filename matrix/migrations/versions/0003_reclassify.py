"""reclassify: the kept end of each failing result's log, and the audit of class changes

Revision ID: 0003_reclassify
Revises: 0002_confirmation
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_reclassify"
down_revision: str | None = "0002_confirmation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "result_logs",
        sa.Column("result_pk", sa.Integer(), nullable=False),
        sa.Column("log_tail", sa.Text(), nullable=False),
        sa.Column("log_bytes", sa.Integer(), nullable=False),
        sa.Column("stored_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["result_pk"], ["results.id"], name=op.f("fk_result_logs_result_pk_results")),
        sa.PrimaryKeyConstraint("result_pk", name=op.f("pk_result_logs")),
    )
    op.create_table(
        "reclassifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("result_pk", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("rules_version", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.String(length=128), nullable=True),
        sa.Column("old_status", sa.String(length=16), nullable=False),
        sa.Column("new_status", sa.String(length=16), nullable=False),
        sa.Column("old_class", sa.String(length=64), nullable=True),
        sa.Column("new_class", sa.String(length=64), nullable=False),
        sa.Column("old_message", sa.Text(), nullable=True),
        sa.Column("new_message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["result_pk"], ["results.id"], name=op.f("fk_reclassifications_result_pk_results")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reclassifications")),
    )
    op.create_index(op.f("ix_reclassifications_result_pk"), "reclassifications", ["result_pk"])


def downgrade() -> None:
    op.drop_index(op.f("ix_reclassifications_result_pk"), table_name="reclassifications")
    op.drop_table("reclassifications")
    op.drop_table("result_logs")
