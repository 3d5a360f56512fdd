"""shop inbox: the shops' webhooks and API events kept until applied; resource versions; partial refunds; erasure

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('inbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('dedup_key', sa.String(length=200), nullable=False),
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('topic', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=300), nullable=True),
    sa.Column('waiting_for', sa.String(length=80), nullable=True),
    sa.Column('member_ref', sa.String(length=64), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbox')),
    sa.UniqueConstraint('dedup_key', name=op.f('uq_inbox_dedup_key'))
    )
    op.create_index('ix_inbox_open', 'inbox', ['state', 'id'],
                    postgresql_where=sa.text("state IN ('received', 'waiting')"),
                    sqlite_where=sa.text("state IN ('received', 'waiting')"))
    op.create_index('ix_inbox_waiting_for', 'inbox', ['waiting_for'])
    op.create_index('ix_inbox_member_ref', 'inbox', ['member_ref'])
    op.create_table('shop_versions',
    sa.Column('resource', sa.String(length=120), nullable=False),
    sa.Column('version_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('resource', name=op.f('pk_shop_versions'))
    )
    op.add_column('orders', sa.Column('refunded_amount', sa.Numeric(12, 2), server_default='0', nullable=False))
    op.add_column('members', sa.Column('erased_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('members') as batch:
        batch.drop_column('erased_at')
    with op.batch_alter_table('orders') as batch:
        batch.drop_column('refunded_amount')
    op.drop_table('shop_versions')
    op.drop_index('ix_inbox_member_ref', table_name='inbox')
    op.drop_index('ix_inbox_waiting_for', table_name='inbox')
    op.drop_index('ix_inbox_open', table_name='inbox')
    op.drop_table('inbox')
