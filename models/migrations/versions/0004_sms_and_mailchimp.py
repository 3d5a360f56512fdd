"""sms and mailchimp: member mailchimp state, processed webhooks, provider message id index

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('processed_webhooks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_processed_webhooks')),
    sa.UniqueConstraint('key', name=op.f('uq_processed_webhooks_key'))
    )
    op.create_index('ix_deliveries_provider_message_id', 'deliveries', ['provider_message_id'], unique=False)
    op.add_column('members', sa.Column('mailchimp_status', sa.String(length=16), nullable=True))
    op.add_column('members', sa.Column('mailchimp_reason', sa.String(length=200), nullable=True))
    op.add_column('members', sa.Column('mailchimp_synced_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('members', sa.Column('mailchimp_hash', sa.String(length=32), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column('members', 'mailchimp_hash')
    op.drop_column('members', 'mailchimp_synced_at')
    op.drop_column('members', 'mailchimp_reason')
    op.drop_column('members', 'mailchimp_status')
    op.drop_index('ix_deliveries_provider_message_id', table_name='deliveries')
    op.drop_table('processed_webhooks')
