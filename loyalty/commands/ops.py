"""Operator commands: the Procfile's processes, migrations and the demo."""

from __future__ import annotations

import click

from core.errors import InputError
from core.settings import get_settings
from loyalty.cli import cli, console, instant_option


@cli.command()
def migrate() -> None:
    """Create or upgrade the database schema (the Procfile's release process).

    Example: loyalty migrate
    """
    from models.db import make_engine
    from models.db import migrate as run_migrations

    engine = make_engine(get_settings().database_url)
    applied = run_migrations(engine)
    engine.dispose()
    console.print("Schema upgraded to the newest revision." if applied else "Schema already up to date.")


@cli.command()
@click.option("--members", "member_count", default=240, show_default=True, help="How many demo members to seed.")
@click.option("--at", "at", metavar="TIME", help="Pretend it is this instant (ISO 8601); default now.")
@click.option("--providers", is_flag=True, help="Send SMS and Mailchimp steps to local Twilio and Mailchimp servers.")
@click.option("--shop", "shop", metavar="PLATFORM",
              help="Instead: a local shop (shopify or woocommerce) sends its webhooks to the web app.")
def demo(member_count: int, at: str | None, providers: bool, shop: str | None) -> None:
    """Seed a realistic member base on the embedded default, run today's tick, show what happened.

    Example: loyalty demo    (or: loyalty demo --shop shopify)
    """
    from loyalty.demo import run_demo

    if shop is not None:
        from loyalty.demo_shop import run_shop_demo

        if at is not None or providers:
            raise InputError(f"{'--at' if at is not None else '--providers'} cannot be used with --shop: the shop's "
                             "demo runs now, with its own store; leave it out.")
        run_shop_demo(get_settings(), console, shop)
        return
    if providers:
        from loyalty.demo_providers import run_demo_with_providers

        run_demo_with_providers(get_settings(), console, member_count=member_count, now=instant_option(at))
        return
    run_demo(get_settings(), console, member_count=member_count, now=instant_option(at))


@cli.command()
def clock() -> None:
    """Run the scheduler (the Procfile's clock process): exactly one per deployment.

    Example: loyalty clock
    """
    from core import logs

    settings = get_settings()  # a malformed variable is one sentence before the scheduler's imports
    logs.configure(settings.log_level)
    from schedules.clock import run_clock

    run_clock(settings)


@cli.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=lambda: get_settings().port, help="Default: $PORT or 8000.")
def web(host: str, port: int) -> None:
    """Run the small HTTP app (the Procfile's web process): health check and unsubscribe links.

    Example: loyalty web --port 8000
    """
    from core import logs

    settings = get_settings()  # a malformed variable is one sentence before the web framework's imports
    logs.configure(settings.log_level)
    import uvicorn

    from loyalty.web import create_app

    app = create_app(settings)  # a configuration or database problem is one sentence here, before serving
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
