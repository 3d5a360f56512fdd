"""shop customers: what each shop last accepted of a member's tier, balance and next expiry

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0013'
down_revision: Union[str, Sequence[str], None] = '0012'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('shop_customers',
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=32), nullable=True),
    sa.Column('tier', sa.String(length=32), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=True),
    sa.Column('synced_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_shop_customers_member_id_members'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('platform', 'member_id', name=op.f('pk_shop_customers'))
    )


def downgrade() -> None:
    op.drop_table('shop_customers')
