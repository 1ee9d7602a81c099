"""initial schema: model revisions, environments, runs, results, cell_latest

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A migration is frozen history: it spells its types out instead of importing the models.
JSONValue = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "environments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("environment_id", sa.String(length=128), nullable=False),
        sa.Column("engine_name", sa.String(length=128), nullable=False),
        sa.Column("engine_version", sa.String(length=128), nullable=False),
        sa.Column("hardware", sa.String(length=256), nullable=True),
        sa.Column("packages", JSONValue, nullable=False),
        sa.Column("image_digest", sa.String(length=256), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_environments")),
        sa.UniqueConstraint("environment_id", name=op.f("uq_environments_environment_id")),
    )
    op.create_index(op.f("ix_environments_engine_name"), "environments", ["engine_name"])

    op.create_table(
        "model_revisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.String(length=512), nullable=False),
        sa.Column("revision", sa.String(length=128), nullable=False),
        sa.Column("model_type", sa.String(length=128), nullable=True),
        sa.Column("architecture", sa.String(length=256), nullable=True),
        sa.Column("family", sa.String(length=128), nullable=True),
        sa.Column("release_date", sa.Date(), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_revisions")),
        sa.UniqueConstraint("model_id", "revision", name=op.f("uq_model_revisions_model_id_revision")),
    )

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("dayone_version", sa.String(length=64), nullable=True),
        sa.Column("host", sa.String(length=256), nullable=True),
        sa.Column("hardware", sa.String(length=256), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.UniqueConstraint("run_id", name=op.f("uq_runs_run_id")),
    )

    op.create_table(
        "results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_revision_pk", sa.Integer(), nullable=False),
        sa.Column("environment_pk", sa.Integer(), nullable=False),
        sa.Column("run_pk", sa.Integer(), nullable=True),
        sa.Column("run_key", sa.String(length=128), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure_class", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("log_excerpt", sa.Text(), nullable=True),
        sa.Column("log_path", sa.Text(), nullable=True),
        sa.Column("metrics", JSONValue, nullable=False),
        sa.Column("output", JSONValue, nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("reproduce", sa.Text(), nullable=True),
        sa.Column("raw", JSONValue, nullable=False),
        sa.Column("ingested_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_pk"], ["environments.id"], name=op.f("fk_results_environment_pk_environments")
        ),
        sa.ForeignKeyConstraint(
            ["model_revision_pk"],
            ["model_revisions.id"],
            name=op.f("fk_results_model_revision_pk_model_revisions"),
        ),
        sa.ForeignKeyConstraint(["run_pk"], ["runs.id"], name=op.f("fk_results_run_pk_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_results")),
        sa.UniqueConstraint(
            "model_revision_pk",
            "environment_pk",
            "stage",
            "started_at",
            "run_key",
            name="uq_results_natural_key",
        ),
    )
    op.create_index(op.f("ix_results_run_pk"), "results", ["run_pk"])
    op.create_index("ix_results_started_at", "results", ["started_at"])

    op.create_table(
        "cell_latest",
        sa.Column("model_revision_pk", sa.Integer(), nullable=False),
        sa.Column("environment_pk", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.String(length=512), nullable=False),
        sa.Column("engine_name", sa.String(length=128), nullable=False),
        sa.Column("engine_version", sa.String(length=128), nullable=False),
        sa.Column("result_pk", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure_class", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_pk"], ["environments.id"], name=op.f("fk_cell_latest_environment_pk_environments")
        ),
        sa.ForeignKeyConstraint(
            ["model_revision_pk"],
            ["model_revisions.id"],
            name=op.f("fk_cell_latest_model_revision_pk_model_revisions"),
        ),
        sa.ForeignKeyConstraint(["result_pk"], ["results.id"], name=op.f("fk_cell_latest_result_pk_results")),
        sa.PrimaryKeyConstraint("model_revision_pk", "environment_pk", "stage", name=op.f("pk_cell_latest")),
    )
    op.create_index("ix_cell_latest_cell", "cell_latest", ["model_id", "engine_name", "stage"])


def downgrade() -> None:
    op.drop_table("cell_latest")
    op.drop_table("results")
    op.drop_table("runs")
    op.drop_table("model_revisions")
    op.drop_table("environments")
