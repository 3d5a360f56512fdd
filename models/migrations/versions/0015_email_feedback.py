"""email_feedback: bounces and complaints from the relays and the bounce mailbox

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0015'
down_revision: Union[str, Sequence[str], None] = '0014'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('email_feedback',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('effect', sa.String(length=32), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=True),
    sa.Column('delivery_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('campaign', sa.String(length=64), nullable=True),
    sa.Column('email_lookup', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=64), nullable=True),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['deliveries.id'], name=op.f('fk_email_feedback_delivery_id_deliveries'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_email_feedback_member_id_members'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_email_feedback')),
    sa.UniqueConstraint('key', name=op.f('uq_email_feedback_key'))
    )
    op.create_index('ix_email_feedback_delivery_id', 'email_feedback', ['delivery_id'], unique=False)
    op.create_index('ix_email_feedback_member_kind', 'email_feedback', ['member_id', 'kind'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_email_feedback_member_kind', table_name='email_feedback')
    op.drop_index('ix_email_feedback_delivery_id', table_name='email_feedback')
    op.drop_table('email_feedback')
