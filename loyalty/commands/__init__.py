"""The CLI's commands, one module per audience; importing this package registers them all."""

from loyalty.commands import (  # noqa: F401
    bounces,
    campaigns,
    coupons,
    data,
    keys,
    mailchimp,
    ops,
    proof,
    report,
    shop,
    simulate,
    support,
)
