"""The delivery benchmark's SMTP server counts what it accepted, and the benchmark compares it with
the ledger message by message: every message the ledger says sent reached the server once, and no
other. Real parts: the benchmark's own server process (aiosmtpd) and the product's SMTP channel."""

from __future__ import annotations

import threading

import pytest

from benchmarks.common import Mismatch, compare_accepted
from benchmarks.delivery import ProviderProcess, message_id_of
from core.settings import parse_smtp_url
from workers.channels.base import OutgoingEmail
from workers.channels.email import SmtpEmailChannel, wire_bytes

SENDER = "Loyalty Club <club@example.com>"


def outgoing(n: int) -> OutgoingEmail:
    return OutgoingEmail(occurrence_key=f"birthday:M{n:05d}:2027", to=f"member{n}@example.com", sender=SENDER,
                         subject=f"Joyeux anniversaire Zoë {n}", text=f"Bonjour {n}\n.\nà bientôt\n" * 30,
                         html=f"<p>Bonjour {n}</p>\n.\n" * 30, unsubscribe_url=f"https://club.example.com/u/{n}")


@pytest.fixture
def server():
    server = ProviderProcess("smtp")
    try:
        yield server
    finally:
        server.stop()


def test_the_server_keeps_each_accepted_message_id_and_counts_them_all_from_16_connections(server):
    base = server.count
    sent: dict[int, str] = {}
    lock = threading.Lock()

    def send(numbers: range) -> None:
        channel = SmtpEmailChannel(parse_smtp_url(f"smtp://127.0.0.1:{server.port}"), SENDER)
        try:
            for n in numbers:
                provider_id = channel.send(outgoing(n))
                with lock:
                    sent[n] = provider_id
        finally:
            channel.close()

    threads = [threading.Thread(target=send, args=(range(i, 1600, 16),)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(sent) == 1600
    accepted = server.accepted_ids(base)
    assert server.count - base == len(accepted) == 1600
    assert sorted(accepted) == sorted(sent.values())
    assert compare_accepted("test", accepted, sent) == {"ledger_sent": 1600, "server_accepted": 1600}


def test_a_message_the_ledger_says_sent_that_the_server_never_accepted_is_a_mismatch_naming_it(server):
    channel = SmtpEmailChannel(parse_smtp_url(f"smtp://127.0.0.1:{server.port}"), SENDER)
    try:
        sent = {n: channel.send(outgoing(n)) for n in range(5)}
    finally:
        channel.close()
    accepted = server.accepted_ids()

    ledger = {**sent, 41: "<never-sent@example.com>"}  # the ledger says delivery 41 went out
    with pytest.raises(Mismatch, match=r"1 the ledger says sent never reached the server \(deliveries 41\)"):
        compare_accepted("delivery smtp", accepted, ledger)
    with pytest.raises(Mismatch, match=r"1 accepted that the ledger does not say sent"):
        compare_accepted("delivery smtp", accepted, {n: sent[n] for n in range(4)})
    with pytest.raises(Mismatch, match=r"1 accepted more than once"):
        compare_accepted("delivery smtp", [*accepted, accepted[0]], sent)
    with pytest.raises(Mismatch, match=r"sent without the provider's id recorded \(deliveries 3\)"):
        compare_accepted("delivery smtp", accepted, {**sent, 3: None})


def test_the_message_id_is_read_from_the_headers_only():
    wire = wire_bytes(outgoing(7))
    assert message_id_of(wire) == outgoing_id(7)
    assert message_id_of(b"Subject: x\r\n\r\nMessage-ID: <in-the-body@example.com>\r\n") == ""


def outgoing_id(n: int) -> str:
    from workers.channels.email import message_id_for

    return message_id_for(outgoing(n).occurrence_key, SENDER)
