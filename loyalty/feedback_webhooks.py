"""The relays' bounce and complaint notifications, in the ``web`` process.

``POST /feedback/ses`` (Amazon SES through an SNS HTTPS subscription), ``POST /feedback/sendgrid``
(SendGrid's signed Event Webhook) and ``POST /feedback/postmark`` (Postmark's bounce and
spam-complaint webhooks, behind basic auth). Each is checked in this order before anything is
written: its size (the app's limit, 413), its signature or credentials, computed off the event loop
(401; SNS: a topic not in ``SES_SNS_TOPIC_ARNS`` 403), its shape (400); then what it says is applied
(``workers/email_bounces.py``) and answered 200. A duplicate answers 200 and changes nothing. The
answers are JSON, one sentence each, and never repeat what the request carried. An endpoint whose
variables are not set answers 404.

SNS's signing certificate is fetched from ``SigningCertURL`` only when that is an https URL on
``sns.<region>.amazonaws.com`` (:class:`SnsTrust`), verified against the system's certificate
authorities, and kept in memory by URL; a subscription is confirmed by a GET of its
``SubscribeURL``, under the same rule.
"""

from __future__ import annotations

import re
import ssl
import threading
from dataclasses import dataclass, field

import httpx
import structlog
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.settings import Settings
from workers.channels import email_feedback as feedback
from workers.channels.email_feedback import FeedbackProblem
from workers.email_bounces import apply_notices

log = structlog.get_logger("loyalty.web.feedback")


@dataclass
class SnsTrust:
    """Where SNS certificates and subscription URLs may come from, and which authorities vouch for
    their hosts. Production uses :meth:`aws` (AWS's hosts, the system's authorities); only a test
    builds another one, for a local stand-in with its own authority: nothing in the environment can."""

    host_pattern: re.Pattern[str] = feedback.SNS_HOST
    ssl_context: ssl.SSLContext | None = None  # None: the system's certificate authorities
    ports: tuple[int | None, ...] = (None, 443)
    timeout: float = 10.0
    _certificates: dict[str, bytes] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def aws(cls) -> SnsTrust:
        return cls()

    def _get(self, url: str) -> httpx.Response:
        with httpx.Client(verify=self.ssl_context or ssl.create_default_context(), timeout=self.timeout,
                          follow_redirects=False) as client:
            return client.get(url)

    def certificate(self, url: str) -> bytes:
        """The PEM at ``url`` (already checked allowed), fetched once per URL."""
        with self._lock:
            cached = self._certificates.get(url)
        if cached is not None:
            return cached
        answer = self._get(url)
        answer.raise_for_status()
        with self._lock:
            if len(self._certificates) > 32:
                self._certificates.clear()
            self._certificates[url] = answer.content
        return answer.content

    def confirm(self, url: str) -> int:
        return self._get(url).status_code


