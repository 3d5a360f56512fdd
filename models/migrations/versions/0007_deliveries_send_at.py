"""deliveries: a covering index on send_at, for the frequency cap at planning

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_index("ix_deliveries_send_at", "deliveries", ["send_at"],
                    postgresql_include=["member_id", "campaign", "state"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_send_at", table_name="deliveries")
