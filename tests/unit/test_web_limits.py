"""The web process's size limits as an ASGI layer: what reaches the app, what is read, what is answered."""

from __future__ import annotations

import asyncio
import json

import pytest

from loyalty.web_limits import BodySizeLimit, TooManyFields, form_fields


async def _echo_length(scope, receive, send):
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def call(layer, path: str, chunks: list[bytes], *, declared: int | None = None):
    """Run ``layer`` on a POST of ``chunks``; (status, body answered, how many chunks were read)."""
    headers = [(b"content-length", str(declared).encode())] if declared is not None else []
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    read, sent = 0, []

    async def receive():
        nonlocal read
        read += 1
        return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}

    async def send(message):
        sent.append(message)

    asyncio.run(layer(scope, receive, send))
    return sent[0]["status"], sent[-1]["body"], read


def test_a_declared_length_over_the_limit_is_answered_413_and_nothing_is_read():
    status, body, read = call(BodySizeLimit(_echo_length, 1000), "/x", [b"x" * 2000], declared=2000)
    assert (status, read) == (413, 0)
    assert json.loads(body) == {"error": "The request body is too large: the limit is 1000 bytes."}


def test_a_streamed_body_is_cut_off_once_past_the_limit():
    status, _, read = call(BodySizeLimit(_echo_length, 1000), "/x", [b"x" * 400] * 100)
    assert (status, read) == (413, 3)


def test_a_body_within_the_limit_reaches_the_app_whole():
    assert call(BodySizeLimit(_echo_length, 1000), "/x", [b"x" * 500, b"x" * 500]) == (200, b"1000", 2)


def test_a_prefix_may_have_a_limit_of_its_own_the_longest_prefix_winning():
    layer = BodySizeLimit(_echo_length, 1000, by_prefix={"/webhooks/": 5000, "/webhooks/tiny": 10})
    assert call(layer, "/webhooks/shop", [b"x" * 4000], declared=4000)[0] == 200
    assert call(layer, "/webhooks/tiny", [b"x" * 20], declared=20)[0] == 413
    assert call(layer, "/twilio/status", [b"x" * 4000], declared=4000)[0] == 413


def test_form_fields_are_counted_before_parsing():
    assert form_fields(b"a=1&b=&a=2") == [("a", "1"), ("b", ""), ("a", "2")]
    with pytest.raises(TooManyFields):
        form_fields(b"&".join([b"a="] * 201))