def _error(status: int, sentence: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": sentence}, status_code=status, headers=headers or None)


def feedback_routes(settings: Settings, sessions: sessionmaker[Session], sns: SnsTrust | None = None) -> list[Route]:
    config = settings.feedback
    sns = sns or SnsTrust.aws()

    async def applied(notices: list[feedback.Notice]) -> JSONResponse:
        effects = await run_in_threadpool(apply_notices, sessions, settings, notices)
        duplicates = effects.count("duplicate")
        return JSONResponse({"applied": len(effects) - duplicates, "duplicates": duplicates})

    def sns_verified(envelope: dict[str, str]) -> bool | None:
        """True/False: the signature checks or not; None: the certificate could not be fetched."""
        try:
            pem = sns.certificate(envelope["SigningCertURL"])
        except (httpx.HTTPError, ssl.SSLError, OSError):
            return None
        return feedback.sns_signature_valid(envelope, pem)

    async def ses(request: Request) -> Response:
        if not config.ses_topic_arns:
            return _error(404, "SES notifications are not configured here: set SES_SNS_TOPIC_ARNS.")
        body = await request.body()
        try:
            envelope = await run_in_threadpool(feedback.sns_envelope, body)
        except FeedbackProblem as problem:
            return _error(400, f"The notification cannot be read: {problem}.")
        if envelope["TopicArn"] not in config.ses_topic_arns:
            log.warning("ses.topic_refused")
            return _error(403, "This SNS topic is not one of SES_SNS_TOPIC_ARNS; add it there to accept it.")
        if not feedback.sns_url_allowed(envelope["SigningCertURL"], sns.host_pattern, pem=True, ports=sns.ports):
            log.warning("ses.forged", reason="certificate_url")
            return _error(401, "The SigningCertURL is not an https .pem URL on an sns.<region>.amazonaws.com host.")
        verified = await run_in_threadpool(sns_verified, envelope)
        if verified is None:
            return _error(503, "The SNS signing certificate could not be fetched; SNS will try again.")
        if not verified:
            log.warning("ses.forged", reason="signature")
            return _error(401, "The SNS signature does not match the message.")
        kind = envelope["Type"]
        if kind == "SubscriptionConfirmation":
            url = envelope["SubscribeURL"]
            if not feedback.sns_url_allowed(url, sns.host_pattern, ports=sns.ports):
                return _error(400, "The SubscribeURL is not an https URL on an sns.<region>.amazonaws.com host.")
            try:
                status = await run_in_threadpool(sns.confirm, url)
            except (httpx.HTTPError, ssl.SSLError, OSError):
                status = 0
            if status != 200:
                return _error(503, "SNS did not confirm the subscription; it will send the confirmation again.")
            log.info("ses.subscribed", topic=envelope["TopicArn"])
            return JSONResponse({"subscribed": True})
        if kind == "UnsubscribeConfirmation":
            log.warning("ses.unsubscribed", topic=envelope["TopicArn"])
            return JSONResponse({"unsubscribed": True})
        try:
            notices = feedback.ses_notices(envelope["Message"])
        except FeedbackProblem as problem:
            return _error(400, f"The notification cannot be read: {problem}.")
        return await applied(notices)

    async def sendgrid(request: Request) -> Response:
        if not config.sendgrid_public_key:
            return _error(404, "SendGrid events are not configured here: set SENDGRID_WEBHOOK_PUBLIC_KEY.")
        body = await request.body()
        valid = await run_in_threadpool(
            feedback.sendgrid_signature_valid, config.sendgrid_public_key,
            request.headers.get("x-twilio-email-event-webhook-timestamp"), body,
            request.headers.get("x-twilio-email-event-webhook-signature"))
        if not valid:
            log.warning("sendgrid.forged")
            return _error(401, "The X-Twilio-Email-Event-Webhook-Signature does not match the timestamp and body; "
                               "check SENDGRID_WEBHOOK_PUBLIC_KEY (the Event Webhook's verification key).")
        try:
            notices = await run_in_threadpool(feedback.sendgrid_notices, body)
        except FeedbackProblem as problem:
            return _error(400, f"Nothing was applied: {problem}.")
        return await applied(notices)

    async def postmark(request: Request) -> Response:
        if not config.postmark_username or not config.postmark_password:
            return _error(404, "Postmark webhooks are not configured here: set POSTMARK_WEBHOOK_USERNAME and "
                               "POSTMARK_WEBHOOK_PASSWORD.")
        if not feedback.basic_auth_valid(request.headers.get("authorization"), config.postmark_username,
                                         config.postmark_password):
            log.warning("postmark.forged")
            return _error(401, "Send the webhook with the basic-auth user and password of POSTMARK_WEBHOOK_USERNAME "
                               "and POSTMARK_WEBHOOK_PASSWORD (https://USER:PASSWORD@host/feedback/postmark).",
                          **{"WWW-Authenticate": 'Basic realm="feedback"'})
        body = await request.body()
        try:
            notices = await run_in_threadpool(feedback.postmark_notices, body)
        except FeedbackProblem as problem:
            return _error(400, f"Nothing was applied: {problem}.")
        return await applied(notices)

    return [
        Route("/feedback/ses", ses, methods=["POST"]),
        Route("/feedback/sendgrid", sendgrid, methods=["POST"]),
        Route("/feedback/postmark", postmark, methods=["POST"]),
    ]
