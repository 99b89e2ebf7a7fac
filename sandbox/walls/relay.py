"""The relay: how an appspace reaches another appspace of this instance, as any visitor would.

A sandbox never reaches loopback or private addresses (`--deny-net`), and an instance's
public address is often one of them (`*.localhost`, a LAN address, this host's own). For the
appspace hosts its owner allowlisted (`spec.relay_hosts`), the harness gives `fetch` a proxy
client on `/run/ds/relay.sock`; this module serves that socket in the supervisor. It takes one
HTTP/1.1 request per connection, in absolute form (`GET http://b.example.com/path HTTP/1.1`),
and only:

- from the sandbox's own uid (SO_PEERCRED), at most `MAX_CONNECTIONS` at a time;
- for `http://<an allowlisted appspace host>[:80|:443|:<public port>]/...`; anything else
  (CONNECT, another host, an address, the panel) gets a 403 from the relay itself and no
  connection is opened;
- with a body of known length (Content-Length); chunked bodies and upgrades are refused.

It sends the request to the platform's gateway (`spec.relay_upstream`, the web server's own
listener, never whatever the name resolves to) with `Host` pinned to the public name, and
strips what could claim an identity or a client address: `Cookie` (so no platform session
rides along), `Forwarded`, `X-Forwarded-*`, `X-Real-IP`, `Via`, `X-Dropserver-*`, `Proxy-*`
and the hop-by-hop headers. `Authorization` and the app's own headers are kept: an app may
send a credential the target app issued. The target's routes and auth then
apply as to an anonymous client. The response comes back as the gateway sent it, with
`Connection: close`. Not a security boundary of the platform's own: the gateway still decides
everything, this only narrows which requests get there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import struct
from pathlib import Path

from sandbox.spec import SandboxSpec

MAX_HEAD = 32 * 1024
MAX_HEADERS = 100
MAX_CONNECTIONS = 16
HEAD_TIMEOUT = 30.0
IO_TIMEOUT = 120.0
CHUNK = 64 * 1024
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_AUTHORITY = re.compile(r"^(?P<host>[a-z0-9.-]{1,254})(?::(?P<port>[0-9]{1,5}))?$")
# Hop-by-hop, or a claim about who or where the client is: never forwarded.
DROPPED = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "cookie",
        "forwarded",
        "x-real-ip",
        "via",
    }
)
DROPPED_PREFIXES = ("x-forwarded-", "x-dropserver-", "proxy-")


class Refused(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def pinned_host(name: str, public_port: int) -> str:
    return name if public_port in (80, 443) else f"{name}:{public_port}"


class Relay:
    """One sandbox's relay socket, served while the sandbox runs."""

    def __init__(self, spec: SandboxSpec, path: Path, expected_uid: int):
        self.path = path
        self.expected_uid = expected_uid
        self.hosts = {h.rsplit(":", 1)[0] if ":" in h else h for h in spec.relay_hosts}
        self.public_port = spec.relay_public_port
        address, _, port = spec.relay_upstream.rpartition(":")
        self.upstream = (address.strip("[]"), int(port))
        self.ports = {80, 443, spec.relay_public_port}
        self.server: asyncio.AbstractServer | None = None
        self.active: set[asyncio.Task] = set()

    async def start(self, *, owner: tuple[int, int] | None) -> None:
        """Bind the socket (root's, group the sandbox's, 0660) before the sandbox starts: the
        run dir is the uid's, but no process of that uid exists yet to swap the path."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.server = await asyncio.start_unix_server(
            self._serve, path=str(self.path), limit=MAX_HEAD
        )
        if owner is not None:
            os.chown(self.path, *owner, follow_symlinks=False)
            os.chmod(self.path, 0o660)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for task in list(self.active):
            task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        try:
            if _peer_uid(writer) != self.expected_uid:
                return  # not the sandbox: say nothing
            if task is not None:
                if len(self.active) >= MAX_CONNECTIONS:
                    raise Refused(503, "too many requests through the relay at once")
                self.active.add(task)
            await self._relay(reader, writer)
        except Refused as exc:
            await _answer(writer, exc.status, exc.reason)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            if task is not None:
                self.active.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            raise Refused(431, "the request head is too large") from None
        except asyncio.IncompleteReadError:
            return
        method, name, path, headers, length = parse_head(raw, self.hosts, self.ports)
        head = [f"{method} {path} HTTP/1.1", f"Host: {pinned_host(name, self.public_port)}"]
        head += [f"{k}: {v}" for k, v in headers]
        head += ["Connection: close", "", ""]
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), HEAD_TIMEOUT
            )
        except (OSError, TimeoutError):
            raise Refused(502, "the gateway did not answer") from None
        try:
            up_writer.write("\r\n".join(head).encode("latin-1"))
            await _copy_exactly(reader, up_writer, length)
            await _copy_response(up_reader, writer)
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()


def parse_head(
    raw: bytes, hosts: set[str], ports: set[int]
) -> tuple[str, str, str, list[tuple[str, str]], int]:
    """-> (method, host name, origin-form path, kept headers, body length); Refused otherwise."""
    lines = raw[:-4].split(b"\r\n")
    if len(lines) > MAX_HEADERS + 1:
        raise Refused(431, "too many request headers")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise Refused(400, "not an HTTP/1.1 request line")
    method = parts[0].decode("latin-1")
    if method == "CONNECT":
        raise Refused(403, "the relay takes http:// requests to allowlisted appspace hosts only")
    if method not in METHODS:
        raise Refused(405, f"method {method[:20]!r} is not relayed")
    target = parts[1].decode("latin-1")
    if target[:7].lower() != "http://":
        raise Refused(403, "the relay takes http:// requests to allowlisted appspace hosts only")
    authority, slash, rest = target[7:].partition("/")
    path = "/" + rest if slash else "/"
    match = _AUTHORITY.match(authority.lower())
    if match is None:
        raise Refused(403, "the relay takes http:// requests to allowlisted appspace hosts only")
    name = match["host"].rstrip(".")
    port = int(match["port"]) if match["port"] else 80
    if name not in hosts or port not in ports:
        raise Refused(403, f"{name}:{port} is not an appspace host this appspace may reach")
    if "#" in path or any(ord(c) < 0x21 or ord(c) >= 0x7F for c in path):
        raise Refused(400, "bad request target")
    kept: list[tuple[str, str]] = []
    length = 0
    lengths = 0
    named_by_connection: set[str] = set()
    parsed = []
    for line in lines[1:]:
        if not line or line[:1] in (b" ", b"\t"):
            raise Refused(400, "malformed header line")
        key, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(key):
            raise Refused(400, "malformed header line")
        value = value.strip(b" \t")
        if any(b < 0x20 and b != 0x09 or b == 0x7F for b in value):
            raise Refused(400, "control characters in a header")
        lower = key.decode("latin-1").lower()
        parsed.append((lower, key.decode("latin-1"), value.decode("latin-1")))
        if lower == "connection":
            named_by_connection |= {t.strip().lower() for t in value.decode("latin-1").split(",")}
    for lower, key, value in parsed:
        if lower == "transfer-encoding":
            raise Refused(411, "send a body of known length (no chunked bodies through the relay)")
        if lower == "upgrade":
            raise Refused(403, "upgrades (WebSockets) are not relayed")
        if lower == "content-length":
            lengths += 1
            if not value.isdigit() or len(value) > 15 or lengths > 1:
                raise Refused(400, "bad Content-Length")
            length = int(value)
            kept.append(("Content-Length", value))
            continue
        if lower in DROPPED or lower.startswith(DROPPED_PREFIXES) or lower in named_by_connection:
            continue
        kept.append((key, value))
    return method, name, path, kept, length


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return struct.unpack("3i", creds)[1]


async def _answer(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    body = f"dropserver relay: {reason}\n".encode()
    head = (
        f"HTTP/1.1 {status} Refused by the relay\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nx-dropserver-relay: refused\r\nconnection: close\r\n\r\n"
    )
    with contextlib.suppress(OSError):
        writer.write(head.encode("latin-1") + body)
        await asyncio.wait_for(writer.drain(), 5)


async def _copy_exactly(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, length: int
) -> None:
    """The request body: exactly `length` bytes, nothing after it (no second request)."""
    left = length
    while left > 0:
        data = await asyncio.wait_for(reader.read(min(CHUNK, left)), IO_TIMEOUT)
        if not data:
            raise asyncio.IncompleteReadError(b"", left)
        left -= len(data)
        writer.write(data)
        await asyncio.wait_for(writer.drain(), IO_TIMEOUT)
    await writer.drain()


async def _copy_response(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The gateway's response, its head marked `Connection: close` (one request per
    connection), then its bytes until the gateway closes."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
    except asyncio.IncompleteReadError:
        return
    lines = head[:-4].split(b"\r\n")
    kept = [lines[0]] + [
        line
        for line in lines[1:]
        if line.split(b":", 1)[0].strip().lower() not in (b"connection", b"keep-alive")
    ]
    writer.write(b"\r\n".join([*kept, b"Connection: close", b"", b""]))
    while data := await asyncio.wait_for(reader.read(CHUNK), IO_TIMEOUT):
        writer.write(data)
        await asyncio.wait_for(writer.drain(), IO_TIMEOUT)
    await writer.drain()


def expected_peer(spec: SandboxSpec, *, as_root: bool) -> tuple[int, tuple[int, int] | None]:
    """(the uid a caller must run as, the socket's owner): the sandbox's uid under root;
    without root (UNSAFE development mode) the supervisor's own, and the file left as made."""
    if as_root:
        return spec.uid, (0, spec.uid)
    return os.getuid(), None
