"""orders applied status

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column('orders', sa.Column('applied_status', sa.String(length=16), nullable=True))
    op.create_index('ix_orders_pending', 'orders', ['id'], unique=False, postgresql_where=sa.text('applied_status IS DISTINCT FROM status'), sqlite_where=sa.text('applied_status IS NOT status'))


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_orders_pending', table_name='orders', postgresql_where=sa.text('applied_status IS DISTINCT FROM status'), sqlite_where=sa.text('applied_status IS NOT status'))
    op.drop_column('orders', 'applied_status')
