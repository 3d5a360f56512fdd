"""personal data encrypted

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Personal columns become text (they hold ciphertext) and gain keyed look-up hashes.

    Existing plain values stay readable; `loyalty keys rotate` encrypts them and fills the hashes.
    """
    with op.batch_alter_table("members") as batch:  # SQLite cannot ALTER a column's type in place
        batch.add_column(sa.Column("email_lookup", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("phone_lookup", sa.String(length=64), nullable=True))
        for column, length in (("email", 320), ("phone", 32), ("first_name", 200), ("last_name", 200)):
            batch.alter_column(column, existing_type=sa.VARCHAR(length=length), type_=sa.Text(), existing_nullable=True)
        batch.create_index("ix_members_email_lookup", ["email_lookup"], unique=False)
        batch.create_index("ix_members_phone_lookup", ["phone_lookup"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("members") as batch:
        batch.drop_index("ix_members_phone_lookup")
        batch.drop_index("ix_members_email_lookup")
        for column, length in (("email", 320), ("phone", 32), ("first_name", 200), ("last_name", 200)):
            batch.alter_column(column, existing_type=sa.Text(), type_=sa.VARCHAR(length=length), existing_nullable=True)
        batch.drop_column("phone_lookup")
        batch.drop_column("email_lookup")
