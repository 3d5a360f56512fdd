"""The shops' admin APIs, read by the backfill and the clock's poll (``workers/shop_sync.py``).

One small module per platform (``shopify``, ``woocommerce``, ``prestashop``), each a client whose
``pages(resource, position, since)`` yields :class:`workers.shop_api.http.Page`s: the records of one
page and the position to resume after it. ``http`` holds what they share: time-outs, bounded retries
of 429 and 5xx with backoff, and :class:`ShopApiError`, one sentence without personal data.
"""
