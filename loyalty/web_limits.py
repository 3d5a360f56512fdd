"""The web process's size limits, applied before a body is read.

:class:`BodySizeLimit` (ASGI middleware) answers 413 (one JSON sentence, ``{"error": ...}``) to a
request whose ``Content-Length`` is over the limit without reading a byte of its body, and to one
sent without a length (chunked) as soon as the bytes received pass the limit; uvicorn stops reading the socket while the app does not
read, so an unread body is not buffered either. The 413 closes the connection.

:func:`form_fields` parses a form body with at most :data:`MAX_FORM_FIELDS` fields, counted
before parsing.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

#: The largest request body accepted. Twilio's webhooks are a few kilobytes (an inbound text is
#: at most 1,600 characters, 20 KB once form-encoded); a one-click unsubscribe is 26 bytes.
MAX_BODY_BYTES = 64 * 1024
#: The most form fields accepted. Twilio's webhooks have about 30 (an MMS with 10 media: 45).
MAX_FORM_FIELDS = 200


class TooManyFields(ValueError):
    pass


def form_fields(body: bytes, max_fields: int = MAX_FORM_FIELDS) -> list[tuple[str, str]]:
    """The (name, value) pairs of a form-encoded body, in order; TooManyFields past ``max_fields``."""
    try:
        return parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=max_fields)
    except ValueError:  # raised by the count made before parsing
        raise TooManyFields(f"more than {max_fields} form fields") from None


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413, never reading more than that.

    ``by_prefix`` gives other limits to the paths starting with a prefix (the longest prefix wins),
    for an endpoint whose senders post more (a shop's order webhook, say)."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES, by_prefix: dict[str, int] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.by_prefix = sorted((by_prefix or {}).items(), key=lambda item: -len(item[0]))

    def limit_for(self, path: str) -> int:
        return next((limit for prefix, limit in self.by_prefix if path.startswith(prefix)), self.max_bytes)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.limit_for(scope.get("path", ""))
        length = _content_length(scope)
        if length is not None and length > max_bytes:
            await _too_large(send, max_bytes)
            return
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise _TooLarge
            return message

        async def watched_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except _TooLarge:
            if started:  # an answer already begun cannot become a 413: end it by closing the connection
                raise
            await _too_large(send, max_bytes)


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses a malformed length before we see it
    return None


async def _too_large(send, max_bytes: int) -> None:
    # One JSON sentence, as every other refusal of the app's endpoints (the relays, the shop and
    # the API clients read JSON; a person reads the sentence).
    body = json.dumps({"error": f"The request body is too large: the limit is {max_bytes} bytes."}).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
