"""keyed Mailchimp digest: the unkeyed MD5 digests in members.mailchimp_hash and the Mailchimp
deliveries' provider ids (the MD5 of the address) are cleared

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

Clearing the digests makes the next bulk sync send every member once more (the digest only spares
unchanged members a call); from then on it is keyed (HMAC-SHA256 under LOYALTY_LOOKUP_KEY). The
deliveries keep everything but the provider id. Only UPDATEs: no table is rebuilt (on SQLite a
rebuilt members table would cascade to every delivery).
"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.execute("UPDATE members SET mailchimp_hash = NULL WHERE mailchimp_hash IS NOT NULL")
    op.execute("UPDATE deliveries SET provider_message_id = NULL "
               "WHERE channel = 'mailchimp' AND provider_message_id IS NOT NULL")


def downgrade() -> None:
    pass  # the keyed digests are as good to an older version: a mismatch only sends a member again
