"""processed webhooks: index on received_at, for the nightly pruning

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_index("ix_processed_webhooks_received_at", "processed_webhooks", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_processed_webhooks_received_at", table_name="processed_webhooks")
