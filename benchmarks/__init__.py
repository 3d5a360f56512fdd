"""The benchmark of issue 5: our code against the best the bare stack can do, as ratios.

``python -m benchmarks.run --members 100000 --members 1000000`` loads a realistic member base
into a database of its own (``loyalty_bench``) with COPY, then measures:

- ``audience``: each campaign kind's audience selection against hand-written SQL (the floor);
- ``planning``: deliveries written per second against a raw ``INSERT ... SELECT``;
- ``delivery``: messages per second through two real worker processes against a bare send loop;
- ``memory``: the worker's peak memory at each size;
- ``mailchimp``: Mailchimp calls per 10,000 members synced.
- ``intake``: p50/p99 latency and requests/s of signed Shopify webhooks through the real ``loyalty web``
  against a bare Starlette endpoint doing the same HMAC check and one INSERT.

Every measurement checks first that ours and the floor do the same work (the same member ids, the
same rows, the same messages) and fails loudly when they do not. Speed is reported, never asserted.
"""

BENCH_DATABASE = "loyalty_bench"
#: LOYALTY_SECRET of every product process the benchmark runs (personal data keys derive from it).
BENCH_SECRET = "benchmark-secret-0123456789abcdef"
