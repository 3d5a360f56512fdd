"""shop cursors: where a backfill or a poll of a shop's admin API has got to

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0011'
down_revision: Union[str, Sequence[str], None] = '0010'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('shop_cursors',
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('resource', sa.String(length=40), nullable=False),
    sa.Column('position', sa.String(length=500), nullable=True),
    sa.Column('since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('platform', 'resource', name=op.f('pk_shop_cursors'))
    )


def downgrade() -> None:
    op.drop_table('shop_cursors')
