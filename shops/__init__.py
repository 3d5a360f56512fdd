"""What a shop's webhooks and admin-API payloads mean here: pure, no I/O.

Each platform module (``shopify``, ``woocommerce``, ``prestashop``) turns one payload into
:class:`shops.events.ShopEvent` values: a member, an order, a refund or a privacy request, with the
fields of the matching ``loyalty import`` row, a de-duplication key and the instant of the version it
carries (so an older delivery never overwrites newer state). ``signatures`` checks what the platforms
sign. The side effects (the inbox table, applying an event) live in ``models/`` and ``workers/``.
"""
