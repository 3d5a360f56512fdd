"""deliveries.variant: the A/B variant of the campaign a delivery carries, for the report

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0014'
down_revision: Union[str, Sequence[str], None] = '0013'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites nothing, however large the send ledger.
    with op.batch_alter_table('deliveries') as batch_op:
        batch_op.add_column(sa.Column('variant', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deliveries') as batch_op:
        batch_op.drop_column('variant')
