"""The queue: dramatiq on Redis in production, dramatiq's in-process broker on the embedded default.

The Redis client is built here and handed to the broker, because the broker's own ``url=`` drops
TLS options, and Heroku's ``rediss://`` endpoints present a self-signed certificate.
"""

from __future__ import annotations

from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from core.settings import Settings


def redis_client(url: str) -> redis.Redis:
    options: dict[str, Any] = {"socket_timeout": 30, "socket_connect_timeout": 10, "health_check_interval": 30,
                               "retry_on_timeout": True}
    if url.startswith("rediss://"):
        options["ssl_cert_reqs"] = None  # Heroku Redis: self-signed certificate, TLS still encrypts
    return redis.Redis.from_url(url, **options)


def build_broker(settings: Settings, *, namespace: str | None = None) -> dramatiq.Broker:
    if settings.redis_url is None:
        return StubBroker()
    return RedisBroker(
        client=redis_client(settings.redis_url),
        namespace=namespace or settings.queue_namespace,
    )


def install_broker(broker: dramatiq.Broker) -> dramatiq.Broker:
    """Make ``broker`` the global one and re-declare every actor of ours on it."""
    from workers import actors, event_actors, inbox, shop_loyalty, shop_sync, sync_actors

    dramatiq.set_broker(broker)
    ours: list[dramatiq.Actor[Any, Any]] = [*actors.ACTORS, *event_actors.ACTORS, *inbox.ACTORS, *shop_sync.ACTORS,
                                            *sync_actors.ACTORS, *shop_loyalty.ACTORS]
    for actor in ours:
        actor.broker = broker
        broker.declare_actor(actor)
    return broker
