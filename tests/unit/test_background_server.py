"""The stand-ins' server (``loyalty.standins.http_server.BackgroundServer``) stops the way uvicorn's
does, only without its fixed waits: a request in flight is answered before it stops, one held past
the graceful time-out is cut, the app's lifespan shutdown runs last, and the port is closed after."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from loyalty.standins.http_server import BackgroundServer


def app_that_waits(events: list[str]) -> Starlette:
    async def slow(request):
        events.append("request started")
        await asyncio.sleep(float(request.query_params["seconds"]))
        events.append("request answered")
        return PlainTextResponse("done")

    @asynccontextmanager
    async def lifespan(app):
        yield
        events.append("lifespan shutdown")

    return Starlette(routes=[Route("/slow", slow)], lifespan=lifespan)


def ask_in_a_thread(url: str, seconds: float) -> tuple[threading.Thread, list]:
    answers: list = []

    def ask() -> None:
        try:
            answers.append(httpx.get(f"{url}/slow?seconds={seconds}", timeout=10).text)
        except httpx.HTTPError as error:
            answers.append(type(error).__name__)

    thread = threading.Thread(target=ask)
    thread.start()
    return thread, answers


def wait_for(events: list[str], event: str) -> None:
    for _ in range(1000):
        if event in events:
            return
        time.sleep(0.005)
    raise AssertionError(f"{event!r} never happened: {events}")


def test_a_request_in_flight_is_answered_then_the_lifespan_ends_and_the_port_closes():
    events: list[str] = []
    server = BackgroundServer(app_that_waits(events)).start()
    url = server.url
    thread, answers = ask_in_a_thread(url, 0.3)
    wait_for(events, "request started")
    server.stop()
    thread.join()
    assert answers == ["done"]
    assert events == ["request started", "request answered", "lifespan shutdown"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/slow?seconds=0", timeout=2)


def test_a_request_held_past_the_graceful_time_out_is_cut_and_the_lifespan_still_ends():
    events: list[str] = []
    server = BackgroundServer(app_that_waits(events), graceful_shutdown_seconds=1).start()
    thread, answers = ask_in_a_thread(server.url, 30)
    wait_for(events, "request started")
    server.stop()
    thread.join()
    assert answers != ["done"] and "request answered" not in events
    assert events[-1] == "lifespan shutdown"


def test_a_server_stopped_at_once_after_it_started_stops():
    events: list[str] = []
    server = BackgroundServer(app_that_waits(events)).start()
    server.stop()
    assert not server.running and events == ["lifespan shutdown"]
