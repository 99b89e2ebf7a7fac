"""A private two-namespace network for sandbox tests: a supervisor and its sandboxes in one,
"other hosts" (TCP listeners and a fake DNS server that logs every query) in the other.

    namespace A (supervisor, sandboxes sharing its network)      namespace B (other hosts)
    lo; veth 192.88.99.1/24, fd00:ab::1/64, 3fff:ab::1/64  <---->  veth ...::2 / .2; DNS on .2:53

Nothing leaves these namespaces: they have no route but the veth pair. The addresses are picked
so that only the layer under test can stop a connection: 192.88.99.0/24 (the retired 6to4 relay
range) is not in `--deny-net`, and neither is any IPv6 address of B (Deno cannot deny IPv6
ranges); 3fff::/20 is a documentation prefix that Python 3.11 still calls global, so the
allowlist validator accepts it as an IP literal. The supervisor runs under `nsenter --net` and
`unshare --mount`, with /etc/resolv.conf bind-mounted to point at the fake DNS server, so the
sandboxes' glibc resolver asks it. Use the `net_lab` fixture (import it into the test module).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.sandbox.fixtures import Listener, Supervisor, free_port, poll

A_V4, B_V4 = "192.88.99.1", "192.88.99.2"
A_ULA, B_ULA = "fd00:ab::1", "fd00:ab::2"
A_GLOBAL, B_GLOBAL = "3fff:ab::1", "3fff:ab::2"
CLONE_NEWNET = 0x40000000

# name -> {qtype: [addresses]}; 1 = A, 28 = AAAA. Any other name gets NXDOMAIN.
RECORDS: dict[str, dict[int, list[str]]] = {
    "dual.test": {1: [B_V4], 28: [B_GLOBAL]},
    "ula.test": {28: [B_ULA]},
    "v6.test": {28: [B_GLOBAL]},
}

_libc = ctypes.CDLL(None, use_errno=True)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block's socket calls in namespace `name` (setns affects this thread only)."""
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        try:
            yield
        finally:
            if _libc.setns(back, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(back)
        os.close(target)


class FakeDNS:
    """A UDP DNS server answering from RECORDS and logging every queried name."""

    def __init__(self, host: str):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 53))
        self.queries: list[tuple[str, int]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def names(self) -> set[str]:
        return {name for name, _ in list(self.queries)}

    def _run(self) -> None:
        while True:
            try:
                packet, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            with contextlib.suppress(Exception):
                self.sock.sendto(self._answer(packet), peer)

    def _answer(self, packet: bytes) -> bytes:
        query_id, _flags, qdcount = struct.unpack_from("!HHH", packet)
        labels, offset = [], 12
        while packet[offset]:
            length = packet[offset]
            labels.append(packet[offset + 1 : offset + 1 + length].decode(errors="replace"))
            offset += 1 + length
        qtype, _qclass = struct.unpack_from("!HH", packet, offset + 1)
        question = packet[12 : offset + 5]
        name = ".".join(labels).lower()
        self.queries.append((name, qtype))
        known = RECORDS.get(name)
        answers = (known or {}).get(qtype, [])
        rcode = 0 if known is not None else 3  # NXDOMAIN
        header = struct.pack("!HHHHHH", query_id, 0x8180 | rcode, qdcount, len(answers), 0, 0)
        body = b""
        for address in answers:
            family = socket.AF_INET6 if qtype == 28 else socket.AF_INET
            rdata = socket.inet_pton(family, address)
            body += struct.pack("!HHHIH", 0xC00C, qtype, 1, 5, len(rdata)) + rdata
        return header + question + body

    def close(self) -> None:
        self.sock.close()


@dataclass
class NetLab:
    a: str
    b: str
    resolv_conf: Path
    dns: FakeDNS | None = None
    listeners: list[Listener] = field(default_factory=list)

    def command_prefix(self) -> list[str]:
        """Runs the supervisor in namespace A with /etc/resolv.conf pointing at the fake DNS."""
        return [
            "nsenter",
            f"--net=/run/netns/{self.a}",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            'mount --bind "$0" /etc/resolv.conf && exec "$@"',
            str(self.resolv_conf),
        ]

    def listen(self, host: str, port: int) -> Listener:
        """A TCP listener on an address of namespace B (the other host)."""
        with in_netns(self.b):
            listener = Listener(host, port)
        self.listeners.append(listener)
        return listener

    def reachable_from_a(self, listener: Listener, host: str) -> bool:
        """Whether a process in A without any filter reaches `listener` (proves the route is
        there); the connection is then forgotten, so the listener counts from zero."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with in_netns(self.a), socket.socket(family) as s:
            s.settimeout(5)
            if s.connect_ex((host, listener.port)) != 0:
                return False
        poll(lambda: listener.accepted)
        listener.accepted.clear()
        return True


@pytest.fixture
def net_lab(ds_data_dir: Path) -> Iterator[NetLab]:
    suffix = uuid.uuid4().hex[:8]
    a, b = f"dsa-{suffix}", f"dsb-{suffix}"
    resolv = ds_data_dir / "resolv.conf"
    resolv.write_text(f"nameserver {B_V4}\noptions timeout:1 attempts:2\n")
    resolv.chmod(0o644)
    lab = NetLab(a, b, resolv)
    ip("netns", "add", a)
    try:
        ip("netns", "add", b)
        ip("-n", a, "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b", "netns", b)
        for ns, dev, v4, ula, glob in (
            (a, "veth-a", A_V4, A_ULA, A_GLOBAL),
            (b, "veth-b", B_V4, B_ULA, B_GLOBAL),
        ):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            ip("-n", ns, "addr", "add", f"{ula}/64", "dev", dev, "nodad")
            ip("-n", ns, "addr", "add", f"{glob}/64", "dev", dev, "nodad")
            ip("-n", ns, "link", "set", dev, "up")
        with in_netns(b):
            lab.dns = FakeDNS(B_V4)
        yield lab
    finally:
        for listener in lab.listeners:
            listener.close()
        if lab.dns is not None:
            lab.dns.close()
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def start_in_lab(start_supervisor: Callable[..., Supervisor], lab: NetLab) -> Supervisor:
    sup = start_supervisor(command_prefix=lab.command_prefix())
    host_net = os.readlink("/proc/self/ns/net")
    # Never let a lab test run with the host's network: its traffic must stay in A and B.
    assert os.readlink(f"/proc/{sup.pid}/ns/net") != host_net
    return sup


__all__ = ["NetLab", "free_port", "in_netns", "net_lab", "start_in_lab"]
