"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('members',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('external_id', sa.String(length=64), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('phone', sa.String(length=32), nullable=True),
    sa.Column('first_name', sa.String(length=200), nullable=True),
    sa.Column('last_name', sa.String(length=200), nullable=True),
    sa.Column('email_status', sa.String(length=16), nullable=False),
    sa.Column('phone_status', sa.String(length=16), nullable=False),
    sa.Column('locale', sa.String(length=16), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('birth_year', sa.SmallInteger(), nullable=True),
    sa.Column('birth_month', sa.SmallInteger(), nullable=True),
    sa.Column('birth_day', sa.SmallInteger(), nullable=True),
    sa.Column('birthday_updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('email_opt_in', sa.Boolean(), nullable=False),
    sa.Column('email_consent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('email_consent_source', sa.String(length=64), nullable=True),
    sa.Column('sms_opt_in', sa.Boolean(), nullable=False),
    sa.Column('sms_consent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sms_consent_source', sa.String(length=64), nullable=True),
    sa.Column('tier', sa.String(length=32), nullable=False),
    sa.Column('joined_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_members')),
    sa.UniqueConstraint('external_id', name=op.f('uq_members_external_id'))
    )
    op.create_index('ix_members_birthday', 'members', ['timezone', 'birth_month', 'birth_day'], unique=False)
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=120), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_audit_log_member_id_members'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_index('ix_audit_log_member_at', 'audit_log', ['member_id', 'at'], unique=False)
    op.create_table('deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('occurrence_key', sa.String(length=200), nullable=False),
    sa.Column('campaign', sa.String(length=64), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('reward_points', sa.Integer(), nullable=True),
    sa.Column('coupon_code', sa.String(length=64), nullable=True),
    sa.Column('occurrence_date', sa.String(length=10), nullable=True),
    sa.Column('send_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('provider_message_id', sa.String(length=200), nullable=True),
    sa.Column('requested_by', sa.String(length=120), nullable=True),
    sa.Column('planned_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sending_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_deliveries_member_id_members'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries')),
    sa.UniqueConstraint('occurrence_key', name=op.f('uq_deliveries_occurrence_key'))
    )
    op.create_index('ix_deliveries_campaign_state', 'deliveries', ['campaign', 'state'], unique=False)
    op.create_index('ix_deliveries_member_planned', 'deliveries', ['member_id', 'planned_at'], unique=False)
    op.create_index('ix_deliveries_unfinished', 'deliveries', ['state', 'send_at'], unique=False, postgresql_where=sa.text("state IN ('planned', 'sending')"), sqlite_where=sa.text("state IN ('planned', 'sending')"))
    op.create_table('orders',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('placed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('total', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_orders_member_id_members'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_orders')),
    sa.UniqueConstraint('order_id', name=op.f('uq_orders_order_id'))
    )
    op.create_index('ix_orders_member_placed', 'orders', ['member_id', 'placed_at'], unique=False)
    op.create_table('point_entries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('entry_key', sa.String(length=200), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('points', sa.Integer(), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('remaining', sa.Integer(), nullable=True),
    sa.Column('source', sa.String(length=120), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_point_entries_member_id_members'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_point_entries')),
    sa.UniqueConstraint('entry_key', name=op.f('uq_point_entries_entry_key'))
    )
    op.create_index('ix_point_entries_member_occurred', 'point_entries', ['member_id', 'occurred_at'], unique=False)
    op.create_index('ix_point_entries_open_lots', 'point_entries', ['expires_at', 'member_id'], unique=False, postgresql_where=sa.text('remaining > 0'), sqlite_where=sa.text('remaining > 0'))


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_point_entries_open_lots', table_name='point_entries', postgresql_where=sa.text('remaining > 0'), sqlite_where=sa.text('remaining > 0'))
    op.drop_index('ix_point_entries_member_occurred', table_name='point_entries')
    op.drop_table('point_entries')
    op.drop_index('ix_orders_member_placed', table_name='orders')
    op.drop_table('orders')
    op.drop_index('ix_deliveries_unfinished', table_name='deliveries', postgresql_where=sa.text("state IN ('planned', 'sending')"), sqlite_where=sa.text("state IN ('planned', 'sending')"))
    op.drop_index('ix_deliveries_member_planned', table_name='deliveries')
    op.drop_index('ix_deliveries_campaign_state', table_name='deliveries')
    op.drop_table('deliveries')
    op.drop_index('ix_audit_log_member_at', table_name='audit_log')
    op.drop_table('audit_log')
    op.drop_index('ix_members_birthday', table_name='members')
    op.drop_table('members')
