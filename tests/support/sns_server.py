"""A local stand-in for Amazon SNS's side of an HTTPS subscription: it signs messages as SNS does
(RSA over AWS's canonical string, SignatureVersion 1 or 2), serves its signing certificate over
HTTPS and answers the subscription's confirmation URL, which it records.

It has its own certificate authority: the web app is given an ``SnsTrust`` that trusts only that
authority and only ``localhost`` on the stand-in's port, as production trusts only AWS's hosts
through the system's authorities.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import tempfile
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from loyalty.feedback_webhooks import SnsTrust
from workers.channels.email_feedback import sns_string_to_sign

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"


def _key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _certificate(subject: str, key, issuer_name: x509.Name, issuer_key, *, ca: bool, dns: str | None = None):
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=7))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


class SnsStandIn:
    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="sns-standin-"))
        ca_key = _key()
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Stand-in SNS test authority")])
        self.ca_pem = _pem(_certificate("Stand-in SNS test authority", ca_key, ca_name, ca_key, ca=True))
        tls_key = _key()
        tls_pem = _pem(_certificate("localhost", tls_key, ca_name, ca_key, ca=False, dns="localhost"))
        (self.folder / "tls.pem").write_bytes(tls_pem + tls_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self.signing_key = _key()
        self.signing_pem = _pem(_certificate("sns.amazonaws.com", self.signing_key, ca_name, ca_key, ca=False))
        self.confirmed: list[str] = []  # the confirmation URLs' paths and queries, as GET
        self.certificate_fetches = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path.endswith(".pem"):
                    stand_in.certificate_fetches += 1
                    body, status = stand_in.signing_pem, 200
                elif "Action=ConfirmSubscription" in self.path:
                    stand_in.confirmed.append(self.path)
                    body, status = b"<ConfirmSubscriptionResponse/>", 200
                else:
                    body, status = b"not found", 404
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.folder / "tls.pem")
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="sns-standin")

    def start(self) -> SnsStandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def base(self) -> str:
        return f"https://localhost:{self.port}"

    def trust(self) -> SnsTrust:
        """What the web app is told to trust: this stand-in's authority, ``localhost`` on its port."""
        return SnsTrust(host_pattern=re.compile(r"localhost"), ssl_context=ssl.create_default_context(
            cadata=self.ca_pem.decode()), ports=(self.port,))

    def sign(self, envelope: dict, *, version: str = "2", key=None) -> dict:
        envelope = {"SignatureVersion": version, "SigningCertURL": f"{self.base}/SimpleNotificationService-test.pem",
                    **envelope}
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = (key or self.signing_key).sign(sns_string_to_sign(envelope), padding.PKCS1v15(), algorithm)
        return {**envelope, "Signature": base64.b64encode(signature).decode()}

    def notification(self, message: dict, *, topic: str = TOPIC, **options) -> dict:
        return self.sign({"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": topic,
                          "Message": json.dumps(message), "Timestamp": "2027-06-15T07:05:00.000Z",
                          "UnsubscribeURL": f"{self.base}/?Action=Unsubscribe"}, **options)

    def subscription_confirmation(self, *, topic: str = TOPIC) -> dict:
        token = uuid.uuid4().hex * 2
        return self.sign({"Type": "SubscriptionConfirmation", "MessageId": str(uuid.uuid4()), "TopicArn": topic,
                          "Token": token, "Message": f"You have chosen to subscribe to the topic {topic}.",
                          "SubscribeURL": f"{self.base}/?Action=ConfirmSubscription&TopicArn={topic}&Token={token}",
                          "Timestamp": "2027-06-15T07:00:00.000Z"})
