"""early status callbacks: Twilio status callbacks kept until their message's SID is recorded

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('early_status_callbacks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('message_sid', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('error_code', sa.Integer(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_early_status_callbacks')),
    sa.UniqueConstraint('message_sid', 'status', name=op.f('uq_early_status_callbacks_message_sid_status'))
    )
    op.create_index('ix_early_status_callbacks_received_at', 'early_status_callbacks', ['received_at'])


def downgrade() -> None:
    op.drop_index('ix_early_status_callbacks_received_at', table_name='early_status_callbacks')
    op.drop_table('early_status_callbacks')
