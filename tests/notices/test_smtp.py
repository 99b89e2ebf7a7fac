"""A notice email through Django's SMTP backend (what EMAIL_URL=smtp://... selects) to an SMTP
server on loopback: the message as a mail server receives it, plain text with the panel link.

The server is a minimal SMTP receiver written here (aiosmtpd is not in the lock); it speaks
the protocol over a real socket, so the whole client side is the one production uses."""

from __future__ import annotations

import email
import email.policy
import socketserver
import threading

import pytest

from accounts.notices.models import Notice
from tests.notices.conftest import evaluate, failing_backup, make_space

pytestmark = pytest.mark.django_db


class _Session(socketserver.StreamRequestHandler):
    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self.reply("220 localhost ESMTP test receiver")
        sender, recipients = "", []
        while line := self.rfile.readline():
            command = line.decode("ascii", "replace").rstrip("\r\n")
            verb = command[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250 localhost")
            elif verb == "MAIL":
                sender = command
                self.reply("250 OK")
            elif verb == "RCPT":
                recipients.append(command)
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                lines = []
                while (data := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
                    lines.append(data[1:] if data.startswith(b"..") else data)
                self.server.received.append((sender, recipients, b"".join(lines)))
                recipients = []
                self.reply("250 OK queued")
            elif verb == "QUIT":
                self.reply("221 Bye")
                return
            else:
                self.reply("250 OK" if verb in ("RSET", "NOOP") else "502 Not implemented")


@pytest.fixture
def smtp_server(settings):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Session)
    server.daemon_threads = True
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.server_address[1]
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    yield server
    server.shutdown()
    server.server_close()


def test_a_notice_reaches_an_smtp_server(alice, smtp_server, settings):
    space = make_space(alice)
    failing_backup(space, settings)
    assert evaluate()["emails"] == 1
    ((sender, recipients, raw),) = smtp_server.received
    assert "noreply@" in sender.lower()
    assert [r.lower() for r in recipients] == ["rcpt to:<alice@example.com>"]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["To"] == "alice@example.com"
    assert message["Subject"] == f"[Dropserver] The last backup of {space.subdomain} failed"
    assert message.get_content_type() == "text/plain"
    body = message.get_content()
    assert f"{settings.DS_PANEL_URL}/appspaces/{space.public_id}/backups/" in body
    assert Notice.objects.get(recipient=alice).email_count == 1
    assert evaluate()["emails"] == 0 and len(smtp_server.received) == 1
