"""tiers, last order, delivery payload

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('tier_changes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('from_tier', sa.String(length=32), nullable=False),
    sa.Column('to_tier', sa.String(length=32), nullable=False),
    sa.Column('direction', sa.String(length=8), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('local_date', sa.String(length=10), nullable=False),
    sa.Column('cause', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_tier_changes_member_id_members'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tier_changes'))
    )
    op.create_index('ix_tier_changes_member_at', 'tier_changes', ['member_id', 'at'], unique=False)
    op.add_column('deliveries', sa.Column('payload', sa.JSON(), nullable=True))
    op.create_index('ix_deliveries_member_campaign_date', 'deliveries', ['member_id', 'campaign', 'occurrence_date'], unique=False)
    op.add_column('members', sa.Column('tier_reached_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('members', sa.Column('tier_below_since', sa.DateTime(timezone=True), nullable=True))
    op.add_column('members', sa.Column('last_order_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('members', sa.Column('last_order_local_date', sa.String(length=10), nullable=True))
    op.create_index('ix_members_last_order', 'members', ['timezone', 'last_order_local_date'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_members_last_order', table_name='members')
    op.drop_column('members', 'last_order_local_date')
    op.drop_column('members', 'last_order_at')
    op.drop_column('members', 'tier_below_since')
    op.drop_column('members', 'tier_reached_at')
    op.drop_index('ix_deliveries_member_campaign_date', table_name='deliveries')
    op.drop_column('deliveries', 'payload')
    op.drop_index('ix_tier_changes_member_at', table_name='tier_changes')
    op.drop_table('tier_changes')
