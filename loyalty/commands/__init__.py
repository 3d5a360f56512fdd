"""The CLI's commands, one module per audience; importing this package registers them all."""

from loyalty.commands import bounces, campaigns, coupons, data, keys, mailchimp, ops, report, shop, simulate, support  # noqa: F401
